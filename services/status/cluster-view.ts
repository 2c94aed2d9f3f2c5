// The cluster view: folds state events, heartbeats and placements into rows for `ps` and
// `hosts`. Pure: the caller feeds it messages in stream order and passes the clock.
import type { Heartbeat, HostRecord, HostRow, JailUsage, PlacementRecord, PsRow, StateEvent } from '../../contracts/index.js';
import { HostLiveness } from '../common/heartbeat-feed.js';

interface JailRow extends PsRow {
  seq: number;
}

export class ClusterView {
  private readonly rows = new Map<string, JailRow>();
  /** Newest generation seen destroyed per jail: older events of it are ignored. */
  private readonly gone = new Map<string, number>();
  private readonly placements = new Map<string, PlacementRecord>();
  /**
   * The running copy of an older generation while a newer one starts elsewhere (a drain's move):
   * shown until the newer copy runs or the placement names it, so the jail reads as running.
   */
  private readonly previous = new Map<string, JailRow>();
  /** Drains by host, from the hosts bucket. */
  private readonly hostRecords = new Map<string, HostRecord>();
  private readonly hostsSeen = new Map<string, { jails: number } & Pick<Heartbeat, 'capacity' | 'labels' | 'allocated' | 'volumes' | 'images'>>();
  /**
   * What each host's running jails used at its agent's last read (a heartbeat that carries usage
   * replaces the host's whole map, so a jail that stopped or left drops out): jail → usage and
   * the generation it was read for.
   */
  private readonly usage = new Map<string, Map<string, { generation: number; usage: JailUsage }>>();
  /** When each host was last heard, judged by the one liveness rule the scheduler applies too. */
  private readonly liveness: HostLiveness;

  /** Counts the events, placements and host records applied: unchanged, no row changed but by the clock (`lost`). */
  revision = 0;

  /** Set once the placement bucket has been read whole: from then on a missing placement means removed. */
  placementsSynced = false;

  /** `startedAt`: when this view began listening; a host not heard within a TTL of it is down. */
  constructor(hostTtlMs: number, startedAt = 0) {
    this.liveness = new HostLiveness(hostTtlMs, startedAt);
  }

  /** Down: silent for longer than the TTL, or never heard in the TTL since the view started. */
  hostDown(host: string, now: number): boolean {
    return this.liveness.isDown(host, now);
  }

  /** Newest generation wins; within one generation the highest seq. */
  applyEvent(e: StateEvent): void {
    this.revision++;
    if ((this.gone.get(e.jail) ?? 0) >= e.generation) return;
    const cur = this.rows.get(e.jail);
    const prev = this.previous.get(e.jail);
    if (prev && prev.generation === e.generation && e.seq > prev.seq) {
      // the older copy goes on (stops, is destroyed) while the newer one starts
      if (e.state === 'running') this.previous.set(e.jail, { ...prev, ...rowOf(e, prev) });
      else this.previous.delete(e.jail);
      return;
    }
    if (cur && (cur.generation > e.generation || (cur.generation === e.generation && cur.seq >= e.seq))) return;
    if (e.state === 'destroyed') {
      this.rows.delete(e.jail);
      if (prev && prev.generation < e.generation) {
        // a move given up: the older copy is the jail again
        this.rows.set(e.jail, prev);
        this.previous.delete(e.jail);
        return;
      }
      this.gone.set(e.jail, e.generation);
      return;
    }
    if (cur && cur.generation < e.generation && cur.state === 'running') this.previous.set(e.jail, cur);
    if (e.state === 'running') this.previous.delete(e.jail);
    this.rows.set(e.jail, {
      name: e.jail,
      host: e.host,
      state: e.state,
      generation: e.generation,
      seq: e.seq,
      pid: e.state === 'running' ? e.pid : null,
      since: cur && cur.state === e.state && cur.generation === e.generation ? cur.since : e.at,
      exitCode: e.exitCode,
      restarts: e.restarts,
      error: e.error,
      ...healthOf(e),
    });
  }

  applyPlacement(name: string, p: PlacementRecord | null): void {
    this.revision++;
    if (p) this.placements.set(name, p);
    else this.placements.delete(name);
  }

  applyHostRecord(host: string, r: HostRecord | null): void {
    this.revision++;
    if (r) this.hostRecords.set(host, r);
    else this.hostRecords.delete(host);
  }

  applyHeartbeat(hb: Heartbeat, now: number): void {
    this.liveness.seen(hb.host, now);
    this.hostsSeen.set(hb.host, { jails: hb.jails.length, capacity: hb.capacity, labels: hb.labels, allocated: hb.allocated, volumes: hb.volumes, images: hb.images });
    // a beat without any usage is one between two reads: what the last read said still holds
    if (!hb.jails.some((j) => j.usage)) return;
    const usage = new Map<string, { generation: number; usage: JailUsage }>();
    for (const j of hb.jails) if (j.usage) usage.set(j.name, { generation: j.generation, usage: j.usage });
    this.usage.set(hb.host, usage);
  }

