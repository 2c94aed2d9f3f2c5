// `jailfleet serve agent|scheduler|status`: one service in the foreground, as a deploy unit runs
// it. SIGINT/SIGTERM stop it cleanly; an agent leaves its jails running unless told to tear down.
import { Agent, machineCapacity } from '../agent/index.js';
import type { Labels, PlacementStrategy } from '../../contracts/index.js';
import { LinuxDriver } from '../agent/drivers/linux.js';
import { createLogger } from '../common/index.js';
import { Scheduler } from '../scheduler/index.js';
import { StatusService } from '../status/index.js';
import { CliError } from './client.js';

interface Stoppable {
  stop(): Promise<void>;
}

/** Runs until SIGINT or SIGTERM, then stops the service and exits 0. */
async function runUntilSignal(service: Stoppable, log: ReturnType<typeof createLogger>): Promise<void> {
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'stopping');
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
}) {
  if (process.platform !== 'linux') throw new CliError(`the ${process.platform} driver cannot run here yet: serve agent needs Linux`);
  if (process.getuid?.() !== 0) throw new CliError('serve agent must run as root (it makes mounts and namespaces)');
  const log = createLogger('agent', { host: o.host });
  const driver = new LinuxDriver({ dataDir: o.dataDir, logger: log });
  const agent = new Agent({
    host: o.host,
    dataDir: o.dataDir,
    servers: o.servers,
    driver,
    logger: log,
    heartbeatMs: o.heartbeatMs,
    capacity: { ...machineCapacity(), ...(o.cpu !== undefined && { cpu: o.cpu }), ...(o.memoryMB !== undefined && { memoryMB: o.memoryMB }) },
    labels: o.labels,
    maxParallelSteps: o.parallelSteps,
    backoff: o.backoffBaseMs ? { baseMs: o.backoffBaseMs, maxMs: 30_000 } : undefined,
  });
  await agent.start();
  await runUntilSignal({ stop: () => agent.stop({ teardown: o.teardownOnExit }) }, log);
}

export async function serveScheduler(o: { servers: string[]; hostTtlMs: number; leaseMs: number; strategy: PlacementStrategy }) {
  const log = createLogger('scheduler');
  const s = new Scheduler({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs, leaseMs: o.leaseMs, strategy: o.strategy });
  await s.start();
  await runUntilSignal(s, log);
}

export async function serveStatus(o: { servers: string[]; hostTtlMs: number }) {
  const log = createLogger('status');
  const s = new StatusService({ servers: o.servers, logger: log, hostTtlMs: o.hostTtlMs });
  await s.start();
  await runUntilSignal(s, log);
}
