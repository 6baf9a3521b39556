// The operations page: signs in with an admin token kept in this tab (sessionStorage), then
// polls the admin endpoints and draws what they say. Every text from the server goes in
// through textContent, never as markup.
'use strict';

const TOKEN_KEY = 'stayler-admin-token';
const POLL_MS = 2000;
const DEAD_LETTERS_SHOWN = 20;
const SVG = 'http://www.w3.org/2000/svg';
// The endpoints sit next to this page: /storage/ops → /storage/queues.
const BASE = new URL('.', window.location.href);

let previous = null; // the last queue snapshot, for rates
let timer = null;

function $(id) { return document.getElementById(id); }

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function age(at) {
  if (!at) return '–';
  const secs = Math.max(0, (Date.now() - Date.parse(at)) / 1000);
  if (secs < 90) return `${Math.round(secs)} s ago`;
  if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
  if (secs < 129600) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(new URL(path, BASE), {
    ...options,
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
    cache: 'no-store',
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new HttpError(response.status, message);
  }
  return body;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawQueues(view) {
  const now = Date.now();
  const rows = view.queues.map((queue) => {
    let rate = '–';
    const before = previous ? previous.ready[queue.queue] : undefined;
    if (before !== undefined) {
      const perSec = (queue.ready - before) / ((now - previous.at) / 1000);
      rate = `${perSec > 0 ? '+' : ''}${perSec.toFixed(1)}/s`;
    }
    const dead = el('td', { class: `number${queue.dead_letters > 0 ? ' bad' : ''}`, 'data-dead-letters': queue.dead_letters }, queue.dead_letters);
    return el('tr', { 'data-queue': queue.queue },
      el('td', { title: queue.name }, queue.queue),
      el('td', { class: 'number' }, queue.ready),
      el('td', { class: `number${queue.consumers === 0 ? ' warn' : ''}` }, queue.consumers),
      el('td', { class: 'number' }, rate),
      dead);
  });
  replaceRows($('queues').tBodies[0], rows);
  previous = { at: now, ready: Object.fromEntries(view.queues.map((q) => [q.queue, q.ready])) };
}

async function redrive(queue, button) {
  button.disabled = true;
  try {
    const done = await api(`queues/${encodeURIComponent(queue)}/dead-letters/redrive`, { method: 'POST' });
    setStatus(`re-drove ${done.moved} job(s) of ${queue}; ${done.remaining} left`);
  } catch (error) {
    setStatus(`re-drive of ${queue} failed: ${error.message}`, true);
  }
  await refresh();
}

async function drawDeadLetters(view) {
  const holding = view.queues.filter((queue) => queue.dead_letters > 0);
  const blocks = await Promise.all(holding.map(async (queue) => {
    const found = await api(`queues/${encodeURIComponent(queue.queue)}/dead-letters?limit=${DEAD_LETTERS_SHOWN}`);
    const button = el('button', { type: 'button', class: 'redrive', 'data-queue': queue.queue }, `Re-drive ${found.total}`);
    button.addEventListener('click', () => redrive(queue.queue, button));
    const rows = found.dead_letters.map((dead) => el('tr', { 'data-message-id': dead.message_id },
      el('td', {}, dead.event_type || '–'),
      el('td', { class: 'id' }, dead.image_id || '–'),
      el('td', { class: 'reason' }, dead.reason || 'dead-lettered by RabbitMQ (delivery limit)'),
      el('td', { class: 'number' }, dead.attempts ?? '–'),
      el('td', { title: dead.failed_at || '' }, age(dead.failed_at))));
    const table = el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Event'), el('th', {}, 'Image'), el('th', {}, 'Reason'), el('th', {}, 'Attempts'), el('th', {}, 'Failed'))),
      el('tbody', {}, ...rows));
    const more = found.total > found.dead_letters.length ? el('p', { class: 'hint' }, `… and ${found.total - found.dead_letters.length} more`) : null;
    return el('div', { class: 'queue-dead', 'data-queue': queue.queue },
      el('h3', {}, el('span', {}, `${found.dead_letter_queue} (${found.total})`), button), table, more);
  }));
  const target = $('dead-letters');
  if (blocks.length === 0) target.replaceChildren(el('p', { class: 'hint ok', id: 'no-dead-letters' }, 'No dead letters.'));
  else target.replaceChildren(...blocks);
}

async function reprocess(id, button) {
  button.disabled = true;
  try {
    await api(`images/${encodeURIComponent(id)}/reprocess`, { method: 'POST' });
    setStatus(`image ${id} queued again`);
  } catch (error) {
    setStatus(`reprocessing ${id} failed: ${error.message}`, true);
    button.disabled = false;
  }
}

function drawHealth(health, stats) {
  const status = $('health-status');
  status.textContent = health.status;
  status.className = health.status;
  const details = health.details || { problems: [], checks: [] };
  $('problems').replaceChildren(...details.problems.map((problem) => el('li', { class: 'warn' }, problem)));
  replaceRows($('checks').tBodies[0], details.checks.map((check) => el('tr', {},
    el('td', {}, check.check_type),
    el('td', { class: check.status }, check.status),
    el('td', { title: check.checked_at }, age(check.checked_at)))));

  const sweep = details.checks.find((check) => check.check_type === 'sweep');
  const sweepDetails = (sweep && sweep.details) || {};
  const waiting = sweepDetails.oldest_pending_secs;
  const processing = stats ? stats.processing : null;
  const parts = [];
  if (processing) {
    parts.push(`thumbnails pending ${processing.thumbnails_pending}, failed ${processing.thumbnails_failed}`);
    parts.push(`verification pending ${processing.checksums_pending}, corrupt ${processing.checksums_corrupt}`);
  }
  if (waiting !== undefined && waiting !== null) parts.push(`oldest waiting ${Math.round(waiting)} s`);
  parts.push(`given up on and unfinished: ${sweepDetails.given_up_unfinished ?? 0}`);
  $('processing').textContent = parts.join(' · ');
  const sample = sweepDetails.given_up_unfinished_sample || [];
  replaceRows($('stuck-images').tBodies[0], sample.map((id) => {
    const button = el('button', { type: 'button', class: 'reprocess', 'data-image-id': id }, 'Reprocess');
    button.addEventListener('click', () => reprocess(id, button));
    return el('tr', {}, el('td', { class: 'id' }, id), el('td', {}, button));
  }));
}

function drawBackups(page) {
  if (page.items.length === 0) {
    replaceRows($('backups').tBodies[0], [el('tr', {}, el('td', { colspan: 6, class: 'hint' }, 'No backups yet.'))]);
    return;
  }
  replaceRows($('backups').tBodies[0], page.items.map((backup) => {
    const verified = backup.verified_at ? `${backup.verify_status} ${age(backup.verified_at)}` : 'not yet';
    return el('tr', {},
      el('td', { title: backup.created_at }, backup.backup_date),
      el('td', { class: backup.status }, backup.status),
      el('td', { class: 'number' }, backup.file_count),
      el('td', { class: 'number' }, bytes(backup.compressed_bytes)),
      el('td', {}, age(backup.completed_at || backup.created_at)),
      el('td', { class: backup.verify_status || '' }, verified));
  }));
}

function barChart(target, bars, vertical) {
  const width = 400;
  const height = 150;
  const max = Math.max(1, ...bars.map((bar) => bar.value));
  const nodes = [];
  if (bars.length === 0) {
    nodes.push(svg('text', { x: 10, y: 20, class: 'axis' }, 'nothing stored yet'));
  } else if (vertical) {
    const slot = (width - 20) / bars.length;
    bars.forEach((bar, index) => {
      const h = bar.value > 0 ? Math.max(1, (bar.value / max) * (height - 30)) : 0;
      const rect = svg('rect', { x: 10 + index * slot + 1, y: height - 20 - h, width: Math.max(1, slot - 2), height: h, class: 'bar' });
      rect.append(svg('title', {}, `${bar.label}: ${bytes(bar.value)}`));
      nodes.push(rect);
    });
    nodes.push(svg('text', { x: 10, y: height - 5, class: 'axis' }, bars[0].label));
    nodes.push(svg('text', { x: width - 10, y: height - 5, class: 'axis', 'text-anchor': 'end' }, bars[bars.length - 1].label));
    nodes.push(svg('text', { x: 10, y: 10, class: 'axis' }, `max ${bytes(max)}`));
  } else {
    const row = Math.min(30, (height - 10) / bars.length);
    bars.forEach((bar, index) => {
      const y = 5 + index * row;
      const w = Math.max(1, (bar.value / max) * (width - 190));
      nodes.push(svg('text', { x: 0, y: y + row / 2 + 4, class: 'label' }, bar.label));
      nodes.push(svg('rect', { x: 70, y: y + 3, width: w, height: row - 6, class: 'bar' }));
      nodes.push(svg('text', { x: 75 + w, y: y + row / 2 + 4, class: 'axis' }, bar.detail));
    });
  }
  target.replaceChildren(...nodes);
}

function drawStorage(stats) {
  barChart($('by-type'), stats.by_type.map((type) => ({
    label: type.image_type, value: type.bytes, detail: `${bytes(type.bytes)} · ${type.files} files`,
  })), false);
  // Every day of the window gets its slot, uploads or not, today last.
  const uploaded = new Map(stats.by_day.map((day) => [day.day, day.bytes]));
  const days = [];
  for (let back = 29; back >= 0; back -= 1) {
    const day = new Date(Date.now() - back * 86400000).toISOString().slice(0, 10);
    days.push({ label: day, value: uploaded.get(day) || 0 });
  }
  barChart($('by-day'), days, true);
}

function setStatus(text, bad) {
  const status = $('status');
  status.textContent = text;
  status.className = bad ? 'error' : '';
}

async function refresh() {
  clearTimeout(timer);
  try {
    const queues = await api('queues').catch((error) => {
      if (error.status === 401 || error.status === 403) throw error;
      setStatus(`queues: ${error.message}`, true);
      return null;
    });
    const [health, stats, backups] = await Promise.all([
      api('health').catch(() => null),
      api('stats?days=30').catch(() => null),
      api('backups?page_size=10').catch(() => null),
    ]);
    if (queues) {
      drawQueues(queues);
      await drawDeadLetters(queues);
    }
    if (health) drawHealth(health, stats);
    if (backups) drawBackups(backups);
    if (stats) drawStorage(stats);
    if (queues) $('dashboard').dataset.updatedAt = new Date().toISOString();
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      signOut(error.status === 403 ? 'this token is not an admin\u2019s' : 'the token was refused or has expired');
      return;
    }
    setStatus(error.message, true);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function signOut(reason) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  previous = null;
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = reason || '';
}

function signIn() {
  $('sign-in').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  setStatus('');
  refresh();
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    signIn();
  });
  $('sign-out').addEventListener('click', () => signOut());
  if (sessionStorage.getItem(TOKEN_KEY)) signIn();
  else signOut();
});
