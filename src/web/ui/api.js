// Talking to the node: /api/v1 (JSON; the session cookie is sent by the browser) and its
// server-sent events.

/** A refusal from the node: its status and its one-line message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = { authLost: [] };
let authLost = false;

/** Calls `f` once when the node stops accepting our session (it restarted, or it refused us). */
export function onAuthLost(f) {
  listeners.authLost.push(f);
}

function lost(message) {
  if (authLost) return;
  authLost = true;
  for (const f of listeners.authLost) f(message);
}

/** Whether the session was lost (nothing more is asked then: each try would count as a failed login). */
export function isAuthLost() {
  return authLost;
}

/** `method` on /api/v1`path` with an optional JSON body; the JSON answer (null for 204). */
export async function api(method, path, body) {
  if (authLost) throw new ApiError(401, 'not logged in');
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, 'the node does not answer (is it running?)');
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  const message = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status}`;
  if (res.status === 401 || res.status === 429) {
    lost(res.status === 429 ? message : 'the node does not know this session (did it restart?)');
  }
  if (!res.ok) throw new ApiError(res.status, message);
  return data;
}

/** `?a=1&b=x` from an object (empty and null values left out). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

const EVENT_TYPES = ['ready', 'added', 'item', 'removed', 'progress', 'share', 'settings', 'lagged'];

/**
 * Follows the node's events: `handlers[type](data)` for each, `onState('live' | 'reconnecting'
 * | 'closed')` as the connection changes. `ready` comes on every (re)connection: what was
 * missed meanwhile must be reloaded then. Reconnects (with a growing pause, at most 15 s)
 * until the session is lost.
 */
export function follow(handlers, onState) {
  let source = null;
  let pause = 1000;
  let timer = null;
  const open = () => {
    timer = null;
    if (authLost) return;
    source = new EventSource('/api/v1/events');
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        if (type === 'ready') {
          pause = 1000;
          onState('live');
        }
        const f = handlers[type];
        if (f) f(data);
      });
    }
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        onState('reconnecting');
        return;
      }
      // Closed for good (an error status, e.g. 401): find out why before trying again.
      source.close();
      onState('reconnecting');
      api('GET', '/settings').then(
        () => schedule(),
        (e) => (e.status === 401 || e.status === 429 ? onState('closed') : schedule()),
      );
    };
  };
  const schedule = () => {
    if (timer || authLost) return;
    timer = setTimeout(open, pause);
    pause = Math.min(pause * 2, 15000);
  };
  open();
  onAuthLost(() => {
    if (source) source.close();
    onState('closed');
  });
}
