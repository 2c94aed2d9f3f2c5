// The hard placement rules, one checker each (in the manner of Nomad's feasible.go): a checker
// looks at one host as it is now and one jail, and either lets the jail on or says why not.
// Every engine that places — the online packing, the batch planner and its local search,
// explain() — decides "may this jail go on this host" here and nowhere else, so `plan` cannot
// disagree with `apply`. Engines may prune with indexes of their own (free cpu, free memory),
// but the last word on a host is always `refusal()`. Pure; it must never hold state, choose
// among hosts (that is the strategy's part) or know of soft preferences such as spreading.
// A new hard rule (host ports, ...) is one more entry in CONSTRAINTS.
import type { PackJail } from './packing.js';

/** Cores → integer millicores; every cpu comparison is done on these. */
export const millicores = (cpu: number) => Math.round(cpu * 1000);
const cores = (milli: number) => `${milli / 1000}`;

/** A host as the checkers see it: what it offers and what the jails on it already take. */
export interface HostView {
  readonly name: string;
  readonly up: boolean;
  readonly draining: boolean;
  readonly labels: Readonly<Record<string, string>>;
  /** Host volumes offered: name → read-only. */
  readonly volumes: Readonly<Record<string, boolean>>;
  /** Millicores. */
  readonly capCpu: number;
  readonly usedCpu: number;
  readonly capMem: number;
  readonly usedMem: number;
  /** Spread group → how many of its jails are on the host. */
  readonly groups: ReadonlyMap<string, number>;
}

/** A jail as the checkers see it: read once from its spec, cpu in millicores, labels sorted by key. */
export interface Demand {
  readonly name: string;
  readonly cpu: number;
  readonly memoryMB: number;
  readonly pin: string | undefined;
  readonly labels: readonly (readonly [string, string])[];
  readonly spreadGroup: string | undefined;
  readonly maxPerHost: number | undefined;
  /** Volumes the jail uses: name, and whether it writes to it. */
  readonly volumes: readonly (readonly [string, boolean])[];
}

const NO_VOLUMES: Demand['volumes'] = [];
const NO_LABELS: Demand['labels'] = [];

export function demandOf(jail: PackJail): Demand {
  const labels = jail.placement.labels ?? {};
  const keys = Object.keys(labels);
  return {
    name: jail.name,
    cpu: millicores(jail.resources.cpu),
    memoryMB: jail.resources.memoryMB,
    pin: jail.placement.host,
    // most jails require no label: no arrays to make for them on every placement
    labels: keys.length === 0 ? NO_LABELS : keys.sort().map((k) => [k, labels[k]!] as const),
    spreadGroup: jail.placement.spreadGroup,
    maxPerHost: jail.placement.maxPerHost,
    volumes: jail.volumes?.length ? jail.volumes.map((v) => [v.name, !v.readOnly] as const) : NO_VOLUMES,
  };
}

/** Why one host refuses one jail. Hosts refused with the same key are counted together. */
export interface Refusal {
  readonly constraint: Constraint;
  readonly key: string;
  /** For a resource: how much the host has free (a reason reports the most of them). */
  readonly free: number;
}

export interface Constraint {
  readonly name: 'pinned host' | 'host up' | 'not draining' | 'labels' | 'volumes' | 'maxPerHost' | 'memory' | 'cpu';
  /** null: the host may take the jail as far as this rule goes. */
  check(host: HostView, jail: Demand): Refusal | null;
  /**
   * The refusal said of `n` hosts, the count left out ("lack memory (needs 512 MB, most free
   * 256 MB)"), `free` the most any of them had.
   */
  describe(r: Refusal, n: number, free: number, jail: Demand): string;
}

const verb = (n: number, one: string, many: string) => (n === 1 ? one : many);
const refusal = (constraint: Constraint, key: string, free = 0): Refusal => ({ constraint, key, free });

const pinnedHost: Constraint = {
  name: 'pinned host',
  check: (h, j) => (j.pin === undefined || j.pin === h.name ? null : refusal(pinnedHost, 'pinned host')),
  describe: (_r, n, _f, j) => `${verb(n, 'is', 'are')} not the pinned host "${j.pin}"`,
};

const hostUp: Constraint = {
  name: 'host up',
  check: (h) => (h.up ? null : DOWN),
  describe: (_r, n) => `${verb(n, 'is', 'are')} down`,
};
const DOWN = refusal(hostUp, 'down');

const notDraining: Constraint = {
  name: 'not draining',
  check: (h) => (h.draining ? DRAINING : null),
  describe: (_r, n) => `${verb(n, 'is', 'are')} draining`,
};
const DRAINING = refusal(notDraining, 'draining');

const labels: Constraint = {
  name: 'labels',
  check: (h, j) => {
    for (const [k, v] of j.labels) {
      if (!Object.prototype.hasOwnProperty.call(h.labels, k) || h.labels[k] !== v) return refusal(labels, `label ${k}=${v}`);
    }
    return null;
  },
  describe: (r, n) => `${verb(n, 'lacks', 'lack')} ${r.key}`,
};

