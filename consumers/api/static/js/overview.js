// Overview: realtime tiles, the day's power graph (previous / today / next, ?date=), the day's totals.
import { $, h, api, site, header, fmtPower, fmtEnergy, fmtMoney, fmtTime, localDate, addDays, liveFeed,
  chart, empty, badge, color, COLORS } from './common.js';

header('/');
const main = $('#main');
const info = await site();
const tz = info.timezone;
const params = new URLSearchParams(location.search);
const today = localDate(Date.now(), tz);
const day = /^\d{4}-\d{2}-\d{2}$/.test(params.get('date') || '') ? params.get('date') : today;

const summary = h('div', { class: 'tiles', id: 'summary' });
const devTiles = h('div', { class: 'tiles', id: 'devices' });
const chartEl = h('div', { class: 'chart', id: 'day-chart' });
const totalsEl = h('div', { class: 'totals', id: 'totals' });
const dayNav = h('div', { class: 'toolbar' },
  h('a', { class: 'btn', href: '?date=' + addDays(day, -1), id: 'prev', text: '◀ Previous' }),
  h('a', { class: 'btn', href: '?', id: 'today', text: 'Today' }),
  h('a', { class: 'btn', href: '?date=' + addDays(day, 1), id: 'next', text: 'Next ▶' }),
  h('input', { type: 'date', id: 'pick', value: day }));
main.append(
  h('section', { class: 'card' }, h('h2', {}, 'Now', h('span', { class: 'sub', text: tz })), summary,
    h('div', { style: 'height:.75rem' }), devTiles),
  h('section', { class: 'card' }, h('h2', {}, 'Power on ', h('span', { id: 'day-label', text: day })), dayNav,
    chartEl),
  h('section', { class: 'card' }, h('h2', {}, 'Totals of the day'), totalsEl));
$('#pick').addEventListener('change', (e) => { if (e.target.value) location.search = '?date=' + e.target.value; });

// -- realtime tiles -----------------------------------------------------------------------------------
const devices = await api('/devices');
const power = new Map(devices.map((d) => [d.source + '/' + d.device, d.power_w]));
const tileOf = new Map();

function deviceTile(d) {
  const key = d.source + '/' + d.device;
  const value = h('div', { class: 'value', text: fmtPower(d.power_w) });
  const when = h('span', { text: d.last_ts ? fmtTime(d.last_ts, tz, { timeStyle: 'short' }) : '' });
  const status = badge(d.status);
  const tile = h('div', { class: 'tile device', 'data-device': key },
    h('div', { class: 'label', title: key, text: d.device + ' · ' + d.source + (d.role ? ' · ' + d.role : '') }),
    value, h('div', { class: 'meta' }, status, when));
  tileOf.set(key, { tile, value, when, status });
  return tile;
}

