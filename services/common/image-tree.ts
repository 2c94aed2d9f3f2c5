// An image's file tree as tar entries, with the rules that keep a hostile archive out: every name
// is relative and free of `..`, nothing is written through a symlink, a hard link names an entry
// already in the tree, a relative symlink stays inside it, device nodes are skipped, and the
// total stays under a limit. Layers are applied in order with their whiteouts (`.wh.NAME`, the
// opaque `.wh..wh..opq`). The import (CLI) builds its canonical tar from such a tree; the agent
// checks every entry of a tar it fetched with the same rules before anything is unpacked.
// It must never touch the file system itself: file contents are opaque handles the caller keeps.
import { posix } from 'node:path';
import type { Header } from 'tar-stream';

/** A tar member's header as readers hand it (every field but the name may be missing). */
export type Headers = Partial<Header> & { name: string };

/** An archive or one of its entries broke a rule; `entry` names it (empty for the archive as a whole). */
export class ImageRefused extends Error {
  constructor(
    readonly entry: string,
    readonly rule: string,
    options?: { cause?: unknown },
  ) {
    super(entry ? `entry "${entry}": ${rule}` : rule, options);
    this.name = 'ImageRefused';
  }
}

export type EntryType = 'file' | 'directory' | 'symlink' | 'link' | 'fifo';

export interface TreeEntry<D> {
  /** Relative, normalised, no leading `./` (the root itself is never an entry). */
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  size: number;
  /** symlink: its target as written; link: the path of the entry it shares data with. */
  linkname?: string;
  /** A file's contents (or a hard link's target's), as the caller stores it. */
  data?: D;
  /** Which layer wrote it (whiteouts remove only what lower layers wrote). */
  layer: number;
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
export const MAX_IMAGE_ENTRIES = 2_000_000;

/**
 * An archive member's name, normalised (`./a//b/` → `a/b`), or an ImageRefused: absolute names
 * and any `..` segment are refused, not stripped, so an archive never means two things.
 */
export function entryPath(raw: string): string {
  if (raw.includes('\0')) throw new ImageRefused(raw.replace(/\0/g, '\\0'), 'a NUL byte in the name');
  if (raw.startsWith('/')) throw new ImageRefused(raw, 'an absolute name (names must be relative to the image root)');
  const segs = raw.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) throw new ImageRefused(raw, 'a ".." segment (it would climb out of the image root)');
  return segs.join('/');
}

/** The tar entry type of a header, or null for one to skip (device nodes); others are refused. */
export function entryType(h: Headers): EntryType | null {
  switch (h.type ?? 'file') {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
    case 'symlink':
    case 'link':
    case 'fifo':
      return h.type as EntryType;
    case 'character-device':
    case 'block-device':
      return null;
    default:
      throw new ImageRefused(h.name, `an entry of type ${h.type}, which an image cannot hold`);
  }
}

/** A file tree built from archive entries, layer upon layer, refusing what breaks the rules above. */
export class ImageTree<D> {
  private readonly entries = new Map<string, TreeEntry<D>>();
  private bytes = 0;
  readonly warnings: string[] = [];