const volumes: Constraint = {
  name: 'volumes',
  check: (h, j) => {
    for (const [name, writes] of j.volumes) {
      if (!Object.prototype.hasOwnProperty.call(h.volumes, name)) return refusal(volumes, `volume ${name}`);
      if (writes && h.volumes[name]) return refusal(volumes, `writable volume ${name}`);
    }
    return null;
  },
  describe: (r, n) => (r.key.startsWith('writable') ? `${verb(n, 'offers', 'offer')} ${r.key.slice('writable '.length)} read-only only` : `${verb(n, 'lacks', 'lack')} ${r.key}`),
};

const maxPerHost: Constraint = {
  name: 'maxPerHost',
  check: (h, j) => (j.maxPerHost === undefined || j.spreadGroup === undefined || (h.groups.get(j.spreadGroup) ?? 0) < j.maxPerHost ? null : refusal(maxPerHost, 'maxPerHost')),
  describe: (_r, n, _f, j) => `already ${verb(n, 'holds', 'hold')} ${j.maxPerHost} of spread group ${j.spreadGroup} (maxPerHost ${j.maxPerHost})`,
};

const memory: Constraint = {
  name: 'memory',
  check: (h, j) => (h.capMem - h.usedMem >= j.memoryMB ? null : refusal(memory, 'memory', h.capMem - h.usedMem)),
  describe: (_r, n, free, j) => `${verb(n, 'lacks', 'lack')} memory (needs ${j.memoryMB} MB, ${verb(n, '', 'most ')}free ${Math.max(0, free)} MB)`,
};

const cpu: Constraint = {
  name: 'cpu',
  check: (h, j) => (h.capCpu - h.usedCpu >= j.cpu ? null : refusal(cpu, 'cpu', h.capCpu - h.usedCpu)),
  describe: (_r, n, free, j) => `${verb(n, 'lacks', 'lack')} cpu (needs ${cores(j.cpu)} cores, ${verb(n, '', 'most ')}free ${cores(Math.max(0, free))})`,
};

/**
 * Every hard rule, in the order a refusal is reported: a host is counted under the first rule it
 * breaks, and among equal counts the earlier rule is named first.
 */
export const CONSTRAINTS: readonly Constraint[] = [pinnedHost, hostUp, notDraining, labels, volumes, maxPerHost, memory, cpu];

/** The first rule the host breaks for this jail, or null when it may take it. */
export function refusalOf(host: HostView, jail: Demand): Refusal | null {
  for (const c of CONSTRAINTS) {
    const r = c.check(host, jail);
    if (r) return r;
  }
  return null;
}

/** True when every hard rule lets the jail onto the host. */
export function feasible(host: HostView, jail: Demand): boolean {
  return refusalOf(host, jail) === null;
}

const NO_GROUPS: ReadonlyMap<string, number> = new Map();
const NO_OFFERS: Readonly<Record<string, boolean>> = {};

/** A host with nothing on it yet, as it offers itself. */
export function emptyView(h: { name: string; up: boolean; draining: boolean; capacity: { cpu: number; memoryMB: number }; labels: Readonly<Record<string, string>>; volumes?: Readonly<Record<string, boolean>> }): HostView {
  return { name: h.name, up: h.up, draining: h.draining, labels: h.labels, volumes: h.volumes ?? NO_OFFERS, capCpu: millicores(h.capacity.cpu), usedCpu: 0, capMem: h.capacity.memoryMB, usedMem: 0, groups: NO_GROUPS };
}

/**
 * Why no host takes the jail: each host counted once under the first rule it breaks, the largest
 * count first (then the earlier rule, then the rule first met in host-name order). A pinned jail
 * is judged on its host alone.
 */
export function explain(hosts: readonly HostView[], jail: Demand): string {
  if (jail.pin !== undefined) {
    const h = hosts.find((x) => x.name === jail.pin);
    if (!h) return `pinned host "${jail.pin}" is unknown (0 of ${hosts.length} hosts match)`;
    const r = refusalOf(h, jail);
    return r ? `pinned host "${jail.pin}" ${r.constraint.describe(r, 1, r.free, jail)}` : `pinned host "${jail.pin}" cannot take it`;
  }
  if (hosts.length === 0) return 'no host fits: no host is known';
  const counts = new Map<string, { r: Refusal; order: number; count: number; most: number }>();
  // by name, so that equal counts come out in the same order whatever order the hosts came in
  for (const h of [...hosts].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const r = refusalOf(h, jail);
    if (!r) continue;
    const f = counts.get(r.key);
    if (f) {
      f.count++;
      f.most = Math.max(f.most, r.free);
    } else counts.set(r.key, { r, order: CONSTRAINTS.indexOf(r.constraint), count: 1, most: r.free });
  }
  const parts = [...counts.values()]
    .sort((a, b) => b.count - a.count || a.order - b.order)
    .map((f, i) => `${f.count} ${i === 0 ? `host${f.count === 1 ? '' : 's'} ` : ''}${f.r.constraint.describe(f.r, f.count, f.most, jail)}`);
  return `no host fits: ${parts.join(', ') || 'every host is full'}`;
}
