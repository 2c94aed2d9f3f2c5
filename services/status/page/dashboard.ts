/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The dashboard page's entry: holds every jail and host from the live feed (`/api/live`: a
// snapshot, then changes), draws the overview and the virtualised jail table (only the rows in
// view exist in the DOM, so 10,000 jails draw as fast as 40), and the jail page at #/jail/NAME.
// Changes are drawn once per animation frame however many arrive. It only reads.
import { Virtualizer, elementScroll, observeElementOffset, observeElementRect, type VirtualizerOptions } from '@tanstack/virtual-core';
import { badge, el } from './dom.js';
import { renderJail, type JailDetail } from './jail-page.js';
import { ago, countByState, defaultQuery, formatBytes, selectRows, type JailRow, type SortKey } from './jail-table.js';

interface HostRow {
  host: string;
  status: string;
  jails: number;
  lastSeen: string;
  capacity?: { cpu: number; memoryMB: number };
  allocated?: { cpu: number; memoryMB: number };
  labels?: Record<string, string>;
  drain?: { blocked: { name: string; reason: string }[] };
}

const ROW_HEIGHT = 30;
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const jails = new Map<string, JailRow>();
let hosts: HostRow[] = [];
const query = defaultQuery();
let selected: JailRow[] = [];
/** Set once the feed's first snapshot is drawn: before it, an empty table means "not known yet". */
let firstDrawn = false;
let snapshotSeen = false;

// the table: a header of sort buttons, a scroller holding a spacer as tall as every row
const COLUMNS: [SortKey, string, string?][] = [
  ['name', 'name'],
  ['host', 'host'],
  ['state', 'state'],
  ['generation', 'gen', 'num'],
  ['restarts', 'restarts', 'num'],
  ['since', 'since'],
  ['health', 'health'],
  ['cpu', 'CPU', 'num'],
  ['memory', 'memory', 'num'],
  ['error', 'error'],
];
const scroller = $<HTMLDivElement>('scroller');
const options: VirtualizerOptions<HTMLDivElement, HTMLDivElement> = {
  count: 0,
  getScrollElement: () => scroller,
  estimateSize: () => ROW_HEIGHT,
  overscan: 10,
  scrollToFn: elementScroll,
  observeElementRect,
  observeElementOffset,
  onChange: () => drawRows(),
};
const virtualizer = new Virtualizer(options);
virtualizer._didMount();

function drawHeader() {
  $('thead').replaceChildren(
    ...COLUMNS.map(([key, label, cls]) => {
      const b = el('button', { type: 'button', 'data-sort': key, class: cls, ...(query.sort === key && { 'aria-sort': query.desc ? 'descending' : 'ascending' }) }, label);
      b.addEventListener('click', () => {
        query.desc = query.sort === key ? !query.desc : false;
        query.sort = key;
        drawHeader();
        schedule();
      });
      return el('span', { role: 'columnheader' }, b);
    }),
  );
}

function rowElement(r: JailRow, now: number): HTMLElement {
  const cell = (content: Node | string, cls?: string, title?: string) => el('span', { role: 'cell', class: cls, title }, content);
  const err = r.error ? `${r.error.step}: ${r.error.message}` : '';
  return el(
    'div',
    { class: 'tr', role: 'row', 'data-jail': r.name, 'data-state': r.state },
    cell(el('a', { href: `#/jail/${encodeURIComponent(r.name)}` }, r.name), undefined, r.name),
    cell(r.host ?? '—', undefined, r.address ? `${r.host} · ${r.address}` : undefined),
    cell(badge(r.state)),
    cell(String(r.generation), 'num'),
    cell(String(r.restarts), 'num'),
    cell(ago(r.since, now), undefined, r.since),
    cell(r.health ? badge(r.health) : ''),
    cell(r.usage ? `${r.usage.cpuSeconds.toFixed(1)} s` : '', 'num'),
    cell(r.usage ? formatBytes(r.usage.memoryBytes) : '', 'num'),
    cell(err || (r.address ?? ''), err ? 'err' : undefined, err || undefined),
  );
}

