// native/jailfs.c's FreeBSD code path, run on Linux: built with its FreeBSD branch (-U__linux__)
// against a stand-in libjail whose jail_attach is chroot(2) (test/support/jailfs-freebsd), and
// without O_TMPFILE, as on FreeBSD. What it checks is jailfs's own part: every lookup after the
// attach stays in the jail's root whatever symlinks say, a file is written whole or not at all
// (the named temporary file, removed when the stream breaks), and nothing lands on the host.
// jail_attach itself is FreeBSD's; the driver's argv for it is in freebsd-driver.test.ts.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
const repo = join(import.meta.dirname, '..', '..');

/** One entry of jailfs's stream (native/jailfs.c's header): a regular file of `body`, then the end. */
const fileStream = (name: string, body: string, claimed = Buffer.byteLength(body)) => `F 644 ${claimed} ${name.length}\n${name}${body}${claimed === Buffer.byteLength(body) ? 'E 0 0 0\n' : ''}`;

d('jailfs attached to a jail (its FreeBSD path)', () => {
  let dir: string;
  let bin: string;
  let jail: string;
  const jailfs = (args: string[], input?: string) => execa(bin, args, { input, reject: false, env: { FAKE_JAIL_ROOT: jail } });

  beforeAll(async () => {
    dir = scratchDir('jf-jailfs-attach-');
    bin = join(dir, 'jailfs-freebsd');
    const fake = join(repo, 'test', 'support', 'jailfs-freebsd');
    await execa('cc', ['-O2', '-Wall', '-Werror', '-U__linux__', '-DJAILFS_NO_TMPFILE', `-I${fake}`, '-o', bin, join(repo, 'native', 'jailfs.c'), join(fake, 'shim.c')]);
    jail = join(dir, 'jail');
    mkdirSync(join(jail, 'tmp'), { recursive: true });
    mkdirSync(join(jail, 'etc'));
    writeFileSync(join(jail, 'etc', 'hostname'), 'in-the-jail\n');
    symlinkSync('/', join(jail, 'tmp', 'up'));
    symlinkSync('../../../../../../etc', join(jail, 'tmp', 'etc-link'));
  }, 60_000);

  test('writes through a symlink to / land in the jail\'s /, never the host\'s', async () => {
    const marker = `jailfs-attach-${process.pid}`;
    expect((await jailfs(['unpack', 'web', `/tmp/up/${marker}`, '100'], fileStream('x', 'inside\n'))).exitCode).toBe(0);
    expect((await jailfs(['unpack', 'web', `/tmp/etc-link/${marker}`, '100'], fileStream('x', 'inside\n'))).exitCode).toBe(0);
    expect(readFileSync(join(jail, marker), 'utf8')).toBe('inside\n');
    expect(readFileSync(join(jail, 'etc', marker), 'utf8')).toBe('inside\n');
    expect(existsSync(`/${marker}`)).toBe(false);
    expect(existsSync(`/etc/${marker}`)).toBe(false);
  });

  test('reads through a symlink to / read the jail\'s files', async () => {
    const r = await jailfs(['pack', 'web', '/tmp/up/etc/hostname', '1000']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('F 644 12 8\nhostnamein-the-jail\nE 0 0 0');
  });

  test('a stream that breaks off or goes over the limit leaves the old file and no temporary one', async () => {
    writeFileSync(join(jail, 'tmp', 'victim'), 'old\n');
    const cut = await jailfs(['unpack', 'web', '/tmp/victim', '100000'], fileStream('victim', 'half of it', 5000));
    expect({ code: cut.exitCode, err: cut.stderr }).toEqual({ code: 1, err: 'jailfs: the stream ended early' });
    const big = await jailfs(['unpack', 'web', '/tmp/victim', '10'], fileStream('victim', 'far more than ten bytes\n'));
    expect(big.exitCode).toBe(3);
    expect(readFileSync(join(jail, 'tmp', 'victim'), 'utf8')).toBe('old\n');
    expect(readdirSync(join(jail, 'tmp')).sort()).toEqual(['etc-link', 'up', 'victim']);
    expect((await jailfs(['unpack', 'web', '/tmp/victim', '100'], fileStream('victim', 'new\n'))).exitCode).toBe(0);
    expect(readFileSync(join(jail, 'tmp', 'victim'), 'utf8')).toBe('new\n');
    expect(readdirSync(join(jail, 'tmp')).sort()).toEqual(['etc-link', 'up', 'victim']);
  });

  test('an unknown jail is one clear line', async () => {
    const r = await execa(bin, ['pack', 'nope', '/etc', '10'], { reject: false, env: {} });
    expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 1, err: 'jailfs: no jail nope: ' });
  });
});
