// Browser end-to-end check of the dashboard of a running `palisade up` (run by
// tests/dashboard_browser.rs, which has already sent demo traffic through the gateway).
//
// Playwright (playwright-core from $PALISADE_TEST_NODE_DIR) drives the system chromium headless:
// sign in through our IdP as the admin (authorization code + PKCE), see the demo services and the
// orders -> payments mTLS edge in the graph, see live events, run a brute force against the gateway
// while the page stays open and see the alert arrive through the event stream (no reload, no
// polling: the Events view does not poll), acknowledge it, and save screenshots.
//
// Environment: PALISADE_TEST_NODE_DIR, PALISADE_TEST_CHROMIUM, DASHBOARD_BASE (the issuer URL),
// GATEWAY (http://127.0.0.1:8080), ADMIN_USER, ADMIN_PASSWORD, SCREENSHOT (alerts view, PNG),
// SCREENSHOT_GRAPH (graph view, PNG). The last stdout line is a JSON summary for the Rust test.

import { createRequire } from 'node:module';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const require = createRequire(join(need('PALISADE_TEST_NODE_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const BASE = need('DASHBOARD_BASE');
const GATEWAY = need('GATEWAY');
const TIMEOUT = 20_000;

const log = (...a) => console.error('[dashboard.mjs]', ...a);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A well-formed access token with the right issuer and audience, signed by nobody we know. */
function forgedToken() {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'ES256', typ: 'at+jwt', kid: 'forged' };
  const claims = {
    iss: BASE, sub: 'admin', aud: 'orders', client_id: 'palisade-demo', iat: now, exp: now + 300, scope: 'orders:read',
  };
  return `${b64url(header)}.${b64url(claims)}.${randomBytes(64).toString('base64url')}`;
}

const browser = await chromium.launch({
  executablePath: need('PALISADE_TEST_CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const errors = [];
let summary;
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console error: ${m.text()}`);
  });

  // ------------------------------------------------------------ sign in through the IdP
  log('open /ui');
  await page.goto(`${BASE}/ui`);
  await page.waitForURL(`${BASE}/ui/login`);
  await page.click('#oidc-login');
  await page.waitForURL((u) => u.pathname === '/oauth2/authorize');
  check(new URL(page.url()).searchParams.get('code_challenge_method') === 'S256', `PKCE S256 in ${page.url()}`);
  await page.fill('#username', need('ADMIN_USER'));
  await page.fill('#password', need('ADMIN_PASSWORD'));
  await page.click('button[name="action"][value="login"]');
  // A consent page, if the client asks for one.
  const allow = page.locator('button[name="action"][value="allow"]');
  await page.locator('#whoami').or(allow).first().waitFor();
  if (await allow.count()) await allow.click();
  await page.waitForURL((u) => u.pathname === '/ui' || u.pathname === '/ui/');
  const who = (await page.textContent('#whoami')).trim();
  check(who.includes(need('ADMIN_USER')), `signed in as the admin: ${who}`);
  // Set once on this document: still there at the end means nothing reloaded the page.
  await page.evaluate(() => { window.__palisadeNoReload = true; });

  // ------------------------------------------------------------ graph
  log('graph');
  await page.click('#tabs a[data-tab="graph"]');
  for (const id of ['clients', 'demo/gateway', 'demo/orders', 'demo/payments']) {
    await page.waitForSelector(`#graph svg g.node[data-id="${id}"]`, { state: 'visible' });
  }
  const between = '[data-from="demo/orders"][data-to="demo/payments"]';
  const edge = `#graph svg g.edge${between}`;
  // attached, not visible: a horizontal path has an empty bounding box
  await page.waitForSelector(edge, { state: 'attached' });
  check((await page.getAttribute(edge, 'data-mtls')) === 'true', 'orders -> payments is mTLS');
  const label = await page.textContent(`#graph svg g.edge-label${between} text`);
  check(/^\d+ req · 0 denied · mTLS$/.test(label) && !label.startsWith('0 '), `orders -> payments label: ${label}`);
  // gateway -> payments is not an edge of the mesh policy: that request was denied.
  const denied = '#graph svg g.edge[data-from="demo/gateway"][data-to="demo/payments"]';
  await page.waitForSelector(denied, { state: 'attached' });
  check((await page.getAttribute(denied, 'class')).includes('has-denies'), 'gateway -> payments shows denies');
  const nodes = await page.$$eval('#graph svg g.node', (els) => els.map((e) => e.dataset.id).sort());
  const edges = await page.$$eval('#graph svg g.edge', (els) =>
    els.map((e) => `${e.dataset.from} -> ${e.dataset.to}${e.dataset.mtls === 'true' ? ' mTLS' : ''}`).sort());
  // Readable: no edge label covers a box, no edge runs through a box it does not connect.
  const overlaps = await page.evaluate(() => {
    const boxes = [...document.querySelectorAll('#graph svg g.node')]
      .map((g) => [g.dataset.id, g.querySelector('rect').getBoundingClientRect()]);
    const inside = (r, x, y) => x > r.left + 1 && x < r.right - 1 && y > r.top + 1 && y < r.bottom - 1;
    const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const found = [];
    for (const l of document.querySelectorAll('#graph svg g.edge-label')) {
      const r = l.querySelector('rect').getBoundingClientRect();
      for (const [id, b] of boxes) {
        if (meet(r, b)) found.push(`label of ${l.dataset.from} -> ${l.dataset.to} covers ${id}`);
      }
    }
    for (const e of document.querySelectorAll('#graph svg g.edge')) {
      const path = e.querySelector('path');
      const m = path.getScreenCTM();
      const len = path.getTotalLength();
      for (const [id, b] of boxes) {
        if (id === e.dataset.from || id === e.dataset.to) continue;
        for (let i = 0; i <= 100; i++) {
          const p = path.getPointAtLength((len * i) / 100).matrixTransform(m);
          if (inside(b, p.x, p.y)) { found.push(`${e.dataset.from} -> ${e.dataset.to} runs through ${id}`); break; }
        }
      }
    }
    return found;
  });
  check(overlaps.length === 0, `graph layout: ${overlaps.join('; ')}`);
  await page.screenshot({ path: need('SCREENSHOT_GRAPH'), fullPage: true });

  // ------------------------------------------------------------ live events
  log('events');
  await page.click('#tabs a[data-tab="events"]');
  await page.waitForSelector('#events li[data-decision="deny"]', { state: 'visible' });
  await page.waitForSelector('#conn-status.ok');
  const before = new Set(await page.$$eval('#events li[data-id]', (els) => els.map((e) => e.dataset.id)));

  // ------------------------------------------------------------ brute force, page open
  log('brute force: 25 requests with a forged bearer token');
  const statuses = [];
  const token = forgedToken();
  for (let i = 0; i < 25; i++) {
    const r = await fetch(`${GATEWAY}/orders`, { headers: { Authorization: `Bearer ${token}` } });
    await r.arrayBuffer();
    statuses.push(r.status);
  }
  check(statuses.every((s) => s === 401), `every forged request gets 401: ${statuses}`);

  // The denies arrive live in the event list (the Events view does not poll).
  await page.waitForFunction((known) => {
    const fresh = [...document.querySelectorAll('#events li[data-decision="deny"][data-source="gateway"]')]
      .filter((li) => !known.includes(li.dataset.id));
    return fresh.length >= 20;
  }, [...before], { timeout: TIMEOUT });
  const liveDenies = await page.$$eval('#events li[data-decision="deny"]', (els, known) =>
    els.filter((e) => !known.includes(e.dataset.id)).length, [...before]);

  // The alert arrives through the stream while the Events view is shown.
  const alertSel = '#alerts li[data-kind="brute_force"]';
  await page.waitForSelector(alertSel, { state: 'attached' });
  await page.waitForSelector('#alert-badge:not([hidden])');
  const badge = (await page.textContent('#alert-badge')).trim();

  // ------------------------------------------------------------ acknowledge
  log('alerts');
  await page.click('#tabs a[data-tab="alerts"]');
  await page.waitForSelector(`${alertSel} button.ack`, { state: 'visible' });
  const alert = await page.$eval(alertSel, (li) => ({
    id: li.dataset.id,
    severity: li.dataset.severity,
    summary: li.querySelector('.summary').textContent,
  }));
  await page.click(`${alertSel} button.ack`);
  await page.waitForSelector(`${alertSel}[data-acked="true"] .acked`);
  const acked = (await page.textContent(`${alertSel} .acked`)).trim();
  check(acked.startsWith(`Acknowledged by ${need('ADMIN_USER')}`), `acknowledged: ${acked}`);
  await page.waitForSelector('#alert-badge', { state: 'hidden' });
  check(await page.evaluate(() => window.__palisadeNoReload === true), 'the page was never reloaded');
  await page.screenshot({ path: need('SCREENSHOT'), fullPage: true });

  check(errors.length === 0, `no errors in the page: ${errors.join('; ')}`);
  summary = { nodes, edges, edge_label: label, live_denies: liveDenies, badge, alert, acked };
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
