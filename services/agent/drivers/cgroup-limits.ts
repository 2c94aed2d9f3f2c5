// A linux jail's resource limits as a cgroup of its own: memory (swap included), a cpu quota and a
// process count, on cgroup v2 or on the v1 controllers where that is what the kernel mounts, and
// the kernel's out-of-memory kills counted per jail, and what a jail uses (cpu time, memory) read
// for the agent's metrics. The pure part (which hierarchy, which files,
// which values) is exported for tests; the rest writes only below `<mount>/jailfleet/<scope>/`.
// It must never move or signal a process that is not in a jail's own cgroup.
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Resources } from '../../../contracts/index.js';
import { errCode, ifExists, sleep } from './host-files.js';

const CGROUP_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
export type CgroupController = (typeof CGROUP_CONTROLLERS)[number];

/**
 * Where the kernel offers the controllers: one unified (v2) hierarchy, or one v1 hierarchy per
 * controller (a hybrid host, with v1 controllers and an empty cgroup2 beside them, counts as
 * v1: a controller bound to v1 is not available in v2), or nowhere usable and why.
 */
export type CgroupLayout =
  | { version: 2; mountPoint: string }
  | { version: 1; mountPoints: Record<CgroupController, string>; cpuacct?: string }
  | { version: null; why: string };

/**
 * A jail's cgroup directory in each hierarchy. On v1 `cpuacct` is there when that controller is
 * mounted apart from cpu (then a jail gets a cgroup in it too, only to count its cpu time).
 */
export type CgroupPaths = Record<CgroupController, string> & { cpuacct?: string };

/** The CFS period the quota is measured in (the kernel's default): 100 ms. */
const CPU_PERIOD_US = 100_000;
/** The smallest quota the kernel accepts (1 ms per period). */
const CPU_MIN_QUOTA_US = 1_000;

const unescapeMount = (s: string) => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));

/** The cgroup layout from the text of /proc/self/mountinfo (the first mount of each hierarchy). */
export function detectCgroupLayout(mountinfo: string): CgroupLayout {
  const v1 = new Map<CgroupController, string>();
  let v2: string | null = null;
  let cpuacct: string | null = null;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 4) continue;
    const mountPoint = unescapeMount(f[4]!);
    const fstype = f[sep + 1];
    if (fstype === 'cgroup2') v2 ??= mountPoint;
    if (fstype !== 'cgroup') continue;
    const options = new Set(f[sep + 3]!.split(','));
    for (const c of CGROUP_CONTROLLERS) if (options.has(c) && !v1.has(c)) v1.set(c, mountPoint);
    if (options.has('cpuacct')) cpuacct ??= mountPoint;
  }
  if (v1.size > 0) {
    const missing = CGROUP_CONTROLLERS.filter((c) => !v1.has(c));
    if (missing.length) return { version: null, why: `cgroup v1 is mounted without the ${missing.join(' and ')} controller${missing.length > 1 ? 's' : ''}` };
    const mountPoints = Object.fromEntries(v1) as Record<CgroupController, string>;
    return { version: 1, mountPoints, ...(cpuacct !== null && cpuacct !== mountPoints.cpu && { cpuacct }) };
  }
  if (v2 !== null) return { version: 2, mountPoint: v2 };
  return { version: null, why: 'no cgroup hierarchy is mounted (neither cgroup2 nor the v1 memory, cpu and pids controllers)' };
}

/** cpu cores → the CFS quota per CPU_PERIOD_US: 0.5 → 50000 (half of every period). */
export const cpuQuotaUs = (cores: number) => Math.max(CPU_MIN_QUOTA_US, Math.round(cores * CPU_PERIOD_US));
const memoryBytes = (memoryMB: number) => memoryMB * 1024 * 1024;

/** One value for one file of a jail's cgroup; `ifPresent` files are skipped where the kernel lacks them (no swap accounting). */
export interface CgroupWrite {
  controller: CgroupController;
  file: string;
  value: string;
  ifPresent?: boolean;
}

/**
 * The files that set `resources` on a fresh cgroup, in the order they must be written. Memory
 * includes swap (memory+swap = memory): a jail cannot swap its way past its limit. On v1 the
 * memory limit goes first, since memsw may never be below it.
 */
export function cgroupLimitWrites(version: 1 | 2, r: Resources): CgroupWrite[] {
  const bytes = String(memoryBytes(r.memoryMB));
  if (version === 1) {
    return [
      { controller: 'memory', file: 'memory.limit_in_bytes', value: bytes },
      { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: bytes, ifPresent: true },
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: String(CPU_PERIOD_US) },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: String(cpuQuotaUs(r.cpu)) },
      { controller: 'pids', file: 'pids.max', value: String(r.maxProcs) },
    ];
  }
  return [
    { controller: 'memory', file: 'memory.max', value: bytes },
    { controller: 'memory', file: 'memory.swap.max', value: '0', ifPresent: true },
    { controller: 'cpu', file: 'cpu.max', value: `${cpuQuotaUs(r.cpu)} ${CPU_PERIOD_US}` },
    { controller: 'pids', file: 'pids.max', value: String(r.maxProcs) },
  ];
}

