// Shared by every dashboard page: API calls, formatting in the site's time zone, the live feed, charts.
/* global uPlot */

export const $ = (sel, el = document) => el.querySelector(sel);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

export async function api(path) {
  const r = await fetch('/api/v1' + path, { headers: { Accept: 'application/json' } });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return r.json();
}

let siteInfo = null;
export async function site() {
  if (!siteInfo) siteInfo = await api('/site');
  return siteInfo;
}

export const PAGES = [['/', 'Overview'], ['/history', 'History'], ['/meters', 'Meters'], ['/processes', 'Processes']];

export function header(active) {
  const nav = h('nav', {}, ...PAGES.map(([href, name]) =>
    h('a', { href, class: href === active ? 'active' : '', text: name })));
  const el = h('header', {},
    h('div', { class: 'brand' }, 'watt', h('span', { text: 'bus' })), nav,
    h('div', { class: 'live', title: 'live feed from the bus' }, h('span', { class: 'dot', id: 'live-dot' }),
      h('span', { id: 'live-text', text: 'connecting' })));
  document.body.prepend(el);
}

export function fmtPower(w) {
  if (w === null || w === undefined || Number.isNaN(w)) return '—';
  const a = Math.abs(w);
  if (a >= 10000) return (w / 1000).toFixed(1) + ' kW';
  if (a >= 1000) return (w / 1000).toFixed(2) + ' kW';
  return Math.round(w) + ' W';
}

export function fmtEnergy(wh) {
  if (wh === null || wh === undefined) return '—';
  const a = Math.abs(wh);
  if (a >= 1e6) return (wh / 1e6).toFixed(2) + ' MWh';
  if (a >= 1000) return (wh / 1000).toFixed(a >= 100000 ? 0 : 2) + ' kWh';
  return Math.round(wh) + ' Wh';
}

export function fmtMoney(v, currency) {
  if (v === null || v === undefined) return '—';
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency || 'EUR' }).format(v);
  } catch (e) {
    return v.toFixed(2) + ' ' + (currency || '');
  }
}

export function fmtTime(ms, tz, opts = { dateStyle: 'medium', timeStyle: 'short' }) {
  if (ms === null || ms === undefined) return '—';
  return new Intl.DateTimeFormat(undefined, { timeZone: tz, ...opts }).format(new Date(ms));
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 90) return Math.round(seconds) + ' s';
  if (seconds < 5400) return Math.round(seconds / 60) + ' min';
  if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
  return Math.round(seconds / 86400) + ' d';
}

/** 'YYYY-MM-DD' of an instant in the site's time zone. */
export function localDate(ms, tz) {
  return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' })
    .format(new Date(ms));
}

/** Calendar arithmetic on 'YYYY-MM-DD' strings (no time zone involved). */
export function addDays(day, n) {
  const d = new Date(day + 'T00:00:00Z');
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function addMonths(day, n) {
  const d = new Date(day.slice(0, 7) + '-01T00:00:00Z');
  d.setUTCMonth(d.getUTCMonth() + n);
  return d.toISOString().slice(0, 10);
}

export function weekday(day) { return (new Date(day + 'T00:00:00Z').getUTCDay() + 6) % 7; } // Monday = 0

export function liveFeed(query, handlers) {
  const dot = $('#live-dot');
  const text = $('#live-text');
  const es = new EventSource('/api/v1/live' + (query ? '?' + query : ''));
  es.onopen = () => { dot && dot.classList.add('on'); if (text) text.textContent = 'live'; };
  es.onerror = () => { dot && dot.classList.remove('on'); if (text) text.textContent = 'reconnecting'; };
  for (const [event, fn] of Object.entries(handlers)) {
    es.addEventListener(event, (e) => fn(JSON.parse(e.data)));
  }
  return es;
}

export const COLORS = { import: '#e4572e', export: '#17a398', solar: '#f2a900', home: '#3f51b5' };
const PALETTE = ['#2563eb', '#e4572e', '#17a398', '#f2a900', '#9333ea', '#0891b2', '#65a30d', '#db2777'];
export const color = (i) => PALETTE[i % PALETTE.length];

function sizeOf(el, height) {
  return { width: Math.max(280, el.clientWidth), height };
}

/** A uPlot chart that follows its container's width; ``xs`` in seconds, times shown in ``tz``. */
export function chart(el, { series, data, tz, height = 280, bars = false, yFormat = fmtPower, xFormat }) {
  el.textContent = '';
  const n = data[0].length;
  const opts = {
    ...sizeOf(el, height),
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
    // bars: x is the slot index (0..n-1) so every bar gets its own label and room
    scales: bars ? { x: { time: false, range: [-0.5, n - 0.5] } } : {},
    axes: [
      bars ? { splits: () => data[0].filter((i) => n <= 16 || i % Math.ceil(n / 16) === 0),
        values: (u, splits) => splits.map((v) => xFormat(v)), space: 10, gap: 4 } : { space: 60 },
      { values: (u, splits) => splits.map((v) => yFormat(v)), size: 84 },
    ],
    legend: { live: true },
    cursor: { points: { size: 6 } },
    series: [
      bars ? { label: 'when', value: (u, v) => (v === null || v === undefined ? '—' : xFormat(v)) } : {},
      ...series.map((s, i) => ({
        label: s.label, stroke: s.color, width: bars ? 1 : 2,
        fill: bars ? s.color : s.fill || undefined,
        value: (u, v) => (v === null || v === undefined ? '—' : yFormat(v)),
        // nested bars: each further series a narrower bar drawn over the previous, all readable
        paths: bars ? uPlot.paths.bars({ size: [0.8 * (1 - 0.3 * i), 80], align: 0 }) : undefined,
        points: { show: false },
      })),
    ],
  };
  const plot = new uPlot(opts, data, el);
  const ro = new ResizeObserver(() => plot.setSize(sizeOf(el, height)));
  ro.observe(el);
  return plot;
}

export function empty(el, message) {
  el.textContent = '';
  el.append(h('div', { class: 'empty', text: message }));
}

export function badge(status) {
  return h('span', { class: 'badge ' + (status || ''), text: status || 'unknown' });
}
