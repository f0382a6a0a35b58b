// Spool's dashboard: plain DOM, no framework, no build step. Every element is built with
// textContent (never innerHTML), so nothing a job or worker wrote can become markup.
'use strict';

const app = document.getElementById('app');
const nav = document.getElementById('nav');
let me = null;        // GET /ui/session: name, readOnly, csrf
let source = null;    // the current page's EventSource
let lastOverview = null;

// h builds an element: h('a', {href: '#/'}, 'text', child, ...).
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// fill replaces el's children, leaving out the absent ones (null, undefined, false).
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 3500);
}

async function api(method, path, body) {
  const opt = {method, headers: {}, credentials: 'same-origin'};
  if (method !== 'GET' && me) opt.headers['X-Spool-CSRF'] = me.csrf;
  if (body !== undefined) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = {error: text}; }
  if (r.status === 401 && path !== '/ui/session') {
    me = null;
    signInPage((data && data.error) || 'Signed out.');
    throw new Error('signed out');
  }
  if (!r.ok) throw new Error((data && data.error) || (r.status + ' ' + r.statusText));
  return data;
}

// --- formatting

const fmtMs = (ms) => ms === undefined || ms === null ? '–' :
  ms < 1000 ? Math.round(ms) + ' ms' : ms < 60000 ? (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s' :
  ms < 3600000 ? (ms / 60000).toFixed(1) + ' min' : (ms / 3600000).toFixed(1) + ' h';
const fmtTime = (t) => t ? new Date(t).toLocaleString() : '–';
const badge = (s) => h('span', {class: 'badge s-' + s, 'data-state': s}, s);
const MAX_SHOWN = 64 * 1024;

// pretty shows a JSON value, indented, collapsible, cut when huge.
function pretty(label, value, open) {
  let text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  if (text === undefined) text = String(value);
  let note = null;
  if (text.length > MAX_SHOWN) {
    note = h('p', {class: 'muted'}, `Showing the first ${MAX_SHOWN.toLocaleString()} of ${text.length.toLocaleString()} characters.`);
    text = text.slice(0, MAX_SHOWN);
  }
  return h('details', {open: open}, h('summary', {}, label), h('pre', {'data-testid': 'json-' + label.toLowerCase()}, text), note);
}

function kv(pairs) {
  const dl = h('dl', {class: 'kv'});
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === '') continue;
    dl.append(h('dt', {}, k), h('dd', {}, v));
  }
  return dl;
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', {class: 'muted'}, empty || 'None.');
  return h('div', {class: 'scroll'}, h('table', {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => c instanceof Node ? h('td', {}, c) : h('td', {class: 'mono'}, c ?? '–')))))));
}

// chart draws one or more series of 60 points as lines scaled to their largest value.
function chart(title, points, series, fmt) {
  const W = 300, H = 70;
  const max = Math.max(1e-9, ...series.flatMap((s) => points.map((p) => p[s.key] || 0)));
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const axis = document.createElementNS(svg.namespaceURI, 'line');
  Object.entries({x1: 0, y1: H - 1, x2: W, y2: H - 1, class: 'axis'}).forEach(([k, v]) => axis.setAttribute(k, v));
  svg.append(axis);
  series.forEach((s, i) => {
    const line = document.createElementNS(svg.namespaceURI, 'polyline');
    const pts = points.map((p, j) => `${(j / (points.length - 1)) * W},${H - 2 - ((p[s.key] || 0) / max) * (H - 6)}`);
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('class', 's' + (i + 1));
    svg.append(line);
  });
  const last = points[points.length - 1] || {};
  return h('div', {class: 'chart'},
    h('div', {class: 'title'}, h('span', {}, title), h('span', {}, series.map((s, i) =>
      h('span', {class: 'key' + (i + 1)}, ` ${s.label} ${fmt(last[s.key] || 0)}`)))),
    svg, h('div', {class: 'title'}, h('span', {}, '−60 min'), h('span', {}, 'max ' + fmt(max < 1e-6 ? 0 : max))));
}

// --- pages

function setNav() {
  fill(nav);
  if (!me) return;
  nav.append(
    h('span', {class: 'muted'}, h('span', {class: 'live', id: 'live'}), 'Live'),
    h('a', {href: '#/'}, 'Overview'),
    h('span', {class: 'muted', 'data-testid': 'who'}, me.name + (me.readOnly ? ' (read-only)' : '')),
    h('button', {class: 'secondary', 'data-testid': 'sign-out', onclick: signOut}, 'Sign out'));
}

