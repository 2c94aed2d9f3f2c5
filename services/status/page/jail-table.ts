// The dashboard's jail table as data: which rows a search, a state and a host keep, in which
// order. Pure and DOM-free, so it is tested in node and runs in the page; it must stay fast
// enough to run on every keystroke over 10,000 rows.

/**
 * A row of the table: the status service's ps row, loosely typed on purpose. The page renders
 * fields that newer status services add (health, usage, address) when present, and none of them
 * is required.
 */
export interface JailRow {
  name: string;
  host: string | null;
  state: string;
  generation: number;
  pid: number | null;
  since: string;
  exitCode: number | null;
  restarts: number;
  error: { step: string; message: string } | null;
  health?: 'healthy' | 'unhealthy' | 'starting' | string;
  usage?: { cpuSeconds: number; memoryBytes: number };
  address?: string;
}

export const SORT_KEYS = ['name', 'host', 'state', 'generation', 'restarts', 'since', 'health', 'cpu', 'memory', 'error'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface TableQuery {
  /** Words that must each appear in the name, host, state, health, address or error (any case). */
  search: string;
  state: string;
  host: string;
  sort: SortKey;
  desc: boolean;
}

export const defaultQuery = (): TableQuery => ({ search: '', state: '', host: '', sort: 'name', desc: false });

/** What a row is found by: computed once per row object, rows being replaced rather than changed. */
const haystacks = new WeakMap<JailRow, string>();
function haystack(r: JailRow): string {
  let h = haystacks.get(r);
  if (h === undefined) {
    h = [r.name, r.host ?? '', r.state, r.health ?? '', r.address ?? '', r.error ? `${r.error.step} ${r.error.message}` : ''].join('\u0000').toLowerCase();
    haystacks.set(r, h);
  }
  return h;
}

type Value = string | number;
const valueOf: Record<SortKey, (r: JailRow) => Value> = {
  name: (r) => r.name,
  host: (r) => r.host ?? '',
  state: (r) => r.state,
  generation: (r) => r.generation,
  restarts: (r) => r.restarts,
  since: (r) => r.since,
  health: (r) => r.health ?? '',
  cpu: (r) => r.usage?.cpuSeconds ?? -1,
  memory: (r) => r.usage?.memoryBytes ?? -1,
  error: (r) => (r.error ? r.error.message : ''),
};

/** The rows the query keeps, sorted by its key (then by name, so the order is total). */
export function selectRows(rows: Iterable<JailRow>, q: TableQuery): JailRow[] {
  const words = q.search.toLowerCase().split(/\s+/).filter(Boolean);
  const out: JailRow[] = [];
  for (const r of rows) {
    if (q.state && r.state !== q.state) continue;
    if (q.host && r.host !== q.host) continue;
    if (words.length) {
      const h = haystack(r);
      if (!words.every((w) => h.includes(w))) continue;
    }
    out.push(r);
  }
  const key = valueOf[q.sort];
  const dir = q.desc ? -1 : 1;
  out.sort((a, b) => {
    const x = key(a);
    const y = key(b);
    if (x !== y) return (x < y ? -1 : 1) * dir;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
  return out;
}

/** How many jails are in each state, the states in a fixed order (the lifecycle's, then the rest). */
export function countByState(rows: Iterable<JailRow>): [string, number][] {
  const n = new Map<string, number>();
  for (const r of rows) n.set(r.state, (n.get(r.state) ?? 0) + 1);
  const order = ['running', 'pending', 'prepared', 'mounted', 'stopped', 'failed', 'lost', 'unplaced', 'removing'];
  const rank = (s: string) => (order.includes(s) ? order.indexOf(s) : order.length);
  return [...n].sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : 1));
}

/** Bytes as people read them (binary units). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** How long ago an ISO time was, in the largest whole unit ('' for none). */
export function ago(iso: string, now: number): string {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
