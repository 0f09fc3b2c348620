// The node's other views: the shares (scan and hashing progress, registration, uploads to
// whom, peers sending to us), the settings (rate limits, upload slots, parallel downloads),
// and the peers at the index (the group's members when it is private).

import { api } from './api.js';
import { $, h, fill, size, rate, percent, facts, ago } from './dom.js';

const KIB = 1024;

// --- shares

export function showShare(share) {
  const st = share.status;
  const state = share.error
    ? h('span', { class: 'error' }, `not sharing: ${share.error}`)
    : share.started ? 'serving' : 'scanning (the first scan is not over)';
  facts($('share'), [
    ['Shared directories', h('ul', { class: 'plain' }, share.roots.map((r) => h('li', { class: 'path' }, r)))],
    ['State', state],
    ['Files shared', st ? String(st.files_shared) : null],
    ['Scans', st ? String(st.scans) : null],
    ['Serving on', share.listen],
    ['At the index', st ? registration(st) : null],
    ['Reachable', st ? reachable(st) : null],
    ['Relaying for others', st && st.relaying !== null && st.relaying !== undefined
      ? (st.relaying ? 'yes (--relay): other members\' connections pass through this node, end-to-end encrypted'
        : 'no: the index takes as a relay only a node it can connect to')
      : null],
    ['Announced on the DHT', st && st.dht_announced !== null && st.dht_announced !== undefined ? `${st.dht_announced} keys` : null],
  ]);
  const hs = share.hashing;
  const busy = hs && hs.files_done < hs.files;
  $('hashing').hidden = !hs || (!busy && share.started);
  if (hs) {
    const bar = $('hashing-bar');
    bar.max = Math.max(1, hs.bytes);
    bar.value = Math.min(hs.bytes_done, bar.max);
    const p = percent(hs.bytes_done, hs.bytes);
    fill($('hashing-text'), `${hs.files_done} of ${hs.files} files, ${size(hs.bytes_done)} of ${size(hs.bytes)}${p === null ? '' : ` (${p}%)`}`);
  }
}

// How others reach this node, as the index found (docs/PROTOCOL.md §7.10).
function reachable(st) {
  if (st.reach === 'relay') return 'through a relay (the index cannot connect to this node)';
  if (st.reachable_at) return `at ${st.reachable_at}`;
  return null;
}

function registration(st) {
  if (st.peer_id === null || st.peer_id === undefined) {
    return st.last_error ? h('span', { class: 'error' }, `not registered: ${st.last_error}`) : 'not registered yet';
  }
  return [
    `peer ${st.peer_id}, ${st.files_registered ?? 0} files registered`,
    st.in_sync ? ', up to date' : ', updating',
    st.last_error ? h('span', { class: 'error' }, ` (last error: ${st.last_error})`) : null,
  ];
}

export function showUploads(uploads, senders) {
  const ut = $('uploads');
  $('uploads-empty').hidden = uploads.length > 0;
  ut.hidden = uploads.length === 0;
  fill(ut.tBodies[0], uploads.map((u) => h('tr', null,
    h('td', { class: 'name', 'data-label': 'File' }, u.name),
    h('td', { 'data-label': 'To', class: 'addr' }, u.to),
    h('td', { 'data-label': 'Key', class: 'key', title: u.key }, `${u.key.slice(0, 16)}…`),
    h('td', { 'data-label': 'Sent' },
      h('progress', { max: Math.max(1, u.piece_count), value: u.pieces, 'aria-label': `Sent of ${u.name}` }),
      ` ${size(u.bytes)}, ${u.pieces} of ${u.piece_count} pieces`))));
  const st = $('senders');
  $('senders-empty').hidden = senders.length > 0;
  st.hidden = senders.length === 0;
  fill(st.tBodies[0], senders.map((s) => h('tr', null,
    h('td', { 'data-label': 'Peer' }, s.peer_id ? String(s.peer_id) : 'DHT'),
    h('td', { 'data-label': 'Address', class: 'addr' }, s.address),
    h('td', { 'data-label': 'Reached' }, h('span', { class: `reached reached-${s.reached}` }, s.reached)))));
}

// --- settings

export function createSettings(notify) {
  const form = $('settings-form');
  let editing = false;
  let current = null;
  form.addEventListener('input', () => {
    editing = true;
  });

  function show(s, force) {
    current = s;
    for (const k of ['max_download_rate', 'max_upload_rate']) {
      fill(form.querySelector(`[data-now="${k}"]`), s[k] ? `now ${rate(s[k])}` : 'now no limit');
    }
    if (editing && !force) return;
    form.elements.max_download_rate.value = String(+(s.max_download_rate / KIB).toFixed(3));
    form.elements.max_upload_rate.value = String(+(s.max_upload_rate / KIB).toFixed(3));
    form.elements.upload_slots.value = String(s.upload_slots);
    form.elements.parallel.value = String(s.parallel);
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const e = form.elements;
    // A field left empty (e.g. submitted before the settings were loaded) stays as it is.
    const given = (v, scale) => (v.trim() === '' ? null : Math.round(Number(v) * scale));
    const patch = {
      max_download_rate: given(e.max_download_rate.value, KIB),
      max_upload_rate: given(e.max_upload_rate.value, KIB),
      upload_slots: given(e.upload_slots.value, 1),
      parallel: given(e.parallel.value, 1),
    };
    const msg = $('settings-status');
    const slotsBefore = current ? current.upload_slots : null;
    try {
      const s = await api('PUT', '/settings', patch);
      editing = false;
      show(s, true);
      const slotsChanged = slotsBefore !== null && s.upload_slots !== slotsBefore;
      fill(msg, slotsChanged ? 'Saved. Upload slots change when the node next starts.' : 'Saved.');
    } catch (err) {
      fill(msg, '');
      notify(`The settings were not saved: ${err.message}`);
    }
  });

  return {
    show,
    async load() {
      try {
        show(await api('GET', '/settings'), false);
      } catch (e) {
        notify(`Could not load the settings: ${e.message}`);
      }
    },
  };
}

export function showNodeFacts(status) {
  facts($('node-facts'), [
    ['Downloads go to', h('span', { class: 'path' }, status.output)],
    ['Index', status.index || 'none'],
    ['Private group', status.private ? 'yes (this node is a member)' : 'no'],
    ['DHT', status.dht ? 'on' : 'off'],
  ]);
}

// --- peers and the group

export async function loadGroup() {
  const out = $('group-status');
  const table = $('members');
  fill(out, 'Asking the index…');
  let group;
  let peers;
  try {
    group = await api('GET', '/group');
    peers = group.private ? group.members : await api('GET', '/peers');
  } catch (e) {
    table.hidden = true;
    fill(out, e.status === 409 ? 'This node has no index: there is no list of peers (the DHT has none).' : `The index could not be asked: ${e.message}`);
    return;
  }
  fill(out, group.private
    ? `This index is a private group. ${peers.length} member${peers.length === 1 ? ' is' : 's are'} sharing now:`
    : `The index is open (not a private group). ${peers.length} peer${peers.length === 1 ? ' is' : 's are'} registered:`);
  table.hidden = peers.length === 0;
  fill(table.tBodies[0], peers.map((p) => h('tr', null,
    h('td', { 'data-label': 'Peer' }, String(p.peer_id)),
    h('td', { 'data-label': 'Address', class: 'addr' }, `${p.host}:${p.port}`),
    h('td', { 'data-label': 'Files', class: 'num' }, String(p.files)),
    h('td', { 'data-label': 'Last seen' }, ago(p.last_seen)),
    h('td', { 'data-label': 'Lease' }, p.live ? 'live' : 'ran out'))));
}
