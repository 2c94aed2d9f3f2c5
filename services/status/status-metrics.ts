// The status service's Prometheus metrics: the cluster view counted when scraped — jails by
// state and host (as `ps` shows them) and hosts by status (as `hosts` shows them). Read-only, as
// the whole service is; it must never keep a copy of the view that could go stale.
import { Gauge, type Registry } from 'prom-client';
import type { HostRow, PsRow } from '../../contracts/index.js';
import { serviceRegistry } from '../common/metrics.js';

const HOST_STATUSES: HostRow['status'][] = ['up', 'down', 'draining', 'drained'];

/** The status service's registry over `view`; `now` is the clock a scrape judges liveness by. */
export function statusRegistry(view: { ps: (filter: object, now: number) => PsRow[]; hosts: (now: number) => HostRow[] }, now: () => number = Date.now): Registry {
  const registry = serviceRegistry();
  new Gauge({
    name: 'jailfleet_jails',
    help: "Jails of the cluster by state and host, as `jailfleet ps` shows them (host is empty for a jail no host holds).",
    labelNames: ['state', 'host'],
    registers: [registry],
    collect() {
      // a jail gone from a host since the last scrape must not keep its old count
      this.reset();
      const counts = new Map<string, { state: string; host: string; n: number }>();
      for (const r of view.ps({}, now())) {
        const key = `${r.state}\n${r.host ?? ''}`;
        const c = counts.get(key);
        if (c) c.n++;
        else counts.set(key, { state: r.state, host: r.host ?? '', n: 1 });
      }
      for (const c of counts.values()) this.set({ state: c.state, host: c.host }, c.n);
    },
  });
  new Gauge({
    name: 'jailfleet_hosts',
    help: 'Hosts heard from, by status (up, down, draining, drained), as `jailfleet hosts` shows them.',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      const counts = new Map(HOST_STATUSES.map((s) => [s, 0]));
      for (const h of view.hosts(now())) counts.set(h.status, (counts.get(h.status) ?? 0) + 1);
      for (const [status, n] of counts) this.set({ status }, n);
    },
  });
  return registry;
}
