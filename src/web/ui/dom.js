// Building the page safely, and formatting figures.
//
// Everything shown comes from the network (file names and paths are chosen by whoever shares
// them), so the DOM is built only with createElement and text nodes: nothing is ever parsed
// as HTML. The page's Content-Security-Policy also makes Chromium refuse HTML strings outright
// (Trusted Types), so a slip here fails loudly instead of running someone's script.

/**
 * An element: h('button', {type: 'button', onclick: f, class: 'x', 'aria-label': 'y'}, 'text', child...)
 * Attributes are set with setAttribute (values are never parsed), `on*` keys add listeners,
 * strings and numbers become text nodes, null/undefined/false are skipped, arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'hidden') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces an element's children (text or nodes). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The element with this id (it must exist: the page is ours). */
export function $(id) {
  return document.getElementById(id);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB". */
export function size(bytes) {
  if (bytes === null || bytes === undefined) return '?';
  let n = Number(bytes);
  let u = 0;
  while (n >= 1024 && u < UNITS.length - 1) {
    n /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)} ${UNITS[u]}`;
}

/** Bytes per second → "1.5 MiB/s". */
export function rate(bps) {
  return bps === null || bps === undefined ? '' : `${size(bps)}/s`;
}

/** Seconds → "1 h 5 m", "3 m 20 s", "12 s". */
export function duration(s) {
  if (s === null || s === undefined) return '';
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400);
  const hr = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d} d ${hr} h`;
  if (hr > 0) return `${hr} h ${m} m`;
  if (m > 0) return `${m} m ${sec} s`;
  return `${sec} s`;
}

/** Milliseconds since the epoch → "5 m ago". */
export function ago(ms) {
  if (!ms) return '';
  const s = (Date.now() - ms) / 1000;
  return s < 5 ? 'just now' : `${duration(s)} ago`;
}

/** Milliseconds since the epoch → local date and time. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

/** A whole percentage of done/total, or null when the total is unknown. */
export function percent(done, total) {
  if (!total) return null;
  return Math.min(100, Math.floor((100 * done) / total));
}

/** A definition list's entries: [[term, value node or text], ...]; values null are left out. */
export function facts(dl, entries) {
  fill(dl, entries.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}