function drawRows() {
  const items = virtualizer.getVirtualItems();
  $('spacer').style.height = `${virtualizer.getTotalSize()}px`;
  const rows = $('rows');
  rows.style.transform = `translateY(${items[0]?.start ?? 0}px)`;
  const now = Date.now();
  rows.replaceChildren(...items.map((i) => rowElement(selected[i.index]!, now)));
  $('no-rows').hidden = selected.length > 0 || !firstDrawn;
}

function drawHosts() {
  const box = $('hosts');
  if (!hosts.length) return box.replaceChildren(el('p', { class: 'empty' }, 'No host has been heard from yet.'));
  const bar = (used: number, total: number) => el('div', { class: used > total ? 'bar full' : 'bar' }, el('i', { style: `width:${total > 0 ? Math.min(100, (used / total) * 100) : 0}%` }));
  box.replaceChildren(
    ...[...hosts].sort((a, b) => byNumber.compare(a.host, b.host)).map((h) => {
      const cap = h.capacity ?? { cpu: 0, memoryMB: 0 };
      const alloc = h.allocated ?? { cpu: 0, memoryMB: 0 };
      return el(
        'div',
        { class: 'host', 'data-host': h.host, 'data-status': h.status },
        el('div', { class: 'name' }, el('span', {}, h.host), badge(h.status)),
        el('div', { class: 'meta' }, `${h.jails} jail${h.jails === 1 ? '' : 's'} · seen ${ago(h.lastSeen, Date.now())}`),
        el('div', { class: 'meta' }, `CPU ${round(alloc.cpu)} / ${round(cap.cpu)} cores`),
        bar(alloc.cpu, cap.cpu),
        el('div', { class: 'meta' }, `memory ${formatBytes(alloc.memoryMB * 2 ** 20)} / ${formatBytes(cap.memoryMB * 2 ** 20)}`),
        bar(alloc.memoryMB, cap.memoryMB),
        h.drain?.blocked.length ? el('div', { class: 'meta' }, `${h.drain.blocked.length} jail(s) cannot move`) : null,
      );
    }),
  );
}
const round = (x: number) => Math.round(x * 100) / 100;
/** host-2 before host-10: a few hosts, so the collator's cost does not matter here (it would for 10,000 rows). */
const byNumber = new Intl.Collator('en', { numeric: true });

function drawStates() {
  const counts = countByState(jails.values());
  $('states').replaceChildren(
    ...counts.map(([state, n]) => {
      const b = el('button', { type: 'button', 'data-state': state, 'aria-pressed': String(query.state === state) }, badge(state), el('b', {}, n));
      b.addEventListener('click', () => {
        query.state = query.state === state ? '' : state;
        ($('state-filter') as HTMLSelectElement).value = query.state;
        schedule();
      });
      return b;
    }),
  );
  if (!counts.length) $('states').replaceChildren(el('p', { class: 'empty' }, 'No jails yet: apply a fleet (jailfleet apply -f fleet.yaml) or run one (jailfleet run NAME -- CMD).'));
  fillSelect($('state-filter') as HTMLSelectElement, 'every state', counts.map(([s]) => s), query.state);
  fillSelect($('host-filter') as HTMLSelectElement, 'every host', hosts.map((h) => h.host), query.host);
  const down = hosts.filter((h) => h.status === 'down').length;
  $('totals').textContent = `${jails.size} jail${jails.size === 1 ? '' : 's'} · ${hosts.length} host${hosts.length === 1 ? '' : 's'}${down ? ` (${down} down)` : ''}`;
}

/** Keeps a select's options in step with what exists, and the chosen one chosen. */
function fillSelect(s: HTMLSelectElement, all: string, values: string[], chosen: string) {
  const want = ['', ...values];
  if (chosen && !want.includes(chosen)) want.push(chosen);
  const have = [...s.options].map((o) => o.value);
  if (have.join('\n') !== want.join('\n')) s.replaceChildren(...want.map((v) => el('option', { value: v }, v || all)));
  s.value = chosen;
}

let pending = 0;
/** Draws once in the next frame, whatever asked for it meanwhile. */
function schedule() {
  pending ||= requestAnimationFrame(draw);
}

