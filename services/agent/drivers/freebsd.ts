// The freebsd driver: a jail is a FreeBSD jail(8) whose root is a thin base (read-only nullfs
// mounts of the host's bin, sbin, lib, libexec and usr, or a zfs clone of a base snapshot) with a
// generated /etc, a devfs /dev restricted by a ruleset, a tmpfs /tmp and the spec's nullfs mounts.
// A jail with an `image` is a thin jail of that image instead: the image's bin, sbin, lib, libexec
// and usr (those it has) nullfs-mounted read-only from the agent's image cache, every other
// top-level directory of the image copied once into the jail's root (`cp -Rp`) as its own
// writable directories, kept across stop/start and removed by destroy; its /etc is the image's,
// with the jail's hosts and resolv.conf. With a zfs dataset, an image jail's root is instead a
// clone of a snapshot of the unpacked image (`<dataset>/_images/<hex>@jailfleet`, made once per
// image): its writable layer is the clone, kept across stop/start, destroyed with the jail. Host
// volumes (`--volume`) are nullfs mounts like the spec's, read-only with `-o ro`.
// Every tool runs through the injected CommandRunner as an argv array: there is no shell anywhere,
// so a hostile name or argument can never be parsed as shell syntax. It must never make the
// driver's data directory visible inside a jail, never mount over a path a jail could have
// redirected with a symlink, and never delete files through a mount.
//
// Every argv below was checked against the FreeBSD 14 manual pages named next to its builder.
import { lstat, readFile, readdir, realpath, rm, unlink } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import { z } from 'zod';
import { jailHostname, nameSchema, type ExecResult, type JailSpec, type Resources } from '../../../contracts/index.js';
import { DriverStepFailed, type DriverStepName, type ExecOptions, type ImageSource, type JailDriver, type JailExit, type JailInspection, type SessionCommand, type SessionSpawn } from './driver.js';
import { DriverBase, parentsFirst, unmountOrder, volumeMountsOf, type DriverLogger, type HostVolumes } from './driver-base.js';
import { abortError, ensureRealDir, ifExists, isWithin, sleep, writeFileAtomic } from './host-files.js';
import { checkJailName } from './jail-steps.js';

/** Runs one program (argv[0], looked up in a fixed PATH) with arguments; never through a shell. */
export type CommandRunner = (
  argv: string[],
  opts?: { input?: string; timeoutMs?: number; maxOutputBytes?: number },
) => Promise<{ exitCode: number; stdout: string; stderr: string; timedOut?: boolean; truncated?: boolean }>;

export interface FreebsdDriverOptions {
  /** Where the driver keeps its state: `${dataDir}/jails/<name>/`. Never visible inside a jail. */
  dataDir: string;
  /** The thin base: its bin, sbin, lib, libexec and usr are nullfs-mounted read-only. Default '/'. */
  base?: string;
  /** The devfs(8) ruleset of a jail's /dev; default 4 (devfsrules_jail of /etc/defaults/devfs.rules). */
  devfsRuleset?: number;
  /**
   * A parent dataset: when set, `<zfsDataset>/base` holds the base system, `<zfsDataset>/base@jailfleet`
   * is its snapshot, and each jail's root is the clone `<zfsDataset>/<name>` instead of nullfs mounts.
   */
  zfsDataset?: string;
  /** Where image jails' roots come from (the agent's image cache). */
  images?: ImageSource;
  /** Host volumes this agent offers (`--volume`), nullfs-mounted where a spec asks for them. */
  volumes?: HostVolumes;
  /** The session helper (native/jailsession.c, built without --target on FreeBSD); default /usr/local/libexec/jailfleet/jailsession. */
  sessionPath?: string;
  /** The cp helper (native/jailfs.c, `cc -o jailfs jailfs.c -ljail` on FreeBSD); default /usr/local/libexec/jailfleet/jailfs. */
  fsPath?: string;
  run?: CommandRunner;
  logger?: DriverLogger;
}

/** Host directories a thin root borrows read-only (the FreeBSD base system outside /etc and /var). */
const BASE_DIRS = ['bin', 'sbin', 'lib', 'libexec', 'usr'] as const;
const BASE_SNAPSHOT = 'jailfleet';
/** The environment of the driver's own tools: fixed, so lookups and messages are predictable. */
const TOOL_ENV = { PATH: '/sbin:/bin:/usr/sbin:/usr/bin', LC_ALL: 'C' };
const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;
const POLL_MS = 100;
/** How long start() waits for daemon(8) to write the pid file and the command to enter the jail. */
const START_WAIT_MS = 10_000;
/** The exit code of exec() when its timeout killed the command (as timeout(1) reports it). */
const TIMEOUT_EXIT_CODE = 124;

// ---- argv builders (pure) ----

/** jls(8): `--libxo json` (xo_options(7)), `-v` adds name and state, `-j` selects one jail by name. */
const jlsArgv = (name?: string) => ['jls', '--libxo', 'json', '-v', ...(name === undefined ? [] : ['-j', name])];

/**
 * jail(8) "Jail Parameters": `-c` creates from command-line parameters (jail.conf(5) is not read);
 * `persist` lets the jail exist without processes; `ip4`/`ip6` are `inherit` (all host addresses) or
 * `disable` ("stop the jail from using IPv4 entirely"), which with no ip4.addr/ip6.addr leaves a
 * jail with no network at all.
 */
function jailCreateArgv(name: string, root: string, hostname: string, network: 'inherit' | 'none'): string[] {
  const ip = network === 'none' ? ['ip4=disable', 'ip6=disable'] : ['ip4=inherit', 'ip6=inherit'];
  return ['jail', '-c', `name=${name}`, `path=${root}`, `host.hostname=${hostname}`, ...ip, ...JAIL_CONFINEMENT, 'persist'];
}

