// Packing: which host a jail goes to when jails reserve cpu and memory, one jail at a time.
// Pure and deterministic: the same hosts, placements and jails in the same order give the same
// hosts (ties by host name); no clock, no randomness. Whether a host may take a jail at all is
// never decided here but by the checkers of constraints.ts (capacity, pin, labels, up, not
// draining, maxPerHost); this file only chooses among the hosts they accept. Spreading a group
// over hosts is soft: a host without a member is preferred while one fits.
//
// Arithmetic is in integers (cpu in millicores, memory in MB), so 0.1 + 0.2 cores fit in 0.3.
// Hosts that can take jails are indexed so that a placement looks at a few hosts rather than
// every one: a segment tree over the hosts in name order keeps, per subtree, the most free cpu,
// the most free memory and the lowest key (binpack: free room of a used host; spread: load),
// and a search prunes every subtree that cannot beat the best host found. For binpack, empty
// hosts wait in a list by size, taken only when no used host fits.

import type { PlacementStrategy } from '../../contracts/index.js';
import { demandOf, explain, feasible, millicores, type HostView } from './constraints.js';

export { millicores };

/** `binpack`: fewest hosts (best fit, a new host only when no used one fits); `spread`: least loaded. */
export type PackStrategy = PlacementStrategy;

/** What a host offers, as its heartbeat or a hosts file says. */
export interface PackHost {
  name: string;
  up: boolean;
  draining: boolean;
  capacity: { cpu: number; memoryMB: number };
  labels: Readonly<Record<string, string>>;
  /** Host volumes offered: name → read-only. */
  volumes?: Readonly<Record<string, boolean>>;
}

/**
 * What the packer needs of a jail spec (a JailSpec is one). `maxPerHost` is read from the jail
 * being placed; the jails of one spread group are expected to agree on it (replicas do).
 */
export interface PackJail {
  name: string;
  resources: { cpu: number; memoryMB: number };
  placement: { host?: string; labels?: Readonly<Record<string, string>>; spreadGroup?: string; maxPerHost?: number };
  volumes?: readonly { name: string; readOnly: boolean }[];
}

/** A jail already on a host (from the placement bucket), counted against the host's capacity. */
export interface PlacedJail {
  name: string;
  host: string;
  resources: { cpu: number; memoryMB: number };
  spreadGroup?: string;
}

export type PlaceResult = { host: string; reason: null } | { host: null; reason: string };

interface Slot extends HostView {
  name: string;
  up: boolean;
  draining: boolean;
  labels: Readonly<Record<string, string>>;
  capCpu: number;
  capMem: number;
  usedCpu: number;
  usedMem: number;
  /** Spread group → its jails here (what the maxPerHost checker reads). */
  groups: Map<string, number>;
  jails: number;
  /** Leaf of the tree (hosts in name order). */
  leaf: number;
  /** In the empty list (binpack, no jail), in the tree, or in neither (down or draining). */
  where: 'empty' | 'tree' | 'none';
  /** Binpack: free room (used hosts) or size (empty hosts); spread: load. Lower is chosen first. */
  key: number;
}

interface Held {
  slot: Slot;
  cpu: number;
  mem: number;
  group: string | undefined;
}


const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * The cluster as the packer sees it: hosts, what each has allocated, and which jail is where.
 * Build it from the hosts and the jails already placed; then `place` and `release` keep it
 * current one jail at a time, and `upsertHost`/`removeHost` follow heartbeats and drains.
 */
export class ClusterPacking {
  private readonly slots = new Map<string, Slot>();
  private readonly held = new Map<string, Held>();
  /** spread group → host → how many of its jails are there. */
  private readonly groups = new Map<string, Map<Slot, number>>();
  /** Binpack: empty hosts that take jails, by size then name. */
  private readonly empty: Slot[] = [];
  // the tree: node 1 is the root, leaves from `width` on; a leaf outside the tree holds -∞/+∞
  private width = 1;
  private leaves: (Slot | undefined)[] = [];
  private maxCpu = new Float64Array(2);
  private maxMem = new Float64Array(2);
  private minKey = new Float64Array(2);
  /** First leaf under each node, for ties by name. */
  private firstLeaf = new Int32Array(2);
  private refCpu = 1;
  private refMem = 1;

