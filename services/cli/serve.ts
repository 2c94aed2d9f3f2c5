// `jailfleet serve agent|scheduler|status`: one service in the foreground, as a deploy unit runs
// it. SIGINT/SIGTERM stop it cleanly; an agent leaves its jails running unless told to tear down.
// With --exit-with-parent PID (set by `jailfleet up`) it also stops, the same way, once that
// process is gone: a killed `up` must not leave orphans retrying a dead broker forever.
import { join } from 'node:path';
import { Agent, machineCapacity } from '../agent/index.js';
import type { Labels, PlacementStrategy } from '../../contracts/index.js';
import { LinuxDriver } from '../agent/drivers/linux.js';
import { ImageCache } from '../agent/image-cache.js';
import { ImageStore } from '../common/image-store.js';
import { connectNats } from '../common/nats.js';
import { createLogger } from '../common/index.js';
import { Scheduler } from '../scheduler/index.js';
import { StatusService } from '../status/index.js';
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

/** `start()`, given up (exit 1) if `exitWithParent` dies meanwhile: a start may wait on a broker that died with it. */
async function startWatched(start: () => Promise<void>, log: ReturnType<typeof createLogger>, exitWithParent?: number): Promise<void> {
  const early =
    exitWithParent === undefined
      ? undefined
      : watchParent(exitWithParent, () => {
          log.warn({ parent: exitWithParent }, 'parent gone while starting: exiting');
          log.flush(() => process.exit(1));
        });
  try {
    await start();
  } finally {
    clearInterval(early);
  }
}

/** Runs until SIGINT or SIGTERM (or the death of `exitWithParent`), then stops the service and exits 0. */
async function runUntilSignal(service: Stoppable, log: ReturnType<typeof createLogger>, exitWithParent?: number): Promise<void> {
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals | 'parent gone') => {
      if (stopping) return;
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
          resolve();
        },
        (err) => {
          log.error({ err }, 'stop failed');
          log.flush(() => process.exit(1));
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const parentWatch = exitWithParent === undefined ? undefined : watchParent(exitWithParent, () => onSignal('parent gone'));
  });
}

export async function serveAgent(o: {
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
  /** Stop (and tear down, with teardownOnExit) once this process is gone: `jailfleet up`. */
  exitWithParent?: number;
  /** Unpacked images kept before the least recently used unused ones go, in MB. */
  imageCacheMB?: number;
  /** The largest image this agent unpacks, in MB. */
  maxImageMB?: number;
}) {
  if (process.platform !== 'linux') throw new CliError(`the ${process.platform} driver cannot run here yet: serve agent needs Linux`);
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
  const driver = new LinuxDriver({ dataDir: o.dataDir, logger: log, images: cache, volumes: o.volumes });
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
  await startWatched(() => agent.start(), log, o.exitWithParent);
  await runUntilSignal({ stop: () => agent.stop({ teardown: o.teardownOnExit }) }, log, o.exitWithParent);
}

export async function serveScheduler(o: { servers: string[]; hostTtlMs: number; leaseMs: number; strategy: PlacementStrategy; exitWithParent?: number }) {
  const log = createLogger('scheduler');
  const s = new Scheduler({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs, leaseMs: o.leaseMs, strategy: o.strategy });
  await startWatched(() => s.start(), log, o.exitWithParent);
  await runUntilSignal(s, log, o.exitWithParent);
}

export async function serveStatus(o: { servers: string[]; hostTtlMs: number; exitWithParent?: number }) {
  const log = createLogger('status');
  const s = new StatusService({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs });
  await startWatched(() => s.start(), log, o.exitWithParent);
  await runUntilSignal(s, log, o.exitWithParent);
}
