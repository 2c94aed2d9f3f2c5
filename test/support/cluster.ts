// A real cluster for end-to-end tests: a nats-server on a free port with its own store, and the
// built `jailfleet serve` processes (scheduler, status, agents). `stop()` tears everything down,
// jails included, and checks that nothing stays mounted under the cluster's directory.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_LEADER, heartbeatSchema, subjects, type Heartbeat } from '../../contracts/index.js';
import { startNatsCluster, startNatsServer, type NatsServerHandle } from '../../services/common/nats-server.js';

/** The checkout's root (the folder with package.json), from the sources or from dist/. */
export const repoRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();
export const cliPath = join(repoRoot, 'dist', 'services', 'cli', 'main.js');

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Mount points below `dir`, from this process's mount table. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Signals a process and waits for it; SIGKILL after `ms`, so a hung service cannot hang the tests. */
async function stopWithin(p: ResultPromise, signal: NodeJS.Signals, ms: number): Promise<void> {
  p.kill(signal);
  const t = setTimeout(() => p.kill('SIGKILL'), ms);
  await p;
  clearTimeout(t);
}

/**
 * The jails running on this machine under `dir`, from the kernel: every `unshare` that holds a
 * jail's init (jailinit hides its own argv), by the jail root in its argv
 * (`<dir>/hosts/<host>/jails/<jail>/root`). `{ jail: [host, ...] }`.
 */
export function runningCopies(dir: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of jailProcesses(dir)) (out[p.jail] ??= []).push(p.host);
  for (const hosts of Object.values(out)) hosts.sort();
  return out;
}

