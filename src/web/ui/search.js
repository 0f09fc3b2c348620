// The search view: the index's results (and the DHT's, when the node uses it) with their
// paths, sizes, sources and an "already have" mark; download a file, the folder it is in, or
// a selection of files.

import { api, query } from './api.js';
import { $, h, fill, size } from './dom.js';

const PAGE = 50;

/** Folder buttons shown per result, at most. */
const MAX_FOLDERS = 3;

export function createSearch(transfers, notify) {
  const table = $('results');
  const tbody = table.tBodies[0];
  const status = $('search-status');
  const state = { q: '', offset: 0, total: 0, estimated: false, hits: [], selected: new Map(), seq: 0 };

  async function run(more) {
    const seq = ++state.seq;
    if (!more) {
      state.offset = 0;
      state.hits = [];
      state.selected.clear();
      fill(tbody);
      table.hidden = true;
      $('selection-bar').hidden = true;
      $('search-more').hidden = true;
      fill(status, `Searching for “${state.q}”…`);
    }
    let page;
    try {
      page = await api('GET', `/search${query({ q: state.q, offset: state.offset, limit: PAGE })}`);
    } catch (e) {
      if (seq === state.seq) fill(status, `The search failed: ${e.message}`);
      return;
    }
    if (seq !== state.seq) return;
    state.total = page.total;
    state.estimated = page.estimated;
    state.offset += page.results.length;
    for (const hit of page.results) {
      state.hits.push(hit);
      tbody.appendChild(row(hit));
    }
    const n = state.hits.length;
    table.hidden = n === 0;
    $('selection-bar').hidden = n === 0;
    $('search-more').hidden = page.results.length === 0 || n >= state.total;
    fill(status, n === 0
      ? `Nothing found for “${state.q}”.`
      : `${n} of ${state.estimated ? 'about ' : ''}${state.total} result${state.total === 1 ? '' : 's'} for “${state.q}”.`);
    selection();
  }

  function row(hit) {
    const check = h('input', {
      type: 'checkbox', 'aria-label': `Select ${hit.name}`, 'data-id': hit.content_id,
      onchange: () => {
        if (check.checked) state.selected.set(hit.content_id, hit);
        else state.selected.delete(hit.content_id);
        selection();
      },
    });
    const get = h('button', {
      type: 'button', class: 'primary', 'aria-label': `Download ${hit.name}`,
      onclick: async () => {
        get.disabled = true;
        try {
          await transfers.add([fileItem(hit)]);
          fill(get, 'Added');
          fill(status, `Added “${hit.name}” to the queue.`);
        } catch (e) {
          get.disabled = false;
          notify(`Could not add it: ${e.message}`);
        }
      },
    }, 'Download');
    // The folders it is in, as its sources keep it (PEER:FOLDER, what `browse` lists).
    const folders = [];
    for (const s of hit.sources) {
      const slash = s.path ? s.path.lastIndexOf('/') : -1;
      if (!s.peer_id || slash <= 0) continue;
      const target = `${s.peer_id}:${s.path.slice(0, slash)}`;
      if (folders.length < MAX_FOLDERS && !folders.some((f) => f.target === target)) {
        folders.push({ target, folder: s.path.slice(0, slash), peer: s.peer_id });
      }
    }
    const folderButtons = folders.map((f) => {
      const b = h('button', {
        type: 'button', class: 'small', title: `Download the folder ${f.folder} from peer ${f.peer}`,
        'aria-label': `Download the folder ${f.folder} from peer ${f.peer}`,
        onclick: async () => {
          b.disabled = true;
          try {
            await transfers.add([{ kind: 'folder', target: f.target, name: f.folder }]);
            fill(b, 'Folder added');
            fill(status, `Added the folder “${f.folder}” to the queue.`);
          } catch (e) {
            b.disabled = false;
            notify(`Could not add the folder: ${e.message}`);
          }
        },
      }, `Folder ${f.folder.split('/').pop()}/`);
      return b;
    });
    return h('tr', { 'data-id': hit.content_id },
      h('td', { class: 'select', 'data-label': 'Select' }, check),
      h('td', { class: 'name', 'data-label': 'Name' },
        h('div', { class: 'title', title: hit.content_id }, hit.name)),
      h('td', { class: 'num', 'data-label': 'Size', title: `${hit.size} bytes` }, size(hit.size)),
      h('td', { 'data-label': 'Where' },
        hit.paths.length ? h('ul', { class: 'paths' }, hit.paths.map((p) => h('li', { class: 'path' }, p))) : ''),
      h('td', { 'data-label': 'Sources' },
        h('details', null,
          h('summary', null, `${hit.sources.length} source${hit.sources.length === 1 ? '' : 's'}`),
          h('ul', { class: 'sources' }, hit.sources.map((s) => h('li', null,
            h('span', { class: 'addr' }, s.address), ' ',
            h('span', { class: `reached reached-${s.reached}` }, s.reached),
            s.peer_id ? h('span', { class: 'muted' }, ` peer ${s.peer_id}`) : h('span', { class: 'muted' }, ' DHT')))))),
      h('td', { 'data-label': 'Have' }, hit.have ? h('span', { class: 'have', title: 'Downloaded already' }, '✓ have') : ''),
      h('td', { class: 'actions', 'data-label': 'Download' }, get, folderButtons));
  }

  function fileItem(hit) {
    return { kind: 'file', target: hit.content_id, name: hit.name, size: hit.size };
  }

  function selection() {
    const n = state.selected.size;
    const b = $('download-selected');
    b.disabled = n === 0;
    fill(b, n ? `Download ${n} selected` : 'Download selected');
    const all = $('select-all');
    all.checked = n > 0 && n === state.hits.length;
    all.indeterminate = n > 0 && n < state.hits.length;
  }

  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('q').value.trim();
    if (!q) return;
    state.q = q;
    run(false);
  });
  $('search-more').addEventListener('click', () => run(true));
  $('select-all').addEventListener('change', () => {
    const on = $('select-all').checked;
    for (const c of tbody.querySelectorAll('input[type=checkbox]')) c.checked = on;
    state.selected.clear();
    if (on) for (const hit of state.hits) state.selected.set(hit.content_id, hit);
    selection();
  });
  $('download-selected').addEventListener('click', async () => {
    const hits = [...state.selected.values()];
    if (hits.length === 0) return;
    try {
      await transfers.add(hits.map(fileItem));
      fill(status, `Added ${hits.length} file${hits.length === 1 ? '' : 's'} to the queue.`);
      state.selected.clear();
      for (const c of tbody.querySelectorAll('input[type=checkbox]')) c.checked = false;
      selection();
    } catch (e) {
      notify(`Could not add them: ${e.message}`);
    }
  });

  return {
    focus() {
      $('q').focus();
    },
  };
}
