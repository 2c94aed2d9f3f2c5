// Flags and files from the user, parsed by their zod contracts: a bad one is refused with a
// message naming the flag or field and the rule, before anything is sent.
import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { absolutePathSchema, PLACEMENT_STRATEGIES, describeIssues, drainParallelSchema, fleetSchema, hostsFileSchema, labelsSchema, nameSchema, volumeSchema, type Fleet, type HostsFile, type JailSpecInput, type Labels } from '../../contracts/index.js';
import { BadMetricsAddr, parseMetricsAddr, type MetricsAddr } from '../common/metrics-addr.js';
import { CliError } from './client.js';

export const portSchema = z.coerce.number().int().min(1).max(65535);
/** `HOST:PORT` (an IPv6 host in brackets); port 0 lets the kernel choose. */
export const httpAddrSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, { message: 'must be HOST:PORT, e.g. 127.0.0.1:4280' })
  .transform((s) => {
    const at = s.lastIndexOf(':');
    return { host: s.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(s.slice(at + 1)) };
  })
  .refine((a) => a.port <= 65535, { message: 'the port must be at most 65535' });
export const hostsCountSchema = z.coerce.number().int().min(1, { message: 'must be at least 1' }).max(64, { message: 'must be at most 64' });
export const natsClusterSchema = z.enum(['1', '3'], { message: 'must be 1 (one server) or 3 (a cluster)' }).transform(Number);
export const parallelStepsSchema = z
  .string()
  .regex(/^\d{1,3}$/, { message: 'must be a whole number' })
  .transform(Number)
  .pipe(z.number().min(1, { message: 'must be at least 1' }).max(64, { message: 'must be at most 64' }));
export const schedulersSchema = z.coerce.number().int().min(1, { message: 'must be at least 1' }).max(5, { message: 'must be at most 5' });
export const linesSchema = z
  .string()
  .regex(/^\d{1,6}$/, { message: 'must be a whole number' })
  .transform(Number)
  .pipe(z.number().min(1, { message: 'must be at least 1' }).max(100_000, { message: 'must be at most 100000' }));
/** Units of a `--since` duration, in ms. */
const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SINCE_RULE = 'must be a duration such as 90s, 10m, 1h30m or 2d, or a time such as 2026-12-02T08:00:00Z';
/**
 * `--since`: a duration back from now (`1h30m`) or an RFC 3339 time, as epoch ms. A time in the
 * future is refused (it would show nothing and look like a bug).
 */
export const sinceSchema = z.string().transform((value, ctx) => {
  const now = Date.now();
  let at: number;
  if (/^(\d{1,7}[smhd])+$/.test(value)) {
    let ms = 0;
    for (const [, n, unit] of value.matchAll(/(\d+)([smhd])/g)) ms += Number(n) * DURATION_UNITS[unit!]!;
    at = now - ms;
  } else if (/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:\d\d)$/.test(value)) {
    at = Date.parse(value);
  } else {
    at = Number.NaN;
  }
  if (!Number.isFinite(at) || at < 0) {
    ctx.addIssue({ code: 'custom', message: SINCE_RULE });
    return z.NEVER;
  }
  if (at > now) {
    ctx.addIssue({ code: 'custom', message: 'is in the future' });
    return z.NEVER;
  }
  return at;
});
export const msSchema = z
  .string()
  .regex(/^\d{1,8}$/, { message: 'must be a whole number of milliseconds' })
  .transform(Number)
  .pipe(z.number().min(1, { message: 'must be at least 1 ms' }).max(3_600_000, { message: 'must be at most 3600000 ms (an hour)' }));

/** An agent's cores (`--cpu`): what it offers to jails, fractional allowed. */
export const cpuCoresSchema = z
  .string()
  .regex(/^\d{1,7}(\.\d{1,3})?$/, { message: 'must be a number of cores, like 8 or 0.5' })
  .transform(Number)
  .pipe(z.number().min(0.01, { message: 'must be at least 0.01 cores' }).max(1_000_000, { message: 'must be at most 1000000 cores' }));
/** An agent's memory (`--memory-mb`), in MB. */
export const memoryMBSchema = z
  .string()
  .regex(/^\d{1,10}$/, { message: 'must be a whole number of MB' })
  .transform(Number)
  .pipe(z.number().min(4, { message: 'must be at least 4 MB' }).max(1_000_000_000, { message: 'must be at most 1000000000 MB' }));

