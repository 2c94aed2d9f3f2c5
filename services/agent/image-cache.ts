// The agent's cache of unpacked images: `<dataDir>/images/<hex>/rootfs`, shared read-only by
// every jail of that image (the overlay's lower layer). An image is fetched from the cluster's
// object store on first use, its sha256 checked, every member checked by the ImageTree rules,
// then unpacked by tar into a scratch directory that is renamed into place only when complete;
// so an interrupted fetch leaves a `.partial-*` directory, which the next start removes, and
// never anything that could be taken for an image. Least recently used images go first when the
// cache outgrows its budget. It must never remove an image a jail on this host uses, and never
// unpack a member the rules refuse.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { imageDigestSchema, NotFound, parseImageRef } from '../../contracts/index.js';
import { DEFAULT_IMAGE_CACHE_MB, DEFAULT_MAX_IMAGE_MB } from '../common/defaults.js';
import { ImageRefused, ImageTree } from '../common/image-tree.js';
import { readTarInto } from '../common/image-tar.js';
import type { ImageStore } from '../common/image-store.js';

/** A fetched image failed its check (digest, members) or could not be fetched; the jail's step fails with this. */
export class ImageUnavailable extends Error {
  constructor(
    readonly digest: string,
    why: string,
    options?: { cause?: unknown },
  ) {
    super(`image ${digest}: ${why}`, options);
    this.name = 'ImageUnavailable';
  }
}

interface CachedImage {
  digest: string;
  /** Bytes of file contents unpacked (what the budget counts). */
  bytes: number;
  lastUsedMs: number;
}

export interface ImageCacheOptions {
  /** `<dataDir>/images`. */
  dir: string;
  /** The cluster's image store, opened on first need. */
  store: () => Promise<ImageStore>;
  /** Digests jails on this host use: never collected. */
  inUse: () => Promise<Set<string>>;
  maxImageBytes?: number;
  cacheBytes?: number;
  logger?: { info: (o: object, msg: string) => void; warn: (o: object, msg: string) => void };
}

const MB = 1024 * 1024;
const hexOf = (digest: string) => digest.slice('sha256:'.length);

export class ImageCache {
  private readonly fetching = new Map<string, Promise<void>>();
  private readonly maxImageBytes: number;
  private readonly cacheBytes: number;
  private cleanup?: Promise<void>;
  /** What held() found last: the heartbeat's list, without a directory read per beat. */
  private known: string[] = [];

  constructor(private readonly opts: ImageCacheOptions) {
    this.maxImageBytes = opts.maxImageBytes ?? DEFAULT_MAX_IMAGE_MB * MB;
    this.cacheBytes = opts.cacheBytes ?? DEFAULT_IMAGE_CACHE_MB * MB;
    void this.held();
  }

  /** The unpacked root of `digest`, fetched and unpacked first when this host has not got it. */
  async ensure(digest: string): Promise<string> {
    if (!imageDigestSchema.safeParse(digest).success) throw new ImageUnavailable(digest, 'not a sha256 digest');
    const dir = join(this.opts.dir, hexOf(digest));
    const meta = await this.meta(hexOf(digest));
    if (meta) {
      await this.writeMeta({ ...meta, lastUsedMs: Date.now() });
      return join(dir, 'rootfs');
    }
    let pending = this.fetching.get(digest);
    if (!pending) {
      pending = this.fetch(digest).finally(() => this.fetching.delete(digest));
      this.fetching.set(digest, pending);
    }
    await pending;
    await this.collect(digest).catch((err: unknown) => this.opts.logger?.warn({ err }, 'image cache collection failed'));
    return join(dir, 'rootfs');
  }

  /**
   * The digest and unpacked root of a spec's image reference: its digest, else the one this jail
   * was prepared from (`recorded`), else what its tag points at in the cluster now.
   */
  async resolve(ref: string, recorded: string | null): Promise<string> {
    const { tag, digest } = parseImageRef(ref);
    if (digest ?? recorded) return (digest ?? recorded)!;
    const store = await this.opts.store();
    return store.resolve(tag!).catch((err: unknown) => {
      throw new ImageUnavailable(tag!, err instanceof Error ? err.message : String(err), { cause: err });
    });
  }