/** The file that counts a cgroup's out-of-memory kills (its `oom_kill` line), per cgroup version. */
const OOM_COUNTER = { 1: 'memory.oom_control', 2: 'memory.events' } as const;

/** The `oom_kill N` line of memory.oom_control (v1) or memory.events (v2); null when absent (v1 before linux 4.13). */
export function oomKillsIn(text: string): number | null {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : null;
}

/** What a jail uses now: cpu time since its cgroup was made, and memory charged to it. */
export interface JailUsage {
  cpuSeconds: number;
  memoryBytes: number;
}

/**
 * Usage from the text of the cpu file (v2 `cpu.stat`, its usage_usec line; v1 `cpuacct.usage`,
 * nanoseconds) and of the memory file (v2 `memory.current`, v1 `memory.usage_in_bytes`); null
 * when either is not what the kernel writes.
 */
export function usageOf(version: 1 | 2, cpuText: string, memoryText: string): JailUsage | null {
  const cpu = version === 2 ? /^usage_usec (\d+)$/m.exec(cpuText)?.[1] : /^(\d+)\s*$/.exec(cpuText)?.[1];
  const memory = /^(\d+)\s*$/.exec(memoryText)?.[1];
  if (cpu === undefined || memory === undefined) return null;
  return { cpuSeconds: Number(cpu) / (version === 2 ? 1e6 : 1e9), memoryBytes: Number(memory) };
}

/**
 * The cgroups of one driver's jails: `<mount>/jailfleet/<scope>/<jail>` for each hierarchy.
 * `scope` keeps two agents on one machine (or a stale copy of a jail and its new one) apart.
 */
export class JailCgroups {
  private layout: Promise<CgroupLayout> | null = null;

  constructor(
    private readonly scope: () => Promise<string>,
    private readonly mountinfo: () => Promise<string> = () => readFile('/proc/self/mountinfo', 'utf8'),
  ) {}

  /** The layout, detected once. */
  detect(): Promise<CgroupLayout> {
    this.layout ??= this.mountinfo().then(detectCgroupLayout);
    return this.layout;
  }

  /** The jail's cgroup directory in each hierarchy (one on v2); throws when there is no usable cgroup. */
  async paths(name: string): Promise<CgroupPaths> {
    const layout = await this.usable();
    const scope = await this.scope();
    if (layout.version === 2) {
      const dir = join(layout.mountPoint, 'jailfleet', scope, name);
      return { memory: dir, cpu: dir, pids: dir };
    }
    const m = layout.mountPoints;
    return {
      memory: join(m.memory, 'jailfleet', scope, name),
      cpu: join(m.cpu, 'jailfleet', scope, name),
      pids: join(m.pids, 'jailfleet', scope, name),
      ...(layout.cpuacct !== undefined && { cpuacct: join(layout.cpuacct, 'jailfleet', scope, name) }),
    };
  }

