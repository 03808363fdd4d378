// Drives heal's dashboard in headless Chromium, as an operator would, against
// a real `heal serve` and a real `heal agent` that tests/it/dashboard.rs
// started. Alerts are fired through the API; everything a person does goes
// through the pages. Prints "ok - ..." per step; exits 1 with the reason on
// the first failure. Writes a screenshot of every page at desktop (1280) and
// phone (390) widths into HEAL_SHOTS.
//
// Environment: HEAL_URL, HEAL_ADMIN_TOKEN, HEAL_READ_TOKEN, HEAL_SHOTS,
// HEAL_USER_DATA (a fresh directory), HEAL_CHROMIUM (default /usr/bin/chromium).

import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = need('HEAL_URL');
const adminToken = need('HEAL_ADMIN_TOKEN');
const readToken = need('HEAL_READ_TOKEN');
const shots = need('HEAL_SHOTS');
const userData = need('HEAL_USER_DATA');
const executablePath = process.env.HEAL_CHROMIUM || '/usr/bin/chromium';

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
}

function ok(what) {
  console.log(`ok - ${what}`);
}

function check(cond, what) {
  if (!cond) {
    throw new Error(what);
  }
}

async function api(method, path, body, token = adminToken) {
  const r = await fetch(base + path, {
    method,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) {
    throw new Error(`${method} ${path}: ${r.status} ${text}`);
  }
  return JSON.parse(text);
}

async function fire(name, labels, annotations = {}) {
  const answer = await api('POST', '/api/v1/alerts', { name, labels, annotations });
  return answer.alerts[0].decisions[0];
}

// Polls `fn` (bounded in time) until it returns a truthy value.
async function until(what, fn, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) {
      return v;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

// The state badge in the page's heading, read at once: the page's <main> is
// swapped in place while it refreshes, so no element is waited for.
async function headingState(page) {
  return page.evaluate(() => {
    const badge = document.querySelector('h1 .badge');
    return badge ? badge.textContent.trim() : '';
  });
}

// A long page (the API reference) is shot as the window shows it.
async function shoot(page, name, fullPage = true) {
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: `${shots}/${name}-${size}.png`, fullPage });
  }
  await page.setViewportSize(DESKTOP);
}

