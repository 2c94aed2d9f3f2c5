/// <reference lib="dom" />
// The jail page: one jail's state, spec, placement history, events and the end of its log, from
// `/api/jails/NAME`. It only renders what it is given.
import { badge, el } from './dom.js';
import { ago, formatBytes, type JailRow } from './jail-table.js';

export interface JailDetail {
  row: JailRow | null;
  desired: { spec: Record<string, unknown>; desired: string; generation: number; updatedAt: string } | null;
  placement: { host: string | null; generation: number; reason: string | null } | null;
  events: { host: string; generation: number; seq: number; state: string; pid: number | null; exitCode: number | null; restarts: number; error: { step: string; message: string } | null; at: string }[];
  history: { generation: number; host: string; from: string; to: string | null; lastState: string }[];
  log: { text: string; truncated: boolean; host: string } | { error: string } | null;
}

const card = (k: string, v: Node | string) => el('div', { class: 'card' }, el('div', { class: 'k' }, k), el('div', { class: 'v' }, v));
const time = (iso: string, now: number) => (iso ? `${new Date(iso).toLocaleString()} (${ago(iso, now)})` : '—');

export function renderJail(d: JailDetail, name: string, now: number): HTMLElement {
  const r = d.row;
  const lastError = r?.error ?? [...d.events].reverse().find((e) => e.error)?.error ?? null;
  const cards = el(
    'div',
    { class: 'cards' },
    card('host', r?.host ?? d.placement?.host ?? 'not placed'),
    card('generation', String(r?.generation ?? d.placement?.generation ?? '—')),
    card('desired', d.desired?.desired ?? '—'),
    card('pid', r?.pid ? String(r.pid) : '—'),
    card('since', r?.since ? time(r.since, now) : '—'),
    card('restarts', String(r?.restarts ?? 0)),
    card('exit code', r?.exitCode === null || r?.exitCode === undefined ? '—' : String(r.exitCode)),
    card('health', r?.health ? badge(r.health) : 'no check'),
    card('CPU', r?.usage ? `${r.usage.cpuSeconds.toFixed(2)} s` : 'not reported'),
    card('memory', r?.usage ? formatBytes(r.usage.memoryBytes) : 'not reported'),
    ...(r?.address ? [card('address', r.address)] : []),
  );
  const history = el(
    'table',
    { class: 'list', id: 'history' },
    el('thead', {}, el('tr', {}, el('th', {}, 'generation'), el('th', {}, 'host'), el('th', {}, 'from'), el('th', {}, 'until'), el('th', {}, 'last state'))),
    el('tbody', {}, ...[...d.history].reverse().map((h) => el('tr', {}, el('td', {}, h.generation), el('td', {}, h.host), el('td', {}, time(h.from, now)), el('td', {}, h.to ? time(h.to, now) : 'now'), el('td', {}, badge(h.lastState))))),
  );
  const events = el(
    'div',
    { class: 'events' },
    el(
      'table',
      { class: 'list', id: 'events' },
      el('thead', {}, el('tr', {}, el('th', {}, 'at'), el('th', {}, 'host'), el('th', {}, 'gen'), el('th', {}, 'state'), el('th', {}, 'detail'))),
      el(
        'tbody',
        {},
        ...[...d.events].reverse().map((e) =>
          el(
            'tr',
            {},
            el('td', {}, new Date(e.at).toLocaleTimeString()),
            el('td', {}, e.host),
            el('td', {}, e.generation),
            el('td', {}, badge(e.state)),
            el('td', {}, [e.pid ? `pid ${e.pid}` : '', e.exitCode !== null ? `exit ${e.exitCode}` : '', e.restarts ? `restarts ${e.restarts}` : '', e.error ? `${e.error.step}: ${e.error.message}` : ''].filter(Boolean).join(' · ')),
          ),
        ),
      ),
    ),
  );
  const log = d.log === null ? 'The jail is on no host: no log to show.' : 'error' in d.log ? d.log.error : d.log.text || '(the jail has written nothing yet)';
  return el(
    'div',
    {},
    el('a', { class: 'back', href: '#/' }, '← all jails'),
    el('div', { class: 'jail-head' }, el('h1', {}, name), badge(r?.state ?? 'unknown')),
    cards,
    lastError && el('div', { class: 'error-box', id: 'last-error' }, `last error — ${lastError.step}: ${lastError.message}`),
    d.placement?.host === null && d.placement.reason ? el('div', { class: 'error-box' }, `not placed: ${d.placement.reason}`) : null,
    el('div', { class: 'grid2' }, el('div', {}, el('h2', {}, 'Placement history'), history), el('div', {}, el('h2', {}, 'Spec'), el('pre', { class: 'spec' }, d.desired ? JSON.stringify(d.desired.spec, null, 2) : 'no desired record (removed?)'))),
    el('h2', {}, `Events (newest first, ${d.events.length})`),
    events,
    el('h2', {}, d.log && 'host' in d.log ? `Log — the last lines on ${d.log.host}${d.log.truncated ? ' (earlier lines left out)' : ''}` : 'Log'),
    el('pre', { class: 'log', id: 'log' }, log),
  );
}
