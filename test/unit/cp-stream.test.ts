// The CLI's half of `jailfleet cp`: the local tree as a stream and back, and a hostile stream
// (what a jail that wants out of `cp` would send) refused before it writes outside its destination.
import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CopyRefused, packLocal, unpackLocal } from '../../services/cli/cp-stream.js';
import { scratchDir } from '../support/scratch.js';

let dir: string;
beforeEach(() => {
  dir = scratchDir('jf-cp-');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function* chunks(parts: (string | Buffer)[]): AsyncGenerator<Buffer> {
  for (const p of parts) yield Buffer.from(p);
}
const entry = (type: string, mode: string, body: string, name: string) => `${type} ${mode} ${Buffer.byteLength(body)} ${Buffer.byteLength(name)}\n${name}${body}`;

describe('a local tree goes into the stream and comes back the same', () => {
  test('files, directories, symlinks and modes; into a directory or as a new name', async () => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'sub', 'secret'), 'only me\n', { mode: 0o600 });
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync('../run.sh', join(src, 'sub', 'link'));
    const into = join(dir, 'into');
    mkdirSync(into);
    expect(await unpackLocal(packLocal(src, 1 << 20), into, 1 << 20)).toBe(5);
    expect(readFileSync(join(into, 'src', 'sub', 'secret'), 'utf8')).toBe('only me\n');
    expect(statSync(join(into, 'src', 'sub', 'secret')).mode & 0o7777).toBe(0o600);
    expect(statSync(join(into, 'src', 'run.sh')).mode & 0o7777).toBe(0o755);
    expect(readlinkSync(join(into, 'src', 'sub', 'link'))).toBe('../run.sh');
    await unpackLocal(packLocal(join(src, 'run.sh'), 1 << 20), join(dir, 'renamed.sh'), 1 << 20);
    expect(readFileSync(join(dir, 'renamed.sh'), 'utf8')).toBe('#!/bin/sh\n');
  });

  test('a source over the limit is refused', async () => {
    writeFileSync(join(dir, 'big'), Buffer.alloc(2048));
    await expect(unpackLocal(packLocal(join(dir, 'big'), 1024), join(dir, 'out'), 1 << 20)).rejects.toThrow('is larger than the limit of 1024 bytes');
  });
});

describe('a hostile stream writes nothing outside the destination', () => {
  test('a symlink to / made by one entry is never followed by the next', async () => {
    const dest = join(dir, 'dest');
    mkdirSync(dest);
    const stream = chunks([entry('D', '755', '', 'x'), entry('L', '777', '/', 'x/up'), entry('F', '644', 'pwned\n', 'x/up/tmp/jf-cp-escaped'), 'E 0 0 0\n']);
    await expect(unpackLocal(stream, dest, 1 << 20)).rejects.toThrow(CopyRefused);
    expect(existsSync('/tmp/jf-cp-escaped')).toBe(false);
    expect(lstatSync(join(dest, 'x', 'up')).isSymbolicLink()).toBe(true);
  });

  test('a file entry where a symlink stands replaces the symlink, never writes through it', async () => {
    const dest = join(dir, 'dest');
    mkdirSync(join(dest, 'x'), { recursive: true });
    writeFileSync(join(dir, 'outside'), 'keep\n');
    symlinkSync(join(dir, 'outside'), join(dest, 'x', 'f'));
    await unpackLocal(chunks([entry('F', '644', 'new\n', 'x/f'), 'E 0 0 0\n']), dest, 1 << 20);
    expect(readFileSync(join(dir, 'outside'), 'utf8')).toBe('keep\n');
    expect(readFileSync(join(dest, 'x', 'f'), 'utf8')).toBe('new\n');
  });

  test.each([['../escape'], ['/etc/passwd'], ['a/../../b'], ['a//b']])('the entry name %s is refused', async (name) => {
    await expect(unpackLocal(chunks([entry('F', '644', 'x', name), 'E 0 0 0\n']), dir, 1 << 20)).rejects.toThrow('refused');
  });

  test('garbage, a stream cut short and one over the limit', async () => {
    await expect(unpackLocal(chunks(['GET / HTTP/1.1\n']), dir, 1 << 20)).rejects.toThrow('not a jailfleet cp stream');
    await expect(unpackLocal(chunks(['F 644 100 1\nf', 'short']), dir, 1 << 20)).rejects.toThrow('the stream ended early');
    await expect(unpackLocal(chunks([entry('F', '644', 'x'.repeat(100), 'f'), 'E 0 0 0\n']), dir, 10)).rejects.toThrow('over the size limit');
  });
});
