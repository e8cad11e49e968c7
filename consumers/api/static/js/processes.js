// Every wattbus process: status, health (uptime, memory, counters) and dead letters.
import { $, h, api, site, header, fmtAge, fmtTime, liveFeed, badge } from './common.js';

header('/processes');
const main = $('#main');
const info = await site();
const table = h('table', { id: 'processes' });
main.append(h('section', { class: 'card' }, h('h2', {}, 'Processes', h('span', { class: 'sub', text: 'status, health, dead letters' })),
  h('div', { class: 'scroll' }, table),
  h('p', { class: 'note', text: 'Health is each process\'s retained wattbus/{process}/health document (every 30 s). ' +
    'Dead letters: rejected inputs the process counted since it started; the reason is the latest one seen here.' })));

const COUNTERS = ['readings', 'readings_handled', 'messages', 'published', 'http_requests'];

function render(list) {
  table.textContent = '';
  table.append(h('tr', {}, h('th', { text: 'Process' }), h('th', { text: 'Status' }),
    h('th', { class: 'num hide-narrow', text: 'Uptime' }), h('th', { class: 'num', text: 'Peak RSS' }),
    h('th', { class: 'num hide-narrow', text: 'Work' }), h('th', { class: 'num', text: 'Dead letters' })));
  for (const p of list) {
    const health = p.health || {};
    const counters = health.counters || {};
    const work = COUNTERS.filter((k) => counters[k]).map((k) => `${k.replace('_', ' ')} ${Math.round(counters[k]).toLocaleString()}`);
    const dl = h('td', { class: 'num' }, h('div', { text: String(p.dead_letters) }));
    if (p.dlq_last_reason) dl.append(h('div', { class: 'reason', text: p.dlq_last_reason }));
    table.append(h('tr', { 'data-process': p.name },
      h('td', {}, h('strong', { text: p.name }), h('div', { class: 'note', style: 'margin:0', text: [p.kind, p.type].filter(Boolean).join(' · ') + (p.configured ? '' : ' (not in this config)') })),
      h('td', {}, badge(p.status), h('div', { class: 'note', style: 'margin:0', text: p.health_age_s !== null ? 'health ' + fmtAge(p.health_age_s) + ' ago' : 'no health yet' })),
      h('td', { class: 'num hide-narrow', text: health.uptime_s !== undefined ? fmtAge(health.uptime_s + (p.health_age_s || 0)) : '—' }),
      h('td', { class: 'num', text: health.rss_mb ? health.rss_mb + ' MB' : '—' }),
      h('td', { class: 'num hide-narrow', text: work.join(', ') || '—' }),
      dl));
  }
}

render(await api('/processes'));
let pending = null;
const refresh = () => { clearTimeout(pending); pending = setTimeout(async () => render(await api('/processes')), 300); };
liveFeed('events=status,health', { status: refresh, health: refresh });
setInterval(refresh, 15000);
main.append(h('p', { class: 'note', id: 'tz', text: 'Times in ' + info.timezone + '; page loaded ' + fmtTime(Date.now(), info.timezone) }));
document.body.dataset.ready = '1';
