// The dashboard: a read-only web page of the cluster view, served by the status service on
// `--http-addr` (Node's http). The page comes as static files; its data as JSON (`/api/cluster`,
// `/api/jails/NAME`) and as a live feed of server-sent events (`/api/live`: a snapshot, then
// what changed, at most twice a second however many changes came meanwhile). With a token, every
// request must carry it (`?token=`, a Bearer header, or the cookie the page gets from its first
// `?token=` load). It never answers anything but GET and HEAD, and never changes anything.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nameSchema, type HostRow } from '../../contracts/index.js';
import type { Logger, NatsConnection } from '../common/index.js';
import type { ClusterView } from './cluster-view.js';
import { JailDetailReader } from './jail-detail.js';
import { ViewChangeTracker, type ViewChanges } from './view-changes.js';

/** How often an open page's feed looks for changes: one message per look carries all of them. */
export const LIVE_INTERVAL_MS = 500;
/** A comment line this often keeps proxies and the browser from closing an idle feed. */
const KEEPALIVE_MS = 15_000;
/** A page this far behind is dropped; its browser reconnects and starts from a snapshot. */
const MAX_BACKLOG_BYTES = 16 * 1024 * 1024;

/** The address given to `--http-addr` could not be listened on. */
export class DashboardListenFailed extends Error {
  constructor(addr: string, options?: { cause?: unknown }) {
    super(`the dashboard cannot listen on ${addr}: ${(options?.cause as Error | undefined)?.message ?? 'unknown error'}`, options);
    this.name = 'DashboardListenFailed';
  }
}

export interface DashboardOptions {
  host: string;
  port: number;
  /** When set, every request must carry it. */
  token?: string;
}

/** Where the page's built files are (dist/services/status/page), and virtual-core's ES modules. */
const pageDir = fileURLToPath(new URL('./page/', import.meta.url));
const vendorDir = join(dirname(createRequire(import.meta.url).resolve('@tanstack/virtual-core/package.json')), 'dist', 'esm');

const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
/**
 * virtual-core's ES modules expect a bundler to replace `process.env.NODE_ENV` (they read it to
 * turn debugging on); a browser has no `process`, so it is replaced here, as a bundler's define would.
 */
const forBrowser = (text: string) => text.replaceAll('process.env.NODE_ENV', '"production"');
const digest = (s: string) => createHash('sha256').update(s).digest();

export class DashboardServer {
  private server?: Server;
  private readonly pages = new Set<ServerResponse>();
  private readonly tracker = new ViewChangeTracker();
  private readonly detail: JailDetailReader;
  private live?: NodeJS.Timeout;
  /** The view's revision and the hosts' statuses at the last look. */
  private lookedAt = '';
  private keepalive?: NodeJS.Timeout;
  private readonly tokenDigest?: Buffer;
  private readonly cookie: string;

  constructor(
    private readonly view: ClusterView,
    nc: NatsConnection,
    private readonly log: Logger,
    private readonly opts: DashboardOptions,
  ) {
    this.detail = new JailDetailReader(nc);
    this.tokenDigest = opts.token ? digest(opts.token) : undefined;
    // per port: cookies are not kept apart by port, and two clusters may run on one machine
    this.cookie = `jailfleet-token-${opts.port}`;
  }