  constructor(private readonly maxBytes: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** Bytes of file contents in the tree (hard links counted once). */
  get contentBytes(): number {
    return this.bytes;
  }

  get(path: string): TreeEntry<D> | undefined {
    return this.entries.get(path);
  }

  /**
   * Checks a header before its contents are read: its name, its type, its declared size against
   * the limit. Returns the normalised path and type, or null for an entry to skip (a device node,
   * with a warning; the root directory itself).
   */
  admit(h: Headers): { path: string; type: EntryType } | null {
    const path = entryPath(h.name);
    const type = entryType(h);
    if (type === null) {
      this.warnings.push(`skipped device node "${h.name}" (an image holds no device nodes; a jail gets its own /dev)`);
      return null;
    }
    if (path === '') {
      if (type !== 'directory') throw new ImageRefused(h.name, 'the image root must be a directory');
      return null;
    }
    this.checkParents(path, h.name);
    if (type === 'file' && this.bytes + (h.size ?? 0) > this.maxBytes) throw this.tooLarge(h.name);
    return { path, type };
  }

  /**
   * Adds an admitted entry of `layer` (whiteouts are handled here too: call `add` for every
   * member). Returns false when the entry was a whiteout and holds no data.
   */
  add(h: Headers, admitted: { path: string; type: EntryType }, layer: number, data?: D): boolean {
    const { path, type } = admitted;
    const base = posix.basename(path);
    const dir = posix.dirname(path) === '.' ? '' : posix.dirname(path);
    if (layer > 0 && base === OPAQUE) {
      this.removeUnder(dir, layer);
      return false;
    }
    if (layer > 0 && base.startsWith(WHITEOUT)) {
      const hidden = dir ? `${dir}/${base.slice(WHITEOUT.length)}` : base.slice(WHITEOUT.length);
      this.remove(hidden, layer);
      return false;
    }
    if (this.entries.size >= MAX_IMAGE_ENTRIES) throw new ImageRefused(h.name, `more than ${MAX_IMAGE_ENTRIES} entries`);
    const entry: TreeEntry<D> = {
      path,
      type,
      mode: (h.mode ?? (type === 'directory' ? 0o755 : 0o644)) & 0o7777,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mtime: h.mtime ?? new Date(0),
      size: type === 'file' ? (h.size ?? 0) : 0,
      layer,
    };
    if (type === 'symlink') {
      const link = h.linkname ?? '';
      if (!link || link.includes('\0')) throw new ImageRefused(h.name, 'a symlink without a target');
      // an absolute target is resolved inside the jail's root when the jail runs; a relative one
      // must not climb above the image root
      if (!link.startsWith('/') && posix.normalize(posix.join(dir || '.', link)).split('/')[0] === '..') {
        throw new ImageRefused(h.name, `a symlink to "${link}", which points out of the image root`);
      }
      entry.linkname = link;
    } else if (type === 'link') {
      const target = this.linkTarget(h);
      entry.linkname = target.path;
      entry.size = target.size;
      entry.data = target.data;
    } else if (type === 'file') {
      this.bytes += entry.size;
      if (this.bytes > this.maxBytes) throw this.tooLarge(h.name);
      entry.data = data;
    }
    const old = this.entries.get(path);
    if (old && !(old.type === 'directory' && type === 'directory')) this.remove(path, Infinity);
    this.entries.set(path, entry);
    return type === 'file';
  }

  /**
   * Every entry, parents before children, hard links after what they share data with; a hard
   * link whose target a later layer removed or replaced becomes a file of its own.
   */
  *ordered(): Generator<TreeEntry<D>> {
    const paths = [...this.entries.keys()].sort();
    const links: TreeEntry<D>[] = [];
    for (const p of paths) {
      const e = this.entries.get(p)!;
      if (e.type !== 'link') yield e;
      else if (this.entries.get(e.linkname!)?.data === e.data && this.entries.get(e.linkname!)?.type === 'file') links.push(e);
      else yield { ...e, type: 'file', linkname: undefined };
    }
    yield* links;
  }

  /** Directories a child needs but no entry made (`a/b/c` with no `a/b`): added with mode 0755. */
  fillParents(): void {
    for (const p of [...this.entries.keys()]) {
      for (let d = posix.dirname(p); d !== '.'; d = posix.dirname(d)) {
        if (this.entries.has(d)) break;
        this.entries.set(d, { path: d, type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), size: 0, layer: 0 });
      }
    }
  }

  private tooLarge(name: string): ImageRefused {
    return new ImageRefused(name, `the image would exceed ${Math.round(this.maxBytes / 1024 / 1024)} MB (--max-image-mb)`);
  }

  /** Nothing is written through a symlink, a file or a hard link standing where a directory should be. */
  private checkParents(path: string, name: string): void {
    const segs = path.split('/');
    for (let i = 1; i < segs.length; i++) {
      const parent = this.entries.get(segs.slice(0, i).join('/'));
      if (!parent) continue;
      if (parent.type === 'symlink') throw new ImageRefused(name, `written through the symlink "${parent.path}"`);
      if (parent.type !== 'directory') throw new ImageRefused(name, `its parent "${parent.path}" is not a directory`);
    }
  }

  /** A hard link's target: an entry already in the tree, a regular file (links to links resolved). */
  private linkTarget(h: Headers): TreeEntry<D> {
    const raw = h.linkname ?? '';
    let path: string;
    try {
      path = entryPath(raw);
    } catch (err) {
      throw new ImageRefused(h.name, `a hard link to "${raw}", which points out of the image root`, { cause: err });
    }
    const target = this.entries.get(path);
    if (!target || (target.type !== 'file' && target.type !== 'link')) {
      throw new ImageRefused(h.name, `a hard link to "${raw}", which is not a file earlier in the archive`);
    }
    return target;
  }

  private remove(path: string, belowLayer: number): void {
    const e = this.entries.get(path);
    if (e && e.layer < belowLayer) {
      this.entries.delete(path);
      if (e.type === 'file') this.bytes -= e.size;
    }
    this.removeUnder(path, belowLayer);
  }

  private removeUnder(dir: string, belowLayer: number): void {
    const prefix = dir ? `${dir}/` : '';
    for (const [p, e] of this.entries) {
      if (p.startsWith(prefix) && p !== dir && e.layer < belowLayer) {
        this.entries.delete(p);
        if (e.type === 'file') this.bytes -= e.size;
      }
    }
  }
}
