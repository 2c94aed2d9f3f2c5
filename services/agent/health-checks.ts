// Runs the health checks of the running jails of this agent: one timer per jail, driven by the
// pure schedule of health-schedule.ts, and the three probes: exec inside the jail (through the
// driver's session process, the way `jailfleet exec` runs: the jail's cgroup, namespaces, root and
// capabilities), an HTTP GET and a TCP connect to the jail's address. It reports changes and the
// restart a check calls for; it must never change a jail itself (the agent's lifecycle does).
import { connect as tcpConnect } from 'node:net';
import { request as httpRequest } from 'node:http';
import { execa } from 'execa';
import { healthKindOf, type HealthCheck, type HealthKind, type HealthState, type JailSpec } from '../../contracts/index.js';
import type { Logger } from '../common/index.js';
import type { JailDriver, SessionSpawn } from './drivers/driver.js';
import { probeBegun, probeDue, probeEnded, startHealth, type HealthTrack } from './health-schedule.js';

export type ProbeResult = { ok: true } | { ok: false; reason: string };

/** Every probe's result (a metrics counter hooks here). */
export type HealthResultListener = (jail: string, kind: HealthKind, ok: boolean, reason: string | null) => void;

/** The address a jail's http and tcp checks go to. With `network: inherit` it shares the host's stack. */
export type JailAddress = (spec: JailSpec) => string;
export const inheritedAddress: JailAddress = () => '127.0.0.1';

export interface HealthChecksOptions {
  driver: JailDriver;
  log: Logger;
  address?: JailAddress;
  /** The jail's health or its reason changed. */
  onChange: (jail: string, status: HealthState, reason: string | null) => void;
  /** `failures` checks failed in a row: the jail should be restarted per its policy, with this reason. */
  onUnhealthy: (jail: string, reason: string) => void;
  onResult?: HealthResultListener;
  now?: () => number;
  /** Runs an exec check's session process (default: spawned with its control pipe on fd 3). */
  runCheckProcess?: CheckProcessRunner;
}

/** Runs `spawn` to its end or the timeout: its exit code (null when killed), whether it timed out, the start of its output. */
export type CheckProcessRunner = (spawn: SessionSpawn, timeoutMs: number, signal: AbortSignal) => Promise<{ exitCode: number | null; timedOut: boolean; output: string }>;

/** What a check's process may print that is kept for its reason. */
const REASON_OUTPUT_BYTES = 512;
/** Grace between SIGTERM to a check's session process (it kills the command's group) and SIGKILL. */
const KILL_GRACE_MS = 2000;

interface Watched {
  spec: JailSpec;
  check: HealthCheck;
  pid: number;
  track: HealthTrack;
  timer?: NodeJS.Timeout;
  /** Ends the probe in flight, when the jail stops being watched. */
  abort: AbortController;
}

export class HealthChecks {
  private readonly watched = new Map<string, Watched>();
  private readonly now: () => number;
  private readonly address: JailAddress;

  constructor(private readonly o: HealthChecksOptions) {
    this.now = o.now ?? Date.now;
    this.address = o.address ?? inheritedAddress;
  }

  /** The current health of a watched jail. */
  stateOf(jail: string): { status: HealthState; reason: string | null } | undefined {
    const w = this.watched.get(jail);
    return w && { status: w.track.status, reason: w.track.reason };
  }

  /**
   * Starts checking the run of `spec` whose init is `pid` (again, at `starting`, when the pid is
   * new). `carried`: why its last run was restarted, shown until a check passes.
   */
  watch(spec: JailSpec, pid: number, carried: string | null): void {
    const check = spec.health;
    if (!check) return this.unwatch(spec.name);
    const cur = this.watched.get(spec.name);
    if (cur && cur.pid === pid) return;
    this.unwatch(spec.name);
    const w: Watched = { spec, check, pid, track: startHealth(this.now(), carried), abort: new AbortController() };
    this.watched.set(spec.name, w);
    this.o.onChange(spec.name, w.track.status, w.track.reason);
    this.schedule(w);
  }

  unwatch(jail: string): void {
    const w = this.watched.get(jail);
    if (!w) return;
    clearTimeout(w.timer);
    w.abort.abort();
    this.watched.delete(jail);
  }

  stopAll(): void {
    for (const jail of [...this.watched.keys()]) this.unwatch(jail);
  }

  private schedule(w: Watched) {
    if (w.track.nextAt === null) return;
    w.timer = setTimeout(() => void this.tick(w), Math.max(0, w.track.nextAt - this.now()));
  }

