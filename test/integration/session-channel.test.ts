// A session's frame stream over a real nats-server: a fast producer and a slow reader (the
// producer never has more than its window unconsumed, so nothing piles up in the broker, and every
// byte arrives in order), a lost frame noticed by its number, and silence noticed by the pings.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { FRAME } from '../../contracts/index.js';
import { SessionChannel, type SessionLost } from '../../services/common/session-channel.js';
import { startNatsServer, type NatsServerHandle } from '../../services/common/index.js';
import { scratchDir } from '../support/scratch.js';

describe('session frames over a real broker', () => {
  let dir: string;
  let nats: NatsServerHandle;
  let a: NatsConnection;
  let b: NatsConnection;

  beforeAll(async () => {
    dir = scratchDir('jf-session-channel-');
    nats = await startNatsServer({ dir });
    [a, b] = await Promise.all([connect({ servers: nats.url }), connect({ servers: nats.url })]);
  }, 30_000);

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a fast producer waits for a slow reader: at most one window unconsumed, every byte in order', async () => {
    const window = 256 * 1024;
    const chunk = 64 * 1024;
    const total = 8 * 1024 * 1024;
    let produced = 0;
    let consumed = 0;
    let maxUnconsumed = 0;
    const received: Buffer[] = [];
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const receiver: SessionChannel = new SessionChannel(b, 'test.s1.in', 'test.s1.out', {
      window,
      onLost: (err) => {
        throw err;
      },
      onFrame: (kind, payload) => {
        if (kind === FRAME.exit) return finish();
        const copy = Buffer.from(payload);
        received.push(copy);
        // the reader is slow: it takes each chunk 2 ms later
        setTimeout(() => {
          consumed += copy.length;
          receiver.consumed(copy.length);
        }, 2);
      },
    });
    const sender = new SessionChannel(a, 'test.s1.out', 'test.s1.in', { window, onLost: () => undefined, onFrame: () => undefined });
    await b.flush();
    for (let i = 0; produced < total; i++) {
      const data = Buffer.alloc(chunk, i % 251);
      await sender.sendData(FRAME.stdout, data);
      produced += data.length;
      maxUnconsumed = Math.max(maxUnconsumed, produced - consumed);
    }
    sender.send(FRAME.exit, Buffer.from('{"exitCode":0}'));
    await done;
    sender.close();
    receiver.close();
    const all = Buffer.concat(received);
    expect(all.length).toBe(total);
    for (let i = 0; i < total / chunk; i++) expect(all[i * chunk]).toBe(i % 251);
    // what the reader has not consumed is what the broker and the sockets hold
    expect(maxUnconsumed).toBeLessThanOrEqual(window + chunk);
    expect(maxUnconsumed).toBeGreaterThan(chunk);
  }, 60_000);

  it('a frame lost on the way ends the session saying which', async () => {
    const lost = new Promise<SessionLost>((resolve) => {
      new SessionChannel(b, 'test.s2.in', 'test.s2.out', { window: 65536, onLost: resolve, onFrame: () => undefined });
    });
    await b.flush();
    // frame 0 never arrives; frame 1 does
    const frame = new Uint8Array([FRAME.stdout, 0, 0, 0, 1, 120]);
    a.publish('test.s2.out', frame);
    await expect(lost).resolves.toMatchObject({ name: 'SessionLost', message: 'frame 0 of the session was lost (got 1)' });
  });

  it('silence ends the session', async () => {
    const lost = new Promise<SessionLost>((resolve) => {
      new SessionChannel(b, 'test.s3.in', 'test.s3.out', { window: 65536, onLost: resolve, onFrame: () => undefined, pingMs: 50, silenceMs: 300 });
    });
    await expect(lost).resolves.toMatchObject({ message: 'nothing heard from the other side for 0.3 s' });
  });
});
