// readConsoleTail: the end of a jail's console, line-exact, bounded in what it reads.
import { describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONSOLE_TAIL_MAX_BYTES, readConsoleFrom, readConsoleTail } from '../../services/agent/drivers/console-log.js';
import { scratchDir } from '../support/scratch.js';

const dir = scratchDir('jf-console-');
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('readConsoleTail', () => {
  it('returns the last N lines, whole', async () => {
    const p = file('a.log', 'one\ntwo\nthree\n');
    expect(await readConsoleTail(p, 2)).toEqual({ text: 'two\nthree\n', truncated: true, end: 14 });
    expect(await readConsoleTail(p, 10)).toEqual({ text: 'one\ntwo\nthree\n', truncated: false, end: 14 });
  });

  it('keeps a last line without a newline', async () => {
    expect(await readConsoleTail(file('b.log', 'a\nb'), 1)).toEqual({ text: 'b\n', truncated: true, end: 3 });
  });

  it('is empty for a jail that wrote nothing or has no console yet', async () => {
    expect(await readConsoleTail(file('c.log', ''), 5)).toEqual({ text: '', truncated: false, end: 0 });
    expect(await readConsoleTail(join(dir, 'none.log'), 5)).toEqual({ text: '', truncated: false, end: 0 });
  });

  it('with 0 lines, only where the file ends (logs -f --tail 0 follows from there)', async () => {
    expect(await readConsoleTail(file('e.log', 'a\nb\n'), 0)).toEqual({ text: '', truncated: true, end: 4 });
  });

  it('reads at most the last MiB of a huge console and never starts mid-line', async () => {
    const line = 'x'.repeat(99) + '\n';
    const p = file('d.log', line.repeat(Math.ceil((3 * CONSOLE_TAIL_MAX_BYTES) / line.length)) + 'last\n');
    const r = await readConsoleTail(p, 1_000_000);
    expect(r.truncated).toBe(true);
    expect(Buffer.byteLength(r.text)).toBeLessThanOrEqual(CONSOLE_TAIL_MAX_BYTES);
    expect(r.text.split('\n').slice(0, -2).every((l) => l === 'x'.repeat(99))).toBe(true);
    expect(r.text.endsWith('last\n')).toBe(true);
  });
});

describe('readConsoleFrom (logs -f)', () => {
  it('reads what was appended since an offset, in pieces, and starts over after a truncation', async () => {
    const p = file('f.log', 'one\ntwo\n');
    expect(await readConsoleFrom(p, 4, 2)).toEqual({ chunks: [Buffer.from('tw'), Buffer.from('o\n')], end: 8, restart: false });
    expect(await readConsoleFrom(p, 8)).toEqual({ chunks: [], end: 8, restart: false });
    writeFileSync(p, 'x\n');
    expect(await readConsoleFrom(p, 8)).toEqual({ chunks: [Buffer.from('x\n')], end: 2, restart: true });
    expect(await readConsoleFrom(join(dir, 'none.log'), 0)).toEqual({ chunks: [], end: 0, restart: false });
    // a console that went (its jail is being removed) is not a cut one
    expect(await readConsoleFrom(join(dir, 'none.log'), 8)).toEqual({ chunks: [], end: 8, restart: false });
  });
});
