// Hostile input on the wire and in files: every decoder a service or the CLI reads with
// (commands, events, heartbeats, API and session requests, KV records, fleet files in YAML and
// JSON) is fed random bytes, arbitrary JSON, JSON nested 10,000 deep and objects carrying
// __proto__, constructor and prototype keys. Each must fail only in its own typed way
// (InvalidInput, an unreadable record, a CliError), accept exactly what its schema accepts, and
// hand on nothing that could reach an object's prototype.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { z } from 'zod';
import {
  InvalidInput,
  applyRequestSchema,
  commandSchema,
  desiredRecordSchema,
  drainRequestSchema,
  execRequestSchema,
  fleetSchema,
  heartbeatSchema,
  hostRecordSchema,
  hostsRequestSchema,
  imageRecordSchema,
  jailSpecSchema,
  logsRequestSchema,
  nameRequestSchema,
  placementRecordSchema,
  planRequestSchema,
  psRequestSchema,
  stateEventSchema,
  undrainRequestSchema,
} from '../../contracts/index.js';
import { sessionRequestSchema } from '../../contracts/session.js';
import { decodeWith } from '../../services/common/codec.js';
import { decodeRecord } from '../../services/common/records.js';
import { CliError } from '../../services/cli/client.js';
import { readFleetFile } from '../../services/cli/flags.js';

const DECODERS: [string, z.ZodTypeAny][] = [
  ['command', commandSchema],
  ['state event', stateEventSchema],
  ['heartbeat', heartbeatSchema],
  ['exec request', execRequestSchema],
  ['logs request', logsRequestSchema],
  ['session request', sessionRequestSchema],
  ['apply request', applyRequestSchema],
  ['plan request', planRequestSchema],
  ['name request', nameRequestSchema],
  ['drain request', drainRequestSchema],
  ['undrain request', undrainRequestSchema],
  ['ps request', psRequestSchema],
  ['hosts request', hostsRequestSchema],
  ['desired record', desiredRecordSchema],
  ['placement record', placementRecordSchema],
  ['host record', hostRecordSchema],
  ['image record', imageRecordSchema],
  ['fleet', fleetSchema],
  ['jail spec', jailSpecSchema],
];
const FORBIDDEN_KEYS = ['__proto__', 'constructor', 'prototype'];
const enc = new TextEncoder();

