// `jailfleet image import`: turns what an admin brings (a directory, a tarball in any of the usual
// compressions, an OCI image layout, a `docker save` archive) into one canonical tar and its
// sha256, in a scratch directory the caller removes. Layers are applied in order, whiteouts
// honoured, and every member passes the rules of ImageTree, so a hostile archive is refused
// naming the entry. It must never write outside its scratch directory, and never follow a link
// of the input.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Headers } from '../common/image-tree.js';
import { ImageRefused, ImageTree } from '../common/image-tree.js';
import { readArchiveInto, writeCanonicalTar } from '../common/image-tar.js';

export interface BuiltImage {
  /** The canonical tar, inside the scratch directory. */
  tarPath: string;
  digest: string;
  bytes: number;
  entries: number;
  format: string;
  warnings: string[];
}

export interface BuildOptions {
  maxBytes: number;
  /** An empty directory of the caller's: spilled file contents and the canonical tar go here. */
  scratch: string;
  /** Called with the bytes of input read so far. */
  onProgress?: (bytesRead: number) => void;
}

/** A file's contents, where they lie on disk (the input itself, or a spill in the scratch directory). */
type Body = string;

/** Builds the canonical tar of the image at `source`. */
export async function buildImage(source: string, opts: BuildOptions): Promise<BuiltImage> {
  const st = await lstat(source).catch((err: unknown) => {
    throw new ImageRefused('', `cannot read ${source}: ${(err as Error).message}`, { cause: err });
  });
  const blobs = join(opts.scratch, 'blobs');
  await mkdir(blobs, { recursive: true });
  let spilled = 0;
  let read = 0;
  const keep = async (body: Readable, _path: string, size: number): Promise<Body> => {
    const file = join(blobs, String(spilled++));
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        read += chunk.length;
        opts.onProgress?.(read);
        done(null, chunk);
      },
    });
    await pipeline(body, counter, createWriteStream(file));
    void size;
    return file;
  };

  let tree = new ImageTree<Body>(opts.maxBytes);
  let format: string;
  let layers: string[] | null = null;
  if (st.isDirectory()) {
    if (await isFile(join(source, 'oci-layout'))) {
      format = 'oci-layout';
      layers = await ociLayers((p) => join(source, p), (p) => readFile(join(source, p), 'utf8'));
    } else {
      format = 'directory';
      await walkDirectory(tree, source);
    }
  } else if (st.isFile()) {
    const compression = await readArchiveInto(tree, source, 0, keep);
    format = { none: 'tar', gzip: 'tar.gz', xz: 'tar.xz', zstd: 'tar.zst' }[compression];
    const outer = tree;
    const fileOf = (p: string): Body => {
      const e = followLinks(outer, p);
      if (!e?.data) throw new ImageRefused(p, 'named by the image manifest but not a file of the archive');
      return e.data;
    };
    const text = (p: string) => readFile(fileOf(p), 'utf8');
    if (outer.get('oci-layout') && outer.get('index.json')) {
      format = 'oci-layout';
      layers = await ociLayers(fileOf, text);
    } else if (outer.get('manifest.json')) {
      const docker = await dockerLayers(text);
      if (docker) {
        format = 'docker-save';
        layers = docker.map(fileOf);
      }
    }
  } else {
    throw new ImageRefused('', `${source} is neither a directory nor an archive file`);
  }
  if (layers) {
    tree = new ImageTree<Body>(opts.maxBytes);
    for (const [i, layer] of layers.entries()) {
      await readArchiveInto(tree, layer, i + 1, keep).catch((err: unknown) => {
        throw err instanceof ImageRefused && err.entry === '' ? new ImageRefused('', `layer ${i + 1}: ${err.rule}`, { cause: err }) : err;
      });
    }
  }
  tree.fillParents();

  const tarPath = join(opts.scratch, 'image.tar');
  const hash = createHash('sha256');
  let bytes = 0;
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  const out = createWriteStream(tarPath);
  const sink = pipeline(hashing, out);
  await writeCanonicalTar(tree, (e) => createReadStream(e.data!), hashing);
  await sink;
  return { tarPath, digest: `sha256:${hash.digest('hex')}`, bytes, entries: tree.size, format, warnings: tree.warnings };
}

