// The batch planner: places a set of jails at once, hardest then largest first, then (binpack)
// improves the packing by emptying the least-filled hosts into the others. It is the engine of
// both `jailfleet plan` (offline: `plan`) and of the scheduler's placement of an `apply` of many
// jails (`planBatch` through LivePacking.placeBatch/dryRun), so a plan is what apply does.
// Pure and deterministic: its effort is counted in work units, never in time, so the same
// input gives the same plan on any machine. Whether a host may take a jail is decided only by the
// checkers of constraints.ts; it never moves a jail placed before the batch nor a pinned one,
// and never puts two jails of a spread group together where the greedy pass had kept them apart.
import { ClusterPacking, type PackHost, type PackJail, type PackStrategy, type PlacedJail, type PlaceResult } from './packing.js';
import { demandOf, emptyView, feasible, millicores, type Demand, type HostView } from './constraints.js';

export interface PlanResult {
  /** Hosts holding at least one jail once the plan is carried out (jails placed before it included). */
  hostsUsed: number;
  /** Hosts any packing needs at least (see `lowerBound`). */
  lowerBound: number;
  /** The hosts that get jails of the plan, by name: those jails and what they reserve. */
  hosts: { host: string; jails: string[]; cpu: number; memoryMB: number }[];
  unplaced: { name: string; reason: string }[];
}

/** A plan and, for each jail asked for, where it goes or why nowhere. */
export interface BatchPlan {
  result: PlanResult;
  placements: Map<string, PlaceResult>;
}

export interface PlanOptions {
  /** Work units the improvement step may spend, per jail placed (default 15,000; 0 turns it off). */
  effortPerJail?: number;
  /** And in all, whatever the number of jails (default 30 million: well under a second). */
  maxEffort?: number;
}

// an index of the hosts worth searching; the checkers still have the last word on each
const takesJails = (h: PackHost) => h.up && !h.draining;

/** Places every jail on hosts that hold nothing yet: what `apply` does on these hosts. */
export function plan(jails: readonly PackJail[], hosts: readonly PackHost[], strategy: PackStrategy = 'binpack', options: PlanOptions = {}): PlanResult {
  return planBatch(jails, hosts, [], strategy, options).result;
}

/**
 * Places `jails` onto `hosts` around the jails already `placed` (never moved; a jail both asked
 * for and placed is placed anew): hardest first, then largest first, then improves a binpack plan.
 */
