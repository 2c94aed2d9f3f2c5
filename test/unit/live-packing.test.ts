// The scheduler's live packing: heartbeats, drains, specs and placements arrive in any order, and
// the packing reserves exactly what is placed, where it is placed.
import { describe, expect, test } from '@jest/globals';
import { jailSpecSchema, type JailSpec } from '../../contracts/index.js';
import { LivePacking } from '../../services/scheduler/live-packing.js';

const spec = (name: string, cpu: number, memoryMB: number, placement: Record<string, unknown> = {}): JailSpec =>
  jailSpecSchema.parse({ name, command: ['/bin/true'], resources: { cpu, memoryMB }, placement });
const host = (name: string, cpu = 2, memoryMB = 512) => ({ name, up: true, draining: false, capacity: { cpu, memoryMB }, labels: {} });

describe('LivePacking', () => {
  test('binpack fills one host before it opens the next, and says why a jail fits nowhere', () => {
    const p = new LivePacking('binpack');
    for (const h of ['h1', 'h2', 'h3']) p.host(host(h));
    const hosts = Array.from({ length: 6 }, (_, i) => p.place(spec(`j${i}`, 0.5, 128)).host);
    expect(hosts).toEqual(['h1', 'h1', 'h1', 'h1', 'h2', 'h2']);
    expect(p.place(spec('big', 0.5, 1024))).toEqual({ host: null, reason: 'no host fits: 3 hosts lack memory (needs 1024 MB, most free 512 MB)' });
  });

  test('placements heard from the bucket take room; a spec known later is counted then', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 256));
    p.host(host('h2', 1, 256));
    p.at('old', 'h1'); // placement first, spec unknown yet: nothing reserved
    expect(p.hostOf('old')).toBeUndefined();
    p.spec('old', spec('old', 1, 256));
    expect(p.hostOf('old')).toBe('h1');
    expect(p.place(spec('new', 0.5, 128)).host).toBe('h2');
    // removed: its room is free again
    p.at('old', null);
    expect(p.hostOf('old')).toBeUndefined();
    expect(p.place(spec('next', 0.5, 128)).host).toBe('h2');
    expect(p.place(spec('more', 1, 256)).host).toBe('h1');
  });

  test('a draining or down host takes nothing new, and the reason says so', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1'));
    p.host(host('h2'));
    p.host({ name: 'h1', draining: true });
    p.host({ name: 'h2', up: false });
    expect(p.place(spec('a', 0.1, 64))).toEqual({ host: null, reason: 'no host fits: 1 host is down, 1 is draining' });
    expect(p.place(spec('pinned', 0.1, 64, { host: 'h1' }))).toEqual({ host: null, reason: 'pinned host "h1" is draining' });
    p.host({ name: 'h1', draining: false });
    expect(p.place(spec('a', 0.1, 64)).host).toBe('h1');
  });

  test('a heartbeat that changes nothing changes nothing; a larger capacity makes room', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 128));
    expect(p.place(spec('a', 1, 128)).host).toBe('h1');
    p.host(host('h1', 1, 128));
    expect(p.place(spec('b', 1, 128)).host).toBeNull();
    p.host(host('h1', 2, 256));
    expect(p.place(spec('b', 1, 128)).host).toBe('h1');
  });

  test('spread puts each jail on the least loaded host', () => {
    const p = new LivePacking('spread');
    for (const h of ['h1', 'h2']) p.host(host(h));
    expect(['a', 'b', 'c', 'd'].map((n) => p.place(spec(n, 0.1, 64)).host)).toEqual(['h1', 'h2', 'h1', 'h2']);
  });
});
