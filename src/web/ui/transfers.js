// The transfers view: the queue, page by page, in queue order, finished items included; kept
// live from the node's events; pause, resume, cancel, reorder, remove.

import { api, query } from './api.js';
import { $, h, fill, size, rate, duration, percent, when } from './dom.js';

const PAGE = 100;

const KIND = { file: 'file', folder: 'folder', query: 'search' };

/** What each state allows, as [action, visible label]. */
const ACTIONS = {
  queued: [['pause', 'Pause'], ['cancel', 'Cancel']],
  running: [['pause', 'Pause'], ['cancel', 'Cancel']],
  paused: [['resume', 'Resume'], ['cancel', 'Cancel']],
  failed: [['resume', 'Retry'], ['cancel', 'Cancel'], ['remove', 'Remove']],
  done: [['remove', 'Remove']],
  cancelled: [['remove', 'Remove']],
};

const FINISHED = new Set(['done', 'failed', 'cancelled']);

/** The name an item is shown under. */
export function itemName(item) {
  if (item.name) return item.name;
  if (item.kind === 'file') return `${item.target.slice(0, 16)}…`;
  return item.target;
}

export function createTransfers(notify) {
  const table = $('transfers');
  const tbody = table.tBodies[0];
  const state = { filter: '', offset: 0, total: 0, order: [], rows: new Map(), seq: 0, timer: null };

  // --- the list

  async function reload() {
    const seq = ++state.seq;
    let page;
    try {
      page = await api('GET', `/transfers${query({ state: state.filter, offset: state.offset, limit: PAGE })}`);
    } catch (e) {
      notify(`Could not load the transfers: ${e.message}`);
      return;
    }
    if (seq !== state.seq) return; // a newer reload is under way
    if (page.items.length === 0 && page.total > 0 && state.offset > 0) {
      state.offset = Math.floor((page.total - 1) / PAGE) * PAGE;
      reload();
      return;
    }
    state.total = page.total;
    render(page.items);
  }

  /** Reloads soon, once for a burst of events. */
  function soon() {
    if (state.timer) return;
    state.timer = setTimeout(() => {
      state.timer = null;
      reload();
    }, 250);
  }

  function render(items) {
    const focused = document.activeElement;
    const keep = new Set(items.map((i) => i.id));
    let lostFocus = false;
    for (const [id, row] of state.rows) {
      if (!keep.has(id)) {
        if (row.tr.contains(focused)) lostFocus = true;
        row.tr.remove();
        state.rows.delete(id);
      }
    }
    state.order = items.map((i) => i.id);
    items.forEach((item, i) => {
      const row = update(item);
      // Moved only when out of place, so that a focused button keeps its focus.
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    if (lostFocus) $('h-transfers').focus();
    const empty = $('transfers-empty');
    empty.hidden = items.length > 0;
    if (items.length === 0 && state.filter) {
      fill(empty, `No transfer is ${state.filter}.`);
    } else if (items.length === 0) {
      fill(empty, 'Nothing here yet. ', h('a', { href: '#search' }, 'Search'), ' for something to download.');
    }
    table.hidden = items.length === 0;
    const last = Math.min(state.offset + items.length, state.total);
    fill($('transfers-range'), state.total ? `${state.offset + 1}–${last} of ${state.total}` : '');
    $('transfers-prev').disabled = state.offset === 0;
    $('transfers-next').disabled = last >= state.total;
    $('transfers-prev').parentElement.hidden = state.total <= PAGE;
  }

  /** The row of `item`, made or brought up to date. */
  function update(item) {
    let row = state.rows.get(item.id);
    if (!row) {
      row = makeRow(item);
      state.rows.set(item.id, row);
    }
    const prev = row.item;
    // Progress events carry live figures; an item event after them may lack them.
    row.item = item;
    const c = row.cells;
    row.tr.dataset.state = item.state;
    const name = itemName(item);
    if (!prev || prev.name !== item.name) {
      fill(c.name.firstChild, name);
      c.name.firstChild.title = item.kind === 'file' ? item.target : '';
    }
    fill(c.sub,
      h('span', { class: 'kind' }, KIND[item.kind] || item.kind),
      item.path ? [' saved as ', h('span', { class: 'path' }, item.path)] : null,
      item.error ? [' ', h('span', { class: 'error' }, item.error)] : null,
      item.finished_ms && item.state === 'done' ? h('span', { class: 'muted' }, ` · ${when(item.finished_ms)}`) : null);
    fill(c.state.firstChild, item.state);
    c.state.firstChild.className = `state state-${item.state}`;
    fill(c.files, item.files_total && item.files_total > 1 ? `${item.files_done}/${item.files_total} files` : '');
    const total = item.bytes_total ?? item.size;
    const p = item.state === 'done' ? 100 : percent(item.bytes_done, total);
    if (p === null && item.state === 'running') {
      // Running, its size not known yet: an indeterminate bar.
      c.bar.removeAttribute('value');
    } else if (p === null) {
      c.bar.value = 0;
    } else {
      c.bar.max = 100;
      c.bar.value = p;
    }
    c.bar.setAttribute('aria-label', `${name}: ${p === null ? 'size unknown' : `${p}%`}`);
    fill(c.amount, total ? `${size(item.bytes_done)} of ${size(total)}${p === null ? '' : ` (${p}%)`}` : size(item.bytes_done));
    const running = item.state === 'running';
    fill(c.rate, running && item.rate !== null && item.rate !== undefined ? rate(item.rate) : '');
    fill(c.eta, running && item.eta_seconds !== null && item.eta_seconds !== undefined ? duration(item.eta_seconds) : '');
    const sources = item.sources || [];
    const sourcesKey = JSON.stringify([item.active_sources, sources]);
    if (sourcesKey !== row.sourcesKey) {
      row.sourcesKey = sourcesKey;
      const open = c.sources.querySelector('details')?.open;
      fill(c.sources, sources.length === 0 ? '' : h('details', { open: open || null },
        h('summary', null, `${item.active_sources || 0} active of ${sources.length}`),
        h('ul', { class: 'sources' }, sources.map((s) => h('li', null,
          h('span', { class: 'addr' }, s.address),
          ' ',
          h('span', { class: `reached reached-${s.reached}` }, s.reached),
          s.peer_id ? h('span', { class: 'muted' }, ` peer ${s.peer_id}`) : null)))));
    }
    actions(row);
    return row;
  }

  function makeRow(item) {
    const bar = h('progress', { max: 100 });
    const cells = {
      name: h('td', { 'data-label': 'Name', class: 'name' }, h('div', { class: 'title' }), h('div', { class: 'sub' })),
      state: h('td', { 'data-label': 'State' }, h('span'), h('div', { class: 'muted files' })),
      progress: h('td', { 'data-label': 'Progress', class: 'progress' }, bar, h('div', { class: 'amount' })),
      rate: h('td', { 'data-label': 'Rate', class: 'num' }),
      eta: h('td', { 'data-label': 'ETA', class: 'num' }),
      sources: h('td', { 'data-label': 'Sources' }),
      actions: h('td', { 'data-label': 'Actions', class: 'actions' }),
    };
    cells.sub = cells.name.children[1];
    cells.files = cells.state.children[1];
    cells.bar = bar;
    cells.amount = cells.progress.children[1];
    const tr = h('tr', { 'data-id': item.id }, Object.values(cells).filter((c) => c.tagName === 'TD'));
    return { tr, cells, item: null, sourcesKey: null, actionsKey: null };
  }

  /** The row's buttons, remade only when what they would be changes (a focused one keeps focus). */
  function actions(row) {
    const { item } = row;
    const name = itemName(item);
    const index = state.order.indexOf(item.id);
    const all = state.filter === '';
    const pos = all ? state.offset + index : null;
    const movable = !FINISHED.has(item.state);
    const key = JSON.stringify([item.state, all, pos === 0, pos === state.total - 1, movable]);
    if (key === row.actionsKey) return;
    row.actionsKey = key;
    const cell = row.cells.actions;
    const had = cell.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    const buttons = (ACTIONS[item.state] || []).map(([action, label]) =>
      h('button', { type: 'button', 'data-action': action, 'aria-label': `${label} ${name}`, onclick: () => act(item.id, action) }, label));
    if (movable) {
      const move = (action, label, text, disabled) => h('button', {
        type: 'button', class: 'icon', 'data-action': action, 'aria-label': `${label}: ${name}`, title: label, disabled,
        onclick: () => moveTo(item.id, action),
      }, text);
      buttons.push(h('span', { class: 'move', role: 'group', 'aria-label': 'Order' },
        move('top', 'Move to the top of the queue', '⤒', pos === 0),
        all ? move('up', 'Move up', '↑', pos === 0) : null,
        all ? move('down', 'Move down', '↓', pos === state.total - 1) : null,
        move('bottom', 'Move to the end of the queue', '⤓', pos === state.total - 1)));
    }
    fill(cell, buttons);
    if (had) {
      const again = cell.querySelector(`[data-action="${had}"]:not([disabled])`) || cell.querySelector('button:not([disabled])');
      if (again) again.focus();
    }
  }

  async function act(id, action) {
    try {
      if (action === 'remove') {
        await api('DELETE', `/transfers/${id}`);
        soon();
      } else {
        const item = await api('POST', `/transfers/${id}/${action}`);
        if (state.rows.has(id)) update(item);
      }
    } catch (e) {
      notify(`Could not ${action} it: ${e.message}`);
      soon();
    }
  }

  async function moveTo(id, where) {
    const index = state.order.indexOf(id);
    const pos = state.offset + index;
    // "bottom" is past the end of the whole queue (the node puts it last): in a view of
    // one state, the page's total is not the queue's.
    const position = { top: 0, up: pos - 1, down: pos + 1, bottom: 2 ** 31 }[where];
    try {
      await api('POST', `/transfers/${id}/move`, { position: Math.max(0, position) });
      await reload();
    } catch (e) {
      notify(`Could not move it: ${e.message}`);
    }
  }

  // --- controls

  for (const b of document.querySelectorAll('[data-filter]')) {
    b.addEventListener('click', () => {
      state.filter = b.dataset.filter;
      state.offset = 0;
      for (const o of document.querySelectorAll('[data-filter]')) o.setAttribute('aria-pressed', String(o === b));
      // Buttons differ between the whole queue and a state (up/down need queue positions).
      for (const row of state.rows.values()) row.actionsKey = null;
      reload();
    });
  }
  $('transfers-prev').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE);
    reload();
  });
  $('transfers-next').addEventListener('click', () => {
    state.offset += PAGE;
    reload();
  });
  $('remove-finished').addEventListener('click', async () => {
    try {
      const r = await api('POST', '/transfers/remove-finished');
      notify(`Removed ${r.removed} finished transfer${r.removed === 1 ? '' : 's'} from the list (their files stay).`, 'info');
      reload();
    } catch (e) {
      notify(`Could not remove finished transfers: ${e.message}`);
    }
  });
  $('add-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const kind = $('add-kind').value;
    const target = $('add-target').value.trim();
    if (!target) return;
    try {
      await add([{ kind, target }]);
      $('add-target').value = '';
    } catch (e) {
      notify(`Could not add it: ${e.message}`);
    }
  });

  /** Adds items to the queue; their ids. */
  async function add(items) {
    const r = await api('POST', '/transfers', { items });
    soon();
    return r.ids;
  }

  return {
    reload,
    add,
    setCounts(counts) {
      let all = 0;
      for (const [k, n] of Object.entries(counts)) {
        all += n;
        const el = document.querySelector(`[data-count="${k}"]`);
        if (el) fill(el, n ? `(${n})` : '');
      }
      fill(document.querySelector('[data-count="all"]'), all ? `(${all})` : '');
    },
    // Events.
    added: soon,
    removed: soon,
    item(ev) {
      const item = ev.item;
      const row = state.rows.get(item.id);
      const before = row && row.item ? row.item.state : null;
      if (row) update(item);
      // An item entering or leaving the state shown, or moved (its state unchanged): the
      // page changes.
      const fits = !state.filter || state.filter === item.state;
      if (row ? !fits || before === item.state : fits) soon();
    },
    progress(ev) {
      for (const item of ev.items) {
        if (state.rows.has(item.id)) update(item);
      }
    },
  };
}
