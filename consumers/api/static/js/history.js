// History: week / month / year bars of grid import, export and solar production (aggregate buckets).
import { $, h, api, site, header, fmtEnergy, localDate, addDays, addMonths, weekday, liveFeed, chart, empty,
  COLORS, color } from './common.js';

header('/history');
const main = $('#main');
const info = await site();
const tz = info.timezone;
const params = new URLSearchParams(location.search);
const span = ['week', 'month', 'year'].includes(params.get('span')) ? params.get('span') : 'week';
const anchor = /^\d{4}-\d{2}-\d{2}$/.test(params.get('date') || '') ? params.get('date') : localDate(Date.now(), tz);

function range(kind, d) {
  if (kind === 'week') { const from = addDays(d, -weekday(d)); return [from, addDays(from, 7), '1d', -7, 7]; }
  if (kind === 'month') { const from = d.slice(0, 7) + '-01'; return [from, addMonths(from, 1), '1d', 'm-1', 'm+1']; }
  const from = d.slice(0, 4) + '-01-01';
  return [from, (Number(d.slice(0, 4)) + 1) + '-01-01', '1mo', 'y-1', 'y+1'];
}
const [from, to, period] = range(span, anchor);
const shift = (n) => span === 'week' ? addDays(from, 7 * n) : span === 'month' ? addMonths(from, n)
  : (Number(from.slice(0, 4)) + n) + '-01-01';
const link = (s, d) => `?span=${s}&date=${d}`;

const chartEl = h('div', { class: 'chart', id: 'bars' });
const sumEl = h('div', { class: 'totals', id: 'span-totals' });
main.append(h('section', { class: 'card' },
  h('h2', {}, 'Energy by ' + (period === '1d' ? 'day' : 'month'), h('span', { class: 'sub', id: 'span-label',
    text: `${from} – ${addDays(to, -1)}` })),
  h('div', { class: 'toolbar' },
    ...['week', 'month', 'year'].map((s) => h('a', { class: 'btn' + (s === span ? ' active' : ''), href: link(s, anchor),
      text: s[0].toUpperCase() + s.slice(1), style: s === span ? 'background:#2563eb;color:#fff' : undefined })),
    h('a', { class: 'btn', id: 'prev', href: link(span, shift(-1)), text: '◀' }),
    h('a', { class: 'btn', id: 'next', href: link(span, shift(1)), text: '▶' })),
  chartEl, h('div', { style: 'height:.75rem' }), sumEl));

// Which buckets: the site balance when there is one, else the grid / solar devices, else every load device.
const devices = await api('/devices');
let sources;
if (info.site) {
  sources = [{ path: `/site/${period}`, fields: [['grid_import_wh', 'import', COLORS.import],
    ['solar_wh', 'production', COLORS.solar], ['grid_export_wh', 'export', COLORS.export]] }];
} else if (info.grid.length || info.solar.length) {
  sources = [
    ...info.grid.map((k) => ({ path: `/energy/${period}?source=${k.split('/')[0]}&device=${k.split('/')[1]}`,
      fields: [['energy_import_wh', 'import ' + k, COLORS.import], ['energy_export_wh', 'export ' + k, COLORS.export]] })),
    ...info.solar.map((k) => ({ path: `/energy/${period}?source=${k.split('/')[0]}&device=${k.split('/')[1]}`,
      fields: [['energy_import_wh', 'production ' + k, COLORS.solar]] }))];
} else {
  sources = devices.filter((d) => d.source !== 'sim' && d.source !== 'site' && d.role !== 'solar')
    .map((d, i) => ({ path: `/energy/${period}?source=${d.source}&device=${d.device}`,
      fields: [['energy_import_wh', d.device, color(i)]] }));
}

async function draw() {
  const pages = await Promise.all(sources.map((s) =>
    api(`${s.path}${s.path.includes('?') ? '&' : '?'}from=${from}&to=${to}`).catch(() => null)));
  const starts = new Set();
  pages.forEach((p) => p && p.buckets.forEach((b) => starts.add(b.start)));
  if (!starts.size) {
    empty(chartEl, `No ${period} buckets between ${from} and ${addDays(to, -1)}: the aggregate consumer writes them.`);
    sumEl.textContent = '';
    return;
  }
  const xs = [...starts].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const series = [];
  const data = [xs.map((_, i) => i)];
  const totals = [];
  pages.forEach((p, i) => {
    if (!p) return;
    for (const [field, label, c] of sources[i].fields) {
      const ys = xs.map(() => null);
      let total = 0;
      for (const b of p.buckets) if (b[field] !== undefined && b[field] !== null) { ys[index.get(b.start)] = b[field]; total += b[field]; }
      series.push({ label, color: c });
      data.push(ys);
      totals.push([label, total, c]);
    }
  });
  const fmt = new Intl.DateTimeFormat(undefined, period === '1mo' ? { timeZone: tz, month: 'short' }
    : span === 'week' ? { timeZone: tz, weekday: 'short', day: 'numeric' } : { timeZone: tz, day: 'numeric' });
  const labels = xs.map((t) => fmt.format(new Date(t)));
  const axisEnergy = (v) => (Math.abs(v) >= 10000 ? (v / 1000).toFixed(0) : (v / 1000).toFixed(1)) + ' kWh';
  chart(chartEl, { series, data, tz, bars: true, yFormat: axisEnergy, xFormat: (i) => labels[i] ?? '' });
  sumEl.textContent = '';
  for (const [label, total, c] of totals) {
    sumEl.append(h('div', { class: 'total' }, h('div', { class: 'label' }, h('span', { class: 'legend-key',
      style: 'background:' + c }), label), h('div', { class: 'value', text: fmtEnergy(total) })));
  }
}

await draw();
liveFeed('events=status', {});
document.body.dataset.ready = '1';
