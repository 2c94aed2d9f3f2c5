// The health check of a jail's spec (`health:`) and the health states an agent reports. Parsed
// once at the boundary like the rest of the spec. No I/O here.
import { z } from 'zod';

/** `starting`: in its grace period or not passed yet; `healthy`; `unhealthy`: `failures` checks failed in a row. */
export const HEALTH_STATES = ['starting', 'healthy', 'unhealthy'] as const;
export type HealthState = (typeof HEALTH_STATES)[number];
export const healthStateSchema = z.enum(HEALTH_STATES);

/** The defaults of a check: probe every 10 s, 2 s to answer, 3 failures in a row, 10 s to come up. */
export const DEFAULT_HEALTH = { intervalMs: 10_000, timeoutMs: 2_000, failures: 3, graceMs: 10_000 } as const;
export const HEALTH_KINDS = ['exec', 'http', 'tcp'] as const;
export type HealthKind = (typeof HEALTH_KINDS)[number];

const portSchema = z
  .number({ message: 'must be a port number' })
  .int({ message: 'must be a whole number' })
  .min(1, { message: 'must be a port from 1 to 65535' })
  .max(65535, { message: 'must be a port from 1 to 65535' });

const argSchema = z
  .string()
  .max(8192, { message: 'each argument must be at most 8192 characters' })
  .refine((s) => !s.includes('\0'), { message: 'must not contain a NUL byte' });

/** An HTTP path as it goes on the request line: no spaces, no control characters, no fragment. */
const httpPathSchema = z
  .string()
  .max(1024, { message: 'must be at most 1024 characters' })
  .regex(/^\/[\x21-\x7e]*$/, { message: 'must start with "/" and hold no spaces or control characters' })
  .refine((p) => !p.includes('#'), { message: 'must not contain "#" (a fragment is never sent)' });

const healthShape = z.strictObject({
  /** A command run inside the jail: healthy when it exits 0 within the timeout. */
  exec: z
    .array(argSchema)
    .min(1, { message: 'must have at least one element (the program to run)' })
    .max(256, { message: 'at most 256 arguments' })
    .refine((argv) => argv[0] !== '', { message: 'the program (first element) must not be empty' })
    .optional(),
  /** GET http://<jail's address>:port/path: healthy on a 2xx or 3xx answer within the timeout. */
  http: z.strictObject({ port: portSchema, path: httpPathSchema.default('/') }).optional(),
  /** A TCP connection to the jail's address accepted within the timeout. */
  tcp: z.strictObject({ port: portSchema }).optional(),
  intervalMs: z.number().int().min(100, { message: 'must be at least 100 ms' }).max(3_600_000, { message: 'must be at most 3600000 ms (an hour)' }).default(DEFAULT_HEALTH.intervalMs),
  timeoutMs: z.number().int().min(10, { message: 'must be at least 10 ms' }).max(600_000, { message: 'must be at most 600000 ms' }).default(DEFAULT_HEALTH.timeoutMs),
  /** Failed checks in a row that make the jail unhealthy (and restart it per its policy). */
  failures: z.number().int().min(1, { message: 'must be at least 1' }).max(100, { message: 'must be at most 100' }).default(DEFAULT_HEALTH.failures),
  /** From the start of the jail, failed checks do not count for this long (until one passes). */
  graceMs: z.number().int().min(0).max(3_600_000, { message: 'must be at most 3600000 ms (an hour)' }).default(DEFAULT_HEALTH.graceMs),
});

export const healthCheckSchema = healthShape.superRefine((h, ctx) => {
  const kinds = HEALTH_KINDS.filter((k) => h[k] !== undefined);
  if (kinds.length === 0) ctx.addIssue({ code: 'custom', message: 'needs one check: exec, http or tcp', path: [] });
  if (kinds.length > 1) ctx.addIssue({ code: 'custom', message: `one check only, not ${kinds.join(' and ')}`, path: [kinds[1]!] });
  if (h.intervalMs < h.timeoutMs)
    ctx.addIssue({ code: 'custom', message: `must be at least timeoutMs (${h.timeoutMs} ms): a check may not outlast the interval (got ${h.intervalMs} ms)`, path: ['intervalMs'] });
});
export type HealthCheck = z.output<typeof healthCheckSchema>;
export type HealthCheckInput = z.input<typeof healthCheckSchema>;

/** The kind of a parsed check (the schema leaves exactly one). */
export const healthKindOf = (h: HealthCheck): HealthKind => (h.exec ? 'exec' : h.http ? 'http' : 'tcp');
