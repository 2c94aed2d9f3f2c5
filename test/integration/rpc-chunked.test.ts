// Lists of any length over request/reply, against a real nats-server whose max_payload is small
// (64 KB), so a few thousand items need many messages: every item comes back once and in order,
// errors keep their class, and a reply cut off before its end is an error, never a short list.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { JailNotFound, InternalError } from '../../contracts/index.js';
import { startNatsServer, type NatsServerHandle } from '../../services/common/nats-server.js';
import { NoReply, NoResponders, requestChunked, serveRpcChunked } from '../../services/common/rpc.js';
import type { Logger } from '../../services/common/logger.js';

const log = { error: () => undefined, info: () => undefined, warn: () => undefined } as unknown as Logger;
const ask = z.object({ n: z.number().int().min(0), size: z.number().int().min(1).default(80) });
const item = z.object({ i: z.number().int(), pad: z.string() });
const body = z.object({ items: z.array(item) });

let dir: string;
let server: NatsServerHandle;
let nc: NatsConnection;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jailfleet-rpc-'));
  server = await startNatsServer({ dir, maxPayload: '64KB' });
  nc = await connect({ servers: server.url });
  serveRpcChunked(nc, 'list', ask, 'items', (req) => Array.from({ length: req.n }, (_, i) => ({ i, pad: 'x'.repeat(req.size) })), { log });
  serveRpcChunked(nc, 'fails', ask, 'items', () => {
    throw new JailNotFound('web');
  }, { log });
}, 30_000);

afterAll(async () => {
  await nc?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('serveRpcChunked and requestChunked', () => {
  test('5,000 items (about 500 KB) through a 64 KB broker: all of them, in order, in many messages', async () => {
    expect(nc.info!.max_payload).toBe(64 * 1024);
    const before = nc.stats().inMsgs;
    const r = await requestChunked(nc, 'list', { n: 5000 }, body, 'items', { timeoutMs: 5000 });
    expect(r.items.map((x) => x.i)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    // each message within the limit: at least 500 KB / 64 KB of them, plus the end marker
    expect(nc.stats().inMsgs - before).toBeGreaterThanOrEqual(9);
  });

  test('an empty list is one message and the end marker', async () => {
    expect(await requestChunked(nc, 'list', { n: 0 }, body, 'items', { timeoutMs: 5000 })).toEqual({ items: [] });
  });

  test("a handler's error reaches the client as its class; bad input as invalid", async () => {
    await expect(requestChunked(nc, 'fails', { n: 1 }, body, 'items', { timeoutMs: 5000 })).rejects.toMatchObject({ name: 'NotFound', message: 'no jail named "web"' });
    await expect(requestChunked(nc, 'list', { n: -1 }, body, 'items', { timeoutMs: 5000 })).rejects.toMatchObject({ name: 'InvalidInput' });
  });

  test('one item larger than a message may carry is an internal error, not a hang', async () => {
    await expect(requestChunked(nc, 'list', { n: 2, size: 70_000 }, body, 'items', { timeoutMs: 5000 })).rejects.toBeInstanceOf(InternalError);
  });

  test('nobody answering is NoResponders; a reply without its end marker is NoReply', async () => {
    await expect(requestChunked(nc, 'nobody', { n: 1 }, body, 'items', { timeoutMs: 2000 })).rejects.toBeInstanceOf(NoResponders);
    // a server that dies halfway: one chunk, never the end marker
    const sub = nc.subscribe('cut', { callback: (_err, msg) => void msg.respond(new TextEncoder().encode('{"ok":true,"result":{"items":[{"i":0,"pad":""}]}}')) });
    await expect(requestChunked(nc, 'cut', { n: 1 }, body, 'items', { timeoutMs: 500 })).rejects.toBeInstanceOf(NoReply);
    sub.unsubscribe();
  });
});
