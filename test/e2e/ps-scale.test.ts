// `ps` of a large cluster through a broker with nats-server's default 1 MB max_payload: 10,000
// jails (synthetic placements and state events written straight to the bucket and the stream, so
// no jail need run) are more
// than one message can carry, and all of them come back; the filters narrow it on the server; the
// text table renders quickly.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { BUCKET_PLACEMENT, WIRE_VERSION, subjects, type Heartbeat, type PlacementRecord, type PsRow, type StateEvent } from '../../contracts/index.js';
import { ensureTopology } from '../../services/common/index.js';
import { TestCluster } from '../support/cluster.js';

const N = 10_000;
const HOSTS = 20;
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/** A heartbeat of a host with no agent behind it, so the status service holds its jails live. */
const beat = (host: string): Heartbeat => ({
  v: WIRE_VERSION,
  host,
  at: new Date().toISOString(),
  startedAt: new Date(0).toISOString(),
  capacity: { cpu: 64, memoryMB: 65536 },
  labels: {},
  allocated: { cpu: 0, memoryMB: 0 },
  driver: 'linux',
  jails: [],
});

describe('ps of 10,000 jails through a 1 MB broker', () => {
  let c: TestCluster;
  let hb: NatsConnection | undefined;
  let beating: NodeJS.Timeout | undefined;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: [], scheduler: false, status: true, natsMaxPayload: '1MB' });
    // the hosts are heard from throughout, or their jails would show `lost`
    hb = await connect({ servers: c.url });
    const beatAll = () => Array.from({ length: HOSTS }, (_, h) => hb!.publish(subjects.hb(`host-${h}`), enc(beat(`host-${h}`))));
    beatAll();
    beating = setInterval(beatAll, 500);
    const nc = await connect({ servers: c.url });
    try {
      expect(nc.info!.max_payload).toBe(1024 * 1024);
      await ensureTopology(nc);
      const js = jetstream(nc);
      const placements = await new Kvm(nc).open(BUCKET_PLACEMENT);
      const at = new Date().toISOString();
      for (let from = 0; from < N; from += 1000) {
        await Promise.all(
          Array.from({ length: Math.min(1000, N - from) }, (_, k) => {
            const p: PlacementRecord = { v: WIRE_VERSION, host: `host-${(from + k) % HOSTS}`, generation: 1, reason: null };
            return placements.put(`svc-${from + k}`, enc(p));
          }),
        );
        await Promise.all(
          Array.from({ length: Math.min(1000, N - from) }, (_, k) => {
            const i = from + k;
            // every tenth one stopped, so --state has something to tell apart
            const ev: StateEvent = { v: WIRE_VERSION, host: `host-${i % HOSTS}`, jail: `svc-${i}`, generation: 1, seq: 1, state: i % 10 === 0 ? 'stopped' : 'running', pid: i % 10 === 0 ? null : 1000 + i, exitCode: i % 10 === 0 ? 0 : null, restarts: 0, error: null, at };
            return js.publish(subjects.evt(ev.host, ev.jail), enc(ev));
          }),
        );
      }
    } finally {
      await nc.close();
    }
    // the status service folds the stream in order: once the last jail shows, all have
    await c.until('status to know the last jail', async () => (await c.json<PsRow[]>(['ps', '--name', `svc-${N - 1}`])).length === 1, 120_000);
  }, 180_000);

  afterAll(async () => {
    clearInterval(beating);
    await hb?.close();
    await c?.stop();
  }, 60_000);

  it('returns every one of them, once and sorted, though the table is larger than the broker takes in one message', async () => {
    const r = await c.cli(['ps', '--json']);
    expect(r.exitCode).toBe(0);
    // larger than one message: the point of the test
    expect(Buffer.byteLength(r.stdout)).toBeGreaterThan(1024 * 1024);
    const rows = JSON.parse(r.stdout) as PsRow[];
    expect(rows).toHaveLength(N);
    expect(new Set(rows.map((x) => x.name)).size).toBe(N);
    const sorted = [...rows.map((x) => x.name)].sort();
    expect(rows.map((x) => x.name)).toEqual(sorted);
  }, 60_000);

  it('filters by host, state and name pattern on the server, and together', async () => {
    expect(await c.json<PsRow[]>(['ps', '--host', 'host-3'])).toHaveLength(N / HOSTS);
    expect(await c.json<PsRow[]>(['ps', '--state', 'stopped'])).toHaveLength(N / 10);
    const named = await c.json<PsRow[]>(['ps', '--name', 'svc-99*']);
    // svc-99, svc-990…svc-999, svc-9900…svc-9999
    expect(named.map((x) => x.name).sort()).toEqual(['svc-99', ...Array.from({ length: 10 }, (_, i) => `svc-99${i}`), ...Array.from({ length: 100 }, (_, i) => `svc-99${String(i).padStart(2, '0')}`)].sort());
    const both = await c.json<PsRow[]>(['ps', '--name', 'svc-1?', '--state', 'stopped']);
    expect(both.map((x) => x.name)).toEqual(['svc-10']);
    expect(await c.json<PsRow[]>(['ps', '--name', 'nothing-*'])).toEqual([]);
  }, 60_000);

  it('prints the whole table as text in a few seconds at most, one line per jail under a header', async () => {
    const t = Date.now();
    const r = await c.cli(['ps']);
    const took = Date.now() - t;
    expect(r.exitCode).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(N + 1);
    expect(lines[0]).toMatch(/^NAME\s+HOST\s+STATE\s+GEN\s+PID\s+AGE/);
    expect(lines[1]).toMatch(/^svc-0\s+host-0\s+stopped\s+1\s+-\s+\d+s\s+exit 0$/);
    // generous: a table library took 9 s for this before
    expect(took).toBeLessThan(5000);
  }, 60_000);

  it('refuses a name pattern that could not be a jail name, naming the flag and the rule', async () => {
    const r = await c.cli(['ps', '--name', 'svc/../x']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^jailfleet: --name: must be a jail name .* \* matches any characters and \? one \(got "svc\/\.\.\/x"\)$/);
    expect(r.stdout).toBe('');
  });
});