  /**
   * A fresh cgroup for the jail with its limits set: one left from an earlier run of the jail is
   * removed first, so its out-of-memory count starts at zero.
   */
  async create(name: string, resources: Resources): Promise<void> {
    const layout = await this.usable();
    await this.remove(name);
    const paths = await this.paths(name);
    if (layout.version === 2) await this.enableV2Controllers(layout.mountPoint);
    for (const dir of new Set(Object.values(paths))) await mkdirRacing(dir);
    for (const w of cgroupLimitWrites(layout.version, resources)) {
      const file = join(paths[w.controller], w.file);
      try {
        await writeFile(file, w.value);
      } catch (err) {
        if (w.ifPresent && errCode(err) === 'ENOENT') continue;
        throw new Error(`cannot set ${file} to ${w.value}: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** Moves `pid` (the jail's init, before it runs anything) into the jail's cgroup. */
  async join(name: string, pid: number): Promise<void> {
    for (const dir of new Set(Object.values(await this.paths(name)))) {
      try {
        await writeFile(join(dir, 'cgroup.procs'), String(pid));
      } catch (err) {
        throw new Error(`cannot move pid ${pid} into ${dir}: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** How many processes of the jail the kernel killed for memory since its cgroup was made; null when unknown. */
  async oomKills(name: string): Promise<number | null> {
    const layout = await this.detect();
    if (layout.version === null) return null;
    const { memory } = await this.paths(name);
    const text = await ifExists(readFile(join(memory, OOM_COUNTER[layout.version]), 'utf8'));
    return text === null ? null : oomKillsIn(text);
  }

  /**
   * The jail's cpu time and memory now; null when it has no cgroup (not running) or no usable
   * layout. The two files are read synchronously: a cgroup file is made in the kernel at the read
   * (tens of microseconds), while an fs/promises read is four round trips through libuv's four
   * threads — 2,000 of them (a scrape at 1,000 jails) took 5–10 times longer here than in a row.
   */
  async usage(name: string): Promise<JailUsage | null> {
    const layout = await this.detect();
    if (layout.version === null) return null;
    const p = await this.paths(name);
    const [cpuFile, memoryFile] =
      layout.version === 2 ? [join(p.cpu, 'cpu.stat'), join(p.memory, 'memory.current')] : [join(p.cpuacct ?? p.cpu, 'cpuacct.usage'), join(p.memory, 'memory.usage_in_bytes')];
    const cpu = readIfThere(cpuFile);
    const memory = cpu === null ? null : readIfThere(memoryFile);
    return cpu === null || memory === null ? null : usageOf(layout.version, cpu, memory);
  }

  /**
   * Removes the jail's cgroup (and the scope's and jailfleet's directories once empty). A process
   * still in it can only be the jail's own, dying with its pid namespace: it is waited for, and
   * SIGKILLed if it lingers.
   */
  async remove(name: string): Promise<void> {
    const layout = await this.detect();
    if (layout.version === null) return;
    const dirs = [...new Set(Object.values(await this.paths(name)))];
    for (const dir of dirs) await removeCgroupDir(dir);
    for (const dir of dirs) {
      for (const parent of [join(dir, '..'), join(dir, '..', '..')]) {
        // another jail (or another agent's scope) may still be there: then it stays
        const r = await rmdir(parent).then(() => null, (err: unknown) => errCode(err));
        if (r !== null && r !== 'ENOENT') break;
      }
    }
  }

  private async usable(): Promise<Exclude<CgroupLayout, { version: null }>> {
    const layout = await this.detect();
    if (layout.version === null) throw new Error(`cannot limit the jail's resources: ${layout.why}`);
    return layout;
  }

  /** On v2 a child sees a controller only when every ancestor enables it in cgroup.subtree_control. */
  private async enableV2Controllers(mountPoint: string): Promise<void> {
    const scope = await this.scope();
    const available = new Set((await readFile(join(mountPoint, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/));
    const missing = CGROUP_CONTROLLERS.filter((c) => !available.has(c));
    if (missing.length) throw new Error(`cannot limit the jail's resources: the cgroup2 at ${mountPoint} does not offer ${missing.join(', ')} (bound to a v1 hierarchy?)`);
    const enable = CGROUP_CONTROLLERS.map((c) => `+${c}`).join(' ');
    for (const dir of [mountPoint, join(mountPoint, 'jailfleet'), join(mountPoint, 'jailfleet', scope)]) {
      await mkdirRacing(dir);
      const on = new Set((await readFile(join(dir, 'cgroup.subtree_control'), 'utf8')).trim().split(/\s+/));
      if (CGROUP_CONTROLLERS.some((c) => !on.has(c))) await writeFile(join(dir, 'cgroup.subtree_control'), enable);
    }
  }
}

/**
 * mkdir -p that survives another step removing an empty parent meanwhile (a dead jail's cgroup is
 * released with its scope's directory once empty). On cgroupfs a parent being removed reads as
 * ENOENT or, for a moment, ENOTDIR: both are tried again after a short pause.
 */
async function mkdirRacing(dir: string): Promise<void> {
  for (let tries = 0; ; tries++) {
    try {
      await mkdir(dir, { recursive: true });
      return;
    } catch (err) {
      const code = errCode(err);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || tries >= 20) throw err;
      await new Promise((r) => setTimeout(r, 5 * (tries + 1)));
    }
  }
}

const REMOVE_WAIT_MS = 5_000;

/** A cgroup file's text, or null when the cgroup is gone (the jail exited meanwhile). */
function readIfThere(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if (errCode(err) === 'ENOENT' || errCode(err) === 'ENODEV') return null;
    throw err;
  }
}

/** rmdir of one cgroup, once the processes in it are gone. */
async function removeCgroupDir(dir: string): Promise<void> {
  let killed = false;
  for (const until = Date.now() + REMOVE_WAIT_MS; ; await sleep(20)) {
    const code = await rmdir(dir).then(() => null, (err: unknown) => errCode(err));
    if (code === null || code === 'ENOENT') return;
    if (code !== 'EBUSY') throw new Error(`cannot remove the cgroup ${dir}: ${code}`);
    const pids = ((await ifExists(readFile(join(dir, 'cgroup.procs'), 'utf8'))) ?? '').split('\n').filter(Boolean).map(Number);
    if (pids.length && !killed && Date.now() > until - REMOVE_WAIT_MS / 2) {
      killed = true;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    if (Date.now() > until) throw new Error(`cannot remove the cgroup ${dir}: still busy (processes ${pids.join(', ') || 'none listed'})`);
  }
}