  private async tick(w: Watched) {
    if (this.watched.get(w.spec.name) !== w || !probeDue(w.track, this.now())) return this.schedule(w);
    w.track = probeBegun(w.track, this.now());
    const kind = healthKindOf(w.check);
    const result = await this.probe(w, kind).catch((err: Error): ProbeResult => ({ ok: false, reason: err.message }));
    if (this.watched.get(w.spec.name) !== w) return; // stopped meanwhile: its result means nothing
    const before = { status: w.track.status, reason: w.track.reason };
    const r = probeEnded(w.track, w.check, this.now(), result);
    w.track = r.track;
    this.o.onResult?.(w.spec.name, kind, result.ok, result.ok ? null : result.reason);
    if (!result.ok) this.o.log.debug({ jail: w.spec.name, kind, reason: result.reason, inRow: w.track.failuresInRow }, 'health check failed');
    if (before.status !== w.track.status || before.reason !== w.track.reason) this.o.onChange(w.spec.name, w.track.status, w.track.reason);
    if (r.restart) {
      this.o.log.warn({ jail: w.spec.name, reason: r.restart }, 'unhealthy: restarting the jail per its policy');
      this.o.onUnhealthy(w.spec.name, r.restart);
      return;
    }
    this.schedule(w);
  }

  private probe(w: Watched, kind: HealthKind): Promise<ProbeResult> {
    const { check, spec } = w;
    if (kind === 'http') return httpProbe(this.address(spec), check.http!.port, check.http!.path, check.timeoutMs, w.abort.signal);
    if (kind === 'tcp') return tcpProbe(this.address(spec), check.tcp!.port, check.timeoutMs, w.abort.signal);
    return this.execProbe(spec, check.exec!, check.timeoutMs, w.abort.signal);
  }

  /**
   * The check's command in the jail, as a non-interactive session: the driver's session process
   * joins the jail's cgroup, namespaces and root (linux) or runs jexec (freebsd), by exact argv.
   */
  private async execProbe(spec: JailSpec, argv: string[], timeoutMs: number, signal: AbortSignal): Promise<ProbeResult> {
    const spawn = await this.o.driver.sessionSpawn(spec, { command: argv, login: false, tty: null });
    const r = await (this.o.runCheckProcess ?? runCheckProcess)(spawn, timeoutMs, signal);
    if (r.timedOut) return { ok: false, reason: `${argv[0]} timed out after ${timeoutMs} ms` };
    if (r.exitCode === 0) return { ok: true };
    const said = r.output.trim().split('\n').pop()?.slice(0, 200);
    return { ok: false, reason: `${argv[0]} exited ${r.exitCode ?? 'on a signal'}${said ? `: ${said}` : ''}` };
  }
}

/** The session helper of an exec check, with its control pipe on fd 3 held open for its life (its end kills the command). */
export const runCheckProcess: CheckProcessRunner = async (spawn, timeoutMs, signal) => {
  const child = execa(spawn.argv[0]!, spawn.argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: spawn.env, extendEnv: false, reject: false, buffer: false });
  let output = '';
  const keep = (b: Buffer) => {
    if (output.length < REASON_OUTPUT_BYTES) output += b.toString('utf8');
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let timedOut = false;
  // SIGTERM: the helper kills the command's group, then goes itself
  const kill = () => {
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS).unref();
  };
  const timer = setTimeout(() => ((timedOut = true), kill()), timeoutMs);
  signal.addEventListener('abort', kill, { once: true });
  const r = await child.finally(() => {
    clearTimeout(timer);
    signal.removeEventListener('abort', kill);
  });
  return { exitCode: r.exitCode ?? null, timedOut, output };
};

/** GET http://address:port/path: a 2xx or 3xx answer within the timeout passes. */
export function httpProbe(address: string, port: number, path: string, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const what = `GET http://${address.includes(':') ? `[${address}]` : address}:${port}${path}`;
  return new Promise((resolve) => {
    const req = httpRequest({ host: address, port, path, method: 'GET', timeout: timeoutMs, signal, headers: { 'user-agent': 'jailfleet-health', connection: 'close' } }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      resolve(code >= 200 && code < 400 ? { ok: true } : { ok: false, reason: `${what}: HTTP ${code}` });
    });
    // the whole answer within the timeout, not only the connection
    const deadline = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, reason: `${what}: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}` }));
    req.on('close', () => clearTimeout(deadline));
    req.end();
  });
}

/** A TCP connection to address:port accepted within the timeout passes. */
export function tcpProbe(address: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  const what = `tcp ${address.includes(':') ? `[${address}]` : address}:${port}`;
  return new Promise((resolve) => {
    const sock = tcpConnect({ host: address, port, signal });
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, reason: `${what}: timed out after ${timeoutMs} ms` }), timeoutMs);
    sock.once('connect', () => done({ ok: true }));
    sock.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, reason: `${what}: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}` }));
  });
}
