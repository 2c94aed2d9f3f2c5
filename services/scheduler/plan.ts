// The batch planner behind `jailfleet plan`: places a whole fleet at once, largest jails first,
// then (binpack) improves the packing by emptying the least-filled hosts into the others.
// Pure and deterministic: its effort is counted in work units, never in time, so the same
// input gives the same plan on any machine. It never breaks what the online packer guarantees
// (capacity on cpu and memory, pin, labels, hosts up and not draining, maxPerHost) and never
// puts two jails of a spread group together where the greedy pass had kept them apart.
import { ClusterPacking, hasLabels, millicores, type PackHost, type PackJail, type PackStrategy } from './packing.js';

export interface PlanResult {
  hostsUsed: number;
  /** Hosts any packing needs at least (see `lowerBound`). */
  lowerBound: number;
  /** The hosts that get jails, by name: their jails and what they reserve. */
  hosts: { host: string; jails: string[]; cpu: number; memoryMB: number }[];
  unplaced: { name: string; reason: string }[];
}

export interface PlanOptions {
  /** Work units the improvement step may spend, per jail placed (default 15,000; 0 turns it off). */
  effortPerJail?: number;
  /** And in all, whatever the number of jails (default 30 million: well under a second). */
  maxEffort?: number;
}

const takesJails = (h: PackHost) => h.up && !h.draining;

/** Places every jail (hardest first, then largest first), then improves a binpack plan. */
export function plan(jails: readonly PackJail[], hosts: readonly PackHost[], strategy: PackStrategy = 'binpack', options: PlanOptions = {}): PlanResult {
  const packing = new ClusterPacking(hosts, [], strategy);
  const live = hosts.filter(takesJails);
  const refCpu = Math.max(1, ...live.map((h) => millicores(h.capacity.cpu)));
  const refMem = Math.max(1, ...live.map((h) => h.capacity.memoryMB));
  const size = (j: PackJail) => millicores(j.resources.cpu) / refCpu + j.resources.memoryMB / refMem;
  const hardness = (j: PackJail) => (j.placement.host !== undefined ? 0 : Object.keys(j.placement.labels ?? {}).length > 0 || j.placement.maxPerHost !== undefined ? 1 : 2);
  const order = jails
    .map((j) => ({ j, hard: hardness(j), size: size(j) }))
    .sort((a, b) => a.hard - b.hard || b.size - a.size || (a.j.name < b.j.name ? -1 : a.j.name > b.j.name ? 1 : 0));

  const unplaced: { name: string; reason: string }[] = [];
  for (const { j } of order) {
    const r = packing.place(j);
    if (r.host === null) unplaced.push({ name: j.name, reason: r.reason });
  }
  const placeable = jails.filter((j) => live.some((h) => fitsEmpty(j, h)));
  const lowerBound = lowerBoundOf(placeable, live);

  let assignment = new Map(packing.hosts().flatMap((h) => h.jails.map((n) => [n, h.name] as const)));
  if (strategy === 'binpack' && assignment.size > 0) {
    const budget = Math.min(options.maxEffort ?? 30_000_000, (options.effortPerJail ?? 15_000) * assignment.size);
    const stopAt = Math.max(lowerBound, strongLowerBound(placeable, live));
    assignment = improve(jails.filter((j) => assignment.has(j.name)), live, assignment, stopAt, budget);
  }

  const byHost = new Map<string, { jails: string[]; cpu: number; mem: number }>();
  const spec = new Map(jails.map((j) => [j.name, j]));
  for (const [name, host] of assignment) {
    const j = spec.get(name)!;
    const h = byHost.get(host) ?? { jails: [], cpu: 0, mem: 0 };
    h.jails.push(name);
    h.cpu += millicores(j.resources.cpu);
    h.mem += j.resources.memoryMB;
    byHost.set(host, h);
  }
  const used = [...byHost].sort(([a], [b]) => (a < b ? -1 : 1));
  return {
    hostsUsed: used.length,
    lowerBound,
    hosts: used.map(([host, h]) => ({ host, jails: h.jails.sort(), cpu: h.cpu / 1000, memoryMB: h.mem })),
    unplaced: unplaced.sort((a, b) => (a.name < b.name ? -1 : 1)),
  };
}

