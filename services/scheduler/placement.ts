// Placement: which host a jail goes to. Pure and deterministic: the same jails and hosts give
// the same answer. A jail that cannot be placed gets a reason naming the constraint.
import type { JailSpec } from '../../contracts/index.js';

export interface HostView {
  name: string;
  up: boolean;
  /** Jails placed on the host now. */
  jails: number;
}

export type Placement = { host: string; reason: null } | { host: null; reason: string };

/** The pinned host if it is up, else the live host with the fewest jails (ties by name). */
export function placeJail(spec: { placement: { host?: string } }, hosts: readonly HostView[]): Placement {
  const pinned = spec.placement.host;
  if (pinned) {
    const h = hosts.find((x) => x.name === pinned);
    if (!h) return { host: null, reason: `pinned host "${pinned}" is unknown (0 of ${hosts.length} hosts match)` };
    if (!h.up) return { host: null, reason: `pinned host "${pinned}" is down` };
    return { host: pinned, reason: null };
  }
  const live = hosts.filter((h) => h.up);
  if (live.length === 0) return { host: null, reason: `no host is up (0 of ${hosts.length})` };
  const best = live.reduce((a, b) => (b.jails < a.jails || (b.jails === a.jails && b.name < a.name) ? b : a));
  return { host: best.name, reason: null };
}
