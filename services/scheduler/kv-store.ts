// The scheduler's store on NATS KV: each bucket followed from its start (ordered pull consumer,
// reopened on failure: see follow.ts), every value parsed once by its contract here, and
// compare-and-set writes. An unreadable value is logged once per revision and counted, and kept
// in the cache as Unreadable: this module never deletes a record on its own.
import type { KV, KvEntry } from '@nats-io/kv';
import type { z } from 'zod';
import {
  BUCKET_ADDRESSES,
  BUCKET_DESIRED,
  BUCKET_HOSTS,
  BUCKET_PLACEMENT,
  addressRecordSchema,
  desiredRecordSchema,
  hostRecordSchema,
  placementRecordSchema,
  type AddressRecord,
  type DesiredRecord,
  type HostRecord,
  type PlacementRecord,
} from '../../contracts/index.js';
import { decodeRecord, encodeJson, followBucket, reportUnreadable, type BucketEntry, type Logger, type NatsConnection, type Topology } from '../common/index.js';
import { BucketCache, CasConflict, type BucketName, type RecordBucket, type SchedulerStore, type Slot, type StoreChange } from './store.js';

/** How long `current()` waits for the follower to reach the bucket's last revision. */
const CATCH_UP_MS = 10_000;

class KvBucket<T> implements RecordBucket<T> {
  readonly cache: BucketCache<T>;
  /** How many unreadable values this process has met (each revision once). */
  unreadableSeen = 0;
  /** The highest revision the bucket's follower has delivered (our own writes may run ahead of it). */
  heard = 0;

  constructor(
    private readonly name: BucketName,
    private readonly kv: KV,
    private readonly schema: z.ZodType<T>,
    private readonly log: Logger,
    emit: (c: StoreChange) => void,
  ) {
    this.cache = new BucketCache<T>(name, emit);
  }

  /** Parses one value: the one place a record of this bucket is read. */
  decode(key: string, revision: number, value: Uint8Array): Slot<T> {
    const d = decodeRecord(this.schema, value);
    return d.ok ? { key, revision, value: d.value as T } : { key, revision, unreadable: d.why };
  }

  /** A change seen by the watch or by a fetch. */
  note(key: string, revision: number, op: string, value: Uint8Array) {
    const slot = op === 'PUT' ? this.decode(key, revision, value) : undefined;
    const before = this.cache.get(key)?.revision ?? 0;
    this.cache.note(key, revision, slot);
    if (slot && 'unreadable' in slot && revision > before) {
      this.unreadableSeen++;
      reportUnreadable(this.log, this.name, key, revision, slot.unreadable);
    }
  }

  get(key: string) {
    return this.cache.get(key);
  }
  entries() {
    return this.cache.entries();
  }
  async fetch(key: string) {
    const e: KvEntry | null = await this.kv.get(key);
    if (e) this.note(key, e.revision, e.operation, e.value);
    return this.cache.get(key);
  }
  async put(key: string, value: T, revision: number): Promise<number> {
    let next: number;
    try {
      next = revision > 0 ? await this.kv.update(key, encodeJson(value), revision) : await this.kv.create(key, encodeJson(value));
    } catch (err) {
      throw new CasConflict(this.name, key, { cause: err });
    }
    this.cache.note(key, next, { key, revision: next, value });
    return next;
  }
  async current(): Promise<void> {
    const last = (await this.kv.status()).streamInfo.state.last_seq;
    const deadline = Date.now() + CATCH_UP_MS;
    while (this.heard < last) {
      if (Date.now() > deadline) throw new Error(`the ${this.name} bucket's follower is at revision ${this.heard}, not yet ${last}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  async remove(key: string, revision: number): Promise<void> {
    try {
      await this.kv.delete(key, { previousSeq: revision });
    } catch (err) {
      throw new CasConflict(this.name, key, { cause: err });
    }
    // the deletion's own revision is not returned: the watch brings it (and the cache drops the key now)
    this.cache.note(key, revision + 0.5, undefined);
  }
}

export class KvStore implements SchedulerStore {
  private readonly listeners: ((c: StoreChange) => void)[] = [];
  private readonly emit = (c: StoreChange) => this.listeners.forEach((l) => l(c));
  readonly desired: KvBucket<DesiredRecord>;
  readonly placements: KvBucket<PlacementRecord>;
  readonly hosts: KvBucket<HostRecord>;
  readonly addresses: KvBucket<AddressRecord>;
  readonly synced: Promise<void>;
  private readonly stops: (() => void)[] = [];

  constructor(nc: NatsConnection, topology: Topology, log: Logger) {
    this.desired = new KvBucket('desired', topology.desired, desiredRecordSchema as z.ZodType<DesiredRecord>, log, this.emit);
    this.placements = new KvBucket('placements', topology.placement, placementRecordSchema as z.ZodType<PlacementRecord>, log, this.emit);
    this.hosts = new KvBucket('hosts', topology.hosts, hostRecordSchema as z.ZodType<HostRecord>, log, this.emit);
    this.addresses = new KvBucket('addresses', topology.addresses, addressRecordSchema as z.ZodType<AddressRecord>, log, this.emit);
    const follow = (bucket: string, b: KvBucket<unknown>) => {
      const f = followBucket(
        nc,
        bucket,
        (e: BucketEntry) => {
          b.heard = Math.max(b.heard, e.revision);
          b.note(e.key, e.revision, e.operation, e.value);
        },
        log,
      );
      this.stops.push(() => f.stop());
      // a bucket that cannot be read within 30 s is followed on; the scheduler starts without it
      return Promise.race([f.synced, new Promise<void>((r) => setTimeout(r, 30_000).unref())]);
    };
    this.synced = Promise.all([
      follow(BUCKET_PLACEMENT, this.placements as KvBucket<unknown>),
      follow(BUCKET_DESIRED, this.desired as KvBucket<unknown>),
      follow(BUCKET_HOSTS, this.hosts as KvBucket<unknown>),
      follow(BUCKET_ADDRESSES, this.addresses as KvBucket<unknown>),
    ]).then(() => undefined);
  }

  onChange(listener: (c: StoreChange) => void): void {
    this.listeners.push(listener);
  }

  /** How many unreadable records this process has met, per bucket. */
  unreadable() {
    return { desired: this.desired.unreadableSeen, placements: this.placements.unreadableSeen, hosts: this.hosts.unreadableSeen, addresses: this.addresses.unreadableSeen };
  }

  close(): void {
    for (const s of this.stops) s();
    this.listeners.length = 0;
  }
}
