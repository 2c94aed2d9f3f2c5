// What the linux and freebsd drivers do the same way: the step discipline (one step per jail at a
// time, its name checked, any failure a DriverStepFailed), where a jail's files live, spec.json
// written and read back through the contract, the checks of a user mount, the order of mounts
// and unmounts, and the console's tail. It never runs a tool or mounts anything itself: how a jail
// is made stays in each driver.
import { mkdir, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { describeIssues, jailSpecSchema, nameSchema, type JailSpec } from '../../../contracts/index.js';
import { readConsoleTail } from './console-log.js';
import { DriverStepFailed, SavedSpecInvalid, type DriverStepName } from './driver.js';
import { JailDirs, checkMountSource, ifExists, resolveMountTarget, writeFileAtomic } from './host-files.js';
import { JailSteps, checkJailName } from './jail-steps.js';

export type DriverLogger = Pick<Logger, 'debug' | 'info' | 'warn'>;

/** How long destroy() lets a jail handle SIGTERM before it is killed, at most. */
export const DESTROY_GRACE_MS = 2_000;
/** Lines of the console a failed start quotes (the command's last words, usually why). */
const START_FAILURE_TAIL_LINES = 5;

/** Host volumes an agent offers (`serve agent --volume NAME=/path[:ro]`): name → directory, and whether only read-only. */
export type HostVolumes = ReadonlyMap<string, { path: string; readOnly: boolean }>;

/**
 * A spec's volumes as the mounts they are: this host's directory of each (read-only when the
 * spec or the host says so). A volume this host does not offer fails the step: the scheduler
 * should not have placed the jail here. Both drivers mount them as they mount the spec's mounts.
 */
export function volumeMountsOf(spec: JailSpec, volumes: HostVolumes): JailSpec['mounts'] {
  return (spec.volumes ?? []).map((v) => {
    const offer = volumes.get(v.name);
    if (!offer) throw new Error(`volume ${v.name} is not offered by this host (serve agent --volume ${v.name}=/path)`);
    if (!v.readOnly && offer.readOnly) throw new Error(`volume ${v.name} is offered read-only on this host, and the jail writes to it`);
    return { source: offer.path, target: v.target, readOnly: v.readOnly || offer.readOnly };
  });
}

/** The spec's mounts, parents before children, so a mount at /a/b lands on top of the one at /a. */
export function parentsFirst(mounts: JailSpec['mounts']): JailSpec['mounts'] {
  return [...mounts].sort((a, b) => a.target.split('/').length - b.target.split('/').length);
}

/**
 * Mount points (given in the order they were mounted) in the order to unmount them: deepest
 * first, and of equal depth the later-mounted first, so nothing is unmounted from under another.
 */
export function unmountOrder(mountPoints: readonly string[]): string[] {
  return mountPoints
    .map((node, i) => ({ node, i }))
    .sort((a, b) => b.node.split('/').length - a.node.split('/').length || b.i - a.i)
    .map((m) => m.node);
}

/** Reads back a jail's spec.json through the contract; null when there is none. */
export async function readSavedSpec(file: string): Promise<JailSpec | null> {
  const text = await ifExists(readFile(file, 'utf8'));
  if (text === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SavedSpecInvalid(file, null, `not valid JSON (${(err as Error).message})`, { cause: err });
  }
  const parsed = jailSpecSchema.safeParse(json);
  if (!parsed.success) {
    const field = parsed.error.issues[0]?.path.map(String).join('.') || null;
    throw new SavedSpecInvalid(file, field, describeIssues(parsed.error), { cause: parsed.error });
  }
  return parsed.data;
}

export abstract class DriverBase {
  protected readonly dirs: JailDirs;
  protected readonly log?: DriverLogger;
  private readonly steps = new JailSteps();

  constructor(dataDir: string, log?: DriverLogger) {
    this.dirs = new JailDirs(dataDir);
    this.log = log;
  }

  /** The file the jail's console (its command's stdout and stderr) is appended to, run after run. */
  async consoleFile(name: string): Promise<string> {
    checkJailName('inspect', name);
    return (await this.paths(name)).console;
  }

  async consoleTail(name: string, lines: number): Promise<{ text: string; truncated: boolean }> {
    checkJailName('inspect', name);
    return readConsoleTail((await this.paths(name)).console, lines);
  }

  /**
   * Runs `fn` as the jail's next step, after its name is checked; any failure comes out as a
   * DriverStepFailed of `step` (one thrown already is kept, with its argv and stderr).
   */
  protected step<T>(step: DriverStepName, name: string, fn: () => Promise<T>): Promise<T> {
    return this.steps.run(step, name, async () => {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof DriverStepFailed) throw err;
        throw DriverStepFailed.of(step, name, err instanceof Error ? err.message : String(err), { cause: err });
      }
    });
  }

  /** The driver's data directory, made on first use and resolved. */
  protected dataDir(): Promise<string> {
    return this.dirs.resolved();
  }

  protected paths(name: string) {
    return this.dirs.of(name);
  }

  /** Makes the jail's directory and saves its spec there (destroy reads it back). */
  protected async saveSpec(spec: JailSpec): Promise<void> {
    const p = await this.paths(spec.name);
    await mkdir(p.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(p.spec, JSON.stringify(spec), 0o600);
  }

  /**
   * How long destroy() gives the jail after SIGTERM: its spec's stopTimeoutMs up to
   * DESTROY_GRACE_MS. An unreadable spec.json must not keep a jail from being destroyed: it is
   * logged, naming the file and the field, and the default grace is used.
   */
  protected async destroyGraceMs(name: string): Promise<number> {
    const spec = await readSavedSpec((await this.paths(name)).spec).catch((err: unknown) => {
      if (!(err instanceof SavedSpecInvalid)) throw err;
      this.log?.warn({ jail: name, file: err.file, field: err.field, err }, 'saved spec unreadable: destroying with the default grace');
      return null;
    });
    return Math.min(spec?.stopTimeoutMs ?? DESTROY_GRACE_MS, DESTROY_GRACE_MS);
  }

  /** Names of the jails with a directory under the data directory. */
  protected async jailDirNames(): Promise<string[]> {
    const entries = (await ifExists(readdir(join(await this.dataDir(), 'jails'), { withFileTypes: true }))) ?? [];
    return entries.filter((e) => e.isDirectory() && nameSchema.safeParse(e.name).success).map((e) => e.name);
  }

  /**
   * One of the spec's mounts, checked: its real source (which must exist and must not show the
   * data directory) and its target made inside the root. Null when the target is mounted already.
   */
  protected async userMount(jail: string, root: string, m: JailSpec['mounts'][number], isMounted: (path: string) => boolean) {
    const refuse = (why: string): never => {
      throw new DriverStepFailed('mount', `mount ${m.source} -> ${m.target} of jail ${jail} refused: ${why}`);
    };
    const source = await ifExists(realpath(m.source));
    if (source === null) return refuse('the source does not exist');
    await checkMountSource(source, await this.dataDir(), refuse);
    const sourceIsDir = (await stat(source)).isDirectory();
    const target = await resolveMountTarget(root, m.target, sourceIsDir, refuse);
    return isMounted(target) ? null : { source, target, readOnly: m.readOnly };
  }

  /** The console's last lines, quoted when a start fails ('' when it is empty). */
  protected async startFailureTail(name: string): Promise<string> {
    return (await readConsoleTail((await this.paths(name)).console, START_FAILURE_TAIL_LINES)).text.trim();
  }

  /** Digests of the images this host's jails were prepared from (the image cache never collects them). */
  async imagesInUse(): Promise<Set<string>> {
    const used = new Set<string>();
    for (const name of await this.jailDirNames()) {
      const digest = await this.recordedImage(name);
      if (digest) used.add(digest);
    }
    return used;
  }

  /** The digest a jail was prepared from (recorded before its fetch), or null (a thin root, or not prepared). */
  protected async recordedImage(name: string): Promise<string | null> {
    const text = (await ifExists(readFile(join((await this.paths(name)).dir, 'image'), 'utf8')))?.trim();
    return text && /^sha256:[0-9a-f]{64}$/.test(text) ? text : null;
  }

}
