// The one liveness rule, as the scheduler and the status service both apply it, with a fake
// clock: a host is up for exactly the TTL after its last heartbeat; a host never heard is down
// only once a TTL has passed since we started listening; the feed admits only heartbeats that fit
// the contract and come from the host they name, tells "heard / came up / went down" once each,
// and does not flood the log when an agent sends garbage every second.
import { describe, expect, test } from '@jest/globals';
import type { Heartbeat } from '../../contracts/index.js';
import { HeartbeatFeed, HostLiveness } from '../../services/common/heartbeat-feed.js';
import type { Logger } from '../../services/common/logger.js';

const TTL = 3000;
const enc = new TextEncoder();
const hb = (host: string): Heartbeat => ({
  v: 1,
  host,
  at: '2025-01-01T00:00:00.000Z',
  startedAt: '2025-01-01T00:00:00.000Z',
  capacity: { cpu: 2, memoryMB: 4096 },
  labels: {},
  allocated: { cpu: 0, memoryMB: 0 },
  driver: 'linux',
  jails: [],
});
const wire = (x: unknown) => enc.encode(JSON.stringify(x));

function fakeLog() {
  const warnings: Record<string, unknown>[] = [];
  const log = { warn: (o: Record<string, unknown>) => void warnings.push(o) } as unknown as Logger;
  return { log, warnings };
}

describe('HostLiveness', () => {
  test('a host never heard is neither up nor down until a TTL after the start, then down', () => {
    const l = new HostLiveness(TTL, 10_000);
    expect(l.isUp('a', 10_000)).toBe(false);
    expect(l.isDown('a', 10_000 + TTL)).toBe(false);
    expect(l.isDown('a', 10_000 + TTL + 1)).toBe(true);
  });

  test('heard: up until exactly the TTL after its last heartbeat, down one millisecond later', () => {
    const l = new HostLiveness(TTL, 0);
    expect(l.seen('a', 1000)).toBe(true);
    expect(l.isUp('a', 1000 + TTL)).toBe(true);
    expect(l.isDown('a', 1000 + TTL)).toBe(false);
    expect(l.isUp('a', 1000 + TTL + 1)).toBe(false);
    expect(l.isDown('a', 1000 + TTL + 1)).toBe(true);
    expect(l.lastSeenOf('a')).toBe(1000);
  });

  test('for a host heard, up and down are each other\'s opposite at every instant', () => {
    const l = new HostLiveness(TTL, 0);
    l.seen('a', 500);
    for (let now = 500; now < 500 + 2 * TTL; now += 7) expect(l.isUp('a', now)).toBe(!l.isDown('a', now));
  });
});

describe('HeartbeatFeed', () => {
  function feed(start = 0) {
    let now = start;
    const told: string[] = [];
    const { log, warnings } = fakeLog();
    const f = new HeartbeatFeed({
      log,
      ttlMs: TTL,
      now: () => now,
      onHeard: (h) => void told.push(`heard ${h.host}`),
      onUp: (h) => void told.push(`up ${h}`),
      onDown: (h) => void told.push(`down ${h}`),
    });
    return { f, told, warnings, at: (t: number) => void (now = t) };
  }

  test('heard, came up, went down, came back: each told once, in that order', () => {
    const { f, told, at } = feed();
    at(100);
    expect(f.receive('jailfleet.hb.h1', wire(hb('h1')))?.host).toBe('h1');
    at(1100);
    f.receive('jailfleet.hb.h1', wire(hb('h1')));
    expect(told).toEqual(['heard h1', 'up h1', 'heard h1']);
    at(1100 + TTL);
    expect(f.check()).toEqual([]);
    at(1100 + TTL + 1);
    expect(f.check()).toEqual(['h1']);
    at(1100 + TTL + 500);
    expect(f.check()).toEqual([]); // told once
    f.receive('jailfleet.hb.h1', wire(hb('h1')));
    expect(told).toEqual(['heard h1', 'up h1', 'heard h1', 'down h1', 'heard h1', 'up h1']);
    expect(f.liveness.isUp('h1', 1100 + TTL + 500)).toBe(true);
  });

  test('a host never heard is never told down: only hosts heard go down', () => {
    const { f, told, at } = feed();
    at(10 * TTL);
    expect(f.check()).toEqual([]);
    expect(told).toEqual([]);
    expect(f.liveness.isDown('ghost', 10 * TTL)).toBe(true);
  });

  test('a heartbeat that breaks the contract, or names another host than its subject, is dropped', () => {
    const { f, told, warnings } = feed();
    expect(f.receive('jailfleet.hb.h1', enc.encode('not json'))).toBeNull();
    expect(f.receive('jailfleet.hb.h1', wire({ ...hb('h1'), capacity: 'lots' }))).toBeNull();
    expect(f.receive('jailfleet.hb.h2', wire(hb('h1')))).toBeNull();
    expect(told).toEqual([]);
    expect(f.liveness.hosts(0)).toEqual([]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ subject: 'jailfleet.hb.h1', reason: 'message is not valid JSON' });
  });

  test('warnings about malformed heartbeats: one per ten seconds, counting those left unsaid', () => {
    const { f, warnings, at } = feed();
    for (let t = 0; t < 25_000; t += 1000) {
      at(t);
      f.receive('jailfleet.hb.h2', wire(hb('h1')));
    }
    expect(warnings).toHaveLength(3); // at 0, 10 s and 20 s
    expect(warnings[0]!.droppedSinceLastWarning).toBeUndefined();
    expect(warnings[1]).toMatchObject({ reason: 'heartbeat of h1 on jailfleet.hb.h2', droppedSinceLastWarning: 9 });
  });
});
