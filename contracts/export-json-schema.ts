// Writes the contracts as JSON Schema (contracts/json-schema/*.json) for clients in other
// languages. Run by `npm run build`; the files are committed and a unit test keeps them current.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { envRecordSchema, envSchema, fleetSchema, jailSpecSchema } from './jail-spec.js';
import { commandSchema, execRequestSchema, heartbeatSchema, logsRequestSchema, stateEventSchema } from './messages.js';
import { applyRequestSchema, nameRequestSchema, psRequestSchema } from './api.js';
import { hostsFileSchema, planResultSchema } from './plan.js';
import { sessionExitSchema, sessionRequestSchema } from './session.js';

export const jsonSchemas: Record<string, z.ZodTypeAny> = {
  'jail-spec': jailSpecSchema,
  fleet: fleetSchema,
  command: commandSchema,
  'state-event': stateEventSchema,
  heartbeat: heartbeatSchema,
  'exec-request': execRequestSchema,
  'logs-request': logsRequestSchema,
  'session-request': sessionRequestSchema,
  'session-exit': sessionExitSchema,
  'apply-request': applyRequestSchema,
  'name-request': nameRequestSchema,
  'ps-request': psRequestSchema,
  'hosts-file': hostsFileSchema,
  'plan-result': planResultSchema,
};

export function renderJsonSchemas(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, schema] of Object.entries(jsonSchemas)) {
    const json = z.toJSONSchema(schema, {
      io: 'input',
      unrepresentable: 'any',
      // env is checked as `unknown` first (to refuse a "__proto__" key), then as the record
      override: (ctx) => {
        if (ctx.zodSchema === envSchema) Object.assign(ctx.jsonSchema, z.toJSONSchema(envRecordSchema, { io: 'input' }), { $schema: undefined });
      },
    });
    out[`${name}.json`] = JSON.stringify({ $id: `jailfleet/${name}`, ...json }, null, 2) + '\n';
  }
  return out;
}

const here = dirname(fileURLToPath(import.meta.url));
// Compiled into dist/contracts/: write next to the sources, two levels up.
const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const dir = join(here, '..', '..', 'contracts', 'json-schema');
  mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(renderJsonSchemas())) writeFileSync(join(dir, file), text);
}
