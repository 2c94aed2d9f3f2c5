// Messages between services: commands (scheduler → agent), state events (agent → status),
// heartbeats (agent → scheduler, status) and exec (CLI → agent). Every message carries `v`.
import { z } from 'zod';
import { jailSpecSchema, labelsSchema, nameSchema, volumeOffersSchema } from './jail-spec.js';
import { healthStateSchema } from './health.js';

export const WIRE_VERSION = 1 as const;
const v = z.literal(WIRE_VERSION, { message: `unsupported message version (this build speaks v${WIRE_VERSION})` });
const generation = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const isoTime = z.string().datetime({ offset: true });

/** Stable states of a jail, as the lifecycle machine and `jailfleet ps` name them. */
export const JAIL_STATES = ['pending', 'prepared', 'mounted', 'running', 'stopped', 'failed', 'destroyed'] as const;
export type JailState = (typeof JAIL_STATES)[number];
export const jailStateSchema = z.enum(JAIL_STATES);

/**
 * The steps a driver performs; a failure names one. `run`: the jail failed while running (its
 * memory limit killed it); `place`: the scheduler found no host.
 */
export const DRIVER_STEPS = ['prepare', 'mount', 'start', 'stop', 'unmount', 'destroy', 'place', 'run'] as const;
export type DriverStep = (typeof DRIVER_STEPS)[number];
export const jailErrorSchema = z.object({ step: z.enum(DRIVER_STEPS), message: z.string().max(4096) });
export type JailError = z.infer<typeof jailErrorSchema>;

/**
 * A command to an agent: bring `jail` at `generation` to `desired`.
 * `ensure` carries the spec; `destroy` removes the jail of that generation or older.
 * `revision` is the desired-state revision it came from, so a repeated stop/start of one
 * generation is a new command while a redelivered one is not.
 */
export const commandSchema = z
  .discriminatedUnion('op', [
  z.object({
    v,
    op: z.literal('ensure'),
    jail: nameSchema,
    generation,
    revision: z.number().int().min(0),
    desired: z.enum(['running', 'stopped']),
    spec: jailSpecSchema,
    issuedAt: isoTime,
  }),
  z.object({
    v,
    op: z.literal('destroy'),
    jail: nameSchema,
    generation,
    revision: z.number().int().min(0),
    issuedAt: isoTime,
  }),
])
  .refine((c) => c.op !== 'ensure' || c.spec.name === c.jail, { message: 'the spec names another jail than the command', path: ['spec', 'name'] });
export type Command = z.infer<typeof commandSchema>;

/** The host and jail a subject names (`jailfleet.evt.<host>.<jail>`, `jailfleet.hb.<host>`). */
export function subjectTokens(subject: string): { host: string | undefined; jail: string | undefined } {
  const t = subject.split('.');
  return { host: t[2], jail: t[3] };
}
export const commandMsgId = (c: Command) => `${c.jail}/${c.generation}/${c.op}/${c.revision}`;

/** A state event: published by an agent on every stable state of a jail. */
export const stateEventSchema = z.object({
  v,
  host: nameSchema,
  jail: nameSchema,
  generation,
  /** Per jail and generation, strictly increasing, kept across agent restarts. */
  seq: z.number().int().min(1),
  state: jailStateSchema,
  pid: z.number().int().positive().nullable(),
  exitCode: z.number().int().nullable(),
  restarts: z.number().int().min(0),
  error: jailErrorSchema.nullable(),
  /** A running jail with a health check: where its check stands (absent: no check, or not running). */
  health: healthStateSchema.optional(),
  /** Why its last check failed, or the check failure that restarted it; cleared once it passes. */
  healthReason: z.string().max(1024).optional(),
  at: isoTime,
});
export type StateEvent = z.infer<typeof stateEventSchema>;

/** Cores and memory: what a host offers (capacity) or what its jails reserve (allocated). */
export const hostResourcesSchema = z.object({
  cpu: z.number().min(0).max(1_000_000),
  memoryMB: z.number().int().min(0).max(1_000_000_000),
});
export type HostResources = z.infer<typeof hostResourcesSchema>;

/** What a running jail uses, from its cgroup: cpu time since it started, memory charged to it now. */
export const jailUsageSchema = z.object({ cpuSeconds: z.number().min(0), memoryBytes: z.number().int().min(0) });
export type JailUsage = z.infer<typeof jailUsageSchema>;

export const heartbeatSchema = z.object({
  v,
  host: nameSchema,
  at: isoTime,
  startedAt: isoTime,
  driver: z.enum(['linux', 'freebsd']),
  capacity: hostResourcesSchema,
  labels: labelsSchema.default({}),
  /** Host volumes the agent offers: name → read-only. */
  volumes: volumeOffersSchema.optional(),
  /** Digests of the images this host holds unpacked. */
  images: z.array(z.string().max(80)).max(10_000).optional(),
  /** The sum of the resources of the jails the agent holds. */
  allocated: hostResourcesSchema,
  jails: z
    .array(
      z.object({
        name: nameSchema,
        generation,
        state: jailStateSchema,
        pid: z.number().int().positive().nullable(),
        /** Sent in the beat after the agent read its running jails' cgroups (every few seconds), absent in the others. */
        usage: jailUsageSchema.optional(),
        health: healthStateSchema.optional(),
      }),
    )
    .max(100_000),
});
export type Heartbeat = z.infer<typeof heartbeatSchema>;

export const EXEC_MAX_OUTPUT = 1024 * 1024;
export const execRequestSchema = z.object({
  v,
  jail: nameSchema,
  command: jailSpecSchema.shape.command,
  timeoutMs: z.number().int().min(1).max(3_600_000).default(30_000),
  maxOutputBytes: z.number().int().min(0).max(EXEC_MAX_OUTPUT).default(256 * 1024),
});
export type ExecRequest = z.output<typeof execRequestSchema>;
export const execResultSchema = z.object({
  exitCode: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.boolean(),
  timedOut: z.boolean(),
});
export type ExecResult = z.infer<typeof execResultSchema>;

/** The tail of a jail's console (stdout and stderr of its command), from the agent that holds it. */
export const logsRequestSchema = z.object({
  v,
  jail: nameSchema,
  lines: z.number().int().min(1).max(100_000).default(100),
});
export type LogsRequest = z.output<typeof logsRequestSchema>;
export const logsResultSchema = z.object({ text: z.string(), truncated: z.boolean() });