/** `--strategy` of `serve scheduler` and `plan`. */
export const strategySchema = z.enum(PLACEMENT_STRATEGIES, { message: `must be one of ${PLACEMENT_STRATEGIES.join(', ')}` });
/** `drain --parallel N`: jails moved at a time. */
export const parallelSchema = z
  .string()
  .regex(/^\d{1,6}$/, { message: 'must be a whole number' })
  .transform(Number)
  .pipe(drainParallelSchema);

/** Parses one flag value or throws a CliError naming the flag. */
/** `--metrics-addr HOST:PORT`, or a bad-input error naming the flag and the rule. */
export function metricsAddrFlag(value: string): MetricsAddr {
  try {
    return parseMetricsAddr(value);
  } catch (err) {
    if (err instanceof BadMetricsAddr) throw new CliError(err.message, 2);
    throw err;
  }
}

export function flag<S extends z.ZodTypeAny>(name: string, schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new CliError(`--${name}: ${r.error.issues[0]?.message ?? 'invalid value'} (got ${JSON.stringify(value)})`, 2);
  return r.data;
}

/** `--jail-bridge`: an interface name (IFNAMSIZ: at most 15 characters). */
export const bridgeNameSchema = z.string().regex(/^[a-zA-Z][a-zA-Z0-9_-]{0,14}$/, { message: 'must be an interface name: a letter, then letters, digits, "_" or "-", at most 15 characters' });


export const jailName = (value: unknown, what = 'NAME') => {
  const r = nameSchema.safeParse(value);
  if (!r.success) throw new CliError(`${what}: ${r.error.issues[0]!.message} (got ${JSON.stringify(value)})`, 2);
  return r.data;
};

/** `K=V` → [K, V]. */
export function parseEnvFlag(s: string): [string, string] {
  const i = s.indexOf('=');
  if (i <= 0) throw new CliError(`--env: expected KEY=VALUE (got ${JSON.stringify(s)})`, 2);
  return [s.slice(0, i), s.slice(i + 1)];
}

/** Repeated `--label KEY=VALUE` → the host's labels; a key given twice is refused. */
export function parseLabelFlags(values: readonly string[]): Labels {
  const labels: Record<string, string> = {};
  for (const s of values) {
    const i = s.indexOf('=');
    if (i <= 0) throw new CliError(`--label: expected KEY=VALUE (got ${JSON.stringify(s)})`, 2);
    const key = s.slice(0, i);
    if (Object.prototype.hasOwnProperty.call(labels, key)) throw new CliError(`--label: ${JSON.stringify(key)} is given twice`, 2);
    labels[key] = s.slice(i + 1);
  }
  const r = labelsSchema.safeParse(labels);
  if (!r.success) throw new CliError(`--label: ${describeIssues(r.error)}`, 2);
  return r.data;
}

/**
 * `serve agent --zfs-dataset POOL/PATH`: a zfs dataset name (zfs(8) "ZFS Component Naming
 * Requirements": alphanumerics and "_", "-", ":", ".", the pool's name starting with a letter),
 * never a snapshot or bookmark ("@", "#"). The agent makes its datasets below it.
 */
export const zfsDatasetSchema = z
  .string()
  .max(200, { message: 'must be at most 200 characters' })
  .regex(/^[A-Za-z][A-Za-z0-9_.:-]*(?:\/[A-Za-z0-9_.:][A-Za-z0-9_.:-]*)*$/, {
    message: 'must be a zfs dataset (POOL or POOL/PATH: letters, digits, "_", "-", ":", "." and "/" between components; the pool starting with a letter)',
  });

/** `serve agent --volume NAME=/path[:ro]` (repeatable) → name → { path, readOnly }. */
export function parseVolumeFlags(values: readonly string[]): Map<string, { path: string; readOnly: boolean }> {
  const out = new Map<string, { path: string; readOnly: boolean }>();
  for (const s of values) {
    const m = /^([^=]+)=(\/[^:]*)(?::(ro|rw))?$/.exec(s);
    if (!m) throw new CliError(`--volume: expected NAME=/path[:ro] (got ${JSON.stringify(s)})`, 2);
    const name = nameSchema.safeParse(m[1]);
    if (!name.success) throw new CliError(`--volume: the name ${name.error.issues[0]!.message} (got ${JSON.stringify(m[1])})`, 2);
    const path = absolutePathSchema.safeParse(m[2]);
    if (!path.success || path.data === '/') throw new CliError(`--volume: the path ${path.success ? 'must not be "/"' : path.error.issues[0]!.message} (got ${JSON.stringify(m[2])})`, 2);
    if (out.has(name.data)) throw new CliError(`--volume: ${JSON.stringify(name.data)} is given twice`, 2);
    out.set(name.data, { path: path.data, readOnly: m[3] === 'ro' });
  }
  return out;
}

