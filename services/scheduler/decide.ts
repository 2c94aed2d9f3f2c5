// What the scheduler should do, as data: a pure function of the records (desired, placement),
// which hosts are down, and the clock. It returns actions; the executor (reconciler.ts) carries
// them out and asks again until nothing is left to do. Nothing here reads NATS, the clock or a
// cache of its own, and nothing here chooses a host: `place` asks the packing for one.
//
// The rules, in the order they are checked, for one jail:
//   - no desired record, or an unreadable record: nothing (an unreadable one is reported);
//   - removed: its host is told to destroy it, and the placement goes;
//   - pinned elsewhere than it is placed: the old copy goes, the jail is placed anew;
//   - placed at a newer generation than desired (a move stopped halfway): the desired generation
//     is raised to match, before anything else (a failover must go above both);
//   - its host down and it may move: the generation goes up (so the copy on the dead host is
//     fenced when it returns); then the old copy is told to go and the jail is placed anew;
//   - not placed: placed (not while the scheduler is still hearing hosts after its start);
//   - placed at an older generation: the placement follows the desired generation;
//   - placed without the address its network asks for (vnet without one, another address than
//     its spec names, or one it no longer needs): the address is claimed or released first;
//   - otherwise its host is sent `ensure`, once per (generation, revision, host), the jail's
//     address pinned into the spec it carries.
// A vnet jail's address lives in its placement (and, for uniqueness, in the addresses bucket): a
// `place` keeps the one the previous placement held, so stop, start, failover and drain keep it;
// only `rm` releases it.
import { WIRE_VERSION, vnetOf, type Command, type DesiredRecord, type JailSpec, type PlacementRecord } from '../../contracts/index.js';
import { isReadable, type Slot } from './store.js';

/** One jail as the records say it is. */
export interface JailView {
  name: string;
  desired: Slot<DesiredRecord> | undefined;
  placement: Slot<PlacementRecord> | undefined;
  /** What the leader last published for it: `publishedKey(...)`. */
  published: string | undefined;
}

export interface Facts {
  now: number;
  hostDown(host: string): boolean;
  /** The scheduler started less than a host TTL ago: it does not know every live host yet. */
  warming: boolean;
}

export type Action =
  /** Publish a command to the host's stream; `settles`: what to remember as published. */
  | { kind: 'publish'; host: string; command: Command; settles?: string }
  /** Choose a host for the jail (the packing) and write its placement (or why not). */
  | { kind: 'place'; jail: string; spec: JailSpec; generation: number; previous: { revision: number; record: PlacementRecord | null } | null }
  | { kind: 'write-placement'; jail: string; record: PlacementRecord; revision: number }
  | { kind: 'delete-placement'; jail: string; revision: number }
  /** Claim the address the jail's spec needs (`want`: this one, or null: any free one), write it into the placement, then release `release`. */
  | { kind: 'readdress'; jail: string; placement: PlacementRecord; revision: number; want: string | null }
  /** The jail is gone: its address goes back to the pool. */
  | { kind: 'release-address'; jail: string; address: string }
  /** Compare-and-set of the desired record at `revision` with a higher generation. */
  | { kind: 'raise-generation'; jail: string; record: DesiredRecord; revision: number; why: 'failover' | 'finish-move' }
  /** A record its contract refuses: reported once per revision, nothing else done. */
  | { kind: 'report-unreadable'; jail: string; bucket: 'desired' | 'placements'; revision: number; reason: string };

const iso = (now: number) => new Date(now).toISOString();

export const publishedKey = (generation: number, revision: number, host: string) => `${generation}/${revision}@${host}`;

export function ensureCommand(jail: string, d: DesiredRecord, revision: number, now: number, generation = d.generation, address?: string): Command {
  return { v: WIRE_VERSION, op: 'ensure', jail, generation, revision, desired: d.desired === 'stopped' ? 'stopped' : 'running', spec: withAddress(d.spec, address), issuedAt: iso(now) };
}

/** The spec an agent gets: a vnet jail's address pinned into its network (the agent never picks one). */
export function withAddress(spec: JailSpec, address: string | undefined): JailSpec {
  const vnet = vnetOf(spec);
  if (!vnet || !address || vnet.address === address) return spec;
  return { ...spec, network: { ...vnet, address } };
}

/**
 * What the jail's network asks of the address its placement holds: nothing (`ok`), any free
 * address (null), this one (a string), or none at all (`none`: it is no longer vnet).
 */
export function addressWanted(spec: JailSpec, held: string | undefined): 'ok' | string | null {
  const vnet = vnetOf(spec);
  if (!vnet) return held === undefined ? 'ok' : 'none';
  if (vnet.address) return vnet.address === held ? 'ok' : vnet.address;
  return held === undefined ? null : 'ok';
}

export function destroyCommand(jail: string, generation: number, revision: number, now: number): Command {
  return { v: WIRE_VERSION, op: 'destroy', jail, generation, revision, issuedAt: iso(now) };
}

