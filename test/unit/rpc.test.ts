// The RPC envelope: every error code a server can throw reaches the client as the same class
// with the same message; failures of the NATS client itself are told apart by its error classes
// (no responders is `unavailable`, a timeout is `timeout`), never by their message.
import { describe, expect, test } from '@jest/globals';
import { errors, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { Conflict, ERROR_CODES, InternalError, InvalidInput, JailNotFound, NotFound, TimedOut, Unavailable, codeToError, errorToCode, type ErrorCode } from '../../contracts/index.js';
import { ConnectionClosed, NoReply, NoResponders, RequestFailed, encodeChunks, request, requestFailure, serveRpc } from '../../services/common/rpc.js';
import type { Logger } from '../../services/common/logger.js';

const CLASSES: Record<ErrorCode, Function> = {
  invalid: InvalidInput,
  not_found: NotFound,
  conflict: Conflict,
  unavailable: Unavailable,
  timeout: TimedOut,
  internal: InternalError,
};

/** An in-process stand-in for one NATS connection: requests reach the subscriber of their subject. */
function fakeBus() {
  const handlers = new Map<string, (err: Error | null, msg: Msg) => void>();
  const nc = {
    subscribe: (subject: string, o: { callback: (err: Error | null, msg: Msg) => void }) => {
      handlers.set(subject, o.callback);
      return { unsubscribe: () => handlers.delete(subject) };
    },
    request: (subject: string, data: Uint8Array) =>
      new Promise<Msg>((resolve, reject) => {
        const h = handlers.get(subject);
        if (!h) return reject(new errors.RequestError('503', { cause: new errors.NoRespondersError(subject) }));
        h(null, { subject, data, respond: (reply: Uint8Array) => (resolve({ data: reply } as Msg), true) } as unknown as Msg);
      }),
    isClosed: () => false,
  };
  return nc as unknown as NatsConnection;
}
const errorsLogged: unknown[] = [];
const log = { error: (o: unknown) => void errorsLogged.push(o) } as unknown as Logger;
const echo = z.object({ say: z.string() });

describe('error codes', () => {
  test.each(ERROR_CODES.map((c) => [c]))('%s: code → class → code', (code) => {
    const e = codeToError(code, 'why');
    expect(e).toBeInstanceOf(CLASSES[code]);
    expect(e.message).toBe('why');
    expect(errorToCode(e)).toBe(code);
  });

  test('a subclass keeps its code; anything that is not a coded error is internal', () => {
    expect(errorToCode(new JailNotFound('web'))).toBe('not_found');
    expect(errorToCode(new NoResponders('x'))).toBe('unavailable');
    expect(errorToCode(Object.assign(new Error('x'), { code: 'invalid' }))).toBe('internal');
    expect(errorToCode('a string')).toBe('internal');
  });
});

describe('serveRpc and request', () => {
  test.each(ERROR_CODES.map((c) => [c]))('a handler that throws %s: the client gets that class and message', async (code) => {
    const nc = fakeBus();
    serveRpc(nc, 'svc.fail', echo, () => {
      throw codeToError(code, `failed with ${code}`);
    }, { log });
    const err = await request(nc, 'svc.fail', { say: 'x' }, z.object({}), { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CLASSES[code]);
    expect((err as Error).message).toBe(`failed with ${code}`);
  });

  test('the result comes back parsed by its contract', async () => {
    const nc = fakeBus();
    serveRpc(nc, 'svc.echo', echo, async (req) => ({ heard: req.say }), { log });
    await expect(request(nc, 'svc.echo', { say: 'hi' }, z.object({ heard: z.string() }), { timeoutMs: 1000 })).resolves.toEqual({ heard: 'hi' });
  });

  test('a request that breaks its contract is `invalid` and never reaches the handler', async () => {
    const nc = fakeBus();
    let called = false;
    serveRpc(nc, 'svc.echo', echo, () => (called = true), { log });
    const err = await request(nc, 'svc.echo', { say: 3 }, z.object({}), { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInput);
    expect((err as Error).message).toMatch(/^say: /);
    expect(called).toBe(false);
  });

  test('an unexpected throw is `internal`, logged on the server', async () => {
    const nc = fakeBus();
    errorsLogged.length = 0;
    serveRpc(nc, 'svc.bug', echo, () => {
      throw new TypeError('x is undefined');
    }, { log });
    const err = await request(nc, 'svc.bug', { say: 'x' }, z.object({}), { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InternalError);
    expect((err as Error).message).toBe('x is undefined');
    expect(errorsLogged).toHaveLength(1);
  });

  test('a reply that breaks its contract is `internal` (the server is at fault, not the caller)', async () => {
    const nc = fakeBus();
    serveRpc(nc, 'svc.echo', echo, () => ({ heard: 42 }), { log });
    const err = await request(nc, 'svc.echo', { say: 'x' }, z.object({ heard: z.string() }), { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InternalError);
    expect((err as Error).message).toMatch(/^malformed reply on svc\.echo: /);
  });

  test('nobody serves the subject: NATS no responders becomes NoResponders (`unavailable`)', async () => {
    const err = await request(fakeBus(), 'svc.none', {}, z.object({}), { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoResponders);
    expect(errorToCode(err)).toBe('unavailable');
    expect((err as NoResponders).subject).toBe('svc.none');
  });
});

describe('requestFailure: the NATS client errors, by class', () => {
  test('no responders, bare or wrapped in a RequestError', () => {
    expect(requestFailure(new errors.NoRespondersError('s'), 's', 1000)).toBeInstanceOf(NoResponders);
    expect(requestFailure(new errors.RequestError('anything at all', { cause: new errors.NoRespondersError('s') }), 's', 1000)).toBeInstanceOf(NoResponders);
  });

  test('a timeout is NoReply (`timeout`), whatever its message', () => {
    const e = requestFailure(new errors.TimeoutError(), 's', 2500);
    expect(e).toBeInstanceOf(NoReply);
    expect(errorToCode(e)).toBe('timeout');
    expect((e as NoReply).timeoutMs).toBe(2500);
  });

  test('a payload over max_payload is `invalid`; a closed connection `unavailable`; the rest `internal`', () => {
    expect(errorToCode(requestFailure(errors.InvalidArgumentError.format('payload', 'max_payload size exceeded'), 's', 1000))).toBe('invalid');
    expect(requestFailure(new errors.ClosedConnectionError(), 's', 1000)).toBeInstanceOf(ConnectionClosed);
    expect(requestFailure(new errors.RequestError('connection closed'), 's', 1000, true)).toBeInstanceOf(ConnectionClosed);
    // a message that reads like a timeout does not make it one
    const other = requestFailure(new errors.RequestError('timeout, 503, no responders'), 's', 1000);
    expect(other).toBeInstanceOf(RequestFailed);
    expect(errorToCode(other)).toBe('internal');
  });
});

describe('encodeChunks', () => {
  const items = Array.from({ length: 1000 }, (_, i) => ({ i, name: `jail-${i}`, note: i % 7 === 0 ? 'ünïcode' : '' }));

  test('every chunk is a whole envelope within the limit, and together they hold every item in order', () => {
    for (const limit of [200, 1000, 4096, 65536]) {
      const chunks = encodeChunks('jails', items, limit);
      for (const c of chunks) expect(c.byteLength).toBeLessThanOrEqual(limit);
      const back = chunks.flatMap((c) => (JSON.parse(new TextDecoder().decode(c)) as { ok: true; result: { jails: unknown[] } }).result.jails);
      expect(back).toEqual(items);
    }
  });

  test('an exact fit is one chunk; one byte less is two', () => {
    const two = [{ a: 1 }, { a: 2 }];
    const whole = new TextEncoder().encode(JSON.stringify({ ok: true, result: { x: two } })).byteLength;
    expect(encodeChunks('x', two, whole)).toHaveLength(1);
    expect(encodeChunks('x', two, whole - 1)).toHaveLength(2);
  });

  test('an empty list is one chunk; an item larger than the limit is an internal error', () => {
    expect(encodeChunks('x', [], 100).map((c) => new TextDecoder().decode(c))).toEqual(['{"ok":true,"result":{"x":[]}}']);
    expect(() => encodeChunks('x', [{ big: 'y'.repeat(200) }], 100)).toThrow(InternalError);
  });
});
