// The scheduler's records as it reads and writes them: desired state, placements and host records
// (drains) and jail addresses, each a versioned entry in a bucket. Every record is parsed once, where it enters
// (here); an unreadable one is kept as what it is (`Unreadable`, with the rule it broke), never
// dropped and never deleted by the scheduler. Implementations: NATS KV (kv-store.ts) and
// in-memory (memory-store.ts, for in-process tests). Nothing here decides anything.
import type { AddressRecord, DesiredRecord, HostRecord, PlacementRecord } from '../../contracts/index.js';

/** A readable record at a revision (the KV revision: the bucket stream's sequence). */
export interface Entry<T> {
  key: string;
  revision: number;
  value: T;
}

/** A record its contract refuses: the scheduler skips it and says so, once per revision. */
export interface Unreadable {
  key: string;
  revision: number;
  unreadable: string;
}

export type Slot<T> = Entry<T> | Unreadable;

export const isReadable = <T>(s: Slot<T> | undefined): s is Entry<T> => s !== undefined && !('unreadable' in s);

/** A compare-and-set write lost: someone wrote the key since the revision it was based on. */
export class CasConflict extends Error {
  constructor(
    readonly bucket: BucketName,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super(`${bucket} record "${key}" was changed by someone else`, options);
    this.name = 'CasConflict';
  }
}

export type BucketName = 'desired' | 'placements' | 'hosts' | 'addresses';

export interface RecordBucket<T> {
  /** The newest entry this process has seen: what the bucket's watch and our own writes brought. */
  get(key: string): Slot<T> | undefined;
  entries(): IterableIterator<Slot<T>>;
  /** Asks the bucket itself (after a lost race, or in an API request); the cache follows. */
  fetch(key: string): Promise<Slot<T> | undefined>;
  /** Writes `value` if the key is still at `revision` (0: absent). Resolves the new revision; throws CasConflict. */
  put(key: string, value: T, revision: number): Promise<number>;
  /** Deletes the key if it is still at `revision`; throws CasConflict. */
  remove(key: string, revision: number): Promise<void>;
  /** Resolves once the cache holds every write made to the bucket before the call (a read that must not miss one). */
  current(): Promise<void>;
}

export interface StoreChange {
  bucket: BucketName;
  key: string;
  slot: Slot<unknown> | undefined;
}

export interface SchedulerStore {
  readonly desired: RecordBucket<DesiredRecord>;
  readonly placements: RecordBucket<PlacementRecord>;
  readonly hosts: RecordBucket<HostRecord>;
  /** Vnet jails' addresses: address → the jail holding it (created on "absent": one holder each). */
  readonly addresses: RecordBucket<AddressRecord>;
  /** Every change of any bucket, newest revision only, each revision once (watch and own writes alike). */
  onChange(listener: (change: StoreChange) => void): void;
  /** Resolves once every bucket's content at start-up is in the cache. */
  readonly synced: Promise<void>;
  close(): void;
}

/**
 * The cache of one bucket: keeps the newest revision of each key and tells the listener of each
 * change once. Shared by both stores, so they cannot differ in what a change is.
 */
export class BucketCache<T> {
  private readonly slots = new Map<string, Slot<T>>();
  /** Revisions of deletions, so an older write delivered late cannot bring a key back. */
  private readonly deletedAt = new Map<string, number>();

  constructor(
    private readonly bucket: BucketName,
    private readonly emit: (change: StoreChange) => void,
  ) {}

  get(key: string): Slot<T> | undefined {
    return this.slots.get(key);
  }

  entries(): IterableIterator<Slot<T>> {
    return this.slots.values();
  }

  /** A value (or a deletion: `slot` undefined) seen at `revision`; ignored unless newer than what is known. */
  note(key: string, revision: number, slot: Slot<T> | undefined): void {
    const known = Math.max(this.slots.get(key)?.revision ?? 0, this.deletedAt.get(key) ?? 0);
    if (revision <= known) return;
    if (slot) {
      this.slots.set(key, slot);
      this.deletedAt.delete(key);
    } else {
      this.slots.delete(key);
      this.deletedAt.set(key, revision);
    }
    this.emit({ bucket: this.bucket, key, slot });
  }
}
