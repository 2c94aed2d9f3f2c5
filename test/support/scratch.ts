// Scratch directories for tests (fleet files, bind sources, copies): made under the system's tmp
// dir and removed when their test file ends, by the afterAll of test/support/jest-scratch.ts,
// also when a test failed. A directory with something still mounted under it is left alone and
// named: removing it would reach into the mount.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

/** A new empty directory `<tmp>/<prefix>XXXXXX`, removed when the test file ends. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Removes every scratch directory made so far; returns those left because something is mounted under them. */
export function removeScratch(): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '');
  const kept: string[] = [];
  for (const dir of made.splice(0)) {
    if (mounts.some((m) => m === dir || m.startsWith(`${dir}/`))) kept.push(dir);
    else rmSync(dir, { recursive: true, force: true });
  }
  return kept;
}
