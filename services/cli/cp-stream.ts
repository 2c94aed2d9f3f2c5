// The CLI's side of `jailfleet cp`: the local file or tree as the stream of native/jailfs.c
// (see its header for the format), and that stream written back to local files. The jail side
// is never trusted: unpacking refuses absolute names, `..`, and any entry whose way goes
// through a symlink (one an earlier entry of the same stream may have made), so a hostile jail
// cannot make `cp` out of it write anywhere but under the destination.
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readlink, stat, symlink, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The stream is not what jailfs writes, or breaks a rule of the destination. */
export class CopyRefused extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CopyRefused';
  }
}

const header = (type: 'F' | 'D' | 'L', mode: number, size: number, name: string) => {
  const n = Buffer.from(name);
  return Buffer.concat([Buffer.from(`${type} ${(mode & 0o7777).toString(8)} ${size} ${n.length}\n`), n]);
};

/** The file or tree at `path` (the top followed if a symlink, symlinks below kept as symlinks), as stream chunks. */
export async function* packLocal(path: string, maxBytes: number): AsyncGenerator<Buffer> {
  let total = 0;
  const count = (n: number) => {
    total += n;
    if (total > maxBytes) throw new CopyRefused(`${path} is larger than the limit of ${maxBytes} bytes`);
  };
  async function* entry(file: string, name: string, top: boolean): AsyncGenerator<Buffer> {
    const st = top ? await stat(file) : await lstat(file);
    if (st.isSymbolicLink()) {
      const target = Buffer.from(await readlink(file));
      count(target.length);
      yield header('L', 0o777, target.length, name);
      yield target;
    } else if (st.isDirectory()) {
      yield header('D', st.mode, 0, name);
      for (const e of (await readdir(file)).sort()) yield* entry(join(file, e), `${name}/${e}`, false);
    } else if (st.isFile()) {
      count(st.size);
      yield header('F', st.mode, st.size, name);
      let sent = 0;
      for await (const chunk of createReadStream(file, { end: st.size - 1, highWaterMark: 64 * 1024 })) {
        sent += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
      // exactly the size announced, even if the file shrank meanwhile
      if (sent < st.size) yield Buffer.alloc(st.size - sent);
    } else {
      process.stderr.write(`jailfleet: ${file} is not a file, a directory or a symlink: left out\n`);
    }
  }
  const top = basename(path.replace(/\/+$/, '')) || '.';
  yield* entry(path, top, true);
  yield Buffer.from('E 0 0 0\n');
}

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n) {
      const r = await this.it.next();
      if (r.done) return false;
      this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : r.value;
    }
    return true;
  }

  async line(max = 128): Promise<string> {
    for (;;) {
      const nl = this.buf.indexOf(10);
      if (nl >= 0) {
        const s = this.buf.subarray(0, nl).toString();
        this.buf = this.buf.subarray(nl + 1);
        return s;
      }
      if (this.buf.length > max || !(await this.fill(this.buf.length + 1))) throw new CopyRefused('the stream is not a jailfleet cp stream');
    }
  }

  async exact(n: number): Promise<Buffer> {
    if (!(await this.fill(n))) throw new CopyRefused('the stream ended early');
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Up to `n` bytes (at least one), for copying a body through in pieces. */
  async some(n: number): Promise<Buffer> {
    if (!this.buf.length && !(await this.fill(1))) throw new CopyRefused('the stream ended early');
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    return out;
  }
}

/** True when every directory from `base` down to `dir` is a real directory, no symlink. */
async function realDirsBelow(base: string, parts: string[]): Promise<boolean> {
  let at = base;
  for (const p of parts) {
    at = join(at, p);
    const st = await lstat(at).catch(() => null);
    if (!st || st.isSymbolicLink() || !st.isDirectory()) return false;
  }
  return true;
}

/**
 * Writes a stream at `dest`: inside it when it is a directory, else as `dest` itself (the top
 * entry renamed). Returns the number of entries written.
 */
export async function unpackLocal(chunks: AsyncIterable<Buffer>, dest: string, maxBytes: number): Promise<number> {
  const r = new ByteReader(chunks[Symbol.asyncIterator]());
  const destIsDir = (await stat(dest).catch(() => null))?.isDirectory() ?? false;
  const base = destIsDir ? dest : dirname(dest);
  const rename = destIsDir ? null : basename(dest);
  let total = 0;
  let entries = 0;
  for (;;) {
    const m = /^([FDLE]) ([0-7]{1,4}) (\d{1,15}) (\d{1,4})$/.exec(await r.line());
    if (!m) throw new CopyRefused('the stream is not a jailfleet cp stream');
    const [type, modeText, sizeText, lenText] = m.slice(1) as [string, string, string, string];
    if (type === 'E') return entries;
    const size = Number(sizeText);
    const mode = parseInt(modeText, 8);
    const name = (await r.exact(Number(lenText))).toString();
    const parts = name.split('/');
    if (!name || name.startsWith('/') || parts.some((p) => p === '' || p === '..' || p === '.' || p.includes('\0'))) {
      throw new CopyRefused(`entry name ${JSON.stringify(name)} refused`);
    }
    if (rename) parts[0] = rename;
    total += type === 'D' ? 0 : size;
    if (total > maxBytes) throw new CopyRefused(`more than ${maxBytes} bytes: over the size limit`);
    if (!(await realDirsBelow(base, parts.slice(0, -1)))) throw new CopyRefused(`${parts.join('/')}: its directory is missing or a symlink (never followed)`);
    const target = join(base, ...parts);
    const existing = await lstat(target).catch(() => null);
    if (type === 'D') {
      if (existing && (!existing.isDirectory() || existing.isSymbolicLink())) throw new CopyRefused(`${target} exists and is not a directory`);
      if (!existing) await mkdir(target, { mode: 0o700 });
      await chmod(target, mode);
    } else if (type === 'L') {
      const link = (await r.exact(size)).toString();
      if (existing?.isDirectory()) throw new CopyRefused(`${target} is a directory`);
      if (existing) await unlink(target);
      await symlink(link, target);
    } else {
      if (existing?.isDirectory()) throw new CopyRefused(`${target} is a directory`);
      // a symlink in the way is replaced, never written through
      if (existing?.isSymbolicLink()) await unlink(target);
      const fh = await open(target, 'w', 0o600);
      try {
        for (let left = size; left > 0; ) {
          const piece = await r.some(Math.min(left, 1024 * 1024));
          await fh.write(piece);
          left -= piece.length;
        }
        await fh.chmod(mode);
      } finally {
        await fh.close();
      }
    }
    entries++;
  }
}
