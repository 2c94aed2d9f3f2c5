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
  imageRmRequestSchema,
  Conflict,
  InvalidInput,
  JailNotFound,
  vnetOf,
  NotFound,
  Unavailable,
  parseOrThrow,
  type ApiVerb,
  type NameRequest,
  type DesiredRecord,
  type HostRecord,
  type JailSpec,
} from '../../contracts/index.js';
import type { z } from 'zod';
import { DEFAULT_JAIL_CIDR, JailNetwork } from '../common/jail-network.js';
import type { ImagePins } from './image-pins.js';
import type { PlanResult } from './plan.js';
import { isReadable, type RecordBucket, type SchedulerStore } from './store.js';

/** What the API asks of the cluster as this scheduler knows it. */
export interface ClusterFacts {
  jailsOn(host: string): string[];
  knownHost(host: string): boolean;
  /** What an apply of these specs would do now, writing nothing. */
  planFleet(specs: JailSpec[]): PlanResult;
}

type ApplyRequestBody = z.output<typeof applyRequestSchema>;
type DrainRequestBody = z.output<typeof drainRequestSchema>;
type PlanRequestBody = z.output<typeof planRequestSchema>;
type ImageRmRequestBody = z.output<typeof imageRmRequestSchema>;

const decodeDesired = (r: unknown): DesiredRecord => desiredRecordSchema.parse(r);
const sameSpec = (a: JailSpec, b: JailSpec) => JSON.stringify(a) === JSON.stringify(b);
const iso = () => new Date().toISOString();

/**
 * Read-modify-write of one record, from the bucket itself, retried on a concurrent write.
 * `change` returns the new record (or throws a typed error of contracts/errors.ts).
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
  throw new Conflict(`${what} "${key}" is being changed by someone else; try again`);
}

export class SchedulerApi {
  constructor(
    private readonly store: SchedulerStore,
    private readonly cluster: ClusterFacts,
    /** Pins image tags at apply and removes them (`image rm`); without it, tags stay as written and image-rm is Unavailable. */
    private readonly images?: ImagePins,
    private readonly jailNetwork: JailNetwork = JailNetwork.parse(DEFAULT_JAIL_CIDR),
  ) {}

  /** Each verb's request contract and handler: the wiring serves them with serveRpc, tests call them directly. */
  readonly verbs = {
    apply: { request: applyRequestSchema, handle: (r: ApplyRequestBody) => this.apply(r) },
    stop: { request: nameRequestSchema, handle: (r: NameRequest) => this.setDesired('stop', r.name) },
    start: { request: nameRequestSchema, handle: (r: NameRequest) => this.setDesired('start', r.name) },
    rm: { request: nameRequestSchema, handle: (r: NameRequest) => this.setDesired('rm', r.name) },
    drain: { request: drainRequestSchema, handle: (r: DrainRequestBody) => this.setDrain('drain', r.host, r.parallel) },
    undrain: { request: undrainRequestSchema, handle: (r: { host: string }) => this.setDrain('undrain', r.host, 1) },
    plan: { request: planRequestSchema, handle: (r: PlanRequestBody) => this.cluster.planFleet(r.fleet.jails) },
    'image-rm': { request: imageRmRequestSchema, handle: (r: ImageRmRequestBody) => this.imageRm(r) },
  } as const;

  /** One request's JSON body through its verb's contract and handler (InvalidInput when it does not fit). */
  async handle(verb: ApiVerb, body: unknown): Promise<unknown> {
    const v = this.verbs[verb] as { request: z.ZodTypeAny; handle: (r: unknown) => unknown };
    return v.handle(parseOrThrow(v.request, body));
  }

  private async apply(req: ApplyRequestBody) {
    this.checkAddresses(req.fleet.jails);
    // one read-modify-write per jail, 32 in flight: a fleet of thousands is answered in seconds
    const { specs, pinned } = this.images ? await this.images.pin(req.fleet.jails) : { specs: req.fleet.jails, pinned: new Map<string, string>() };
    const out: { name: string; generation: number; changed: boolean }[] = new Array(specs.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < specs.length; i = next++) {
        const r = await this.applyOne(specs[i]!);
        out[i] = { name: specs[i]!.name, generation: r.record.generation, changed: r.changed };
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, specs.length) }, worker));
    // after the writes, never before: an `image rm` racing this apply sees them or loses (image-pins.ts)
    await this.images?.confirm(pinned);
    return { jails: out };
  }

  private async imageRm(req: ImageRmRequestBody) {
    if (!this.images) throw new Unavailable('this scheduler has no image store');
    return this.images.remove(req.tag, req.force, this.store.desired);
  }

  /**
   * A vnet address a spec asks for must lie in the jail network and be free (or already this
   * jail's): refused here, naming the field, before anything is written. The leader's
   * compare-and-set in the addresses bucket settles a race between two applies.
   */
  private checkAddresses(specs: JailSpec[]): void {
    const asked = new Map<string, string>();
    specs.forEach((s, i) => {
      const address = vnetOf(s)?.address;
      if (!address) return;
      const field = `jails.${i}.network.address`;
      const why = this.jailNetwork.refuse(address);
      if (why) throw new InvalidInput(`${field}: ${why}`);
      const other = asked.get(address);
      if (other) throw new InvalidInput(`${field}: ${address} is asked for by jail "${other}" too`);
      asked.set(address, s.name);
      const held = this.store.addresses.get(address);
      const holder = isReadable(held) ? held.value.jail : null;
      if (holder && holder !== s.name) throw new InvalidInput(`${field}: ${address} is held by jail "${holder}" (rm it, or leave address out to get a free one)`);
    });
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

  private async setDesired(verb: 'stop' | 'start' | 'rm', name: string) {
    const target = verb === 'stop' ? 'stopped' : verb === 'start' ? 'running' : 'removed';
    const r = await cas(this.store.desired, name, 'jail', (cur, unreadable) => {
      if (unreadable !== null && target !== 'removed') throw new Conflict(`the desired record of "${name}" is unreadable (${unreadable}): apply its spec again, or rm it`);
      if (unreadable !== null) {
        // rm of an unreadable record: a tombstone above any generation placed, with a spec that says nothing
        const record = { v: WIRE_VERSION, spec: { name, command: ['/bin/true'] }, desired: 'removed', generation: this.placedGeneration(name) + 1, updatedAt: iso() };
        return { record: decodeDesired(record) };
      }
      if (!cur || cur.desired === 'removed') throw new JailNotFound(name);
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
  private async setDrain(verb: 'drain' | 'undrain', host: string, parallel: number) {
    const req = { host, parallel };
    const jails = this.cluster.jailsOn(req.host);
    if (!this.cluster.knownHost(req.host)) throw new NotFound(`no host named "${req.host}" (not heard from since this scheduler started, and no jail is placed on it)`);
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
