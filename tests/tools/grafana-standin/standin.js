/*
 * Grafana stand-in: the query side of Grafana's Prometheus datasource, for one dashboard JSON, in
 * a browser, against a real Prometheus. Plain JS, no build step. Grafana itself cannot be had on
 * this machine (no image, no package); this page does what Grafana's frontend and its Go backend
 * (pkg/promlib) do with a dashboard's variables, queries, legends and annotations, and writes the
 * outcome into the DOM (data attributes) and into window.__standin.
 *
 * Parameters: ?dashboard=URL&prometheus=URL&from=MS&to=MS&var-NAME=VALUE (repeatable, as in
 * Grafana's dashboard URL; "All" or "$__all" selects All) &ds.uid=&ds.name=&ds.timeInterval=
 * &ds.httpMethod= (the provisioned datasource: uid, name, jsonData.timeInterval, httpMethod)
 * &maxDataPoints=N (optional: every panel's maxDataPoints instead of its measured width).
 *
 * WHAT IT DOES, following Grafana's code (grafana/grafana packages/grafana-prometheus and
 * pkg/promlib, @grafana/data rangeutil and fieldState, the TemplateSrv):
 *  - Template variables, in dashboard order (a variable may use the ones before it):
 *    query (label_values(metric, label) and label_values(label) through
 *    /api/v1/label/<label>/values?match[]=..., label_names(), metrics(re), query_result(expr),
 *    a bare series selector through /api/v1/series; the variable's regex with text/value named
 *    groups, its sort order, refresh=0 taking the saved options), custom (a,b / text : value),
 *    constant, textbox, datasource (the one provisioned Prometheus), interval (with auto).
 *    Multi-value and includeAll; All is allValue when set (not escaped, interpolated again) or
 *    every option's value; a URL value not among the options is kept as Grafana keeps it.
 *  - Interpolation: $var, ${var}, ${var:format}, [[var]], [[var:format]] with the Prometheus
 *    datasource's interpolateQueryExpr (single value: backslash and ' escaped; multi/includeAll:
 *    regex-escaped, several values as (a|b)); formats glob (the default), regex, pipe, csv, raw,
 *    json, text, singlequote, doublequote, sqlstring, percentencode, queryparam; legendFormat and
 *    the panel's min interval interpolated with the default format; repeated panels (repeat by a
 *    variable) and the panels of repeated collapsed rows get that variable's single value as a
 *    scoped variable (an expanded row's repeat is not expanded).
 *  - $__interval, $__interval_s, $__interval_ms, $__range, $__range_s, $__range_ms,
 *    $__rate_interval, $__rate_interval_s, $__rate_interval_ms and their ${...} forms as the Go
 *    backend does: the frontend interval is
 *    rangeUtil.calculateInterval(range, maxDataPoints, panel min interval or the datasource's
 *    timeInterval); the step is calculatePrometheusInterval (query min step, intervalMs,
 *    maxDataPoints, the 11000-point safe interval, intervalFactor); $__rate_interval is
 *    max($__interval + scrape interval, 4 * scrape interval) with the query's min step as the
 *    scrape interval when set; $__interval formatted as gtime.FormatInterval, $__rate_interval as
 *    Go's time.Duration.String(). tests/test_dashboard_browser.py checks this arithmetic against
 *    the vectors of Grafana's own pkg/promlib/models/query_test.go.
 *  - Queries: range queries POST (or GET, per ds.httpMethod) /api/v1/query_range with start and end
 *    aligned down to the step (UTC offset of the dashboard timezone); instant queries /api/v1/query
 *    at the range's end; "range and instant" both, the instant one as refId-Instant; hidden
 *    targets skipped. Prometheus is called from the page directly (CORS: Prometheus answers any
 *    origin by default, --web.cors.origin='.*'), not through a Grafana server.
 *  - Legends: the backend's getName (legendFormat {{label}} rendering, "__auto", and the default
 *    metric{label="value", ...} name; an empty name becomes the expression) then the frontend's
 *    field display name over all of the panel's series (displayNameFromDS, else the single common
 *    label's value or {a="x", b="y"}), then fieldConfig.defaults.displayName and displayName
 *    overrides (byName, byRegexp, byFrameRefID) with ${__field.labels.X}, ${__field.labels},
 *    ${__field.name} and ${__series.name}.
 *  - Panels: every panel, those nested in collapsed rows included (Grafana runs those only once
 *    the row is expanded; here they run as if it were), each laid out on the 24-column grid so
 *    that its measured width is its maxDataPoints unless the panel sets maxDataPoints.
 *  - Annotations: Prometheus annotation queries as Grafana 10+ runs them (prepareAnnotation moves
 *    a legacy expr/step into target.expr/target.interval; maxDataPoints is the window's width;
 *    the query runs like a panel query) and processEvents: one event per run of active samples
 *    (value > 0, or the value as the time in ms with useValueForTime) no more than the executed
 *    step apart, title/text rendered from titleFormat/textFormat, tags the values of the tagKeys
 *    labels. Disabled annotations are not run.
 *
 * WHAT DIFFERS FROM GRAFANA:
 *  - Nothing is drawn: no plugin renders (time series, stat, table, ...), no thresholds, units,
 *    value mappings, colours or reductions; a panel's "legend" here is the display name of each
 *    series the queries returned, whether or not the panel's legend is shown (options.legend
 *    showLegend/displayMode is recorded as data-legend-hidden; the names still appear in tooltips).
 *  - Transformations are not applied (they are listed per panel in data-ignored-transformations):
 *    a transformation that renames, filters or joins series would change what Grafana shows.
 *  - Table format: the frames are kept as series (no table columns); heatmap format: no bucket
 *    conversion (le ordering, de-accumulation).
 *  - Only the Prometheus datasource: a panel or target on another datasource (-- Dashboard --,
 *    expressions, mixed with non-Prometheus targets), library panels, and the built-in
 *    "Annotations & Alerts" (Grafana's own annotation store, empty here) are reported as
 *    unsupported, not run. Ad hoc filter variables, exemplars, recording-rule expansion, the
 *    incremental query cache, query splitting and Grafana's per-request query timeout are not
 *    implemented.
 *  - Panel widths come from this page's layout (a 24-column grid across the viewport, 16 px page
 *    padding, 8 px gaps, no navigation menu), so maxDataPoints, and through it $__interval and the
 *    step, can differ from a given Grafana window; $__rate_interval does not depend on it while
 *    range / width stays below about 3 scrape intervals (e.g. ranges up to ~3.7 h for a 5 s
 *    timeInterval and a 900 px panel), where it is 4 scrape intervals either way.
 *  - The dashboard is not migrated (DashboardMigrator): it must be current-schema JSON. Variable
 *    values are resolved once, in order; no dependency graph or re-run on change. The time range
 *    is absolute (from/to in ms); now-relative ranges and the browser timezone other than UTC are
 *    not modelled beyond the UTC offset used for step alignment.
 *  - Frames are built from Prometheus's JSON directly (no Arrow/dataplane frames); native
 *    histograms are not handled.
 */