/** Only the decoder's own failure may leave it. */
function decodeOutcome(schema: z.ZodTypeAny, bytes: Uint8Array): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: decodeWith(schema, bytes) };
  } catch (err) {
    if (!(err instanceof InvalidInput)) throw new Error(`decodeWith threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
    return { ok: false };
  }
}

/** Every forbidden key found as an own property anywhere in `v`, and any object with an odd prototype. */
function prototypeHazards(v: unknown, path = '$', out: string[] = []): string[] {
  if (v === null || typeof v !== 'object') return out;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== Array.prototype && proto !== null) out.push(`${path} has an odd prototype`);
  for (const key of Object.getOwnPropertyNames(v)) {
    if (FORBIDDEN_KEYS.includes(key)) out.push(`${path}.${key}`);
    prototypeHazards((v as Record<string, unknown>)[key], `${path}.${key}`, out);
  }
  return out;
}

/** JSON with the forbidden keys mixed in among ordinary ones, at every depth. */
const hostileJson = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 2 }), tie('object'), fc.array(tie('value'), { maxLength: 4 })),
  object: fc.dictionary(fc.oneof(fc.constantFrom(...FORBIDDEN_KEYS, 'name', 'env', 'labels', 'v', 'jail', 'spec'), fc.string()), tie('value'), { maxKeys: 5 }),
})).value;

/** A valid apply request, then the forbidden keys put where records of user keys are. */
const validSpec = { name: 'web', command: ['/bin/true'], env: { A: '1' }, placement: { labels: { zone: 'eu' } } };

describe('every decoder on hostile bytes', () => {
  test.each(DECODERS)('%s: random bytes fail only as InvalidInput, and a record read never throws', (_, schema) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        decodeOutcome(schema, bytes);
        expect(typeof decodeRecord(schema, bytes).ok).toBe('boolean');
      }),
      { numRuns: 300 },
    );
  });

  test.each(DECODERS)('%s: JSON with __proto__, constructor and prototype keys is accepted exactly when the schema accepts it, and nothing prototype-shaped gets through', (_, schema) => {
    fc.assert(
      fc.property(hostileJson, (value) => {
        // JSON.parse makes "__proto__" an own key, as a message on the wire would carry it
        const text = JSON.stringify(value);
        const bytes = enc.encode(text);
        const decoded = decodeOutcome(schema, bytes);
        expect(decoded.ok).toBe(schema.safeParse(JSON.parse(text)).success);
        if (decoded.ok) expect(prototypeHazards(decoded.value)).toEqual([]);
        const record = decodeRecord(schema, bytes);
        expect(record.ok).toBe(decoded.ok);
      }),
      { numRuns: 300 },
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  test.each(DECODERS)('%s: JSON nested 10,000 deep is refused as InvalidInput, never a stack overflow', (_, schema) => {
    const depth = 10_000;
    for (const text of ['['.repeat(depth) + ']'.repeat(depth), '{"a":'.repeat(depth) + '1' + '}'.repeat(depth), '{"spec":'.repeat(depth) + '{}' + '}'.repeat(depth)]) {
      expect(decodeOutcome(schema, enc.encode(text))).toEqual({ ok: false });
      expect(decodeRecord(schema, enc.encode(text)).ok).toBe(false);
    }
  });

  test('a spec whose env, labels or top level carry __proto__, constructor or prototype keys is refused, and Object.prototype is untouched', () => {
    for (const key of FORBIDDEN_KEYS) {
      for (const spec of [
        { ...validSpec, env: JSON.parse(`{"A":"1","${key}":"x"}`) },
        { ...validSpec, placement: { labels: JSON.parse(`{"zone":"eu","${key}":"x"}`) } },
        JSON.parse(`{"name":"web","command":["/bin/true"],"${key}":{"polluted":"yes"}}`),
      ]) {
        const bytes = enc.encode(JSON.stringify({ v: 1, fleet: { jails: [spec] } }));
        const decoded = decodeOutcome(applyRequestSchema, bytes);
        if (decoded.ok) {
          // only a label record may take "__proto__", by dropping it (zod's record never copies it)
          expect({ key, labels: spec.placement?.labels !== undefined }).toEqual({ key: '__proto__', labels: true });
          expect(prototypeHazards(decoded.value)).toEqual([]);
        }
      }
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('fleet files in YAML and JSON', () => {
  test('random text, as YAML or as JSON, fails only as a CliError naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jf-hostile-fleet-'));
    try {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(fc.string({ maxLength: 300 }), fc.jsonValue().map((v) => JSON.stringify(v)), hostileJson.map((v) => JSON.stringify({ jails: [v] }))),
          fc.constantFrom('yaml', 'json'),
          async (text, ext) => {
            const path = join(dir, `f${n++}.${ext}`);
            writeFileSync(path, text);
            try {
              const fleet = await readFleetFile(path);
              expect(prototypeHazards(fleet)).toEqual([]);
            } catch (err) {
              if (!(err instanceof CliError)) throw new Error(`readFleetFile threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
              expect((err as Error).message).toContain(path);
            }
          },
        ),
        { numRuns: 300 },
      );
      // YAML's own ways to reach a prototype or blow up: merge keys, aliases, deep nesting
      const yamlBombs = [
        'jails:\n  - name: web\n    command: [/bin/true]\n    __proto__: { polluted: yes }\n',
        'jails:\n  - &a { name: web, command: [/bin/true] }\n  - <<: *a\n    constructor: x\n',
        'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n',
        `jails: ${'['.repeat(10_000)}${']'.repeat(10_000)}\n`,
      ];
      for (const [i, text] of yamlBombs.entries()) {
        const path = join(dir, `bomb${i}.yaml`);
        writeFileSync(path, text);
        await expect(readFleetFile(path)).rejects.toBeInstanceOf(CliError);
      }
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