function signInPage(message) {
  closeSource();
  setNav();
  const key = h('input', {type: 'password', id: 'key', autocomplete: 'off', placeholder: 'spool_…', required: true});
  const msg = h('p', {class: 'error', id: 'signin-error'}, message || '');
  const form = h('form', {class: 'card signin', onsubmit: async (e) => {
    e.preventDefault();
    try {
      me = await api('POST', '/ui/session', {key: key.value});
      key.value = '';
      route();
    } catch (err) {
      msg.textContent = err.message;
    }
  }}, h('h1', {}, 'Sign in to Spool'),
  h('label', {for: 'key'}, 'Admin key (read-only or not)'), key,
  h('button', {type: 'submit', id: 'sign-in'}, 'Sign in'), msg,
  h('p', {class: 'muted'}, 'The key is sent once; the browser keeps only a session cookie.'));
  fill(app, form);
  key.focus();
}

async function signOut() {
  try { await api('DELETE', '/ui/session'); } catch { /* signed out either way */ }
  me = null;
  signInPage('Signed out.');
}

function closeSource() {
  if (source) source.close();
  source = null;
}

// listen opens the page's live stream; handlers get each event's parsed data.
function listen(query, handlers) {
  closeSource();
  source = new EventSource('/api/events' + query);
  source.onopen = () => document.getElementById('live')?.classList.add('on');
  source.onerror = () => {
    document.getElementById('live')?.classList.remove('on');
    // A stream refused for a lost session does not come back: find out why.
    if (source && source.readyState === EventSource.CLOSED) {
      api('GET', '/ui/session').catch((err) => { me = null; signInPage(err.message); });
    }
  };
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  }
}

function endpointStats(ep) {
  const w = ep.workers;
  const stat = (label, value, id) => h('div', {class: 'stat'}, h('div', {class: 'label'}, label),
    h('div', {class: 'value', 'data-stat': id}, value));
  return h('div', {class: 'grid'},
    stat('Queued (normal / low)', `${ep.queue.normal} / ${ep.queue.low}`, 'queue'),
    stat('In progress', ep.inProgress, 'inProgress'),
    stat('Workers idle / running', `${w.idle} / ${w.running}`, 'workers'),
    stat('Starting / throttled / unhealthy', `${w.initializing} / ${w.throttled} / ${w.unhealthy}`, 'workersOther'),
    stat('Jobs per second', ep.jobsPerSecond, 'rate'),
    stat('Delay p50 / p95 (1 h)', `${fmtMs(ep.hour.delayP50Ms)} / ${fmtMs(ep.hour.delayP95Ms)}`, 'delay'),
    stat('Execution p50 / p95 (1 h)', `${fmtMs(ep.hour.execP50Ms)} / ${fmtMs(ep.hour.execP95Ms)}`, 'exec'),
    stat('Finished / failed (1 h)', `${ep.hour.finished} / ${ep.hour.failed}`, 'finished'));
}

function endpointCharts(ep) {
  const n = (v) => String(v);
  return h('div', {class: 'charts'},
    chart('Jobs finished per minute', ep.minutes, [{key: 'finished', label: 'done'}, {key: 'failed', label: 'failed'}], n),
    chart('Delay', ep.minutes, [{key: 'delayP50Ms', label: 'p50'}, {key: 'delayP95Ms', label: 'p95'}], fmtMs),
    chart('Execution time', ep.minutes, [{key: 'execP50Ms', label: 'p50'}, {key: 'execP95Ms', label: 'p95'}], fmtMs));
}

function renderOverview(ov) {
  lastOverview = ov;
  const cards = ov.endpoints.map((ep) => h('section', {class: 'card', 'data-endpoint': ep.name},
    h('h2', {}, h('a', {href: '#/endpoint/' + encodeURIComponent(ep.name)}, ep.name),
      h('span', {class: 'muted'}, ` · workers ${ep.workersMin}–${ep.workersMax}`)),
    endpointStats(ep), endpointCharts(ep)));
  fill(app, h('h1', {}, 'Endpoints'),
    ...(cards.length ? cards : [h('p', {class: 'muted'}, 'No endpoints yet. Make one with spool endpoints create, POST /api/endpoints or spool.yaml.')]));
}

