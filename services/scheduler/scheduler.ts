// The scheduler process: wiring only. It connects to NATS, follows the buckets (kv-store.ts),
// hears heartbeats, answers the API (api.ts), holds or waits for the leader lease, and ticks the
// reconciler (reconciler.ts), which decides (decide.ts, move.ts) and acts. It never talks to a
// host except through NATS, and it holds no scheduling logic of its own.
import { hostname as osHostname } from 'node:os';
import { jetstream } from '@nats-io/jetstream';
import {
  API_VERBS,
  SCHEDULER_QUEUE,
  commandMsgId,
  heartbeatSchema,
  stateEventSchema,
  subjectTokens,
  subjects,
  type Command,
  type PlacementStrategy,
} from '../../contracts/index.js';
import { DEFAULT_LEASE_MS, connectNats, decodeWith, encodeJson, ensureTopology, type Logger, type NatsConnection } from '../common/index.js';
import { SchedulerApi } from './api.js';
import { KvStore } from './kv-store.js';
import { LeaderLease } from './leader-lease.js';
import { Reconciler } from './reconciler.js';

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
}

export class Scheduler {
  private nc?: NatsConnection;
  private store?: KvStore;
  private reconciler?: Reconciler;
  private lease?: LeaderLease;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly log: Logger;

  constructor(private readonly opts: SchedulerOptions) {
    this.log = opts.logger;
  }

  /** True while this scheduler holds the lease: only the leader places and publishes. */
  get isLeader() {
    return this.lease?.isLeader ?? false;
  }

  async start(): Promise<void> {
    const o = this.opts;
    const hostTtlMs = o.hostTtlMs ?? 3000;
    const nc = await connectNats(o.servers, `jailfleet-scheduler@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    const topology = await ensureTopology(nc, { leaseMs: o.leaseMs });
    const store = new KvStore(nc, topology, this.log);
    this.store = store;
    const js = jetstream(nc);
    const reconciler = new Reconciler({
      store,
      log: this.log,
      leading: () => this.isLeader,
      now: () => Date.now(),
      hostTtlMs,
      strategy: o.strategy ?? 'binpack',
      moveTimeoutMs: o.moveTimeoutMs ?? 120_000,
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
    nc.subscribe(subjects.hbAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const hb = decodeWith(heartbeatSchema, msg.data);
          if (hb.host !== subjectTokens(msg.subject).host) throw new Error(`heartbeat of ${hb.host} on ${msg.subject}`);
          reconciler.onHeartbeat(hb);
        } catch (e) {
          this.log.warn({ subject: msg.subject, reason: (e as Error).message }, 'malformed heartbeat dropped');
        }
      },
    });
    const api = new SchedulerApi(store, reconciler);
    for (const verb of API_VERBS) {
      nc.subscribe(subjects.api(verb), {
        queue: SCHEDULER_QUEUE,
        callback: (err, msg) => {
          if (err) return;
          api.handle(verb, msg.data).then(
            (result) => msg.respond(encodeJson({ ok: true, result })),
            (e: Error & { code?: string }) => {
              const code = e.code === 'invalid' || e.code === 'not_found' || e.code === 'conflict' ? e.code : 'internal';
              if (code === 'internal') this.log.error({ err: e, verb }, 'API request failed');
              msg.respond(encodeJson({ ok: false, error: { code, message: e.message } }));
            },
          );
        },
      });
    }
    await store.synced;
    this.timers.push(setInterval(() => reconciler.resync(), o.resyncMs ?? 2000));
    // after one TTL every live host has spoken: what waited for them is placed
    this.timers.push(setTimeout(() => reconciler.resync(), hostTtlMs));
    // a host going down is noticed within a quarter of the TTL of its last heartbeat
    this.timers.push(setInterval(() => reconciler.checkHosts(), Math.max(50, Math.min(250, hostTtlMs / 4))));
    this.lease = new LeaderLease(topology.leader, `${osHostname()}/${process.pid}/${Math.random().toString(36).slice(2, 8)}`, o.leaseMs ?? DEFAULT_LEASE_MS, {
      onGained: () => {
        this.log.info('leading: this scheduler places and commands');
        reconciler.gainedLead();
      },
      onLost: () => this.log.warn('lease lost: standing by'),
    });
    this.lease.start();
    this.log.info('scheduler started');
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.store?.close();
    await this.reconciler?.stop();
    await this.lease?.stop();
    await this.nc?.drain().catch(() => undefined);
  }
}