(function () {
  'use strict';

  // ------------------------------------------------------------------------------------------
  // Parameters and state
  // ------------------------------------------------------------------------------------------
  const params = new URLSearchParams(location.search);
  const PROM = (params.get('prometheus') || '').replace(/\/+$/, '');
  const FROM = Number(params.get('from'));
  const TO = Number(params.get('to'));
  const DS = {
    uid: params.get('ds.uid') || 'prometheus',
    name: params.get('ds.name') || 'Prometheus',
    type: 'prometheus',
    timeInterval: params.get('ds.timeInterval') || '',
    httpMethod: (params.get('ds.httpMethod') || 'POST').toUpperCase(),
  };
  // PrometheusDatasource: this.interval = jsonData.timeInterval || '15s'
  DS.interval = DS.timeInterval || '15s';
  const FIXED_MAX_DATA_POINTS = params.get('maxDataPoints') ? Number(params.get('maxDataPoints')) : null;
  const URL_VARS = new Map();
  for (const [k, v] of params) {
    if (k.startsWith('var-')) {
      const name = k.slice(4);
      if (!URL_VARS.has(name)) URL_VARS.set(name, []);
      URL_VARS.get(name).push(v);
    }
  }
  const VARS = new Map(); // name -> variable model
  const state = {
    state: 'loading',
    error: null,
    dashboard: null,
    time: { from: FROM, to: TO },
    datasource: DS,
    variables: [],
    panels: [],
    annotations: [],
    requests: 0,
  };
  window.__standin = state;

  const $ = (sel) => document.querySelector(sel);
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v;
      else if (k === 'style') e.setAttribute('style', v);
      else e.setAttribute(k, typeof v === 'string' ? v : JSON.stringify(v));
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // ------------------------------------------------------------------------------------------
  // Durations: @grafana/data rangeutil (frontend) and gtime / time.Duration (Go backend)
  // ------------------------------------------------------------------------------------------
  const INTERVALS_IN_SECONDS = { y: 31536000, M: 2592000, w: 604800, d: 86400, h: 3600, m: 60, s: 1, ms: 0.001 };
  const INTERVAL_REGEX = /^(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])/;
  function describeInterval(str) {
    if (Number(str)) return { sec: 1, type: 's', count: parseInt(str, 10) };
    const m = String(str).match(INTERVAL_REGEX);
    if (!m || !(m[2] in INTERVALS_IN_SECONDS)) throw new Error(`Invalid interval string ${JSON.stringify(str)}`);
    return { sec: INTERVALS_IN_SECONDS[m[2]], type: m[2], count: parseInt(m[1], 10) };
  }
  const intervalToSeconds = (s) => { const i = describeInterval(s); return i.sec * i.count; };
  const intervalToMs = (s) => { const i = describeInterval(s); return i.sec * 1000 * i.count; };

  // rangeutil.roundInterval (frontend: strict <)
  const FRONT_ROUND = [[10, 1], [15, 10], [35, 20], [75, 50], [150, 100], [350, 200], [750, 500], [1500, 1000],
    [3500, 2000], [7500, 5000], [12500, 10000], [17500, 15000], [25000, 20000], [45000, 30000], [90000, 60000],
    [210000, 120000], [450000, 300000], [750000, 600000], [1050000, 900000], [1500000, 1200000],
    [2700000, 1800000], [5400000, 3600000], [9000000, 7200000], [16200000, 10800000], [32400000, 21600000],
    [86400000, 43200000], [604800000, 86400000], [1814400000, 604800000], [3628800000, 2592000000]];
  function roundIntervalFront(ms) {
    for (const [limit, value] of FRONT_ROUND) if (ms < limit) return value;
    return 31536000000;
  }
  // gtime.RoundInterval (Go backend: <=, the last step <)
  const GO_ROUND = [[10, 1], [15, 10], [35, 20], [75, 50], [150, 100], [350, 200], [750, 500], [1500, 1000],
    [3500, 2000], [7500, 5000], [12500, 10000], [17500, 15000], [25000, 20000], [45000, 30000], [90000, 60000],
    [210000, 120000], [450000, 300000], [750000, 600000], [1050000, 900000], [1500000, 1200000],
    [2700000, 1800000], [5400000, 3600000], [9000000, 7200000], [16200000, 10800000], [32400000, 21600000],
    [86400000, 43200000], [172800000, 86400000], [604800000, 86400000], [1814400000, 604800000]];
  function roundIntervalGo(ms) {
    for (const [limit, value] of GO_ROUND) if (ms <= limit) return value;
    return ms < 3628800000 ? 2592000000 : 31536000000;
  }
  function secondsToHms(seconds) {
    const y = Math.floor(seconds / 31536000); if (y) return y + 'y';
    const d = Math.floor((seconds % 31536000) / 86400); if (d) return d + 'd';
    const h = Math.floor(((seconds % 31536000) % 86400) / 3600); if (h) return h + 'h';
    const m = Math.floor((((seconds % 31536000) % 86400) % 3600) / 60); if (m) return m + 'm';
    const s = Math.floor((((seconds % 31536000) % 86400) % 3600) % 60); if (s) return s + 's';
    const ms = Math.floor(seconds * 1000.0); if (ms) return ms + 'ms';
    return 'less than a millisecond';
  }
  // rangeUtil.calculateInterval
  function calculateInterval(rangeMs, resolution, lowLimitInterval) {
    let lowLimitMs = 1;
    if (lowLimitInterval) lowLimitMs = intervalToMs(lowLimitInterval);
    let intervalMs = roundIntervalFront(rangeMs / resolution);
    if (lowLimitMs > intervalMs) intervalMs = lowLimitMs;
    return { intervalMs, interval: secondsToHms(intervalMs / 1000) };
  }
  // Go time.ParseDuration, plus gtime's d/w/M/y (ParseDuration: 365.25-day years)
  const GO_UNITS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
  function goParseDuration(s) {
    const dm = /^(\d+)([dwMy])$/.exec(s);
    if (dm) {
      const day = 86400000, year = day * 365.25;
      return Number(dm[1]) * { d: day, w: 7 * day, M: year / 12, y: year }[dm[2]];
    }
    if (s === '0') return 0;
    let rest = s, sign = 1;
    if (rest[0] === '-' || rest[0] === '+') { if (rest[0] === '-') sign = -1; rest = rest.slice(1); }
    if (!rest) throw new Error(`time: invalid duration ${JSON.stringify(s)}`);
    let total = 0;
    const part = /^((?:\d+(?:\.\d*)?)|(?:\.\d+))(ns|us|µs|μs|ms|s|m|h)/;
    while (rest) {
      const m = part.exec(rest);
      if (!m) throw new Error(`time: invalid duration ${JSON.stringify(s)}`);
      total += parseFloat(m[1]) * GO_UNITS[m[2]];
      rest = rest.slice(m[0].length);
    }
    return sign * total;
  }
  // backend ParseIntervalStringToTimeDuration: "<5s>" and a bare number of seconds
  function parseIntervalGo(interval) {
    let f = interval.replace('<', '').replace('>', '');
    if (/^\d+$/.test(f)) f += 's';
    return goParseDuration(f);
  }
  // Go time.Duration.String() for a duration in ms
  function goDurationString(ms) {
    if (ms === 0) return '0s';
    const neg = ms < 0; ms = Math.abs(ms);
    let out;
    if (ms < 1000) {
      if (ms >= 1) out = fmtFrac(ms) + 'ms';
      else if (ms >= 0.001) out = fmtFrac(ms * 1000) + 'µs';
      else out = fmtFrac(ms * 1e6) + 'ns';
    } else {
      const totalNs = Math.round(ms * 1e6);
      const h = Math.floor(totalNs / 3.6e12);
      const m = Math.floor((totalNs - h * 3.6e12) / 6e10);
      const sNs = totalNs - h * 3.6e12 - m * 6e10;
      const s = fmtFrac(sNs / 1e9) + 's';
      out = h ? `${h}h${m}m${s}` : m ? `${m}m${s}` : s;
    }
    return (neg ? '-' : '') + out;
  }
  function fmtFrac(x) { return String(Number(x.toFixed(9))); }
  // gtime.FormatInterval
  function goFormatInterval(ms) {
    const year = 365 * 86400000, day = 86400000;
    if (ms >= year) return Math.floor(ms / year) + 'y';
    if (ms >= day) return Math.floor(ms / day) + 'd';
    if (ms >= 3600000) return Math.floor(ms / 3600000) + 'h';
    if (ms >= 60000) return Math.floor(ms / 60000) + 'm';
    if (ms >= 1000) return Math.floor(ms / 1000) + 's';
    if (ms >= 1) return Math.floor(ms) + 'ms';
    return '1ms';
  }

  // ------------------------------------------------------------------------------------------
  // Template variables: TemplateSrv.replace, the format registry, the Prometheus escaping
  // ------------------------------------------------------------------------------------------
  const VARIABLE_REGEX = /\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?}/g;
  const ALL_VALUE = '$__all';
  const isAllValue = (v) => v === ALL_VALUE || (Array.isArray(v) && v[0] === ALL_VALUE);

  // datasource.ts prometheusRegularEscape / prometheusSpecialRegexEscape
  function prometheusRegularEscape(value) {
    return typeof value === 'string' ? value.replace(/\\/g, '\\\\').replace(/'/g, "\\\\'") : value;
  }
  function prometheusSpecialRegexEscape(value) {
    return typeof value === 'string' ? value.replace(/\\/g, '\\\\\\\\').replace(/[$^*{}\[\]\'+?.()|]/g, '\\\\$&') : value;
  }
  // PrometheusDatasource.interpolateQueryExpr
  function interpolateQueryExpr(value, variable) {
    if (value === undefined) value = [];
    if (!variable.multi && !variable.includeAll) return prometheusRegularEscape(value);
    if (typeof value === 'string') return prometheusSpecialRegexEscape(value);
    const escaped = value.map((v) => prometheusSpecialRegexEscape(v));
    if (escaped.length === 1) return escaped[0];
    return '(' + escaped.join('|') + ')';
  }
  const regexEscape = (v) => String(v).replace(/[\\^$*+?.()|[\]{}\/]/g, '\\$&'); // kbn.regexEscape
  const FORMATS = {
    glob: (v) => (Array.isArray(v) && v.length > 1 ? '{' + v.join(',') + '}' : String(v)),
    regex: (v) => {
      if (typeof v === 'string') return regexEscape(v);
      const e = v.map(regexEscape);
      return e.length === 1 ? e[0] : '(' + e.join('|') + ')';
    },
    pipe: (v) => (Array.isArray(v) ? v.join('|') : String(v)),
    csv: (v) => (Array.isArray(v) ? v.join(',') : String(v)),
    raw: (v) => String(v),
    json: (v) => JSON.stringify(v),
    singlequote: (v) => (Array.isArray(v) ? v : [v]).map((x) => `'${String(x).replace(/'/g, "\\'")}'`).join(','),
    doublequote: (v) => (Array.isArray(v) ? v : [v]).map((x) => `"${String(x).replace(/"/g, '\\"')}"`).join(','),
    sqlstring: (v) => (Array.isArray(v) ? v : [v]).map((x) => `'${String(x).replace(/'/g, "''")}'`).join(','),
    percentencode: (v) => (Array.isArray(v) ? encodeURIComponent('{' + v.join(',') + '}') : encodeURIComponent(String(v))),
  };
  function formatValue(value, format, variable, text) {
    variable = variable || {};
    if (value === null || value === undefined) return '';
    if (!Array.isArray(value) && typeof value === 'object') value = `${value}`;
    if (typeof format === 'function') return format(value, variable);
    if (!format) format = 'glob';
    const name = format.split(':')[0];
    if (name === 'text') return String(text ?? value);
    if (name === 'queryparam') {
      return (Array.isArray(value) ? value : [value]).map((v) => `var-${encodeURIComponent(variable.name)}=${encodeURIComponent(v)}`).join('&');
    }
    const f = FORMATS[name] || FORMATS.glob; // Grafana falls back to glob for an unknown format
    return f(value);
  }
  function getAllValue(variable) {
    if (variable.allValue) return variable.allValue;
    const values = [];
    for (let i = 1; i < variable.options.length; i++) values.push(variable.options[i].value);
    return values;
  }
  // TemplateSrv.replace
  function replace(target, scopedVars, format) {
    if (target === undefined || target === null) return target ?? '';
    return String(target).replace(VARIABLE_REGEX, (match, var1, var2, fmt2, var3, fieldPath, fmt3) => {
      const name = var1 || var2 || var3;
      const fmt = fmt2 || fmt3 || format;
      const variable = VARS.get(name);
      if (scopedVars && Object.prototype.hasOwnProperty.call(scopedVars, name)) {
        const sv = scopedVars[name];
        if (sv && sv.value !== null && sv.value !== undefined) {
          return formatValue(sv.value, fmt, variable || { name, type: 'system' }, sv.text);
        }
      }
      if (!variable) return match;
      let value = variable.current.value;
      let text = variable.current.text;
      if (isAllValue(value)) {
        value = getAllValue(variable);
        text = 'All';
        if (variable.allValue && fmt !== 'text' && fmt !== 'percentencode') return replace(value);
      }
      return formatValue(value, fmt, variable, text);
    });
  }
  function rangeScopedVars() {
    const msRange = TO - FROM, sRange = Math.round(msRange / 1000);
    return {
      __range_ms: { text: msRange, value: msRange },
      __range_s: { text: sRange, value: sRange },
      __range: { text: sRange + 's', value: sRange + 's' },
    };
  }

  // ------------------------------------------------------------------------------------------
  // Prometheus HTTP API, straight from the page
  // ------------------------------------------------------------------------------------------
  async function promRequest(path, data, method) {
    state.requests++;
    method = method || DS.httpMethod;
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(data || {})) body.append(k, String(v));
    let resp;
    try {
      if (method === 'POST') {
        resp = await fetch(PROM + path, { method: 'POST', body });
      } else {
        const qs = body.toString();
        resp = await fetch(PROM + path + (qs ? '?' + qs : ''));
      }
    } catch (e) {
      throw new Error(`request to Prometheus ${path} failed: ${e.message}`);
    }
    let json;
    try { json = await resp.json(); } catch (e) { throw new Error(`Prometheus ${path}: HTTP ${resp.status}, not JSON`); }
    if (json.status === 'error') throw new Error(`${json.errorType}: ${json.error}`);
    if (!resp.ok) throw new Error(`Prometheus ${path}: HTTP ${resp.status}`);
    return json;
  }
  const promTimeFrom = () => Math.floor(FROM / 1000); // getPrometheusTime(from, false)
  const promTimeTo = () => Math.ceil(TO / 1000); // getPrometheusTime(to, true)

  // ------------------------------------------------------------------------------------------
  // Variables
  // ------------------------------------------------------------------------------------------
  function stringToJsRegex(str) {
    if (str[0] !== '/') return new RegExp('^' + str + '$');
    const m = str.match(new RegExp('^/(.*?)/(g?i?m?y?s?)$'));
    if (!m) throw new Error(`'${str}' is not a valid regular expression.`);
    return new RegExp(m[1], m[2]);
  }
  function getAllMatches(str, regex) {
    const results = [];
    let m;
    regex.lastIndex = 0;
    do {
      m = regex.exec(str);
      if (m) results.push(m);
    } while (regex.global && m && m[0] !== '' && m[0] !== undefined);
    return results;
  }
  function sortVariableValues(options, sortOrder) {
    if (!sortOrder) return options;
    const sortType = Math.ceil(sortOrder / 2);
    const reverse = sortOrder % 2 === 0;
    const by = (key) => (a, b) => { const x = key(a), y = key(b); return x < y ? -1 : x > y ? 1 : 0; };
    let out = options.slice();
    if (sortType === 1) out.sort(by((o) => o.text));
    else if (sortType === 2) {
      out.sort(by((o) => {
        if (!o.text) return -1;
        const m = String(o.text).match(/.*?(\d+).*/);
        return !m || m.length < 2 ? -1 : parseInt(m[1], 10);
      }));
    } else if (sortType === 3) out.sort(by((o) => String(o.text).toLowerCase()));
    else if (sortType === 4) out.sort((a, b) => String(a.text).localeCompare(String(b.text), undefined, { numeric: true, sensitivity: 'base' }));
    if (reverse) out = out.reverse();
    return out;
  }
  // metricNamesToVariableValues
  function toVariableValues(variable, items) {
    let regex = null;
    if (variable.regex) regex = stringToJsRegex(replace(variable.regex, {}, 'regex'));
    let options = [];
    for (const item of items) {
      let text = item.text === undefined || item.text === null ? item.value : item.text;
      let value = item.value === undefined || item.value === null ? item.text : item.value;
      if (typeof value === 'number') value = value.toString();
      if (typeof text === 'number') text = text.toString();
      if (regex) {
        const matches = getAllMatches(text, regex);
        if (!matches.length) continue;
        const valueGroup = matches.find((m) => m.groups && m.groups.value);
        const textGroup = matches.find((m) => m.groups && m.groups.text);
        const firstMatch = matches.find((m) => m.length > 1);
        const manyMatches = matches.length > 1 && firstMatch;
        if (valueGroup || textGroup) {
          value = valueGroup?.groups?.value ?? textGroup?.groups?.text;
          text = textGroup?.groups?.text ?? valueGroup?.groups?.value;
        } else if (manyMatches) {
          for (const m of matches) options.push({ value: m[1], text: m[1] });
          continue;
        } else if (firstMatch) {
          text = firstMatch[1];
          value = firstMatch[1];
        }
      }
      options.push({ text, value });
    }
    const seen = new Set();
    options = options.filter((o) => (seen.has(o.value) ? false : (seen.add(o.value), true)));
    return sortVariableValues(options, variable.sort);
  }
  // PrometheusMetricFindQuery.process
  async function metricFindQuery(query) {
    const scoped = { __interval: { text: DS.interval, value: DS.interval },
      __interval_ms: { text: intervalToMs(DS.interval), value: intervalToMs(DS.interval) }, ...rangeScopedVars() };
    const q = replace(query, scoped, interpolateQueryExpr);
    const start = String(promTimeFrom()), end = String(promTimeTo());
    let m;
    if ((m = q.match(/^label_names\(\)\s*$/))) {
      const r = await promRequest('/api/v1/labels', { start, end });
      return r.data.map((v) => ({ text: v }));
    }
    if ((m = q.match(/^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)\s*$/))) {
      const filter = m[1], label = m[2];
      const data = { start, end };
      if (filter && filter.split(' ').join('') !== '{}') data['match[]'] = filter;
      const r = await promRequest(`/api/v1/label/${label}/values`, data, 'GET');
      return r.data.map((v) => ({ text: v }));
    }
    if ((m = q.match(/^metrics\((.+)\)\s*$/))) {
      const r = await promRequest('/api/v1/label/__name__/values', { start, end }, 'GET');
      const re = new RegExp(m[1]);
      return r.data.filter((n) => re.test(n)).map((n) => ({ text: n, expandable: true }));
    }
    if ((m = q.match(/^query_result\((.+)\)\s*$/))) {
      const r = await promRequest('/api/v1/query', { query: m[1], time: end });
      const d = r.data;
      if (d.resultType === 'scalar' || d.resultType === 'string') return [{ text: d.result[1] || '' }];
      if (d.resultType === 'vector') {
        return d.result.map((s) => {
          const metric = { ...s.metric };
          let text = metric.__name__ || '';
          delete metric.__name__;
          text += '{' + Object.entries(metric).map(([k, v]) => k + '="' + v + '"').join(',') + '}';
          text += ' ' + s.value[1] + ' ' + s.value[0] * 1000;
          return { text, expandable: true };
        });
      }
      throw new Error(`Unknown/Unhandled result type: [${d.resultType}]`);
    }
    if (['label_values()', 'metrics()', 'query_result()'].includes(q)) return [];
    const r = await promRequest('/api/v1/series', { 'match[]': q, start, end });
    return r.data.map((metric) => {
      const labels = { ...metric };
      const name = labels.__name__ || '';
      delete labels.__name__;
      return { text: `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',')}}`, expandable: true };
    });
  }
  function customOptions(query) {
    // CustomVariable: values separated by unescaped commas, "text : value" pairs
    const texts = String(query || '').match(/(?:\\,|[^,])+/g) || [];
    return texts.map((t) => {
      const [text, value] = t.trim().replace(/\\,/g, ',').split(/\s+:\s+/);
      return { text: text.trim(), value: (value ?? text).trim() };
    });
  }
  function variableQueryString(v) {
    if (typeof v.query === 'string') return v.query;
    if (v.query && typeof v.query === 'object') return v.query.query ?? v.query.expr ?? '';
    return '';
  }
  function isVariableDatasourceOk(v) {
    const ds = v.datasource;
    if (!ds) return true;
    if (typeof ds === 'string') return ds === DS.name || ds === DS.uid || replace(ds) === DS.uid || replace(ds) === DS.name;
    const uid = ds.uid ? replace(ds.uid) : undefined;
    return ds.type === 'prometheus' || uid === DS.uid || uid === DS.name;
  }
  function chooseCurrent(v) {
    const urlValues = URL_VARS.get(v.name);
    const allOpt = v.options.find((o) => o.value === ALL_VALUE);
    const pick = (vals) => {
      if (v.multi) return { value: vals.map((o) => o.value), text: vals.map((o) => o.text) };
      return { value: vals[0].value, text: vals[0].text };
    };
    if (urlValues) {
      // setOptionFromUrl: "All" / the allValue / $__all select All; an unknown value is kept as is
      if (v.includeAll && urlValues.length === 1 && (urlValues[0] === 'All' || urlValues[0] === ALL_VALUE
          || (v.allValue && urlValues[0] === v.allValue))) {
        v.current = { value: v.multi ? [ALL_VALUE] : ALL_VALUE, text: v.multi ? ['All'] : 'All' };
        return;
      }
      const chosen = urlValues.map((u) => v.options.find((o) => o.value === u || o.text === u) || { text: u, value: u });
      v.current = pick(chosen);
      return;
    }
    const saved = v.current_saved;
    if (saved && saved.value !== undefined) {
      if (isAllValue(saved.value) && allOpt) {
        v.current = { value: v.multi ? [ALL_VALUE] : ALL_VALUE, text: v.multi ? ['All'] : 'All' };
        return;
      }
      const wanted = Array.isArray(saved.value) ? saved.value : [saved.value];
      const found = wanted.map((w) => v.options.find((o) => o.value === w)).filter(Boolean);
      if (found.length) { v.current = pick(found); return; }
      if (v.type === 'textbox' || v.type === 'constant') { v.current = { value: saved.value, text: saved.text ?? saved.value }; return; }
    }
    if (v.options.length) {
      const first = v.options[0];
      if (first.value === ALL_VALUE) v.current = { value: v.multi ? [ALL_VALUE] : ALL_VALUE, text: v.multi ? ['All'] : 'All' };
      else v.current = pick([first]);
    } else {
      v.current = { value: '', text: '' };
    }
  }
  async function resolveVariable(raw) {
    const v = {
      name: raw.name, type: raw.type || 'query', label: raw.label, hide: raw.hide || 0,
      multi: !!raw.multi, includeAll: !!raw.includeAll, allValue: raw.allValue || null,
      regex: raw.regex || '', sort: raw.sort || 0, query: variableQueryString(raw), refresh: raw.refresh,
      current_saved: raw.current, options: [], current: { value: '', text: '' }, error: null,
    };
    VARS.set(v.name, v); // visible to the variables after it, not to its own query
    try {
      if (v.type === 'query') {
        if (!isVariableDatasourceOk(raw)) throw new Error(`datasource ${JSON.stringify(raw.datasource)} is not the Prometheus datasource`);
        if (raw.refresh === 0 && Array.isArray(raw.options) && raw.options.length) {
          v.options = raw.options.filter((o) => o.value !== ALL_VALUE).map((o) => ({ text: o.text, value: o.value }));
        } else {
          v.options = toVariableValues(v, await metricFindQuery(v.query));
        }
      } else if (v.type === 'custom') {
        v.options = customOptions(v.query);
      } else if (v.type === 'constant') {
        v.options = [{ text: v.query, value: v.query }];
        v.current_saved = { value: v.query, text: v.query };
      } else if (v.type === 'textbox') {
        const val = raw.current && raw.current.value !== undefined ? raw.current.value : v.query;
        v.options = [{ text: val, value: val }];
      } else if (v.type === 'datasource') {
        const re = raw.regex ? stringToJsRegex(replace(raw.regex, {}, 'regex')) : null;
        v.options = (v.query === 'prometheus' && (!re || re.test(DS.name))) ? [{ text: DS.name, value: DS.uid }] : [];
      } else if (v.type === 'interval') {
        v.options = customOptions(v.query).map((o) => ({ text: o.text, value: o.value }));
        if (raw.auto) {
          const auto = calculateInterval(TO - FROM, raw.auto_count || 30, raw.auto_min || '10s');
          v.options.unshift({ text: 'auto', value: auto.interval });
        }
      } else if (v.type === 'adhoc') {
        v.options = [];
        v.error = 'ad hoc filters are not applied by the stand-in';
      } else {
        throw new Error(`variable type ${v.type} is not supported`);
      }
    } catch (e) {
      v.error = String(e.message || e);
    }
    if (v.includeAll && v.type !== 'adhoc') v.options.unshift({ text: 'All', value: ALL_VALUE });
    chooseCurrent(v);
    return v;
  }

  // ------------------------------------------------------------------------------------------
  // The Go backend: step, built-in variables, query, frames, names
  // ------------------------------------------------------------------------------------------
  const RATE_VARS = ['$__rate_interval', '${__rate_interval}'];
  const INTERVAL_VARS = ['$__interval', '${__interval}'];
  const isVariableInterval = (i) => ['$__interval', '$__interval_s', '$__interval_ms', '$__rate_interval',
    '$__rate_interval_s', '$__rate_interval_ms', '${__interval}', '${__interval_s}', '${__interval_ms}',
    '${__rate_interval}', '${__rate_interval_s}', '${__rate_interval_ms}'].includes(i);
  function getIntervalFrom(dsInterval, queryInterval, queryIntervalMs, defaultMs) {
    let interval = queryInterval || '';
    if (interval === '0s') interval = '';
    if (interval === '' && queryIntervalMs) return queryIntervalMs;
    if (interval === '' && dsInterval) interval = dsInterval;
    if (interval === '') return defaultMs;
    return parseIntervalGo(interval);
  }
  function calculateRateInterval(queryIntervalMs, requestedMinStep) {
    const scrape = requestedMinStep || '15s';
    let scrapeMs;
    try { scrapeMs = parseIntervalGo(scrape); } catch (e) { return 0; }
    return Math.max(queryIntervalMs + scrapeMs, 4 * scrapeMs);
  }
  // models.calculatePrometheusInterval
  function calculatePrometheusInterval(queryInterval, dsScrape, intervalMs, intervalFactor, rangeMs, maxDataPoints) {
    const original = queryInterval || '';
    if (isVariableInterval(queryInterval)) queryInterval = '';
    const minInterval = getIntervalFrom(dsScrape, queryInterval, intervalMs, 15000);
    const resolution = maxDataPoints || 1500;
    const rawNs = Math.trunc((rangeMs * 1e6) / resolution);
    const calculated = rawNs / 1e6 < minInterval ? minInterval : roundIntervalGo(rawNs / 1e6);
    const safe = roundIntervalGo(Math.trunc((rangeMs * 1e6) / 11000) / 1e6);
    const adjusted = calculated > safe ? calculated : safe;
    if (RATE_VARS.includes(original)) return calculateRateInterval(adjusted, dsScrape);
    return adjusted * (intervalFactor || 1);
  }
  // models.interpolateVariables
  function interpolateBuiltins(expr, queryIntervalMs, stepMs, requestedMinStep, dsScrape, rangeMs) {
    const rangeSRounded = Math.round(rangeMs / 1000);
    let rateMs;
    if (RATE_VARS.includes(requestedMinStep)) rateMs = stepMs;
    else {
      if (INTERVAL_VARS.includes(requestedMinStep)) requestedMinStep = goDurationString(stepMs);
      if (!requestedMinStep) requestedMinStep = dsScrape;
      rateMs = calculateRateInterval(queryIntervalMs, requestedMinStep);
    }
    const ms = (d) => String(Math.trunc(d)), sec = (d) => String(Math.trunc(d / 1000));
    const reps = [];
    for (const [open, close] of [['$', ''], ['${', '}']]) { // the $x forms first, then the ${x} ones
      const v = (name) => open + name + close;
      reps.push([v('__interval_ms'), ms(stepMs)], [v('__interval_s'), sec(stepMs)], [v('__interval'), goFormatInterval(stepMs)],
        [v('__range_ms'), String(rangeMs)], [v('__range_s'), String(rangeSRounded)], [v('__range'), rangeSRounded + 's'],
        [v('__rate_interval_ms'), ms(rateMs)], [v('__rate_interval_s'), sec(rateMs)],
        [v('__rate_interval'), goDurationString(rateMs)]);
    }
    for (const [k, v] of reps) expr = expr.split(k).join(v);
    return { expr, rateMs };
  }
  // models.AlignTimeRange
  function alignTime(ms, stepMs, utcOffsetSec) {
    const off = utcOffsetSec * 1000;
    return Math.floor((ms + off) / stepMs) * stepMs - off;
  }
  function utcOffsetSec(dashboard) {
    if ((dashboard.timezone || '') === 'utc') return 0;
    return -new Date(TO).getTimezoneOffset() * 60;
  }
  // querydata/response.go metricNameFromLabels (Go %q for values)
  function metricNameFromLabels(labels) {
    const name = labels.__name__;
    const parts = Object.keys(labels).filter((k) => k !== '__name__').sort().map((k) => `${k}=${JSON.stringify(labels[k])}`);
    if (!parts.length) return name !== undefined ? name : '{}';
    return `${name || ''}{${parts.join(', ')}}`;
  }
  const LEGEND_FORMAT_REGEXP = /\{\{\s*(.+?)\s*\}\}/g;
  function getName(q, labels) {
    let legend = metricNameFromLabels(labels);
    if (q.legendFormat === '__auto') {
      if (Object.keys(labels).length > 0) legend = '';
    } else if (q.legendFormat) {
      legend = q.legendFormat.replace(LEGEND_FORMAT_REGEXP, (m) => {
        const name = m.replace('{{', '').replace('}}', '').trim();
        return Object.prototype.hasOwnProperty.call(labels, name) ? labels[name] : '';
      });
    }
    if (legend === '{}') return q.expr;
    return legend;
  }
  function framesFromResponse(q, json) {
    const d = json.data || {};
    const frames = [];
    const add = (labels, values) => {
      const custom = getName(q, labels);
      const field = { name: 'Value', labels, config: {}, values: values.map((v) => v[1]), times: values.map((v) => v[0] * 1000) };
      if (custom !== '') field.config.displayNameFromDS = custom;
      frames.push({ name: custom, refId: q.refId, fields: [field] });
    };
    if (d.resultType === 'matrix') for (const s of d.result) add(s.metric || {}, s.values || []);
    else if (d.resultType === 'vector') for (const s of d.result) add(s.metric || {}, s.value ? [s.value] : []);
    else if (d.resultType === 'scalar' || d.resultType === 'string') add({}, [d.result]);
    return frames;
  }
  function runQuery(q) {
    if (q.type === 'instant') {
      return promRequest('/api/v1/query', { query: q.expr, time: String(q.end / 1000) });
    }
    return promRequest('/api/v1/query_range', {
      query: q.expr, start: String(q.start / 1000), end: String(q.end / 1000), step: String(q.stepMs / 1000),
    });
  }

  // ------------------------------------------------------------------------------------------
  // The frontend's display names (fieldState.ts) and field config display names
  // ------------------------------------------------------------------------------------------
  function formatLabels(labels) {
    const keys = Object.keys(labels || {}).sort();
    if (!keys.length) return '';
    return '{' + keys.map((k) => `${k}="${labels[k]}"`).join(', ') + '}';
  }
  function getSingleLabelName(frames) {
    let single = null;
    for (const f of frames) {
      for (const field of f.fields) {
        if (!field.labels) continue;
        for (const key in field.labels) {
          if (single === null) single = key;
          else if (key !== single) return null;
        }
      }
    }
    return single;
  }
  function calculateFieldDisplayName(field, frame, allFrames) {
    if (frame && field.config.displayNameFromDS) return field.config.displayNameFromDS;
    const parts = [];
    let frameNamesDiffer = false;
    if (allFrames && allFrames.length > 1) {
      for (let i = 1; i < allFrames.length; i++) if (allFrames[i].name !== allFrames[i - 1].name) { frameNamesDiffer = true; break; }
    }
    let frameNameAdded = false, labelsAdded = false;
    if (frameNamesDiffer && frame && frame.name) { parts.push(frame.name); frameNameAdded = true; }
    if (field.name && field.name !== 'Value') parts.push(field.name);
    if (field.labels && frame) {
      const single = getSingleLabelName(allFrames || [frame]);
      if (!single) {
        const all = formatLabels(field.labels);
        if (all) { parts.push(all); labelsAdded = true; }
      } else if (field.labels[single]) {
        parts.push(field.labels[single]); labelsAdded = true;
      }
    }
    if (frame && !frameNameAdded && !labelsAdded && field.name === 'Value' && frame.name) parts.push(frame.name);
    if (parts.length) return parts.join(' ');
    return field.name || 'Value';
  }
  function overrideMatches(matcher, field, frame, name) {
    if (!matcher) return false;
    const opt = matcher.options;
    switch (matcher.id) {
      case 'byName': return opt === name;
      case 'byRegexp': try { return stringToJsRegex(String(opt)).test(name); } catch (e) { return false; }
      case 'byFrameRefID': return opt === frame.refId;
      case 'byType': return opt === 'number';
      default: return false;
    }
  }
  function displayTemplate(tpl, field, frame, baseName, scopedVars) {
    const vars = { ...scopedVars };
    let out = String(tpl).replace(/\$\{__field\.labels\.([^}:]+)(?::[^}]*)?\}/g, (m, k) => (field.labels || {})[k] ?? '');
    out = out.replace(/\$\{__field\.labels(?::[^}]*)?\}/g, () => formatLabels(field.labels).replace(/^\{|\}$/g, ''));
    out = out.replace(/\$\{__field\.name\}/g, baseName).replace(/\$\{__field\.displayName\}/g, baseName);
    out = out.replace(/\$\{__series\.name\}/g, frame.name || baseName);
    return replace(out, vars);
  }
  function seriesDisplayNames(panel, frames, scopedVars) {
    const fc = panel.fieldConfig || {};
    const out = [];
    for (const frame of frames) {
      for (const field of frame.fields) {
        const base = calculateFieldDisplayName(field, frame, frames);
        let displayName = (fc.defaults || {}).displayName;
        for (const o of fc.overrides || []) {
          if (!overrideMatches(o.matcher, field, frame, base)) continue;
          for (const p of o.properties || []) if (p.id === 'displayName') displayName = p.value;
        }
        const name = displayName ? displayTemplate(displayName, field, frame, base, scopedVars) : base;
        out.push({ refId: frame.refId, name, base, labels: field.labels, points: field.values.length });
      }
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Panels
  // ------------------------------------------------------------------------------------------
  function flattenPanels(dashboard) {
    const out = [];
    const repeatValues = (varName) => {
      const v = VARS.get(varName);
      if (!v) return [];
      let vals = v.current.value, texts = v.current.text;
      if (isAllValue(vals)) { vals = v.options.filter((o) => o.value !== ALL_VALUE).map((o) => o.value); texts = vals; }
      vals = Array.isArray(vals) ? vals : [vals];
      texts = Array.isArray(texts) ? texts : [texts];
      return vals.map((val, i) => ({ value: val, text: texts[i] ?? val }));
    };
    const withRepeat = (p, row, scoped) => {
      if (p.repeat && VARS.get(p.repeat)) {
        repeatValues(p.repeat).forEach((rv, i) => {
          out.push({ panel: p, row, scopedVars: { ...scoped, [p.repeat]: rv }, repeatIndex: i });
        });
      } else out.push({ panel: p, row, scopedVars: scoped, repeatIndex: null });
    };
    let row = null;
    for (const p of dashboard.panels || []) {
      if (p.type === 'row') {
        const rows = p.repeat && VARS.get(p.repeat) ? repeatValues(p.repeat).map((rv) => ({ [p.repeat]: rv })) : [{}];
        row = { title: p.title || '', collapsed: !!p.collapsed, id: p.id, scopedVars: rows[0] };
        for (const scoped of rows) {
          const r = { title: p.title || '', collapsed: !!p.collapsed, id: p.id, scopedVars: scoped };
          for (const child of p.panels || []) withRepeat(child, r, scoped);
        }
        continue;
      }
      withRepeat(p, row, row ? row.scopedVars : {});
    }
    return out;
  }
  function panelDatasourceOk(ds, scopedVars) {
    if (!ds) return true; // the default datasource
    if (typeof ds === 'string') { const n = replace(ds, scopedVars); return n === DS.name || n === DS.uid || n === 'default'; }
    const uid = ds.uid ? replace(ds.uid, scopedVars) : undefined;
    if (uid === '-- Mixed --') return 'mixed';
    if (ds.type && ds.type !== 'prometheus' && ds.type !== 'datasource') return false;
    if (ds.type === 'datasource') return false; // -- Dashboard --
    return !uid || uid === DS.uid || uid === DS.name || ds.type === 'prometheus';
  }
  function legendHidden(panel) {
    const o = panel.options || {};
    if (o.legend && (o.legend.showLegend === false || o.legend.displayMode === 'hidden')) return true;
    if (panel.legend && panel.legend.show === false) return true; // legacy graph panel
    return false;
  }
  async function renderPanel(item, dashboard, node) {
    const { panel, scopedVars } = item;
    const rangeMs = TO - FROM;
    const content = node.querySelector('.panel-content');
    const width = Math.max(1, Math.floor(content.clientWidth));
    const maxDataPoints = panel.maxDataPoints || FIXED_MAX_DATA_POINTS || width;
    const minInterval = panel.interval ? replace(panel.interval, scopedVars) : DS.interval;
    const result = {
      id: panel.id, title: replace(panel.title || '', scopedVars), type: panel.type,
      row: item.row ? item.row.title : null, collapsed_row: item.row ? item.row.collapsed : false,
      repeat: panel.repeat || null, scoped_vars: Object.fromEntries(Object.entries(scopedVars).map(([k, v]) => [k, v.value])),
      description: panel.description || '', max_data_points: maxDataPoints, interval_ms: null, queries: [], legends: [],
      legend_hidden: legendHidden(panel), ignored_transformations: (panel.transformations || []).map((t) => t.id), error: null,
    };
    try {
      if (panel.libraryPanel) throw new Error('library panels are not supported');
      const dsOk = panelDatasourceOk(panel.datasource, scopedVars);
      if (dsOk === false) throw new Error(`datasource ${JSON.stringify(panel.datasource)} is not supported (only Prometheus)`);
      const front = calculateInterval(rangeMs, maxDataPoints, minInterval);
      result.interval_ms = front.intervalMs;
      const queries = [];
      for (const t of panel.targets || []) {
        if (t.hide) continue;
        const tds = t.datasource ? panelDatasourceOk(t.datasource, scopedVars) : dsOk;
        if (tds === false || tds === 'mixed') {
          queries.push({ refId: t.refId, error: `datasource ${JSON.stringify(t.datasource)} is not supported (only Prometheus)`, raw: t });
          continue;
        }
        // applyTemplateVariables: $__interval and $__interval_ms are left for the backend
        const vars = { ...scopedVars, __interval: { value: '$__interval' }, __interval_ms: { value: '$__interval_ms' } };
        const exprFront = replace(t.expr || '', vars, interpolateQueryExpr);
        const legendFormat = t.legendFormat ? replace(t.legendFormat, vars) : t.legendFormat;
        const minStep = t.interval ? replace(t.interval, vars) : '';
        const types = [];
        if (t.instant && t.range) types.push(['range', t.refId], ['instant', t.refId + '-Instant']);
        else types.push([t.instant ? 'instant' : 'range', t.refId]);
        for (const [type, refId] of types) {
          const stepMs = calculatePrometheusInterval(minStep, DS.timeInterval, front.intervalMs, t.intervalFactor, rangeMs, maxDataPoints);
          const { expr, rateMs } = interpolateBuiltins(exprFront, front.intervalMs, stepMs, minStep, DS.timeInterval, rangeMs);
          const off = utcOffsetSec(dashboard);
          queries.push({
            refId, type, expr, rawExpr: t.expr || '', legendFormat: legendFormat || '', stepMs, rateMs,
            start: alignTime(FROM, stepMs, off), end: type === 'instant' ? TO : alignTime(TO, stepMs, off), raw: t,
          });
        }
      }
      const frames = [];
      await Promise.all(queries.map(async (q) => {
        if (q.error) return;
        try {
          q.frames = framesFromResponse(q, await runQuery(q));
        } catch (e) { q.error = String(e.message || e); q.frames = []; }
      }));
      for (const q of queries) {
        if (q.frames) frames.push(...q.frames);
        result.queries.push({
          refId: q.refId, type: q.type || null, expr: q.rawExpr ?? (q.raw && q.raw.expr) ?? '', expr_interpolated: q.expr ?? null,
          legend_format: q.legendFormat ?? '', step_ms: q.stepMs ?? null, rate_interval_ms: q.rateMs ?? null,
          series: q.frames ? q.frames.length : 0, error: q.error || null,
        });
      }
      result.legends = seriesDisplayNames(panel, frames, scopedVars);
    } catch (e) {
      result.error = String(e.message || e);
    }
    return result;
  }
  function panelNode(item, index) {
    const p = item.panel;
    const g = p.gridPos || { x: 0, y: index * 8, w: 12, h: 8 };
    const node = el('article', {
      class: 'panel',
      style: `grid-column: ${(g.x || 0) + 1} / span ${g.w || 12}; grid-row: ${(g.y || 0) + 1} / span ${g.h || 8};`,
    });
    node.appendChild(el('h3', {}, p.title || ''));
    node.appendChild(el('div', { class: 'panel-content' }));
    return node;
  }
  function fillPanelNode(node, r) {
    const attrs = {
      'data-panel-id': String(r.id), 'data-panel-title': r.title, 'data-panel-type': r.type || '',
      'data-row': r.row ?? '', 'data-collapsed-row': String(r.collapsed_row), 'data-error': r.error || '',
      'data-description': r.description, 'data-max-data-points': String(r.max_data_points),
      'data-interval-ms': r.interval_ms === null ? '' : String(r.interval_ms), 'data-legend-hidden': String(r.legend_hidden),
      'data-repeat': r.repeat || '', 'data-scoped-vars': JSON.stringify(r.scoped_vars),
      'data-ignored-transformations': JSON.stringify(r.ignored_transformations),
    };
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.querySelector('h3').textContent = r.title;
    const content = node.querySelector('.panel-content');
    const qs = el('div', { class: 'queries' });
    for (const q of r.queries) {
      qs.appendChild(el('code', {
        class: 'query', 'data-ref-id': q.refId || '', 'data-query-type': q.type || '', 'data-expr': q.expr || '',
        'data-expr-interpolated': q.expr_interpolated ?? '', 'data-legend-format': q.legend_format || '',
        'data-step-ms': q.step_ms === null ? '' : String(q.step_ms),
        'data-rate-interval-ms': q.rate_interval_ms === null ? '' : String(q.rate_interval_ms),
        'data-series': String(q.series), 'data-error': q.error || '',
      }, `${q.refId}: ${q.expr_interpolated ?? ''}${q.error ? '  ERROR ' + q.error : ''}`));
    }
    content.appendChild(qs);
    const legend = el('ul', { class: 'legend', 'data-hidden': String(r.legend_hidden) });
    for (const l of r.legends) {
      legend.appendChild(el('li', { class: 'legend-item', 'data-ref-id': l.refId || '', 'data-labels': JSON.stringify(l.labels || {}),
        'data-points': String(l.points) }, l.name));
    }
    content.appendChild(legend);
    if (r.error) content.appendChild(el('p', { class: 'panel-error' }, r.error));
  }

  // ------------------------------------------------------------------------------------------
  // Annotations
  // ------------------------------------------------------------------------------------------
  function renderLegendFormat(fmt, labels) { // @grafana/data renderLegendFormat
    if (!fmt) return '';
    return fmt.replace(/\{\{\s*(.+?)\s*\}\}/g, (m, name) => (labels[name] !== undefined ? labels[name] : ''));
  }
  async function runAnnotation(raw, dashboard) {
    const rec = {
      name: raw.name || '', enabled: raw.enable !== false, state: 'ok', error: null, expr: null, expr_interpolated: null,
      step_ms: null, use_value_for_time: !!raw.useValueForTime, title_format: raw.titleFormat || '',
      tag_keys: raw.tagKeys || '', events: [],
    };
    const ds = raw.datasource;
    const dsType = ds && typeof ds === 'object' ? ds.type : null;
    const dsUid = ds && typeof ds === 'object' ? ds.uid : ds;
    if (raw.builtIn || dsType === 'grafana' || dsType === 'dashboard' || dsUid === '-- Grafana --' || dsUid === 'grafana') {
      rec.state = 'unsupported';
      rec.error = "Grafana's own annotation store (built-in annotations) is not part of the stand-in";
      return rec;
    }
    if (dsType && dsType !== 'prometheus') {
      rec.state = 'unsupported'; rec.error = `annotation datasource type ${dsType} is not supported`; return rec;
    }
    if (!rec.enabled) { rec.state = 'disabled'; return rec; }
    // PrometheusAnnotationSupport.prepareAnnotation
    const target = { ...(raw.target || {}) };
    target.refId = target.refId || raw.refId || 'Anno';
    target.expr = target.expr || raw.expr || '';
    target.interval = target.interval || raw.step || '';
    rec.expr = target.expr;
    if (!target.expr) { rec.state = 'empty'; return rec; }
    try {
      // executeAnnotationQuery: maxDataPoints = window width, interval from the datasource's
      const maxDataPoints = window.innerWidth || document.documentElement.clientWidth;
      const rangeMs = TO - FROM;
      const front = calculateInterval(rangeMs, maxDataPoints, DS.interval);
      const vars = { __interval: { value: '$__interval' }, __interval_ms: { value: '$__interval_ms' } };
      const exprFront = replace(target.expr, vars, interpolateQueryExpr);
      const minStep = target.interval ? replace(target.interval, vars) : '';
      const stepMs = calculatePrometheusInterval(minStep, DS.timeInterval, front.intervalMs, target.intervalFactor, rangeMs, maxDataPoints);
      const { expr } = interpolateBuiltins(exprFront, front.intervalMs, stepMs, minStep, DS.timeInterval, rangeMs);
      const off = utcOffsetSec(dashboard);
      const q = { refId: target.refId, type: 'range', expr, legendFormat: target.legendFormat || '', stepMs,
        start: alignTime(FROM, stepMs, off), end: alignTime(TO, stepMs, off) };
      rec.expr_interpolated = expr;
      rec.step_ms = stepMs;
      const frames = framesFromResponse(q, await runQuery(q));
      // processEvents: the step for grouping comes from the executed query string "Step: <Go duration>"
      const executed = 'Expr: ' + expr + '\nStep: ' + goDurationString(stepMs);
      const m = executed.match(/Step:\s*([\d\w]+)/);
      const groupStep = intervalToSeconds(m ? m[1] : '60s') * 1000;
      const tagKeys = (raw.tagKeys || '').split(',');
      for (const frame of frames) {
        const field = frame.fields[0];
        const labels = field.labels || {};
        const tags = Object.keys(labels).filter((l) => tagKeys.includes(l)).map((l) => labels[l]);
        const tv = field.values.map((value, i) => (raw.useValueForTime
          ? [Math.floor(parseFloat(value)), 1]
          : [Math.floor(field.times[i]), parseFloat(value)]));
        const active = tv.filter((x) => x[1] > 0).map((x) => x[0]);
        let latest = null;
        for (const ts of active) {
          if (latest && (latest.timeEnd ?? 0) + groupStep >= ts) { latest.timeEnd = ts; continue; }
          if (latest) rec.events.push(latest);
          latest = { time: ts, timeEnd: ts, title: renderLegendFormat(raw.titleFormat || '', labels), tags,
            text: renderLegendFormat(raw.textFormat || '', labels), labels };
        }
        if (latest) { latest.timeEnd = active[active.length - 1]; rec.events.push(latest); }
      }
    } catch (e) {
      rec.state = 'error';
      rec.error = String(e.message || e);
    }
    return rec;
  }
  function annotationNode(rec) {
    const node = el('div', {
      class: 'annotation-query', 'data-name': rec.name, 'data-state': rec.state, 'data-error': rec.error || '',
      'data-expr': rec.expr || '', 'data-expr-interpolated': rec.expr_interpolated || '',
      'data-step-ms': rec.step_ms === null ? '' : String(rec.step_ms), 'data-use-value-for-time': String(rec.use_value_for_time),
    }, null);
    node.appendChild(el('strong', {}, rec.name));
    const list = el('ul', { class: 'annotation-events' });
    for (const ev of rec.events) {
      list.appendChild(el('li', {
        class: 'annotation', 'data-annotation-name': rec.name, 'data-time-ms': String(ev.time),
        'data-time-end-ms': String(ev.timeEnd), 'data-title': ev.title, 'data-text': ev.text,
        'data-tags': JSON.stringify(ev.tags), 'data-labels': JSON.stringify(ev.labels),
      }, `${new Date(ev.time).toISOString()} ${ev.title} [${ev.tags.join(', ')}]`));
    }
    node.appendChild(list);
    return node;
  }

  // ------------------------------------------------------------------------------------------
  // Main
  // ------------------------------------------------------------------------------------------
  function variableNode(v) {
    const node = el('div', {
      class: 'variable', 'data-name': v.name, 'data-type': v.type, 'data-multi': String(v.multi),
      'data-include-all': String(v.includeAll), 'data-all-value': v.allValue ?? '',
      'data-current-value': JSON.stringify(v.current.value), 'data-current-text': JSON.stringify(v.current.text),
      'data-options': JSON.stringify(v.options), 'data-error': v.error || '',
    });
    node.textContent = `${v.label || v.name}: ${Array.isArray(v.current.text) ? v.current.text.join(' + ') : v.current.text}`;
    return node;
  }
  async function main() {
    if (!PROM) throw new Error('no prometheus= parameter');
    if (!Number.isFinite(FROM) || !Number.isFinite(TO) || TO <= FROM) throw new Error('from= and to= must be times in ms, from < to');
    const resp = await fetch(params.get('dashboard') || 'dashboard.json');
    if (!resp.ok) throw new Error(`dashboard: HTTP ${resp.status}`);
    const text = await resp.text();
    let dashboard = JSON.parse(text);
    if (dashboard.dashboard && !dashboard.panels) dashboard = dashboard.dashboard; // an API export wrapper
    state.dashboard = { uid: dashboard.uid || null, title: dashboard.title || '', schemaVersion: dashboard.schemaVersion ?? null };
    $('#dashboard-title').textContent = dashboard.title || '';

    for (const raw of (dashboard.templating || {}).list || []) {
      const v = await resolveVariable(raw);
      state.variables.push({ name: v.name, type: v.type, multi: v.multi, include_all: v.includeAll,
        all_value: v.allValue, current: v.current, options: v.options, error: v.error });
      $('#variables').appendChild(variableNode(v));
    }

    const annoPromise = Promise.all(((dashboard.annotations || {}).list || []).map((a) => runAnnotation(a, dashboard)));

    const items = flattenPanels(dashboard);
    const nodes = items.map((item, i) => {
      const node = panelNode(item, i);
      $('#panels').appendChild(node);
      return node;
    });
    await new Promise((r) => requestAnimationFrame(() => r())); // layout, so widths are measured
    const panelResults = await Promise.all(items.map((item, i) => renderPanel(item, dashboard, nodes[i])));
    panelResults.forEach((r, i) => { fillPanelNode(nodes[i], r); state.panels.push(r); });

    for (const rec of await annoPromise) {
      state.annotations.push(rec);
      $('#annotations').appendChild(annotationNode(rec));
    }
  }
  // The pure functions, for tests/test_dashboard_browser.py's check against Grafana's own test vectors.
  window.__standinInternals = {
    calculateInterval, calculatePrometheusInterval, interpolateBuiltins, alignTime, goDurationString,
    goFormatInterval, getName, metricNameFromLabels, calculateFieldDisplayName, interpolateQueryExpr, replace,
  };
  main().then(() => {
    state.state = 'done';
    $('#dashboard').setAttribute('data-state', 'done');
  }, (e) => {
    state.state = 'error';
    state.error = String((e && e.message) || e);
    $('#dashboard').setAttribute('data-state', 'error');
    $('#dashboard').setAttribute('data-error', state.error);
    $('#dashboard-error').textContent = state.error;
  });
})();
