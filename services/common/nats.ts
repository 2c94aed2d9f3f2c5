// The NATS connection and the JetStream topology every service relies on: the command and
// event streams and the KV buckets. Creating them is idempotent, so every service may do it.
import { connect, type NatsConnection, type Msg } from '@nats-io/transport-node';
import { jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import {
  BUCKET_DESIRED,
  BUCKET_LEADER,
  BUCKET_PLACEMENT,
  CMD_STREAM,
  EVT_STREAM,
  subjects,
} from '../../contracts/index.js';

export type { NatsConnection, Msg, KV };

/** A connection that keeps reconnecting for as long as the process lives. */
export async function connectNats(servers: string[], name: string, opts: { waitOnFirstConnect?: boolean; timeoutMs?: number } = {}) {
  return connect({
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: opts.waitOnFirstConnect ?? false,
    timeout: opts.timeoutMs ?? 5000,
    pingInterval: 5000,
  });
}

export interface Topology {
  desired: KV;
  placement: KV;
  leader: KV;
}

/** Creates (or finds) the streams and buckets. `replicas` is 1 on one server, 3 in a cluster. */
export async function ensureTopology(nc: NatsConnection, replicas = 1, leaderTtlMs = 5000): Promise<Topology> {
  const jsm = await jetstreamManager(nc);
  const streams = [
    {
      name: CMD_STREAM,
      subjects: [subjects.cmdAll],
      retention: RetentionPolicy.Limits,
      max_age: 7 * 24 * 3600 * 1e9,
      duplicate_window: 120 * 1e9,
    },
    {
      name: EVT_STREAM,
      subjects: [subjects.evtAll],
      retention: RetentionPolicy.Limits,
      max_age: 7 * 24 * 3600 * 1e9,
      max_msgs_per_subject: 256,
      duplicate_window: 120 * 1e9,
    },
  ];
  for (const cfg of streams) {
    const full = { ...cfg, storage: StorageType.File, num_replicas: replicas, discard: DiscardPolicy.Old };
    try {
      await jsm.streams.info(cfg.name);
    } catch {
      try {
        await jsm.streams.add(full);
      } catch (err) {
        // another service created it between our info and add
        await jsm.streams.info(cfg.name).catch(() => {
          throw err;
        });
      }
    }
  }
  const kvm = new Kvm(nc);
  const [desired, placement, leader] = await Promise.all([
    kvm.create(BUCKET_DESIRED, { history: 1, replicas }),
    kvm.create(BUCKET_PLACEMENT, { history: 1, replicas }),
    kvm.create(BUCKET_LEADER, { history: 1, replicas, ttl: leaderTtlMs }),
  ]);
  return { desired, placement, leader };
}

export { encodeJson, decodeWith, natsServers, DEFAULT_NATS_URL } from './codec.js';
