// Request/reply shapes of the scheduler API (jailfleet.api.<verb>) and the status queries
// (jailfleet.status.<query>). Replies are `{ ok: true, ... }` or `{ ok: false, error }`.
import { z } from 'zod';
import { fleetSchema, labelsSchema, nameSchema } from './jail-spec.js';
import { WIRE_VERSION, hostResourcesSchema, jailErrorSchema, jailStateSchema, execResultSchema, logsResultSchema } from './messages.js';

const v = z.literal(WIRE_VERSION, { message: `unsupported message version (this build speaks v${WIRE_VERSION})` });

export const ERROR_CODES = ['invalid', 'not_found', 'conflict', 'unavailable', 'internal', 'timeout'] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
export const apiErrorSchema = z.object({ code: z.enum(ERROR_CODES), message: z.string() });
export type ApiError = z.infer<typeof apiErrorSchema>;

export const applyRequestSchema = z.object({ v, fleet: fleetSchema });
export type ApplyRequest = z.input<typeof applyRequestSchema>;
export const nameRequestSchema = z.object({ v, name: nameSchema });
export type NameRequest = z.infer<typeof nameRequestSchema>;

export const appliedJailSchema = z.object({
  name: nameSchema,
  generation: z.number().int().min(1),
  changed: z.boolean(),
});
export const applyReplyBody = z.object({ jails: z.array(appliedJailSchema) });
export const nameReplyBody = z.object({ name: nameSchema, generation: z.number().int().min(1) });

export const psRequestSchema = z.object({ v, host: nameSchema.optional(), state: z.string().max(32).optional() });
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
});
export type PsRow = z.infer<typeof psRowSchema>;
export const psReplyBody = z.object({ jails: z.array(psRowSchema) });

export const hostsRequestSchema = z.object({ v });
export const hostRowSchema = z.object({
  host: nameSchema,
  status: z.enum(['up', 'down']),
  jails: z.number().int().min(0),
  lastSeen: z.string(),
  /** From the host's last heartbeat (absent from an older status service). */
  capacity: hostResourcesSchema.optional(),
  labels: labelsSchema.optional(),
  allocated: hostResourcesSchema.optional(),
});
export type HostRow = z.infer<typeof hostRowSchema>;
export const hostsReplyBody = z.object({ hosts: z.array(hostRowSchema) });

/** Wraps a reply body in the `{ ok }` envelope. */
export const replySchema = <T extends z.ZodTypeAny>(body: T) =>
  z.union([z.object({ ok: z.literal(true), result: body }), z.object({ ok: z.literal(false), error: apiErrorSchema })]);

export const applyReplySchema = replySchema(applyReplyBody);
export const nameReplySchema = replySchema(nameReplyBody);
export const psReplySchema = replySchema(psReplyBody);
export const hostsReplySchema = replySchema(hostsReplyBody);
export const execReplySchema = replySchema(execResultSchema);
export const logsReplySchema = replySchema(logsResultSchema);

export { jailStateSchema };