  /** Listens; resolves with the base URL (the port the kernel chose when asked for 0). */
  async start(): Promise<string> {
    const server = createServer((req, res) => void this.handle(req, res));
    const addr = `${this.opts.host}:${this.opts.port}`;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new DashboardListenFailed(addr, { cause: err })));
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.server = server;
    const port = (server.address() as AddressInfo).port;
    const host = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    return `http://${host}:${port}/`;
  }

  async stop(): Promise<void> {
    clearInterval(this.live);
    clearInterval(this.keepalive);
    for (const res of this.pages) res.end();
    this.pages.clear();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // the token rides in the page's URL: it must not leave in a Referer
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.send(res, 405, 'text/plain; charset=utf-8', 'the dashboard is read-only\n', { Allow: 'GET, HEAD' });
    const auth = this.authorized(req, url);
    if (auth === false) return this.send(res, 401, 'text/plain; charset=utf-8', 'a token is needed: open the URL that jailfleet up printed (with ?token=...), or ask the admin for the token\n', { 'WWW-Authenticate': 'Bearer realm="jailfleet"' });
    if (auth === 'query') res.setHeader('Set-Cookie', `${this.cookie}=${this.opts.token}; HttpOnly; SameSite=Strict; Path=/`);
    try {
      await this.route(req, res, url);
    } catch (err) {
      this.log.warn({ err, path: url.pathname }, 'dashboard request failed');
      if (!res.headersSent) this.send(res, 500, 'text/plain; charset=utf-8', `${(err as Error).message}\n`);
      else res.end();
    }
  }

  /** True (or how it came) when no token is configured or the request carries it; false otherwise. */
  private authorized(req: IncomingMessage, url: URL): boolean | 'query' | 'header' | 'cookie' {
    if (!this.tokenDigest) return true;
    const same = (t: string | undefined | null) => t !== undefined && t !== null && t !== '' && timingSafeEqual(digest(t), this.tokenDigest!);
    if (same(url.searchParams.get('token'))) return 'query';
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (same(bearer)) return 'header';
    const cookie = (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim().split('='))
      .find(([k]) => k === this.cookie)?.[1];
    return same(cookie) ? 'cookie' : false;
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL) {
    const path = url.pathname;
    if (path === '/' || path === '/index.html') return this.file(res, join(pageDir, 'index.html'), 'html');
    if (path === '/dashboard.css') return this.file(res, join(pageDir, 'dashboard.css'), 'css');
    // names of one plain word each: nothing outside the two directories can be named
    const app = /^\/app\/([a-z-]+)\.js$/.exec(path);
    if (app) return this.file(res, join(pageDir, `${app[1]}.js`), 'js');
    const vendor = /^\/vendor\/virtual-core\/([a-z-]+)\.js$/.exec(path);
    if (vendor) return this.file(res, join(vendorDir, `${vendor[1]}.js`), 'js', forBrowser);
    if (path === '/api/cluster') {
      const now = Date.now();
      return this.json(res, { jails: this.view.ps({}, now), hosts: this.view.hosts(now) });
    }
    const jail = /^\/api\/jails\/([^/]+)$/.exec(path);
    if (jail) {
      const name = nameSchema.safeParse(decodeURIComponent(jail[1]!));
      if (!name.success) return this.send(res, 400, 'text/plain; charset=utf-8', 'not a jail name\n');
      const row = this.view.ps({ name: name.data }, Date.now())[0] ?? null;
      const d = await this.detail.read(name.data, row);
      if (!d.row && !d.desired && d.events.length === 0) return this.send(res, 404, 'text/plain; charset=utf-8', `no jail named "${name.data}"\n`);
      return this.json(res, d);
    }
    if (path === '/api/live') return this.follow(req, res);
    return this.send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
  }

  private send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
    res.end(body);
  }

  private json(res: ServerResponse, body: unknown) {
    this.send(res, 200, 'application/json', JSON.stringify(body));
  }

  private async file(res: ServerResponse, path: string, kind: keyof typeof TYPES, transform?: (text: string) => string) {
    let body: Buffer | string;
    try {
      body = await readFile(path);
      if (transform) body = transform(body.toString('utf8'));
    } catch {
      return this.send(res, 404, 'text/plain; charset=utf-8', 'not found (is the page built? run: node scripts/setup.mjs)\n');
    }
    this.send(res, 200, TYPES[kind]!, body);
  }

  /** The live feed: a snapshot of every jail and host, then a `changes` message per look that found any. */
  private follow(req: IncomingMessage, res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
    // the page starts from what the others hold, brought up to date now
    this.look();
    res.write(`event: snapshot\ndata: ${this.tracker.snapshotJson()}\n\n`);
    this.pages.add(res);
    req.on('close', () => {
      this.pages.delete(res);
      if (this.pages.size === 0) this.idle();
    });
    this.live ??= setInterval(() => this.look(), LIVE_INTERVAL_MS);
    this.keepalive ??= setInterval(() => this.broadcast(': keepalive\n\n'), KEEPALIVE_MS);
  }

  private idle() {
    clearInterval(this.live);
    clearInterval(this.keepalive);
    this.live = this.keepalive = undefined;
  }

  /**
   * Compares the view with what the pages hold and sends them the difference, in one message.
   * The rows are read again only when the view took something in or a host changed (a host going
   * down turns its jails `lost` by the clock alone): at 10,000 jails reading them costs ~50 ms.
   */
  private look() {
    const now = Date.now();
    const hosts = this.view.hosts(now);
    const key = `${this.view.revision}|${hosts.map((h) => `${h.host}:${h.status}`).join(',')}`;
    if (key === this.lookedAt) return void this.lookHosts(hosts);
    this.lookedAt = key;
    const changes = this.tracker.next(this.view.ps({}, now), hosts);
    if (changes) this.broadcast(`event: changes\ndata: ${JSON.stringify(changes satisfies ViewChanges)}\n\n`);
  }

  /** Only the hosts may have changed (a heartbeat's jails or allocation): no row is read. */
  private lookHosts(hosts: HostRow[]) {
    const changes = this.tracker.nextHosts(hosts);
    if (changes) this.broadcast(`event: changes\ndata: ${JSON.stringify(changes satisfies ViewChanges)}\n\n`);
  }

  private broadcast(text: string) {
    for (const res of this.pages) {
      // a page that does not read is dropped rather than buffered without end
      if (res.writableLength > MAX_BACKLOG_BYTES) {
        this.pages.delete(res);
        res.destroy();
        continue;
      }
      res.write(text);
    }
  }
}
