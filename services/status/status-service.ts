// The status service: rebuilds the cluster view from the event stream (from its start, so a
// restarted service has the same view), heartbeats and placements, and answers queries.
// It never changes anything.
import { hostname as osHostname } from 'node:os';
import { jetstream, DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream';
import {
  EVT_STREAM,
  STATUS_QUEUE,
  heartbeatSchema,
  hostRecordSchema,
  hostsRequestSchema,
  placementRecordSchema,
  psRequestSchema,
  stateEventSchema,
  subjectTokens,
  subjects,
} from '../../contracts/index.js';
import { connectNats, decodeWith, encodeJson, ensureTopology, type KV, type Logger, type Msg, type NatsConnection } from '../common/index.js';
import { ClusterView } from './cluster-view.js';

export interface StatusOptions {
  servers: string[];
  logger: Logger;
  hostTtlMs?: number;
}

export class StatusService {
  private nc?: NatsConnection;
  private events?: ConsumerMessages;
  private stopWatch?: () => void;
  readonly view: ClusterView;
  private readonly log: Logger;

  constructor(private readonly opts: StatusOptions) {
    this.view = new ClusterView(opts.hostTtlMs ?? 3000, Date.now());
    this.log = opts.logger;
  }

  async start(): Promise<void> {
    const nc = await connectNats(this.opts.servers, `jailfleet-status@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    const topo = await ensureTopology(nc);
    nc.subscribe(subjects.hbAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const hb = decodeWith(heartbeatSchema, msg.data);
          // a host speaks only for itself: its credentials confine it to its own subjects
          if (hb.host !== subjectTokens(msg.subject).host) throw new Error(`heartbeat of ${hb.host} on ${msg.subject}`);
          this.view.applyHeartbeat(hb, Date.now());
        } catch (e) {
          this.log.warn({ subject: msg.subject, reason: (e as Error).message }, 'malformed heartbeat dropped');
        }
      },
    });
    const watch = await topo.placement.watch();
    this.stopWatch = () => watch.stop();
    if ((await topo.placement.status()).values === 0) this.view.placementsSynced = true;
    void (async () => {
      for await (const e of watch) {
        const p = e.operation === 'PUT' ? placementRecordSchema.safeParse(e.json()).data ?? null : null;
        this.view.applyPlacement(e.key, p);
        if (e.delta === 0) this.view.placementsSynced = true;
      }
    })();
    await this.watchHosts(topo.hosts);
    const consumer = await jetstream(nc).consumers.get(EVT_STREAM, { deliver_policy: DeliverPolicy.All });
    this.events = await consumer.consume();
    void (async () => {
      for await (const m of this.events!) {
        try {
          const e = decodeWith(stateEventSchema, m.data);
          const from = subjectTokens(m.subject);
          if (e.host !== from.host || e.jail !== from.jail) throw new Error(`event of ${e.host}/${e.jail} on ${m.subject}`);
          this.view.applyEvent(e);
        } catch (e) {
          this.log.warn({ subject: m.subject, reason: (e as Error).message }, 'malformed event ignored');
        }
      }
    })();
    nc.subscribe(subjects.status('ps'), { queue: STATUS_QUEUE, callback: (err, msg) => this.answer(err, msg, 'ps') });
    nc.subscribe(subjects.status('hosts'), { queue: STATUS_QUEUE, callback: (err, msg) => this.answer(err, msg, 'hosts') });
    this.log.info('status service started');
  }

  /** Drains (hosts bucket): `hosts` shows draining and drained from them. */
  private async watchHosts(kv: KV) {
    const watch = await kv.watch();
    const stopPlacements = this.stopWatch;
    this.stopWatch = () => (stopPlacements?.(), watch.stop());
    void (async () => {
      for await (const e of watch) {
        const r = e.operation === 'PUT' ? hostRecordSchema.safeParse(e.json()).data : undefined;
        if (e.operation === 'PUT' && !r) this.log.warn({ host: e.key }, 'unreadable host record ignored');
        this.view.applyHostRecord(e.key, r ?? null);
      }
    })().catch((err) => this.log.error({ err }, 'hosts watch ended'));
  }

  private answer(err: Error | null, msg: Msg, query: 'ps' | 'hosts') {
    if (err) return;
    try {
      const result =
        query === 'ps'
          ? { jails: this.view.ps(decodeWith(psRequestSchema, msg.data), Date.now()) }
          : (decodeWith(hostsRequestSchema, msg.data), { hosts: this.view.hosts(Date.now()) });
      msg.respond(encodeJson({ ok: true, result }));
    } catch (e) {
      const x = e as Error & { code?: string };
      msg.respond(encodeJson({ ok: false, error: { code: x.code === 'invalid' ? 'invalid' : 'internal', message: x.message } }));
    }
  }

  async stop(): Promise<void> {
    this.stopWatch?.();
    await this.events?.close().catch(() => undefined);
    await this.nc?.drain().catch(() => undefined);
  }
}
