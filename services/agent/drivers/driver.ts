// The one interface behind which the freebsd and linux drivers sit. The lifecycle machine's
// invoked steps call it; every method is idempotent, because a restarted agent may repeat a step.
import type { JailSpec, ExecResult } from '../../../contracts/index.js';

export type DriverKind = 'linux' | 'freebsd';

/** What the driver itself can see of a jail, without the agent's memory. */
export interface JailInspection {
  name: string;
  /** Root filesystem exists under the data directory. */
  prepared: boolean;
  /** Mounts made by `mount` are in place. */
  mounted: boolean;
  /** Host pid of the jail's init if it is alive (checked against its recorded start time). */
  pid: number | null;
}

/** How a jail's init ended. */
export interface JailExit {
  /** 128 + signal when killed, null when unknown. */
  exitCode: number | null;
  /** The kernel killed a process of the jail at its memory limit, and the jail then ended with a non-zero code. */
  outOfMemory?: boolean;
}

export interface ExecOptions {
  timeoutMs: number;
  maxOutputBytes: number;
}

/** What a session's process is: spawned by the agent with pipes on fds 0-2 and a control pipe on 3. */
export interface SessionSpawn {
  argv: string[];
  env: Record<string, string>;
}

/** A command of a session: its argv (or the jail's login shell) and a terminal or none. */
export interface SessionCommand {
  command: string[];
  login: boolean;
  tty: { rows: number; cols: number; term: string } | null;
}

export interface JailDriver {
  readonly kind: DriverKind;
  /** Builds the jail's root filesystem (thin: read-only binds of a base, a generated /etc). */
  prepare(spec: JailSpec): Promise<void>;
  /** Makes /dev, /tmp and the spec's mounts inside the root. */
  mount(spec: JailSpec): Promise<void>;
  /** Starts the jail detached (it outlives the agent), under its spec's resource limits; resolves with the host pid of its init. */
  start(spec: JailSpec): Promise<{ pid: number }>;
  /**
   * Resolves when the jail whose init has host pid `pid` has exited, with its exit code and
   * whether its memory limit killed it. Works for jails started by an earlier agent.
   * Rejects with an AbortError when `signal` aborts.
   */
  wait(name: string, pid: number, signal: AbortSignal): Promise<JailExit>;
  /** SIGTERM to the jail's init, SIGKILL after spec.stopTimeoutMs; no process of the jail is left. */
  stop(spec: JailSpec): Promise<{ exitCode: number | null }>;
  /** Releases every mount that `prepare` and `mount` made, keeping the root's files. */
  unmount(spec: JailSpec): Promise<void>;
  /** Stops, unmounts and removes everything the driver made for this jail, its limits included. */
  destroy(name: string): Promise<void>;
  inspect(name: string): Promise<JailInspection>;
  /** Names of every jail the driver has state for on this host. */
  list(): Promise<string[]>;
  /** The last `lines` lines of the jail's console (its command's stdout and stderr). */
  consoleTail(name: string, lines: number): Promise<{ text: string; truncated: boolean }>;
  /** The file the jail's console is appended to, run after run (`jailfleet logs -f` follows it). */
  consoleFile(name: string): Promise<string>;
  /** Runs argv inside a running jail (its namespaces and root), non-interactive. */
  exec(spec: JailSpec, argv: string[], options: ExecOptions): Promise<ExecResult>;
  /**
   * The process of a session in a running jail (native/jailsession.c's protocol: fd 3 takes
   * "w ROWS COLS" and "k SIGNO" lines, its end ends the command): in the jail's namespaces,
   * root and resource limits, with the jail's capabilities.
   */
  sessionSpawn(spec: JailSpec, command: SessionCommand): Promise<SessionSpawn>;
  /**
   * The process of one `cp` into (`unpack`, the stream on its stdin) or out of (`pack`, on its
   * stdout) a running jail; the stream format is native/jailfs.c's. Every path stays in the jail's root.
   */
  copySpawn(spec: JailSpec, direction: 'pack' | 'unpack', path: string, maxBytes: number): Promise<SessionSpawn>;
  /**
   * What a running jail uses now (cpu seconds since it started, memory bytes), read when asked:
   * the agent's metrics and the ps usage column. Null when not known (not running). Optional: a
   * driver without it reports no usage.
   */
  usage?(name: string): Promise<{ cpuSeconds: number; memoryBytes: number } | null>;
}

/** The unpacked image a spec's `image` names, on this host (the agent's image cache). */
export interface ImageSource {
  /** The digest a reference means: its own, else `recorded` (what the jail was prepared from), else its tag's in the cluster. */
  resolve(ref: string, recorded: string | null): Promise<string>;
  /** The unpacked root of `digest`, fetched first if this host has not got it. */
  ensure(digest: string): Promise<string>;
}

export type DriverStepName = 'prepare' | 'mount' | 'start' | 'stop' | 'unmount' | 'destroy' | 'exec' | 'copy';

/**
 * A driver step failed: carries the step, the argv that failed and its stderr. `reason` is the
 * failure without the step and the jail, which a state event names already; `message` names all.
 */
export class DriverStepFailed extends Error {
  readonly reason: string;
  constructor(
    readonly step: DriverStepName,
    message: string,
    readonly argv: string[] = [],
    readonly stderr = '',
    options: { cause?: unknown; reason?: string } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DriverStepFailed';
    this.reason = options.reason ?? message;
  }

  /** `<step> of jail <jail> failed: <reason>`, the one form of a failed step's message. */
  static of(step: DriverStepName, jail: string, reason: string, detail: { argv?: string[]; stderr?: string; cause?: unknown } = {}): DriverStepFailed {
    return new DriverStepFailed(step, `${step} of jail ${jail} failed: ${reason}`, detail.argv, detail.stderr, { cause: detail.cause, reason });
  }
}

/** A jail's spec.json, read back from the driver's directory, is not what its contract says. */
export class SavedSpecInvalid extends Error {
  constructor(
    readonly file: string,
    /** The first field that broke its rule (dotted path), or null when the file is no JSON at all. */
    readonly field: string | null,
    why: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${why}`, options);
    this.name = 'SavedSpecInvalid';
  }
}
