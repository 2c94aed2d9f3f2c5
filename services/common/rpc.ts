// Request/reply over NATS in the `{ ok: true, result } | { ok: false, error: { code, message } }`
// envelope (contracts/api.ts). The server side validates the request by its contract and maps
// what the handler throws to a code (contracts/errors.ts errorToCode); the client side turns a
// code back into its error class, and a failure of the NATS client into one by the client's
// error classes. Nothing here ever reads an error's message to decide what it is.
import { errors as natsErrors, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { z } from 'zod';
import { CodedError, InternalError, InvalidInput, TimedOut, Unavailable, codeToError, errorToCode, replySchema, type ApiError } from '../../contracts/index.js';
import { decodeWith, encodeJson } from './codec.js';
import type { Logger } from './logger.js';

/** What travels back: the result, or the error's code and message. */
export type RpcReply<T> = { ok: true; result: T } | { ok: false; error: ApiError };

/** Nobody subscribes to the subject (NATS "no responders"). */
export class NoResponders extends Unavailable {
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on ${subject}`, options);
    this.name = 'NoResponders';
  }
}

/** The connection is closed or draining: nothing more can be asked on it. */
export class ConnectionClosed extends Unavailable {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConnectionClosed';
  }
}

/** No reply within the request's timeout (the request may still be carried out). */
export class NoReply extends TimedOut {
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on ${subject} within ${timeoutMs} ms`, options);
    this.name = 'NoReply';
  }
}

/** The NATS client failed the request for another reason (a reconnect, a permission...). */
export class RequestFailed extends InternalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RequestFailed';
  }
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The reply for what a handler threw: its code and message. */
export function errorReply(err: unknown): { ok: false; error: ApiError } {
  return { ok: false, error: { code: errorToCode(err), message: messageOf(err) } };
}

/**
 * Classifies a failure of `nc.request` by the NATS client's error classes: no responders is
 * Unavailable (NoResponders), a timeout TimedOut (NoReply), a payload over the server's
 * max_payload InvalidInput, a closed connection Unavailable (ConnectionClosed).
 */
export function requestFailure(err: unknown, subject: string, timeoutMs: number, closed = false): Error {
  if (err instanceof natsErrors.NoRespondersError || (err instanceof natsErrors.RequestError && err.isNoResponders())) return new NoResponders(subject, { cause: err });
  if (err instanceof natsErrors.TimeoutError) return new NoReply(subject, timeoutMs, { cause: err });
  // the only argument the caller does not control is the payload's size
  if (err instanceof natsErrors.InvalidArgumentError) return new InvalidInput(`request on ${subject} refused: ${messageOf(err)}`, { cause: err });
  if (closed || err instanceof natsErrors.ClosedConnectionError || err instanceof natsErrors.DrainingConnectionError) return new ConnectionClosed(messageOf(err), { cause: err });
  return new RequestFailed(messageOf(err), { cause: err });
}

export interface ServeRpcOptions {
  /** Queue group: one of the group's members answers each request. */
  queue?: string;
  log: Logger;
}

/**
 * Answers requests on `subject`: each is parsed by `request` (InvalidInput when it does not fit),
 * then handed to `handler`, whose result (or thrown error, by errorToCode) is the reply.
 * `internal` failures are logged, since nobody else will see their stack.
 */
export function serveRpc<S extends z.ZodTypeAny, R>(
  nc: NatsConnection,
  subject: string,
  request: S,
  handler: (req: z.output<S>, msg: Msg) => R | Promise<R>,
  opts: ServeRpcOptions,
): Subscription {
  const answer = async (msg: Msg) => {
    let reply: RpcReply<R>;
    try {
      reply = { ok: true, result: await handler(decodeWith(request, msg.data), msg) };
    } catch (err) {
      reply = errorReply(err);
      if (reply.error.code === 'internal') opts.log.error({ err, subject }, 'request failed');
    }
    try {
      msg.respond(encodeJson(reply));
    } catch (err) {
      // a result larger than the server's max_payload: say so rather than leave the client waiting
      opts.log.error({ err, subject }, 'reply not sent');
      try {
        msg.respond(encodeJson(errorReply(new InternalError(`reply not sent: ${messageOf(err)}`))));
      } catch {
        /* the connection is gone: the client times out */
      }
    }
  };
  return nc.subscribe(subject, {
    queue: opts.queue,
    callback: (err, msg) => {
      if (err) opts.log.error({ err, subject }, 'subscription failed');
      else void answer(msg);
    },
  });
}

/** Room left in each chunk for the envelope and the broker's protocol line. */
const CHUNK_MARGIN = 4096;
/** The broker's limit when the connection has not said (nats-server's default). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * Splits a list into reply messages that each fit in `limit` bytes: each is a whole envelope,
 * `{ ok: true, result: { [key]: [...] } }`, so every chunk is parsed by the same contract.
 * Throws when one item alone is larger than the limit.
 */
