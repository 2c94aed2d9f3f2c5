// The agent's side of sessions (contracts/session.ts): `exec`, `console` and `cp` processes in
// running jails, spawned from the driver's argv and wired to their session's frames. Output is
// read only as fast as the CLI's credit allows (the process blocks on a full pipe meanwhile);
// stdin is credited once the process has taken it. A session ends with its process, and its
// process ends with the session: on `close`, on the CLI's silence, on a timeout, on agent stop.
// It must never keep a process running that nobody can reach, nor run one through a shell.
import { execa } from 'execa';
import type { NatsConnection } from '@nats-io/transport-node';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { FRAME, subjects, type JailSpec, type SessionExit, type SessionRequest } from '../../contracts/index.js';
import { SessionChannel, type SessionLost } from '../common/session-channel.js';
import type { Logger } from '../common/logger.js';
import type { JailDriver } from './drivers/driver.js';
import { readConsoleFrom, readConsoleTail, tailStart } from './drivers/console-log.js';
import { consoleOffsetSince } from './console-times.js';
import { DEFAULT_LOG_LINES } from '../common/defaults.js';

/** The exit code of a command its session's --timeout killed (as timeout(1) says). */
const TIMEOUT_EXIT = 124;
/** Grace between SIGTERM to a session's process (it kills the command's group) and SIGKILL. */
const KILL_GRACE_MS = 2000;
/** How often `logs -f` looks at the console file and the jail's pid when nothing new came. */
const LOGS_POLL_MS = 200;

