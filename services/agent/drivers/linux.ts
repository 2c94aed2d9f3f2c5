// The linux driver: a jail is a thin root (read-only binds of the host's /usr and friends, a
// generated /etc), a minimal /dev, its own /proc, and the pid, mount, uts, ipc (and optionally
// net) namespaces of `unshare`, with native/jailinit as pid 1 pivoted into the root. A vnet jail
// gets its own network namespace and one link to the host's jail bridge (linux-vnet.ts), wired
// while its init waits at the start barrier.
// Each jail gets a cgroup of its own with its spec's limits (cgroup-limits.ts), joined by its init
// before the command runs.
//
// Every mount of a jail lives in the jail's own mount namespace, never in the host's: the host's
// mount table is the same with 0 or 1,000 jails, and a jail that dies however it dies (stop,
// SIGKILL, the kernel's OOM killer) takes its mounts with it. The lifecycle steps are:
//   prepare: the root's directories and files (base dirs, merged-/usr symlinks, a generated
//            /etc, the empty /proc, /dev, /tmp); no mount.
//   mount:   checks the spec's mounts (sources exist, the data directory is never shown, targets
//            made inside the root without following a jail's symlinks) and records the jail's
//            mount plan (mount-plan.json); no mount.
//   start:   one spawn: `unshare … jailinit <plan> -- command`; jailinit makes the plan's mounts
//            inside the new namespace, pivots into the root, hardens (capabilities, no_new_privs,
//            the spec's seccomp filter: native/jail-seccomp.h) and execs, and reports "ok" or the
//            failing step on its status fd. exec and sessions enter with the same hardening.
//   unmount: forgets the plan (the mounts went with the namespace).
//   destroy: stops the init, removes the cgroup and the jail's files (after one look at the
//            host's mount table: a jail mounted by an older driver is unmounted first).
// A jail with an `image` has an overlay root instead: the image's unpacked tree (the agent's
// read-only cache, ImageSource) below, the jail's own upper and work directories (under its
// directory, kept across stop/start and agent restarts, removed by destroy) above, mounted by
// jailinit like every other mount. The digest a jail was prepared from is kept in its directory
// (`image`), so it restarts from the same bytes even if its tag moved.
// It must never run anything through a shell, never make the host's secrets, homes or its own
// data directory visible inside a jail, never mount anything in the host's namespace for a jail,
// and never delete files through a mount.
import { createHash } from 'node:crypto';
import { constants as fsConstants, existsSync, realpathSync } from 'node:fs';
import {
  access,
  lstat,
  mkdir,
  open,
  readFile,
  readlink,
  realpath,
  rm,
  rmdir,
  stat,
  symlink,
  unlink,
} from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { jailHostname, jailSeccomp, nameSchema, networkMode, vnetOf, type ExecResult, type JailSpec } from '../../../contracts/index.js';
import { DriverStepFailed, type DriverStepName, type ExecOptions, type ImageSource, type JailDriver, type JailExit, type JailInspection, type SessionCommand, type SessionSpawn } from './driver.js';
import { DriverBase, parentsFirst, unmountOrder, volumeMountsOf, type DriverLogger } from './driver-base.js';
import { JailCgroups, type CgroupController, type JailUsage } from './cgroup-limits.js';
import { abortError, allowedMountSource, checkMountSource, ensureRealDir, errCode, ifExists, isWithin, resolveMountTarget, sleep, writeFileAtomic } from './host-files.js';
import { checkJailName } from './jail-steps.js';
import { VnetLinks, type VnetOptions } from './linux-vnet.js';

export interface LinuxDriverOptions {
  /** Where the driver keeps its state: `${dataDir}/jails/<name>/`. Never visible inside a jail. */
  dataDir: string;
  /** The jail init binary (native/jailinit.c); default `<repo>/dist/native/jailinit`. */
  initPath?: string;
  /** The unmount helper for jails an older driver mounted on the host (native/jailmount.c); default `<repo>/dist/native/jailmount`. */
  mountPath?: string;
  /** The session helper (native/jailsession.c) and the copy helper (native/jailfs.c); default under `<repo>/dist/native/`. */
  sessionPath?: string;
  fsPath?: string;
  /**
   * The directory under `<cgroup mount>/jailfleet/` that holds this driver's jails; default
   * `data-` and a hash of the data directory, so that two agents on one machine never share one.
   */
  cgroupScope?: string;
  logger?: DriverLogger;
  /** Where image jails' roots come from (the agent's image cache); without it a spec with an image fails at prepare. */
  images?: ImageSource;
  /** Host volumes this agent offers (`--volume`): name → directory, and whether only read-only. */
  volumes?: ReadonlyMap<string, { path: string; readOnly: boolean }>;
  /** The jail network and bridge of vnet jails; without it a vnet spec fails at start. */
  vnet?: VnetOptions;
  /**
   * The host directories a spec mount's source may lie in (`serve agent --allow-mount-source`;
   * the agent gives none by default, so spec mounts are refused). Undefined: no policy (the
   * driver used on its own). Volumes are the host's own offer and are not held to it.
   */
  allowMountSources?: readonly string[];
}



/**
 * One operation of a jail's mount plan, run by jailinit in the jail's namespace (see its header),
 * or of jailmount (umount only, for jails mounted on the host by an older driver).
 */
type MountOp = [op: 'bind' | 'beneath' | 'tmpfs' | 'devpts' | 'overlay' | 'mkdir' | 'file' | 'symlink' | 'umount', arg: string, target: string, flags: string];

