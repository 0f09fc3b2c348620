// The web UI's entry: views behind the links in the header (#transfers first, as the page
// opens), messages, the node's summary, and the live connection that keeps it all current.

import { api, follow, onAuthLost } from './api.js';
import { $, h, fill, rate } from './dom.js';
import { createTransfers } from './transfers.js';
import { createSearch } from './search.js';
import { createSettings, loadGroup, showNodeFacts, showShare, showUploads } from './node.js';

const VIEWS = ['transfers', 'search', 'shares', 'settings', 'group'];

// How often the node's status is asked for: often while the shares view (uploads) shows.
const STATUS_FAST = 2000;
const STATUS_SLOW = 15000;

let noticeTimer = null;

/** Shows a message: an error stays until dismissed, information goes after a while. */
function notify(message, kind = 'error') {
  const box = $('notice');
  fill($('notice-text'), message);
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === 'info') noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

$('notice-close').addEventListener('click', () => {
  $('notice').hidden = true;
});

const transfers = createTransfers(notify);
const search = createSearch(transfers, notify);
const settings = createSettings(notify);
let view = 'transfers';

function currentView() {
  const v = location.hash.slice(1);
  return VIEWS.includes(v) ? v : 'transfers';
}

function show(next, byUser) {
  view = next;
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== next;
    const link = document.querySelector(`nav a[data-view="${v}"]`);
    if (v === next) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (next === 'settings') settings.load();
  if (next === 'group') loadGroup();
  if (next === 'shares' || next === 'settings') refreshStatus();
  if (byUser) {
    if (next === 'search') search.focus();
    else $(`h-${next}`).focus();
  }
  schedule();
}

window.addEventListener('hashchange', () => show(currentView(), true));
$('group-refresh').addEventListener('click', () => loadGroup());

// --- the node's status

let statusTimer = null;
let statusBusy = false;

async function refreshStatus() {
  if (statusBusy) return;
  statusBusy = true;
  try {
    const s = await api('GET', '/status');
    summary(s);
    transfers.setCounts(s.queue);
    showShare(s.share);
    showUploads(s.uploads, s.peers);
    showNodeFacts(s);
  } catch (e) {
    if (e.status !== 401 && e.status !== 429) notify(`Could not get the node's status: ${e.message}`);
  } finally {
    statusBusy = false;
  }
}

/** Asks for the status again after a while (sooner while the shares view shows). */
function schedule() {
  clearTimeout(statusTimer);
  if (document.hidden) return;
  statusTimer = setTimeout(async () => {
    await refreshStatus();
    schedule();
  }, view === 'shares' ? STATUS_FAST : STATUS_SLOW);
}

let soonTimer = null;

/** The status again soon (after a change), once for a burst of events. */
function statusSoon() {
  if (soonTimer) return;
  soonTimer = setTimeout(() => {
    soonTimer = null;
    refreshStatus();
  }, 500);
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refreshStatus();
  schedule();
});

function summary(s) {
  const q = s.queue;
  const parts = [];
  if (q.running) parts.push(`${q.running} running`);
  if (q.queued) parts.push(`${q.queued} queued`);
  if (q.paused) parts.push(`${q.paused} paused`);
  if (q.failed) parts.push(`${q.failed} failed`);
  parts.push(`${q.done} done`);
  const down = s.transfers.reduce((sum, t) => sum + (t.rate || 0), 0);
  if (down) parts.push(`↓ ${rate(down)}`);
  fill($('summary'),
    parts.join(' · '),
    h('span', { class: 'muted' },
      ` · index ${s.index || 'none'}${s.private ? ' (private group)' : ''} · DHT ${s.dht ? 'on' : 'off'}`),
    s.share.status ? h('span', { class: 'muted' }, ` · sharing ${s.share.status.files_shared} file${s.share.status.files_shared === 1 ? "" : "s"}`) : null);
  fill($('nav-active'), q.running ? String(q.running) : '');
}

// --- live

function connection(state) {
  const el = $('connection');
  el.dataset.state = state;
  fill(el, { live: 'live', reconnecting: 'reconnecting…', closed: 'disconnected' }[state] || state);
}

onAuthLost((why) => {
  notify(`Logged out: ${why}. Log in again with the node's token.`);
  $('notice-login').hidden = false;
});

function reloadAll() {
  transfers.reload();
  refreshStatus();
  if (view === 'settings') settings.load();
}

follow({
  // On every (re)connection: what changed meanwhile was not seen.
  ready: reloadAll,
  lagged: reloadAll,
  added: () => {
    transfers.added();
    statusSoon();
  },
  removed: () => {
    transfers.removed();
    statusSoon();
  },
  item: (ev) => {
    transfers.item(ev);
    statusSoon();
  },
  progress: (ev) => transfers.progress(ev),
  share: (ev) => showShare(ev.share),
  settings: (ev) => settings.show(ev.settings, false),
}, connection);

show(currentView(), false);
