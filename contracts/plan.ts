// The consolidation plan: the hosts file that `jailfleet plan --hosts` reads, the strategies a
// placement may follow, and the JSON that `jailfleet plan --json` prints.
import { z } from 'zod';
import { labelsSchema, volumeOffersSchema, nameSchema } from './jail-spec.js';

/** `binpack`: fewest hosts (the consolidation case, the default); `spread`: least loaded host. */
export const PLACEMENT_STRATEGIES = ['binpack', 'spread'] as const;
export type PlacementStrategy = (typeof PLACEMENT_STRATEGIES)[number];

export const planHostSchema = z.strictObject({
  name: nameSchema,
  /** Cores, fractional allowed. */
  cpu: z.number().min(0.01, { message: 'must be at least 0.01 cores' }).max(1_000_000, { message: 'must be at most 1000000 cores' }),
  memoryMB: z.number().int({ message: 'must be a whole number of MB' }).min(4, { message: 'must be at least 4 MB' }).max(1_000_000_000, { message: 'must be at most 1000000000 MB' }),
  labels: labelsSchema.default({}),
  /** Host volumes offered: name → read-only. */
  volumes: volumeOffersSchema.default({}),
});
export type PlanHost = z.output<typeof planHostSchema>;

/** A hosts file: `{ hosts: [{ name, cpu, memoryMB, labels }] }` in YAML or JSON. Names must be unique. */
export const hostsFileSchema = z
  .strictObject({ hosts: z.array(planHostSchema).min(1, { message: 'must list at least one host' }).max(100_000, { message: 'at most 100000 hosts' }) })
  .superRefine((file, ctx) => {
    const seen = new Set<string>();
    file.hosts.forEach((h, i) => {
      if (seen.has(h.name)) ctx.addIssue({ code: 'custom', message: `duplicate host name "${h.name}"`, path: ['hosts', i, 'name'] });
      seen.add(h.name);
    });
  });
export type HostsFile = z.output<typeof hostsFileSchema>;

/** What `jailfleet plan --json` prints. */
export const planResultSchema = z.object({
  hostsUsed: z.number().int().min(0),
  /** Fewest hosts any packing of the placeable jails needs, by volume (see the CLI help). */
  lowerBound: z.number().int().min(0),
  hosts: z.array(z.object({ host: nameSchema, jails: z.array(nameSchema), cpu: z.number().min(0), memoryMB: z.number().int().min(0) })),
  unplaced: z.array(z.object({ name: nameSchema, reason: z.string() })),
});
export type PlanResultJson = z.infer<typeof planResultSchema>;
