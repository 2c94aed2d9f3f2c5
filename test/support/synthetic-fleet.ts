// A large cluster without jails, for the status service's figures and tests: placements and
// state events written straight to the bucket and the stream, and heartbeats of hosts with no
// agent behind them (so their jails show live rather than lost). `stop()` ends the heartbeats.
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_PLACEMENT, WIRE_VERSION, subjects, type Heartbeat, type PlacementRecord, type StateEvent } from '../../contracts/index.js';
import { ensureTopology } from '../../services/common/index.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/** A heartbeat of a host with no agent behind it. */
export const syntheticBeat = (host: string, jails = 0): Heartbeat => ({
  v: WIRE_VERSION,
  host,
  at: new Date().toISOString(),
  startedAt: new Date(0).toISOString(),
  capacity: { cpu: 64, memoryMB: 65536 },
  labels: {},
  allocated: { cpu: jails * 0.1, memoryMB: jails * 64 },
  driver: 'linux',
  jails: [],
});

/** The state jail `i` of a synthetic fleet is in: mostly running, every tenth stopped, every 97th failed. */
export const syntheticState = (i: number) => (i % 97 === 0 ? 'failed' : i % 10 === 0 ? 'stopped' : 'running');

/**
 * `n` jails `svc-0` … on `hostCount` hosts `host-0` …, known to the status service of the cluster
 * at `url` once it has read them (callers wait for the last one, the stream being read in order).
 */
export async function seedSyntheticFleet(url: string, n: number, hostCount: number): Promise<{ stop(): Promise<void> }> {
  const hb = await connect({ servers: url });
  const per = Math.ceil(n / hostCount);
  const beatAll = () => Array.from({ length: hostCount }, (_, h) => hb.publish(subjects.hb(`host-${h}`), enc(syntheticBeat(`host-${h}`, per))));
  beatAll();
  const beating = setInterval(beatAll, 500);
  const nc = await connect({ servers: url });
  try {
    await ensureTopology(nc);
    const js = jetstream(nc);
    const placements = await new Kvm(nc).open(BUCKET_PLACEMENT);
    const at = new Date().toISOString();
    for (let from = 0; from < n; from += 1000) {
      const batch = Array.from({ length: Math.min(1000, n - from) }, (_, k) => from + k);
      await Promise.all(batch.map((i) => placements.put(`svc-${i}`, enc({ v: WIRE_VERSION, host: `host-${i % hostCount}`, generation: 1, reason: null } satisfies PlacementRecord))));
      await Promise.all(
        batch.map((i) => {
          const state = syntheticState(i);
          const ev: StateEvent = {
            v: WIRE_VERSION,
            host: `host-${i % hostCount}`,
            jail: `svc-${i}`,
            generation: 1,
            seq: 1,
            state,
            pid: state === 'running' ? 1000 + i : null,
            exitCode: state === 'running' ? null : state === 'failed' ? 1 : 0,
            restarts: i % 7,
            error: state === 'failed' ? { step: 'run', message: 'the jail exited with code 1' } : null,
            at,
          };
          return js.publish(subjects.evt(ev.host, ev.jail), enc(ev));
        }),
      );
    }
  } finally {
    await nc.close();
  }
  return {
    async stop() {
      clearInterval(beating);
      await hb.close();
    },
  };
}
