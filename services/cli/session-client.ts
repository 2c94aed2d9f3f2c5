// The CLI's side of a session (contracts/session.ts): opens it with the agent that holds the
// jail, streams stdin to it and its stdout and stderr back as they come, with the local terminal
// in raw mode under -t (restored however the session ends) and its size forwarded. Used by
// `exec`, `console` and `cp`. It must never leave the user's terminal in raw mode.
import { randomBytes } from 'node:crypto';
import { FRAME, sessionExitSchema, subjects, type SessionExit, type SessionRequestInput } from '../../contracts/index.js';
import { SessionChannel } from '../common/session-channel.js';
import { CliError, type Client } from './client.js';

/** A session request without its version and id (each kind keeps its own fields). */
export type SessionOpen = SessionRequestInput extends infer R ? (R extends unknown ? Omit<R, 'v' | 'id'> : never) : never;

export interface SessionIo {
  /** Where stdin frames come from (ends with an eof frame); none: no stdin. */
  stdin?: AsyncIterable<Buffer>;
  /** Where stdout frames go; default process.stdout. */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Forward this terminal's size (and its changes); put it in raw mode while the session runs. */
  terminal?: NodeJS.ReadStream & { setRawMode?: (raw: boolean) => unknown };
  /** Forward SIGINT and SIGTERM to the command (without a terminal). */
  forwardSignals?: boolean;
  /** Ends the session (the command is killed) with exit code 0. */
  signal?: AbortSignal;
}

/** A fresh session id: 16 random lowercase hex digits, nobody else's to guess. */
export const newSessionId = () => randomBytes(12).toString('hex');

/** The host that runs `jail`, or a one-line error (unknown, not placed, not running). */
export async function hostOfRunningJail(c: Client, jail: string): Promise<string> {
  const row = (await c.ps()).jails.find((j) => j.name === jail);
  if (!row) throw new CliError(`no jail named "${jail}"`);
  if (row.state !== 'running' || !row.host) throw new CliError(`jail "${jail}" is ${row.state}, not running`);
  return row.host;
}

/** Runs one session to its end: the command's exit (and why, when it did not end by itself). */
export async function runSession(c: Client, host: string, open: SessionOpen, io: SessionIo = {}): Promise<SessionExit> {
  const id = newSessionId();
  const window = open.window ?? 1024 * 1024;
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  let settle!: (e: SessionExit) => void;
  let fail!: (err: Error) => void;
  const ended = new Promise<SessionExit>((resolve, reject) => ((settle = resolve), (fail = reject)));
  let writes = Promise.resolve();
  const channel = new SessionChannel(c.nc, subjects.sessionIn(host, id), subjects.sessionOut(host, id), {
    window,
    onLost: (err) => fail(new CliError(`session with ${host} lost: ${err.message}`)),
    onFrame: (kind, payload) => {
      if (kind === FRAME.stdout || kind === FRAME.stderr) {
        const n = payload.length;
        const out = kind === FRAME.stdout ? stdout : stderr;
        // credit once written: a slow terminal or pipe slows the command down, nothing piles up
        writes = new Promise((resolve) => out.write(payload, () => (channel.consumed(n), resolve())));
      } else if (kind === FRAME.exit) {
        const parsed = sessionExitSchema.safeParse(JSON.parse(Buffer.from(payload).toString()));
        // the last output is on its way to the terminal: the exit counts once it is there
        void writes.then(() => (parsed.success ? settle(parsed.data) : fail(new CliError('the agent sent an unreadable exit frame'))));
      }
    },
  });
  const term = io.terminal;
  const resize = () => {
    const out = process.stdout;
    if (!out.isTTY) return;
    const p = Buffer.alloc(4);
    p.writeUInt16BE(out.rows, 0);
    p.writeUInt16BE(out.columns, 2);
    channel.send(FRAME.resize, p);
  };
  const onSignal = (sig: NodeJS.Signals) => channel.send(FRAME.signal, Buffer.from(sig));
  const restore = () => {
    if (term?.isTTY && term.setRawMode) term.setRawMode(false);
  };
  try {
    await c.openSession(host, { v: 1, id, window, ...open } as SessionRequestInput);
    if (term?.isTTY && term.setRawMode) term.setRawMode(true);
    // a raw terminal gets no ^C from the kernel, but a signal from elsewhere must not leave it raw
    process.once('exit', restore);
    if (term) process.stdout.on('resize', resize);
    if (io.forwardSignals) for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, onSignal);
    if (io.stdin) pumpStdin(channel, io.stdin).catch((err: Error) => fail(err));
    io.signal?.addEventListener('abort', () => settle({ exitCode: 0 }), { once: true });
    return await ended;
  } finally {
    restore();
    process.off('exit', restore);
    process.stdout.off('resize', resize);
    for (const s of ['SIGINT', 'SIGTERM'] as const) process.off(s, onSignal);
    channel.send(FRAME.close);
    await channel.flush();
    channel.close();
  }
}

/** Sends `input` as stdin, then its end; a failure of the input (a cp source over the limit) ends the session. */
async function pumpStdin(channel: SessionChannel, input: AsyncIterable<Buffer>): Promise<void> {
  for await (const chunk of input) await channel.sendData(FRAME.stdin, chunk);
  channel.send(FRAME.eof);
}
