// The committed JSON Schema files are what clients in other languages build against: they must
// be exactly what the zod contracts render today. If this fails, run `npm run build` and commit
// contracts/json-schema/.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { jsonSchemas, renderJsonSchemas } from '../../contracts/export-json-schema.js';

// jest runs with rootDir = the repository root
const dir = join(process.cwd(), 'contracts', 'json-schema');
const committed = () => readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
const read = (file: string) => readFileSync(join(dir, file), 'utf8');

describe('contracts/json-schema', () => {
  const rendered = renderJsonSchemas();

  test('there is one committed file per exported contract, and no stale extra file', () => {
    expect(committed()).toEqual(Object.keys(rendered).sort());
    expect(Object.keys(rendered).sort()).toEqual(Object.keys(jsonSchemas).map((n) => `${n}.json`).sort());
    expect(Object.keys(rendered)).toEqual(expect.arrayContaining(['jail-spec.json', 'fleet.json', 'command.json', 'state-event.json', 'heartbeat.json']));
  });

  test.each(Object.keys(renderJsonSchemas()))('%s is byte for byte what the contracts render', (file) => {
    expect(read(file)).toBe(rendered[file]);
  });

  test('rendering is deterministic', () => {
    expect(renderJsonSchemas()).toEqual(rendered);
  });

  test.each(Object.keys(renderJsonSchemas()))('%s is valid JSON with its $id, a $schema and a type', (file) => {
    const json = JSON.parse(read(file)) as Record<string, unknown>;
    expect(json.$id).toBe(`jailfleet/${file.replace(/\.json$/, '')}`);
    expect(typeof json.$schema).toBe('string');
    // a discriminated union (command) is an anyOf/oneOf of objects rather than one type
    if (json.type === undefined) {
      const alts = (json.oneOf ?? json.anyOf) as { type?: string }[] | undefined;
      expect(Array.isArray(alts)).toBe(true);
      for (const alt of alts ?? []) expect(alt.type).toBe('object');
    } else {
      expect(json.type).toBe('object');
    }
  });

  test('the jail spec requires name and command, closes the object and documents the rules', () => {
    const s = JSON.parse(read('jail-spec.json'));
    expect(s.type).toBe('object');
    expect(s.required).toEqual(expect.arrayContaining(['name', 'command']));
    // defaults are applied by the parser, so no defaulted field is required of a writer
    for (const f of ['env', 'mounts', 'network', 'restart', 'stopTimeoutMs', 'placement', 'hostname']) expect(s.required).not.toContain(f);
    expect(s.additionalProperties).toBe(false);
    expect(s.properties.name).toMatchObject({ type: 'string', minLength: 1, maxLength: 63, pattern: '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$' });
    expect(s.properties.command).toMatchObject({ type: 'array', minItems: 1, maxItems: 1024 });
    expect(s.properties.network.anyOf[0].enum).toEqual(['inherit', 'none', 'vnet']);
    expect(s.properties.restart.enum).toEqual(['always', 'on-failure', 'never']);
    expect(s.properties.stopTimeoutMs).toMatchObject({ minimum: 0, maximum: 600000, default: 10000 });
    expect(s.properties.mounts.maxItems).toBe(64);
  });

  test('the command schema carries both ops and requires a spec on ensure', () => {
    const c = JSON.parse(read('command.json'));
    const alts: { properties: Record<string, { const?: unknown }>; required: string[] }[] = c.oneOf ?? c.anyOf;
    const byOp = Object.fromEntries(alts.map((a) => [a.properties.op.const, a]));
    expect(Object.keys(byOp).sort()).toEqual(['destroy', 'ensure']);
    expect(byOp.ensure.required).toContain('spec');
    expect(byOp.destroy.required).not.toContain('spec');
    for (const a of alts) expect(a.properties.v.const).toBe(1);
  });
});