async function isFile(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => null))?.isFile() ?? false;
}

/** An entry of the outer archive, its symlinks followed inside the archive (docker 25 links layers to blobs/). */
function followLinks(tree: ImageTree<Body>, path: string) {
  let p = path;
  for (let hops = 0; hops < 8; hops++) {
    const e = tree.get(p);
    if (e?.type !== 'symlink') return e;
    p = posix.normalize(posix.join(posix.dirname(p), e.linkname!));
    if (p.startsWith('../') || p.startsWith('/')) return undefined;
  }
  return undefined;
}

/** The layer files of an OCI image layout, lowest first: index.json → (an index →) a manifest → its layers. */
async function ociLayers(blobFile: (p: string) => string, text: (p: string) => Promise<string>): Promise<string[]> {
  const blobPath = (digest: unknown, what: string) => {
    if (typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new ImageRefused(what, `a blob digest that is not sha256:<hex> (${JSON.stringify(digest)})`);
    return `blobs/sha256/${digest.slice('sha256:'.length)}`;
  };
  const json = async (p: string) => {
    try {
      return JSON.parse(await text(p)) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof ImageRefused) throw err;
      throw new ImageRefused(p, `not JSON (${(err as Error).message})`, { cause: err });
    }
  };
  let doc = await json('index.json');
  let where = 'index.json';
  for (let depth = 0; depth < 4 && Array.isArray(doc.manifests); depth++) {
    const first = (doc.manifests as { digest?: unknown }[])[0];
    if (!first) throw new ImageRefused(where, 'lists no manifest');
    where = blobPath(first.digest, where);
    doc = await json(where);
  }
  if (!Array.isArray(doc.layers)) throw new ImageRefused(where, 'is not an image manifest (no "layers")');
  return (doc.layers as { digest?: unknown }[]).map((l) => blobFile(blobPath(l.digest, where)));
}

/** The layer paths of a `docker save` archive (manifest.json's first image), or null when manifest.json is something else. */
async function dockerLayers(text: (p: string) => Promise<string>): Promise<string[] | null> {
  let doc: unknown;
  try {
    doc = JSON.parse(await text('manifest.json'));
  } catch {
    return null;
  }
  const layers = Array.isArray(doc) ? (doc[0] as { Layers?: unknown } | undefined)?.Layers : undefined;
  if (!Array.isArray(layers) || !layers.every((l) => typeof l === 'string')) return null;
  return layers as string[];
}

/** Adds a directory's tree (not the directory itself), never following a symlink. */
async function walkDirectory(tree: ImageTree<Body>, root: string): Promise<void> {
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = await lstat(abs);
      const type: Headers['type'] | null = st.isFile()
        ? 'file'
        : st.isDirectory()
          ? 'directory'
          : st.isSymbolicLink()
            ? 'symlink'
            : st.isFIFO()
              ? 'fifo'
              : st.isCharacterDevice()
                ? 'character-device'
                : st.isBlockDevice()
                  ? 'block-device'
                  : null;
      if (type === null) {
        tree.warnings.push(`skipped socket "${path}"`);
        continue;
      }
      const header: Headers = {
        name: path,
        type: type ?? undefined,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
        size: type === 'file' ? st.size : 0,
        linkname: type === 'symlink' ? await readlink(abs) : undefined,
      };
      const admitted = tree.admit(header);
      if (!admitted) continue;
      tree.add(header, admitted, 0, type === 'file' ? abs : undefined);
      if (type === 'directory') await walk(path);
    }
  };
  await walk('');
}
