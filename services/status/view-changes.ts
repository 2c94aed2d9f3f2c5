// What changed in the cluster view since the dashboard's last look: jails added or changed, jails
// gone, and the hosts when any host changed. Pure: it compares the rows it is given with the
// ones it was given before; it never reads the clock or the view itself.
import type { HostRow, PsRow } from '../../contracts/index.js';

/** One message of the dashboard's live feed. `hosts` is the whole list, present when it changed. */
export interface ViewChanges {
  jails: PsRow[];
  removed: string[];
  hosts?: HostRow[];
}

/** The rows and hosts as last looked at: the state every open page holds. */
export interface ViewSnapshot {
  jails: PsRow[];
  hosts: HostRow[];
}

/** A host as the dashboard compares it: `lastSeen` moves every second and is not a change. */
const hostKey = (hosts: HostRow[]) => JSON.stringify(hosts.map(({ lastSeen: _lastSeen, ...h }) => h));

export class ViewChangeTracker {
  private readonly rows = new Map<string, { row: PsRow; json: string }>();
  private hosts: HostRow[] = [];
  private hostsKey = hostKey([]);

  /**
   * Takes the view's rows and hosts now; returns what differs from the previous call (the first
   * call: every row), or undefined when nothing does.
   */
  next(rows: PsRow[], hosts: HostRow[]): ViewChanges | undefined {
    const changed: PsRow[] = [];
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.name);
      const json = JSON.stringify(row);
      if (this.rows.get(row.name)?.json === json) continue;
      this.rows.set(row.name, { row, json });
      changed.push(row);
    }
    const removed: string[] = [];
    for (const name of this.rows.keys()) if (!seen.has(name)) removed.push(name);
    for (const name of removed) this.rows.delete(name);
    const key = hostKey(hosts);
    const hostsChanged = key !== this.hostsKey;
    this.hosts = hosts;
    this.hostsKey = key;
    if (!changed.length && !removed.length && !hostsChanged) return undefined;
    return { jails: changed, removed, ...(hostsChanged && { hosts }) };
  }

  /** The hosts alone, the rows being known unchanged: the hosts when they differ, else undefined. */
  nextHosts(hosts: HostRow[]): ViewChanges | undefined {
    const key = hostKey(hosts);
    this.hosts = hosts;
    if (key === this.hostsKey) return undefined;
    this.hostsKey = key;
    return { jails: [], removed: [], hosts };
  }

  /** Everything as of the last call: what a page that just connected starts from. */
  snapshot(): ViewSnapshot {
    return { jails: [...this.rows.values()].map((r) => r.row), hosts: this.hosts };
  }

  /** The snapshot as JSON, from each row's JSON kept by `next` (10,000 rows are not encoded again). */
  snapshotJson(): string {
    let jails = '';
    for (const r of this.rows.values()) jails += jails ? `,${r.json}` : r.json;
    return `{"jails":[${jails}],"hosts":${JSON.stringify(this.hosts)}}`;
  }
}