/** The jail fits on this host when it is empty (capacity, labels, pin). */
function fitsEmpty(j: PackJail, h: PackHost): boolean {
  return (
    (j.placement.host === undefined || j.placement.host === h.name) &&
    millicores(j.resources.cpu) <= millicores(h.capacity.cpu) &&
    j.resources.memoryMB <= h.capacity.memoryMB &&
    hasLabels(h.labels, j.placement.labels)
  );
}

/**
 * Fewest hosts that could hold these jails by volume alone: per resource, the fewest of the
 * largest hosts whose capacities add up to the jails' total; the larger of cpu and memory.
 * For identical hosts that is max(ceil(total cpu / host cpu), ceil(total memory / host memory)).
 * Labels and pins are not taken into account, so it is a bound, not a promise.
 */
export function lowerBoundOf(jails: readonly PackJail[], hosts: readonly PackHost[]): number {
  const need = (total: number, caps: number[]) => {
    if (total <= 0) return 0;
    caps.sort((a, b) => b - a);
    let sum = 0;
    for (let i = 0; i < caps.length; i++) if ((sum += caps[i]!) >= total) return i + 1;
    return caps.length;
  };
  const cpu = jails.reduce((s, j) => s + millicores(j.resources.cpu), 0);
  const mem = jails.reduce((s, j) => s + j.resources.memoryMB, 0);
  return Math.max(need(cpu, hosts.map((h) => millicores(h.capacity.cpu))), need(mem, hosts.map((h) => h.capacity.memoryMB)));
}

/** Martello and Toth's L2 bound for one resource of identical hosts, the larger over cpu and memory; 0 otherwise. */
function strongLowerBound(jails: readonly PackJail[], hosts: readonly PackHost[]): number {
  if (hosts.length === 0) return 0;
  const capCpu = millicores(hosts[0]!.capacity.cpu);
  const capMem = hosts[0]!.capacity.memoryMB;
  if (!hosts.every((h) => millicores(h.capacity.cpu) === capCpu && h.capacity.memoryMB === capMem)) return 0;
  return Math.max(
    martelloTothL2(jails.map((j) => millicores(j.resources.cpu)), capCpu),
    martelloTothL2(jails.map((j) => j.resources.memoryMB), capMem),
  );
}

