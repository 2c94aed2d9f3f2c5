// `jailfleet up`: a local cluster on this machine: nats-server with JetStream, a scheduler, a
// status service and N agents as child processes. It says `ready:` once a `run` would be placed at
// once. An agent that dies is a host failure to watch: `up` says so and keeps the rest running
// (`jailfleet up --restart-agent HOST` brings it back). On SIGINT/SIGTERM it removes the jails it
// ran (a dead agent's too), stops every child and the broker, and exits 0. If `up` itself is
// killed, its services notice (--exit-with-parent) and stop as on Ctrl-C, and the broker keeper
// stops the broker after them. It leaves nothing mounted or running.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { DEFAULT_DASHBOARD_ADDR, freePort, startNatsCluster, startNatsServer } from '../common/index.js';
import { CliError, Client } from './client.js';

export interface UpOptions {
  hosts: number;
  dataDir: string;
  natsPort: number;
  /** nats-servers: 1, or a cluster of 3 (client ports natsPort … natsPort+2), with R3 streams. */
  natsCluster?: number;
  /** Scheduler processes: one leads, the others stand by. */
  schedulers?: number;
  /** Passed to every agent as --cpu and --memory-mb; the machine's when not given. */
  agentCpu?: number;
  agentMemoryMB?: number;
  /** Passed to every agent as --allow-mount-source: where spec mounts may come from (none: refused). */
  allowMountSources?: readonly string[];
  readyTimeoutMs?: number;
  /**
   * The dashboard: where the status service serves it (null: not at all). Not given: 127.0.0.1:4280,
   * or a port the kernel picks when that one is taken.
   */
  http?: { host: string; port: number } | null;
}

const mainJs = fileURLToPath(new URL('./main.js', import.meta.url));
const keeperJs = fileURLToPath(new URL('./broker-keeper.js', import.meta.url));
/** The host TTL up gives the scheduler and the status service: `ready:` waits out the scheduler's warm-up of one TTL. */
const HOST_TTL_MS = 3000;
/** What the scheduler logs once it places (after its warm-up clock has started). */
const LEADING_LOG = 'leading: this scheduler places and commands';
const AGENT_STARTED_LOG = 'agent started';

/** The files of a running `up` in its data directory, shared with `up --restart-agent`. */
const upFiles = (dataDir: string) => ({
  lock: join(dataDir, 'up.pid'),
  /** `{ name: pid | null }` of every service up started (null: exited). */
  children: join(dataDir, 'up-children.json'),
  /** One empty file per agent to bring back; up looks on SIGUSR2. */
  restarts: join(dataDir, 'restart-requests'),
  logs: join(dataDir, 'logs'),
  /** The dashboard's token, readable by its owner alone: the URL up prints carries it. */
  dashboardToken: join(dataDir, 'dashboard-token'),
});

/** What the status service logs once its dashboard listens (with `url`). */
const DASHBOARD_LOG = 'dashboard listening';

/** True when nothing listens on host:port (a listen there succeeds). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((r) => {
    const srv = createServer();
    srv.once('error', () => r(false));
    srv.listen(port, host, () => srv.close(() => r(true)));
  });
}

/**
 * A new token for the dashboard, written where only the owner reads it (the file is made anew:
 * one left by an earlier run with other modes is not reused).
 */
function makeDashboardToken(file: string): string {
  const token = randomBytes(32).toString('base64url');
  rmSync(file, { force: true });
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return token;
}

/** A service child process: its output goes to its log file, its failure is ours to report. */
function spawnService(argv: string[], logFile: string) {
  return execa(process.execPath, argv, {
    // its own process group: a Ctrl-C in the terminal reaches `up` alone, which then stops the
    // agents first (they remove their jails), the services next and the broker last
    // execa would SIGKILL 5 s after a SIGTERM: an agent removing many jails needs longer, and
    // whoever stops it sets its own deadline
    forceKillAfterDelay: false,
    detached: true,
    stdin: 'ignore',
    stdout: { file: logFile, append: true },
    stderr: { file: logFile, append: true },
    reject: false,
    cleanup: true,
    env: { JAILFLEET_LOG_LEVEL: process.env.JAILFLEET_LOG_LEVEL ?? 'info' },
  });
}

function alive(pid: number) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readText = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};
const count = (text: string, needle: string) => text.split(needle).length - 1;

type Role = 'scheduler' | 'agent' | 'service';
interface Child {
  name: string;
  role: Role;
  proc: ReturnType<typeof spawnService>;
  /** Set once it exited, by a code or a signal (proc.exitCode stays null after a signal). */
  exited: boolean;
  /** Its log file: where this run's lines begin (the file keeps earlier runs' lines). */
  log: { path: string; from: number };
}

