// The NATS connection and the JetStream topology every service relies on: the command and
// event streams and the KV buckets. Creating them is idempotent, so every service may do it.
import { connect, type NatsConnection, type Msg } from '@nats-io/transport-node';
import { jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import {
  BUCKET_ADDRESSES,
  BUCKET_DESIRED,
  BUCKET_HOSTS,
  BUCKET_LEADER,
  BUCKET_PLACEMENT,
  CMD_STREAM,
  EVT_STREAM,
  subjects,
} from '../../contracts/index.js';
import { DEFAULT_LEASE_MS } from './defaults.js';

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
    // a cut link (no RST) is noticed after two missed pings: keep that within seconds
    pingInterval: 2000,
    maxPingOut: 2,
  });
}

/**
 * R3 when the server we reached belongs to a cluster, else R1 (JAILFLEET_REPLICAS overrides).
 * Not the count of peers it lists: right after a cluster starts, its routes may not be up yet,
 * and a stream made R1 then stays on one server and dies with it.
 */
export function replicasFor(nc: NatsConnection): number {
  const forced = Number(process.env.JAILFLEET_REPLICAS);
  if (Number.isInteger(forced) && forced >= 1 && forced <= 5) return forced;
  return nc.info?.cluster ? 3 : 1;
}

export interface Topology {
  desired: KV;
  placement: KV;
  leader: KV;
  /** Drains, by host name (contracts/state.ts hostRecordSchema). */
  hosts: KV;
  /** Vnet jails' addresses: address → holder (contracts/state.ts addressRecordSchema). */
  addresses: KV;
}

/**
 * Creates (or finds) the streams and buckets, R3 in a cluster and R1 on one server. A cluster
 * that is still electing its JetStream leader refuses for a moment: this retries for up to 60 s.
 */
export async function ensureTopology(nc: NatsConnection, opts: { replicas?: number; leaseMs?: number } = {}): Promise<Topology> {
  const deadline = Date.now() + 60_000;
  for (let attempt = 0; ; attempt++) {
    try {
      return await createTopology(nc, opts.replicas ?? replicasFor(nc), opts.leaseMs ?? DEFAULT_LEASE_MS);
    } catch (err) {
      if (Date.now() > deadline || nc.isClosed()) throw err;
      await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
    }
  }
}

async function createTopology(nc: NatsConnection, replicas: number, leaderTtlMs: number): Promise<Topology> {
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
  // a bucket that exists is used as it is (its replicas and TTL were fixed when it was made)
  const bucket = (name: string, o: { ttl?: number } = {}) => kvm.open(name).then(async (kv) => {
    await kv.status();
    return kv;
  }).catch(() => kvm.create(name, { history: 1, replicas, ...o }));
  const [desired, placement, leader, hosts, addresses] = await Promise.all([
    bucket(BUCKET_DESIRED),
    bucket(BUCKET_PLACEMENT),
    bucket(BUCKET_LEADER, { ttl: leaderTtlMs }),
    bucket(BUCKET_HOSTS),
    bucket(BUCKET_ADDRESSES),
  ]);
  return { desired, placement, leader, hosts, addresses };
}

export { encodeJson, decodeWith, natsServers } from './codec.js';