function summaryTiles() {
  const sum = (keys) => keys.reduce((a, k) => (power.get(k) === null || power.get(k) === undefined ? a
    : (a ?? 0) + power.get(k)), null);
  const grid = info.grid.length ? sum(info.grid) : null;
  const solar = info.solar.length ? sum(info.solar) : null;
  const home = grid !== null || solar !== null ? (grid ?? 0) + (solar ?? 0) : null;
  summary.textContent = '';
  if (!info.grid.length && !info.solar.length) {
    summary.append(h('p', { class: 'note', text: 'No grid or solar meter configured: every device is below. ' +
      'Give producers role = "grid" / "solar" (or set grid/solar in [consumer.api]) for the site tiles.' }));
    return;
  }
  const tile = (cls, label, value, id) => h('div', { class: 'tile ' + cls, id },
    h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
  summary.append(
    tile('import', 'Grid import', fmtPower(grid !== null && grid > 0 ? grid : 0), 'tile-import'),
    tile('export', 'Grid export', fmtPower(grid !== null && grid < 0 ? -grid : 0), 'tile-export'),
    tile('solar', 'Solar', fmtPower(solar), 'tile-solar'),
    tile('home', 'Home', fmtPower(home), 'tile-home'));
}

const shown = devices.filter((d) => d.source !== 'site');
if (!shown.length) empty(devTiles, 'No device has sent a reading yet.');
for (const d of shown) devTiles.append(deviceTile(d));
summaryTiles();

liveFeed('events=reading,status', {
  reading: (r) => {
    const key = r.source + '/' + r.device;
    if (r.metrics.power_w === undefined) return;
    power.set(key, r.metrics.power_w);
    let t = tileOf.get(key);
    if (!t) {
      if (devTiles.querySelector('.empty')) devTiles.textContent = '';
      devTiles.append(deviceTile({ source: r.source, device: r.device, power_w: r.metrics.power_w, status: 'online',
        last_ts: r.ts }));
      t = tileOf.get(key);
    }
    t.value.textContent = fmtPower(r.metrics.power_w);
    t.when.textContent = fmtTime(r.ts, tz, { timeStyle: 'short' });
    t.tile.classList.remove('flash'); void t.tile.offsetWidth; t.tile.classList.add('flash');
    summaryTiles();
  },
  status: (s) => {
    const t = s.source && tileOf.get(s.source + '/' + s.device);
    if (t) t.status.replaceWith(t.status = badge(s.status));
  },
});

// -- the day's power graph ----------------------------------------------------------------------------
const STEP = 300;
let plotted = info.grid.length || info.solar.length ? [...info.grid, ...info.solar]
  : shown.filter((d) => d.role === 'load').map((d) => d.source + '/' + d.device);
if (!plotted.length) plotted = shown.filter((d) => d.source !== 'sim').map((d) => d.source + '/' + d.device);

async function dayChart() {
  const next = addDays(day, 1);
  const got = await Promise.all(plotted.map((key) =>
    api(`/devices/${key}/readings?from=${day}&to=${next}&step=${STEP}s`).catch(() => null)));
  const slots = new Set();
  for (const g of got) if (g) for (const r of g.readings) if (r.metrics.power_w !== undefined) slots.add(r.ts);
  if (!slots.size) {
    const last = Math.max(0, ...shown.map((d) => d.last_ts || 0));
    empty(chartEl, `No readings on ${day}.`);
    if (last) {
      const lastDay = localDate(last, tz);
      chartEl.append(h('a', { class: 'btn', href: '?date=' + lastDay, id: 'latest-day', text: 'Go to the latest day with data: ' + lastDay }));
    }
    return;
  }
  const xs = [...slots].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const series = [];
  const data = [xs.map((t) => t / 1000)];
  got.forEach((g, i) => {
    if (!g) return;
    const ys = xs.map(() => null);
    for (const r of g.readings) if (r.metrics.power_w !== undefined) ys[index.get(r.ts)] = r.metrics.power_w;
    const key = plotted[i];
    const c = info.grid.includes(key) ? COLORS.import : info.solar.includes(key) ? COLORS.solar : color(i);
    series.push({ label: key, color: c });
    data.push(ys);
  });
  if (info.grid.length && info.solar.length) {  // home = grid + solar
    const home = xs.map((_, j) => data.slice(1).reduce((a, ys) => (ys[j] === null ? a : (a ?? 0) + ys[j]), null));
    series.push({ label: 'home', color: COLORS.home });
    data.push(home);
  }
  chart(chartEl, { series, data, tz });
}

// -- totals of the day ---------------------------------------------------------------------------------
async function totals() {
  const next = addDays(day, 1);
  let b = null;
  if (info.site) {
    const page = await api(`/site/1d?from=${day}&to=${next}`);
    b = page.buckets[0] || null;
  }
  const cell = (label, value, id) => h('div', { class: 'total', id },
    h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
  totalsEl.textContent = '';
  totalsEl.append(
    cell('Consumed from the grid', fmtEnergy(b?.grid_import_wh), 'total-consumed'),
    cell('Returned to the grid', fmtEnergy(b?.grid_export_wh), 'total-returned'),
    cell('Direct use of solar', fmtEnergy(b?.self_consumption_wh), 'total-direct'),
    cell('Solar energy', fmtEnergy(b?.solar_wh), 'total-solar'),
    cell('Cost', fmtMoney(b?.cost, b?.currency), 'total-cost'),
    cell('Solar profit', fmtMoney(b?.solar_profit, b?.currency), 'total-profit'));
  if (!b) {
    totalsEl.append(h('p', { class: 'note', text: 'Daily totals come from the aggregate consumer\'s site ' +
      'balance; none for this day yet.' }));
  } else if (b.status !== 'complete' && b.status !== 'closed') {
    totalsEl.append(h('p', { class: 'note', text: `Bucket ${b.status}, coverage ${Math.round(b.coverage * 100)} %.` }));
  }
}

await Promise.all([dayChart(), totals()]);
document.body.dataset.ready = '1';