  constructor(
    hosts: readonly PackHost[],
    placed: readonly PlacedJail[] = [],
    readonly strategy: PackStrategy = 'binpack',
  ) {
    for (const h of hosts) {
      if (this.slots.has(h.name)) throw new Error(`host "${h.name}" is listed twice`);
      this.slots.set(h.name, this.newSlot(h));
    }
    this.rescale(true);
    for (const p of placed) this.assign(p.name, p.host, p.resources, p.spreadGroup);
  }

  /** Places one jail (re-placing it if it was placed) and reserves its resources, or says why not. */
  place(jail: PackJail): PlaceResult {
    this.release(jail.name);
    const slot = this.choose(jail);
    if (!slot) return { host: null, reason: this.explain(jail) };
    this.hold(jail.name, slot, millicores(jail.resources.cpu), jail.resources.memoryMB, jail.placement.spreadGroup);
    return { host: slot.name, reason: null };
  }

  /** Where the jail would go now, without reserving anything. */
  peek(jail: PackJail): PlaceResult {
    const prev = this.held.get(jail.name);
    if (prev) this.unhold(jail.name, prev);
    const slot = this.choose(jail);
    const r: PlaceResult = slot ? { host: slot.name, reason: null } : { host: null, reason: this.explain(jail) };
    if (prev) this.hold(jail.name, prev.slot, prev.cpu, prev.mem, prev.group);
    return r;
  }

  /**
   * Records a jail on a host decided elsewhere (the placement bucket), even past the host's
   * capacity or constraints: it is there, so its resources are taken.
   */
  assign(name: string, host: string, resources: { cpu: number; memoryMB: number }, spreadGroup?: string): void {
    this.release(name);
    let slot = this.slots.get(host);
    if (!slot) {
      // a host known only from a placement: it offers nothing until its heartbeat says otherwise
      slot = this.newSlot({ name: host, up: false, draining: false, capacity: { cpu: 0, memoryMB: 0 }, labels: {} });
      this.slots.set(host, slot);
    }
    this.hold(name, slot, millicores(resources.cpu), resources.memoryMB, spreadGroup);
  }

  /** Frees a jail's resources; false if it was not placed. */
  release(name: string): boolean {
    const h = this.held.get(name);
    if (!h) return false;
    this.unhold(name, h);
    return true;
  }

  /** Adds a host or updates its liveness, drain, capacity or labels; its jails stay. */
  upsertHost(host: PackHost): void {
    const slot = this.slots.get(host.name);
    if (!slot) this.slots.set(host.name, this.newSlot(host));
    else {
      this.unindex(slot);
      Object.assign(slot, {
        up: host.up,
        draining: host.draining,
        labels: host.labels,
        volumes: host.volumes ?? {},
        capCpu: millicores(host.capacity.cpu),
        capMem: host.capacity.memoryMB,
      });
    }
    if (!this.rescale(false)) this.index(this.slots.get(host.name)!);
  }

  /** Forgets a host; returns the jails that were on it, now released. */
  removeHost(name: string): string[] {
    const slot = this.slots.get(name);
    if (!slot) return [];
    const gone = [...this.held].filter(([, h]) => h.slot === slot).map(([n]) => n).sort();
    for (const n of gone) this.release(n);
    this.unindex(slot);
    this.slots.delete(name);
    return gone;
  }

  /** The host a jail is on, if placed. */
  hostOf(name: string): string | undefined {
    return this.held.get(name)?.slot.name;
  }

  /** Every host with what it has allocated and its jails, by host name. */
  hosts(): { name: string; capacity: { cpu: number; memoryMB: number }; allocated: { cpu: number; memoryMB: number }; jails: string[] }[] {
    const jails = new Map<Slot, string[]>();
    for (const [n, h] of this.held) {
      const list = jails.get(h.slot);
      if (list) list.push(n);
      else jails.set(h.slot, [n]);
    }
    return [...this.slots.values()].sort(byName).map((s) => ({
      name: s.name,
      capacity: { cpu: s.capCpu / 1000, memoryMB: s.capMem },
      allocated: { cpu: s.usedCpu / 1000, memoryMB: s.usedMem },
      jails: (jails.get(s) ?? []).sort(),
    }));
  }