  /**
   * Every jail: its newest event, or `pending`/`unplaced` from its placement before any event.
   * Given the clock, a jail whose host is down shows `lost` (until it is moved or its host returns).
   */
  ps(filter: { host?: string; state?: string; name?: string } = {}, now?: number): PsRow[] {
    const out: PsRow[] = [];
    for (const r of this.rows.values()) {
      const p = this.placements.get(r.name);
      // a newer generation placed but not reported yet shows as pending there
      if (p && p.generation > r.generation) out.push(this.pendingRow(r.name, p));
      // removed (rm) but its host has not reported it destroyed yet, or is down
      else if (!p && this.placementsSynced) out.push({ ...strip(r), state: 'removing' });
      else {
        // a newer copy still starting, not placed yet: the older copy that runs is the jail
        const prev = this.previous.get(r.name);
        const moving = prev !== undefined && r.state !== 'running' && p !== undefined && p.generation < r.generation;
        out.push(strip(moving ? prev : r));
      }
    }
    for (const [name, p] of this.placements) {
      if (!this.rows.has(name) && (this.gone.get(name) ?? 0) < p.generation) out.push(this.pendingRow(name, p));
    }
    if (now !== undefined) {
      for (let i = 0; i < out.length; i++) {
        const r = out[i]!;
        if (r.host && r.state !== 'removing' && this.hostDown(r.host, now)) out[i] = { ...r, state: 'lost' };
      }
    }
    // a vnet jail's address is its placement's, whatever its copies say; after `lost`: a jail
    // whose host is down shows no usage
    for (let i = 0; i < out.length; i++) {
      const address = this.placements.get(out[i]!.name)?.address;
      if (address) out[i] = { ...out[i]!, address };
      const r = out[i]!;
      // only a running copy's own reading: never an older generation's, nor another host's
      const u = r.state === 'running' && r.host ? this.usage.get(r.host)?.get(r.name) : undefined;
      if (u && u.generation === r.generation) out[i] = { ...r, usage: u.usage };
    }
    const named = filter.name === undefined ? undefined : namePattern(filter.name);
    return out
      .filter((r) => (!filter.host || r.host === filter.host) && (!filter.state || r.state === filter.state) && (!named || named.test(r.name)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Every host heard from. A draining host is `drained` once no placement names it and its agent
   * holds no jail (the old copies are gone too); `down` wins over both.
   */
  hosts(now: number): HostRow[] {
    const placed = new Map<string, number>();
    for (const p of this.placements.values()) if (p.host) placed.set(p.host, (placed.get(p.host) ?? 0) + 1);
    return [...this.hostsSeen.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([host, h]) => {
        const drain = this.hostRecords.get(host);
        const draining = drain?.draining === true;
        const status = this.hostDown(host, now) ? 'down' : !draining ? 'up' : (placed.get(host) ?? 0) === 0 && h.jails === 0 ? 'drained' : 'draining';
        return {
          host,
          status,
          jails: h.jails,
          lastSeen: new Date(this.liveness.lastSeenOf(host)!).toISOString(),
          capacity: h.capacity,
          labels: h.labels,
          allocated: h.allocated,
          ...(h.volumes && Object.keys(h.volumes).length > 0 && { volumes: h.volumes }),
          ...(h.images && h.images.length > 0 && { images: h.images }),
          ...(draining && { drain: { parallel: drain.parallel, since: drain.since, blocked: drain.blocked } }),
        };
      });
  }

  private pendingRow(name: string, p: PlacementRecord): PsRow {
    return {
      name,
      host: p.host,
      state: p.host ? 'pending' : 'unplaced',
      generation: p.generation,
      pid: null,
      since: '',
      exitCode: null,
      restarts: 0,
      error: p.host ? null : { step: 'place', message: p.reason ?? 'not placed' },
    };
  }
}

/** The fields an event sets on a row of the same generation. */
function rowOf(e: StateEvent, cur: JailRow): Partial<JailRow> {
  return { seq: e.seq, state: e.state, pid: e.state === 'running' ? e.pid : null, exitCode: e.exitCode, restarts: e.restarts, error: e.error, since: cur.state === e.state ? cur.since : e.at, health: undefined, healthReason: undefined, ...healthOf(e) };
}

/** A running jail's health, as its event says (absent without a check). */
function healthOf(e: StateEvent): Pick<PsRow, 'health' | 'healthReason'> {
  if (e.state !== 'running' || !e.health) return {};
  return { health: e.health, ...(e.healthReason && { healthReason: e.healthReason }) };
}

function strip(r: JailRow): PsRow {
  const { seq: _seq, ...row } = r;
  return row;
}

/** A `ps --name` pattern as a regular expression: `*` any run of characters, `?` one, the rest literal. */
export function namePattern(pattern: string): RegExp {
  const body = [...pattern].map((ch) => (ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\-]/g, '\\$&'))).join('');
  return new RegExp(`^${body}$`);
}
