// How the CLI prints: plain aligned tables (like kubectl), relative ages, JSON when asked.
import { constants as osConstants } from 'node:os';
import type { HostRow, PlanResultJson, PsRow } from '../../contracts/index.js';

/**
 * Columns aligned by padding, two spaces apart, the last one unpadded (kubectl's look). Plain
 * string work: 10,000 rows render in milliseconds (a table library took seconds).
 */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map(() => 0);
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i]!, c.length)));
  const last = head.length - 1;
  return cells.map((r) => r.map((c, i) => (i === last ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** `12s`, `5m`, `3h`, `2d` since an ISO time. */
export function age(iso: string, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** `exit 3`, or `exit 143 (SIGTERM)` for a command ended by a signal. */
function exitText(code: number): string {
  const sig = code > 128 ? Object.entries(osConstants.signals).find(([, n]) => n === code - 128)?.[0] : undefined;
  return sig ? `exit ${code} (${sig})` : `exit ${code}`;
}

/** What `ps` says beside the state: the failed step and why, how it ended, how often it restarted. */
function info(r: PsRow): string {
  const parts: string[] = [];
  if (r.error) parts.push(`${r.error.step}: ${r.error.message}`);
  else if (r.state === 'stopped' && r.exitCode !== null) parts.push(exitText(r.exitCode));
  if (r.restarts > 0) parts.push(`${r.restarts} restart${r.restarts === 1 ? '' : 's'}`);
  if (r.healthReason) parts.push(r.healthReason);
  return parts.join(', ');
}

/**
 * `ps`. The HEALTH column appears only when some jail has a check: a fleet without checks keeps
 * the table it had (and scripts reading its columns), and `-` would fill a column nobody asked for.
 */
export function psTable(rows: PsRow[]): string {
  // the ADDRESS column only when a jail has one (vnet), HEALTH only when one has a check: a
  // cluster without either reads as before
  const addresses = rows.some((r) => r.address);
  const health = rows.some((r) => r.health !== undefined);
  return table(
    ['NAME', 'HOST', 'STATE', ...(addresses ? ['ADDRESS'] : []), ...(health ? ['HEALTH'] : []), 'GEN', 'PID', 'AGE', 'INFO'],
    rows.map((r) => [
      r.name,
      r.host ?? '-',
      r.state,
      ...(addresses ? [r.address ?? '-'] : []),
      ...(health ? [r.health ?? '-'] : []),
      r.generation,
      r.pid ?? '-',
      age(r.since),
      info(r),
    ]),
  );
}

/** `0.5/2` (allocated of capacity), `-` for a host that did not say. */
const share = (used: number | undefined, cap: number | undefined) => (cap === undefined ? '-' : `${used === undefined ? '?' : Math.round(used * 1000) / 1000}/${cap}`);

/** `hosts`: liveness (or drain), jails held, cpu and memory allocated of capacity, labels, and a drain's blocked jails. */
export function hostsTable(rows: HostRow[]): string {
  return table(
    ['HOST', 'STATUS', 'JAILS', 'CPU', 'MEMORY-MB', 'LABELS', 'LAST-SEEN', 'INFO'],
    rows.map((h) => [
      h.host,
      h.status,
      h.jails,
      share(h.allocated?.cpu, h.capacity?.cpu),
      share(h.allocated?.memoryMB, h.capacity?.memoryMB),
      Object.entries(h.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      `${age(h.lastSeen)} ago`,
      h.drain?.blocked.length ? `cannot move: ${someNames(h.drain.blocked.map((b) => `${b.name} (${b.reason})`), 3)}` : '',
    ]),
  );
}

/** The JSON shape of `ps --json`. */
export const psJson = (rows: PsRow[]) =>
  rows.map((r) => ({ name: r.name, host: r.host, state: r.state, generation: r.generation, pid: r.pid, since: r.since || null, exitCode: r.exitCode, restarts: r.restarts, error: r.error, ...(r.address ? { address: r.address } : {}), ...(r.health && { health: r.health, healthReason: r.healthReason ?? null }), ...(r.usage && { usage: r.usage }) }));

/** At most `n` names, then how many more. */
const someNames = (names: string[], n = 6) => (names.length <= n ? names.join(', ') : `${names.slice(0, n).join(', ')}, … (+${names.length - n})`);
const percent = (used: number, cap: number) => (cap > 0 ? `${Math.round((100 * used) / cap)}%` : '-');

/** `jailfleet plan`: the summary, each used host with its fill, and the jails that fit nowhere. */
export function planText(r: PlanResultJson, capacity: Map<string, { cpu: number; memoryMB: number }>): string {
  const lines = [`hosts used: ${r.hostsUsed} (lower bound ${r.lowerBound}); jails placed: ${r.hosts.reduce((n, h) => n + h.jails.length, 0)}, unplaced: ${r.unplaced.length}`];
  if (r.hosts.length) {
    lines.push(
      '',
      table(
        ['HOST', 'JAILS', 'CPU', 'CPU%', 'MEMORY-MB', 'MEM%', 'NAMES'],
        r.hosts.map((h) => {
          const cap = capacity.get(h.host) ?? { cpu: 0, memoryMB: 0 };
          return [h.host, h.jails.length, `${h.cpu}/${cap.cpu}`, percent(h.cpu, cap.cpu), `${h.memoryMB}/${cap.memoryMB}`, percent(h.memoryMB, cap.memoryMB), someNames(h.jails)];
        }),
      ),
    );
  }
  if (r.unplaced.length) lines.push('', table(['UNPLACED', 'REASON'], r.unplaced.map((u) => [u.name, u.reason])));
  return lines.join('\n');
}