export class JailSessions {
  private readonly live = new Map<string, () => void>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly host: string,
    private readonly driver: JailDriver,
    private readonly log: Logger,
    /** Whether this agent still holds the jail (a `logs -f` of a jail that left ends, saying so). */
    private readonly holds: (jail: string) => boolean = () => true,
  ) {}

  /** Starts the session's process; resolves once its frames are listened for. */
  async open(spec: JailSpec, req: SessionRequest): Promise<{ id: string }> {
    if (req.kind === 'logs') return this.openLogs(spec.name, req);
    const spawn =
      req.kind === 'exec'
        ? await this.driver.sessionSpawn(spec, { command: req.command, login: req.login, tty: req.tty })
        : await this.driver.copySpawn(spec, req.kind === 'copy-in' ? 'unpack' : 'pack', req.path, req.maxBytes);
    const takesStdin = req.kind === 'copy-in' || (req.kind === 'exec' && req.stdin);
    const child = execa(spawn.argv[0]!, spawn.argv.slice(1), {
      stdio: [takesStdin ? 'pipe' : 'ignore', 'pipe', 'pipe', 'pipe'],
      env: spawn.env,
      extendEnv: false,
      buffer: false,
      reject: false,
    });
    const log = this.log.child({ jail: spec.name, session: req.id, kind: req.kind });
    const control = child.stdio[3] as unknown as Writable;
    control.on('error', () => undefined);
    child.stdin?.on('error', () => undefined);
    let reason: string | undefined;
    let timedOut = false;
    const end = (why: string) => {
      reason ??= why;
      // the helper kills the command's group when its control pipe closes or on SIGTERM
      control.end();
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS).unref();
    };
    const channel = new SessionChannel(this.nc, subjects.sessionOut(this.host, req.id), subjects.sessionIn(this.host, req.id), {
      window: req.window,
      onLost: (err: SessionLost) => end(err.message),
      onFrame: (kind, payload) => {
        if (kind === FRAME.stdin && child.stdin) {
          const n = payload.length;
          child.stdin.write(Buffer.from(payload), () => channel.consumed(n));
        } else if (kind === FRAME.eof) {
          child.stdin?.end();
        } else if (kind === FRAME.resize && payload.length === 4) {
          const v = new DataView(payload.buffer, payload.byteOffset, 4);
          control.write(`w ${v.getUint16(0)} ${v.getUint16(2)}\n`);
        } else if (kind === FRAME.signal) {
          const signo = osConstants.signals[Buffer.from(payload).toString() as NodeJS.Signals];
          if (signo) control.write(`k ${signo}\n`);
        } else if (kind === FRAME.close) {
          end('closed by the client');
        }
      },
    });
    const timer =
      req.kind === 'exec' && req.timeoutMs !== null
        ? setTimeout(() => {
            timedOut = true;
            end(`killed after ${req.timeoutMs} ms (--timeout)`);
          }, req.timeoutMs)
        : undefined;
    this.live.set(req.id, () => end('the agent is stopping'));
    log.info({ argv: spawn.argv }, 'session started');
    void this.run([child.stdout, child.stderr], () => child.kill('SIGKILL'), channel, async () => {
      clearTimeout(timer);
      const r = await child;
      const signo = r.signal ? osConstants.signals[r.signal] : undefined;
      const exitCode = timedOut ? TIMEOUT_EXIT : (r.exitCode ?? (signo ? 128 + signo : 1));
      return { exitCode, ...(reason ? { reason } : {}) };
    }).finally(() => {
      this.live.delete(req.id);
      log.info('session ended');
    });
    return { id: req.id };
  }

  /**
   * Streams the jail's console: its last `tail` lines, then, with `follow`, what is appended,
   * read no faster than the CLI takes it. A restart of the jail (its init's pid changes) or a
   * stop is told on stderr, and following goes on in the same file, which every run appends to.
   */
  private async openLogs(jail: string, req: Extract<SessionRequest, { kind: 'logs' }>): Promise<{ id: string }> {
    const file = await this.driver.consoleFile(jail);
    let open = true;
    const channel = new SessionChannel(this.nc, subjects.sessionOut(this.host, req.id), subjects.sessionIn(this.host, req.id), {
      window: req.window,
      onLost: () => (open = false),
      onFrame: (kind) => {
        if (kind === FRAME.close) open = false;
      },
    });
    this.live.set(req.id, () => (open = false));
    const follow = async () => {
      let offset: number;
      if (req.since === undefined) {
        const tail = await readConsoleTail(file, req.tail ?? DEFAULT_LOG_LINES);
        if (tail.text) await channel.sendData(FRAME.stdout, Buffer.from(tail.text));
        offset = tail.end;
      } else {
        offset = await consoleOffsetSince(file, req.since);
        if (req.tail !== undefined) offset = Math.max(offset, await tailStart(file, req.tail));
        // everything from there to the end as it is now, in pieces under flow control
        for (;;) {
          const r = await readConsoleFrom(file, offset);
          for (const chunk of r.chunks) await channel.sendData(FRAME.stdout, chunk);
          offset = r.end;
          if (r.chunks.length === 0 || !open) break;
        }
      }
      let pid = (await this.driver.inspect(jail)).pid;
      // whether a run of the jail was seen: its next run is a restart
      let ran = pid !== null;
      let left = false;
      while (open && req.follow) {
        if (!this.holds(jail)) {
          left = true;
          break;
        }
        const r = await readConsoleFrom(file, offset);
        if (r.restart) await channel.sendData(FRAME.stderr, Buffer.from(`jailfleet: the console of ${jail} was truncated; from its start again\n`));
        for (const chunk of r.chunks) await channel.sendData(FRAME.stdout, chunk);
        offset = r.end;
        const now = (await this.driver.inspect(jail)).pid;
        if (now !== pid) {
          const note = now === null ? `jailfleet: ${jail} stopped; still following its console\n` : `jailfleet: ${jail} ${ran ? 'restarted' : 'started'} (pid ${now})\n`;
          ran ||= now !== null;
          await channel.sendData(FRAME.stderr, Buffer.from(note));
          pid = now;
        }
        if (r.chunks.length === 0) await new Promise((resolve) => setTimeout(resolve, LOGS_POLL_MS));
      }
      channel.send(FRAME.exit, Buffer.from(JSON.stringify(left ? { exitCode: 0, left } : { exitCode: 0 })));
      await channel.flush();
    };
    void follow()
      .catch((err: unknown) => {
        this.log.warn({ err, jail }, 'logs session failed');
        channel.send(FRAME.exit, Buffer.from(JSON.stringify({ exitCode: 1, reason: `reading the console of ${jail} failed: ${(err as Error).message}` })));
      })
      .finally(() => {
        channel.close();
        this.live.delete(req.id);
      });
    return { id: req.id };
  }

  /** Ends every session (the agent stops). */
  closeAll(): void {
    for (const end of this.live.values()) end();
  }

  private async run(out: [Readable | null, Readable | null], kill: () => void, channel: SessionChannel, exit: () => Promise<SessionExit>): Promise<void> {
    // a stream read by async iteration reads the pipe no faster than the credit lets it go out
    const pump = async (stream: Readable | null, kind: typeof FRAME.stdout | typeof FRAME.stderr) => {
      if (!stream) return;
      for await (const chunk of stream) await channel.sendData(kind, chunk as Buffer);
    };
    try {
      await Promise.all([pump(out[0], FRAME.stdout), pump(out[1], FRAME.stderr)]);
      const result = await exit();
      channel.send(FRAME.exit, Buffer.from(JSON.stringify(result)));
      await channel.flush();
    } catch (err) {
      this.log.warn({ err }, 'session failed');
      kill();
    } finally {
      channel.close();
    }
  }
}
