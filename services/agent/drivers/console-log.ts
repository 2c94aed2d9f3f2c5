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
 * `piece` bytes; `restart` when the file is shorter than `offset` (it was truncated).
 */
export async function readConsoleFrom(path: string, offset: number, piece = 64 * 1024): Promise<{ chunks: Buffer[]; end: number; restart: boolean }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { chunks: [], end: 0, restart: offset > 0 };
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
