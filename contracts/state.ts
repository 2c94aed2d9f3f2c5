// What the scheduler keeps in its KV buckets: the desired state of each jail and its placement.
import { z } from 'zod';
import { ipv4Schema, jailSpecSchema, nameSchema } from './jail-spec.js';
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
  /**
   * A vnet jail's address (held for it in jailfleet_addresses): kept by every later placement of
   * the jail (stop, failover, drain, unplaced), gone with the placement at `rm`.
   */
  address: ipv4Schema.optional(),
});
export type PlacementRecord = z.infer<typeof placementRecordSchema>;

/** Most jails one drain moves at once (`jailfleet drain --parallel`). */
export const MAX_DRAIN_PARALLEL = 64;
export const drainParallelSchema = z
  .number()
  .int({ message: 'must be a whole number' })
  .min(1, { message: 'must be at least 1' })
  .max(MAX_DRAIN_PARALLEL, { message: `must be at most ${MAX_DRAIN_PARALLEL}` });

/**
 * What operators asked of one host (bucket jailfleet_hosts, key = host name; no key: nothing).
 * `draining`: the host takes no new jails and the leading scheduler moves its jails off,
 * `parallel` at a time. `blocked`: the jails the leader could not move on its last try, and why
 * (written by the scheduler, read by `hosts` and `drain --wait`).
 */
export const hostRecordSchema = z.object({
  v,
  draining: z.boolean(),
  parallel: drainParallelSchema,
  since: z.string(),
  blocked: z.array(z.object({ name: nameSchema, reason: z.string().max(4096) })).max(100_000).default([]),
});
export type HostRecord = z.output<typeof hostRecordSchema>;

/**
 * Who holds one jail address (bucket jailfleet_addresses, key = the address). Created with
 * compare-and-set on "absent", so two jails never hold one address; deleted when its jail is
 * removed (or found without a jail by the leader's sweep).
 */
export const addressRecordSchema = z.object({ v, jail: nameSchema, since: z.string() });
export type AddressRecord = z.infer<typeof addressRecordSchema>;
