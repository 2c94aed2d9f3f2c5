// `logs --since`: the console's size samples (console-times.ts), where a time starts in the file,
// the last-N-lines offset (console-log.ts tailStart) and the --since flag.
import { describe, expect, it } from '@jest/globals';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConsoleTimes, consoleOffsetSince, offsetSince, parseTimes, thin, timesFileOf } from '../../services/agent/console-times.js';
import { tailStart } from '../../services/agent/drivers/console-log.js';
import { flag, sinceSchema } from '../../services/cli/flags.js';
import { CliError } from '../../services/cli/client.js';
import { scratchDir } from '../support/scratch.js';

const dir = scratchDir('jf-console-times-');

describe('offsetSince', () => {
  const entries = [
    { at: 1000, size: 10 },
    { at: 2000, size: 25 },
    { at: 5000, size: 40 },
  ];
  it('starts at the size of the last sample at or before the time: nothing written after it is hidden', () => {
    expect(offsetSince(entries, 2000)).toBe(25);
    expect(offsetSince(entries, 4999)).toBe(25);
    expect(offsetSince(entries, 5000)).toBe(40);
    expect(offsetSince(entries, 9e12)).toBe(40);
  });
  it('starts at the beginning when no sample is that old', () => {
    expect(offsetSince(entries, 999)).toBe(0);
    expect(offsetSince([], 5000)).toBe(0);
  });
  it('skips lines of the times file it cannot read', () => {
    expect(parseTimes('1000 10\ngarbage\n2000 x\n3000 30\n\n')).toEqual([
      { at: 1000, size: 10 },
      { at: 3000, size: 30 },
    ]);
  });
  it('thins the older half and keeps the newer half whole', () => {
    const e = Array.from({ length: 8 }, (_, i) => ({ at: i, size: i }));
    expect(thin(e).map((x) => x.at)).toEqual([1, 3, 4, 5, 6, 7]);
  });
});

describe('tailStart', () => {
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  it('is where the last N lines begin, with or without a final newline', async () => {
    const p = file('t.log', 'a\nbb\nccc\n');
    expect(await tailStart(p, 1)).toBe(5);
    expect(await tailStart(p, 2)).toBe(2);
    expect(await tailStart(p, 3)).toBe(0);
    expect(await tailStart(p, 50)).toBe(0);
    expect(await tailStart(p, 0)).toBe(9);
    expect(await tailStart(file('u.log', 'a\nbb\nccc'), 1)).toBe(5);
    expect(await tailStart(join(dir, 'none.log'), 5)).toBe(0);
  });
});

describe('ConsoleTimes', () => {
  it('records a console when it grows, not when it stays, and starts again when it was cut', async () => {
    const p = join(dir, 'console.log');
    writeFileSync(p, 'one\n');
    const times = new ConsoleTimes();
    await times.sample([p], 1000);
    await times.sample([p], 2000);
    appendFileSync(p, 'two\n');
    await times.sample([p], 3000);
    expect(readFileSync(timesFileOf(p), 'utf8')).toBe('1000 4\n3000 8\n');
    // an agent restarted: it goes on from the file, not from nothing
    const again = new ConsoleTimes();
    await again.sample([p], 4000);
    expect(readFileSync(timesFileOf(p), 'utf8')).toBe('1000 4\n3000 8\n');
    writeFileSync(p, 'x\n');
    await again.sample([p], 5000);
    expect(readFileSync(timesFileOf(p), 'utf8')).toBe('5000 2\n');
  });

  it('gives the whole line a sample fell in the middle of', async () => {
    const p = join(dir, 'mid.log');
    writeFileSync(p, 'old line\nhalf');
    const times = new ConsoleTimes();
    await times.sample([p], 1000);
    appendFileSync(p, ' done\nnew line\n');
    await times.sample([p], 2000);
    const from = await consoleOffsetSince(p, 1500);
    expect(readFileSync(p, 'utf8').slice(from)).toBe('half done\nnew line\n');
    expect(await consoleOffsetSince(p, 500)).toBe(0);
  });

  it('ignores a console that went (the jail was removed between two steps)', async () => {
    const p = join(dir, 'gone.log');
    await new ConsoleTimes().sample([p], 1000);
    writeFileSync(p, 'x\n');
    const times = new ConsoleTimes();
    await times.sample([p], 1000);
    rmSync(p);
    await expect(times.sample([p], 2000)).resolves.toBeUndefined();
  });

  it('keeps the times file bounded', async () => {
    const p = join(dir, 'chatty.log');
    writeFileSync(p, '');
    const times = new ConsoleTimes();
    for (let i = 1; i <= 5000; i++) {
      appendFileSync(p, 'x\n');
      await times.sample([p], i * 1000);
    }
    const entries = parseTimes(readFileSync(timesFileOf(p), 'utf8'));
    expect(entries.length).toBeLessThanOrEqual(4097);
    expect(entries.at(-1)).toEqual({ at: 5_000_000, size: 10_000 });
    // a thinned past still never hides a line written after the asked time
    for (const t of [10_000, 1_000_000, 4_000_000]) expect(offsetSince(entries, t)).toBeLessThanOrEqual((t / 1000) * 2);
  });
});

describe('--since', () => {
  const refusal = (value: string) => {
    try {
      flag('since', sinceSchema, value);
    } catch (err) {
      return err instanceof CliError ? err.message : String(err);
    }
    return 'accepted';
  };
  it('takes a duration back from now or an RFC 3339 time', () => {
    const now = Date.now();
    expect(Math.abs(flag('since', sinceSchema, '10m') - (now - 600_000))).toBeLessThan(1000);
    expect(Math.abs(flag('since', sinceSchema, '1h30m') - (now - 5_400_000))).toBeLessThan(1000);
    expect(Math.abs(flag('since', sinceSchema, '2d') - (now - 172_800_000))).toBeLessThan(1000);
    expect(flag('since', sinceSchema, '2026-01-02T03:04:05Z')).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(flag('since', sinceSchema, '2026-01-02T03:04:05.5+01:00')).toBe(Date.UTC(2026, 0, 2, 2, 4, 5, 500));
  });
  it('refuses anything else, naming the flag and the rule', () => {
    for (const bad of ['', '10', 'm', '10x', '-5m', 'yesterday', '2026-01-02', '2026-13-02T00:00:00Z', '1e3s', '10m; rm -rf /']) {
      expect(refusal(bad)).toMatch(/^--since: must be a duration such as 90s, 10m, 1h30m or 2d, or a time such as 2026-12-02T08:00:00Z \(got ".*"\)$/);
    }
    expect(refusal("2999-01-01T00:00:00Z")).toBe('--since: is in the future (got "2999-01-01T00:00:00Z")');
  });
});
