// The tail of a jail's console log (its command's stdout and stderr), for `jailfleet logs`.
// Reads at most the last MiB of the file, whatever its size.
import { open } from 'node:fs/promises';

export const CONSOLE_TAIL_MAX_BYTES = 1024 * 1024;

/** The last `lines` lines of the file at `path` ('' when there is none yet); `end`: the offset they end at. */
export async function readConsoleTail(path: string, lines: number): Promise<{ text: string; truncated: boolean; end: number }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { text: '', truncated: false, end: 0 };
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, CONSOLE_TAIL_MAX_BYTES);
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, size - length);
    let all = buf.toString('utf8').split('\n');
    if (all.at(-1) === '') all = all.slice(0, -1);
    // a window that starts mid-file starts mid-line: drop the partial first line
    const whole = length < size ? all.slice(1) : all;
    const kept = whole.slice(-lines);
    if (lines === 0) return { text: '', truncated: size > 0, end: size };
    return { text: kept.length ? `${kept.join('\n')}\n` : '', truncated: kept.length < all.length || length < size, end: size };
  } finally {
    await fh.close();
  }
}

/**
 * The bytes of the file at `path` from `offset` to its current end, in pieces of at most
 * `piece` bytes; `restart` when the file is shorter than `offset` (it was truncated). No file is
 * no news: `end` stays at `offset`.
 */
export async function readConsoleFrom(path: string, offset: number, piece = 64 * 1024): Promise<{ chunks: Buffer[]; end: number; restart: boolean }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    // no file (yet, or any more: the jail is being removed): nothing new, and nothing was cut
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { chunks: [], end: offset, restart: false };
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const restart = size < offset;
    const from = restart ? 0 : offset;
    const chunks: Buffer[] = [];
    // at most 4 MiB a turn: the caller sends them under flow control before it reads more
    const until = Math.min(size, from + 4 * 1024 * 1024);
    for (let at = from; at < until; ) {
      const buf = Buffer.alloc(Math.min(piece, until - at));
      const { bytesRead } = await fh.read(buf, 0, buf.length, at);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      at += bytesRead;
    }
    return { chunks, end: from + chunks.reduce((n, c) => n + c.length, 0), restart };
  } finally {
    await fh.close();
  }
}

/** The offset at which the last `lines` lines of the file at `path` begin (within its last MiB, as readConsoleTail). */
export async function tailStart(path: string, lines: number): Promise<number> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, CONSOLE_TAIL_MAX_BYTES);
    const from = size - length;
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, from);
    // a last line without its newline yet is a line too
    let at = bytesRead > 0 && buf[bytesRead - 1] === 0x0a ? bytesRead - 1 : bytesRead;
    for (let seen = 0; at > 0; ) {
      const nl = buf.lastIndexOf(0x0a, at - 1);
      if (nl < 0) break;
      if (++seen === lines) return from + nl + 1;
      at = nl;
    }
    if (lines === 0) return size;
    // fewer lines than asked: all of it, or from the first whole line of the window
    if (from === 0) return 0;
    const first = buf.indexOf(0x0a);
    return first < 0 ? size : from + first + 1;
  } finally {
    await fh.close();
  }
}
