// `jailfleet serve agent|scheduler|status`: one service in the foreground, as a deploy unit runs
// it. SIGINT/SIGTERM stop it cleanly; an agent leaves its jails running unless told to tear down.
// With --exit-with-parent PID (set by `jailfleet up`) it also stops, the same way, once that
// process is gone: a killed `up` must not leave orphans retrying a dead broker forever.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, machineCapacity } from '../agent/index.js';
import type { Labels, PlacementStrategy } from '../../contracts/index.js';
import { LinuxDriver } from '../agent/drivers/linux.js';
import { ImageCache } from '../agent/image-cache.js';
import { ImageStore } from '../common/image-store.js';
import { connectNats } from '../common/nats.js';
import { createLogger } from '../common/index.js';
import type { JailNetwork } from '../common/jail-network.js';
import { Scheduler } from '../scheduler/index.js';
import { StatusService } from '../status/index.js';
import { MetricsEndpoint } from '../common/metrics.js';
import type { MetricsAddr } from '../common/metrics-addr.js';
import type { Registry } from 'prom-client';
import { CliError } from './client.js';

interface Stoppable {
  stop(): Promise<void>;
}

/** How often a service started with --exit-with-parent looks for its parent. */
const PARENT_POLL_MS = 500;

/**
 * Calls `onGone` once process `pid` is gone. Node cannot reach prctl(PR_SET_PDEATHSIG), so this
 * polls: a changed ppid (we were reparented) says it at once even if the pid were reused.
 */
function watchParent(pid: number, onGone: () => void): NodeJS.Timeout {
  const wasParent = process.ppid === pid;
  const timer = setInterval(() => {
    let gone = wasParent && process.ppid !== pid;
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') gone = true;
    }
    if (gone) {
      clearInterval(timer);
      onGone();
    }
  }, PARENT_POLL_MS);
  return timer;
}

/**
 * The service with its /metrics endpoint (when `at` is given): it listens before the service
 * starts, so a port already taken fails the start at once, and it closes after the service stopped.
 */
function withMetrics(service: Stoppable & { start(): Promise<void> }, registry: Registry, at: MetricsAddr | undefined, log: ReturnType<typeof createLogger>) {
  if (!at) return service;
  let endpoint: MetricsEndpoint | undefined;
  return {
    async start() {
      endpoint = await MetricsEndpoint.listen(registry, at);
      log.info({ url: endpoint.url }, 'serving metrics');
      await service.start();
    },
    async stop() {
      await service.stop();
      await endpoint?.close();
    },
  };
}

/** How long a signal that arrived during start waits for the start to finish before giving up. */
const START_GRACE_MS = 60_000;

/**
 * Starts `service`, then runs it until SIGINT or SIGTERM (or the death of `exitWithParent`), then
 * stops it and exits 0. The handlers are in place before the start: a signal that arrives while
 * the service is starting (an agent re-adopting its jails may already have sent its first
 * heartbeat) stops it as soon as the start is done, with the same teardown; it is never an exit
 * that skips the teardown. A start that does not finish within START_GRACE_MS after such a
 * signal, a second signal, or a parent that dies during the start (its broker may have died with
 * it), exits 1.
 */
