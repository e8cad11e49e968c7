// The simulated meters' head end (seed 004): meters, heartbeats, one meter's day.
import { $, h, api, site, header, fmtPower, fmtEnergy, fmtTime, fmtAge, localDate, addDays, liveFeed, chart,
  empty, badge, COLORS } from './common.js';

header('/meters');
const main = $('#main');
const info = await site();
const tz = info.timezone;
const params = new URLSearchParams(location.search);
const meters = await api('/meters');
const serial = params.get('serial') || (meters[0] && meters[0].serial);

const table = h('table', { id: 'meters' });
main.append(h('section', { class: 'card' }, h('h2', {}, 'Meters', h('span', { class: 'sub', text: meters.length + ' simulated' })),
  h('div', { class: 'scroll' }, table)));

function renderTable(list) {
  table.textContent = '';
  table.append(h('tr', {}, ...['Meter', 'Status', 'Heartbeat', 'Upload', 'Import', 'Export'].map((t, i) =>
    h('th', { class: i >= 4 ? 'num' : i === 3 ? 'hide-narrow' : '', text: t }))));
  if (!list.length) {
    table.append(h('tr', {}, h('td', { colspan: 6, class: 'empty', text: 'No simulated meter has reported yet.' })));
  }
  for (const m of list) {
    const hb = m.heartbeat;
    table.append(h('tr', { 'data-serial': m.serial },
      h('td', {}, h('a', { href: '?serial=' + m.serial, text: m.serial })),
      h('td', {}, badge(m.status)),
      h('td', { text: hb ? fmtAge(hb.received_age_s) + ' ago' : '—' }),
      h('td', { class: 'hide-narrow', text: (m.config && m.config.upload) || hb?.upload || '—' }),
      h('td', { class: 'num', text: fmtEnergy(hb?.energy_import_wh) }),
      h('td', { class: 'num', text: fmtEnergy(hb?.energy_export_wh) })));
  }
}
renderTable(meters);
setInterval(async () => renderTable(await api('/meters')), 10000);

if (serial) {
  const m = meters.find((x) => x.serial === serial);
  const lastDay = m && m.last_reading_ts ? localDate(m.last_reading_ts, tz) : localDate(Date.now(), tz);
  const day = /^\d{4}-\d{2}-\d{2}$/.test(params.get('day') || '') ? params.get('day') : lastDay;
  const chartEl = h('div', { class: 'chart', id: 'meter-chart' });
  const totals = h('div', { class: 'totals', id: 'meter-totals' });
  const cfg = h('div', { class: 'scroll' });
  main.append(h('section', { class: 'card' }, h('h2', {}, 'Meter ' + serial, h('span', { class: 'sub', text: day })),
    h('div', { class: 'toolbar' },
      h('a', { class: 'btn', id: 'prev', href: `?serial=${serial}&day=${addDays(day, -1)}`, text: '◀ Previous' }),
      h('a', { class: 'btn', href: `?serial=${serial}`, text: 'Latest' }),
      h('a', { class: 'btn', id: 'next', href: `?serial=${serial}&day=${addDays(day, 1)}`, text: 'Next ▶' })),
    chartEl, h('div', { style: 'height:.75rem' }), totals, cfg));
  const detail = await api(`/meter?serial=${serial}&day=${day}`);
  const rows = detail.day.readings.filter((r) => r.metrics.power_w !== undefined);
  if (rows.length) {
    chart(chartEl, { tz, series: [{ label: 'power (import +, export −)', color: COLORS.home }],
      data: [rows.map((r) => r.ts / 1000), rows.map((r) => r.metrics.power_w)] });
  } else {
    empty(chartEl, `No readings of ${serial} on ${day}` + (m && m.config && m.config.upload === 'daily'
      ? ' (a daily meter uploads a day once it is over).' : '.'));
  }
  const peak = rows.length ? Math.max(...rows.map((r) => r.metrics.power_w)) : null;
  const cell = (label, value) => h('div', { class: 'total' }, h('div', { class: 'label', text: label }),
    h('div', { class: 'value', text: value }));
  totals.append(cell('Imported', fmtEnergy(detail.day.import_wh)), cell('Exported', fmtEnergy(detail.day.export_wh)),
    cell('Peak power', fmtPower(peak)), cell('Readings', String(rows.length)));
  if (detail.meter.config) {
    const t = h('table', {});
    for (const [k, v] of Object.entries(detail.meter.config)) t.append(h('tr', {}, h('th', { text: k }), h('td', { text: String(v) })));
    cfg.append(h('h2', { style: 'margin-top:1rem' }, 'Config it runs'), t);
  }
  if (detail.meter.heartbeat) {
    cfg.append(h('p', { class: 'note', text: `Last heartbeat ${fmtTime(detail.meter.heartbeat.ts, tz)}, simulated time ` +
      fmtTime(detail.meter.heartbeat.sim_time, tz) }));
  }
}
liveFeed('events=status', { status: async (s) => { if (s.source === 'sim') renderTable(await api('/meters')); } });
document.body.dataset.ready = '1';