  /** How many hosts hold at least one jail. */
  hostsUsed(): number {
    let n = 0;
    for (const s of this.slots.values()) if (s.jails > 0) n++;
    return n;
  }

  // --- choosing ---------------------------------------------------------------------------

  private choose(jail: PackJail): Slot | undefined {
    const d = demandOf(jail);
    const members = d.spreadGroup === undefined ? undefined : this.groups.get(d.spreadGroup);
    const fits = (s: Slot) => feasible(s, d);

    if (d.pin !== undefined) {
      const s = this.slots.get(d.pin);
      return s && fits(s) ? s : undefined;
    }
    // first the hosts that hold no jail of the group, lowest key first
    const free = (s: Slot) => !members?.has(s) && fits(s);
    const first = this.search(d.cpu, d.memoryMB, free) ?? this.empty.find(free);
    if (first) return first;
    // then, spreading being soft, the hosts that do, fewest members first
    let best: Slot | undefined;
    let bestCount = 0;
    for (const [s, count] of members ?? []) {
      if (!fits(s)) continue;
      if (!best || count < bestCount || (count === bestCount && (s.key < best.key || (s.key === best.key && s.name < best.name)))) {
        best = s;
        bestCount = count;
      }
    }
    return best;
  }

  /**
   * The host of the tree with the lowest (key, name) that `ok` accepts. The tree only prunes
   * subtrees without the room; `ok` (the checkers) has the last word on each host.
   */
  private search(cpu: number, mem: number, ok: (s: Slot) => boolean): Slot | undefined {
    let best: Slot | undefined;
    let bestKey = Infinity;
    let bestLeaf = Infinity;
    const stack = [1];
    while (stack.length) {
      const n = stack.pop()!;
      if (this.maxCpu[n]! < cpu || this.maxMem[n]! < mem) continue;
      const k = this.minKey[n]!;
      if (k > bestKey || (k === bestKey && this.firstLeaf[n]! > bestLeaf)) continue;
      if (n >= this.width) {
        const s = this.leaves[n - this.width]!;
        if (ok(s)) {
          best = s;
          bestKey = s.key;
          bestLeaf = n - this.width;
        }
        continue;
      }
      // the more promising child last, so it is searched first
      const l = 2 * n;
      const r = l + 1;
      if (this.minKey[l]! <= this.minKey[r]!) stack.push(r, l);
      else stack.push(l, r);
    }
    return best;
  }

  /**
   * Why no host takes the jail: each host counted once, under the first constraint it fails
   * (down, draining, label, maxPerHost, memory, cpu), the largest count first.
   */
  explain(jail: PackJail): string {
    return explain([...this.slots.values()], demandOf(jail));
  }

  // --- bookkeeping ------------------------------------------------------------------------

  private newSlot(h: PackHost): Slot {
    return {
      name: h.name,
      up: h.up,
      draining: h.draining,
      labels: h.labels,
      volumes: h.volumes ?? {},
      capCpu: millicores(h.capacity.cpu),
      capMem: h.capacity.memoryMB,
      usedCpu: 0,
      usedMem: 0,
      groups: new Map(),
      jails: 0,
      leaf: -1,
      where: 'none',
      key: 0,
    };
  }

  private hold(name: string, slot: Slot, cpu: number, mem: number, group: string | undefined): void {
    this.held.set(name, { slot, cpu, mem, group });
    this.unindex(slot);
    slot.usedCpu += cpu;
    slot.usedMem += mem;
    slot.jails++;
    if (group !== undefined) {
      let m = this.groups.get(group);
      if (!m) this.groups.set(group, (m = new Map()));
      m.set(slot, (m.get(slot) ?? 0) + 1);
      slot.groups.set(group, (slot.groups.get(group) ?? 0) + 1);
    }
    this.index(slot);
  }

  private unhold(name: string, h: Held): void {
    this.held.delete(name);
    const slot = h.slot;
    this.unindex(slot);
    slot.usedCpu -= h.cpu;
    slot.usedMem -= h.mem;
    slot.jails--;
    if (h.group !== undefined) {
      const m = this.groups.get(h.group)!;
      const c = m.get(slot)! - 1;
      if (c > 0) {
        m.set(slot, c);
        slot.groups.set(h.group, c);
      } else {
        m.delete(slot);
        slot.groups.delete(h.group);
        if (m.size === 0) this.groups.delete(h.group);
      }
    }
    this.index(slot);
  }