/**
 * `run --volume NAME:TARGET[:ro|rw]` → a spec volume, checked by the spec's own volume contract
 * (writable unless `:ro`, as in a fleet file); the rules across a spec (distinct targets, at most
 * 64) are the fleet's, checked with the rest of the spec.
 */
export function parseVolumeFlag(s: string): z.output<typeof volumeSchema> {
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3 || (parts.length === 3 && !['ro', 'rw'].includes(parts[2]!)))
    throw new CliError(`--volume: expected NAME:TARGET[:ro|rw] (got ${JSON.stringify(s)})`, 2);
  const r = volumeSchema.safeParse({ name: parts[0], target: parts[1], readOnly: parts[2] === 'ro' });
  if (!r.success) throw new CliError(`--volume ${JSON.stringify(s)}: ${describeIssues(r.error)}`, 2);
  return r.data;
}

/** `--allow-mount-source PREFIX` (repeatable): absolute paths of existing directories. */
export function parseMountSourceFlags(values: readonly string[]): string[] {
  return values.map((s) => {
    const path = absolutePathSchema.safeParse(s);
    if (!path.success) throw new CliError(`--allow-mount-source: the path ${path.error.issues[0]!.message} (got ${JSON.stringify(s)})`, 2);
    if (!statSync(path.data, { throwIfNoEntry: false })?.isDirectory()) throw new CliError(`--allow-mount-source: ${path.data} is not an existing directory`, 2);
    return path.data;
  });
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

/**
 * YAML with duplicate keys refused, in linear time: the yaml library's own unique-key check
 * compares every key with every other (minutes for a mapping of 100,000 keys), so it is off
 * and a Set does the same job.
 */
async function parseYaml(text: string, path: string): Promise<unknown> {
  const { parseDocument, visit, isScalar } = await import('yaml');
  const doc = parseDocument(text, { uniqueKeys: false });
  const fail = (msg: string): never => {
    throw new CliError(`${path}: not valid YAML: ${msg}`, 2);
  };
  if (doc.errors.length) fail(doc.errors[0]!.message.split('\n')[0]!.replace(/:\s*$/, ''));
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const item of map.items) {
        const key = isScalar(item.key) ? item.key.value : String(item.key);
        if (seen.has(key)) fail(`duplicate key ${JSON.stringify(key)}`);
        seen.add(key);
      }
    },
  });
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return fail((err as Error).message.split('\n')[0]!);
  }
}

const READ_ERRORS: Record<string, string> = {
  ENOENT: 'no such file',
  EISDIR: 'is a directory, not a file',
  EACCES: 'permission denied',
  ENOTDIR: 'a part of the path is not a directory',
};

/**
 * Reads a user's YAML or JSON file (`-`: stdin): JSON when it is named *.json or starts with `{`
 * (parsed strictly), YAML otherwise. `expected` says what it should hold, for the empty case.
 */
async function readDataFile(path: string, expected: string): Promise<unknown> {
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    throw new CliError(`cannot read ${path}: ${READ_ERRORS[code] ?? (err as Error).message}`, 2);
  }
  if (text.length > 16 * 1024 * 1024) throw new CliError(`${path}: file is larger than 16 MiB`, 2);
  if (text.trim() === '') throw new CliError(`${path}: file is empty (expected ${expected})`, 2);
  let data: unknown;
  if (path.endsWith('.json') || text.trimStart().startsWith('{')) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new CliError(`${path}: not valid JSON: ${(err as Error).message}`, 2);
    }
  } else {
    data = await parseYaml(text, path);
  }
  return data;
}

/** Reads a fleet file `{ jails: [spec, ...] }`; replicas come out expanded. */
export async function readFleetFile(path: string): Promise<Fleet> {
  return parseFleet(await readDataFile(path, '{ jails: [spec, ...] }'), path);
}

/** Reads a hosts file `{ hosts: [{ name, cpu, memoryMB, labels }] }` for `jailfleet plan`. */
export async function readHostsFile(path: string): Promise<HostsFile> {
  const r = hostsFileSchema.safeParse(await readDataFile(path, '{ hosts: [{ name, cpu, memoryMB, labels }, ...] }'));
  if (!r.success) throw new CliError(`${path}: invalid hosts file: ${describeIssues(r.error)}`, 2);
  return r.data;
}

export type { JailSpecInput };
