// A real cluster for end-to-end tests: a nats-server on a free port with its own store, and the
// built `jailfleet serve` processes (scheduler, status, agents). `stop()` tears everything down,
// jails included, and checks that nothing stays mounted under the cluster's directory.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { startNatsServer, type NatsServerHandle } from '../../services/common/nats-server.js';

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

export class TestCluster {
  readonly agents = new Map<string, ResultPromise>();
  private readonly services: ResultPromise[] = [];
  private constructor(
    readonly dir: string,
    readonly nats: NatsServerHandle,
  ) {}

  get url() {
    return this.nats.url;
  }

  static async start(opts: { hosts?: string[]; scheduler?: boolean; status?: boolean } = {}): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'jailfleet-e2e-'));
    const nats = await startNatsServer({ dir: join(dir, 'nats') });
    const c = new TestCluster(dir, nats);
    if (opts.scheduler !== false) c.services.push(c.serve(['scheduler'], 'scheduler'));
    if (opts.status !== false) c.services.push(c.serve(['status'], 'status'));
    for (const h of opts.hosts ?? ['host-1', 'host-2']) c.startAgent(h);
    return c;
  }

  private serve(args: string[], logName: string): ResultPromise {
    const log = join(this.dir, `${logName}.log`);
    return execa(process.execPath, [cliPath, 'serve', ...args], {
      env: { JAILFLEET_NATS_URL: this.url, JAILFLEET_LOG_LEVEL: 'debug' },
      // execa would SIGKILL 5 s after a SIGTERM: an agent removing many jails needs longer
      forceKillAfterDelay: false,
      stdin: 'ignore',
      stdout: { file: log, append: true },
      stderr: { file: log, append: true },
      reject: false,
      cleanup: true,
    });
  }

  startAgent(host: string, extra: string[] = []): ResultPromise {
    const p = this.serve(['agent', '--host', host, '--data-dir', join(this.dir, 'hosts', host), '--backoff-base-ms', '200', ...extra], host);
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
    const hosts = [...this.agents.keys()];
    for (const h of hosts) await this.stopAgent(h, 'SIGKILL');
    // a fresh agent per host re-adopts its jails and destroys them on the way out
    for (const h of hosts) {
      const starts = () => (this.log(h).match(/agent started/g) ?? []).length;
      const before = starts();
      const p = this.startAgent(h, ['--teardown-on-exit']);
      await this.until(`agent ${h} to start`, async () => starts() > before || p.exitCode !== null, 30_000).catch(() => undefined);
      await this.stopAgent(h, 'SIGTERM');
    }
    await Promise.all(this.services.map((s) => stopWithin(s, 'SIGTERM', 30_000)));
    await this.nats.stop();
    const left = mountsUnder(this.dir);
    if (left.length === 0) rmSync(this.dir, { recursive: true, force: true });
    if (left.length) throw new Error(`mounts left under ${this.dir}: ${left.join(', ')}`);
  }
}