async function login(page, token) {
  await page.goto(`${base}/login`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login')), page.click('button[type=submit]')]);
}

async function logout(page) {
  await Promise.all([page.waitForURL((u) => u.pathname === '/login'), page.click('form[action="/logout"] button')]);
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const context = await chromium.launchPersistentContext(userData, {
    executablePath,
    headless: true,
    viewport: DESKTOP,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  try {
    await scenario(page);
    check(problems.length === 0, `the browser reported: ${problems.join('; ')}`);
    ok('no script error and no Content-Security-Policy violation');
  } finally {
    await context.close();
  }
}

async function scenario(page) {
  // Logging in.
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === '/login', `/ without a session goes to the login form, got ${page.url()}`);
  await shoot(page, 'login');
  await page.fill('#token', 'not-a-token-at-all-0123456789');
  await page.click('button[type=submit]');
  const refused = await page.locator('.error').textContent();
  check(/not valid/.test(refused), `a wrong token is refused with a clear message: ${refused}`);
  ok('a wrong token is refused: ' + refused.trim());
  await login(page, adminToken);
  check((await page.locator('.who').textContent()).includes('admin-token'), 'the header names who is logged in');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'heal_session');
  check(session && session.httpOnly && session.sameSite === 'Strict' && session.path === '/', `the session cookie is HttpOnly, SameSite=Strict, Path=/: ${JSON.stringify(session)}`);
  ok('logged in with an admin token');

  // A fired alert becomes a succeeded event, its output growing while it runs.
  const d = await fire('DiskFull', { instance: 'web-1', severity: 'critical' }, { summary: 'disk / is 97% full' });
  check(d.outcome === 'run', `DiskFull runs: ${JSON.stringify(d)}`);
  const eventId = d.event_id;
  await page.goto(`${base}/events/${eventId}`);
  const seen = [];
  await until('the event to succeed', async () => {
    const text = await page.evaluate(() => {
      const live = document.querySelector('pre[id^="live-"]');
      return live ? live.textContent : '';
    });
    if (text.includes('cleaned chunk') && seen[seen.length - 1] !== text) {
      seen.push(text);
    }
    return (await headingState(page)) === 'succeeded';
  }, 90000);
  check(seen.length >= 2 && seen[seen.length - 1].length > seen[0].length, `the running op's output grew in place: ${JSON.stringify(seen)}`);
  ok(`the running op's output grew while it ran (${seen.length} sightings)`);
  const output = await page.locator('pre[id^="out-"]').first().textContent();
  check(output.includes('cleaned chunk 8'), `the finished step's output is shown: ${output}`);
  check((await page.locator('table.steps').textContent()).includes('exit 0'), 'the exit code is shown');
  check((await page.locator('#decided').locator('..').textContent()).includes('run'), 'the decision is shown');
  ok(`event ${eventId} succeeded with its output and exit code`);
  await shoot(page, 'event');

  // Approving a pending event runs it.
  const pending = await fire('NeedsApproval', { instance: 'web-1' });
  check(pending.outcome === 'await-approval', JSON.stringify(pending));
  await page.goto(`${base}/`);
  check((await page.locator('#waiting').count()) === 1, 'the overview lists what waits for a person');
  await Promise.all([
    page.waitForURL((u) => u.pathname === `/events/${pending.event_id}`),
    page.click(`form[action="/events/${pending.event_id}/approve"] button`),
  ]);
  check((await page.locator('.notice').textContent()).includes('Approved'), 'approving says so');
  await until('the approved event to succeed', async () => (await headingState(page)) === 'succeeded', 90000);
  ok(`approved event ${pending.event_id} from the overview and saw it run`);

  // Pausing a runbook: the next alert is recorded as paused.
  await page.goto(`${base}/pauses`);
  await page.selectOption('select[name=runbook]', 'restart');
  await page.fill('form[action="/pauses"] input[name=reason]', 'deploying web, hands off');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'paused'), page.click('form[action="/pauses"] button[type=submit]')]);
  check((await page.locator('table').textContent()).includes('runbook restart'), 'the pause is listed');
  ok('paused runbook restart');
  const paused = await fire('ServiceDown', { instance: 'web-1', service: 'web' });
  check(paused.outcome === 'paused', `the next alert is paused: ${JSON.stringify(paused)}`);
  await page.goto(`${base}/`);
  const row = page.locator('#decisions ~ table tr', { hasText: 'ServiceDown' }).first();
  check((await row.textContent()).includes('paused') && (await row.textContent()).includes('deploying web'), `the overview shows the alert recorded as paused: ${await row.textContent()}`);
  ok('the next ServiceDown alert is recorded as paused, with the pause\'s reason');
  await page.goto(`${base}/pauses`);
  await shoot(page, 'pauses');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'resumed'), page.click('form[action$="/resume"] button')]);
  ok('resumed the pause');

  // A tripped breaker is reset from the overview.
  await api('POST', '/api/v1/breaker/trip', { reason: 'bad deploy, stop everything' });
  await page.goto(`${base}/`);
  const card = page.locator('.card', { hasText: 'Safety breaker' });
  check((await card.textContent()).includes('bad deploy'), 'the overview shows the open breaker and why');
  await shoot(page, 'overview-breaker-open');
  await card.locator('input[name=reason]').fill('deploy rolled back');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'reset'), card.locator('button').click()]);
  check((await page.locator('.card', { hasText: 'Safety breaker' }).locator('.badge').first().textContent()).trim() === 'closed', 'the breaker shows closed');
  const breaker = await api('GET', '/api/v1/breaker');
  check(breaker.state === 'closed' && breaker.reason.includes('deploy rolled back'), JSON.stringify(breaker));
  ok('reset the tripped breaker');

  // A runbook run by hand, and a run cancelled.
  await page.goto(`${base}/runbooks`);
  const form = page.locator('#runbook-restart form');
  await form.locator('input[name=target]').fill('web-1');
  await form.locator('input[name=reason]').fill('restart after the config change');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'started'), form.locator('button').click()]);
  await until('the run by hand to succeed', async () => (await headingState(page)) === 'succeeded', 90000);
  check((await page.locator('.facts').first().textContent()).includes('manual'), 'a run by hand has rule manual');
  ok('ran runbook restart by hand on web-1');
  const slow = await api('POST', '/api/v1/runs', { runbook: 'slow', target: 'web-1', reason: 'to cancel' });
  await page.goto(`${base}/events/${slow.event.id}`);
  await page.fill(`form[action="/events/${slow.event.id}/cancel"] input[name=reason]`, 'wrong host');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'cancelled'), page.click(`form[action="/events/${slow.event.id}/cancel"] button`)]);
  check((await headingState(page)) === 'cancelled', 'the event is cancelled');
  ok('cancelled a running event');

  // Alert data is shown as text, never as markup.
  const hostile = {
    instance: '<script>window.__pwned = 1</script>',
    quote: `"'&<b>bold</b>`,
  };
  const evil = await fire('Hostile', hostile, { summary: '<img src=x onerror="window.__pwned = 2">' });
  check(evil.event_id, `the hostile alert makes an event: ${JSON.stringify(evil)}`);
  for (const path of ['/', `/events/${evil.event_id}`, '/events']) {
    await page.goto(`${base}${path}`);
    const report = await page.evaluate(() => ({
      pwned: window.__pwned === undefined ? null : window.__pwned,
      scripts: Array.from(document.scripts).map((s) => s.getAttribute('src')),
      imgs: document.querySelectorAll('main img').length,
      bold: document.querySelectorAll('main b').length,
      text: document.querySelector('main').innerText,
    }));
    check(report.pwned === null, `${path}: injected script ran`);
    check(report.scripts.length === 1 && report.scripts[0].startsWith('/static/live.js'), `${path}: only heal's script: ${report.scripts}`);
    check(report.imgs === 0 && report.bold === 0, `${path}: injected elements: ${JSON.stringify(report)}`);
    if (path !== '/events') {
      check(report.text.includes('<script>window.__pwned = 1</script>'), `${path}: the label is shown literally`);
    }
    if (path.startsWith('/events/')) {
      check(report.text.includes(`"'&<b>bold</b>`), `${path}: quotes and & are shown literally`);
      check(report.text.includes('<img src=x onerror="window.__pwned = 2">'), `${path}: the annotation is shown literally`);
    }
  }
  ok('hostile labels and annotations show as text; no element injected, no script ran');

  // Every page at desktop and phone widths.
  const pages = [
    ['overview', '/'],
    ['events', '/events'],
    ['events-filtered', '/events?state=succeeded&runbook=clean&since=24h'],
    ['event-hostile', `/events/${evil.event_id}`],
    ['agents', '/agents'],
    ['heartbeats', '/heartbeats'],
    ['heartbeat', '/heartbeats/backup'],
    ['probes', '/probes'],
    ['probe', '/probes/self'],
    ['runbooks', '/runbooks'],
    ['audit', '/audit'],
  ];
  for (const [name, path] of pages) {
    const r = await page.goto(`${base}${path}`);
    check(r.status() === 200, `${path}: ${r.status()}`);
    await shoot(page, name);
  }
  ok(`screenshots of ${pages.length + 4} pages at 1280 and 390 wide`);
  const audit = await page.locator('main table').textContent();
  for (const action of ['event.approved', 'pause.added', 'pause.resumed', 'breaker.reset', 'runbook.run', 'event.cancelled', 'dashboard.login']) {
    check(audit.includes(action), `the audit log holds ${action}`);
  }
  ok('every action is in the audit log');

  // A heartbeat registered, muted for a while and deleted from the pages.
  await page.goto(`${base}/heartbeats`);
  const hbForm = page.locator('form[action="/heartbeats"]');
  await hbForm.locator('input[name=name]').fill('browser-beat');
  await hbForm.locator('textarea[name=definition]').fill('every = "1h"\ngrace = "10m"');
  await Promise.all([page.waitForURL((u) => u.pathname === '/heartbeats/browser-beat'), hbForm.locator('button').click()]);
  check((await page.locator('.notice').textContent()).includes('Saved'), 'saving says so');
  const muteForm = page.locator('form[action="/heartbeats/browser-beat/mute"]');
  await muteForm.locator('select[name=for]').selectOption('2h');
  await muteForm.locator('input[name=reason]').fill('moving the database');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'muted'), muteForm.locator('button').click()]);
  const facts = await page.locator('dl.facts').textContent();
  check(facts.includes('moving the database') && /in (1h59m|2h)/.test(facts), `the page shows the mute and the time left: ${facts}`);
  await shoot(page, 'heartbeat-muted');
  const hb = await api('GET', '/api/v1/heartbeats/browser-beat');
  check(hb.heartbeat.paused && hb.heartbeat.muted_until > Date.now(), JSON.stringify(hb));
  await page.check('form[action="/heartbeats/browser-beat/delete"] input[name=confirm]');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'deleted'), page.click('form[action="/heartbeats/browser-beat/delete"] button')]);
  ok('registered, muted for 2h and deleted a heartbeat from the pages');

  // The API reference, from the navigation: every operation of the description.
  const description = await api('GET', '/api/v1/openapi.json');
  const operations = Object.entries(description.paths).flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`));
  await Promise.all([page.waitForURL((u) => u.pathname === '/docs'), page.click('nav a[href="/docs"]')]);
  const shown = await page.locator('section.op > h2 > code').allTextContents();
  check(JSON.stringify(shown) === JSON.stringify(operations), `the reference shows each operation once, in order: ${shown.length} of ${operations.length}`);
  await page.click('nav.toc a[href="#op-postApiV1HeartbeatsNameMute"]');
  check(await page.locator('#op-postApiV1HeartbeatsNameMute').isVisible(), 'the contents link to each operation');
  check((await page.locator('#op-postApiV1HeartbeatsNameMute').textContent()).includes('"for": "30m"'), 'the mute operation shows an example body');
  await shoot(page, 'docs', false);
  ok(`the API reference shows all ${operations.length} operations with examples`);

  // A read-only token sees no action, and cannot post one.
  const waiting = await fire('NeedsApproval', { instance: 'web-1', try: 'second' });
  await logout(page);
  await login(page, readToken);
  for (const path of ['/', `/events/${waiting.event_id}`, '/pauses', '/runbooks']) {
    await page.goto(`${base}${path}`);
    const forms = await page.locator('form[method=post]:not([action="/logout"])').count();
    check(forms === 0, `${path}: a read-only viewer sees ${forms} action forms`);
    check((await page.locator('nav a[href="/audit"]').count()) === 0, 'no audit link for a read-only viewer');
  }
  await shoot(page, 'overview-read-only');
  const forged = await page.evaluate(async (id) => {
    const csrf = document.querySelector('form[action="/logout"] input[name=csrf]').value;
    const r = await fetch(`/events/${id}/approve`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `csrf=${encodeURIComponent(csrf)}`,
    });
    return r.status;
  }, waiting.event_id);
  check(forged === 403, `a read-only session posting an approval gets 403, got ${forged}`);
  const still = await api('GET', `/api/v1/events/${waiting.event_id}`);
  check(still.state === 'pending_approval', `the event still waits: ${still.state}`);
  ok('a read-only token sees no action and its forged post is refused');
}

main().catch((e) => {
  console.error(`not ok - ${e.stack || e}`);
  process.exit(1);
});