/** True when the jail may be moved off a dead or draining host (not pinned, failover allowed). */
export const movable = (d: DesiredRecord) => d.spec.failover.reschedule && !d.spec.placement.host;

/** The actions that bring one jail a step closer to its desired record. */
export function decideJail(view: JailView, facts: Facts): Action[] {
  const { name } = view;
  const dSlot = view.desired;
  if (!dSlot) return [];
  if (!isReadable(dSlot)) return [{ kind: 'report-unreadable', jail: name, bucket: 'desired', revision: dSlot.revision, reason: dSlot.unreadable }];
  const d = dSlot.value;
  const pSlot = view.placement;
  const placement = isReadable(pSlot) ? pSlot.value : undefined;

  if (d.desired === 'removed') {
    const acts: Action[] = [];
    if (placement?.host) acts.push({ kind: 'publish', host: placement.host, command: destroyCommand(name, d.generation, dSlot.revision, facts.now) });
    // `rm` is the admin's word: an unreadable placement goes too
    if (pSlot) acts.push({ kind: 'delete-placement', jail: name, revision: pSlot.revision });
    if (placement?.address) acts.push({ kind: 'release-address', jail: name, address: placement.address });
    return acts;
  }
  if (pSlot && !placement) return [{ kind: 'report-unreadable', jail: name, bucket: 'placements', revision: pSlot.revision, reason: (pSlot as { unreadable: string }).unreadable }];

  const acts: Action[] = [];
  let host = placement?.host ?? null;
  const pin = d.spec.placement.host;
  if (host && pin && pin !== host) {
    acts.push({ kind: 'publish', host, command: destroyCommand(name, d.generation, dSlot.revision, facts.now) });
    host = null;
  }
  if (host && placement!.generation > d.generation) {
    return [{ kind: 'raise-generation', jail: name, record: { ...d, generation: placement!.generation, updatedAt: iso(facts.now) }, revision: dSlot.revision, why: 'finish-move' }];
  }
  if (host && movable(d) && facts.hostDown(host)) {
    if (placement!.generation === d.generation) {
      return [{ kind: 'raise-generation', jail: name, record: { ...d, generation: d.generation + 1, updatedAt: iso(facts.now) }, revision: dSlot.revision, why: 'failover' }];
    }
    acts.push({ kind: 'publish', host, command: destroyCommand(name, placement!.generation, dSlot.revision, facts.now) });
    host = null;
  }
  if (!host) {
    if (facts.warming) return acts;
    const previous = pSlot ? { revision: pSlot.revision, record: placement ?? null } : null;
    acts.push({ kind: 'place', jail: name, spec: d.spec, generation: d.generation, previous });
    return acts;
  }
  if (placement!.generation !== d.generation) {
    acts.push({ kind: 'write-placement', jail: name, record: { ...placement!, generation: d.generation }, revision: pSlot!.revision });
    return acts;
  }
  const want = addressWanted(d.spec, placement!.address);
  if (want !== 'ok') {
    acts.push({ kind: 'readdress', jail: name, placement: placement!, revision: pSlot!.revision, want });
    return acts;
  }
  const key = publishedKey(d.generation, dSlot.revision, host);
  if (view.published !== key) acts.push({ kind: 'publish', host, command: ensureCommand(name, d, dSlot.revision, facts.now, d.generation, placement!.address), settles: key });
  return acts;
}

/**
 * True when the jail needs no action now: the periodic pass skips it. The same rules as
 * decideJail, answered without building actions.
 */
export function settled(view: JailView, facts: Facts): boolean {
  const acts = decideJail(view, facts);
  return acts.length === 0 || acts.every((a) => a.kind === 'report-unreadable');
}

/** Placement record of a `place` result: the host, or null with the reason none fits. */
export function placementOf(generation: number, result: { host: string | null; reason: string | null }, address?: string): PlacementRecord {
  return { v: WIRE_VERSION, host: result.host, generation, reason: result.host ? null : result.reason, ...(address ? { address } : {}) };
}

/** A `place` that found no host again, for the same reason at the same generation, writes nothing. */
export function placementUnchanged(previous: { record: PlacementRecord | null } | null, next: PlacementRecord): boolean {
  const p = previous?.record;
  return !next.host && !!p && p.host === null && p.reason === next.reason && p.generation === next.generation && p.address === next.address;
}

// --- drains ----------------------------------------------------------------------------------

export interface DrainView {
  host: string;
  parallel: number;
  /** The host's jails by name, in name order. */
  jails: readonly string[];
  /** Jails being moved off it now. */
  moving: number;
}

/** Which jails to start moving off a draining host now: up to its `parallel`, skipping those busy or blocked a moment ago. */
export function jailsToMove(drain: DrainView, busy: (jail: string) => boolean, blockedUntil: (jail: string) => number, now: number, hostDown: boolean): string[] {
  if (hostDown) return [];
  let room = drain.parallel - drain.moving;
  const out: string[] = [];
  for (const name of drain.jails) {
    if (room <= 0) break;
    if (busy(name) || blockedUntil(name) > now) continue;
    room--;
    out.push(name);
  }
  return out;
}
