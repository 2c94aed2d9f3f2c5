/// <reference lib="dom" />
// Building the page's elements. Text goes in as text nodes, never as HTML: a jail's name, its
// error or its log can hold anything.

type Child = Node | string | number | null | undefined | false;

/** An element with attributes (`class`, `href`, data-*, aria-*...) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | undefined> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(typeof c === 'number' ? String(c) : c);
  return e;
}

/** A state, status or health as a coloured badge. */
export const badge = (text: string) => el('span', { class: `badge s-${text.replace(/[^a-z-]/g, '')}` }, text);