export async function up(o: UpOptions): Promise<number> {
  if (process.getuid?.() !== 0) throw new CliError('up must run as root (agents make mounts and namespaces)');
  const dataDir = resolve(o.dataDir);
  const files = upFiles(dataDir);
  mkdirSync(files.logs, { recursive: true, mode: 0o700 });
  if (existsSync(files.lock)) {
    const pid = Number(readFileSync(files.lock, 'utf8'));
    if (pid && alive(pid)) throw new CliError(`another jailfleet up (pid ${pid}) uses ${dataDir}; stop it first or pass --data-dir`);
  }
  writeFileSync(files.lock, String(process.pid));
  // the store of an `up` that was killed holds the desired state of jails its agents removed
  // when they noticed: start clean, as a Ctrl-C'd `up` leaves it
  rmSync(join(dataDir, 'nats'), { recursive: true, force: true });
  rmSync(files.restarts, { recursive: true, force: true });

  const children = new Map<string, Child>();
  /** Agents that died while up ran: their jails are still on this machine until torn down. */
  const deadAgents = new Set<string>();
  let nats: { urls: string[]; pids: number[]; stop(): Promise<void>; kill(): void } | undefined;
  let keeper: ReturnType<typeof execa> | undefined;
  let shuttingDown = false;
  const writeChildren = () =>
    writeFileSync(files.children, JSON.stringify(Object.fromEntries([...children.values()].map((c) => [c.name, c.exited ? null : (c.proc.pid ?? null)]))));

  const stopChild = async (c: Child) => {
    if (c.exited) return;
    c.proc.kill('SIGTERM');
    // an agent removes every jail before it exits; that takes a while with many
    const t = setTimeout(() => c.proc.kill('SIGKILL'), c.role === 'agent' ? 15 * 60_000 : 30_000);
    await c.proc;
    clearTimeout(t);
  };

  /** A dead agent's jails still run here: a fresh agent re-adopts them and destroys them on its way out. */
  const tearDownDeadAgent = async (host: string) => {
    const log = join(files.logs, `${host}.log`);
    const before = count(readText(log), AGENT_STARTED_LOG);
    const c = spawnAgent(host);
    for (const until = Date.now() + 60_000; Date.now() < until && !c.exited && count(readText(log), AGENT_STARTED_LOG) <= before; ) await sleep(100);
    await stopChild(c);
  };

  const teardown = async () => {
    // schedulers first (nothing moves while hosts go away), then the agents: each destroys its
    // jails (stop, unmount, remove) before it exits; the status service and the broker last
    const stopAll = (role: Role) => Promise.all([...children.values()].filter((c) => c.role === role).map(stopChild));
    await stopAll('scheduler');
    await Promise.all([stopAll('agent'), ...[...deadAgents].map(tearDownDeadAgent)]);
    await stopAll('service');
    await nats?.stop();
    keeper?.kill('SIGTERM');
    // the broker's store holds the desired state of the jails we just removed: start clean next time
    rmSync(join(dataDir, 'nats'), { recursive: true, force: true });
    rmSync(files.children, { force: true });
    rmSync(files.restarts, { recursive: true, force: true });
    rmSync(files.dashboardToken, { force: true });
    rmSync(files.lock, { force: true });
  };

  try {
    const size = o.natsCluster ?? 1;
    if (size > 1) {
      const c = await startNatsCluster({ dir: join(dataDir, 'nats'), size, ports: Array.from({ length: size }, (_, i) => o.natsPort + i), detached: true });
      nats = { urls: c.urls, pids: c.servers.map((s) => s.process.pid!), stop: () => c.stop(), kill: () => c.servers.forEach((s) => s.process.kill('SIGKILL')) };
    } else {
      const s = await startNatsServer({ dir: join(dataDir, 'nats'), port: o.natsPort, detached: true });
      nats = { urls: [s.url], pids: [s.process.pid!], stop: () => s.stop(), kill: () => s.process.kill('SIGKILL') };
    }
  } catch (err) {
    rmSync(files.lock, { force: true });
    throw new CliError((err as Error).message);
  }
  // stops the broker if `up` is SIGKILLed, once the services have stopped on their own
  keeper = execa(process.execPath, [keeperJs, String(process.pid), files.children, ...nats.pids.map(String)], {
    detached: true,
    stdio: 'ignore',
    reject: false,
    cleanup: false,
  });
  const url = nats.urls.join(',');

  // every service serves /metrics on a loopback port of its own, kept across an agent's restart
  const metricsPorts = new Map<string, number>();
  const metricsUrl = (name: string) => `http://127.0.0.1:${metricsPorts.get(name)}/metrics`;
  const restartCommand = (host: string) => `jailfleet up --data-dir ${dataDir} --restart-agent ${host}`;
  const spawnChild = (name: string, role: Role, args: string[]): Child => {
    const metrics = metricsPorts.has(name) ? ['--metrics-addr', `127.0.0.1:${metricsPorts.get(name)}`] : [];
    const argv = [mainJs, 'serve', ...args, '--nats', url, '--exit-with-parent', String(process.pid), ...metrics];
    const log = { path: join(files.logs, `${name}.log`), from: readText(join(files.logs, `${name}.log`)).length };
    const proc = spawnService(argv, log.path);
    const child: Child = { name, proc, role, exited: false, log };
    children.set(name, child);
    writeChildren();
    void proc.then((r) => {
      child.exited = true;
      if (children.get(name) === child) writeChildren();
      if (shuttingDown) return;
      const why = r.signal ? `signal ${r.signal}` : `code ${r.exitCode}`;
      if (role === 'agent') {
        // a host failure to watch, not a reason to stop: the scheduler moves its jails
        deadAgents.add(name);
        process.stderr.write(`jailfleet: ${name} exited (${why}): it is down now; the scheduler moves its jails. Bring it back with: ${restartCommand(name)}\n`);
        return;
      }
      process.stderr.write(`jailfleet: ${name} exited unexpectedly (${why}); see ${join(files.logs, `${name}.log`)}\n`);
      void shutdown(1);
    });
    return child;
  };
  const capacity = [
    ...(o.agentCpu !== undefined ? ['--cpu', String(o.agentCpu)] : []),
    ...(o.agentMemoryMB !== undefined ? ['--memory-mb', String(o.agentMemoryMB)] : []),
    ...(o.allowMountSources ?? []).flatMap((prefix) => ['--allow-mount-source', prefix]),
  ];
  const spawnAgent = (h: string) => spawnChild(h, 'agent', ['agent', '--host', h, '--data-dir', join(dataDir, 'hosts', h), '--teardown-on-exit', ...capacity]);

  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((r) => (resolveExit = r));
  const shutdown = async (code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    process.stderr.write('jailfleet: shutting down: removing jails, stopping services\n');
    await teardown().catch((err) => process.stderr.write(`jailfleet: teardown: ${(err as Error).message}\n`));
    resolveExit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGHUP', () => void shutdown(0));
  // the children are in their own process groups: never leave them behind if `up` itself dies
  process.on('exit', () => {
    for (const c of children.values()) if (!c.exited) c.proc.kill('SIGKILL');
    nats?.kill();
  });

  const hostNames = Array.from({ length: o.hosts }, (_, i) => `host-${i + 1}`);
  // `up --restart-agent HOST` leaves a request and sends SIGUSR2: bring back each dead agent asked for
  process.on('SIGUSR2', () => {
    const asked = readdirSafe(files.restarts);
    for (const h of asked) {
      rmSync(join(files.restarts, h), { force: true });
      if (shuttingDown || !hostNames.includes(h) || children.get(h)?.exited === false) continue;
      deadAgents.delete(h);
      spawnAgent(h);
      process.stderr.write(`jailfleet: ${h} restarted: it re-adopts what still runs there and comes back up\n`);
    }
  });

  const schedulers = o.schedulers ?? 1;
  const schedulerNames = Array.from({ length: schedulers }, (_, i) => (schedulers > 1 ? `scheduler-${i + 1}` : 'scheduler'));
  for (const name of [...schedulerNames, 'status', ...hostNames]) metricsPorts.set(name, await freePort());
  const ttl = ['--host-ttl-ms', String(HOST_TTL_MS)];
  for (const name of schedulerNames) spawnChild(name, 'scheduler', ['scheduler', ...ttl]);
  const dashboard = o.http === null ? undefined : await dashboardArgs();
  const status = spawnChild('status', 'service', ['status', ...ttl, ...(dashboard?.args ?? [])]);
  for (const h of hostNames) spawnAgent(h);

  const ready = await untilReady(o.readyTimeoutMs ?? 60_000, () => shuttingDown);
  if (shuttingDown) return exited;
  if (ready !== true) {
    process.stderr.write(`jailfleet: not ready after ${(o.readyTimeoutMs ?? 60_000) / 1000} s: ${ready}; see ${files.logs}\n`);
    void shutdown(1);
    return exited;
  }
  process.stdout.write(`ready: ${url} hosts=${hostNames.join(',')}\n`);
  process.stdout.write(`metrics: ${[...metricsPorts.keys()].map((name) => `${name}=${metricsUrl(name)}`).join(' ')}\n`);
  if (dashboard) {
    const at = await dashboardUrl(status);
    if (at) process.stdout.write(`dashboard: ${at}?token=${dashboard.token}\n`);
    else process.stderr.write(`jailfleet: the dashboard did not start; see ${status.log.path}\n`);
  }
  process.stderr.write(`jailfleet: logs in ${files.logs}; Ctrl-C stops the cluster and removes its jails\n`);
  return exited;

  /** The status service's flags for the dashboard, and the token it asks for. */
  async function dashboardArgs() {
    let addr = o.http ?? DEFAULT_DASHBOARD_ADDR;
    // the default port may be another cluster's: then any free one (an address asked for is kept, and fails loudly)
    if (o.http === undefined && !(await portFree(addr.host, addr.port))) addr = { ...addr, port: 0 };
    const token = makeDashboardToken(files.dashboardToken);
    const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
    return { token, args: ['--http-addr', `${host}:${addr.port}`, '--http-token-file', files.dashboardToken] };
  }

  /** The dashboard's URL from the status service's log line, once it listens (at most 10 s). */
  async function dashboardUrl(c: Child): Promise<string | undefined> {
    for (const until = Date.now() + 10_000; Date.now() < until && !c.exited; await sleep(100)) {
      for (const line of readText(c.log.path).slice(c.log.from).split('\n')) {
        if (!line.includes(DASHBOARD_LOG)) continue;
        try {
          return String((JSON.parse(line) as { url: unknown }).url);
        } catch {
          // a line cut short while written: read again
        }
      }
    }
    return undefined;
  }

  /**
   * True once a `run` would be placed at once: every agent shows `up` in `jailfleet hosts`, and
   * the scheduler's warm-up (one host TTL from its start, before which it places nothing) has
   * passed. Else what is still missing, when the time is up.
   */
  async function untilReady(timeoutMs: number, stopped: () => boolean): Promise<true | string> {
    const deadline = Date.now() + timeoutMs;
    let leadingSince: number | undefined;
    let missing = 'the status service';
    let client: Client | undefined;
    try {
      while (!stopped()) {
        // the scheduler logs "leading" after its warm-up clock started: TTL from then is past it
        if (leadingSince === undefined && [...children.values()].some((c) => c.role === 'scheduler' && readText(c.log.path).slice(c.log.from).includes(LEADING_LOG))) {
          leadingSince = Date.now();
        }
        client ??= await Client.connect(nats!.urls).catch(() => undefined);
        const up = client ? await client.hosts().then((r) => new Set(r.hosts.filter((h) => h.status === 'up').map((h) => h.host)), () => undefined) : undefined;
        const down = hostNames.filter((h) => !up?.has(h));
        missing = !up ? 'the status service' : down.length ? `hosts ${down.join(',')}` : 'the scheduler';
        if (up && down.length === 0 && leadingSince !== undefined && Date.now() >= leadingSince + HOST_TTL_MS) return true;
        if (Date.now() > deadline) return missing;
        await sleep(100);
      }
      return missing;
    } finally {
      await client?.close();
    }
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * `jailfleet up --restart-agent HOST`: asks the `up` running on `dataDir` to start its dead agent
 * HOST again (with the flags it first had), and waits until it runs.
 */
export async function restartAgent(o: { dataDir: string; host: string }): Promise<number> {
  const dataDir = resolve(o.dataDir);
  const files = upFiles(dataDir);
  const upPid = Number(readText(files.lock));
  if (!upPid || !alive(upPid)) throw new CliError(`no jailfleet up runs on ${dataDir}; start one with: jailfleet up --data-dir ${dataDir}`);
  const pids = () => {
    try {
      return JSON.parse(readText(files.children)) as Record<string, number | null>;
    } catch {
      return {};
    }
  };
  const known = pids();
  if (!(o.host in known) || !o.host.startsWith('host-')) throw new CliError(`${o.host} is not an agent of this up (its agents: ${Object.keys(known).filter((n) => n.startsWith('host-')).join(', ')})`);
  const before = known[o.host];
  if (before && alive(before)) throw new CliError(`${o.host} is running (pid ${before}); nothing to restart`);
  mkdirSync(files.restarts, { recursive: true, mode: 0o700 });
  writeFileSync(join(files.restarts, o.host), '');
  process.kill(upPid, 'SIGUSR2');
  for (const until = Date.now() + 10_000; Date.now() < until; await sleep(100)) {
    const pid = pids()[o.host];
    if (pid && pid !== before && alive(pid)) {
      process.stdout.write(`${o.host} restarted (pid ${pid}); it shows up in \`jailfleet hosts\` after its first heartbeat\n`);
      return 0;
    }
  }
  throw new CliError(`up (pid ${upPid}) did not restart ${o.host} within 10 s; see ${join(files.logs, `${o.host}.log`)}`);
}