  /** The scale of the keys: the largest host. Re-indexes every host when it changes. */
  private rescale(force: boolean): boolean {
    let cpu = 1;
    let mem = 1;
    for (const s of this.slots.values()) {
      cpu = Math.max(cpu, s.capCpu);
      mem = Math.max(mem, s.capMem);
    }
    if (!force && cpu === this.refCpu && mem === this.refMem) return false;
    this.refCpu = cpu;
    this.refMem = mem;
    this.rebuild();
    return true;
  }

  private takesJails(s: Slot): boolean {
    return s.up && !s.draining;
  }

  private keyOf(s: Slot): number {
    if (this.strategy === 'spread') {
      const share = (used: number, cap: number) => (cap > 0 ? used / cap : used > 0 ? 1 : 0);
      return Math.max(share(s.usedCpu, s.capCpu), share(s.usedMem, s.capMem));
    }
    if (s.jails === 0) return s.capCpu / this.refCpu + s.capMem / this.refMem;
    return Math.max(0, s.capCpu - s.usedCpu) / this.refCpu + Math.max(0, s.capMem - s.usedMem) / this.refMem;
  }

  /** Lays the tree out anew, hosts in name order. */
  private rebuild(): void {
    const all = [...this.slots.values()].sort(byName);
    this.width = 1;
    while (this.width < all.length) this.width *= 2;
    this.leaves = new Array(this.width);
    this.maxCpu = new Float64Array(2 * this.width).fill(-Infinity);
    this.maxMem = new Float64Array(2 * this.width).fill(-Infinity);
    this.minKey = new Float64Array(2 * this.width).fill(Infinity);
    this.firstLeaf = new Int32Array(2 * this.width);
    for (let i = 0; i < this.width; i++) this.firstLeaf[this.width + i] = i;
    for (let n = this.width - 1; n >= 1; n--) this.firstLeaf[n] = this.firstLeaf[2 * n]!;
    this.empty.length = 0;
    all.forEach((s, i) => {
      s.leaf = i;
      s.where = 'none';
      this.leaves[i] = s;
      this.index(s);
    });
  }

  /** Position of s in the empty list (by key, then name), or where it would go. */
  private emptyPos(s: Slot): number {
    let lo = 0;
    let hi = this.empty.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = this.empty[mid]!;
      if (e.key < s.key || (e.key === s.key && e.name < s.name)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private index(s: Slot): void {
    if (!this.takesJails(s)) return;
    if (s.leaf < 0) {
      // a host new since the last layout: lay out again, keeping name order (hosts join rarely)
      this.rebuild();
      return;
    }
    s.key = this.keyOf(s);
    if (this.strategy === 'binpack' && s.jails === 0) {
      s.where = 'empty';
      this.empty.splice(this.emptyPos(s), 0, s);
      return;
    }
    s.where = 'tree';
    this.setLeaf(s.leaf, s.capCpu - s.usedCpu, s.capMem - s.usedMem, s.key);
  }

  private unindex(s: Slot): void {
    if (s.where === 'empty') this.empty.splice(this.emptyPos(s), 1);
    else if (s.where === 'tree') this.setLeaf(s.leaf, -Infinity, -Infinity, Infinity);
    s.where = 'none';
  }

  private setLeaf(leaf: number, cpu: number, mem: number, key: number): void {
    let n = this.width + leaf;
    this.maxCpu[n] = cpu;
    this.maxMem[n] = mem;
    this.minKey[n] = key;
    for (n >>= 1; n >= 1; n >>= 1) {
      const l = 2 * n;
      this.maxCpu[n] = Math.max(this.maxCpu[l]!, this.maxCpu[l + 1]!);
      this.maxMem[n] = Math.max(this.maxMem[l]!, this.maxMem[l + 1]!);
      this.minKey[n] = Math.min(this.minKey[l]!, this.minKey[l + 1]!);
    }
  }
}
