// The kernel's mount table as tests see it, read independently of the code under test: what is
// still mounted under a directory, and a last-resort lazy unmount so that a failed test leaves
// nothing mounted behind it. Never used by the product itself.
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';

/** Mount points at or under `dir` in this process's mount namespace, deepest first. */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' ')[4].replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.split('/').length - a.split('/').length);
}

/** Lazily unmounts everything at or under `dir`; returns what was still mounted. */
export async function forceUnmountUnder(dir: string): Promise<string[]> {
  const found = await mountPointsUnder(dir);
  for (let left = found; left.length; left = await mountPointsUnder(dir)) {
    for (const p of left) await execa('umount', ['--lazy', p], { reject: false });
    if ((await mountPointsUnder(dir)).length >= left.length) break;
  }
  return found;
}
