// The scheduler process: wiring only. It connects to NATS, follows the buckets (kv-store.ts),
// hears heartbeats, answers the API (api.ts), holds or waits for the leader lease, and ticks the
// reconciler (reconciler.ts), which decides (decide.ts, move.ts) and acts. It never talks to a
// host except through NATS, and it holds no scheduling logic of its own.
import { hostname as osHostname } from 'node:os';
import { jetstream } from '@nats-io/jetstream';
import type { z } from 'zod';
import { API_VERBS, SCHEDULER_QUEUE, commandMsgId, stateEventSchema, subjects, type Command, type PlacementStrategy } from '../../contracts/index.js';
import {
  DEFAULT_HOST_TTL_MS,
  DEFAULT_LEASE_MS,
  DEFAULT_MOVE_TIMEOUT_MS,
  DEFAULT_RESYNC_MS,
  HeartbeatFeed,
  DEFAULT_JAIL_CIDR,
  connectNats,
  decodeWith,
  encodeJson,
  ensureTopology,
  serveRpc,
  type Logger,
  type NatsConnection,
} from '../common/index.js';
import { JailNetwork } from '../common/jail-network.js';
import { ImageStore } from '../common/image-store.js';
import { SchedulerApi } from './api.js';
import { ImagePins } from './image-pins.js';
import { KvStore } from './kv-store.js';
import { LeaderLease } from './leader-lease.js';
import { Reconciler } from './reconciler.js';
import { SchedulerMetrics } from './scheduler-metrics.js';
import { isReadable } from './store.js';

export interface SchedulerOptions {
  servers: string[];
  logger: Logger;
  hostTtlMs?: number;
  /** Full reconcile pass interval (new hosts, unplaced jails). */
  resyncMs?: number;
  /** The leader lease: a standby scheduler takes over within this long after the leader dies. */
  leaseMs?: number;
  /** How new jails are packed: `binpack` (fewest hosts, the default) or `spread` (least loaded). */
  strategy?: PlacementStrategy;
  /** How long a drain waits for a jail's new copy to run before it gives up on that move. */
  moveTimeoutMs?: number;
  /** The cluster's jail network (`--jail-cidr`): vnet jails' addresses come from it. */
  jailNetwork?: JailNetwork;
}

export class Scheduler {
  private nc?: NatsConnection;
  private store?: KvStore;
  private reconciler?: Reconciler;
  private lease?: LeaderLease;
  private feed?: HeartbeatFeed;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly log: Logger;
  /** Served on /metrics by `serve scheduler --metrics-addr`. */
  readonly metrics: SchedulerMetrics;

  constructor(private readonly opts: SchedulerOptions) {
    this.log = opts.logger;
    this.metrics = new SchedulerMetrics({
      leading: () => this.isLeader,
      unplaced: () => {
        let n = 0;
        for (const p of this.store?.placements.entries() ?? []) if (isReadable(p) && p.value.host === null) n++;
        return n;
      },
    });
  }

  /** True while this scheduler holds the lease: only the leader places and publishes. */
  get isLeader() {
    return this.lease?.isLeader ?? false;
  }

  async start(): Promise<void> {
    const o = this.opts;
    const nc = await connectNats(o.servers, `jailfleet-scheduler@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    const topology = await ensureTopology(nc, { leaseMs: o.leaseMs });
    const store = new KvStore(nc, topology, this.log);
    this.store = store;
    const js = jetstream(nc);
    const jailNetwork = o.jailNetwork ?? JailNetwork.parse(DEFAULT_JAIL_CIDR);
    let reconciler: Reconciler | undefined;
    // heartbeats and the one liveness rule; the feed tells the reconciler who came up and went down
    const feed = new HeartbeatFeed({
      log: this.log,
      ttlMs: o.hostTtlMs ?? DEFAULT_HOST_TTL_MS,
      onHeard: (hb) => reconciler?.onHeartbeat(hb),
      onUp: (host) => reconciler?.hostUp(host),
      onDown: (host) => reconciler?.hostWentDown(host),
    });
    this.feed = feed;
    reconciler = new Reconciler({
      store,
      log: this.log,
      liveness: feed.liveness,
      leading: () => this.isLeader,
      now: () => Date.now(),
      strategy: o.strategy ?? 'binpack',
      moveTimeoutMs: o.moveTimeoutMs ?? DEFAULT_MOVE_TIMEOUT_MS,
      metrics: this.metrics,
      jailNetwork,
      commands: {
        publish: async (host: string, cmd: Command) => {
          if (!this.isLeader) throw new Error('not the leader: command not published');
          await js.publish(subjects.cmd(host), encodeJson(cmd), { msgID: commandMsgId(cmd) });
        },
      },
      events: {
        follow: (host, jail, each) => {
          const sub = nc.subscribe(subjects.evt(host, jail), {
            callback: (err, msg) => {
              if (err) return;
              try {
                each(decodeWith(stateEventSchema, msg.data));
              } catch {
                // the status service reports malformed events
              }
            },
          });
          return () => sub.unsubscribe();
        },
      },
    });
    this.reconciler = reconciler;
    const rec = reconciler;
    feed.start(nc);
    // opened on the first apply that names a tag, and again after a failure: a cluster still
    // electing its JetStream leaders must not stop the scheduler from starting
    let images: Promise<ImageStore> | undefined;
    const imageStore = () =>
      (images ??= ImageStore.open(nc).catch((err: unknown) => {
        images = undefined;
        throw err;
      }));
    const api = new SchedulerApi(store, rec, new ImagePins(imageStore), jailNetwork);
    for (const verb of API_VERBS) {
      const v = api.verbs[verb] as { request: z.ZodTypeAny; handle: (r: unknown) => unknown };
      serveRpc(nc, subjects.api(verb), v.request, (req) => v.handle(req), { queue: SCHEDULER_QUEUE, log: this.log });
    }
    await store.synced;
    this.timers.push(setInterval(() => rec.resync(), o.resyncMs ?? DEFAULT_RESYNC_MS));
    // after one TTL every live host has spoken: what waited for them is placed
    this.timers.push(setTimeout(() => rec.resync(), Math.max(0, feed.liveness.startedAt + feed.liveness.ttlMs - Date.now())));
    this.lease = new LeaderLease(topology.leader, `${osHostname()}/${process.pid}/${Math.random().toString(36).slice(2, 8)}`, o.leaseMs ?? DEFAULT_LEASE_MS, {
      onGained: () => {
        this.log.info('leading: this scheduler places and commands');
        rec.gainedLead();
      },
      onLost: () => this.log.warn('lease lost: standing by'),
    });
    this.lease.start();
    this.log.info('scheduler started');
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.feed?.stop();
    this.store?.close();
    await this.reconciler?.stop();
    await this.lease?.stop();
    await this.nc?.drain().catch(() => undefined);
  }
}
