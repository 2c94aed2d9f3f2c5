// The scheduler's packing of the live cluster: a ClusterPacking kept in step with what the
// scheduler hears (heartbeats: capacity and labels; liveness; drains) and what its KV caches hold
// (desired specs: resources and spread group; placements: which host). Pure bookkeeping, no I/O:
// the scheduler calls it from its watches and its reconciles. It never writes a placement; it only
// says where a jail would fit and remembers the reservation. One jail is placed online (`place`),
// many at once with the batch engine of `jailfleet plan` (`placeBatch`, `dryRun`); both decide
// with the same checkers (constraints.ts), so a plan is what an apply does.
import type { JailSpec } from '../../contracts/index.js';
import { ClusterPacking, type PackHost, type PackStrategy, type PlacedJail, type PlaceResult } from './packing.js';
import { planBatch, type BatchPlan, type PlanOptions, type PlanResult } from './plan.js';

const hostKey = (h: PackHost) => JSON.stringify([h.up, h.draining, h.capacity.cpu, h.capacity.memoryMB, h.labels, h.volumes ?? {}]);
const heldKey = (spec: JailSpec, host: string) => JSON.stringify([host, spec.resources.cpu, spec.resources.memoryMB, spec.placement.spreadGroup ?? null]);

export class LivePacking {
  private readonly packing: ClusterPacking;
  private readonly hosts = new Map<string, { host: PackHost; key: string }>();
  private readonly specs = new Map<string, JailSpec>();
  /** Where each jail is (its placement, or the target of a move in flight). */
  private readonly where = new Map<string, string>();
  /** What the packing holds for each jail, to skip updates that change nothing. */
  private readonly held = new Map<string, string>();

  constructor(readonly strategy: PackStrategy) {
    this.packing = new ClusterPacking([], [], strategy);
  }

  /** A host's capacity and labels (heartbeat), liveness or drain changed: only what changed is applied. */
  host(patch: Partial<PackHost> & { name: string }): void {
    const cur = this.hosts.get(patch.name)?.host ?? { name: patch.name, up: false, draining: false, capacity: { cpu: 0, memoryMB: 0 }, labels: {} };
    const next: PackHost = { ...cur, ...patch };
    const key = hostKey(next);
    if (this.hosts.get(next.name)?.key === key) return;
    this.hosts.set(next.name, { host: next, key });
    this.packing.upsertHost(next);
  }

  /** The jail's spec (desired record), or undefined once its record is gone. */
  spec(name: string, spec: JailSpec | undefined): void {
    if (spec) this.specs.set(name, spec);
    else this.specs.delete(name);
    this.sync(name);
  }

  /** The host the jail is on (null: not placed). */
  at(name: string, host: string | null): void {
    if (host) this.where.set(name, host);
    else this.where.delete(name);
    this.sync(name);
  }

  /** Chooses a host for the jail and reserves its resources there (releasing where it was), or says why none. */
  place(spec: JailSpec): PlaceResult {
    this.specs.set(spec.name, spec);
    const r = this.packing.place(spec);
    if (r.host) {
      this.where.set(spec.name, r.host);
      this.held.set(spec.name, heldKey(spec, r.host));
    } else {
      // nothing is reserved any more: `at` puts back what the placement says
      this.where.delete(spec.name);
      this.held.delete(spec.name);
    }
    return r;
  }

  /**
   * Places new jails together, as `jailfleet plan` does (hardest and largest first, then the
   * bounded local search), around the jails already placed, which do not move; reserves each
   * one placed. A spec listed twice counts once (the last). Every spec gets an answer.
   */
  placeBatch(specs: readonly JailSpec[], options: PlanOptions = {}): Map<string, PlaceResult> {
    const batch = [...new Map(specs.map((s) => [s.name, s])).values()];
    const { placements } = this.batch(batch, options);
    for (const spec of batch) {
      const r = placements.get(spec.name)!;
      this.specs.set(spec.name, spec);
      if (r.host) {
        this.where.set(spec.name, r.host);
        this.held.set(spec.name, heldKey(spec, r.host));
        this.packing.assign(spec.name, r.host, spec.resources, spec.placement.spreadGroup);
      } else {
        // as with `place`: nothing is reserved any more; `at` puts back what the placement says
        this.where.delete(spec.name);
        this.held.delete(spec.name);
        this.packing.release(spec.name);
      }
    }
    return placements;
  }

  /** What `placeBatch` would do now, reserving nothing: the answer to `jailfleet plan` on the live cluster. */
  dryRun(specs: readonly JailSpec[], options: PlanOptions = {}): PlanResult {
    return this.batch([...new Map(specs.map((s) => [s.name, s])).values()], options).result;
  }

  hostOf(name: string): string | undefined {
    return this.packing.hostOf(name);
  }

  /** The batch engine run on a copy of the live hosts and of what they hold. */
  private batch(specs: readonly JailSpec[], options: PlanOptions): BatchPlan {
    const placed: PlacedJail[] = [];
    for (const name of this.held.keys()) {
      const spec = this.specs.get(name);
      const host = this.packing.hostOf(name);
      if (spec && host) placed.push({ name, host, resources: spec.resources, spreadGroup: spec.placement.spreadGroup });
    }
    const hosts = [...this.hosts.values()].map((h) => h.host);
    return planBatch(specs, hosts, placed, this.strategy, options);
  }

  private sync(name: string): void {
    const spec = this.specs.get(name);
    const host = this.where.get(name);
    if (!spec || !host) {
      if (this.held.delete(name)) this.packing.release(name);
      return;
    }
    const key = heldKey(spec, host);
    if (this.held.get(name) === key) return;
    this.held.set(name, key);
    this.packing.assign(name, host, spec.resources, spec.placement.spreadGroup);
  }
}
