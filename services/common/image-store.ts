// The cluster's image store: canonical tars in a JetStream object store (by digest) and tags in a
// KV bucket (`NAME/TAG` → image record), so every agent fetches images from the brokers it already
// talks to. Creating the buckets is idempotent. It must never store an object under a name that
// is not the sha256 of its bytes (the importer hashes, the agent checks again on fetch).
// Speed (a 100 MB pull, profiled): nats.js hashes every object it puts and gets with a pure-JS
// SHA-256 unless told otherwise (about 25 MB/s here): node:crypto's is switched on for the whole
// process below; and chunks of 1 MiB read about twice as fast as 128 KiB ones (fewer messages,
// fewer flow-control rounds) while 4 MiB ones were no faster.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { Kvm, type KV } from '@nats-io/kv';
import { Objm, StorageType, setSha256Backend, type ObjectResult, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  BUCKET_IMAGES,
  BUCKET_IMAGE_TAGS,
  InvalidInput,
  NotFound,
  imageRecordSchema,
  imageTagKey,
  parseImageRef,
  type ImageRecord,
} from '../../contracts/index.js';
import { decodeWith, encodeJson } from './codec.js';
import { replicasFor } from './nats.js';

/** A tag's record and the KV revision it was read at. */
export interface TagEntry {
  record: ImageRecord;
  revision: number;
}

// process-wide, before any object store call (nats.js's own rule for it)
setSha256Backend('native');

/** The object store's chunk size for an image: 1 MiB, or less when the broker's max_payload is smaller (headers need room). */
export const imageChunkBytes = (maxPayload: number | undefined) => Math.min(1024 * 1024, Math.floor((maxPayload ?? 1024 * 1024) / 2));

export class ImageStore {
  private constructor(
    readonly tags: KV,
    readonly blobs: ObjectStore,
    private readonly chunkBytes: number,
  ) {}

  /** Opens (or creates) both buckets. */
  static async open(nc: NatsConnection): Promise<ImageStore> {
    const replicas = replicasFor(nc);
    const kvm = new Kvm(nc);
    const tags = await kvm
      .open(BUCKET_IMAGE_TAGS)
      .then(async (kv) => {
        await kv.status();
        return kv;
      })
      .catch(() => kvm.create(BUCKET_IMAGE_TAGS, { history: 1, replicas }));
    const objm = new Objm(nc);
    const blobs = await objm.open(BUCKET_IMAGES).catch(() => objm.create(BUCKET_IMAGES, { replicas, storage: StorageType.File }));
    return new ImageStore(tags, blobs, imageChunkBytes(nc.info?.max_payload));
  }

  /** Stores a canonical tar under its digest, unless the store holds it already. */
  async putBlob(digest: string, tarPath: string, bytes: number): Promise<'stored' | 'present'> {
    const info = await this.blobs.info(digest);
    if (info && !info.deleted && info.size === bytes) return 'present';
    const rs = Readable.toWeb(createReadStream(tarPath, { highWaterMark: this.chunkBytes })) as ReadableStream<Uint8Array>;
    await this.blobs.put({ name: digest, description: 'jailfleet image (canonical tar)', options: { max_chunk_size: this.chunkBytes } }, rs);
    return 'stored';
  }

  /** The canonical tar of `digest`, streamed; null when the store has no such object. */
  async getBlob(digest: string): Promise<ObjectResult | null> {
    return this.blobs.get(digest);
  }

  async hasBlob(digest: string): Promise<boolean> {
    const info = await this.blobs.info(digest);
    return Boolean(info && !info.deleted);
  }

  async deleteBlob(digest: string): Promise<void> {
    await this.blobs.delete(digest).catch(() => undefined);
  }

  async putTag(record: ImageRecord): Promise<void> {
    await this.tags.put(imageTagKey(`${record.name}:${record.tag}`), encodeJson(record));
  }

  /** The record `NAME:TAG` points at, or null. */
  async tag(tagRef: string): Promise<ImageRecord | null> {
    const e = await this.tags.get(imageTagKey(tagRef));
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
    return decodeWith(imageRecordSchema, e.value);
  }

  async deleteTag(tagRef: string): Promise<void> {
    await this.tags.delete(imageTagKey(tagRef));
  }

  /** The record `NAME:TAG` points at with its KV revision (for a compare-and-set), or null. */
  async tagEntry(tagRef: string): Promise<TagEntry | null> {
    const e = await this.tags.get(imageTagKey(tagRef));
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
    return { record: decodeWith(imageRecordSchema, e.value), revision: e.revision };
  }

  /** Writes the tag's record if the tag is still at `revision`: its new revision, or null when someone wrote it since. */
  async updateTag(record: ImageRecord, revision: number): Promise<number | null> {
    return this.tags.update(imageTagKey(`${record.name}:${record.tag}`), encodeJson(record), revision).catch(() => null);
  }

  /** Deletes the tag if it is still at `revision`: false when someone wrote it since. */
  async deleteTagAt(tagRef: string, revision: number): Promise<boolean> {
    return this.tags.delete(imageTagKey(tagRef), { previousSeq: revision }).then(
      () => true,
      () => false,
    );
  }

  /** Every tag's record (an unreadable one is skipped). */
  async list(): Promise<ImageRecord[]> {
    const out: ImageRecord[] = [];
    const keys = await this.tags.keys();
    for await (const key of keys) {
      const e = await this.tags.get(key);
      if (!e || e.operation !== 'PUT' || e.value.length === 0) continue;
      try {
        out.push(decodeWith(imageRecordSchema, e.value));
      } catch {
        // an unreadable record is not an image anyone can use; `image rm` of its tag removes it
      }
    }
    return out.sort((a, b) => `${a.name}:${a.tag}`.localeCompare(`${b.name}:${b.tag}`));
  }

  /**
   * The digest a spec's image reference means now: its own digest, else what its tag points at.
   * NotFound when the tag is unknown or the digest's bytes are not in the store.
   */
  async resolve(ref: string): Promise<string> {
    const { tag, digest } = parseImageRef(ref);
    if (digest) return digest;
    if (!tag) throw new InvalidInput(`image: ${ref} is not an image reference`);
    const record = await this.tag(tag);
    if (!record) throw new NotFound(`no image ${tag} in the cluster (import it with: jailfleet image import ${tag} PATH)`);
    return record.digest;
  }
}