  /** Digests unpacked on this host. */
  async held(): Promise<string[]> {
    const names = await readdir(this.opts.dir).catch(() => [] as string[]);
    this.known = names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`).sort();
    return this.known;
  }

  /** The digests held as last seen (refreshed by every fetch and collection). */
  snapshot(): string[] {
    return this.known;
  }

  /**
   * Removes least recently used images no jail uses until the cache fits its budget; the digests
   * removed. `keep`: the image just ensured, which its caller is about to use.
   */
  async collect(keep?: string): Promise<string[]> {
    const images = (await Promise.all((await this.held()).map((d) => this.meta(hexOf(d))))).filter((m): m is CachedImage => m !== null);
    let total = images.reduce((n, m) => n + m.bytes, 0);
    if (total <= this.cacheBytes) return [];
    const used = await this.opts.inUse();
    const removed: string[] = [];
    for (const m of images.sort((a, b) => a.lastUsedMs - b.lastUsedMs)) {
      if (total <= this.cacheBytes) break;
      if (used.has(m.digest) || this.fetching.has(m.digest) || m.digest === keep) continue;
      // renamed first, so a half-removed image is never taken for a whole one
      const doomed = join(this.opts.dir, `.partial-gc-${hexOf(m.digest)}-${randomBytes(4).toString('hex')}`);
      await rename(join(this.opts.dir, hexOf(m.digest)), doomed);
      await rm(doomed, { recursive: true, force: true });
      total -= m.bytes;
      removed.push(m.digest);
      this.opts.logger?.info({ digest: m.digest, bytes: m.bytes }, 'unused image removed from the cache');
    }
    await this.held();
    return removed;
  }

  private async fetch(digest: string): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
    // what an interrupted fetch or collection of an earlier run left (never an image), once,
    // before this run's first scratch directory exists
    this.cleanup ??= readdir(this.opts.dir).then(async (names) => {
      for (const n of names) if (n.startsWith('.partial-')) await rm(join(this.opts.dir, n), { recursive: true, force: true });
    });
    await this.cleanup;
    const started = Date.now();
    const scratch = join(this.opts.dir, `.partial-${hexOf(digest)}-${randomBytes(4).toString('hex')}`);
    await mkdir(scratch, { mode: 0o700 });
    try {
      const tar = join(scratch, 'image.tar');
      const store = await this.opts.store();
      const got = await store.getBlob(digest);
      if (!got) throw new ImageUnavailable(digest, "not in the cluster's image store (was it removed? import it again)", { cause: new NotFound(digest) });
      if (got.info.size > this.maxImageBytes * 2) throw new ImageUnavailable(digest, `its archive is ${Math.round(got.info.size / MB)} MB, more than this agent takes`);
      const hash = createHash('sha256');
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          done(null, chunk);
        },
      });
      // one pass over the fetched bytes: hashed and written to the scratch file, and at the same
      // time every member checked by the import's rules (the store is only as safe as its
      // writers); tar sees the file only once both are done
      const source = Readable.fromWeb(got.data as import('node:stream/web').ReadableStream<Uint8Array>);
      const forCheck = new PassThrough({ highWaterMark: 4 * MB });
      source.pipe(forCheck);
      const tree = new ImageTree<undefined>(this.maxImageBytes);
      // a refused member ends the check, not the fetch: the digest is still compared first
      const [written, checked] = await Promise.allSettled([
        pipeline(source, hashing, createWriteStream(tar)),
        readTarInto(tree, forCheck, 0, async (body) => {
          body.resume();
          await new Promise<void>((resolve, reject) => body.on('end', resolve).on('error', reject));
          return undefined;
        }),
      ]);
      const failure = (await got.error) ?? (written.status === 'rejected' ? (written.reason as Error) : null);
      if (failure) throw new ImageUnavailable(digest, `the fetch failed: ${failure.message}`, { cause: failure });
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest) throw new ImageUnavailable(digest, `digest mismatch: the store's bytes hash to ${actual}`);
      if (checked.status === 'rejected') {
        const err = checked.reason as unknown;
        throw new ImageUnavailable(digest, err instanceof ImageRefused ? `refused: ${err.message}` : String(err), { cause: err });
      }
      const rootfs = join(scratch, 'rootfs');
      await mkdir(rootfs, { mode: 0o755 });
      const r = await execa('tar', ['-x', '-p', '--numeric-owner', '--no-overwrite-dir', '-f', tar, '-C', rootfs], { reject: false, stdin: 'ignore', env: { LC_ALL: 'C' } });
      if (r.failed) throw new ImageUnavailable(digest, `tar -x failed: ${r.stderr.trim() || r.shortMessage}`, { cause: r });
      await rm(tar);
      await writeFile(join(scratch, 'image.json'), JSON.stringify({ digest, bytes: tree.contentBytes, lastUsedMs: Date.now() } satisfies CachedImage));
      await rename(scratch, join(this.opts.dir, hexOf(digest)));
      await this.held();
      this.opts.logger?.info({ digest, bytes: tree.contentBytes, ms: Date.now() - started }, 'image fetched and unpacked');
    } catch (err) {
      await rm(scratch, { recursive: true, force: true });
      throw err;
    }
  }

  private async meta(hex: string): Promise<CachedImage | null> {
    const text = await readFile(join(this.opts.dir, hex, 'image.json'), 'utf8').catch(() => null);
    if (text === null) return null;
    try {
      const m = JSON.parse(text) as CachedImage;
      if (m.digest !== `sha256:${hex}` || !Number.isFinite(m.bytes)) return null;
      if (!(await stat(join(this.opts.dir, hex, 'rootfs')).catch(() => null))?.isDirectory()) return null;
      return m;
    } catch {
      return null;
    }
  }

  private async writeMeta(m: CachedImage): Promise<void> {
    const path = join(this.opts.dir, hexOf(m.digest), 'image.json');
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(m));
    await rename(tmp, path);
  }
}