function draw() {
  pending = 0;
  // the page's own "loading" stands until the feed's snapshot: an empty cluster is not yet known
  if (!snapshotSeen) return;
  drawStates();
  drawHosts();
  selected = selectRows(jails.values(), query);
  $('shown').textContent = `${selected.length} of ${jails.size} shown`;
  virtualizer.setOptions({ ...options, count: selected.length });
  virtualizer._willUpdate();
  drawRows();
  if (!firstDrawn && snapshotSeen) {
    firstDrawn = true;
    $('no-rows').hidden = selected.length > 0;
    performance.mark('jails-rendered');
    document.body.dataset.rendered = 'true';
  }
  if (route.jail) refreshJail();
  else changedJails.clear();
}

// the live feed: EventSource reconnects by itself, and the server starts each connection with a snapshot
function connect() {
  const live = new EventSource('/api/live');
  const status = $('live');
  live.addEventListener('open', () => ((status.dataset.state = 'live'), (status.textContent = 'live')));
  live.addEventListener('error', () => ((status.dataset.state = 'down'), (status.textContent = 'reconnecting…')));
  live.addEventListener('snapshot', (e) => {
    performance.mark('snapshot-received');
    const s = JSON.parse((e as MessageEvent<string>).data) as { jails: JailRow[]; hosts: HostRow[] };
    jails.clear();
    for (const r of s.jails) jails.set(r.name, r);
    hosts = s.hosts;
    snapshotSeen = true;
    changedJails.add('*');
    // drawn at once rather than in the next frame: the first frame of a fresh page may be a while
    if (pending) cancelAnimationFrame(pending);
    draw();
  });
  live.addEventListener('changes', (e) => {
    const c = JSON.parse((e as MessageEvent<string>).data) as { jails: JailRow[]; removed: string[]; hosts?: HostRow[] };
    for (const r of c.jails) (jails.set(r.name, r), changedJails.add(r.name));
    for (const n of c.removed) (jails.delete(n), changedJails.add(n));
    if (c.hosts) hosts = c.hosts;
    schedule();
  });
}

// the jail page
const route: { jail?: string } = {};
const changedJails = new Set<string>();
let loading: Promise<void> | undefined;
let again = false;

function onRoute() {
  const m = /^#\/jail\/(.+)$/.exec(location.hash);
  route.jail = m ? decodeURIComponent(m[1]!) : undefined;
  $('overview').hidden = route.jail !== undefined;
  $('jail').hidden = route.jail === undefined;
  if (route.jail) {
    $('jail').replaceChildren(el('a', { class: 'back', href: '#/' }, '← all jails'), el('p', { class: 'empty' }, `Loading ${route.jail}…`));
    changedJails.add('*');
    refreshJail();
  } else schedule();
}

/** Loads the jail page again when its jail changed (one load at a time; one more if it changed meanwhile). */
function refreshJail() {
  const name = route.jail;
  if (!name || !(changedJails.has(name) || changedJails.has('*'))) return;
  changedJails.clear();
  if (loading) return void (again = true);
  loading = (async () => {
    const res = await fetch(`/api/jails/${encodeURIComponent(name)}`);
    if (route.jail !== name) return;
    const box = $('jail');
    if (!res.ok) return void box.replaceChildren(el('a', { class: 'back', href: '#/' }, '← all jails'), el('p', { class: 'empty' }, (await res.text()).trim()));
    const d = (await res.json()) as JailDetail;
    box.replaceChildren(renderJail(d, name, Date.now()));
    box.dataset.loaded = name;
  })()
    .catch((err: unknown) => $('jail').replaceChildren(el('p', { class: 'empty' }, `could not load ${name}: ${(err as Error).message}`)))
    .finally(() => {
      loading = undefined;
      if (again) ((again = false), changedJails.add(name), refreshJail());
    });
}

$<HTMLInputElement>('search').addEventListener('input', (e) => ((query.search = (e.target as HTMLInputElement).value), schedule()));
$<HTMLSelectElement>('state-filter').addEventListener('change', (e) => ((query.state = (e.target as HTMLSelectElement).value), schedule()));
$<HTMLSelectElement>('host-filter').addEventListener('change', (e) => ((query.host = (e.target as HTMLSelectElement).value), schedule()));
window.addEventListener('hashchange', onRoute);
// "5s ago" and "seen 2s ago" go stale on a quiet cluster: drawn again now and then
setInterval(() => route.jail === undefined && schedule(), 5000);
drawHeader();
connect();
onRoute();
