// Request/reply shapes of the scheduler API (jailfleet.api.<verb>) and the status queries
// (jailfleet.status.<query>). Replies are `{ ok: true, ... }` or `{ ok: false, error }`.
import { z } from 'zod';
import { fleetSchema, labelsSchema, nameSchema } from './jail-spec.js';
import { drainParallelSchema, hostRecordSchema } from './state.js';
import { planResultSchema } from './plan.js';
import { imageDigestSchema, imageTagRefSchema } from './image.js';
import { healthStateSchema } from './health.js';
import { WIRE_VERSION, hostResourcesSchema, jailErrorSchema, jailUsageSchema, jailStateSchema, execResultSchema, logsResultSchema } from './messages.js';

const v = z.literal(WIRE_VERSION, { message: `unsupported message version (this build speaks v${WIRE_VERSION})` });

export const ERROR_CODES = ['invalid', 'not_found', 'conflict', 'unavailable', 'internal', 'timeout'] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
export const apiErrorSchema = z.object({ code: z.enum(ERROR_CODES), message: z.string() });
export type ApiError = z.infer<typeof apiErrorSchema>;

export const applyRequestSchema = z.object({ v, fleet: fleetSchema });
export type ApplyRequest = z.input<typeof applyRequestSchema>;
/** `jailfleet plan` on the live cluster: what an apply of this fleet would do now (nothing is written). */
export const planRequestSchema = z.object({ v, fleet: fleetSchema });
export type PlanRequest = z.input<typeof planRequestSchema>;
export const nameRequestSchema = z.object({ v, name: nameSchema });
export type NameRequest = z.infer<typeof nameRequestSchema>;

/** `jailfleet drain HOST --parallel N`: the host takes no new jails; its jails move N at a time. */
export const drainRequestSchema = z.object({ v, host: nameSchema, parallel: drainParallelSchema.default(1) });
export type DrainRequest = z.input<typeof drainRequestSchema>;
/** `jailfleet undrain HOST`: the host takes jails again (those moved off stay where they are). */
export const undrainRequestSchema = z.object({ v, host: nameSchema });
/** The jails placed on the host when the request was answered (drain: the ones to move). */
export const drainReplyBody = z.object({ host: nameSchema, draining: z.boolean(), jails: z.array(nameSchema) });

/** `jailfleet image rm NAME:TAG [--force]`: refused while a jail's desired record names the image, unless forced. */
export const imageRmRequestSchema = z.object({ v, tag: imageTagRefSchema, force: z.boolean().default(false) });
export type ImageRmRequest = z.input<typeof imageRmRequestSchema>;
/** The tag is gone; the stored image too unless other tags still name it (`otherTags`). */
export const imageRmReplyBody = z.object({ tag: imageTagRefSchema, digest: imageDigestSchema, otherTags: z.number().int().min(0), usedBy: z.array(nameSchema) });

export const appliedJailSchema = z.object({
  name: nameSchema,
  generation: z.number().int().min(1),
  changed: z.boolean(),
});
export const applyReplyBody = z.object({ jails: z.array(appliedJailSchema) });
export const nameReplyBody = z.object({ name: nameSchema, generation: z.number().int().min(1) });

/** A `ps --name` pattern: a jail name in which `*` matches any run of characters and `?` one. */
export const namePatternSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[a-z0-9*?-]+$/, { message: 'must be a jail name (lowercase letters, digits and -) in which * matches any characters and ? one' });
export const psRequestSchema = z.object({ v, host: nameSchema.optional(), state: z.string().max(32).optional(), name: namePatternSchema.optional() });
export type PsRequest = z.infer<typeof psRequestSchema>;
export const psRowSchema = z.object({
  name: nameSchema,
  host: nameSchema.nullable(),
  state: z.string(),
  generation: z.number().int().min(0),
  pid: z.number().int().nullable(),
  since: z.string(),
  exitCode: z.number().int().nullable(),
  restarts: z.number().int().min(0),
  error: jailErrorSchema.nullable(),
  /** A running jail's cpu seconds and memory bytes, as its agent last read them (absent until read). */
  usage: jailUsageSchema.optional(),
  /** A vnet jail's address (absent for inherit and none). */
  address: z.string().optional(),
  /** A running jail with a health check: starting, healthy or unhealthy (absent without a check). */
  health: healthStateSchema.optional(),
  /** Why its last check failed (or the failure that restarted it), until one passes. */
  healthReason: z.string().optional(),
});
export type PsRow = z.infer<typeof psRowSchema>;
export const psReplyBody = z.object({ jails: z.array(psRowSchema) });

export const hostsRequestSchema = z.object({ v });
export const hostRowSchema = z.object({
  host: nameSchema,
  /** `draining`: a drain is moving its jails off; `drained`: a drain left nothing on it. Down wins over both. */
  status: z.enum(['up', 'down', 'draining', 'drained']),
  jails: z.number().int().min(0),
  lastSeen: z.string(),
  /** From the host's last heartbeat (absent from an older status service). */
  capacity: hostResourcesSchema.optional(),
  labels: labelsSchema.optional(),
  allocated: hostResourcesSchema.optional(),
  /** Host volumes it offers (name → read-only), when any. */
  volumes: z.record(z.string(), z.boolean()).optional(),
  /** Digests of the images it holds unpacked, when any. */
  images: z.array(z.string()).optional(),
  /** Present while the host is being drained (or is drained): jails the drain could not move, and why. */
  drain: hostRecordSchema.pick({ parallel: true, since: true, blocked: true }).optional(),
});
export type HostRow = z.infer<typeof hostRowSchema>;
export const hostsReplyBody = z.object({ hosts: z.array(hostRowSchema) });

/** Wraps a reply body in the `{ ok }` envelope. */
export const replySchema = <T extends z.ZodTypeAny>(body: T) =>
  z.union([z.object({ ok: z.literal(true), result: body }), z.object({ ok: z.literal(false), error: apiErrorSchema })]);

export const applyReplySchema = replySchema(applyReplyBody);
export const nameReplySchema = replySchema(nameReplyBody);
export const imageRmReplySchema = replySchema(imageRmReplyBody);
export const planReplySchema = replySchema(planResultSchema);
export const psReplySchema = replySchema(psReplyBody);
export const hostsReplySchema = replySchema(hostsReplyBody);
export const drainReplySchema = replySchema(drainReplyBody);
export const execReplySchema = replySchema(execResultSchema);
export const logsReplySchema = replySchema(logsResultSchema);

export { jailStateSchema };
