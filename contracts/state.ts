// What the scheduler keeps in its KV buckets: the desired state of each jail and its placement.
import { z } from 'zod';
import { jailSpecSchema, nameSchema } from './jail-spec.js';
import { WIRE_VERSION } from './messages.js';

const v = z.literal(WIRE_VERSION, { message: `unsupported record version (this build speaks v${WIRE_VERSION})` });

/** Desired state of one jail (bucket jailfleet_desired, key = jail name). `removed` is a tombstone
 * that keeps the generation counter, so a re-created jail never reuses an old generation. */
export const desiredRecordSchema = z.object({
  v,
  spec: jailSpecSchema,
  desired: z.enum(['running', 'stopped', 'removed']),
  generation: z.number().int().min(1),
  updatedAt: z.string(),
});
export type DesiredRecord = z.infer<typeof desiredRecordSchema>;

/** Where a jail is placed (bucket jailfleet_placement); `host: null` with the reason it is not. */
export const placementRecordSchema = z.object({
  v,
  host: nameSchema.nullable(),
  generation: z.number().int().min(1),
  reason: z.string().nullable(),
});
export type PlacementRecord = z.infer<typeof placementRecordSchema>;