export function encodeChunks(key: string, items: readonly unknown[], limit: number): Uint8Array[] {
  const head = `{"ok":true,"result":{${JSON.stringify(key)}:[`;
  const tail = ']}}';
  const room = limit - head.length - tail.length;
  const chunks: Uint8Array[] = [];
  let part: string[] = [];
  let size = 0;
  const flush = () => {
    chunks.push(new TextEncoder().encode(head + part.join(',') + tail));
    part = [];
    size = 0;
  };
  for (const item of items) {
    const json = JSON.stringify(item);
    // byte length: a name is ASCII, a message may not be
    const bytes = Buffer.byteLength(json);
    if (bytes > room) throw new InternalError(`one item of ${key} is ${bytes} bytes, more than a reply may carry (${room})`);
    // `size` counts a comma after each item taken: the one before this item, if any
    if (part.length && size + bytes > room) flush();
    part.push(json);
    size += bytes + 1;
  }
  if (part.length || chunks.length === 0) flush();
  return chunks;
}

/**
 * Answers like serveRpc, for a result that is one list (`{ [key]: T[] }`) of any length: the list
 * goes back in as many messages as the broker's max_payload needs, then an empty message that
 * ends the reply (the NATS request-many "sentinel" pattern, read by requestChunked). An error is
 * one envelope, then the sentinel.
 */
export function serveRpcChunked<S extends z.ZodTypeAny, T>(
  nc: NatsConnection,
  subject: string,
  request: S,
  key: string,
  handler: (req: z.output<S>, msg: Msg) => T[] | Promise<T[]>,
  opts: ServeRpcOptions,
): Subscription {
  const answer = async (msg: Msg) => {
    let chunks: Uint8Array[];
    try {
      const items = await handler(decodeWith(request, msg.data), msg);
      chunks = encodeChunks(key, items, (nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) - CHUNK_MARGIN);
    } catch (err) {
      const reply = errorReply(err);
      if (reply.error.code === 'internal') opts.log.error({ err, subject }, 'request failed');
      chunks = [encodeJson(reply)];
    }
    try {
      for (const c of chunks) msg.respond(c);
      msg.respond(new Uint8Array(0));
    } catch (err) {
      // the connection is gone: the client sees no sentinel and reports no reply
      opts.log.error({ err, subject }, 'reply not sent');
    }
  };
  return nc.subscribe(subject, {
    queue: opts.queue,
    callback: (err, msg) => {
      if (err) opts.log.error({ err, subject }, 'subscription failed');
      else void answer(msg);
    },
  });
}

/**
 * Asks `subject` for a list answered by serveRpcChunked and returns the whole list, each chunk
 * parsed by `chunk` (the reply body's contract, `{ [key]: T[] }`). A reply cut off before its end
 * (the server died, or `timeoutMs` passed) is NoReply, never a short list.
 */
export async function requestChunked<S extends z.ZodTypeAny>(
  nc: NatsConnection,
  subject: string,
  body: unknown,
  chunk: S,
  key: string,
  opts: { timeoutMs: number },
): Promise<z.output<S>> {
  const items: unknown[] = [];
  let ended = false;
  try {
    const replies = await nc.requestMany(subject, encodeJson(body), { strategy: 'sentinel', maxWait: opts.timeoutMs });
    for await (const msg of replies) {
      if (msg.data.length === 0) {
        ended = true;
        break;
      }
      let reply: RpcReply<Record<string, unknown[]>>;
      try {
        reply = decodeWith(replySchema(chunk), msg.data) as RpcReply<Record<string, unknown[]>>;
      } catch (err) {
        throw new InternalError(`malformed reply on ${subject}: ${messageOf(err)}`, { cause: err });
      }
      if (!reply.ok) throw codeToError(reply.error.code, reply.error.message);
      items.push(...reply.result[key]!);
    }
  } catch (err) {
    if (err instanceof CodedError) throw err;
    throw requestFailure(err, subject, opts.timeoutMs, nc.isClosed());
  }
  if (!ended) throw new NoReply(subject, opts.timeoutMs);
  return { [key]: items } as z.output<S>;
}

/**
 * Sends `body` to `subject` and returns the reply's result, parsed by `result`. Throws the error
 * class of the reply's code (contracts/errors.ts), or of the NATS client's failure (requestFailure).
 */
export async function request<S extends z.ZodTypeAny>(nc: NatsConnection, subject: string, body: unknown, result: S, opts: { timeoutMs: number }): Promise<z.output<S>> {
  let msg: Msg;
  try {
    msg = await nc.request(subject, encodeJson(body), { timeout: opts.timeoutMs });
  } catch (err) {
    throw requestFailure(err, subject, opts.timeoutMs, nc.isClosed());
  }
  let reply: RpcReply<z.output<S>>;
  try {
    reply = decodeWith(replySchema(result), msg.data) as RpcReply<z.output<S>>;
  } catch (err) {
    // the answer is the server's fault, not the caller's input
    throw new InternalError(`malformed reply on ${subject}: ${messageOf(err)}`, { cause: err });
  }
  if (!reply.ok) throw codeToError(reply.error.code, reply.error.message);
  return reply.result;
}
