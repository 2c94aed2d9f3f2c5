// The one /metrics endpoint every service serves with --metrics-addr: a prom-client registry of
// the service's own (never the global one, so two services in one process never mix their
// series), the process metrics prom-client collects by default, and a plain HTTP server that
// answers GET /metrics in the Prometheus text format. It must never change anything a service
// does: a scrape only reads, and an endpoint that cannot bind fails the service's start.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { MetricsAddr } from './metrics-addr.js';

export { BadMetricsAddr, parseMetricsAddr, type MetricsAddr } from './metrics-addr.js';

const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** A registry of one service with the process metrics; `labels` go on every series (the agent's host). */
export function serviceRegistry(labels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry });
  // prom-client names three gauges `_total`, which Prometheus keeps for counters (promtool check
  // metrics refuses them); their per-type twins without the suffix stay
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}

/** The HTTP server of a registry: GET /metrics, 404 for anything else. */
export class MetricsEndpoint {
  private constructor(
    private readonly server: Server,
    /** Where it listens (the port the kernel chose when asked for 0). */
    readonly addr: MetricsAddr,
  ) {}

  static async listen(registry: Registry, at: MetricsAddr): Promise<MetricsEndpoint> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
      );
    });
    // a scraper that keeps its connection open must not hold a stopping service up
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`cannot serve metrics on ${at.host}:${at.port}: ${err.message}`, { cause: err })));
      server.listen(at.port, at.host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    return new MetricsEndpoint(server, { host: at.host, port: a.port });
  }

  /** The URL a scraper asks. */
  get url(): string {
    const host = this.addr.host.includes(':') ? `[${this.addr.host}]` : this.addr.host;
    return `http://${host}:${this.addr.port}/metrics`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