export function planBatch(
  jails: readonly PackJail[],
  hosts: readonly PackHost[],
  placed: readonly PlacedJail[] = [],
  strategy: PackStrategy = 'binpack',
  options: PlanOptions = {},
): BatchPlan {
  const asked = new Set(jails.map((j) => j.name));
  const fixed = placed.filter((p) => !asked.has(p.name));
  const packing = new ClusterPacking(hosts, fixed, strategy);
  const live = hosts.filter(takesJails);
  const refCpu = Math.max(1, ...live.map((h) => millicores(h.capacity.cpu)));
  const refMem = Math.max(1, ...live.map((h) => h.capacity.memoryMB));
  const size = (j: PackJail) => millicores(j.resources.cpu) / refCpu + j.resources.memoryMB / refMem;
  const hardness = (j: PackJail) => (j.placement.host !== undefined ? 0 : Object.keys(j.placement.labels ?? {}).length > 0 || j.placement.maxPerHost !== undefined ? 1 : 2);
  const order = jails
    .map((j) => ({ j, hard: hardness(j), size: size(j) }))
    .sort((a, b) => a.hard - b.hard || b.size - a.size || (a.j.name < b.j.name ? -1 : a.j.name > b.j.name ? 1 : 0));

  const placements = new Map<string, PlaceResult>();
  let assignment = new Map<string, string>();
  const unplaced: { name: string; reason: string }[] = [];
  for (const { j } of order) {
    const r = packing.place(j);
    placements.set(j.name, r);
    if (r.host === null) unplaced.push({ name: j.name, reason: r.reason });
    else assignment.set(j.name, r.host);
  }
  const liveNames = new Set(live.map((h) => h.name));
  const empty = live.map(emptyView);
  // a jail placed fits its host when empty too (the rules only get easier as jails leave);
  // the others are asked of every empty host
  const placeable = jails.filter((j) => {
    if (assignment.has(j.name)) return true;
    const d = demandOf(j);
    return empty.some((h) => feasible(h, d));
  });
  // jails placed before stay where they are: for the search they are pinned there
  const staying: PackJail[] = fixed
    .filter((p) => liveNames.has(p.host))
    .map((p) => ({ name: p.name, resources: p.resources, placement: { host: p.host, spreadGroup: p.spreadGroup } }));
  const lowerBound = lowerBoundOf([...placeable, ...staying], live);

  if (strategy === 'binpack' && assignment.size > 0) {
    const budget = Math.min(options.maxEffort ?? 30_000_000, (options.effortPerJail ?? 15_000) * assignment.size);
    const stopAt = Math.max(lowerBound, strongLowerBound([...placeable, ...staying], live));
    const greedy = assignment;
    assignment = improve(jails.filter((j) => greedy.has(j.name)), staying, live, greedy, stopAt, budget);
    for (const [name, host] of assignment) if (placements.get(name)!.host !== host) placements.set(name, { host, reason: null });
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
  const usedHosts = new Set([...byHost.keys(), ...fixed.map((p) => p.host)]);
  return {
    result: {
      hostsUsed: usedHosts.size,
      lowerBound,
      hosts: used.map(([host, h]) => ({ host, jails: h.jails.sort(), cpu: h.cpu / 1000, memoryMB: h.mem })),
      unplaced: unplaced.sort((a, b) => (a.name < b.name ? -1 : 1)),
    },
    placements,
  };
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

interface Bin extends HostView {
  usedCpu: number;
  usedMem: number;
  groups: Map<string, number>;
  items: number[];
}

/** The bin as it would be with the jails `out` taken off (b itself when none). */
function without(b: Bin, out: readonly number[], cpu: readonly number[], mem: readonly number[], group: readonly (string | undefined)[]): HostView {
  if (out.length === 0) return b;
  let groups: ReadonlyMap<string, number> = b.groups;
  if (out.some((i) => group[i] !== undefined)) {
    const g = new Map(b.groups);
    for (const i of out) if (group[i] !== undefined) g.set(group[i]!, g.get(group[i]!)! - 1);
    groups = g;
  }
  const oc = out.reduce((s, i) => s + cpu[i]!, 0);
  const om = out.reduce((s, i) => s + mem[i]!, 0);
  return { name: b.name, up: b.up, draining: b.draining, labels: b.labels, volumes: b.volumes, capCpu: b.capCpu, usedCpu: b.usedCpu - oc, capMem: b.capMem, usedMem: b.usedMem - om, groups };
}

/** The view with jail d put on it. */
function adding(v: HostView, d: Demand): HostView {
  let groups = v.groups;
  if (d.spreadGroup !== undefined) {
    const g = new Map(v.groups);
    g.set(d.spreadGroup, (g.get(d.spreadGroup) ?? 0) + 1);
    groups = g;
  }
  return { name: v.name, up: v.up, draining: v.draining, labels: v.labels, volumes: v.volumes, capCpu: v.capCpu, usedCpu: v.usedCpu + d.cpu, capMem: v.capMem, usedMem: v.usedMem + d.memoryMB, groups };
}

/**
 * Local search in the manner of Levine and Ducatelle (2004): take the jails off the k
 * least-filled hosts (k = 1, 2, 3), then alternately put them into the other used hosts (best
 * fit) and swap one or two of them with one or two smaller jails of a host, which fills that
 * host more and leaves smaller jails to place. When all fit, k hosts are emptied; otherwise what
 * is left goes back onto the k hosts, kept only if the hosts' fills grew more uneven (the sum of
 * squared fills rose), so the search cannot cycle. It stops at the lower bound, when no attempt
 * helps, or when its work budget is spent. Pinned jails and the `staying` ones never move; a
 * host is only ever given a jail the checkers accept, and (spreading) none of whose group it holds.
 * `assignment` says where each of `moving` is; the `staying` are pinned where they are. Returns
 * the host of each of `moving`.
 */
function improve(moving: readonly PackJail[], staying: readonly PackJail[], hosts: readonly PackHost[], assignment: Map<string, string>, stopAt: number, budget: number): Map<string, string> {
  const jails = [...moving, ...staying];
  const refCpu = Math.max(1, ...hosts.map((h) => millicores(h.capacity.cpu)));
  const refMem = Math.max(1, ...hosts.map((h) => h.capacity.memoryMB));
  const n = jails.length;
  const demand = jails.map(demandOf);
  const cpu = demand.map((d) => d.cpu);
  const mem = demand.map((d) => d.memoryMB);
  const size = jails.map((_, i) => cpu[i]! / refCpu + mem[i]! / refMem);
  const movable = jails.map((j, i) => i < moving.length && j.placement.host === undefined);
  const group = demand.map((d) => d.spreadGroup);

  const byName = new Map<string, Bin>();
  const bins: Bin[] = [...hosts]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((h) => {
      // a literal of every field, not a spread of emptyView: V8 keeps it a fast object (the search reads bins the most)
      const b: Bin = { name: h.name, up: h.up, draining: h.draining, labels: h.labels, volumes: h.volumes ?? {}, capCpu: millicores(h.capacity.cpu), usedCpu: 0, capMem: h.capacity.memoryMB, usedMem: 0, groups: new Map(), items: [] };
      byName.set(h.name, b);
      return b;
    });
  const binOf: (Bin | null)[] = new Array(n).fill(null);
  const undo: [number, Bin | null][] = [];
  const put = (i: number, b: Bin | null) => {
    const from = binOf[i]!;
    const g = group[i];
    if (from) {
      from.items.splice(from.items.indexOf(i), 1);
      from.usedCpu -= cpu[i]!;
      from.usedMem -= mem[i]!;
      if (g !== undefined) from.groups.set(g, from.groups.get(g)! - 1);
    }
    if (b) {
      b.items.push(i);
      b.usedCpu += cpu[i]!;
      b.usedMem += mem[i]!;
      if (g !== undefined) b.groups.set(g, (b.groups.get(g) ?? 0) + 1);
    }
    binOf[i] = b;
    undo.push([i, from]);
  };
  jails.forEach((j, i) => {
    const b = byName.get(i < moving.length ? assignment.get(j.name)! : j.placement.host!);
    if (b) put(i, b);
  });
  undo.length = 0;

  const fill = (b: Bin) => b.usedCpu / refCpu + b.usedMem / refMem;
  /** The hard rules (the checkers), then the search's own: a jail joins no member of its group. */
  const takes = (v: HostView, i: number) => feasible(v, demand[i]!) && (group[i] === undefined || (v.groups.get(group[i]!) ?? 0) === 0);
  let work = 0;

  /** Best fit of jail i into an open bin outside `closed`. */
  const insert = (i: number, open: readonly Bin[]): boolean => {
    let best: Bin | undefined;
    let bestLeft = Infinity;
    for (const b of open) {
      work++;
      // the room is looked at first only to skip the checkers where they would surely refuse
      if (b.usedCpu + cpu[i]! > b.capCpu || b.usedMem + mem[i]! > b.capMem) continue;
      const left = (b.capCpu - b.usedCpu - cpu[i]!) / refCpu + (b.capMem - b.usedMem - mem[i]!) / refMem;
      if (left < bestLeft && takes(b, i)) {
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
    // the room and the gain are looked at first; the checkers decide on what would be kept
    const consider = (out: number[], oc: number, om: number, os: number) => {
      const roomCpu = b.capCpu - b.usedCpu + oc;
      const roomMem = b.capMem - b.usedMem + om;
      // b without `out`, built only when a candidate gets as far as the checkers
      let rest: HostView | undefined;
      for (let x = 0; x < f; x++) {
        const a = free[x]!;
        work++;
        if (cpu[a]! <= roomCpu && mem[a]! <= roomMem && size[a]! - os > bestGain && takes((rest ??= without(b, out, cpu, mem, group)), a)) {
          bestOut = out;
          bestIn = [a];
          bestGain = size[a]! - os;
        }
        for (let y = x + 1; y < f; y++) {
          const c = free[y]!;
          work++;
          const gain = size[a]! + size[c]! - os;
          if (gain <= bestGain || cpu[a]! + cpu[c]! > roomCpu || mem[a]! + mem[c]! > roomMem) continue;
          rest ??= without(b, out, cpu, mem, group);
          if (!takes(rest, a) || !takes(adding(rest, demand[a]!), c)) continue;
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
  moving.forEach((j, i) => out.set(j.name, binOf[i]!.name));
  return out;
}