/** An image jail's overlay: the image below, the jail's own writable directories above. */
interface OverlayRoot {
  lower: string;
  upper: string;
  work: string;
}
/**
 * The jail's /tmp and /dev/shm are bounded in bytes and inodes on their own (Docker gives
 * /dev/shm 64 MB): their pages are charged to the jail's memory cgroup too, but a jail with a
 * large memory limit must still not grow a tmpfs without end, nor exhaust its inodes.
 */
const TMP_TMPFS_SIZE = 'size=256m,nr_inodes=65536';
const SHM_TMPFS_SIZE = 'size=64m,nr_inodes=16384';
/** Root-level directories that become a fresh tmpfs in the jail: what lies below is made in there. */
const TMPFS_DIRS = ['dev', 'tmp'];

/** Host directories a thin root borrows, read-only (or as the same symlink, on merged-/usr hosts). */
const BASE_DIRS = ['usr', 'bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32'];
/** Device nodes of a jail's /dev, bound from the host's (like FreeBSD devfs ruleset 4). */
const DEV_NODES = ['null', 'zero', 'full', 'random', 'urandom', 'tty'];
const DEV_LINKS: Record<string, string> = {
  fd: '/proc/self/fd',
  stdin: '/proc/self/fd/0',
  stdout: '/proc/self/fd/1',
  stderr: '/proc/self/fd/2',
  ptmx: 'pts/ptmx',
};
const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];
/** The environment of the driver's own tools (jailmount, nsenter): fixed, so messages are predictable. */
const TOOL_ENV = { PATH: TOOL_DIRS.join(':'), LC_ALL: 'C' };
const POLL_MS = 200;
/** How long start() waits for jailinit's start report (setup, hardening and the exec). */
const START_REPORT_MS = 10_000;
/** How long a SIGKILLed init may take to disappear before stop() gives up. */
const KILL_WAIT_MS = 10_000;
const SIGKILL_CODE = 128 + osConstants.signals.SIGKILL;

interface PidRecord {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells the jail's init from a later process with the same pid. */
  startTime: string;
  unsharePid: number;
}

interface OwnChild {
  pid: number;
  /**
   * Settles when `unshare` is gone (hence its init). Its exit status is not used: unshare
   * 2.38 exits 1 when its child was SIGKILLed; the exit-code file is the truth.
   */
  exited: Promise<void>;
}

/** The repository root: the nearest directory above this file that holds package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

/**
 * Spawns `unshare` in its own session, outliving this process, with the jail's exact
 * environment and its console as stdout and stderr. stdin is jailinit's start barrier: it
 * waits for "go" and EOF there before running the command, so the init cannot be gone before
 * the driver has recorded its pid and start time, nor run when the driver died before that.
 */
function spawnDetached(argv: string[], env: Record<string, string>, consoleFd: number) {
  // execa's types only list small fd numbers; at runtime any open fd is handed to the child as is.
  const fd = consoleFd as 1;
  // fd 3: jailinit's start report ("ok" or "failed: why"), read by start()
  return execa(argv[0], argv.slice(1), {
    detached: true,
    cleanup: false,
    stdio: ['pipe', fd, fd, 'pipe'],
    env,
    extendEnv: false,
    reject: false,
    buffer: false,
  });
}

/** The first line jailinit writes on its start report pipe; null when it closed it unsaid. */
function readStartReport(stream: NodeJS.ReadableStream | null | undefined, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    if (!stream) return resolve(null);
    let text = '';
    const done = (v: string | null) => {
      clearTimeout(timer);
      stream.removeAllListeners('data');
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    stream.on('data', (b: Buffer) => {
      text += b.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) done(text.slice(0, nl));
    });
    stream.on('end', () => done(text || null));
    stream.on('error', () => done(null));
  });
}

/** `promise`, or an AbortError as soon as `signal` aborts (also when it already has). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Mount points at or under `dir` in this process's mount namespace, in mount order (ids rise
 * with it), from /proc/self/mountinfo. Only destroy reads it: a jail mounts nothing on the host.
 */
async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      const mountPoint = f[4].replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
      return { id: Number(f[0]), mountPoint };
    })
    .filter((m) => m.mountPoint === dir || isWithin(dir, m.mountPoint))
    .sort((a, b) => a.id - b.id)
    .map((m) => m.mountPoint);
}

/** Field 3 (state) and 22 (start time) of /proc/<pid>/stat; null when there is no such process. */
async function procStat(pid: number): Promise<{ state: string; startTime: string } | null> {
  const text = await ifExists(readFile(`/proc/${pid}/stat`, 'utf8'));
  if (text === null) return null;
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], startTime: fields[19] };
}

/** True while `pid` runs and, when given, is still the process that started at `startTime`. */
async function isAlive(pid: number, startTime: string | null): Promise<boolean> {
  const st = await procStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTime === null || st.startTime === startTime;
}

/** Makes `path` the symlink `target`, replacing another symlink or an empty directory there. */
async function ensureSymlink(path: string, target: string): Promise<void> {
  const st = await ifExists(lstat(path));
  if (st?.isSymbolicLink()) {
    if ((await readlink(path)) === target) return;
    await unlink(path);
  } else if (st?.isDirectory()) {
    await rmdir(path); // fails (ENOTEMPTY) rather than delete anything
  } else if (st) {
    throw new Error(`${path} exists and is not a symlink: refusing to replace it`);
  }
  await symlink(target, path);
}

