// Flags and files from the user, parsed by their zod contracts: a bad one is refused with a
// message naming the flag or field and the rule, before anything is sent.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { describeIssues, fleetSchema, nameSchema, type Fleet, type JailSpecInput } from '../../contracts/index.js';
import { CliError } from './client.js';

export const portSchema = z.coerce.number().int().min(1).max(65535);
export const hostsCountSchema = z.coerce.number().int().min(1, { message: 'must be at least 1' }).max(64, { message: 'must be at most 64' });
export const msSchema = z.coerce.number().int().min(1).max(3_600_000);

/** Parses one flag value or throws a CliError naming the flag. */
export function flag<S extends z.ZodTypeAny>(name: string, schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new CliError(`--${name}: ${r.error.issues[0]?.message ?? 'invalid value'} (got ${JSON.stringify(value)})`, 2);
  return r.data;
}

export const jailName = (value: unknown) => {
  const r = nameSchema.safeParse(value);
  if (!r.success) throw new CliError(`NAME: ${r.error.issues[0]!.message} (got ${JSON.stringify(value)})`, 2);
  return r.data;
};

/** `K=V` → [K, V]. */
export function parseEnvFlag(s: string): [string, string] {
  const i = s.indexOf('=');
  if (i <= 0) throw new CliError(`--env: expected KEY=VALUE (got ${JSON.stringify(s)})`, 2);
  return [s.slice(0, i), s.slice(i + 1)];
}

/** `SRC:DST[:ro|rw]` → a mount (paths are checked by the spec contract). */
export function parseMountFlag(s: string): { source: string; target: string; readOnly: boolean } {
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3 || (parts.length === 3 && !['ro', 'rw'].includes(parts[2]!)))
    throw new CliError(`--mount: expected SRC:DST[:ro|rw] (got ${JSON.stringify(s)})`, 2);
  return { source: parts[0]!, target: parts[1]!, readOnly: parts[2] !== 'rw' };
}

/** Validates a fleet given as an object; errors name `jails.N.field` and the rule. */
export function parseFleet(input: unknown, where: string): Fleet {
  const r = fleetSchema.safeParse(input);
  if (!r.success) throw new CliError(`${where}: invalid spec: ${describeIssues(r.error)}`, 2);
  return r.data;
}

/** Reads a YAML or JSON fleet file `{ jails: [spec, ...] }`. */
export async function readFleetFile(path: string): Promise<Fleet> {
  const { parse: parseYaml } = await import('yaml');
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
  }
  if (text.length > 16 * 1024 * 1024) throw new CliError(`${path}: file is larger than 16 MiB`, 2);
  let data: unknown;
  try {
    data = parseYaml(text, { maxAliasCount: 100 }); // YAML is a superset of JSON
  } catch (err) {
    throw new CliError(`${path}: not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`, 2);
  }
  return parseFleet(data, path);
}

export type { JailSpecInput };
