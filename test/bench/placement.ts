// Placement figures: in process, no jails, no root. Each prints one JSON line beside a baseline
// measured in the same run (naive first-fit, first-fit decreasing).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterPacking, type PackHost, type PackJail } from '../../services/scheduler/packing.js';
import { lowerBoundOf, martelloTothL2, plan } from '../../services/scheduler/plan.js';
import { repoRoot } from '../support/cluster.js';

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** mulberry32: a small seeded PRNG, so every run packs the same jails. */
function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Jail sizes as a consolidation sees them: mostly small services, some big, some cpu- or memory-heavy. */
const SIZES = [
  { weight: 40, cpu: 0.25, mem: 512 },
  { weight: 30, cpu: 0.5, mem: 2048 },
  { weight: 15, cpu: 1, mem: 4096 },
  { weight: 5, cpu: 2, mem: 8192 },
  { weight: 5, cpu: 4, mem: 2048 },
  { weight: 5, cpu: 0.5, mem: 16384 },
];

export function mixedJails(n: number, seed: number): PackJail[] {
  const rand = prng(seed);
  const total = SIZES.reduce((s, x) => s + x.weight, 0);
  return Array.from({ length: n }, (_, i) => {
    let r = rand() * total;
    const size = SIZES.find((x) => (r -= x.weight) < 0) ?? SIZES[0]!;
    // ±50 % around the class, cpu in 0.05 cores, memory in 64 MB
    const cpu = Math.max(0.05, Math.round((size.cpu * (0.5 + rand())) / 0.05) * 0.05);
    const mem = Math.max(64, Math.round((size.mem * (0.5 + rand())) / 64) * 64);
    return { name: `j-${i}`, resources: { cpu: round(cpu, 2), memoryMB: mem }, placement: {} };
  });
}

const hostsOf = (n: number, cpu: number, memoryMB: number): PackHost[] =>
  Array.from({ length: n }, (_, i) => ({ name: `host-${String(i).padStart(5, '0')}`, up: true, draining: false, capacity: { cpu, memoryMB }, labels: {} }));

/** The naive baseline: every jail, in arrival order, on the first host (by name) with room. */
function naiveFirstFit(jails: readonly PackJail[], hosts: readonly PackHost[]): number {
  const cpu = hosts.map((h) => Math.round(h.capacity.cpu * 1000));
  const mem = hosts.map((h) => h.capacity.memoryMB);
  const used = new Set<number>();
  for (const j of jails) {
    const c = Math.round(j.resources.cpu * 1000);
    for (let i = 0; i < hosts.length; i++) {
      if (cpu[i]! >= c && mem[i]! >= j.resources.memoryMB) {
        cpu[i]! -= c;
        mem[i]! -= j.resources.memoryMB;
        used.add(i);
        break;
      }
    }
  }
  return used.size;
}

/** 100,000 jails of mixed sizes on 5,000 hosts of 32 cores and 128 GiB. */
export function placementFigure(nJails = 100_000, nHosts = 5000) {
  const jails = mixedJails(nJails, 42);
  const hosts = hostsOf(nHosts, 32, 128 * 1024);
  const lowerBound = lowerBoundOf(jails, hosts);

  let t0 = performance.now();
  const batch = plan(jails, hosts, 'binpack');
  const batchMs = performance.now() - t0;

  t0 = performance.now();
  const online = new ClusterPacking(hosts, [], 'binpack');
  let onlineUnplaced = 0;
  for (const j of jails) if (online.place(j).host === null) onlineUnplaced++;
  const onlineMs = performance.now() - t0;

  t0 = performance.now();
  const naiveUsed = naiveFirstFit(jails, hosts);
  const naiveMs = performance.now() - t0;

  const perSecond = (ms: number) => Math.round(nJails / (ms / 1000));
  emit({
    figure: 'placement',
    jails: nJails,
    hosts: nHosts,
    mode: 'batch plan (jailfleet plan): largest first, best fit, then the improvement step',
    placementsPerSecond: perSecond(batchMs),
    hostsUsed: batch.hostsUsed,
    lowerBound,
    ratio: round(batch.hostsUsed / lowerBound, 3),
    unplaced: batch.unplaced.length,
    online: {
      mode: 'ClusterPacking.place, one jail at a time in arrival order (the scheduler)',
      placementsPerSecond: perSecond(onlineMs),
      hostsUsed: online.hostsUsed(),
      ratio: round(online.hostsUsed() / lowerBound, 3),
      unplaced: onlineUnplaced,
    },
    baseline: 'naive first-fit, arrival order, linear scan of the hosts',
    baselinePlacementsPerSecond: perSecond(naiveMs),
    baselineHostsUsed: naiveUsed,
    baselineRatio: round(naiveUsed / lowerBound, 3),
    speedRatio: round(naiveMs / batchMs),
    goal: 'placementsPerSecond >= 20000 and ratio <= 1.05',
  });
}