async function overviewPage() {
  renderOverview(await api('GET', '/api/overview'));
  listen('', {overview: (ov) => { if (location.hash === '' || location.hash === '#/') renderOverview(ov); }});
}

function confirmModal(title, text, action, run) {
  return new Promise((resolve) => {
    const close = (v) => { m.remove(); resolve(v); };
    const m = h('div', {class: 'modal', role: 'dialog', 'aria-modal': 'true'}, h('div', {class: 'card'},
      h('h2', {}, title), h('p', {}, text),
      h('div', {class: 'actions'},
        h('button', {class: 'secondary', 'data-testid': 'confirm-no', onclick: () => close(false)}, 'Keep'),
        h('button', {class: 'danger', 'data-testid': 'confirm-yes', onclick: async () => { await run(); close(true); }}, action))));
    document.body.append(m);
  });
}

async function act(label, fn) {
  try {
    const msg = await fn();
    toast(msg || label + ': done');
  } catch (err) {
    if (err.message !== 'signed out') toast(label + ': ' + err.message);
  }
}

function workerRows(ws) {
  const now = Date.now();
  return ws.map((w) => [w.id, badge(w.state), (w.jobs || []).join(', ') || '–', (w.gpus || []).join(', ') || '–',
    w.uptimeMs ? fmtMs(w.uptimeMs) : w.firstSeen ? fmtMs(now - Date.parse(w.firstSeen)) : '–',
    w.error || '', (w.logTail && w.logTail.length) ? h('details', {}, h('summary', {}, `${w.logTail.length} lines`),
      h('pre', {}, w.logTail.join('\n'))) : '–']);
}