async function serve(service: Stoppable & { start(): Promise<void> }, log: ReturnType<typeof createLogger>, exitWithParent?: number): Promise<void> {
  let started = false;
  let stopping = false;
  let pending: NodeJS.Signals | 'parent gone' | undefined;
  let parentWatch: NodeJS.Timeout | undefined;
  const stop = (sig: NodeJS.Signals | 'parent gone') => {
    stopping = true;
    clearInterval(parentWatch);
    log.info(sig === 'parent gone' ? { parent: exitWithParent } : { signal: sig }, sig === 'parent gone' ? 'parent gone: stopping' : 'stopping');
    // an agent tearing down removes every jail first: that may take minutes with many
    const force = setTimeout(() => process.exit(1), 20 * 60_000);
    // once stopped, exit: a client library's timer (a KV watch re-subscribing to a closed
    // connection) must not keep a stopped service alive
    service.stop().then(
      () => {
        clearTimeout(force);
        log.info('stopped');
        log.flush(() => process.exit(0));
      },
      (err) => {
        log.error({ err }, 'stop failed');
        log.flush(() => process.exit(1));
      },
    );
  };
  const onSignal = (sig: NodeJS.Signals | 'parent gone') => {
    if (stopping) return;
    if (started) return stop(sig);
    // nobody is left to wait for, or a second signal says not to wait
    if (sig === 'parent gone' || pending) {
      log.warn(sig === 'parent gone' ? { parent: exitWithParent } : { signal: sig }, sig === 'parent gone' ? 'parent gone while starting: exiting' : 'second signal while starting: exiting');
      log.flush(() => process.exit(1));
      return;
    }
    pending = sig;
    log.info({ signal: sig }, 'signal while starting: stopping once started');
    setTimeout(() => {
      log.error('still starting: exiting without a clean stop');
      log.flush(() => process.exit(1));
    }, START_GRACE_MS).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (exitWithParent !== undefined) parentWatch = watchParent(exitWithParent, () => onSignal('parent gone'));
  await service.start();
  started = true;
  if (pending) stop(pending);
  // runs until a signal: the stop exits the process
  await new Promise<never>(() => undefined);
}

export async function serveAgent(o: {
  /** The jail network and bridge of vnet jails (`--jail-cidr`, `--jail-bridge`). */
  jailNetwork?: JailNetwork;
  jailBridge?: string;
  host: string;
  dataDir: string;
  servers: string[];
  heartbeatMs: number;
  teardownOnExit: boolean;
  backoffBaseMs?: number;
  /** Driver steps at once (default 4). */
  parallelSteps?: number;
  /** What the host offers to jails; each one not given is the machine's. */
  cpu?: number;
  memoryMB?: number;
  labels: Labels;
  /** Host volumes: name → directory and whether it is offered read-only. */
  volumes: Map<string, { path: string; readOnly: boolean }>;
  /** Host directories spec mounts may come from (none: spec mounts are refused). */
  allowMountSources: string[];
  /** Stop (and tear down, with teardownOnExit) once this process is gone: `jailfleet up`. */
  exitWithParent?: number;
  /** Unpacked images kept before the least recently used unused ones go, in MB. */
  imageCacheMB?: number;
  /** The largest image this agent unpacks, in MB. */
  maxImageMB?: number;
  /** Serve /metrics here. */
  metricsAddr?: MetricsAddr;
  /** freebsd: jail roots (and images) as zfs clones below this dataset. */
  zfsDataset?: string;
}) {
  if (process.platform !== 'linux' && process.platform !== 'freebsd') throw new CliError(`serve agent runs on Linux or FreeBSD, not ${process.platform}`);
  if (o.zfsDataset !== undefined && process.platform !== 'freebsd') throw new CliError('--zfs-dataset: only the freebsd driver uses zfs clones; the linux driver gives an image jail an overlay', 2);
  if (process.getuid?.() !== 0) throw new CliError('serve agent must run as root (it makes mounts and namespaces)');
  const log = createLogger('agent', { host: o.host });
  // images come over a connection of their own: a 100 MB fetch must not delay a heartbeat
  let images: Promise<ImageStore> | undefined;
  let imagesNc: ReturnType<typeof connectNats> | undefined;
  const imageStore = () =>
    (images ??= (imagesNc ??= connectNats(o.servers, `jailfleet-agent-${o.host}-images`, { waitOnFirstConnect: true }))
      .then((nc) => ImageStore.open(nc))
      .catch(async (err: unknown) => {
        // asked again at the next jail's prepare: a broker that was electing leaders may be ready
        images = undefined;
        if (await imagesNc?.then(() => false, () => true)) imagesNc = undefined;
        throw err;
      }));
  const cache: ImageCache = new ImageCache({
    dir: join(o.dataDir, 'images'),
    store: imageStore,
    inUse: () => driver.imagesInUse(),
    cacheBytes: o.imageCacheMB === undefined ? undefined : o.imageCacheMB * 1024 * 1024,
    maxImageBytes: o.maxImageMB === undefined ? undefined : o.maxImageMB * 1024 * 1024,
    logger: log,
  });
  const driver =
    process.platform === 'freebsd'
      ? new (await import('../agent/drivers/freebsd.js')).FreebsdDriver({ dataDir: o.dataDir, logger: log, images: cache, volumes: o.volumes, zfsDataset: o.zfsDataset })
      : new LinuxDriver({ dataDir: o.dataDir, logger: log, images: cache, volumes: o.volumes, allowMountSources: o.allowMountSources, ...(o.jailNetwork ? { vnet: { network: o.jailNetwork, bridge: o.jailBridge } } : {}) });
  const agent = new Agent({
    host: o.host,
    dataDir: o.dataDir,
    servers: o.servers,
    driver,
    logger: log,
    heartbeatMs: o.heartbeatMs,
    capacity: { ...machineCapacity(), ...(o.cpu !== undefined && { cpu: o.cpu }), ...(o.memoryMB !== undefined && { memoryMB: o.memoryMB }) },
    labels: o.labels,
    volumes: Object.fromEntries([...o.volumes].map(([name, v]) => [name, v.readOnly])),
    images: () => cache.snapshot(),
    maxParallelSteps: o.parallelSteps,
    backoff: o.backoffBaseMs ? { baseMs: o.backoffBaseMs, maxMs: 30_000 } : undefined,
  });
  const service = { start: () => agent.start(), stop: () => agent.stop({ teardown: o.teardownOnExit }) };
  await serve(withMetrics(service, agent.metrics.registry, o.metricsAddr, log), log, o.exitWithParent);
}

export async function serveScheduler(o: { servers: string[]; hostTtlMs: number; leaseMs: number; strategy: PlacementStrategy; jailNetwork: JailNetwork; exitWithParent?: number; metricsAddr?: MetricsAddr }) {
  const log = createLogger('scheduler');
  const s = new Scheduler({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs, leaseMs: o.leaseMs, strategy: o.strategy, jailNetwork: o.jailNetwork });
  await serve(withMetrics(s, s.metrics.registry, o.metricsAddr, log), log, o.exitWithParent);
}

export async function serveStatus(o: { servers: string[]; hostTtlMs: number; exitWithParent?: number; metricsAddr?: MetricsAddr; http?: { host: string; port: number }; httpTokenFile?: string }) {
  const log = createLogger('status');
  if (o.httpTokenFile !== undefined && !o.http) throw new CliError('--http-token-file: only with --http-addr', 2);
  const token = o.httpTokenFile === undefined ? undefined : readToken(o.httpTokenFile);
  const s = new StatusService({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs, ...(o.http && { http: { ...o.http, token } }) });
  await serve(withMetrics(s, s.metrics, o.metricsAddr, log), log, o.exitWithParent);
}

/** The dashboard's token: the file's first line, which must not be empty. */
function readToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliError(`--http-token-file: cannot read ${file}: ${(err as Error).message}`, 2);
  }
  const token = text.split('\n')[0]!.trim();
  if (token.length < 16) throw new CliError(`--http-token-file: ${file} holds no token of at least 16 characters`, 2);
  return token;
}
