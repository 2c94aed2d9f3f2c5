// The agent's Prometheus metrics: counters and a histogram the agent feeds as things happen, and
// gauges read from the agent and the jails' cgroups only when scraped (collect callbacks), so a
// fleet nobody scrapes pays nothing. Every series carries the agent's `host` label. It must
// never change a jail: a scrape only reads.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { HostResources } from '../../contracts/index.js';
import { JAIL_STATES } from '../../contracts/index.js';
import { serviceRegistry } from '../common/metrics.js';

/** What a scrape reads from the agent. */
export interface AgentMetricsSource {
  /** The stable state of every jail the agent holds (those with a state yet). */
  jailStates(): Iterable<string>;
  capacity(): HostResources;
  allocated(): HostResources;
  /** What each running jail uses now, read from its cgroup (only jails the driver can tell). */
  usage(): Promise<{ jail: string; cpuSeconds: number; memoryBytes: number }[]>;
}

const MB = 1024 * 1024;

export class AgentMetrics {
  readonly registry: Registry;
  private readonly startDuration: Histogram;
  private readonly restarts: Counter;
  private readonly oomKills: Counter;
  private readonly healthFailures: Counter<'kind'>;

  constructor(host: string, source: AgentMetricsSource) {
    const registers = [(this.registry = serviceRegistry({ host }))];
    new Gauge({
      name: 'jailfleet_agent_jails',
      help: 'Jails this agent holds, by lifecycle state.',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = new Map<string, number>(JAIL_STATES.map((s) => [s, 0]));
        for (const s of source.jailStates()) counts.set(s, (counts.get(s) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    this.startDuration = new Histogram({
      name: 'jailfleet_agent_jail_start_duration_seconds',
      help: "Time of a jail's start step: from the spawn of its init until its command runs.",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.restarts = new Counter({ name: 'jailfleet_agent_jail_restarts_total', help: 'Jails restarted by their restart policy after they exited.', registers });
    this.oomKills = new Counter({
      name: 'jailfleet_agent_jail_oom_kills_total',
      help: "Jails that ended because the kernel killed them for memory (their cgroup's oom_kill count).",
      registers,
    });
    this.healthFailures = new Counter({
      name: 'jailfleet_agent_health_check_failures_total',
      help: 'Health checks of jails that failed, by kind of check.',
      labelNames: ['kind'],
      registers,
    });
    const hostGauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    hostGauge('jailfleet_host_capacity_cpus', 'Cores this host offers to jails.', () => source.capacity().cpu);
    hostGauge('jailfleet_host_capacity_memory_bytes', 'Memory this host offers to jails.', () => source.capacity().memoryMB * MB);
    hostGauge('jailfleet_host_allocated_cpus', 'Cores the jails this host holds reserve.', () => source.allocated().cpu);
    hostGauge('jailfleet_host_allocated_memory_bytes', 'Memory the jails this host holds reserve.', () => source.allocated().memoryMB * MB);
    // one read of the cgroups per scrape feeds both per-jail series; the second collect awaits
    // the first's read rather than reading every file again
    let reading: Promise<Awaited<ReturnType<AgentMetricsSource['usage']>>> | null = null;
    const read = () => (reading ??= source.usage().finally(() => setImmediate(() => (reading = null))));
    new Counter({
      name: 'jailfleet_jail_cpu_seconds_total',
      help: 'Cpu time a running jail has used since it started, from its cgroup.',
      labelNames: ['jail'],
      registers,
      async collect() {
        const usage = await read();
        this.reset();
        for (const u of usage) this.inc({ jail: u.jail }, u.cpuSeconds);
      },
    });
    new Gauge({
      name: 'jailfleet_jail_memory_bytes',
      help: 'Memory charged to a running jail now, from its cgroup.',
      labelNames: ['jail'],
      registers,
      async collect() {
        const usage = await read();
        this.reset();
        for (const u of usage) this.set({ jail: u.jail }, u.memoryBytes);
      },
    });
  }

  /** A jail's start step took `seconds`. */
  jailStarted(seconds: number): void {
    this.startDuration.observe(seconds);
  }

  /** A jail was restarted by its policy `n` more times. */
  jailRestarted(n = 1): void {
    if (n > 0) this.restarts.inc(n);
  }

  /** A jail ended killed for memory. */
  jailKilledForMemory(): void {
    this.oomKills.inc();
  }

  /** One health check's result (the check runner's onResult): a failure is counted by its kind. */
  healthResult(_jail: string, kind: string, ok: boolean): void {
    if (!ok) this.healthFailures.inc({ kind });
  }
}
