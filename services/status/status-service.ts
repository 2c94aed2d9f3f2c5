// The status service: rebuilds the cluster view from the event stream (from its start, so a
// restarted service has the same view), heartbeats and placements, and answers queries.
// It never changes anything.
import { hostname as osHostname } from 'node:os';
import { jetstream, DeliverPolicy } from '@nats-io/jetstream';
import {
  BUCKET_HOSTS,
  BUCKET_PLACEMENT,
  EVT_STREAM,
  STATUS_QUEUE,
  hostRecordSchema,
  hostsRequestSchema,
  placementRecordSchema,
  psRequestSchema,
  stateEventSchema,
  subjectTokens,
  subjects,
} from '../../contracts/index.js';
import {
  DEFAULT_HOST_TTL_MS,
  HeartbeatFeed,
  connectNats,
  decodeWith,
  ensureTopology,
  followRecords,
  keepConsuming,
  retrying,
  serveRpcChunked,
  streamLastSeq,
  type KeptConsumer,
  type Logger,
  type NatsConnection,
} from '../common/index.js';
import { ClusterView } from './cluster-view.js';
import { statusRegistry } from './status-metrics.js';
import type { Registry } from 'prom-client';
import { DashboardServer, type DashboardOptions } from './dashboard-server.js';

export interface StatusOptions {
  servers: string[];
  logger: Logger;
  hostTtlMs?: number;
  /** Serve the dashboard (a read-only web page) on this address, with this token when given. */
  http?: DashboardOptions;
}

export class StatusService {
  private nc?: NatsConnection;
  private events?: KeptConsumer;
  private heartbeats?: HeartbeatFeed;
  private stopWatch?: () => void;
  private stopped = false;
  private dashboard?: DashboardServer;
  /** The dashboard's base URL once it listens (without the token). */
  dashboardUrl?: string;
  /** The event stream's sequence after the last event folded into the view. */
  private nextEvent = 0;
  readonly view: ClusterView;
  /** Served on /metrics by `serve status --metrics-addr`: the view counted when scraped. */
  readonly metrics: Registry;
  private readonly log: Logger;

  constructor(private readonly opts: StatusOptions) {
    this.view = new ClusterView(opts.hostTtlMs ?? DEFAULT_HOST_TTL_MS, Date.now());
    this.metrics = statusRegistry(this.view);
    this.log = opts.logger;
  }

  async start(): Promise<void> {
    const nc = await connectNats(this.opts.servers, `jailfleet-status@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    await ensureTopology(nc);
    // the view judges liveness by the feed's rule itself (it is pure, the clock passed in): the
    // feed only admits heartbeats
    this.heartbeats = new HeartbeatFeed({ log: this.log, ttlMs: this.opts.hostTtlMs, onHeard: (hb, now) => this.view.applyHeartbeat(hb, now) });
    this.heartbeats.start(nc);
    // an unreadable placement is reported and skipped: the view keeps what it knew (never `removing`)
    const watch = followRecords(nc, BUCKET_PLACEMENT, placementRecordSchema, this.log, (key, p) => this.view.applyPlacement(key, p));
    this.stopWatch = () => watch.stop();
    void watch.synced.then(() => (this.view.placementsSynced = true));
    this.followHosts(nc);
    this.followEvents(nc);
    // a restarted service answers only once it has caught up with the stream (and the
    // placements): meanwhile another one answers, or the CLI retries
    await this.catchUp(nc, watch.synced);
    const rpc = { queue: STATUS_QUEUE, log: this.log };
    // lists of any length: as many messages as the broker's max_payload needs (10,000 jails are
    // more than 1 MB)
    serveRpcChunked(nc, subjects.status('ps'), psRequestSchema, 'jails', (req) => this.view.ps(req, Date.now()), rpc);
    serveRpcChunked(nc, subjects.status('hosts'), hostsRequestSchema, 'hosts', () => this.view.hosts(Date.now()), rpc);
    if (this.opts.http) {
      this.dashboard = new DashboardServer(this.view, nc, this.log, this.opts.http);
      this.dashboardUrl = await this.dashboard.start();
      this.log.info({ url: this.dashboardUrl, token: this.opts.http.token !== undefined }, 'dashboard listening');
    }
    this.log.info('status service started');
  }

  /**
   * Every state event from the stream's start, then every new one; opened again from the next
   * sequence whenever the consumer fails (a broker of the cluster died), so the view is whole.
   */
  private followEvents(nc: NatsConnection) {
    this.events = keepConsuming(
      nc,
      'event consumer',
      this.log,
      async () => {
        const consumer = await jetstream(nc).consumers.get(EVT_STREAM, this.nextEvent > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.nextEvent } : { deliver_policy: DeliverPolicy.All });
        return { messages: await consumer.consume(), behind: async () => (await streamLastSeq(nc, EVT_STREAM)) >= this.nextEvent };
      },
      (m) => {
        this.nextEvent = m.seq + 1;
        try {
          const e = decodeWith(stateEventSchema, m.data);
          const from = subjectTokens(m.subject);
          if (e.host !== from.host || e.jail !== from.jail) throw new Error(`event of ${e.host}/${e.jail} on ${m.subject}`);
          this.view.applyEvent(e);
        } catch (e) {
          this.log.warn({ subject: m.subject, reason: (e as Error).message }, 'malformed event ignored');
        }
      },
    );
  }

  /** Resolves once the view holds every event the stream had when we asked, and the placements (at most 60 s). */
  private async catchUp(nc: NatsConnection, placementsSynced: Promise<void>) {
    const deadline = Date.now() + 60_000;
    const target = await retrying('reading the event stream', () => streamLastSeq(nc, EVT_STREAM), { log: this.log, deadlineMs: 60_000 }).catch(() => 0);
    await Promise.race([placementsSynced, new Promise((r) => setTimeout(r, 60_000))]);
    const behind = () => target > 0 && this.nextEvent <= target;
    while (behind() && Date.now() < deadline && !this.stopped) await new Promise((r) => setTimeout(r, 20));
    if (behind()) this.log.warn({ at: this.nextEvent, target }, 'answering before the view caught up with the event stream');
  }

  /** Drains (hosts bucket): `hosts` shows draining and drained from them. */
  private followHosts(nc: NatsConnection) {
    const watch = followRecords(nc, BUCKET_HOSTS, hostRecordSchema, this.log, (key, r) => this.view.applyHostRecord(key, r));
    const stopPlacements = this.stopWatch;
    this.stopWatch = () => (stopPlacements?.(), watch.stop());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.dashboard?.stop();
    this.heartbeats?.stop();
    this.stopWatch?.();
    await this.events?.stop();
    await this.nc?.drain().catch(() => undefined);
  }
}
