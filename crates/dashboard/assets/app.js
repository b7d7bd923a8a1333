// Palisade dashboard shell: hash-routed views, polling, one EventSource for audit events and
// alerts. State-changing calls send the per-session CSRF token from the <meta> tag.

import { h, clear, fmtTime, isoTime, str } from './dom.js';
import { renderGraph } from './graph.js';

const VIEWS = ['graph', 'events', 'alerts', 'certs', 'policies', 'top-denied'];
const csrf = document.querySelector('meta[name="palisade-csrf"]')?.getAttribute('content') || '';
const MAX_EVENTS = 200;
const POLL_MS = 5000;

const $ = (id) => document.getElementById(id);

class SignedOut extends Error {}

async function api(path, opts = {}) {
  const r = await fetch('/ui/api/' + path, {
    credentials: 'same-origin',
    ...opts,
    headers: { Accept: 'application/json', ...(opts.headers || {}) },
  });
  if (r.status === 401) {
    window.location.assign('/ui/login');
    throw new SignedOut('signed out');
  }
  if (r.status === 204) {
    await r.arrayBuffer(); // consume the empty body, so the request is not reported as aborted
    return null;
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.error_description) || `HTTP ${r.status}`);
  return body;
}

function status(text, cls) {
  const el = $('conn-status');
  el.textContent = text;
  el.className = 'conn ' + (cls || '');
}

// ---------------------------------------------------------------- routing

let current = null;