/** Every process of the kernel's table with its argv (those gone meanwhile are left out). */
export function processArgvs(): { pid: number; argv: string[] }[] {
  const out: { pid: number; argv: string[] }[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      out.push({ pid: Number(pid), argv: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0') });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** The `unshare` process of every jail under `dir` (its process group holds the jail's init). */
export function jailProcesses(dir: string): { pid: number; host: string; jail: string }[] {
  const out: { pid: number; host: string; jail: string }[] = [];
  const prefix = `${dir}/hosts/`;
  for (const { pid, argv } of processArgvs()) {
    if (!argv[0]?.endsWith('unshare')) continue;
    const init = argv.findIndex((a) => a.endsWith('/jailinit'));
    // jailinit [--seccomp MODE] <exit-code-file> <root> ...
    const first = init > 0 && argv[init + 1] === '--seccomp' ? init + 3 : init + 1;
    const root = init > 0 ? argv[first + 1] : undefined;
    if (!root?.startsWith(prefix)) continue;
    const [host, jails, jail, last] = root.slice(prefix.length).split('/');
    if (host && jails === 'jails' && jail && last === 'root') out.push({ pid, host, jail });
  }
  return out;
}

/** Removes the cgroups the linux driver made for the agent with data directory `dataDir` (v1 and v2). */
export function removeJailCgroups(dataDir: string) {
  let real: string;
  try {
    real = realpathSync(dataDir);
  } catch {
    return;
  }
  const scope = `data-${createHash('sha256').update(real).digest('hex').slice(0, 12)}`;
  const roots = ['/sys/fs/cgroup/jailfleet', ...readdirSync('/sys/fs/cgroup').map((c) => `/sys/fs/cgroup/${c}/jailfleet`)];
  for (const root of roots) {
    const dir = join(root, scope);
    if (!existsSync(dir)) continue;
    for (const jail of readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory())) {
      try {
        rmdirSync(join(dir, jail.name));
      } catch {
        // still holds a process
      }
    }
    try {
      rmdirSync(dir);
      rmdirSync(root);
    } catch {
      // shared with another agent's jails
    }
  }
}

/**
 * What an agent offers unless a test says otherwise: room for hundreds of default jails (0.1 core
 * and 64 MB each), as tests about failover or scale are not about capacity. The jails' own limits
 * are enforced as written either way.
 */
const ROOMY_AGENT = ['--cpu', '64', '--memory-mb', '65536'];

export interface ClusterOptions {
  hosts?: string[];
  /** The broker's max_payload (nats-server syntax, e.g. `1MB`); default that of startNatsServer. */
  natsMaxPayload?: string;
  scheduler?: boolean;
  /** Scheduler processes (scheduler-1 … when more than one). */
  schedulers?: number;
  status?: boolean;
  /** 3: a cluster of three nats-servers (R3 streams); clients get every URL. */
  natsCluster?: number;
  /** The address the (single) nats-server listens on, default 127.0.0.1. */
  natsHost?: string;
  /** The services' log level: debug (every driver command) unless a bench wants production's info. */
  logLevel?: 'debug' | 'info';
  /** Extra argv for every `serve scheduler` / `serve status` / `serve agent`. */
  schedulerArgs?: string[];
  statusArgs?: string[];
  agentArgs?: string[];
}

export class TestCluster {
  readonly agents = new Map<string, ResultPromise>();
  /** scheduler(s) and status, by name. */
  readonly services = new Map<string, ResultPromise>();
  private constructor(
    readonly dir: string,
    readonly natsServers: NatsServerHandle[],
    private readonly opts: ClusterOptions,
  ) {}

  /** Every server's URL, comma-separated, as JAILFLEET_NATS_URL takes it. */
  get url() {
    return this.natsServers.map((s) => s.url).join(',');
  }

  get nats() {
    return this.natsServers[0]!;
  }

  static async start(opts: ClusterOptions = {}): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'jailfleet-e2e-'));
    const servers = (opts.natsCluster ?? 1) > 1 ? (await startNatsCluster({ dir: join(dir, 'nats'), size: opts.natsCluster! })).servers : [await startNatsServer({ dir: join(dir, 'nats'), host: opts.natsHost, maxPayload: opts.natsMaxPayload })];
    const c = new TestCluster(dir, servers, opts);
    const n = opts.scheduler === false ? 0 : (opts.schedulers ?? 1);
    for (let i = 1; i <= n; i++) c.startService(n > 1 ? `scheduler-${i}` : 'scheduler');
    if (opts.status !== false) c.startService('status');
    for (const h of opts.hosts ?? ['host-1', 'host-2']) c.startAgent(h);
    return c;
  }

  /** Starts (or restarts) `scheduler`, `scheduler-N` or `status`. */
  startService(name: string): ResultPromise {
    const status = name === 'status';
    const p = this.serve([status ? 'status' : 'scheduler', ...((status ? this.opts.statusArgs : this.opts.schedulerArgs) ?? [])], name);
    this.services.set(name, p);
    return p;
  }

  /** SIGKILLs a service (as a crash would) and waits for it to be gone. */
  async killService(name: string) {
    const p = this.services.get(name);
    if (!p) throw new Error(`no service ${name}`);
    p.kill('SIGKILL');
    await p;
    this.services.delete(name);
  }

  /** `wrap`: argv that runs the service, e.g. `nsenter --net=… --` for an agent in a network namespace. */
  private serve(args: string[], logName: string, wrap: string[] = []): ResultPromise {
    const log = join(this.dir, `${logName}.log`);
    const argv = [...wrap, process.execPath, cliPath, 'serve', ...args];
    return execa(argv[0]!, argv.slice(1), {
      env: { JAILFLEET_NATS_URL: this.url, JAILFLEET_LOG_LEVEL: this.opts.logLevel ?? 'debug' },
      // execa would SIGKILL 5 s after a SIGTERM: an agent removing many jails needs longer
      forceKillAfterDelay: false,
      stdin: 'ignore',
      stdout: { file: log, append: true },
      stderr: { file: log, append: true },
      reject: false,
      cleanup: true,
    });
  }

  /** Every host that ever had an agent: stop() tears down each, killed ones included. */
  private readonly hostsEver = new Set<string>();

  /** The wrap each host's agent last ran in (its network namespace): teardown runs there too. */
  private readonly wraps = new Map<string, string[]>();

  startAgent(host: string, extra: string[] = [], wrap: string[] = this.wraps.get(host) ?? []): ResultPromise {
    this.hostsEver.add(host);
    this.wraps.set(host, wrap);
    const p = this.serve(['agent', '--host', host, '--data-dir', join(this.dir, 'hosts', host), '--backoff-base-ms', '200', ...(this.opts.agentArgs ?? ROOMY_AGENT), ...extra], host, wrap);
    this.agents.set(host, p);
    return p;
  }

  log(name: string): string {
    try {
      return readFileSync(join(this.dir, `${name}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  /** Runs the built CLI against this cluster. */
  async cli(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
    const r = await execa(process.execPath, [cliPath, ...args], {
      env: { JAILFLEET_NATS_URL: this.url },
      input: opts.input,
      reject: false,
      timeout: opts.timeoutMs ?? 120_000,
    });
    return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  }

  async json<T = unknown>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json']);
    if (r.exitCode !== 0) throw new Error(`jailfleet ${args.join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Polls `check` until it returns a truthy value or the time is up. */
  async until<T>(what: string, check: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await check();
        if (v) return v;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
  }

  /**
   * The next heartbeat of `host` that satisfies `check`, read off the wire (the agent's own word,
   * not the status service's view). Throws after `timeoutMs` without one.
   */
  async heartbeat(host: string, check: (hb: Heartbeat) => boolean = () => true, timeoutMs = 20_000): Promise<Heartbeat> {
    const nc = await connect({ servers: this.natsServers.map((s) => s.url) });
    try {
      const sub = nc.subscribe(subjects.hb(host), { timeout: timeoutMs });
      const deadline = Date.now() + timeoutMs;
      for await (const m of sub) {
        const hb = heartbeatSchema.safeParse(m.json()).data;
        if (hb && check(hb)) return hb;
        if (Date.now() > deadline) break;
      }
      throw new Error(`no matching heartbeat of ${host} within ${timeoutMs} ms`);
    } finally {
      await nc.close();
    }
  }

  /**
   * Starts the agent of `host` and waits until that very process heartbeats: it has re-adopted
   * its jails, fenced stale copies and takes commands (an agent heartbeats only once it does).
   * Returns that first heartbeat: the jails the new agent holds, with their pids.
   */
  async startAgentServing(host: string, extra: string[] = [], wrap?: string[], timeoutMs = 30_000): Promise<Heartbeat> {
    const since = Date.now();
    const p = this.startAgent(host, extra, wrap);
    let served = false;
    const beat = this.heartbeat(host, (hb) => Date.parse(hb.startedAt) >= since, timeoutMs);
    const died = p.then(() => {
      if (!served) throw new Error(`agent ${host} exited (${p.exitCode}) before it served: see ${join(this.dir, `${host}.log`)}`);
    });
    // whichever loses the race must not surface later as an unhandled rejection
    beat.catch(() => undefined);
    died.catch(() => undefined);
    await Promise.race([beat, died]);
    served = true;
    return beat;
  }

  /** Who holds the scheduler lease (the lease record's `id`), from the leader bucket; undefined if nobody. */
  async leaseHolder(): Promise<string | undefined> {
    const nc = await connect({ servers: this.natsServers.map((s) => s.url) });
    try {
      const kv = await new Kvm(nc).open(BUCKET_LEADER);
      const e = await kv.get('scheduler');
      if (!e || e.operation !== 'PUT') return undefined;
      return String((e.json() as { id?: unknown }).id);
    } finally {
      await nc.close();
    }
  }

  /** Stops an agent the gentle way (jails keep running unless it was started to tear down). */
  async stopAgent(host: string, signal: NodeJS.Signals = 'SIGTERM') {
    const p = this.agents.get(host);
    if (!p) return;
    await stopWithin(p, signal, 5 * 60_000);
    this.agents.delete(host);
  }

  /**
   * Tears down: every agent destroys its jails (restarted with --teardown-on-exit), then the
   * services and the broker stop. Throws if anything is left mounted.
   */
  async stop(): Promise<void> {
    // schedulers first: nothing may be placed or moved while the hosts are torn down one by one
    for (const [name, p] of this.services) if (name !== 'status') await stopWithin(p, 'SIGTERM', 30_000);
    const hosts = [...this.hostsEver];
    for (const h of [...this.agents.keys()]) await this.stopAgent(h, 'SIGKILL');
    // a fresh agent per host re-adopts its jails and destroys them on the way out
    for (const h of hosts) {
      // a signal before it has re-adopted its jails would leave them behind: wait for it to serve
      // (an agent that cannot start is stopped anyway, and the checks below tell what it left)
      // a loaded machine may miss the first deadline: a second agent, given longer, tries again
      for (let attempt = 0; attempt < 2; attempt++) {
        const served = await this.startAgentServing(h, ['--teardown-on-exit'], undefined, 60_000).then(
          () => true,
          () => false,
        );
        await this.stopAgent(h, served ? 'SIGTERM' : 'SIGKILL');
        if (served) break;
      }
    }
    await Promise.all([...this.services.values()].map((s) => stopWithin(s, 'SIGTERM', 30_000)));
    await Promise.all(this.natsServers.map((s) => s.stop()));
    // a jail the agents failed to remove is killed here, and the test run is told
    const strays = jailProcesses(this.dir);
    for (const p of strays) {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    if (strays.length) {
      await new Promise((r) => setTimeout(r, 300));
      for (const host of new Set(strays.map((p) => p.host))) removeJailCgroups(join(this.dir, 'hosts', host));
    }
    const left = mountsUnder(this.dir);
    // whatever is left is released here (deepest first), and the run that left it fails
    for (const m of [...left].reverse()) await execa('umount', ['-l', m], { reject: false });
    if (strays.length) throw new Error(`jails left running under ${this.dir} (killed now): ${strays.map((p) => `${p.host}/${p.jail}`).join(', ')}`);
    if (left.length) throw new Error(`mounts left under ${this.dir} (released now): ${left.join(', ')}`);
    // JAILFLEET_KEEP_TEST_DIR=1 keeps the logs of a passing run too, for a look afterwards
    if (mountsUnder(this.dir).length === 0 && !process.env.JAILFLEET_KEEP_TEST_DIR) rmSync(this.dir, { recursive: true, force: true });
  }
}