/** The generated /etc of a jail: enough for libc, nothing of the host's. */
function generatedEtc(hostname: string): Record<string, string> {
  return {
    passwd: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    group: 'root:x:0:\nnogroup:x:65534:\n',
    hosts: `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
    hostname: `${hostname}\n`,
    'nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n',
  };
}

/** Runs jails with unshare, chroot and bind mounts on a Linux host (as root). */
export class LinuxDriver extends DriverBase implements JailDriver {
  readonly kind = 'linux' as const;
  private readonly initPath: string;
  private readonly mountPath: string;
  private readonly sessionPath: string;
  private readonly fsPath: string;
  private readonly tools = new Map<string, string>();
  /** Jails started by this very process: their exit comes from the child, not from polling. */
  private readonly children = new Map<string, OwnChild>();
  private readonly cgroups: JailCgroups;
  private readonly images?: ImageSource;
  private readonly volumes: ReadonlyMap<string, { path: string; readOnly: boolean }>;
  private readonly vnet: VnetLinks | null;
  private readonly mountSources?: readonly string[];

  constructor(options: LinuxDriverOptions) {
    super(options.dataDir, options.logger);
    const scope = options.cgroupScope;
    if (scope !== undefined && !nameSchema.safeParse(scope).success) throw new Error(`invalid cgroup scope ${JSON.stringify(scope)}`);
    this.cgroups = new JailCgroups(async () => scope ?? `data-${createHash('sha256').update(await this.dataDir()).digest('hex').slice(0, 12)}`);
    this.initPath = options.initPath ?? join(repoRoot(), 'dist', 'native', 'jailinit');
    this.mountPath = options.mountPath ?? join(repoRoot(), 'dist', 'native', 'jailmount');
    this.images = options.images;
    this.volumes = options.volumes ?? new Map();
    // real paths, once: a prefix is the admin's word, symlinks in it included
    this.mountSources = options.allowMountSources?.map((p) => realpathSync(p));
    this.sessionPath = options.sessionPath ?? join(repoRoot(), 'dist', 'native', 'jailsession');
    this.fsPath = options.fsPath ?? join(repoRoot(), 'dist', 'native', 'jailfs');
    this.vnet = options.vnet ? new VnetLinks(options.vnet, async () => this.dataDir(), (t) => this.toolPath(t)) : null;
  }

  async prepare(spec: JailSpec): Promise<void> {
    await this.step('prepare', spec.name, async () => {
      const p = await this.paths(spec.name);
      await this.saveSpec(spec);
      await mkdir(p.root, { mode: 0o755 }).catch((err) => {
        if (errCode(err) !== 'EEXIST') throw err;
      });
      if (!(await lstat(p.root)).isDirectory()) throw new Error(`${p.root} is not a directory`);
      if (spec.image) {
        await this.prepareImageRoot(spec);
        return;
      }
      for (const base of BASE_DIRS) await this.prepareBase(p.root, base);
      const etc = await ensureRealDir(p.root, 'etc');
      const files = generatedEtc(jailHostname(spec));
      const resolv = await readFile('/etc/resolv.conf', 'utf8').catch(() => null);
      if (resolv !== null) files['resolv.conf'] = resolv;
      for (const [file, content] of Object.entries(files)) await writeFileAtomic(join(etc, file), content);
      for (const dir of ['proc', ...TMPFS_DIRS]) await ensureRealDir(p.root, dir);
      await ensureRealDir(p.root, 'root', 0o700);
      this.log?.info({ jail: spec.name, root: p.root }, 'jail root prepared');
    });
  }

  async mount(spec: JailSpec): Promise<void> {
    await this.step('mount', spec.name, async () => {
      const p = await this.paths(spec.name);
      const overlay = spec.image ? await this.overlayOf(spec.name) : null;
      if (spec.image && !overlay) throw new Error(`the root of jail ${spec.name} is not prepared (its image is not recorded in ${p.dir})`);
      if (!spec.image && !(await ifExists(lstat(join(p.root, 'etc', 'passwd'))))) throw new Error(`the root of jail ${spec.name} is not prepared (${p.root} has no etc/passwd)`);
      const plan = await this.mountPlan(spec.name, p.root, [...spec.mounts, ...volumeMountsOf(spec, this.volumes)], overlay, new Set(spec.mounts));
      await writeFileAtomic(this.planPath(p.dir), JSON.stringify(plan), 0o600);
      this.log?.info({ jail: spec.name, mounts: spec.mounts.length }, 'jail mount plan recorded');
    });
  }

  async start(spec: JailSpec): Promise<{ pid: number }> {
    return this.step('start', spec.name, async () => {
      const p = await this.paths(spec.name);
      const running = await this.runningInit(spec.name);
      if (running) return { pid: running.pid };
      await access(this.initPath, fsConstants.X_OK).catch((err) => {
        throw new Error(`the jail init ${this.initPath} is missing or not executable (build it with: node scripts/setup.mjs)`, { cause: err });
      });
      const plan = await this.readPlan(p.dir);
      if (!plan) throw new Error(`jail ${spec.name} is not mounted (it has no mount plan: the mount step comes first)`);
      await ifExists(unlink(p.exitCode));
      await ifExists(unlink(this.oomPath(p.dir)));
      await this.cgroups.create(spec.name, spec.resources);
      // a vnet jail: jailinit's network argument carries its address (checked against the jail network)
      const vnet = vnetOf(spec);
      if (vnet && !this.vnet) throw DriverStepFailed.of('start', spec.name, 'network mode vnet: this agent has no jail network (serve agent --jail-cidr)');
      if (vnet && !vnet.address) throw DriverStepFailed.of('start', spec.name, 'network mode vnet without an address (the scheduler pins one into the spec it sends)');
      const network = vnet ? this.vnet!.initArg(spec.name, vnet.address!) : networkMode(spec);

      const argv = [
        await this.toolPath('unshare'),
        '--pid', '--fork', '--mount', '--uts', '--ipc',
        ...(networkMode(spec) === 'inherit' ? [] : ['--net']),
        '--propagation', 'private',
        '--',
        this.initPath, '--seccomp', jailSeccomp(spec), p.exitCode, p.root, jailHostname(spec), network,
        ...plan.flat(),
        '--', ...spec.command,
      ];
      const consoleFile = await open(p.console, 'a', 0o600);
      let child: ReturnType<typeof spawnDetached>;
      try {
        child = spawnDetached(argv, spec.env, consoleFile.fd);
      } finally {
        await consoleFile.close();
      }
      child.unref();
      child.stdin!.on('error', () => undefined);
      let unshareDone = false;
      const exited = child.then(() => {
        unshareDone = true;
      });
      const unsharePid = child.pid;
      if (unsharePid === undefined) {
        const r = await child;
        throw DriverStepFailed.of('start', spec.name, `cannot run ${argv[0]}: ${r.shortMessage}`, { argv, stderr: r.stderr ?? '', cause: r });
      }

      let record: PidRecord | null = null;
      try {
        for (let tries = 0; !record; tries++) {
          const children = await ifExists(readFile(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8'));
          const initPid = Number(children?.trim().split(' ')[0] || NaN);
          const st = Number.isInteger(initPid) && (await this.initReady(initPid)) ? await procStat(initPid) : null;
          if (st) record = { pid: initPid, startTime: st.startTime, unsharePid };
          else if (unshareDone || tries > 1050) {
            const tail = await this.startFailureTail(spec.name);
            throw DriverStepFailed.of('start', spec.name, `its init did not start${tail ? `: ${tail}` : ''}`, { argv, stderr: tail });
          } else await sleep(tries < 50 ? 1 : 5);
        }
        // its init joins the jail's cgroup while it still waits at the barrier: whatever it
        // runs afterwards is limited from its first instruction
        await this.cgroups.join(spec.name, record.pid);
        // a vnet jail's link, into its new network namespace, before its init goes on
        if (vnet) {
          // remembered in the jail's directory: destroy removes a host end that outlived the jail
          await writeFileAtomic(join(p.dir, 'vnet-link'), await this.vnet!.hostEnd(spec.name), 0o600);
          await this.vnet!.wire(spec.name, record.pid, vnet.address!);
        }
        await writeFileAtomic(p.pid, JSON.stringify(record), 0o600);
        // recorded: the barrier opens. A bare EOF (this process dying before here) ends the init.
        child.stdin!.end('go\n');
      } catch (err) {
        try {
          process.kill(-unsharePid, 'SIGKILL');
        } catch {
          // already gone
        }
        throw err;
      } finally {
        if (!child.stdin!.writableEnded) child.stdin!.end();
      }
      // the barrier is open: jailinit sets up, hardens and execs, then says how that went
      const report = await readStartReport(child.stdio[3] as NodeJS.ReadableStream | undefined, START_REPORT_MS);
      if (report !== null && report !== 'ok') {
        const why = report.replace(/^failed: /, '');
        throw DriverStepFailed.of('start', spec.name, why, { argv, stderr: why });
      }
      this.children.set(spec.name, { pid: record.pid, exited });
      this.log?.info({ jail: spec.name, pid: record.pid }, 'jail started');
      return { pid: record.pid };
    });
  }

  async wait(name: string, pid: number, signal: AbortSignal): Promise<JailExit> {
    const p = await abortable(this.paths(name), signal);
    const own = this.children.get(name);
    if (own && own.pid === pid) {
      await abortable(own.exited, signal);
    } else {
      const record = await abortable(this.readPidRecord(p.pid), signal);
      const startTime = record?.pid === pid ? record.startTime : null;
      while (await abortable(isAlive(pid, startTime), signal)) await abortable(sleep(POLL_MS), signal);
    }
    const exitCode = await this.exitCodeOf(name, pid);
    const oomKills = exitCode === null ? 0 : await this.releaseCgroup(name, pid);
    if (oomKills > 0 && exitCode !== 0) this.log?.warn({ jail: name, pid, exitCode, oomKills }, 'jail killed for memory');
    return { exitCode, outOfMemory: oomKills > 0 && exitCode !== 0 };
  }

  async stop(spec: JailSpec): Promise<{ exitCode: number | null }> {
    return this.step('stop', spec.name, () => this.stopInit(spec.name, spec.stopTimeoutMs));
  }

  async unmount(spec: JailSpec): Promise<void> {
    await this.step('unmount', spec.name, async () => {
      // the mounts went with the jail's namespace: what is left is the plan, made again by mount
      await ifExists(unlink(this.planPath((await this.paths(spec.name)).dir)));
      this.log?.info({ jail: spec.name }, 'jail mount plan released');
    });
  }

  async destroy(name: string): Promise<void> {
    await this.step('destroy', name, async () => {
      const p = await this.paths(name);
      if (!(await ifExists(lstat(p.dir)))) return;
      await this.stopInit(name, await this.destroyGraceMs(name));
      await this.cgroups.remove(name);
      // only a jail that had a link pays for the look (one process)
      if (this.vnet && (await ifExists(lstat(join(p.dir, 'vnet-link'))))) await this.vnet.unwire(name);
      // Never delete through a mount: rm would walk into the host's files bound there. Nothing is
      // mounted on the host by this driver, but a jail an older one mounted may be: one look.
      let left = await mountsUnder(p.dir);
      if (left.length) {
        await this.unmountUnder('destroy', name, p.dir);
        left = await mountsUnder(p.dir);
      }
      if (left.length) {
        throw new Error(`refusing to remove ${p.dir}: still mounted at ${left.join(', ')}`);
      }
      await rm(p.dir, { recursive: true, force: true });
      this.children.delete(name);
      this.log?.info({ jail: name }, 'jail destroyed');
    });
  }

  async inspect(name: string): Promise<JailInspection> {
    checkJailName('inspect', name);
    const p = await this.paths(name);
    const prepared = (await ifExists(lstat(join(p.root, 'etc', 'passwd')))) !== null || (await this.recordedImage(name)) !== null;
    const mounted = prepared && (await ifExists(lstat(this.planPath(p.dir)))) !== null;
    const running = await this.runningInit(name);
    return { name, prepared, mounted, pid: running?.pid ?? null };
  }

  async list(): Promise<string[]> {
    return (await this.jailDirNames()).sort();
  }

  async exec(spec: JailSpec, argv: string[], options: ExecOptions): Promise<ExecResult> {
    const running = await this.step('exec', spec.name, () => this.runningInit(spec.name));
    if (!running) throw new DriverStepFailed('exec', `jail ${spec.name} is not running`);
    // jailinit itself joins the jail, drops to its capabilities and loads its seccomp filter, as
    // the jail's own command got them: nothing of the host (no setpriv of the host's, which a
    // spec mount could shadow) ever runs inside the jail with the agent's capabilities
    return this.runInJail(spec, this.initPath, ['--seccomp', jailSeccomp(spec), '--enter', String(running.pid), '--', ...argv], options);
  }

  /** Runs `tool args` (which enters the jail itself), bounded in output and time. */
  private async runInJail(spec: JailSpec, tool: string, args: string[], options: ExecOptions): Promise<ExecResult> {
    // Its own process group, so a timeout kills what the tool forked inside the jail too.
    const child = execa(tool, args, {
      detached: true,
      env: spec.env,
      extendEnv: false,
      stdin: 'ignore',
      buffer: false,
      reject: false,
    });
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const size = { stdout: 0, stderr: 0 };
    let truncated = false;
    for (const stream of ['stdout', 'stderr'] as const) {
      child[stream].on('data', (chunk: Buffer) => {
        const room = options.maxOutputBytes - size[stream];
        if (chunk.length > room) truncated = true;
        if (room <= 0) return;
        const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
        out[stream].push(kept);
        size[stream] += kept.length;
      });
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, options.timeoutMs);
    const r = await child.finally(() => clearTimeout(timer));
    if (r.failed && r.exitCode === undefined && !r.signal) {
      throw new DriverStepFailed('exec', `exec in jail ${spec.name} failed: ${r.shortMessage}`, [tool, ...args], '', { cause: r });
    }
    const signo = r.signal ? osConstants.signals[r.signal] : undefined;
    const exitCode = timedOut ? 124 : (r.exitCode ?? (signo ? 128 + signo : 1));
    return {
      exitCode,
      stdout: Buffer.concat(out.stdout).toString('utf8'),
      stderr: Buffer.concat(out.stderr).toString('utf8'),
      truncated,
      timedOut,
    };
  }

  async sessionSpawn(spec: JailSpec, command: SessionCommand): Promise<SessionSpawn> {
    return this.step('exec', spec.name, async () => {
      const running = await this.runningInit(spec.name);
      if (!running) throw new Error('the jail is not running');
      await this.helperReady(this.sessionPath);
      // the session counts against the jail's limits: it joins the jail's cgroup first
      const cgroups = [...new Set(Object.values(await this.cgroups.paths(spec.name)))].flatMap((dir) => ['--cgroup', join(dir, 'cgroup.procs')]);
      const tty = command.tty ? ['--tty', String(command.tty.rows), String(command.tty.cols)] : [];
      // the jail's generated /etc/passwd gives root /bin/sh; -l makes it a login shell
      const argv = command.login ? ['/bin/sh', '-l'] : command.command;
      return {
        argv: [this.sessionPath, '--target', String(running.pid), '--seccomp', jailSeccomp(spec), ...cgroups, ...tty, '--', ...argv],
        env: { ...spec.env, ...(command.tty ? { TERM: command.tty.term } : {}), ...(command.login ? { HOME: '/root', SHELL: '/bin/sh' } : {}) },
      };
    });
  }

  async copySpawn(spec: JailSpec, direction: 'pack' | 'unpack', path: string, maxBytes: number): Promise<SessionSpawn> {
    return this.step('copy', spec.name, async () => {
      const running = await this.runningInit(spec.name);
      if (!running) throw new Error('the jail is not running');
      await this.helperReady(this.fsPath);
      // the init's root is the jail's root with the jail's own mounts (jailfs never leaves it)
      return { argv: [this.fsPath, direction, `/proc/${running.pid}/root`, path, String(maxBytes)], env: TOOL_ENV };
    });
  }

  /** What the jail uses now, from its cgroup; null when it is not running (no cgroup). */
  usage(name: string): Promise<JailUsage | null> {
    checkJailName('inspect', name);
    return this.cgroups.usage(name).catch(() => null);
  }

  /** The jail's cgroup directory in each hierarchy (the same one thrice on cgroup v2). */
  cgroupPaths(name: string): Promise<Record<CgroupController, string>> {
    checkJailName('inspect', name);
    return this.cgroups.paths(name);
  }

  // ---- internals ----

  private async helperReady(path: string): Promise<void> {
    await access(path, fsConstants.X_OK).catch((err) => {
      throw new Error(`the helper ${path} is missing or not executable (build it with: node scripts/setup.mjs)`, { cause: err });
    });
  }

  private async toolPath(name: string): Promise<string> {
    const known = this.tools.get(name);
    if (known) return known;
    for (const dir of TOOL_DIRS) {
      const path = join(dir, name);
      if (await access(path, fsConstants.X_OK).then(() => true, () => false)) {
        this.tools.set(name, path);
        return path;
      }
    }
    throw new Error(`${name} not found in ${TOOL_DIRS.join(', ')} (install util-linux)`);
  }

  /**
   * Runs a batch of mount operations in one jailmount process, in order; stops at the first
   * failure, which names the step, the jail, the argv and stderr.
   */
  private async mountOps(step: DriverStepName, jail: string, ops: MountOp[]): Promise<void> {
    if (ops.length === 0) return;
    const argv = [this.mountPath, ...ops.flat()];
    this.log?.debug({ jail, argv }, 'run');
    const r = await execa(argv[0]!, argv.slice(1), { reject: false, stdin: 'ignore', env: TOOL_ENV, extendEnv: false });
    if (r.failed) {
      const why = r.code === 'ENOENT' ? `${this.mountPath} is missing (build it with: node scripts/setup.mjs)` : r.stderr.trim() || r.shortMessage;
      throw DriverStepFailed.of(step, jail, why ?? `exit code ${r.exitCode}`, { argv, stderr: r.stderr, cause: r });
    }
  }

  /** One base directory of the thin root: a directory (bound read-only at start), or the host's relative symlink. */
  private async prepareBase(root: string, base: string): Promise<void> {
    const st = await ifExists(lstat(`/${base}`));
    if (st?.isSymbolicLink()) await ensureSymlink(join(root, base), await readlink(`/${base}`));
    else if (st?.isDirectory()) await ensureRealDir(root, base);
  }

  /**
   * An image jail's root: the image's digest recorded (once; a restart keeps it), its writable
   * upper and work directories, and the few files a jail needs that an image cannot know (its
   * hostname, hosts, resolv.conf), written in the upper layer.
   */
  private async prepareImageRoot(spec: JailSpec): Promise<void> {
    if (!this.images) throw new Error('this agent has no image cache: it cannot start jails from images');
    const p = await this.paths(spec.name);
    const digest = await this.images.resolve(spec.image!, await this.recordedImage(spec.name));
    // recorded before the fetch: the cache never collects an image a jail's directory names
    await writeFileAtomic(join(p.dir, 'image'), `${digest}\n`, 0o600);
    const rootfs = await this.images.ensure(digest);
    const upper = await ensureRealDir(p.dir, 'upper');
    await ensureRealDir(p.dir, 'work', 0o700);
    for (const dir of ['proc', ...TMPFS_DIRS]) await ensureRealDir(upper, dir);
    const etc = await ensureRealDir(upper, 'etc');
    const { hosts, hostname } = generatedEtc(jailHostname(spec));
    const files: Record<string, string> = { hosts, hostname };
    const resolv = await readFile('/etc/resolv.conf', 'utf8').catch(() => null);
    if (resolv !== null) files['resolv.conf'] = resolv;
    for (const [file, content] of Object.entries(files)) await writeFileAtomic(join(etc, file), content);
    this.log?.info({ jail: spec.name, image: digest, lower: rootfs }, 'jail image root prepared');
  }



  /** An image jail's overlay directories, its image fetched again if the cache lost it; null when not prepared. */
  private async overlayOf(name: string): Promise<OverlayRoot | null> {
    const digest = await this.recordedImage(name);
    if (!digest || !this.images) return null;
    const p = await this.paths(name);
    const rootfs = await this.images.ensure(digest);
    for (const dir of [rootfs, join(p.dir, 'upper'), join(p.dir, 'work')]) {
      // overlay's options are comma-separated and colon-separated: a path must hold neither
      if (/[,:\\]/.test(dir)) throw new Error(`${dir}: an overlay directory must not contain ",", ":" or "\\"`);
    }
    return { lower: rootfs, upper: join(p.dir, 'upper'), work: join(p.dir, 'work') };
  }

  private planPath(dir: string): string {
    return join(dir, 'mount-plan.json');
  }

  /** Where wait() keeps a dead jail's OOM kill count once its cgroup is gone. */
  private oomPath(dir: string): string {
    return join(dir, 'oom-kills');
  }

  private async readPlan(dir: string): Promise<MountOp[] | null> {
    const text = await ifExists(readFile(this.planPath(dir), 'utf8'));
    if (text === null) return null;
    const plan = JSON.parse(text) as unknown;
    if (!Array.isArray(plan) || !plan.every((op) => Array.isArray(op) && op.length === 4 && op.every((a) => typeof a === 'string' && a !== '--'))) {
      throw new Error(`${this.planPath(dir)} is not a mount plan: run the mount step again`);
    }
    return plan as MountOp[];
  }

  /**
   * The jail's mounts in the order jailinit makes them in its namespace: the root onto itself
   * (pivot_root wants a mount point), the read-only base, /dev's tmpfs with its nodes, devpts and
   * shm, /tmp's tmpfs, then the spec's mounts, parents first. Every target outside a tmpfs is
   * checked and made here, on the host, inside the root; one inside a tmpfs is made by jailinit
   * in that fresh tmpfs, and one inside an earlier user mount is made in that mount's source.
   */
  private async mountPlan(jail: string, root: string, mounts: JailSpec['mounts'], overlay: OverlayRoot | null, policed: ReadonlySet<object>): Promise<MountOp[]> {
    // where the root's directories are made on the host: the root itself, or an image jail's
    // upper directory (the overlay shows it at the root once jailinit has mounted it)
    const made = overlay?.upper ?? root;
    const realDir = async (rel: string) => {
      await ensureRealDir(made, rel);
      return join(root, rel);
    };
    const plan: MountOp[] = [];
    if (overlay) {
      plan.push(['overlay', `lowerdir=${overlay.lower},upperdir=${overlay.upper},workdir=${overlay.work}`, root, 'nodev']);
    } else {
      plan.push(['bind', root, root, '-']);
      for (const base of BASE_DIRS) {
        const st = await ifExists(lstat(`/${base}`));
        if (st?.isDirectory()) plan.push(['bind', `/${base}`, await realDir(base), 'ro']);
      }
    }
    const dev = await realDir('dev');
    plan.push(['tmpfs', 'mode=755,size=1m', dev, 'nosuid,nodev,noexec']);
    for (const node of DEV_NODES) {
      if (!(await lstat(`/dev/${node}`)).isCharacterDevice()) throw new Error(`/dev/${node} of the host is not a character device`);
      plan.push(['file', '-', join(dev, node), '-'], ['bind', `/dev/${node}`, join(dev, node), '-']);
    }
    plan.push(['mkdir', '755', join(dev, 'pts'), '-'], ['devpts', 'newinstance,ptmxmode=0666,mode=0620', join(dev, 'pts'), 'nosuid,noexec']);
    plan.push(['mkdir', '755', join(dev, 'shm'), '-'], ['tmpfs', `mode=1777,${SHM_TMPFS_SIZE}`, join(dev, 'shm'), 'nosuid,nodev']);
    for (const [link, target] of Object.entries(DEV_LINKS)) plan.push(['symlink', target, join(dev, link), '-']);
    plan.push(['tmpfs', `mode=1777,${TMP_TMPFS_SIZE}`, await realDir('tmp'), 'nosuid,nodev']);
    await realDir('proc');

    const data = await this.dataDir();
    const placed: { segs: string[]; source: string }[] = [];
    for (const m of parentsFirst(mounts)) {
      const refuse = (why: string): never => {
        throw new DriverStepFailed('mount', `mount ${m.source} -> ${m.target} of jail ${jail} refused: ${why}`);
      };
      // a spec mount under the host's policy is made by jailinit beneath its prefix, never through a symlink
      const beneath = this.mountSources && policed.has(m) ? await allowedMountSource(this.mountSources, m.source, refuse) : null;
      const source = await ifExists(realpath(m.source));
      if (source === null) return refuse('the source does not exist');
      await checkMountSource(source, data, refuse);
      const isDir = (await stat(source)).isDirectory();
      const segs = m.target.split('/').filter(Boolean);
      const target = join(root, ...segs);
      // the deepest earlier mount that holds this target: its source is what the target lies in
      const parent = placed.filter((o) => o.segs.length < segs.length && o.segs.every((s, i) => segs[i] === s)).at(-1);
      if (parent) {
        await resolveMountTarget(parent.source, `/${segs.slice(parent.segs.length).join('/')}`, isDir, refuse);
      } else if (segs.length > 1 && TMPFS_DIRS.includes(segs[0]!)) {
        for (let i = 2; i < segs.length; i++) plan.push(['mkdir', '755', join(root, ...segs.slice(0, i)), '-']);
        plan.push(isDir ? ['mkdir', '755', target, '-'] : ['file', '-', target, '-']);
      } else if (!(segs.length === 1 && TMPFS_DIRS.includes(segs[0]!) && isDir)) {
        await resolveMountTarget(made, m.target, isDir, refuse);
      }
      plan.push(beneath ? ['beneath', `${beneath.prefix}//${beneath.rel}`, target, m.readOnly ? 'ro' : '-'] : ['bind', source, target, m.readOnly ? 'ro' : '-']);
      if (isDir) placed.push({ segs, source });
    }
    return plan;
  }

  /** Unmounts everything at or under `dir`, deepest first; lazily when a mount is busy. */
  private async unmountUnder(step: DriverStepName, jail: string, dir: string): Promise<void> {
    // mount ids rise with mount order: the later of two mounts at one depth goes first
    const under = async () => unmountOrder(await mountsUnder(dir));
    for (let left = await under(); left.length; ) {
      let failure: unknown = null;
      // deepest first, in one process; jailmount detaches a busy mount instead
      await this.mountOps(step, jail, left.map((node): MountOp => ['umount', '-', node, '-'])).catch((err: unknown) => (failure = err));
      const before = left.length;
      left = await under();
      // A mount hidden under another one comes free once that one is gone: go round again,
      // as long as every round releases something.
      if (left.length >= before) throw failure ?? new Error(`cannot unmount ${left.join(', ')}`);
    }
  }

  /**
   * True once `pid` runs the jail init and has blocked the signals it forwards: from then on a
   * SIGTERM is kept for the command, where before it would be dropped (pid 1 ignores signals
   * it has no handler for).
   */
  private async initReady(pid: number): Promise<boolean> {
    const comm = await ifExists(readFile(`/proc/${pid}/comm`, 'utf8'));
    if (comm?.trim() !== basename(this.initPath).slice(0, 15)) return false;
    const status = (await ifExists(readFile(`/proc/${pid}/status`, 'utf8'))) ?? '';
    const blocked = /^SigBlk:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    return blocked !== undefined && (BigInt(`0x${blocked}`) & (1n << BigInt(osConstants.signals.SIGTERM - 1))) !== 0n;
  }

  private async readPidRecord(path: string): Promise<PidRecord | null> {
    const text = await ifExists(readFile(path, 'utf8'));
    if (text === null) return null;
    try {
      const r = JSON.parse(text) as PidRecord;
      return Number.isInteger(r.pid) && typeof r.startTime === 'string' ? r : null;
    } catch {
      return null;
    }
  }

  /**
   * The exit code of the jail whose init was `pid`, once that init is gone: what jailinit
   * recorded, or 137 when it recorded nothing (pid 1 of a pid namespace blocks or handles
   * every other signal, so only SIGKILL ends it without a word); null when the files are
   * about another run, or there are none.
   */
  private async exitCodeOf(name: string, pid: number): Promise<number | null> {
    const p = await this.paths(name);
    const record = await this.readPidRecord(p.pid);
    if (record && record.pid !== pid) return null;
    const code = await this.readExitCode(p.exitCode);
    return code ?? (record ? SIGKILL_CODE : null);
  }

  private async readExitCode(path: string): Promise<number | null> {
    const text = (await ifExists(readFile(path, 'utf8')))?.trim();
    return text && /^\d+$/.test(text) ? Number(text) : null;
  }

  /**
   * Once the jail whose init was `pid` is gone: its cgroup's OOM kill count, kept in a file, and
   * the cgroup removed, so a dead jail leaves no cgroup behind. In step with start, so a new
   * run's fresh cgroup is never the one removed; a later wait() reads the kept count.
   */
  private async releaseCgroup(name: string, pid: number): Promise<number> {
    return this.step('stop', name, async () => {
      const p = await this.paths(name);
      const kept = await this.readExitCode(this.oomPath(p.dir));
      if ((await this.readPidRecord(p.pid))?.pid !== pid) return kept ?? 0;
      // the cgroup is made afresh at each start: its kills are this run's
      const live = await this.cgroups.oomKills(name).catch(() => null);
      if (live === null) return kept ?? 0;
      await writeFileAtomic(this.oomPath(p.dir), `${live}\n`, 0o600);
      await this.cgroups.remove(name);
      return live;
    }).catch((err: unknown) => {
      this.log?.warn({ jail: name, pid, err }, 'cannot release the cgroup of a dead jail');
      return 0;
    });
  }

  /** The recorded init of a jail, if it still runs (same pid and start time). */
  private async runningInit(name: string): Promise<PidRecord | null> {
    const record = await this.readPidRecord((await this.paths(name)).pid);
    return record && (await isAlive(record.pid, record.startTime)) ? record : null;
  }

  /** SIGTERM, SIGKILL after `graceMs`, until the init is gone; the jail's exit code. */
  private async stopInit(name: string, graceMs: number): Promise<{ exitCode: number | null }> {
    const p = await this.paths(name);
    const record = await this.runningInit(name);
    let killed = false;
    if (record) {
      const gone = async (ms: number) => {
        for (const until = Date.now() + ms; Date.now() < until; await sleep(50)) {
          if (!(await isAlive(record.pid, record.startTime))) return true;
        }
        return !(await isAlive(record.pid, record.startTime));
      };
      const signal = (sig: NodeJS.Signals) => {
        try {
          process.kill(record.pid, sig);
        } catch (err) {
          if (errCode(err) !== 'ESRCH') throw err;
        }
      };
      signal('SIGTERM');
      if (!(await gone(graceMs))) {
        this.log?.warn({ jail: name, pid: record.pid, graceMs }, 'jail ignored SIGTERM: SIGKILL');
        signal('SIGKILL');
        killed = true;
        if (!(await gone(KILL_WAIT_MS))) throw new Error(`its init (pid ${record.pid}) survived SIGKILL for ${KILL_WAIT_MS} ms`);
      }
      this.log?.info({ jail: name, pid: record.pid }, 'jail stopped');
    }
    if (killed && (await this.readExitCode(p.exitCode)) === null) {
      // A SIGKILLed init writes nothing: record it, so every later reader sees the same code.
      await writeFileAtomic(p.exitCode, `${SIGKILL_CODE}\n`);
    }
    const last = await this.readPidRecord(p.pid);
    return { exitCode: last ? await this.exitCodeOf(name, last.pid) : null };
  }
}