function currentView() {
  const v = window.location.hash.replace(/^#/, '');
  return VIEWS.includes(v) ? v : 'graph';
}

function show(view, moveFocus) {
  current = view;
  for (const v of VIEWS) $(v).hidden = v !== view;
  for (const a of document.querySelectorAll('#tabs a')) {
    if (a.dataset.tab === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (moveFocus) $(view + '-h').focus();
  refresh(view);
}

// ---------------------------------------------------------------- views

async function loadGraph() {
  renderGraph($('graph-canvas'), $('edge-table'), await api('graph'));
}

function eventItem(ev) {
  const decision = str(ev.decision).toLowerCase();
  const what = [str(ev.method), str(ev.path)].filter(Boolean).join(' ');
  const t = isoTime(ev.time);
  return h('li', { class: `event ${decision}`, 'data-id': str(ev.id), 'data-decision': decision, 'data-source': str(ev.source) },
    h('span', { class: `decision ${decision}` }, decision ? decision.toUpperCase() : '?'),
    ' ',
    t ? h('time', { datetime: t }, fmtTime(ev.time)) : h('span', {}, str(ev.time)),
    ' ',
    h('span', { class: 'principal', title: 'principal' }, str(ev.principal) || 'anonymous'),
    ' ',
    h('code', { class: 'request' }, what || str(ev.route)),
    ev.status !== undefined && ev.status !== null ? h('span', { class: 'status' }, ` → ${ev.status}`) : null,
    h('span', { class: 'meta' },
      ` ${[str(ev.source), str(ev.service), str(ev.stage), str(ev.reason), str(ev.client_ip)].filter(Boolean).join(' · ')}`));
}

function filterParams() {
  const form = $('event-filters');
  const p = new URLSearchParams();
  for (const name of ['decision', 'principal', 'source']) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  return p;
}

async function loadEvents() {
  const p = filterParams();
  p.set('limit', '100');
  const list = await api('events?' + p.toString());
  const ol = clear($('event-list'));
  for (const ev of list) ol.append(eventItem(ev));
  if (list.length === 0) ol.append(h('li', { class: 'empty', 'data-empty': '' }, 'No events match.'));
}

let paused = false;
let held = [];

function addEvent(ev) {
  if (paused) {
    held.push(ev);
    const note = $('events-held');
    note.hidden = false;
    note.textContent = `${held.length} new event${held.length === 1 ? '' : 's'} held while paused.`;
    return;
  }
  const ol = $('event-list');
  ol.querySelector('li[data-empty]')?.remove();
  ol.prepend(eventItem(ev));
  while (ol.children.length > MAX_EVENTS) ol.lastElementChild.remove();
}

function togglePause() {
  paused = !paused;
  const b = $('events-pause');
  b.setAttribute('aria-pressed', String(paused));
  b.textContent = paused ? 'Resume' : 'Pause';
  if (!paused) {
    const pending = held;
    held = [];
    $('events-held').hidden = true;
    for (const ev of pending) addEvent(ev);
  }
}

const alerts = new Map();

function alertItem(a) {
  const sev = str(a.severity).toLowerCase() || 'info';
  const acked = !!a.acked_by;
  const id = str(a.id);
  const button = acked
    ? h('span', { class: 'acked' }, `Acknowledged by ${str(a.acked_by)}${a.acked_at ? ' at ' + fmtTime(a.acked_at) : ''}`)
    : h('button', { type: 'button', class: 'ack', 'data-testid': `ack-${id}`, 'data-id': id,
        'aria-label': `Acknowledge: ${str(a.summary)}` }, 'Acknowledge');
  return h('li', { class: `alert sev-${sev}${acked ? ' is-acked' : ''}`, 'data-id': id, 'data-kind': str(a.kind),
    'data-severity': sev, 'data-acked': String(acked) },
  h('span', { class: `severity sev-${sev}` }, sev.toUpperCase()),
  ' ',
  h('strong', { class: 'summary' }, str(a.summary) || str(a.kind)),
  ' ',
  h('span', { class: 'count', title: 'occurrences' }, `×${a.count ?? 1}`),
  ' ',
  h('span', { class: 'meta' }, `${str(a.kind)} · last seen ${fmtTime(a.last_seen)}`),
  ' ',
  button);
}

function renderAlerts() {
  const ul = clear($('alert-list'));
  const when = (v) => (typeof v === 'number' ? v : Date.parse(v) || 0);
  const list = [...alerts.values()].sort((x, y) =>
    Number(!!x.acked_by) - Number(!!y.acked_by) || when(y.last_seen) - when(x.last_seen));
  for (const a of list) ul.append(alertItem(a));
  if (list.length === 0) ul.append(h('li', { class: 'empty', 'data-empty': '' }, 'No alerts.'));
  const open = list.filter((a) => !a.acked_by).length;
  const badge = $('alert-badge');
  badge.hidden = open === 0;
  badge.textContent = open ? `${open} open` : '';
}

async function loadAlerts() {
  const list = await api('alerts');
  alerts.clear();
  for (const a of list) alerts.set(str(a.id), a);
  renderAlerts();
}

async function ack(id, button) {
  button.disabled = true;
  try {
    await api(`alerts/${encodeURIComponent(id)}/ack`, { method: 'POST', headers: { 'X-Palisade-CSRF': csrf } });
    $('alert-announce').textContent = 'Alert acknowledged.';
    await loadAlerts();
  } catch (e) {
    if (!(e instanceof SignedOut)) {
      button.disabled = false;
      $('alert-announce').textContent = `Acknowledging failed: ${e.message}`;
    }
  }
}

const DAY = 86400;

async function loadCerts() {
  const list = await api('certs');
  const tbody = clear($('cert-table').tBodies[0]);
  list.sort((a, b) => a.seconds_left - b.seconds_left);
  for (const c of list) {
    const days = Math.floor(c.seconds_left / DAY);
    const state = c.seconds_left <= 0 ? 'expired' : c.seconds_left < 7 * DAY ? 'critical' : c.seconds_left < 30 * DAY ? 'warning' : 'ok';
    const label = { expired: 'Expired', critical: 'Expires within 7 days', warning: 'Expires within 30 days', ok: 'OK' }[state];
    const t = isoTime(c.not_after);
    tbody.append(h('tr', { class: `cert ${state}`, 'data-name': c.name, 'data-state': state },
      h('th', { scope: 'row' }, c.name), h('td', {}, c.kind), h('td', {}, h('code', {}, c.subject)),
      h('td', {}, t ? h('time', { datetime: t }, fmtTime(c.not_after)) : c.not_after),
      h('td', { class: 'num days-left' }, String(days)),
      h('td', {}, h('span', { class: `cert-state ${state}` }, label))));
  }
  if (list.length === 0) tbody.append(h('tr', {}, h('td', { colspan: '6' }, 'No certificates.')));
}

async function loadPolicies() {
  const list = await api('policies');
  const box = clear($('policy-list'));
  for (const p of list) {
    const hid = `policy-h-${box.children.length}`;
    box.append(h('article', { class: 'policy', 'data-id': p.id, 'aria-labelledby': hid },
      h('h3', { id: hid }, p.id), h('p', { class: 'meta' }, `Source: ${p.source}`),
      h('pre', { tabindex: '0', 'aria-label': `Policy text of ${p.id}` }, h('code', {}, p.text))));
  }
  if (list.length === 0) box.append(h('p', { class: 'empty' }, 'No policies.'));
}

async function loadTopDenied() {
  const list = await api('top-denied?limit=20');
  const tbody = clear($('top-denied-table').tBodies[0]);
  const max = Math.max(1, ...list.map((r) => r.denies));
  for (const r of list) {
    const bar = h('span', { class: 'bar', 'aria-hidden': 'true' });
    bar.style.width = `${Math.round((r.denies / max) * 100)}%`;
    tbody.append(h('tr', { 'data-principal': r.principal },
      h('th', { scope: 'row' }, r.principal), h('td', { class: 'num' }, String(r.denies)), h('td', { class: 'bar-cell' }, bar)));
  }
  if (list.length === 0) tbody.append(h('tr', {}, h('td', { colspan: '3' }, 'No denied requests.')));
}

const LOADERS = {
  graph: loadGraph, events: loadEvents, alerts: loadAlerts, certs: loadCerts, policies: loadPolicies, 'top-denied': loadTopDenied,
};

async function refresh(view) {
  try {
    await LOADERS[view]();
  } catch (e) {
    if (!(e instanceof SignedOut)) status(`Could not load ${view}: ${e.message}`, 'error');
  }
}

// ---------------------------------------------------------------- live stream

let source = null;
let graphTimer = null;

function scheduleGraph() {
  if (current !== 'graph' || graphTimer) return;
  graphTimer = setTimeout(() => { graphTimer = null; refresh('graph'); }, 1000);
}

function connect() {
  if (source) source.close();
  const p = filterParams();
  source = new EventSource('/ui/api/events/stream' + (p.toString() ? '?' + p.toString() : ''));
  source.addEventListener('open', () => status('Live: connected to the event stream.', 'ok'));
  source.addEventListener('audit', (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    addEvent(ev);
    scheduleGraph();
  });
  source.addEventListener('alert', (m) => {
    let a;
    try { a = JSON.parse(m.data); } catch { return; }
    const isNew = !alerts.has(str(a.id));
    alerts.set(str(a.id), a);
    renderAlerts();
    if (isNew) $('alert-announce').textContent = `New ${str(a.severity)} alert: ${str(a.summary)}`;
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      status('Live stream closed; checking the session…', 'error');
      // A 401 here redirects to the login page; otherwise try again shortly.
      api('alerts').then(() => setTimeout(connect, 3000)).catch(() => {});
    } else {
      status('Live stream interrupted; reconnecting…', 'error');
    }
  });
}

// ---------------------------------------------------------------- start

function start() {
  $('event-filters').addEventListener('submit', (e) => {
    e.preventDefault();
    refresh('events');
    connect();
  });
  $('events-pause').addEventListener('click', togglePause);
  $('alert-list').addEventListener('click', (e) => {
    const b = e.target.closest('button.ack');
    if (b) ack(b.dataset.id, b);
  });
  window.addEventListener('hashchange', () => show(currentView(), true));
  show(currentView(), false);
  if (current !== 'alerts') refresh('alerts');
  connect();
  setInterval(() => {
    if (document.visibilityState === 'visible' && current !== 'events') refresh(current);
  }, POLL_MS);
}

start();
