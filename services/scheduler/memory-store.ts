// The scheduler's store in memory: what the NATS KV buckets hold, with the same compare-and-set
// rules and revisions, for in-process tests of the scheduler (a harness, as Nomad's
// scheduler/testing.go is). Changes reach listeners a microtask later, as a watch would.
// Never used by a running service.
import type { AddressRecord, DesiredRecord, HostRecord, PlacementRecord } from '../../contracts/index.js';
import { BucketCache, CasConflict, type BucketName, type RecordBucket, type SchedulerStore, type Slot, type StoreChange } from './store.js';

class MemoryBucket<T> implements RecordBucket<T> {
  private revision = 0;
  readonly cache: BucketCache<T>;

  constructor(
    private readonly name: BucketName,
    emit: (c: StoreChange) => void,
  ) {
    this.cache = new BucketCache<T>(name, emit);
  }

  get(key: string) {
    return this.cache.get(key);
  }
  entries() {
    return this.cache.entries();
  }
  async fetch(key: string) {
    return this.cache.get(key);
  }
  async put(key: string, value: T, revision: number): Promise<number> {
    if ((this.cache.get(key)?.revision ?? 0) !== revision) throw new CasConflict(this.name, key);
    const next = ++this.revision;
    // a copy: the caller's object must not change what is stored
    this.cache.note(key, next, { key, revision: next, value: structuredClone(value) });
    return next;
  }
  async remove(key: string, revision: number): Promise<void> {
    const cur = this.cache.get(key);
    if (!cur || cur.revision !== revision) throw new CasConflict(this.name, key);
    this.cache.note(key, ++this.revision, undefined);
  }
  async current(): Promise<void> {
    // every write is in the cache as it is made
  }
  /** Writes a record its contract refuses, as a hand-edited or foreign value would be. */
  corrupt(key: string, why: string): number {
    const next = ++this.revision;
    this.cache.note(key, next, { key, revision: next, unreadable: why } as Slot<T>);
    return next;
  }
}

export class MemoryStore implements SchedulerStore {
  private readonly listeners: ((c: StoreChange) => void)[] = [];
  private readonly emit = (c: StoreChange) => queueMicrotask(() => this.listeners.forEach((l) => l(c)));
  readonly desired = new MemoryBucket<DesiredRecord>('desired', this.emit);
  readonly placements = new MemoryBucket<PlacementRecord>('placements', this.emit);
  readonly hosts = new MemoryBucket<HostRecord>('hosts', this.emit);
  readonly addresses = new MemoryBucket<AddressRecord>('addresses', this.emit);
  readonly synced = Promise.resolve();

  onChange(listener: (c: StoreChange) => void): void {
    this.listeners.push(listener);
  }
  close(): void {
    this.listeners.length = 0;
  }
}
