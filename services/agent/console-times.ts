// When a jail's console grew: `logs --since`. A jail writes its console file directly (no process
// of ours sits between its stdout and the file, so none can slow it or lose its output when the
// agent restarts), so no line carries its time. Instead the agent looks at each console's size
// once a second and, when it grew, appends "<epoch-ms> <size>" to `<console>.times`. The bytes
// after an entry's size were written after its time, so `--since T` starts at the size of the
// last entry at or before T: it may show up to one sampling period of lines from before T, never
// hide one from after it (lines written while the agent was down count as newer, for the same
// reason). The file stays small: past MAX_ENTRIES its older half is thinned to every other entry.
// It must never write into the console file itself, nor block the agent on a slow disk for more
// than one sample.
import { appendFile, open, readFile, stat, writeFile } from 'node:fs/promises';

export const CONSOLE_SAMPLE_MS = 1000;
const MAX_ENTRIES = 4096;

export const timesFileOf = (console: string) => `${console}.times`;

interface Entry {
  at: number;
  size: number;
}

/** The entries of a times file, oldest first; unreadable lines are skipped (the file is advisory). */
export function parseTimes(text: string): Entry[] {
  const out: Entry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d{1,16}) (\d{1,16})$/.exec(line);
    if (m) out.push({ at: Number(m[1]), size: Number(m[2]) });
  }
  return out;
}

/** The offset `--since sinceMs` starts at, by the rule in the header (0 when nothing is known before it). */
export function offsetSince(entries: Entry[], sinceMs: number): number {
  let offset = 0;
  for (const e of entries) {
    if (e.at > sinceMs) break;
    offset = e.size;
  }
  return offset;
}

/** Keeps the newer half of `entries` whole and every other entry of the older half. */
export function thin(entries: Entry[]): Entry[] {
  const half = Math.floor(entries.length / 2);
  return [...entries.slice(0, half).filter((_, i) => i % 2 === 1), ...entries.slice(half)];
}

/**
 * The start of the line that holds byte `offset` of the console at `path` (a sample can fall in
 * the middle of a line being written: the whole line is shown).
 */
export async function lineStartAt(path: string, offset: number): Promise<number> {
  if (offset <= 0) return 0;
  const fh = await open(path, 'r');
  try {
    const step = 64 * 1024;
    for (let end = offset; end > 0; end -= step) {
      const from = Math.max(0, end - step);
      const buf = Buffer.alloc(end - from);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      const nl = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (nl >= 0) return from + nl + 1;
    }
    return 0;
  } finally {
    await fh.close();
  }
}

/** Where in the console at `path` the lines written since `sinceMs` begin. */
export async function consoleOffsetSince(path: string, sinceMs: number): Promise<number> {
  let text = '';
  try {
    text = await readFile(timesFileOf(path), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    return await lineStartAt(path, offsetSince(parseTimes(text), sinceMs));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** Samples the consoles of the agent's jails (see the header). */
export class ConsoleTimes {
  private readonly last = new Map<string, number>();
  private readonly counts = new Map<string, number>();
  private busy = false;

  /**
   * One sample of each console in `paths`: appends an entry to each that grew. A console that
   * shrank (it was cut) starts its times file again. Consoles no longer listed are forgotten.
   */
  async sample(paths: Iterable<string>, now = Date.now()): Promise<void> {
    if (this.busy) return; // a slow disk: skip a sample rather than queue them
    this.busy = true;
    try {
      const seen = new Set<string>();
      for (const path of paths) {
        seen.add(path);
        try {
          await this.sampleOne(path, now);
        } catch (err) {
          // the jail's directory went (rm) between two steps: nothing to record
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      for (const path of [...this.last.keys()]) {
        if (seen.has(path)) continue;
        this.last.delete(path);
        this.counts.delete(path);
      }
    } finally {
      this.busy = false;
    }
  }

  private async sampleOne(path: string, now: number): Promise<void> {
    const { size } = await stat(path);
    const prev = this.last.get(path) ?? (await this.lastKnown(path));
    if (prev === size) return;
    this.last.set(path, size);
    if (prev !== undefined && size < prev) {
      await writeFile(timesFileOf(path), `${now} ${size}\n`, { mode: 0o600 });
      this.counts.set(path, 1);
      return;
    }
    await appendFile(timesFileOf(path), `${now} ${size}\n`, { mode: 0o600 });
    const n = (this.counts.get(path) ?? 0) + 1;
    this.counts.set(path, n);
    if (n > MAX_ENTRIES) await this.compact(path);
  }

  /** The size the times file last recorded (after an agent restart), and how many entries it has. */
  private async lastKnown(path: string): Promise<number | undefined> {
    try {
      const entries = parseTimes(await readFile(timesFileOf(path), 'utf8'));
      this.counts.set(path, entries.length);
      return entries.at(-1)?.size;
    } catch {
      return undefined;
    }
  }

  private async compact(path: string): Promise<void> {
    const kept = thin(parseTimes(await readFile(timesFileOf(path), 'utf8')));
    await writeFile(timesFileOf(path), kept.map((e) => `${e.at} ${e.size}\n`).join(''), { mode: 0o600 });
    this.counts.set(path, kept.length);
  }
}
