// The scheduler's API: `apply`, `stop`, `start`, `rm` write desired records, `drain`/`undrain`
// write host records. Every request is idempotent (the CLI retries one nobody answered), every
// write a compare-and-set retried on a lost race. Handlers only write records: the leader's
// reconciler acts on them. Any scheduler (leader or standby) answers.
import {
  WIRE_VERSION,
  applyRequestSchema,
  desiredRecordSchema,
  drainRequestSchema,
  nameRequestSchema,
  planRequestSchema,
  undrainRequestSchema,
  type ApiVerb,
  type DesiredRecord,
  type HostRecord,
  type JailSpec,
} from '../../contracts/index.js';
import { decodeWith } from '../common/index.js';
import type { PlanResult } from './plan.js';
import { isReadable, type RecordBucket, type SchedulerStore } from './store.js';

/** A request the API refuses or could not carry out; `code` is what the CLI decides by. */
export class ApiError extends Error {
  constructor(
    readonly code: 'invalid' | 'not_found' | 'conflict' | 'internal',
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** What the API asks of the cluster as this scheduler knows it. */
export interface ClusterFacts {
  jailsOn(host: string): string[];
  knownHost(host: string): boolean;
  /** What an apply of these specs would do now, writing nothing. */
  planFleet(specs: JailSpec[]): PlanResult;
}

const decodeDesired = (r: unknown): DesiredRecord => desiredRecordSchema.parse(r);
const sameSpec = (a: JailSpec, b: JailSpec) => JSON.stringify(a) === JSON.stringify(b);
const iso = () => new Date().toISOString();

/**
 * Read-modify-write of one record, from the bucket itself, retried on a concurrent write.
 * `change` returns the new record (or throws an ApiError).
 */
async function cas<T, R extends { record: T; unchanged?: boolean }>(bucket: RecordBucket<T>, key: string, what: string, change: (cur: T | undefined, unreadable: string | null) => R): Promise<R & { revision: number }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const cur = await bucket.fetch(key);
    const r = change(isReadable(cur) ? cur.value : undefined, cur && !isReadable(cur) ? cur.unreadable : null);
    // nothing to write: a repeated request leaves the record (and its revision) as it is
    if (r.unchanged && cur) return { ...r, revision: cur.revision };
    try {
      return { ...r, revision: await bucket.put(key, r.record, cur?.revision ?? 0) };
    } catch {
      await new Promise((res) => setTimeout(res, 5 * (attempt + 1)));
    }
  }
  throw new ApiError('conflict', `${what} "${key}" is being changed by someone else; try again`);
}

export class SchedulerApi {
  constructor(
    private readonly store: SchedulerStore,
    private readonly cluster: ClusterFacts,
  ) {}

  /** Handles one request's body; resolves the reply's result or throws (ApiError, InvalidInput). */
  handle(verb: ApiVerb, data: Uint8Array): Promise<unknown> {
    switch (verb) {
      case 'apply':
        return this.apply(data);
      case 'drain':
      case 'undrain':
        return this.setDrain(verb, data);
      case 'plan':
        return Promise.resolve(this.cluster.planFleet(decodeWith(planRequestSchema, data).fleet.jails));
      default:
        return this.setDesired(verb, data);
    }
  }

  private async apply(data: Uint8Array) {
    const req = decodeWith(applyRequestSchema, data);
    // one read-modify-write per jail, 32 in flight: a fleet of thousands is answered in seconds
    const specs = req.fleet.jails;
    const out: { name: string; generation: number; changed: boolean }[] = new Array(specs.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < specs.length; i = next++) {
        const r = await this.applyOne(specs[i]!);
        out[i] = { name: specs[i]!.name, generation: r.record.generation, changed: r.changed };
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, specs.length) }, worker));
    return { jails: out };
  }

  /** The same spec keeps its generation (and is started if stopped); a new one goes up by one. */
  private applyOne(spec: JailSpec) {
    return cas(this.store.desired, spec.name, 'jail', (cur) => {
      if (cur && cur.desired !== 'removed' && sameSpec(cur.spec, spec)) return { record: { ...cur, desired: 'running' } as DesiredRecord, changed: false, unchanged: cur.desired === 'running' };
      // over an unreadable record: above the generation its placement names, so no old copy is taken for the new one
      const record: DesiredRecord = { v: WIRE_VERSION, spec, desired: 'running', generation: (cur?.generation ?? this.placedGeneration(spec.name)) + 1, updatedAt: iso() };
      return { record, changed: true };
    });
  }

  private async setDesired(verb: 'stop' | 'start' | 'rm', data: Uint8Array) {
    const { name } = decodeWith(nameRequestSchema, data);
    const target = verb === 'stop' ? 'stopped' : verb === 'start' ? 'running' : 'removed';
    const r = await cas(this.store.desired, name, 'jail', (cur, unreadable) => {
      if (unreadable !== null && target !== 'removed') throw new ApiError('conflict', `the desired record of "${name}" is unreadable (${unreadable}): apply its spec again, or rm it`);
      if (unreadable !== null) {
        // rm of an unreadable record: a tombstone above any generation placed, with a spec that says nothing
        const record = { v: WIRE_VERSION, spec: { name, command: ['/bin/true'] }, desired: 'removed', generation: this.placedGeneration(name) + 1, updatedAt: iso() };
        return { record: decodeDesired(record) };
      }
      if (!cur || cur.desired === 'removed') throw new ApiError('not_found', `no jail named "${name}"`);
      return { record: { ...cur, desired: target, updatedAt: iso() } as DesiredRecord };
    });
    return { name, generation: r.record.generation };
  }

  /** The generation the jail's placement names (0: none readable). */
  private placedGeneration(name: string): number {
    const p = this.store.placements.get(name);
    return isReadable(p) ? p.value.generation : 0;
  }

  /** `drain` / `undrain`: records the request in the hosts bucket; the leader acts on it. */
  private async setDrain(verb: 'drain' | 'undrain', data: Uint8Array) {
    const req = verb === 'drain' ? decodeWith(drainRequestSchema, data) : { ...decodeWith(undrainRequestSchema, data), parallel: 1 };
    const jails = this.cluster.jailsOn(req.host);
    if (!this.cluster.knownHost(req.host)) throw new ApiError('not_found', `no host named "${req.host}" (not heard from since this scheduler started, and no jail is placed on it)`);
    const hosts = this.store.hosts;
    if (verb === 'undrain') {
      for (let attempt = 0; attempt < 20; attempt++) {
        const cur = await hosts.fetch(req.host);
        if (!cur) break;
        try {
          await hosts.remove(req.host, cur.revision);
          break;
        } catch {
          await new Promise((res) => setTimeout(res, 5 * (attempt + 1)));
        }
      }
      return { host: req.host, draining: false, jails };
    }
    await cas(hosts, req.host, 'host', (cur) => {
      const record: HostRecord = { v: WIRE_VERSION, draining: true, parallel: req.parallel, since: cur?.draining ? cur.since : iso(), blocked: cur?.blocked ?? [] };
      return { record };
    });
    return { host: req.host, draining: true, jails };
  }
}
