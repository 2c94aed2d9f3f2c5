// readConsoleTail: the end of a jail's console, line-exact, bounded in what it reads.
import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONSOLE_TAIL_MAX_BYTES, readConsoleTail } from '../../services/agent/drivers/console-log.js';

const dir = mkdtempSync(join(tmpdir(), 'jf-console-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('readConsoleTail', () => {
  it('returns the last N lines, whole', async () => {
    const p = file('a.log', 'one\ntwo\nthree\n');
    expect(await readConsoleTail(p, 2)).toEqual({ text: 'two\nthree\n', truncated: true });
    expect(await readConsoleTail(p, 10)).toEqual({ text: 'one\ntwo\nthree\n', truncated: false });
  });

  it('keeps a last line without a newline', async () => {
    expect(await readConsoleTail(file('b.log', 'a\nb'), 1)).toEqual({ text: 'b\n', truncated: true });
  });

  it('is empty for a jail that wrote nothing or has no console yet', async () => {
    expect(await readConsoleTail(file('c.log', ''), 5)).toEqual({ text: '', truncated: false });
    expect(await readConsoleTail(join(dir, 'none.log'), 5)).toEqual({ text: '', truncated: false });
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