interface Instance {
  name: string;
  capacity: number;
  bestKnown: number;
  items: number[];
}

/** OR-Library's binpack format: a count, then per instance a name, `capacity n best`, n sizes. */
export function readOrLibrary(text: string): Instance[] {
  const tokens = text.split(/\s+/).filter(Boolean);
  let p = 0;
  const count = Number(tokens[p++]);
  const out: Instance[] = [];
  for (let k = 0; k < count; k++) {
    const name = tokens[p++]!;
    const [capacity, n, bestKnown] = [Number(tokens[p++]), Number(tokens[p++]), Number(tokens[p++])];
    out.push({ name, capacity, bestKnown, items: tokens.slice(p, p + n).map(Number) });
    p += n;
  }
  return out;
}

/** First-fit decreasing, for the baseline. */
function firstFitDecreasing(items: readonly number[], capacity: number): number {
  const free: number[] = [];
  for (const x of [...items].sort((a, b) => b - a)) {
    const i = free.findIndex((f) => f >= x);
    if (i >= 0) free[i]! -= x;
    else free.push(capacity - x);
  }
  return free.length;
}

/** Falkenauer's 80 uniform instances: each item a jail that needs only memory, hosts of 150. */
export function planQualityFigure(dir = process.env.JAILFLEET_OR_LIBRARY ?? join(repoRoot, '..', 'shared', 'data', 'or-library')) {
  const files = ['binpack1.txt', 'binpack2.txt', 'binpack3.txt', 'binpack4.txt'].map((f) => join(dir, f));
  if (!files.every((f) => existsSync(f))) {
    emit({ figure: 'plan-quality', skipped: `OR-Library files not found in ${dir} (set JAILFLEET_OR_LIBRARY)` });
    return;
  }
  const instances = files.flatMap((f) => readOrLibrary(readFileSync(f, 'utf8')));
  let used = 0;
  let best = 0;
  let ffd = 0;
  let l2 = 0;
  let optimal = 0;
  let maxMs = 0;
  let totalMs = 0;
  for (const inst of instances) {
    const jails: PackJail[] = inst.items.map((m, i) => ({ name: `j-${i}`, resources: { cpu: 0, memoryMB: m }, placement: {} }));
    const hosts = hostsOf(inst.items.length, 1, inst.capacity);
    const t0 = performance.now();
    const r = plan(jails, hosts, 'binpack');
    const ms = performance.now() - t0;
    if (r.unplaced.length) throw new Error(`${inst.name}: ${r.unplaced.length} items not placed`);
    maxMs = Math.max(maxMs, ms);
    totalMs += ms;
    used += r.hostsUsed;
    best += inst.bestKnown;
    ffd += firstFitDecreasing(inst.items, inst.capacity);
    l2 += martelloTothL2(inst.items, inst.capacity);
    if (r.hostsUsed === inst.bestKnown) optimal++;
  }
  emit({
    figure: 'plan-quality',
    instances: instances.length,
    hostsUsed: used,
    bestKnown: best,
    excess: used - best,
    optimal,
    baseline: 'first-fit decreasing',
    baselineHostsUsed: ffd,
    baselineExcess: ffd - best,
    excessRatio: round((used - best) / (ffd - best), 3),
    lowerBoundL2: l2,
    maxMsPerInstance: round(maxMs, 1),
    meanMsPerInstance: round(totalMs / instances.length, 1),
    goal: 'excess <= half of first-fit decreasing excess, <= 1000 ms per instance',
  });
}
