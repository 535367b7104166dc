// Renders a dashboard JSON in the Grafana stand-in page (standin.js) in Debian's Chromium through
// playwright-core, and prints what the page shows, read from its DOM, as JSON on stdout.
//
//   node driver.mjs < config.json
//   node driver.mjs --dashboard D.json --prometheus URL --from MS --to MS [--var NAME=VALUE ...]
//        [--time-interval 5s] [--screenshot out.png]        (one run; the config's keys as flags)
//
// config: {
//   "dashboard": "/path/to/dashboard.json", "prometheus": "http://127.0.0.1:9090",
//   "from_ms": 1700000000000, "to_ms": 1700000600000,
//   "datasource": {"uid": "prometheus", "name": "Prometheus", "timeInterval": "5s", "httpMethod": "POST"},
//   "runs": [{"variables": {"worker": ["agent-1"]}}, ...],   (default: one run, the dashboard's defaults)
//   "max_data_points": null, "viewport": {"width": 1920, "height": 1080},
//   "chromium": "/usr/bin/chromium", "timeout_ms": 60000, "screenshot": null (a PNG path, first run)
// }
// output: with "runs" in the config {"runs": [RUN, ...], "browser": {version, log}}; without, one
// RUN with "browser" added, where RUN is {panels: [{id, title, queries: [{refId, expr_interpolated,
// ...}], legends: [...], error, ...}], annotations: [{name, time_ms, title, tags, ...}],
// variables: {name: [values]}, ...}.
// Each run is one page load in one browser. The page is served by a small HTTP server on
// 127.0.0.1 (an ephemeral port) that serves this folder's page and the dashboard file; the page
// calls Prometheus itself (cross-origin; Prometheus allows any origin by default).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STATIC = { '/index.html': 'text/html', '/standin.js': 'text/javascript', '/standin.css': 'text/css' };
// The flags the machine notes name for Debian's Chromium as root on a closed network; playwright
// adds --headless and a fresh temporary --user-data-dir of its own.
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

function serve(dashboardPath) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    try {
      if (url.pathname === '/dashboard.json') {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
        res.end(await readFile(dashboardPath));
        return;
      }
      const type = STATIC[url.pathname === '/' ? '/index.html' : url.pathname];
      if (!type) { res.writeHead(404); res.end('not found'); return; }
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(await readFile(path.join(HERE, url.pathname === '/' ? 'index.html' : url.pathname.slice(1))));
    } catch (e) {
      res.writeHead(500); res.end(String(e));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// Everything below is read from the DOM the page wrote; window.__standin is read only to compare.
function readDom() {
  const json = (s, d) => { try { return JSON.parse(s); } catch (e) { return d; } };
  const root = document.querySelector('#dashboard');
  const panels = [...document.querySelectorAll('article.panel')].map((p) => ({
    id: json(p.dataset.panelId, p.dataset.panelId),
    title: p.dataset.panelTitle,
    type: p.dataset.panelType,
    row: p.dataset.row || null,
    collapsed_row: p.dataset.collapsedRow === 'true',
    description: p.dataset.description || '',
    repeat: p.dataset.repeat || null,
    scoped_vars: json(p.dataset.scopedVars, {}),
    max_data_points: Number(p.dataset.maxDataPoints),
    interval_ms: p.dataset.intervalMs === '' ? null : Number(p.dataset.intervalMs),
    legend_hidden: p.dataset.legendHidden === 'true',
    ignored_transformations: json(p.dataset.ignoredTransformations, []),
    error: p.dataset.error || null,
    queries: [...p.querySelectorAll('code.query')].map((q) => ({
      refId: q.dataset.refId,
      type: q.dataset.queryType || null,
      expr: q.dataset.expr,
      expr_interpolated: q.dataset.exprInterpolated,
      legend_format: q.dataset.legendFormat,
      step_ms: q.dataset.stepMs === '' ? null : Number(q.dataset.stepMs),
      rate_interval_ms: q.dataset.rateIntervalMs === '' ? null : Number(q.dataset.rateIntervalMs),
      series: Number(q.dataset.series),
      error: q.dataset.error || null,
    })),
    legends: [...p.querySelectorAll('ul.legend > li.legend-item')].map((li) => li.textContent),
    legend_items: [...p.querySelectorAll('ul.legend > li.legend-item')].map((li) => ({
      name: li.textContent, refId: li.dataset.refId, labels: json(li.dataset.labels, {}),
    })),
  }));
  const annotationQueries = [...document.querySelectorAll('.annotation-query')].map((a) => ({
    name: a.dataset.name, state: a.dataset.state, error: a.dataset.error || null, expr: a.dataset.expr,
    expr_interpolated: a.dataset.exprInterpolated, step_ms: a.dataset.stepMs === '' ? null : Number(a.dataset.stepMs),
    use_value_for_time: a.dataset.useValueForTime === 'true',
  }));
  const annotations = [...document.querySelectorAll('li.annotation')].map((a) => ({
    name: a.dataset.annotationName, time_ms: Number(a.dataset.timeMs), time_end_ms: Number(a.dataset.timeEndMs),
    title: a.dataset.title, text: a.dataset.text, tags: json(a.dataset.tags, []), labels: json(a.dataset.labels, {}),
  }));
  const variables = {};
  const variableDetails = [...document.querySelectorAll('.variable')].map((v) => {
    const current = json(v.dataset.currentValue, null);
    variables[v.dataset.name] = Array.isArray(current) ? current : [current];
    return { name: v.dataset.name, type: v.dataset.type, current, current_text: json(v.dataset.currentText, null),
      options: json(v.dataset.options, []), error: v.dataset.error || null };
  });
  return {
    state: root.dataset.state, error: root.dataset.error || null, title: document.querySelector('#dashboard-title').textContent,
    panels, annotations, annotation_queries: annotationQueries, variables, variable_details: variableDetails,
  };
}

function compareWithWindow(dom, win) {
  // The DOM is what is read; the page's own summary must tell the same story.
  const problems = [];
  if (!win) return ['window.__standin is missing'];
  if (dom.panels.length !== win.panels.length) problems.push(`DOM has ${dom.panels.length} panels, window ${win.panels.length}`);
  dom.panels.forEach((p, i) => {
    const w = win.panels[i];
    if (!w) return;
    const wl = w.legends.map((l) => l.name);
    if (JSON.stringify(p.legends) !== JSON.stringify(wl)) problems.push(`panel ${p.id}: DOM legends ${JSON.stringify(p.legends)} != window ${JSON.stringify(wl)}`);
  });
  const wa = win.annotations.flatMap((a) => a.events.map((e) => e.time));
  const da = dom.annotations.map((a) => a.time_ms);
  if (JSON.stringify(wa) !== JSON.stringify(da)) problems.push(`DOM annotation times ${JSON.stringify(da)} != window ${JSON.stringify(wa)}`);
  return problems;
}

function configFromArgs(argv) {
  const config = { runs: null, datasource: {} };
  const vars = {};
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--dashboard') config.dashboard = value;
    else if (flag === '--prometheus') config.prometheus = value;
    else if (flag === '--from') config.from_ms = Number(value);
    else if (flag === '--to') config.to_ms = Number(value);
    else if (flag === '--time-interval') config.datasource.timeInterval = value;
    else if (flag === '--screenshot') config.screenshot = value;
    else if (flag === '--var') {
      const [name, ...rest] = value.split('=');
      (vars[name] = vars[name] || []).push(rest.join('='));
    } else throw new Error(`unknown flag ${flag}`);
  }
  config.single = { variables: vars };
  return config;
}