/**
 * What root in a jail may not do: the counterpart of the linux driver's seccomp filter and
 * capability cut (native/jail-seccomp.h, jail-caps.h), set on every jail whatever its spec's
 * `security` says (the linux-only `seccomp: unconfined` has no equivalent here). jail(8) "Jail
 * Parameters", each spelled out although most are off by default, so a host whose
 * security.jail.* sysctls turned one on still gets a confined jail:
 * - `allow.*=false`: no sethostname(2), no System V IPC shared with the host, no raw sockets, no
 *   chflags(2) of system flags, no mount(2) of any filesystem, no mlock(2), no quotas, no socket
 *   of a family other than UNIX, IPv4, IPv6 and route;
 * - `enforce_statfs=2`: "only mount points below the jail's chroot directory are visible";
 * - `securelevel=2`: "the jail's securelevel ... can only be raised", and security(7)'s highly
 *   secure mode forbids loading kernel modules, writing raw disks and stepping the clock;
 * - `children.max=0`: no jail inside the jail.
 */
const JAIL_CONFINEMENT = [
  'allow.set_hostname=false', 'allow.sysvipc=false', 'allow.raw_sockets=false', 'allow.chflags=false',
  'allow.mount=false', 'allow.mlock=false', 'allow.quotas=false', 'allow.socket_af=false',
  'enforce_statfs=2', 'securelevel=2', 'children.max=0',
];

/**
 * jail(8) `-R`: "removes an existing jail without using the configuration file ... the jail will
 * simply be removed" (jail_remove(2) kills every process left). Not `-r`: that would read
 * /etc/jail.conf (running exec.stop of a same-named entry there) and wait stop.timeout (10 s) again
 * after stop() has already given the jail its spec.stopTimeoutMs.
 */
const jailRemoveArgv = (name: string) => ['jail', '-R', name];

/**
 * A session's process (`jailfleet exec -i/-t`, `console`): native/jailsession.c, which makes the
 * pseudo-terminal on the host (devfs ruleset 4 shows /dev/pts in the jail) and relays it, around
 * jexec(8). A command runs as in exec() (`-l -U root`, env -i with the spec's environment and
 * TERM); the console is jexec without a command: "If command is not specified then the user's
 * shell is used", with -l a login environment. The jail's rctl rules (`jail:<name>`) count it.
 */
export function jexecSessionArgv(sessionPath: string, name: string, env: Record<string, string>, command: SessionCommand): string[] {
  const tty = command.tty ? ['--tty', String(command.tty.rows), String(command.tty.cols)] : [];
  const inner = command.login
    ? ['jexec', '-l', '-U', 'root', name]
    : jexecCommandArgv(name, { ...env, ...(command.tty ? { TERM: command.tty.term } : {}) }, command.command);
  return [sessionPath, ...tty, '--', ...inner];
}

/** jexec(8) without -l/-u/-U: runs as the host's root, in the jail, from its root directory. */
const jexecKillAllArgv = (name: string) => ['jexec', name, '/bin/kill', '-TERM', '-1'];

/**
 * jexec(8): `-l` "execute in a clean environment", `-U root` the jail's own root user (from its
 * pwd.db, which prepare() builds). env(1) `-i`: "execute the utility with only those environment
 * variables specified by name=value options", so the command sees the spec's env and nothing else.
 */