async function endpointPage(name) {
  const path = '/api/endpoints/' + encodeURIComponent(name);
  const ep = await api('GET', path);
  const statsBox = h('div', {}), chartsBox = h('div', {});
  const workersBox = h('div', {}), jobsBox = h('div', {});
  const status = h('select', {'data-testid': 'status-filter'},
    ['', 'IN_QUEUE', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'].map((s) => h('option', {value: s}, s || 'All states')));
  const search = h('input', {placeholder: 'Job id', 'data-testid': 'job-search'});
  let next = null, shownJobs = '', shownWorkers = '';
  const loadJobs = async (more) => {
    const q = new URLSearchParams({endpoint: name, limit: '50'});
    if (status.value) q.set('status', status.value);
    if (more && next) q.set('before', next);
    const res = await api('GET', '/api/jobs?' + q);
    // Redraw only what changed: a live page must not move what the reader is about to click.
    const seen = q + JSON.stringify(res);
    if (!more && seen === shownJobs) return;
    if (!more) shownJobs = seen;
    next = res.next || null;
    const rows = res.jobs.map((j) => [h('a', {href: '#/job/' + encodeURIComponent(j.id), class: 'mono'}, j.id), badge(j.status),
      fmtTime(j.createdAt), fmtMs(j.delayTime), fmtMs(j.executionTime), j.workerId || '–']);
    const t = table(['Job', 'Status', 'Created', 'Delay', 'Execution', 'Worker'], rows, 'No jobs.');
    if (more) jobsBox.querySelector('tbody')?.append(...t.querySelectorAll('tbody tr'));
    else fill(jobsBox, t);
    moreBtn.hidden = !next;
  };
  const moreBtn = h('button', {class: 'secondary', hidden: true, onclick: () => loadJobs(true)}, 'Older jobs');
  const loadWorkers = async () => {
    const res = await api('GET', '/api/workers?endpoint=' + encodeURIComponent(name));
    const seen = JSON.stringify(res.workers.map((w) => ({...w, lastSeen: undefined, uptimeMs: undefined})));
    if (seen === shownWorkers) return;
    shownWorkers = seen;
    fill(workersBox, table(['Worker', 'State', 'Jobs', 'GPUs', 'Up', 'Why', 'Log tail'], workerRows(res.workers), 'No workers.'));
  };
  status.addEventListener('change', () => loadJobs(false));

  const actions = h('div', {class: 'actions'});
  if (!me.readOnly) {
    const min = h('input', {type: 'number', min: 0, value: ep.workersMin, 'data-testid': 'workers-min', class: 'narrow'});
    const max = h('input', {type: 'number', min: 0, value: ep.workersMax, 'data-testid': 'workers-max', class: 'narrow'});
    actions.append(
      h('span', {class: 'row'}, 'Workers min', min, 'max', max,
        h('button', {'data-action': 'scale', onclick: () => act('Scale limits', async () => {
          const cur = await api('GET', path);
          cur.workersMin = Number(min.value);
          cur.workersMax = Number(max.value);
          await api('PUT', path, cur);
          return `Workers ${cur.workersMin}–${cur.workersMax}`;
        })}, 'Save')),
      h('button', {class: 'danger', 'data-action': 'purge', onclick: () => {
        const queued = lastOverview?.endpoints.find((e) => e.name === name)?.queue;
        const n = queued ? queued.normal + queued.low : 'all';
        confirmModal('Purge the queue?', `This removes ${n} queued job(s) of ${name}. Jobs in progress go on. This cannot be undone.`,
          'Purge', () => act('Purge', async () => {
            const r = await api('POST', `/v2/${encodeURIComponent(name)}/purge-queue`);
            await loadJobs(false);
            return `Purged ${r.removed} job(s)`;
          }));
      }}, 'Purge queue'));
  }

  const settings = Object.entries(ep).filter(([k, v]) => k !== 'worker' && k !== 'name' && v !== null && typeof v !== 'object');
  const spec = ep.worker ? {...ep.worker} : null;
  if (spec && spec.env) spec.env = Object.fromEntries(Object.keys(spec.env).map((k) => [k, '(hidden)']));

  fill(app,
    h('p', {}, h('a', {href: '#/'}, '← Overview')),
    h('h1', {}, name), actions,
    h('section', {class: 'card'}, statsBox, chartsBox),
    h('section', {class: 'card'}, h('h2', {}, 'Workers'), workersBox),
    h('section', {class: 'card'}, h('h2', {}, 'Jobs'),
      h('div', {class: 'row'}, status, h('form', {class: 'row', onsubmit: (e) => {
        e.preventDefault();
        if (search.value.trim()) location.hash = '#/job/' + encodeURIComponent(search.value.trim());
      }}, search, h('button', {type: 'submit', class: 'secondary'}, 'Open'))),
      jobsBox, moreBtn),
    h('section', {class: 'card'}, h('h2', {}, 'Settings'), kv(settings.map(([k, v]) => [k, String(v)])),
      spec ? pretty('Worker', spec, false) : null));

  const showStats = (ov) => {
    lastOverview = ov;
    const e = ov.endpoints.find((x) => x.name === name);
    if (!e) return;
    fill(statsBox, endpointStats(e));
    fill(chartsBox, endpointCharts(e));
  };
  await Promise.all([loadWorkers(), loadJobs(false)]);
  listen('', {overview: (ov) => {
    showStats(ov);
    loadWorkers().catch(() => {});
    if (!next) loadJobs(false).catch(() => {}); // leave a paged-down list alone
  }});
}

async function jobPage(id) {
  const enc = encodeURIComponent(id);
  let job = await api('GET', '/api/jobs/' + enc);
  const head = h('div', {}), details = h('div', {}), actions = h('div', {class: 'actions'});
  const logsBox = h('div', {}), chunksBox = h('div', {}), hooksBox = h('div', {});
  const loadExtras = async () => {
    const [logs, chunks, hooks] = await Promise.all([
      api('GET', `/api/jobs/${enc}/logs`), api('GET', `/api/jobs/${enc}/chunks`), api('GET', `/api/jobs/${enc}/webhook`)]);
    const progress = logs.entries.filter((e) => e.kind === 'progress');
    const lines = logs.entries.filter((e) => e.kind !== 'progress');
    fill(logsBox,
      h('h3', {}, 'Progress'), table(['Time', 'Worker', 'Progress'], progress.map((e) => [fmtTime(e.at), e.worker, e.message]), 'No progress reported.'),
      h('h3', {}, 'Worker log'), table(['Time', 'Worker', 'Level', 'Message'], lines.map((e) => [fmtTime(e.at), e.worker, e.level || '', e.message]),
        'No log lines carry this job\'s id.'),
      logs.dropped ? h('p', {class: 'muted'}, `${logs.dropped} older entries were dropped.`) : null);
    fill(chunksBox, chunks.chunks.length
      ? pretty(`Stream (${chunks.chunks.length}${chunks.more ? '+' : ''} chunks)`, chunks.chunks.map((c) => c.output), false)
      : h('p', {class: 'muted'}, 'No stream chunks.'));
    fill(hooksBox, table(['Delivery', 'Status', 'Attempts'], (hooks.deliveries || []).map((d) => [d.id, badge(d.status),
      d.attempts.map((a) => `#${a.attempt} ${fmtTime(a.at)} ${a.statusCode || ''} ${a.error || ''} (${a.durationMs} ms)`).join('\n') || 'pending']),
    job.webhook ? 'No delivery yet.' : 'This job has no webhook.'));
  };
  const render = () => {
    const ep = encodeURIComponent(job.endpoint);
    fill(head, h('h1', {}, 'Job ', h('span', {class: 'mono'}, job.id), ' ', h('span', {'data-testid': 'job-status'}, badge(job.status))));
    fill(details, kv([
      ['Endpoint', h('a', {href: '#/endpoint/' + ep}, job.endpoint)],
      ['Worker', job.workerId], ['Attempt', job.attempt], ['Retries', job.retries],
      ['Waiting because', job.waitReason ? `${job.waitReason}${job.position ? ', position ' + job.position : ''}` : null],
      ['Created', fmtTime(job.createdAt)], ['Queued', fmtTime(job.queuedAt)], ['Started', job.takenAt ? fmtTime(job.takenAt) : null],
      ['Finished', job.finishedAt ? fmtTime(job.finishedAt) : null],
      ['Delay', fmtMs(job.delayTime)], ['Execution', job.executionTime ? fmtMs(job.executionTime) : null],
      ['Priority', job.policy?.lowPriority ? 'low' : 'normal'], ['Execution timeout', fmtMs(job.policy?.executionTimeout)],
      ['Kept for', fmtMs(job.policy?.ttl)], ['Webhook', job.webhook], ['s3Config', job.hasS3Config ? 'set (never shown)' : null],
    ]), job.error ? h('div', {}, h('h3', {}, 'Error'), h('pre', {class: 'error', 'data-testid': 'job-error'}, job.error)) : null,
    job.input !== undefined ? pretty('Input', job.input, true) : null,
    job.output !== undefined ? pretty('Output', job.output, true) : null);
    fill(actions);
    if (me.readOnly) return;
    const live = job.status === 'IN_QUEUE' || job.status === 'IN_PROGRESS';
    if (live) actions.append(h('button', {class: 'danger', 'data-action': 'cancel', onclick: () => act('Cancel', async () => {
      await api('POST', `/v2/${ep}/cancel/${enc}`); return 'Cancel asked';
    })}, 'Cancel'));
    // The server retries FAILED and TIMED_OUT jobs whose s3Config is not gone with their end.
    if ((job.status === 'FAILED' || job.status === 'TIMED_OUT') && !job.hasS3Config) actions.append(h('button', {'data-action': 'retry', onclick: () => act('Retry', async () => {
      await api('POST', `/v2/${ep}/retry/${enc}`); return 'Queued again';
    })}, 'Retry'));
    if (job.webhook && !live) actions.append(h('button', {class: 'secondary', 'data-action': 'redeliver', onclick: () => act('Redeliver', async () => {
      await api('POST', `/api/jobs/${enc}/webhook/redeliver`); await loadExtras(); return 'Webhook queued again';
    })}, 'Redeliver webhook'));
  };
  render();
  fill(app, h('p', {}, h('a', {href: '#/endpoint/' + encodeURIComponent(job.endpoint)}, '← ' + job.endpoint)),
    head, actions, h('section', {class: 'card'}, details),
    h('section', {class: 'card'}, h('h2', {}, 'Stream'), chunksBox),
    h('section', {class: 'card'}, h('h2', {}, 'Progress and logs'), logsBox),
    h('section', {class: 'card'}, h('h2', {}, 'Webhook'), hooksBox));
  await loadExtras();
  listen('?job=' + enc, {job: (j) => {
    if (j.error && !j.id) return;
    job = j;
    render();
    loadExtras().catch(() => {});
  }});
}

async function route() {
  closeSource();
  if (!me) {
    try { me = await api('GET', '/ui/session'); } catch { signInPage(); return; }
  }
  setNav();
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/');
  try {
    if (parts[0] === 'endpoint' && parts[1]) await endpointPage(decodeURIComponent(parts[1]));
    else if (parts[0] === 'job' && parts[1]) await jobPage(decodeURIComponent(parts[1]));
    else await overviewPage();
  } catch (err) {
    if (err.message !== 'signed out') fill(app, h('p', {class: 'error', 'data-testid': 'page-error'}, err.message));
  }
}

window.addEventListener('hashchange', route);
route();
