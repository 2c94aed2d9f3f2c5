// Host-side files of a jail, shared by the drivers: safe writes and directories inside a jail's
// root (never through a symlink a jail planted), and the checks of a user mount's source and
// target. Nothing here mounts or runs anything.
import { lstat, mkdir, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const isWithin = (dir: string, p: string) => p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
export const errCode = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;
/** null when the file (or, for /proc/<pid>/..., the process) does not exist. */
export const ifExists = <T>(p: Promise<T>): Promise<T | null> =>
  p.catch((err) => {
    if (errCode(err) === 'ENOENT' || errCode(err) === 'ESRCH') return null;
    throw err;
  });
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function abortError(signal: AbortSignal): Error {
  const err = new Error('waiting for the jail was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/** Writes a file by rename, so an existing symlink at `path` is replaced, never followed. */
export async function writeFileAtomic(path: string, content: string, mode = 0o644): Promise<void> {
  const tmp = join(dirname(path), `.${path.slice(dirname(path).length + 1)}.jailfleet-tmp`);
  await ifExists(unlink(tmp));
  await writeFile(tmp, content, { flag: 'wx', mode });
  await rename(tmp, path);
}

/**
 * Makes (or checks) `root/rel` as a real directory, refusing any component that is a symlink
 * or a file: the jail can write inside its root, and must not lead the driver out of it.
 */
export async function ensureRealDir(root: string, rel: string, mode = 0o755): Promise<string> {
  let cur = root;
  for (const seg of rel.split('/').filter(Boolean)) {
    cur = join(cur, seg);
    let st = await ifExists(lstat(cur));
    if (!st) {
      await mkdir(cur, { mode }).catch((err) => {
        if (errCode(err) !== 'EEXIST') throw err;
      });
      st = await lstat(cur);
    }
    if (!st.isDirectory()) throw new Error(`${cur} is not a directory (a symlink or a file): refusing to use it`);
  }
  return cur;
}

/**
 * The driver's data directory must never be visible in a jail: refuse a source that is it,
 * lies under it, or contains it, also when reached through another bind mount of it.
 */
export async function checkMountSource(source: string, data: string, refuse: (why: string) => never): Promise<void> {
  if (source === data || isWithin(data, source)) refuse(`the source is the jail driver's data directory ${data} or under it`);
  if (isWithin(source, data)) refuse(`the source contains the jail driver's data directory ${data}`);
  const dataSt = await stat(data);
  for (let dir = source; ; dir = dirname(dir)) {
    const st = await stat(dir);
    if (st.dev === dataSt.dev && st.ino === dataSt.ino) refuse(`the source is under the jail driver's data directory (${dir} is ${data})`);
    if (dir === '/') break;
  }
  const srcSt = await stat(source);
  for (let dir = data; ; dir = dirname(dir)) {
    const st = await stat(dir);
    if (st.dev === srcSt.dev && st.ino === srcSt.ino) refuse(`the source contains the jail driver's data directory ${data}`);
    if (dir === '/') break;
  }
}

/**
 * The host policy on spec mounts (`serve agent --allow-mount-source`): the allowed prefix
 * `source` lies in and its path below it, every component of which is checked not to be a
 * symlink (a jail with a writable mount under a prefix could plant one). The check is for the
 * reason a user reads; the mount itself is made by jailinit from an fd opened beneath the
 * prefix without following symlinks (its `beneath` op), so a swap after this check cannot
 * redirect it. `prefixes` are real paths.
 */
export async function allowedMountSource(prefixes: readonly string[], source: string, refuse: (why: string) => never): Promise<{ prefix: string; rel: string }> {
  const prefix = prefixes.find((p) => source === p || isWithin(p, source));
  if (prefix === undefined) {
    return refuse(prefixes.length
      ? `the source is outside the mount sources this host allows (${prefixes.join(', ')}: serve agent --allow-mount-source)`
      : 'this host allows no mount sources (serve agent --allow-mount-source PREFIX)');
  }
  const rel = source.slice(prefix.length).replace(/^\//, '');
  let cur = prefix;
  for (const seg of rel.split('/').filter(Boolean)) {
    cur = join(cur, seg);
    const st = await ifExists(lstat(cur));
    if (st === null) return refuse('the source does not exist');
    if (st.isSymbolicLink()) return refuse(`the source passes through the symlink ${cur} (a mount source is never resolved through a symlink)`);
  }
  return { prefix, rel };
}

/**
 * `root + target`, created as a directory (or an empty file for a file source) one component
 * at a time; every existing component is resolved and must stay inside the root, so a symlink
 * planted by a jail cannot send the mount (or the mkdir) to the host.
 */
export async function resolveMountTarget(root: string, target: string, dir: boolean, refuse: (why: string) => never): Promise<string> {
  const realRoot = await realpath(root);
  const segs = target.split('/').filter(Boolean);
  let cur = realRoot;
  for (const [i, seg] of segs.entries()) {
    const next = join(cur, seg);
    if (!(await ifExists(lstat(next)))) {
      if (i === segs.length - 1 && !dir) await writeFile(next, '', { flag: 'wx', mode: 0o644 });
      else await mkdir(next, { mode: 0o755 });
    }
    const real = await ifExists(realpath(next));
    if (real === null) return refuse(`${next} is a dangling symlink`);
    if (!isWithin(realRoot, real)) return refuse(`the target escapes the jail root (${next} resolves to ${real})`);
    cur = real;
  }
  const st = await stat(cur);
  if (dir && !st.isDirectory()) refuse(`the source is a directory but the target ${cur} is not`);
  if (!dir && st.isDirectory()) refuse(`the source is a file but the target ${cur} is a directory`);
  return cur;
}

/** Where a driver keeps each jail: `<dataDir>/jails/<name>/`, its root and its bookkeeping files. */
export class JailDirs {
  private real: Promise<string> | null = null;
  constructor(private readonly dataDir: string) {}

  /** The data directory, made on first use and resolved (so prefix checks compare real paths). */
  resolved(): Promise<string> {
    this.real ??= (async () => {
      await mkdir(join(this.dataDir, 'jails'), { recursive: true, mode: 0o700 });
      return realpath(this.dataDir);
    })();
    return this.real;
  }

  async of(name: string) {
    const dir = join(await this.resolved(), 'jails', name);
    return {
      dir,
      root: join(dir, 'root'),
      spec: join(dir, 'spec.json'),
      pid: join(dir, 'pid'),
      exitCode: join(dir, 'exit-code'),
      console: join(dir, 'console.log'),
    };
  }
}
