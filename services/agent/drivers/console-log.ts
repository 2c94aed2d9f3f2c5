// The tail of a jail's console log (its command's stdout and stderr), for `jailfleet logs`.
// Reads at most the last MiB of the file, whatever its size.
import { open } from 'node:fs/promises';

export const CONSOLE_TAIL_MAX_BYTES = 1024 * 1024;

/** The last `lines` lines of the file at `path` ('' when there is none yet). */
export async function readConsoleTail(path: string, lines: number): Promise<{ text: string; truncated: boolean }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { text: '', truncated: false };
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
    return { text: kept.length ? `${kept.join('\n')}\n` : '', truncated: kept.length < all.length || length < size };
  } finally {
    await fh.close();
  }
}