function jexecCommandArgv(name: string, env: Record<string, string>, command: string[]): string[] {
  return ['jexec', '-l', '-U', 'root', name, '/usr/bin/env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...command];
}

/**
 * daemon(8), run on the host: `-f` stdio to /dev/null (then `-o` takes stdout and stderr), `-c` cwd
 * "/", `-o` appends the output to a file, `-p` writes "the ID of the created process" and removes it
 * "after the process exits". `--` ends daemon's options, so the command's own flags are never
 * read as daemon's. The created process is jexec, which execs env, which execs the command: one
 * host pid, the jail's main process. See start() for why daemon runs on the host.
 */
const daemonArgv = (pidFile: string, consoleFile: string, command: string[]) =>
  ['daemon', '-f', '-c', '-o', consoleFile, '-p', pidFile, '--', ...command];

/** pgrep(1) `-j jail`: "restrict matches to processes inside the specified jails"; exit 1 when none. */
const pgrepArgv = (name: string) => ['pgrep', '-j', name];

/** mount(8) `-p`: "print mount information in fstab(5) format". */
const mountListArgv = () => ['mount', '-p'];

/** mount_nullfs(8) `[-o options] target mount-point`; `-o ro` per mount(8). */
const nullfsArgv = (source: string, target: string, readOnly: boolean) =>
  ['mount_nullfs', ...(readOnly ? ['-o', 'ro'] : []), source, target];

/**
 * mount(8) `-t devfs` with devfs(5)'s `ruleset=` option, which "set[s] ruleset number ruleset as the
 * current ruleset for the mount-point and appl[ies] all its rules" — as jail(8)'s own mount.devfs
 * does (`mount -t devfs -oruleset=4`), so nodes created later are filtered too and the mount never
 * exists unrestricted.
 */
const devfsMountArgv = (dev: string, ruleset: number) => ['mount', '-t', 'devfs', '-o', `ruleset=${ruleset}`, 'devfs', dev];

/** devfs(8) `-m mount-point rule -s ruleset applyset`: "apply all the rules in the ruleset". */
const devfsApplyArgv = (dev: string, ruleset: number) => ['devfs', '-m', dev, 'rule', '-s', String(ruleset), 'applyset'];

/** devfs(8) `rule showsets`: "report the numbers of existing rulesets". */
const devfsShowsetsArgv = () => ['devfs', 'rule', 'showsets'];

/** tmpfs(5) `mount -t tmpfs tmpfs /tmp`; `mode` of the root inode, mount(8) `nosuid`. */
const tmpfsArgv = (tmp: string) => ['mount', '-t', 'tmpfs', '-o', 'mode=1777,nosuid', 'tmpfs', tmp];

/** umount(8) `[-f] node`: `-f` "the file system is forcibly unmounted". */
const umountArgv = (node: string, force = false) => ['umount', ...(force ? ['-f'] : []), node];

/**
 * pwd_mkdb(8) `-p -d directory file`: builds pwd.db and spwd.db (what getpwnam(3), hence `jexec -U`,
 * reads; a passwd file alone is not enough on FreeBSD) and the V7 passwd into the jail's etc.
 */
const pwdMkdbArgv = (etc: string) => ['pwd_mkdb', '-p', '-d', etc, join(etc, 'master.passwd')];

/** zfs-list(8) `-H` (scripting mode) `-o name`, `-t snapshot`; exit 1 when the dataset does not exist. */
const zfsListArgv = (dataset: string, snapshot = false) =>
  ['zfs', 'list', '-H', '-o', 'name', ...(snapshot ? ['-t', 'snapshot'] : []), dataset];
/** zfs-snapshot(8) `zfs snapshot filesystem@snapname`. */
const zfsSnapshotArgv = (snapshot: string) => ['zfs', 'snapshot', snapshot];
/** zfs-clone(8) `zfs clone [-o property=value] snapshot filesystem`; mountpoint per zfsprops(7). */
const zfsCloneArgv = (snapshot: string, dataset: string, mountpoint: string) =>
  ['zfs', 'clone', '-o', `mountpoint=${mountpoint}`, snapshot, dataset];
/** zfs-mount(8) `zfs mount filesystem`. */
const zfsMountArgv = (dataset: string) => ['zfs', 'mount', dataset];
/** zfs-destroy(8) `zfs destroy filesystem`. */
const zfsDestroyArgv = (dataset: string) => ['zfs', 'destroy', dataset];
/**
 * zfs-create(8) `zfs create [-o property=value]… filesystem`, one property (zfsprops(7)): the
 * images' parent gets `canmount=off` (it holds nothing itself), an image's dataset its
 * `mountpoint=`. Not `-p`: "any property specified on the command line using the -o option is
 * ignored" for the parents it creates.
 */
const zfsCreateArgv = (dataset: string, property: string) => ['zfs', 'create', '-o', property, dataset];
/** zfs-destroy(8) `-r`: "recursively destroy all children" (an interrupted image copy and any snapshot of it). */
const zfsDestroyTreeArgv = (dataset: string) => ['zfs', 'destroy', '-r', dataset];
/**
 * cp(1) `-R -p` of a directory's contents: "If the source_file ends in a /, the contents of the
 * directory are copied rather than the directory itself"; symlinks are copied as symlinks.
 */
const cpContentsArgv = (sourceDir: string, targetDir: string) => ['cp', '-Rp', `${sourceDir.replace(/\/+$/, '')}/`, targetDir];

/** rctl(8) `-r filter`: "remove rules matching filter"; jail rules outlive the jail otherwise. */
const rctlRemoveArgv = (name: string) => ['rctl', '-r', `jail:${name}`];

/**
 * rctl(8) `-a` rules `subject:subject-id:resource:action=amount` for a jail: memoryuse ("resident
 * set size, in bytes"), pcpu ("%CPU, in percents of a single CPU core"), maxproc ("number of
 * processes"), each with action deny. RCTL needs kern.racct.enable=1 (a loader tunable).
 */
export function rctlRules(name: string, limits: { memoryMB?: number; cpuPercent?: number; maxProcs?: number }): string[][] {
  if (!nameSchema.safeParse(name).success) throw new Error(`invalid jail name ${JSON.stringify(name)}`);
  const positiveInt = (what: string, n: number) => {
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${what} must be a positive integer, got ${n}`);
    return n;
  };
  const rules: string[][] = [];
  if (limits.memoryMB !== undefined) {
    rules.push(['rctl', '-a', `jail:${name}:memoryuse:deny=${positiveInt('memoryMB', limits.memoryMB) * 1024 * 1024}`]);
  }
  if (limits.cpuPercent !== undefined) rules.push(['rctl', '-a', `jail:${name}:pcpu:deny=${positiveInt('cpuPercent', limits.cpuPercent)}`]);
  if (limits.maxProcs !== undefined) rules.push(['rctl', '-a', `jail:${name}:maxproc:deny=${positiveInt('maxProcs', limits.maxProcs)}`]);
  return rules;
}

/** A spec's resources as rctl limits: cores become percent of one core (0.5 → 50, at least 1). */
export const rctlLimitsOf = (r: Resources) => ({ memoryMB: r.memoryMB, cpuPercent: Math.max(1, Math.round(r.cpu * 100)), maxProcs: r.maxProcs });

// ---- parsers of tool output ----

const jlsJsonSchema = z.object({
  'jail-information': z.object({
    jail: z
      .array(
        z.object({
          jid: z.coerce.number().int(),
          name: z.string().optional(),
          hostname: z.string().optional(),
          path: z.string().optional(),
          state: z.string().optional(),
        }),
      )
      .default([]),
  }),
});

export interface JlsJail {
  jid: number;
  name: string;
  hostname: string;
  path: string;
  dying: boolean;
}

/**
 * Parses `jls --libxo json [-v]`: `{"__version": "2", "jail-information": {"jail": [{"jid": 1,
 * "hostname": ..., "path": ..., "name": ..., "state": "ACTIVE"}]}}` (jls.c, JLS_XO_VERSION "2").
 * A jail without a name is named by its jid, as jail(8) says.
 */
export function parseJlsJson(text: string): JlsJail[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`jls printed no valid JSON: ${text.slice(0, 200)}`, { cause: err });
  }
  const parsed = jlsJsonSchema.safeParse(json);
  if (!parsed.success) throw new Error(`jls printed JSON of an unknown shape: ${parsed.error.message}`);
  return parsed.data['jail-information'].jail.map((j) => ({
    jid: j.jid,
    name: j.name ?? String(j.jid),
    hostname: j.hostname ?? '',
    path: j.path ?? '',
    dying: j.state === 'DYING',
  }));
}

/**
 * The mount table from `mount -p`: fstab(5) lines "special node type options dump pass". mount(8)
 * does not escape blanks there, so each line keeps "special node" together and a node is found as
 * a path that follows a blank (our nodes are absolute paths under the data directory, and no
 * source may lie there).
 */
class MountTable {
  private readonly heads: string[];

  constructor(text: string) {
    this.heads = text
      .split('\n')
      .map((line) => line.replace(/\s+\S+\s+\S+\s+\S+\s+\S+\s*$/, ''))
      .filter((head) => head.trim() !== '');
  }

  has(path: string): boolean {
    return this.heads.some((h) => h.endsWith(` ${path}`) || h.endsWith(`\t${path}`));
  }

  /** Mount points at or under `dir`, in mount order. */
  under(dir: string): string[] {
    const found: string[] = [];
    for (const h of this.heads) {
      const m = new RegExp(`[ \\t](${escapeRegExp(dir)}(?:/.*)?)$`).exec(h);
      if (m) found.push(m[1]);
    }
    return found;
  }
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---- the default runner ----

function collect(stream: Readable | null | undefined, cap: number) {
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  stream?.on('data', (chunk: Buffer) => {
    const room = cap - size;
    if (chunk.length > room) truncated = true;
    if (room <= 0) return;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    chunks.push(kept);
    size += kept.length;
  });
  return () => ({ text: Buffer.concat(chunks).toString('utf8'), truncated });
}

/** The real runner: execa with an argv array (never a shell), a fixed environment, output capped. */
export const execaRunner: CommandRunner = async (argv, opts = {}) => {
  const cap = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const child = execa(argv[0], argv.slice(1), {
    reject: false,
    buffer: false,
    env: TOOL_ENV,
    extendEnv: false,
    ...(opts.input === undefined ? { stdin: 'ignore' as const } : { input: opts.input }),
    ...(opts.timeoutMs === undefined ? {} : { timeout: opts.timeoutMs }),
    killSignal: 'SIGKILL',
  });
  const out = collect(child.stdout, cap);
  const err = collect(child.stderr, cap);
  const r = await child;
  const stdout = out();
  const stderr = err();
  const truncated = stdout.truncated || stderr.truncated;
  if (r.timedOut) return { exitCode: TIMEOUT_EXIT_CODE, stdout: stdout.text, stderr: stderr.text, timedOut: true, truncated };
  if (typeof r.exitCode === 'number') return { exitCode: r.exitCode, stdout: stdout.text, stderr: stderr.text, truncated };
  const signo = r.signal ? osConstants.signals[r.signal] : undefined;
  if (signo) return { exitCode: 128 + signo, stdout: stdout.text, stderr: stderr.text, truncated };
  // Could not run at all (e.g. ENOENT): report it like a shell would, with execa's reason.
  return { exitCode: 127, stdout: stdout.text, stderr: stderr.text || (r.shortMessage ?? ''), truncated };
};

/** The generated /etc of a jail: enough for libc and jexec -U root, nothing of the host's. */
function generatedEtc(hostname: string): Record<string, { content: string; mode: number }> {
  return {
    // passwd(5): name:password:uid:gid:class:change:expire:gecos:home_dir:shell
    'master.passwd': {
      content: 'root:*:0:0::0:0:root:/root:/bin/sh\nnobody:*:65534:65534::0:0:Unprivileged user:/nonexistent:/usr/sbin/nologin\n',
      mode: 0o600,
    },
    passwd: { content: 'root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:Unprivileged user:/nonexistent:/usr/sbin/nologin\n', mode: 0o644 },
    group: { content: 'wheel:*:0:root\nnogroup:*:65533:\nnobody:*:65534:\n', mode: 0o644 },
    hosts: { content: `::1\t\tlocalhost\n127.0.0.1\tlocalhost\n127.0.0.1\t${hostname}\n`, mode: 0o644 },
    hostname: { content: `${hostname}\n`, mode: 0o644 },
  };
}

/** Runs jails with jail(8), jexec(8), nullfs, devfs and (optionally) zfs clones on a FreeBSD host, as root. */
export class FreebsdDriver extends DriverBase implements JailDriver {
  readonly kind = 'freebsd' as const;
  private readonly base: string;
  private readonly devfsRuleset: number;
  private readonly zfsDataset: string | undefined;
  private readonly runner: CommandRunner;
  private readonly images: ImageSource | undefined;
  private readonly sessionPath: string;
  private readonly fsPath: string;
  private readonly volumes: HostVolumes;
  /** Image snapshots being made now, by digest: two jails of one image share one copy. */
  private readonly snapshotsBeingMade = new Map<string, Promise<string>>();

  constructor(options: FreebsdDriverOptions) {
    super(options.dataDir, options.logger);
    this.base = options.base ?? '/';
    this.devfsRuleset = options.devfsRuleset ?? 4;
    if (!Number.isInteger(this.devfsRuleset) || this.devfsRuleset < 1) {
      throw new Error(`devfsRuleset must be a positive integer (0 is the unrestricted ruleset), got ${options.devfsRuleset}`);
    }
    this.zfsDataset = options.zfsDataset?.replace(/\/+$/, '');
    this.runner = options.run ?? execaRunner;
    this.images = options.images;
    this.volumes = options.volumes ?? new Map();
    this.sessionPath = options.sessionPath ?? '/usr/local/libexec/jailfleet/jailsession';
    this.fsPath = options.fsPath ?? '/usr/local/libexec/jailfleet/jailfs';
  }

  async prepare(spec: JailSpec): Promise<void> {
    await this.step('prepare', spec.name, async () => {
      const p = await this.paths(spec.name);
      // Never write into the root of a running jail: its processes could swap a directory for a
      // symlink between our check and a write. A running jail was prepared already.
      if (await this.jail(spec.name)) return;
      await this.saveSpec(spec);
      if (spec.image) {
        await this.prepareImageRoot(spec);
        return;
      }

      if (this.zfsDataset) await this.prepareZfsRoot(spec.name, p.root);
      else await this.prepareNullfsRoot(spec.name, p.root);

      const etc = await ensureRealDir(p.root, 'etc');
      // Only files the driver writes live here; drop any symlink a jail left, before pwd_mkdb writes.
      for (const entry of await readdir(etc, { withFileTypes: true })) {
        if (entry.isSymbolicLink()) await unlink(join(etc, entry.name));
      }
      const files = generatedEtc(jailHostname(spec));
      const resolv = await readFile('/etc/resolv.conf', 'utf8').catch(() => null);
      if (resolv !== null) files['resolv.conf'] = { content: resolv, mode: 0o644 };
      for (const [file, { content, mode }] of Object.entries(files)) await writeFileAtomic(join(etc, file), content, mode);
      await this.tool('prepare', spec.name, pwdMkdbArgv(etc));
      for (const dir of ['dev', 'tmp', 'var/run', 'var/log']) await ensureRealDir(p.root, dir);
      await ensureRealDir(p.root, 'root', 0o700);
      this.log?.info({ jail: spec.name, root: p.root }, 'jail root prepared');
    });
  }

  async mount(spec: JailSpec): Promise<void> {
    await this.step('mount', spec.name, async () => {
      const p = await this.paths(spec.name);
      const mounts = await this.mountTable('mount', spec.name);
      if (!this.rootMounted(p.root, mounts, await this.imageBase(spec.name))) throw new Error(`the root of jail ${spec.name} is not prepared (${p.root} is not mounted)`);

      const sets = (await this.tool('mount', spec.name, devfsShowsetsArgv())).stdout.split(/\s+/).filter(Boolean);
      if (!sets.includes(String(this.devfsRuleset))) {
        throw new Error(`devfs ruleset ${this.devfsRuleset} is not loaded (run: service devfs restart); refusing an unrestricted /dev`);
      }
      const dev = await ensureRealDir(p.root, 'dev');
      if (!mounts.has(dev)) await this.tool('mount', spec.name, devfsMountArgv(dev, this.devfsRuleset));
      await this.tool('mount', spec.name, devfsApplyArgv(dev, this.devfsRuleset));
      const tmp = await ensureRealDir(p.root, 'tmp');
      if (!mounts.has(tmp)) await this.tool('mount', spec.name, tmpfsArgv(tmp));

      for (const m of parentsFirst([...spec.mounts, ...volumeMountsOf(spec, this.volumes)])) {
        const checked = await this.userMount(spec.name, p.root, m, (path) => mounts.has(path));
        if (checked) await this.tool('mount', spec.name, nullfsArgv(checked.source, checked.target, checked.readOnly));
      }
      this.log?.info({ jail: spec.name, mounts: spec.mounts.length }, 'jail mounts made');
    });
  }

  /**
   * Creates a persistent jail, then runs the command in it detached. daemon(8) runs on the host and
   * execs `jexec ... env -i ... command`: jexec and env exec without forking, so the pid daemon
   * writes is the host pid of the command itself (jails share the host's pid space), and the pid
   * file and console log live in the driver's directory, which nothing in the jail can reach or
   * forge. (daemon(8) inside the jail would write them into the jail's own, writable root.)
   * The supervising daemon outlives the agent; a restarted agent finds the jail with jls and its
   * pid in the pid file.
   */
  async start(spec: JailSpec): Promise<{ pid: number }> {
    return this.step('start', spec.name, async () => {
      checkCommand('start', spec.name, spec.command);
      const p = await this.paths(spec.name);
      const existing = await this.jail(spec.name);
      if (existing) {
        const running = await this.runningPid(spec.name);
        if (running !== null) return { pid: running };
      }
      const mounts = await this.mountTable('start', spec.name);
      for (const need of [join(p.root, 'dev'), join(p.root, 'tmp')]) {
        if (!mounts.has(need)) throw new Error(`jail ${spec.name} is not mounted (${need} is not a mount point)`);
      }
      // vnet (jail -c vnet, epair, if_bridge) is not built for FreeBSD yet: refused, never run as inherit
      if (typeof spec.network !== 'string') throw new Error('network mode vnet is not supported by the freebsd driver yet (use inherit or none)');
      if (!existing) await this.tool('start', spec.name, jailCreateArgv(spec.name, p.root, jailHostname(spec), spec.network));
      // the spec's limits, before the command runs; an earlier run's rules go first (rctl -r
      // fails when there are none, hence no check), and a host without RACCT fails the start
      await this.runner(rctlRemoveArgv(spec.name));
      for (const rule of rctlRules(spec.name, rctlLimitsOf(spec.resources))) await this.tool('start', spec.name, rule);

      await ifExists(unlink(p.pid));
      const argv = daemonArgv(p.pid, p.console, jexecCommandArgv(spec.name, spec.env, spec.command));
      await this.tool('start', spec.name, argv);

      for (const until = Date.now() + START_WAIT_MS; ; await sleep(POLL_MS)) {
        const pid = await this.readPid(p.pid);
        if (pid !== null && (await this.jailPids(spec.name)).includes(pid)) {
          this.log?.info({ jail: spec.name, pid }, 'jail started');
          return { pid };
        }
        if (Date.now() >= until) {
          const tail = await this.startFailureTail(spec.name);
          throw DriverStepFailed.of('start', spec.name, `its command did not start${tail ? `: ${tail}` : ''}`, { argv, stderr: tail });
        }
      }
    });
  }

  async wait(name: string, pid: number, signal: AbortSignal): Promise<JailExit> {
    checkJailName('inspect', name);
    for (;;) {
      if (signal.aborted) throw abortError(signal);
      if (!(await this.jailPids(name)).includes(pid)) break;
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          clearTimeout(timer);
          reject(abortError(signal));
        };
        const timer = setTimeout(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        }, POLL_MS);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
    // daemon(8) keeps no exit status, and the command is not our child: unknown.
    return { exitCode: null };
  }

  async stop(spec: JailSpec): Promise<{ exitCode: number | null }> {
    return this.step('stop', spec.name, () => this.stopJail('stop', spec.name, spec.stopTimeoutMs));
  }

  async unmount(spec: JailSpec): Promise<void> {
    await this.step('unmount', spec.name, async () => {
      const p = await this.paths(spec.name);
      await this.unmountUnder('unmount', spec.name, p.dir);
      this.log?.info({ jail: spec.name }, 'jail mounts released');
    });
  }

  async destroy(name: string): Promise<void> {
    await this.step('destroy', name, async () => {
      const p = await this.paths(name);
      await this.stopJail('destroy', name, await this.destroyGraceMs(name));
      await this.unmountUnder('destroy', name, p.dir);
      if (this.zfsDataset) {
        const dataset = `${this.zfsDataset}/${name}`;
        if ((await this.runner(zfsListArgv(dataset))).exitCode === 0) await this.tool('destroy', name, zfsDestroyArgv(dataset));
      }
      // Best effort: with RACCT disabled or absent rctl fails, and then there are no rules to remove.
      const r = await this.runner(rctlRemoveArgv(name));
      if (r.exitCode !== 0) this.log?.warn({ jail: name, stderr: r.stderr.trim() }, 'rctl rules not removed');
      // Never delete through a mount: rm would walk into the host's files bound there.
      const left = (await this.mountTable('destroy', name)).under(p.dir);
      if (left.length) throw new Error(`refusing to remove ${p.dir}: still mounted at ${left.join(', ')}`);
      await rm(p.dir, { recursive: true, force: true });
      this.log?.info({ jail: name }, 'jail destroyed');
    });
  }

  async inspect(name: string): Promise<JailInspection> {
    checkJailName('inspect', name);
    const p = await this.paths(name);
    const mounts = new MountTable((await this.checked(`inspect of jail ${name}`, mountListArgv())).stdout);
    const imageBase = await this.imageBase(name);
    const prepared = this.rootMounted(p.root, mounts, imageBase) && (imageBase !== null || (await ifExists(lstat(join(p.root, 'etc', 'master.passwd')))) !== null);
    const mounted = mounts.has(join(p.root, 'dev')) && mounts.has(join(p.root, 'tmp'));
    const pid = (await this.jail(name)) ? await this.runningPid(name) : null;
    return { name, prepared, mounted, pid };
  }

  async list(): Promise<string[]> {
    const jails = join(await this.dataDir(), 'jails');
    const names = new Set(await this.jailDirNames());
    // A jail still running after its directory went away is still ours: its root is under ours.
    const r = await this.checked('listing the jails', jlsArgv());
    for (const j of parseJlsJson(r.stdout)) {
      if (nameSchema.safeParse(j.name).success && j.path === join(jails, j.name, 'root')) names.add(j.name);
    }
    return [...names].sort();
  }

  async exec(spec: JailSpec, argv: string[], options: ExecOptions): Promise<ExecResult> {
    checkJailName('exec', spec.name);
    checkCommand('exec', spec.name, argv);
    const running = await this.jail(spec.name).catch((err: unknown) => {
      throw new DriverStepFailed('exec', `exec in jail ${spec.name} failed: ${(err as Error).message}`, [], '', { cause: err });
    });
    if (!running) throw new DriverStepFailed('exec', `jail ${spec.name} is not running`);
    const full = jexecCommandArgv(spec.name, spec.env, argv);
    const r = await this.runner(full, { timeoutMs: options.timeoutMs, maxOutputBytes: options.maxOutputBytes });
    return {
      exitCode: r.timedOut ? TIMEOUT_EXIT_CODE : r.exitCode,
      stdout: r.stdout,
      stderr: r.stderr,
      truncated: r.truncated ?? false,
      timedOut: r.timedOut ?? false,
    };
  }

  async sessionSpawn(spec: JailSpec, command: SessionCommand): Promise<SessionSpawn> {
    checkJailName('exec', spec.name);
    if (!command.login) checkCommand('exec', spec.name, command.command);
    const running = await this.jail(spec.name).catch((err: unknown) => {
      throw new DriverStepFailed('exec', `exec in jail ${spec.name} failed: ${(err as Error).message}`, [], '', { cause: err });
    });
    if (!running) throw new DriverStepFailed('exec', `jail ${spec.name} is not running`);
    // jexec -l and env -i set the command's environment; the helper's own is the tools'
    return { argv: jexecSessionArgv(this.sessionPath, spec.name, spec.env, command), env: TOOL_ENV };
  }

  /**
   * jailfs with the jail's name for a root: it attaches to the jail (jail_attach(2), as jexec
   * does) and lets the kernel confine every lookup to the jail's root, so that a jail swapping
   * symlinks cannot send a cp out of it (see native/jailfs.c).
   */
  async copySpawn(spec: JailSpec, direction: 'pack' | 'unpack', path: string, maxBytes: number): Promise<SessionSpawn> {
    checkJailName('copy', spec.name);
    const running = await this.jail(spec.name).catch((err: unknown) => {
      throw new DriverStepFailed('copy', `copy of jail ${spec.name} failed: ${(err as Error).message}`, [], '', { cause: err });
    });
    if (!running) throw new DriverStepFailed('copy', `jail ${spec.name} is not running`);
    return { argv: [this.fsPath, direction, spec.name, path, String(maxBytes)], env: TOOL_ENV };
  }

  // ---- internals ----

  /** Runs a tool; a non-zero exit is a DriverStepFailed naming the step, the jail, the argv and stderr. */
  private async tool(step: DriverStepName, jail: string, argv: string[]) {
    this.log?.debug({ jail, argv }, 'run');
    const r = await this.runner(argv);
    if (r.exitCode !== 0) {
      const why = r.stderr.trim() || `exit code ${r.exitCode}`;
      throw DriverStepFailed.of(step, jail, `${argv.join(' ')}: ${why}`, { argv, stderr: r.stderr });
    }
    return r;
  }

  /** Like tool(), for reads outside a step (inspect, list): a plain Error. */
  private async checked(what: string, argv: string[]) {
    const r = await this.runner(argv);
    if (r.exitCode !== 0) throw new Error(`${what} failed: ${argv.join(' ')}: ${r.stderr.trim() || `exit code ${r.exitCode}`}`);
    return r;
  }

  private async mountTable(step: DriverStepName, jail: string): Promise<MountTable> {
    return new MountTable((await this.tool(step, jail, mountListArgv())).stdout);
  }

  /**
   * The jail as jls(8) sees it, or null when there is none. jls exits 1 with the kernel's message:
   * `jail "x" not found`, or `jail "x" is dying` for a removed jail whose last references are going
   * (it has no processes left, and jail -c may reuse its name).
   */
  private async jail(name: string): Promise<JlsJail | null> {
    const argv = jlsArgv(name);
    const r = await this.runner(argv);
    if (r.exitCode !== 0) {
      if (/not found|is dying/i.test(r.stderr)) return null;
      throw new Error(`${argv.join(' ')}: ${r.stderr.trim() || `exit code ${r.exitCode}`}`);
    }
    return parseJlsJson(r.stdout).find((j) => j.name === name) ?? null;
  }

  /** Host pids of the processes in the jail (pgrep exits 1 when none, 2 when there is no such jail). */
  private async jailPids(name: string): Promise<number[]> {
    const argv = pgrepArgv(name);
    const r = await this.runner(argv);
    if (r.exitCode === 1 || (r.exitCode === 2 && /jail/i.test(r.stderr))) return [];
    if (r.exitCode !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.trim() || `exit code ${r.exitCode}`}`);
    return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
  }

  private async readPid(path: string): Promise<number | null> {
    const text = (await ifExists(readFile(path, 'utf8')))?.trim();
    return text && /^\d+$/.test(text) ? Number(text) : null;
  }

  /** The pid daemon(8) recorded, if that process is still alive inside the jail. */
  private async runningPid(name: string): Promise<number | null> {
    const pid = await this.readPid((await this.paths(name)).pid);
    if (pid === null) return null;
    return (await this.jailPids(name)).includes(pid) ? pid : null;
  }

  private rootMounted(root: string, mounts: MountTable, imageBase: string[] | null): boolean {
    // a zfs image jail records no base directories: its root is one clone
    if (imageBase) return imageBase.every((d) => mounts.has(join(root, d))) && (imageBase.length > 0 || !this.zfsDataset || mounts.has(root));
    return this.zfsDataset ? mounts.has(root) : BASE_DIRS.every((d) => mounts.has(join(root, d)));
  }

  /** An image jail's read-only base directories (recorded by prepare), or null for a thin-base jail. */
  private async imageBase(name: string): Promise<string[] | null> {
    const text = await ifExists(readFile(join((await this.paths(name)).dir, 'image-base.json'), 'utf8'));
    if (text === null) return null;
    const dirs = JSON.parse(text) as unknown;
    return Array.isArray(dirs) && dirs.every((d) => (BASE_DIRS as readonly unknown[]).includes(d)) ? (dirs as string[]) : null;
  }

  /**
   * An image jail's root (see the header): the digest recorded before the fetch (the cache never
   * collects an image a jail names), the image's base directories mounted read-only, its other
   * top-level directories copied once, then the jail's hosts and resolv.conf.
   */
  private async prepareImageRoot(spec: JailSpec): Promise<void> {
    if (!this.images) throw new Error('this agent has no image cache: it cannot start jails from images');
    const p = await this.paths(spec.name);
    const recorded = (await ifExists(readFile(join(p.dir, 'image'), 'utf8')))?.trim() ?? null;
    const digest = await this.images.resolve(spec.image!, recorded && /^sha256:[0-9a-f]{64}$/.test(recorded) ? recorded : null);
    await writeFileAtomic(join(p.dir, 'image'), `${digest}\n`, 0o600);
    if (this.zfsDataset) {
      await this.prepareZfsImageRoot(spec.name, p.root, digest);
      await writeFileAtomic(join(p.dir, 'image-base.json'), '[]', 0o600);
    } else {
      await this.prepareNullfsImageRoot(spec.name, p.root, digest);
    }
    const etc = await ensureRealDir(p.root, 'etc');
    const { hosts } = generatedEtc(jailHostname(spec));
    await writeFileAtomic(join(etc, 'hosts'), hosts.content, hosts.mode);
    const resolv = await readFile('/etc/resolv.conf', 'utf8').catch(() => null);
    if (resolv !== null) await writeFileAtomic(join(etc, 'resolv.conf'), resolv);
    for (const dir of ['dev', 'tmp', 'var/run', 'var/log']) await ensureRealDir(p.root, dir);
    this.log?.info({ jail: spec.name, image: digest, zfs: Boolean(this.zfsDataset) }, 'jail image root prepared');
  }

  /** The image's base directories nullfs read-only from the cache, its other top-level directories copied once. */
  private async prepareNullfsImageRoot(name: string, root: string, digest: string): Promise<void> {
    const p = await this.paths(name);
    const rootfs = await this.images!.ensure(digest);
    await ensureRealDir(dirname(root), basename(root));
    const entries = (await readdir(rootfs, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    const base = entries.filter((e) => e.isDirectory() && (BASE_DIRS as readonly string[]).includes(e.name)).map((e) => e.name);
    await writeFileAtomic(join(p.dir, 'image-base.json'), JSON.stringify(base), 0o600);
    const mounts = await this.mountTable('prepare', name);
    for (const d of base) {
      const target = await ensureRealDir(root, d);
      if (!mounts.has(target)) await this.tool('prepare', name, nullfsArgv(join(rootfs, d), target, true));
    }
    for (const e of entries) {
      if (base.includes(e.name) || (await ifExists(lstat(join(root, e.name))))) continue;
      // cp(1) -R copies symlinks as symlinks, -p keeps owners, modes and times
      await this.tool('prepare', name, ['cp', '-Rp', join(rootfs, e.name), join(root, e.name)]);
    }
  }

  /**
   * A zfs image jail's root: the clone `<dataset>/<name>` of the image's snapshot, mounted at the
   * root. A clone that exists is the jail's writable layer from before (a restart): only mounted.
   */
  private async prepareZfsImageRoot(name: string, root: string, digest: string): Promise<void> {
    const dataset = `${this.zfsDataset!}/${name}`;
    const st = await ifExists(lstat(root));
    if (st && !st.isDirectory()) throw new Error(`${root} is not a directory: refusing to use it`);
    if ((await this.runner(zfsListArgv(dataset))).exitCode === 0) {
      if (!(await this.mountTable('prepare', name)).has(root)) await this.tool('prepare', name, zfsMountArgv(dataset));
      return;
    }
    let made = this.snapshotsBeingMade.get(digest);
    if (!made) {
      made = this.imageSnapshot(name, digest).finally(() => this.snapshotsBeingMade.delete(digest));
      this.snapshotsBeingMade.set(digest, made);
    }
    await this.tool('prepare', name, zfsCloneArgv(await made, dataset, root));
  }

  /**
   * `<dataset>/_images/<hex>@jailfleet`: the unpacked image copied into a dataset of its own, then
   * snapshotted. The snapshot is the mark of a complete copy: a dataset without it is an
   * interrupted one (never cloned) and is made again. "_" keeps these names apart from jails'
   * (a jail name has none).
   */
  private async imageSnapshot(jail: string, digest: string): Promise<string> {
    const images = `${this.zfsDataset!}/_images`;
    const hex = digest.slice('sha256:'.length);
    const dataset = `${images}/${hex}`;
    const snapshot = `${dataset}@${BASE_SNAPSHOT}`;
    if ((await this.runner(zfsListArgv(snapshot, true))).exitCode === 0) return snapshot;
    const rootfs = await this.images!.ensure(digest);
    if ((await this.runner(zfsListArgv(images))).exitCode !== 0) await this.tool('prepare', jail, zfsCreateArgv(images, 'canmount=off'));
    if ((await this.runner(zfsListArgv(dataset))).exitCode === 0) await this.tool('prepare', jail, zfsDestroyTreeArgv(dataset));
    const mountpoint = join(await this.dataDir(), 'zfs-images', hex);
    await this.tool('prepare', jail, zfsCreateArgv(dataset, `mountpoint=${mountpoint}`));
    await this.tool('prepare', jail, cpContentsArgv(rootfs, mountpoint));
    await this.tool('prepare', jail, zfsSnapshotArgv(snapshot));
    return snapshot;
  }

  /** SIGTERM to every process of the jail, up to `graceMs` for them to exit, then jail -R. */
  private async stopJail(step: DriverStepName, name: string, graceMs: number): Promise<{ exitCode: number | null }> {
    const p = await this.paths(name);
    if (await this.jail(name)) {
      // kill(1) -1 as root: "broadcast the signal to all processes"; inside a jail only its own.
      // Exit 1 means there was no process left to signal.
      await this.runner(jexecKillAllArgv(name));
      for (const until = Date.now() + graceMs; ; await sleep(POLL_MS)) {
        if ((await this.jailPids(name)).length === 0) break;
        if (Date.now() >= until) {
          this.log?.warn({ jail: name, graceMs }, 'jail ignored SIGTERM: removing it');
          break;
        }
      }
      await this.tool(step, name, jailRemoveArgv(name));
      this.log?.info({ jail: name }, 'jail stopped');
    }
    await ifExists(unlink(p.pid));
    return { exitCode: null };
  }

  /** Unmounts everything at or under `dir`, in reverse mount order (deepest first on ties). */
  private async unmountUnder(step: DriverStepName, jail: string, dir: string): Promise<void> {
    for (const node of unmountOrder((await this.mountTable(step, jail)).under(dir))) {
      const r = await this.runner(umountArgv(node));
      if (r.exitCode !== 0) await this.tool(step, jail, umountArgv(node, true));
    }
  }

  /** The thin base: a read-only nullfs mount of each base directory, made once. */
  private async prepareNullfsRoot(name: string, root: string): Promise<void> {
    const data = await this.dataDir();
    for (const d of BASE_DIRS) {
      const source = join(this.base, d);
      const real = (await ifExists(realpath(source))) ?? source;
      for (const s of [source, real]) {
        if (s === data || isWithin(s, data)) {
          throw new Error(`the data directory ${data} is under ${s}, which every jail sees read-only; move it out of the base`);
        }
      }
    }
    await ensureRealDir(dirname(root), 'root');
    const mounts = await this.mountTable('prepare', name);
    for (const d of BASE_DIRS) {
      const target = await ensureRealDir(root, d);
      if (!mounts.has(target)) await this.tool('prepare', name, nullfsArgv(join(this.base, d), target, true));
    }
  }

  /** The zfs root: the clone `<dataset>/<name>` of `<dataset>/base@jailfleet`, mounted at the root. */
  private async prepareZfsRoot(name: string, root: string): Promise<void> {
    const parent = this.zfsDataset as string;
    const dataset = `${parent}/${name}`;
    const st = await ifExists(lstat(root));
    if (st && !st.isDirectory()) throw new Error(`${root} is not a directory: refusing to use it`);
    if ((await this.runner(zfsListArgv(dataset))).exitCode !== 0) {
      const snapshot = `${parent}/base@${BASE_SNAPSHOT}`;
      if ((await this.runner(zfsListArgv(snapshot, true))).exitCode !== 0) await this.tool('prepare', name, zfsSnapshotArgv(snapshot));
      await this.tool('prepare', name, zfsCloneArgv(snapshot, dataset, root));
      return;
    }
    if (!(await this.mountTable('prepare', name)).has(root)) await this.tool('prepare', name, zfsMountArgv(dataset));
  }
}

/**
 * env(1) takes every leading `name=value` operand as an assignment, and (with an empty env) a
 * leading "-" as one of its options, so such a program name cannot follow `env -i`: refuse it
 * rather than run something else.
 */
function checkCommand(step: DriverStepName, jail: string, argv: string[]): void {
  if (argv.length === 0 || argv[0] === '') throw new DriverStepFailed(step, `${step} in jail ${jail} refused: no program to run`);
  if (argv[0].includes('=') || argv[0].startsWith('-')) {
    throw new DriverStepFailed(
      step,
      `${step} in jail ${jail} refused: the program ${JSON.stringify(argv[0])} starts with "-" or contains "=", which env(1) would not run as a program`,
    );
  }
}