async function main() {
  const config = process.argv.length > 2 ? configFromArgs(process.argv.slice(2)) : JSON.parse(await readStdin());
  const single = !config.runs;
  if (single && config.single) config.runs = [config.single];
  for (const k of ['dashboard', 'prometheus', 'from_ms', 'to_ms']) {
    if (config[k] === undefined || config[k] === null) throw new Error(`config: ${k} is required`);
  }
  const runs = config.runs && config.runs.length ? config.runs : [{ variables: {} }];
  const timeout = config.timeout_ms || 60000;
  const viewport = config.viewport || { width: 1920, height: 1080 };
  const ds = config.datasource || {};
  const server = await serve(path.resolve(config.dashboard));
  const port = server.address().port;
  const browser = await chromium.launch({
    executablePath: config.chromium || '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS, timeout,
  });
  const log = [];
  const out = { runs: [], browser: { version: browser.version(), log } };
  try {
    for (const [i, run] of runs.entries()) {
      const context = await browser.newContext({ viewport, timezoneId: 'UTC' });
      const page = await context.newPage();
      page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log.push(`run ${i} console.${m.type()}: ${m.text()}`); });
      page.on('pageerror', (e) => log.push(`run ${i} page error: ${e.message}`));
      page.on('requestfailed', (r) => log.push(`run ${i} request failed: ${r.url()} ${r.failure()?.errorText}`));
      const qs = new URLSearchParams({
        dashboard: '/dashboard.json', prometheus: config.prometheus, from: String(config.from_ms), to: String(config.to_ms),
      });
      for (const [k, v] of Object.entries({ 'ds.uid': ds.uid, 'ds.name': ds.name, 'ds.timeInterval': ds.timeInterval, 'ds.httpMethod': ds.httpMethod })) {
        if (v !== undefined && v !== null) qs.set(k, String(v));
      }
      if (config.max_data_points) qs.set('maxDataPoints', String(config.max_data_points));
      for (const [name, values] of Object.entries(run.variables || {})) {
        for (const v of Array.isArray(values) ? values : [values]) qs.append(`var-${name}`, String(v));
      }
      await page.goto(`http://127.0.0.1:${port}/index.html?${qs}`, { timeout });
      await page.waitForFunction(() => document.querySelector('#dashboard')?.dataset.state !== 'loading', null, { timeout });
      const dom = await page.evaluate(readDom);
      const win = await page.evaluate(() => JSON.parse(JSON.stringify(window.__standin)));
      dom.consistency_problems = compareWithWindow(dom, win);
      dom.datasource = win.datasource;
      dom.time = win.time;
      dom.requests = win.requests;
      dom.run_variables = run.variables || {};
      if (i === 0 && config.screenshot) await page.screenshot({ path: config.screenshot, fullPage: true });
      out.runs.push(dom);
      await context.close();
    }
  } finally {
    await browser.close();
    server.close();
  }
  process.stdout.write(JSON.stringify(single ? { ...out.runs[0], browser: out.browser } : out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`driver: ${e.stack || e}\n`);
  process.exit(1);
});
