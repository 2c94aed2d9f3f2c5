// `jailfleet up`: a local cluster on this machine: nats-server with JetStream, a scheduler, a
// status service and N agents as child processes. On SIGINT/SIGTERM it removes the jails it ran,
// stops every child and the broker, and exits 0. It leaves nothing mounted or running.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { heartbeatSchema, subjects } from '../../contracts/index.js';
import { connectNats, decodeWith, startNatsCluster, startNatsServer } from '../common/index.js';
import { CliError } from './client.js';

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
  readyTimeoutMs?: number;
}

const mainJs = fileURLToPath(new URL('./main.js', import.meta.url));

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

export async function up(o: UpOptions): Promise<number> {
  if (process.getuid?.() !== 0) throw new CliError('up must run as root (agents make mounts and namespaces)');
  const dataDir = resolve(o.dataDir);
  mkdirSync(join(dataDir, 'logs'), { recursive: true, mode: 0o700 });
  const lock = join(dataDir, 'up.pid');
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, 'utf8'));
    if (pid && alive(pid)) throw new CliError(`another jailfleet up (pid ${pid}) uses ${dataDir}; stop it first or pass --data-dir`);
  }
  writeFileSync(lock, String(process.pid));

  const children: { name: string; proc: ReturnType<typeof spawnService>; role: 'scheduler' | 'agent' | 'service' }[] = [];
  let nats: { urls: string[]; stop(): Promise<void>; kill(): void } | undefined;
  let shuttingDown = false;

  const teardown = async () => {
    // schedulers first (nothing moves while hosts go away), then the agents: each destroys its
    // jails (stop, unmount, remove) before it exits; the status service and the broker last
    const stopAll = async (role: 'scheduler' | 'agent' | 'service') => {
      await Promise.all(
        children
          .filter((c) => c.role === role && c.proc.exitCode === null)
          .map(async (c) => {
            c.proc.kill('SIGTERM');
            // an agent removes every jail before it exits; that takes a while with many
            const t = setTimeout(() => c.proc.kill('SIGKILL'), role === 'agent' ? 15 * 60_000 : 30_000);
            await c.proc;
            clearTimeout(t);
          }),
      );
    };
    await stopAll('scheduler');
    await stopAll('agent');
    await stopAll('service');
    await nats?.stop();
    // the broker's store holds the desired state of the jails we just removed: start clean next time
    rmSync(join(dataDir, 'nats'), { recursive: true, force: true });
    rmSync(lock, { force: true });
  };

  try {
    const size = o.natsCluster ?? 1;
    if (size > 1) {
      const c = await startNatsCluster({ dir: join(dataDir, 'nats'), size, ports: Array.from({ length: size }, (_, i) => o.natsPort + i), detached: true });
      nats = { urls: c.urls, stop: () => c.stop(), kill: () => c.servers.forEach((s) => s.process.kill('SIGKILL')) };
    } else {
      const s = await startNatsServer({ dir: join(dataDir, 'nats'), port: o.natsPort, detached: true });
      nats = { urls: [s.url], stop: () => s.stop(), kill: () => s.process.kill('SIGKILL') };
    }
  } catch (err) {
    rmSync(lock, { force: true });
    throw new CliError((err as Error).message);
  }
  const url = nats.urls.join(',');
  const spawnChild = (name: string, role: 'scheduler' | 'agent' | 'service', args: string[]) => {
    const argv = [mainJs, 'serve', ...args, '--nats', url];
    const proc = spawnService(argv, join(dataDir, 'logs', `${name}.log`));
    children.push({ name, proc, role });
    void proc.then((r) => {
      if (!shuttingDown) {
        process.stderr.write(`jailfleet: ${name} exited unexpectedly (${r.signal ?? `code ${r.exitCode}`}); see ${join(dataDir, 'logs', `${name}.log`)}\n`);
        void shutdown(1);
      }
    });
  };

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
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    nats?.kill();
  });

  const hostNames = Array.from({ length: o.hosts }, (_, i) => `host-${i + 1}`);
  const schedulers = o.schedulers ?? 1;
  for (let i = 1; i <= schedulers; i++) spawnChild(schedulers > 1 ? `scheduler-${i}` : 'scheduler', 'scheduler', ['scheduler']);
  spawnChild('status', 'service', ['status']);
  for (const h of hostNames) {
    const capacity = [...(o.agentCpu !== undefined ? ['--cpu', String(o.agentCpu)] : []), ...(o.agentMemoryMB !== undefined ? ['--memory-mb', String(o.agentMemoryMB)] : [])];
    spawnChild(h, 'agent', ['agent', '--host', h, '--data-dir', join(dataDir, 'hosts', h), '--teardown-on-exit', ...capacity]);
  }

  // ready once every host has sent a heartbeat
  const nc = await connectNats(nats.urls, 'jailfleet-up', { waitOnFirstConnect: true });
  const pending = new Set(hostNames);
  await new Promise<void>((resolveReady) => {
    const timer = setTimeout(() => {
      process.stderr.write(`jailfleet: hosts not ready after ${(o.readyTimeoutMs ?? 60_000) / 1000} s: ${[...pending].join(',')}; see ${join(dataDir, 'logs')}\n`);
      void shutdown(1);
      resolveReady();
    }, o.readyTimeoutMs ?? 60_000);
    const sub = nc.subscribe(subjects.hbAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          pending.delete(decodeWith(heartbeatSchema, msg.data).host);
        } catch {
          return;
        }
        if (pending.size === 0) {
          clearTimeout(timer);
          sub.unsubscribe();
          resolveReady();
        }
      },
    });
    void exited.then(() => (clearTimeout(timer), resolveReady()));
  });
  await nc.close();
  if (!shuttingDown) {
    process.stdout.write(`ready: ${url} hosts=${hostNames.join(',')}\n`);
    process.stderr.write(`jailfleet: logs in ${join(dataDir, 'logs')}; Ctrl-C stops the cluster and removes its jails\n`);
  }
  return exited;
}
