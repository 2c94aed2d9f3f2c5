// How the CLI prints: plain aligned tables (like kubectl), relative ages, JSON when asked.
import { createRequire } from 'node:module';
import type { HostRow, PsRow } from '../../contracts/index.js';

const plain = {
  chars: {
    top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '',
    'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
  },
  style: { head: [] as string[], border: [] as string[], 'padding-left': 0, 'padding-right': 0 },
};

export function table(head: string[], rows: (string | number)[][]): string {
  // loaded on first use: `--json` output never pays for it
  const Table = createRequire(import.meta.url)('cli-table3') as typeof import('cli-table3');
  const t = new Table({ head, ...plain });
  t.push(...rows.map((r) => r.map(String)));
  return t.toString().split('\n').map((l) => l.trimEnd()).join('\n');
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

export function psTable(rows: PsRow[]): string {
  return table(
    ['NAME', 'HOST', 'STATE', 'GEN', 'PID', 'AGE', 'INFO'],
    rows.map((r) => [
      r.name,
      r.host ?? '-',
      r.state,
      r.generation,
      r.pid ?? '-',
      age(r.since),
      r.error ? `${r.error.step}: ${r.error.message}` : r.state === 'stopped' && r.exitCode !== null ? `exit ${r.exitCode}` : '',
    ]),
  );
}

export function hostsTable(rows: HostRow[]): string {
  return table(['HOST', 'STATUS', 'JAILS', 'LAST-SEEN'], rows.map((h) => [h.host, h.status, h.jails, `${age(h.lastSeen)} ago`]));
}

/** The JSON shape of `ps --json`. */
export const psJson = (rows: PsRow[]) =>
  rows.map((r) => ({ name: r.name, host: r.host, state: r.state, generation: r.generation, pid: r.pid, since: r.since || null, exitCode: r.exitCode, restarts: r.restarts, error: r.error }));