/** L2 of Martello and Toth (1990): a lower bound on the bins of capacity `cap` that `sizes` need. */
export function martelloTothL2(sizes: readonly number[], cap: number): number {
  const w = sizes.filter((x) => x > 0 && x <= cap).sort((a, b) => a - b);
  if (w.length === 0) return 0;
  const prefix = [0];
  for (const x of w) prefix.push(prefix[prefix.length - 1]! + x);
  /** Index of the first size > x. */
  const above = (x: number) => {
    let lo = 0;
    let hi = w.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (w[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  const sum = (from: number, to: number) => prefix[to]! - prefix[from]!;
  const alphas = [0, ...new Set(w.filter((x) => 2 * x <= cap))];
  let best = 0;
  for (const a of alphas) {
    const i3 = a === 0 ? 0 : above(a - 1); // sizes >= a
    const i2 = above(Math.floor(cap / 2)); // sizes > cap/2
    const i1 = above(cap - a); // sizes > cap - a
    const n2 = i1 - i2;
    const free2 = n2 * cap - sum(i2, i1);
    const l = w.length - i1 + n2 + Math.max(0, Math.ceil((sum(i3, i2) - free2) / cap));
    best = Math.max(best, l);
  }
  return best;
}

// --- the improvement step ------------------------------------------------------------------

interface Bin {
  name: string;
  capCpu: number;
  capMem: number;
  usedCpu: number;
  usedMem: number;
  labels: Readonly<Record<string, string>>;
  items: number[];
  /** group id → members here */
  groups: Map<number, number>;
}

/**
 * Local search in the manner of Levine and Ducatelle (2004): take the jails off the k
 * least-filled hosts (k = 1, 2, 3), then alternately put them into the other used hosts (best
 * fit) and swap one or two of them with one or two smaller jails of a host, which fills that
 * host more and leaves smaller jails to place. When all fit, k hosts are emptied; otherwise what
 * is left goes back onto the k hosts, kept only if the hosts' fills grew more uneven (the sum of
 * squared fills rose), so the search cannot cycle. It stops at the lower bound, when no attempt
 * helps, or when its work budget is spent. Pinned jails never move.
 */
function improve(jails: readonly PackJail[], hosts: readonly PackHost[], assignment: Map<string, string>, stopAt: number, budget: number): Map<string, string> {
  const refCpu = Math.max(1, ...hosts.map((h) => millicores(h.capacity.cpu)));
  const refMem = Math.max(1, ...hosts.map((h) => h.capacity.memoryMB));
  const groupIds = new Map<string, number>();
  const n = jails.length;
  const cpu = jails.map((j) => millicores(j.resources.cpu));
  const mem = jails.map((j) => j.resources.memoryMB);
  const size = jails.map((_, i) => cpu[i]! / refCpu + mem[i]! / refMem);
  const labels = jails.map((j) => (Object.keys(j.placement.labels ?? {}).length ? j.placement.labels : undefined));
  const movable = jails.map((j) => j.placement.host === undefined);
  const group = jails.map((j) => {
    const g = j.placement.spreadGroup;
    if (g === undefined) return -1;
    if (!groupIds.has(g)) groupIds.set(g, groupIds.size);
    return groupIds.get(g)!;
  });

  const byName = new Map<string, Bin>();
  const bins: Bin[] = [...hosts]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((h) => {
      const b: Bin = { name: h.name, capCpu: millicores(h.capacity.cpu), capMem: h.capacity.memoryMB, usedCpu: 0, usedMem: 0, labels: h.labels, items: [], groups: new Map() };
      byName.set(h.name, b);
      return b;
    });
  const binOf: (Bin | null)[] = new Array(n).fill(null);
  const undo: [number, Bin | null][] = [];
  const put = (i: number, b: Bin | null) => {
    const from = binOf[i]!;
    if (from) {
      from.items.splice(from.items.indexOf(i), 1);
      from.usedCpu -= cpu[i]!;
      from.usedMem -= mem[i]!;
      if (group[i]! >= 0) from.groups.set(group[i]!, from.groups.get(group[i]!)! - 1);
    }
    if (b) {
      b.items.push(i);
      b.usedCpu += cpu[i]!;
      b.usedMem += mem[i]!;
      if (group[i]! >= 0) b.groups.set(group[i]!, (b.groups.get(group[i]!) ?? 0) + 1);
    }
    binOf[i] = b;
    undo.push([i, from]);
  };
  jails.forEach((j, i) => {
    const b = byName.get(assignment.get(j.name)!);
    if (b) put(i, b);
  });
  undo.length = 0;

  const fill = (b: Bin) => b.usedCpu / refCpu + b.usedMem / refMem;
  const allows = (b: Bin, i: number) => !labels[i] || hasLabels(b.labels, labels[i]);
  const groupFree = (b: Bin, i: number, leaving: readonly number[]) =>
    group[i]! < 0 || (b.groups.get(group[i]!) ?? 0) - leaving.filter((o) => group[o] === group[i]).length === 0;
  let work = 0;

  /** Best fit of jail i into an open bin outside `closed`. */
  const insert = (i: number, open: readonly Bin[]): boolean => {
    let best: Bin | undefined;
    let bestLeft = Infinity;
    for (const b of open) {
      work++;
      if (b.usedCpu + cpu[i]! > b.capCpu || b.usedMem + mem[i]! > b.capMem || !allows(b, i) || !groupFree(b, i, [])) continue;
      const left = (b.capCpu - b.usedCpu - cpu[i]!) / refCpu + (b.capMem - b.usedMem - mem[i]!) / refMem;
      if (left < bestLeft) {
        best = b;
        bestLeft = left;
      }
    }
    if (best) put(i, best);
    return best !== undefined;
  };

  /** The swap of ≤ 2 jails of b for ≤ 2 free jails that fills b the most, applied; false if none. */
  const swap = (b: Bin, free: number[]): boolean => {
    const mine = b.items.filter((i) => movable[i]);
    const m = mine.length;
    const f = free.length;
    let bestOut: number[] | undefined;
    let bestIn: number[] | undefined;
    let bestGain = 1e-12;
    const consider = (out: number[], oc: number, om: number, os: number) => {
      const roomCpu = b.capCpu - b.usedCpu + oc;
      const roomMem = b.capMem - b.usedMem + om;
      for (let x = 0; x < f; x++) {
        const a = free[x]!;
        work++;
        if (cpu[a]! <= roomCpu && mem[a]! <= roomMem && size[a]! - os > bestGain && allows(b, a) && groupFree(b, a, out)) {
          bestOut = out;
          bestIn = [a];
          bestGain = size[a]! - os;
        }
        for (let y = x + 1; y < f; y++) {
          const c = free[y]!;
          work++;
          const gain = size[a]! + size[c]! - os;
          if (gain <= bestGain || cpu[a]! + cpu[c]! > roomCpu || mem[a]! + mem[c]! > roomMem) continue;
          if (!allows(b, a) || !allows(b, c) || !groupFree(b, a, out) || !groupFree(b, c, out)) continue;
          if (group[a]! >= 0 && group[a] === group[c]) continue;
          bestOut = out;
          bestIn = [a, c];
          bestGain = gain;
        }
      }
    };
    consider([], 0, 0, 0);
    for (let x = 0; x < m; x++) {
      const o = mine[x]!;
      consider([o], cpu[o]!, mem[o]!, size[o]!);
      for (let y = x + 1; y < m; y++) {
        const p = mine[y]!;
        consider([o, p], cpu[o]! + cpu[p]!, mem[o]! + mem[p]!, size[o]! + size[p]!);
      }
    }
    if (!bestOut || !bestIn) return false;
    for (const i of bestOut) {
      put(i, null);
      free.push(i);
    }
    for (const i of bestIn) {
      put(i, b);
      free.splice(free.indexOf(i), 1);
    }
    return true;
  };

  const bySizeDesc = (a: number, b: number) => size[b]! - size[a]! || a - b;
  const revert = (mark: number) => {
    while (undo.length > mark) {
      const [i, from] = undo.pop()!;
      put(i, from);
      undo.pop();
    }
  };

  /** Tries to empty `emptied` (or make the fills more uneven); keeps the change or undoes it. */
  const attempt = (emptied: Bin[]): boolean => {
    const mark = undo.length;
    const closed = new Set(emptied);
    const open = bins.filter((b) => b.items.length > 0 && !closed.has(b));
    work += bins.length;
    const before = [...open, ...emptied].reduce((s, b) => s + fill(b) ** 2, 0);
    const free: number[] = emptied.flatMap((b) => [...b.items]);
    for (const i of free) put(i, null);
    for (;;) {
      free.sort(bySizeDesc);
      for (const i of [...free]) if (insert(i, open)) free.splice(free.indexOf(i), 1);
      if (free.length === 0) return true;
      if (work > budget) break;
      let swapped = false;
      for (const b of open) {
        if (work > budget) break;
        if (swap(b, free)) swapped = true;
      }
      if (!swapped) break;
    }
    // what is left goes back onto the emptied hosts
    free.sort(bySizeDesc);
    for (const i of free) {
      if (!insert(i, emptied)) {
        revert(mark);
        return false;
      }
    }
    const after = [...open, ...emptied].reduce((s, b) => s + fill(b) ** 2, 0);
    if (emptied.some((b) => b.items.length === 0) || after > before + 1e-9) return true;
    revert(mark);
    return false;
  };

  let used = bins.filter((b) => b.items.length > 0).length;
  while (used > stopAt && work <= budget) {
    const candidates = bins
      .filter((b) => b.items.length > 0 && b.items.every((i) => movable[i]))
      .sort((a, b) => fill(a) - fill(b) || (a.name < b.name ? -1 : 1));
    let progressed = false;
    for (const k of [1, 2, 3]) {
      if (candidates.length < k + 1 || work > budget) break;
      if (attempt(candidates.slice(0, k))) {
        progressed = true;
        break;
      }
    }
    // the least-filled hosts are stuck: try the others one by one, and with the least filled
    for (let c = 1; !progressed && c < candidates.length && work <= budget; c++) {
      if (attempt([candidates[c]!]) || attempt([candidates[0]!, candidates[c]!])) progressed = true;
    }
    if (!progressed) break;
    used = bins.filter((b) => b.items.length > 0).length;
  }

  const out = new Map<string, string>();
  jails.forEach((j, i) => out.set(j.name, binOf[i]!.name));
  return out;
}
