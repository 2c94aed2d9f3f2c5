// The metrics of every service, built from hand-fed sources: the names and labels Prometheus
// sees, the values a scrape reads at that moment, `--metrics-addr` checked where it enters, and
// the ps usage column from the agents' heartbeats. (promtool checks real scrapes in
// test/e2e/metrics.test.ts.)
import { describe, expect, test } from '@jest/globals';
import type { Heartbeat, StateEvent } from '../../contracts/index.js';
import { BadMetricsAddr, parseMetricsAddr } from '../../services/common/metrics-addr.js';
import { AgentMetrics } from '../../services/agent/agent-metrics.js';
import { SchedulerMetrics } from '../../services/scheduler/scheduler-metrics.js';
import { ClusterView } from '../../services/status/cluster-view.js';
import { statusRegistry } from '../../services/status/status-metrics.js';

/** The value of one series in the text format, or undefined when it is not there. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('--metrics-addr', () => {
  test('HOST:PORT, [IPv6]:PORT and port 0 (any free port)', () => {
    expect(parseMetricsAddr('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseMetricsAddr('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseMetricsAddr('localhost:65535')).toEqual({ host: 'localhost', port: 65535 });
  });

  test.each(['9464', '127.0.0.1', ':9464', '127.0.0.1:port', '127.0.0.1:-1', 'a b:1', '::1:9464', 'http://127.0.0.1:9464'])('%j is refused, naming the flag and the rule', (v) => {
    expect(() => parseMetricsAddr(v)).toThrow(BadMetricsAddr);
    expect(() => parseMetricsAddr(v)).toThrow(/^--metrics-addr: must be HOST:PORT/);
  });

  test('a port above 65535 is refused as such', () => {
    expect(() => parseMetricsAddr('127.0.0.1:65536')).toThrow('--metrics-addr: the port must be 0–65535 (got "127.0.0.1:65536")');
  });
});

describe('agent metrics', () => {
  const source = (states: string[], usage: { jail: string; cpuSeconds: number; memoryBytes: number }[]) => ({
    jailStates: () => states,
    capacity: () => ({ cpu: 4, memoryMB: 2048 }),
    allocated: () => ({ cpu: 1.5, memoryMB: 320 }),
    usage: async () => usage,
  });

  test('jails by state (every state, zeros included), host capacity and allocation in base units, with the host label', async () => {
    const m = new AgentMetrics('host-1', source(['running', 'running', 'failed'], []));
    const text = await m.registry.metrics();
    expect(sample(text, 'jailfleet_agent_jails{state="running",host="host-1"}')).toBe(2);
    expect(sample(text, 'jailfleet_agent_jails{state="failed",host="host-1"}')).toBe(1);
    expect(sample(text, 'jailfleet_agent_jails{state="pending",host="host-1"}')).toBe(0);
    expect(sample(text, 'jailfleet_host_capacity_cpus{host="host-1"}')).toBe(4);
    expect(sample(text, 'jailfleet_host_capacity_memory_bytes{host="host-1"}')).toBe(2048 * 1024 * 1024);
    expect(sample(text, 'jailfleet_host_allocated_cpus{host="host-1"}')).toBe(1.5);
    expect(sample(text, 'jailfleet_host_allocated_memory_bytes{host="host-1"}')).toBe(320 * 1024 * 1024);
    expect(text).toContain('process_cpu_seconds_total');
  });

  test("per-jail cpu and memory are what the cgroups say at each scrape; a jail gone since is gone from the scrape", async () => {
    let usage = [
      { jail: 'web', cpuSeconds: 1.25, memoryBytes: 4096 },
      { jail: 'db', cpuSeconds: 3, memoryBytes: 8192 },
    ];
    let reads = 0;
    const m = new AgentMetrics('h', { ...source([], []), usage: async () => (reads++, usage) });
    let text = await m.registry.metrics();
    expect(reads).toBe(1); // one read of the cgroups feeds both series
    expect(sample(text, 'jailfleet_jail_cpu_seconds_total{jail="web",host="h"}')).toBe(1.25);
    expect(sample(text, 'jailfleet_jail_memory_bytes{jail="db",host="h"}')).toBe(8192);
    usage = [{ jail: 'db', cpuSeconds: 4, memoryBytes: 100 }];
    await new Promise((r) => setImmediate(r));
    text = await m.registry.metrics();
    expect(sample(text, 'jailfleet_jail_cpu_seconds_total{jail="web",host="h"}')).toBeUndefined();
    expect(sample(text, 'jailfleet_jail_cpu_seconds_total{jail="db",host="h"}')).toBe(4);
    expect(sample(text, 'jailfleet_jail_memory_bytes{jail="db",host="h"}')).toBe(100);
  });

  test('start durations, restarts, OOM kills and failed health checks by kind are counted', async () => {
    const m = new AgentMetrics('h', source([], []));
    m.jailStarted(0.03);
    m.jailStarted(2);
    m.jailRestarted(2);
    m.jailRestarted(0);
    m.jailKilledForMemory();
    m.healthResult('web', 'http', false);
    m.healthResult('web', 'http', true);
    m.healthResult('db', 'exec', false);
    const text = await m.registry.metrics();
    expect(sample(text, 'jailfleet_agent_jail_start_duration_seconds_count{host="h"}')).toBe(2);
    expect(sample(text, 'jailfleet_agent_jail_start_duration_seconds_bucket{le="0.05",host="h"}')).toBe(1);
    expect(sample(text, 'jailfleet_agent_jail_restarts_total{host="h"}')).toBe(2);
    expect(sample(text, 'jailfleet_agent_jail_oom_kills_total{host="h"}')).toBe(1);
    expect(sample(text, 'jailfleet_agent_health_check_failures_total{kind="http",host="h"}')).toBe(1);
    expect(sample(text, 'jailfleet_agent_health_check_failures_total{kind="exec",host="h"}')).toBe(1);
  });
});

describe('scheduler metrics', () => {
  test('placements, failovers, moves by outcome, reconcile passes; leading and unplaced read at the scrape', async () => {
    let leading = false;
    const m = new SchedulerMetrics({ leading: () => leading, unplaced: () => 3 });
    let text = await m.registry.metrics();
    expect(sample(text, 'jailfleet_scheduler_leader')).toBe(0);
    expect(sample(text, 'jailfleet_scheduler_moves_total{outcome="abandoned"}')).toBe(0);
    leading = true;
    m.placed();
    m.placed();
    m.failover();
    m.moved('moved');
    m.passDone(0.02);
    text = await m.registry.metrics();
    expect(sample(text, 'jailfleet_scheduler_leader')).toBe(1);
    expect(sample(text, 'jailfleet_scheduler_unplaced_jails')).toBe(3);
    expect(sample(text, 'jailfleet_scheduler_placements_total')).toBe(2);
    expect(sample(text, 'jailfleet_scheduler_failovers_total')).toBe(1);
    expect(sample(text, 'jailfleet_scheduler_moves_total{outcome="moved"}')).toBe(1);
    expect(sample(text, 'jailfleet_scheduler_reconcile_duration_seconds_count')).toBe(1);
  });
});

const NOW = Date.UTC(2025, 0, 1);
const at = new Date(NOW).toISOString();
const ev = (jail: string, host: string, state: StateEvent['state'], generation = 1, seq = 1): StateEvent => ({
  v: 1, host, jail, generation, seq, state, pid: state === 'running' ? 10 : null, exitCode: null, restarts: 0, error: null, at,
});
const hb = (host: string, jails: Heartbeat['jails']): Heartbeat => ({
  v: 1, host, at, startedAt: at, driver: 'linux', capacity: { cpu: 2, memoryMB: 1024 }, labels: {}, allocated: { cpu: 0, memoryMB: 0 }, jails,
});

describe('status metrics and the ps usage column', () => {
  test('jails by state and host, hosts by status, counted from the view at the scrape', async () => {
    const view = new ClusterView(3000, NOW);
    view.applyHeartbeat(hb('h1', []), NOW);
    view.applyHeartbeat(hb('h2', []), NOW);
    view.applyEvent(ev('a', 'h1', 'running'));
    view.applyEvent(ev('b', 'h1', 'running'));
    view.applyEvent(ev('c', 'h2', 'failed'));
    view.applyPlacement('d', { v: 1, host: null, generation: 1, reason: 'no host fits' });
    const registry = statusRegistry(view, () => NOW + 1000);
    const text = await registry.metrics();
    expect(sample(text, 'jailfleet_jails{state="running",host="h1"}')).toBe(2);
    expect(sample(text, 'jailfleet_jails{state="failed",host="h2"}')).toBe(1);
    expect(sample(text, 'jailfleet_jails{state="unplaced",host=""}')).toBe(1);
    expect(sample(text, 'jailfleet_hosts{status="up"}')).toBe(2);
    expect(sample(text, 'jailfleet_hosts{status="down"}')).toBe(0);
  });

  test("a running jail's row carries what its agent last read; beats between reads keep it; another generation's reading never shows", () => {
    const view = new ClusterView(3000, NOW);
    view.applyEvent(ev('web', 'h1', 'running'));
    view.applyEvent(ev('old', 'h1', 'running', 2));
    const usage = { cpuSeconds: 2.5, memoryBytes: 1 << 20 };
    view.applyHeartbeat(hb('h1', [
      { name: 'web', generation: 1, state: 'running', pid: 10, usage },
      { name: 'old', generation: 1, state: 'running', pid: 11, usage },
    ]), NOW);
    expect(view.ps({}, NOW).find((r) => r.name === 'web')?.usage).toEqual(usage);
    expect(view.ps({}, NOW).find((r) => r.name === 'old')?.usage).toBeUndefined();
    // a beat between two reads carries no usage: the last reading stays
    view.applyHeartbeat(hb('h1', [{ name: 'web', generation: 1, state: 'running', pid: 10 }]), NOW + 1000);
    expect(view.ps({}, NOW + 1000).find((r) => r.name === 'web')?.usage).toEqual(usage);
    // the next read no longer has it (it stopped): gone from the row
    view.applyEvent(ev('web', 'h1', 'stopped', 1, 2));
    view.applyHeartbeat(hb('h1', [{ name: 'old', generation: 2, state: 'running', pid: 11, usage }]), NOW + 2000);
    expect(view.ps({}, NOW + 2000).find((r) => r.name === 'web')?.usage).toBeUndefined();
    expect(view.ps({}, NOW + 2000).find((r) => r.name === 'old')?.usage).toEqual(usage);
    // a host gone down: its jails are lost, with no usage
    expect(view.ps({}, NOW + 60_000).find((r) => r.name === 'old')).toMatchObject({ state: 'lost' });
    expect(view.ps({}, NOW + 60_000).find((r) => r.name === 'old')?.usage).toBeUndefined();
  });
});
