// Reading and writing image tars: the decompression of an archive file (gzip in-process; xz and
// zstd through their own tools, by argv), the walk of a tar's members into an ImageTree, and the
// canonical tar an image is stored as (members sorted, owners numeric, nothing but the tree).
// A corrupt or truncated archive is an ImageRefused. It must never write outside the places its
// callers hand it (it writes no files at all: contents go to the caller's `keep`).
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import tarStream from 'tar-stream';
import { ImageRefused, type ImageTree, type TreeEntry } from './image-tree.js';

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd';

/** The compression of a file by its first bytes (names lie; magic numbers rarely do). */
export async function compressionOf(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(6), 0, 6, 0);
    const b = buffer.subarray(0, bytesRead);
    if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (b.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
    if (b.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
    return 'none';
  } finally {
    await fh.close();
  }
}

/**
 * The decompressed bytes of an archive file, and a promise that rejects when the decompressor
 * found the input corrupt (a tool's exit code arrives after its output ends).
 */
export function decompressedStream(path: string, compression: Compression): { stream: Readable; done: Promise<void> } {
  if (compression === 'none') return { stream: createReadStream(path), done: Promise.resolve() };
  if (compression === 'gzip') {
    const gunzip = createGunzip();
    const done = pipeline(createReadStream(path), gunzip).catch((err: unknown) => {
      throw new ImageRefused('', `the gzip data is corrupt or truncated (${(err as Error).message})`, { cause: err });
    });
    return { stream: gunzip, done };
  }
  const tool = compression === 'xz' ? 'xz' : 'zstd';
  const child = execa(tool, ['-d', '-c', '-q', '--', path], { stdin: 'ignore', buffer: { stdout: false, stderr: true }, reject: false, env: { LC_ALL: 'C' } });
  const done = child.then((r) => {
    if (r.code === 'ENOENT') throw new ImageRefused('', `${tool} is not installed (node scripts/setup.mjs installs it)`);
    if (r.failed) throw new ImageRefused('', `the ${tool} data is corrupt or truncated (${String(r.stderr).trim() || r.shortMessage})`);
  });
  return { stream: child.stdout!, done };
}

/**
 * Walks a tar's members into `tree` as `layer`. A file's contents go to `keep`, which returns the
 * caller's handle for them (or undefined to drop them); every other member's data is drained.
 */
export async function readTarInto<D>(
  tree: ImageTree<D>,
  input: Readable,
  layer: number,
  keep: (body: Readable, path: string, size: number) => Promise<D | undefined>,
): Promise<void> {
  const extract = tarStream.extract();
  const fed = pipeline(input, extract).catch((err: unknown) => {
    throw asCorrupt(err);
  });
  let members = 0;
  try {
    for await (const entry of extract) {
      members++;
      const admitted = tree.admit(entry.header);
      if (admitted && admitted.type === 'file' && !isWhiteout(admitted.path, layer)) {
        const data = await keep(entry as unknown as Readable, admitted.path, entry.header.size ?? 0);
        tree.add(entry.header, admitted, layer, data);
      } else {
        if (admitted) tree.add(entry.header, admitted, layer);
        entry.resume();
        await new Promise<void>((resolve, reject) => entry.on('end', resolve).on('error', reject));
      }
    }
  } catch (err) {
    input.destroy();
    extract.destroy();
    await fed.catch(() => undefined);
    throw asCorrupt(err);
  }
  await fed;
  if (members === 0) throw new ImageRefused('', 'the archive holds no tar members (is it a tar at all?)');
}

/**
 * Reads an archive file (compressed or not) into `tree` as `layer`. When the decompressor found
 * the input corrupt, that is the error, not what the tar reader made of the broken stream.
 */
export async function readArchiveInto<D>(tree: ImageTree<D>, path: string, layer: number, keep: Parameters<typeof readTarInto<D>>[3]): Promise<Compression> {
  const compression = await compressionOf(path);
  const { stream, done } = decompressedStream(path, compression);
  const [tar, tool] = await Promise.allSettled([readTarInto(tree, stream, layer, keep), done]);
  if (tool.status === 'rejected') throw tool.reason;
  if (tar.status === 'rejected') throw tar.reason;
  return compression;
}

const isWhiteout = (path: string, layer: number) => layer > 0 && path.split('/').at(-1)!.startsWith('.wh.');

function asCorrupt(err: unknown): Error {
  if (err instanceof ImageRefused) return err;
  const msg = (err as Error)?.message ?? String(err);
  return new ImageRefused('', `the archive is corrupt or truncated (${msg})`, { cause: err });
}

/**
 * Writes `tree` as the canonical tar to `out`: one member per entry in ImageTree.ordered's order,
 * numeric owners and no user or group names, so one tree always makes the same bytes.
 */
export async function writeCanonicalTar<D>(tree: ImageTree<D>, body: (e: TreeEntry<D>) => Readable, out: Writable): Promise<void> {
  const pack = tarStream.pack();
  const written = pipeline(pack, out);
  for (const e of tree.ordered()) {
    const header = { name: e.path, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, uname: '', gname: '' };
    if (e.type === 'file') {
      const sink = pack.entry({ ...header, type: 'file', size: e.size });
      await pipeline(body(e), sink);
    } else {
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...header, type: e.type, size: 0, linkname: e.linkname }, (err) => (err ? reject(err) : resolve())),
      );
    }
  }
  pack.finalize();
  await written;
}
