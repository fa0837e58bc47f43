// lifeboat dashboard: every page is drawn from the public JSON API
// (/openapi.json), with the token the user pasted. Data is only ever put
// into the page as text (textContent), never as markup.
'use strict';

const TOKEN_KEY = 'lifeboat-token';
const REFRESH_MS = 2000;

const byId = (id) => document.getElementById(id);

// el builds an element: attrs are attributes (on* are not accepted),
// children are nodes or strings (as text), or arrays of them.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class Unauthorized extends Error {}

// me is who the token is (GET /v1/whoami): the page offers only what its
// role may do.
let me = null;
const mayRun = () => me && (me.role === 'operator' || me.role === 'admin');

// runButton is a button for an action that needs the operator role,
// disabled with the reason for a viewer.
function runButton(id, label, fn) {
  const b = el('button', { type: 'button', id, disabled: !mayRun(), 'aria-describedby': mayRun() ? undefined : `${id}-why` }, label);
  b.addEventListener('click', () => act(b, fn));
  if (mayRun()) return el('p', {}, b);
  return el('p', {}, b, ' ', el('span', { id: `${id}-why`, class: 'empty' }, `This needs the operator role; your token "${me.name}" is a ${me.role}.`));
}

// api calls the API with the session's token; it throws with the API's
// own error message on a refusal.
async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + sessionStorage.getItem(TOKEN_KEY) };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let data = null;
  if (r.status !== 204) {
    const text = await r.text();
    try { data = JSON.parse(text); } catch { data = { error: text || r.statusText }; }
  }
  if (r.status === 401) throw new Unauthorized((data && data.error) || 'token refused');
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status}: ${(data && data.error) || r.statusText}`);
  return data;
}

const enc = encodeURIComponent;

// ---- formatting ----

// when shows a time in the reader's zone. Absolute, not "5m ago": a
// redraw every few seconds would otherwise change the page (and move the
// focus) for nothing.
function when(t) {
  if (!t || t.startsWith('0001-')) return '—';
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el('time', { datetime: t }, text);
}

function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// seconds shows a duration the API gives in seconds, to the second
// under an hour.
function seconds(n) {
  if (n === undefined || n === null) return '—';
  const s = Math.round(n);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const h = Math.floor(s / 3600);
  return h < 48 ? `${h} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

// age shows how long ago t was, to the minute: a page redrawn every few
// seconds then changes once a minute, not at every refresh.
function age(t, until) {
  if (!t || t.startsWith('0001-')) return '—';
  const end = until && !until.startsWith('0001-') ? new Date(until) : new Date();
  const min = Math.max(0, Math.floor((end - new Date(t)) / 60000));
  if (min < 1) return 'under a minute';
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  return h < 48 ? `${h} h ${min % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

// The RPO states, as the API names them, with what the dashboard calls
// them: green, amber (warning), red (missed).
const RPO = {
  green: { label: 'green', cls: 'ok' },
  warning: { label: 'amber', cls: 'warn' },
  missed: { label: 'red', cls: 'bad' },
  unprotected: { label: 'unprotected', cls: 'none' },
};

function rpoBadge(m) {
  const st = RPO[m.rpo_state] || { label: 'no tier', cls: 'none' };
  const title = m.rpo ? `newest point ${m.rpo_age || 'none'} old; objective ${m.rpo}` : undefined;
  return el('span', { class: `badge ${st.cls}`, 'data-rpo': m.rpo_state || 'none', title }, st.label);
}

// replicationLag shows a replication's lag against its RPO objective,
// coloured as the machines' RPO state (the API holds the lag against the
// RPO by the same rule: rpo_state).
function replicationLag(r) {
  const st = RPO[r.rpo_state] || { label: 'no tier', cls: 'none' };
  const lag = r.last_cut ? seconds(r.lag_seconds) : 'no point yet';
  const text = r.rpo ? `${lag} of ${r.rpo}: ${st.label}` : `${lag} (${st.label})`;
  return el('span', { class: `badge ${st.cls}`, 'data-rpo': r.rpo_state || 'none' }, text);
}

// copyLag shows how long a machine's copy to its policy's second vault
// has lacked a point (the API's copy.lag), red beyond its tier's RPO
// (copy.missed: the copy-lag alert).
function copyLag(m) {
  const c = m.copy;
  if (!c) return el('span', { class: 'badge none', 'data-copy': 'none' }, 'no copy');
  const cls = c.missed ? 'bad' : c.lag === '0s' ? 'ok' : 'warn';
  const title = [c.newest_copied ? `newest point copied ${c.newest_copied}` : 'nothing copied yet',
    c.failures ? `${c.failures} failed attempt(s): ${c.last_error}` : ''].filter(Boolean).join('; ');
  return el('span', { class: `badge ${cls}`, 'data-copy': c.missed ? 'missed' : 'ok', title }, `${c.lag === '0s' ? 'current' : `${c.lag} behind`} (${c.target})`);
}

const REPL_CLS = { protected: 'ok', starting: 'warn', 'initial-sync': 'warn', resyncing: 'warn', error: 'bad', stopped: 'bad', 'failed-over': 'none' };

function replicationState(r) {
  let text = r.state;
  if (r.progress && r.progress.total_bytes) text += ` ${Math.floor((100 * r.progress.done_bytes) / r.progress.total_bytes)}%`;
  return el('span', { class: `badge ${REPL_CLS[r.state] || 'none'}`, 'data-state': r.state }, text);
}

// journal shows the source journal's unshipped part of its limit (mirror
// capture) and the history kept at the target.
function journal(r) {
  const src = r.source_journal_limit
    ? `source ${bytes(r.source_journal_bytes)} of ${bytes(r.source_journal_limit)} (${Math.floor((100 * (r.source_journal_bytes || 0)) / r.source_journal_limit)}%)`
    : 'source: none (bitmap capture)';
  return `${src}; target history ${bytes(r.journal_bytes)}`;
}

const JOB_CLS = { queued: 'none', running: 'warn', succeeded: 'ok', failed: 'bad', cancelled: 'none' };

function jobBadge(j) {
  return el('span', { class: `badge ${JOB_CLS[j.state] || 'none'}`, 'data-state': j.state }, j.state);
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return el('p', { class: 'empty' }, empty);
  return el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c) => el('td', {}, c))))));
}

const machineLink = (name) => el('a', { href: `#/machines/${enc(name)}` }, name);
const jobLink = (id) => el('a', { href: `#/jobs/${enc(id)}` }, id);

// progress shows a running job's progress document (bytes done of total,
// rate, time left), as the agents report it with each lease renewal.
function progress(j) {
  const p = j.progress;
  if (j.state !== 'running' || !p || !p.total_bytes) return '';
  const pct = Math.min(100, Math.floor((100 * p.done_bytes) / p.total_bytes));
  const parts = [`${pct}%`, `${bytes(p.done_bytes)} of ${bytes(p.total_bytes)}`];
  if (p.bytes_per_second) parts.push(`${bytes(p.bytes_per_second)}/s`);
  if (p.eta_seconds) parts.push(`${Math.ceil(p.eta_seconds)} s left`);
  return el('span', { class: 'progress' },
    el('progress', { max: p.total_bytes, value: p.done_bytes, 'aria-label': `job ${j.id}: ${pct}% done` }), ' ', parts.join(' · '));
}

function jobRows(jobs, withMachine) {
  return jobs.map((j) => [
    jobLink(j.id), j.kind, withMachine ? (j.machine ? machineLink(j.machine) : '—') : null,
    jobBadge(j), progress(j), `${j.attempt}/${j.max_attempts}`, when(j.created), when(j.finished), j.error || '',
  ].filter((c) => c !== null));
}

const jobHeaders = (withMachine) => ['Job', 'Kind', withMachine ? 'Machine' : null, 'State', 'Progress', 'Attempt', 'Queued', 'Finished', 'Error']
  .filter((h) => h !== null);

// ---- pages: each loads its data, then returns the nodes to show ----

async function overview() {
  const [machines, alerts, running, queued, reps] = await Promise.all([
    api('GET', '/v1/machines'), api('GET', '/v1/alerts'),
    api('GET', '/v1/jobs?state=running&limit=50'), api('GET', '/v1/jobs?state=queued&limit=50'),
    api('GET', '/v1/replications'),
  ]);
  // Each replication counts once: failed or stopped first, then by its
  // lag against its RPO.
  const down = (r) => r.state === 'error' || r.state === 'stopped';
  const repCount = (st) => reps.filter((r) => !down(r) && (r.rpo_state || '') === st).length;
  const count = (s) => machines.filter((m) => m.rpo_state === s).length;
  const tile = (label, n, cls, what) => el('div', { class: `tile ${cls}` },
    el('span', { class: 'n', 'data-count': what }, n), el('span', {}, label));
  return [
    el('h1', {}, 'Overview'),
    el('section', { class: 'tiles', 'aria-label': 'Machines by RPO state' },
      tile('green', count('green'), 'ok', 'green'),
      tile('amber (RPO at risk)', count('warning'), 'warn', 'warning'),
      tile('red (RPO missed)', count('missed'), 'bad', 'missed'),
      tile('unprotected or no tier', machines.length - count('green') - count('warning') - count('missed'), 'none', 'other')),
    ...(reps.length ? [
      el('h2', {}, el('a', { href: '#/replication' }, 'Replication')),
      el('section', { class: 'tiles', 'aria-label': 'Replications by lag against RPO' },
        tile('within RPO', repCount('green'), 'ok', 'rep-green'),
        tile('amber (lag near RPO)', repCount('warning'), 'warn', 'rep-warning'),
        tile('red (lag beyond RPO)', repCount('missed'), 'bad', 'rep-missed'),
        tile('failed or stopped', reps.filter(down).length, 'bad', 'rep-down'),
        tile('no tier, or failed over', repCount('') + repCount('unprotected'), 'none', 'rep-other')),
    ] : []),
    el('h2', {}, 'Active alerts'),
    alertTable(alerts),
    el('h2', {}, 'Running and queued jobs'),
    table('Jobs running or waiting to run', jobHeaders(true), jobRows(running.concat(queued), true), 'No job is running or queued.'),
  ];
}

// ackCell says who acknowledged an alert, or offers to (an operator's
// token; a viewer's button is disabled, the reason above the table).
function ackCell(a) {
  if (a.acked) return el('span', { class: 'acked' }, `by ${a.acked_by} at `, when(a.acked));
  if (a.cleared) return '—';
  const b = el('button', { type: 'button', id: `ack-${a.id}`, class: 'ack', disabled: !mayRun(), 'aria-describedby': mayRun() ? undefined : 'ack-why' }, 'Acknowledge');
  b.addEventListener('click', () => act(b, async () => {
    await api('POST', `/v1/alerts/${enc(a.id)}/ack`);
    say(`Alert ${a.kind} on ${a.subject} acknowledged.`);
  }));
  return b;
}

function alertTable(alerts) {
  const why = !mayRun() && alerts.some((a) => !a.cleared && !a.acked)
    ? el('p', { id: 'ack-why', class: 'empty' }, `Acknowledging an alert needs the operator role; your token "${me.name}" is a ${me.role}.`) : null;
  return [why, table('Alerts, newest first', ['Kind', 'Subject', 'Message', 'Opened', 'Open for', 'Cleared', 'Acknowledged'],
    alerts.map((a) => [el('span', { class: `badge ${a.cleared ? 'none' : 'bad'}`, 'data-kind': a.kind }, a.kind), a.subject, a.message,
      when(a.opened), el('span', { class: 'age' }, age(a.opened, a.cleared)), when(a.cleared), ackCell(a)]),
    'No alert is open.')];
}

async function machines() {
  const ms = await api('GET', '/v1/machines');
  return [
    el('h1', {}, 'Machines'),
    table('Machines and where they stand', ['Machine', 'Tier', 'Policy', 'RPO state', 'Last point', 'Next run', 'Copy'],
      ms.map((m) => [machineLink(m.name), m.tier || '—', m.policy || '—', rpoBadge(m), when(m.last_point), when(m.next_run), copyLag(m)]),
      'No machine yet: add one with lifeboat machine add (POST /v1/machines).'),
  ];
}

async function machine(name) {
  const mp = `/v1/machines/${enc(name)}`;
  const [m, points, jobs, reps, drillList] = await Promise.all([
    api('GET', mp), api('GET', `${mp}/points?limit=50`), api('GET', `/v1/jobs?machine=${enc(name)}&limit=20`),
    api('GET', `/v1/replications?machine=${enc(name)}`), api('GET', `/v1/drills?machine=${enc(name)}`),
  ]);
  const r = reps[0];
  const d = drillList[0] || {};
  const backup = runButton('backup-now', 'Back up now', async () => {
    const j = await api('POST', `${mp}/backup`);
    say(`Backup of ${name} queued: job ${j.id}.`);
  });
  // A drill of the latest point with the server's defaults (the guest
  // agent must answer); lifeboat drill --server takes the other options.
  const drillNow = runButton('drill-now', 'Drill now', async () => {
    const j = await api('POST', `${mp}/drill`, { point: 'latest' });
    say(`Drill of ${name} queued: job ${j.id}.`);
  });
  return [
    el('h1', {}, `Machine ${m.name}`),
    el('dl', { class: 'facts' },
      el('dt', {}, 'RPO state'), el('dd', {}, rpoBadge(m)),
      el('dt', {}, 'Tier'), el('dd', {}, m.tier || '—', m.rpo ? ` (RPO ${m.rpo})` : ''),
      el('dt', {}, 'Policy'), el('dd', {}, m.policy || '—'),
      el('dt', {}, 'Agent'), el('dd', {}, m.agent || 'any'),
      el('dt', {}, 'Last point'), el('dd', {}, when(m.last_point)),
      el('dt', {}, 'Next run'), el('dd', {}, when(m.next_run)),
      el('dt', {}, 'Copy'), el('dd', { id: 'machine-copy' }, copyLag(m)),
      el('dt', {}, 'Replication'), el('dd', { id: 'machine-replication' },
        r ? [replicationState(r), ' ', replicationLag(r), ` to ${r.target} (agent ${r.agent})`] : 'not replicated'),
      el('dt', {}, 'Latest drill'), el('dd', { id: 'machine-drill' }, drillResult(d.last), d.last ? [' ', jobLink(d.last.job)] : ''),
      el('dt', {}, 'Measured RTO'), el('dd', {}, drillRTO(d))),
    el('div', { class: 'actions' }, backup, drillNow),
    el('h2', {}, 'Recovery points'),
    table(`Recovery points of ${m.name}, newest first`, ['Point', 'Time', 'Vault', 'Consistency', 'Change source', 'Size'],
      points.map((pt) => [el('code', { class: 'id' }, pt.id), when(pt.time), pt.vault, pt.consistency, pt.change_source || '—', bytes(pt.size)]),
      'No recovery point yet.'),
    el('h2', {}, 'Jobs'),
    el('div', { id: 'machine-jobs' },
      table(`Recent jobs of ${m.name}`, jobHeaders(false), jobRows(jobs, false), 'No job yet.')),
  ];
}

const JOB_STATES = ['running', 'queued', 'failed', 'succeeded', 'cancelled'];

async function jobs() {
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  const state = JOB_STATES.includes(q.get('state')) ? q.get('state') : '';
  const js = await api('GET', `/v1/jobs?limit=100${state ? '&state=' + state : ''}`);
  const filter = (s, label) => s === state
    ? el('a', { href: `#/jobs${s ? '?state=' + s : ''}`, 'aria-current': 'true' }, label)
    : el('a', { href: `#/jobs${s ? '?state=' + s : ''}` }, label);
  return [
    el('h1', {}, 'Jobs'),
    el('nav', { class: 'filters', 'aria-label': 'Jobs by state' }, filter('', 'all'), JOB_STATES.map((s) => filter(s, s))),
    table(`${state ? 'Recent ' + state : 'Recent'} jobs, newest first`, jobHeaders(true), jobRows(js, true), state ? `No ${state} job.` : 'No job yet.'),
  ];
}

async function job(id) {
  const jp = `/v1/jobs/${enc(id)}`;
  const [j, logs] = await Promise.all([api('GET', jp), api('GET', `${jp}/logs`)]);
  const out = [
    el('h1', {}, `Job ${j.id}`),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Kind'), el('dd', {}, j.kind),
      el('dt', {}, 'Machine'), el('dd', {}, j.machine ? machineLink(j.machine) : '—'),
      el('dt', {}, 'State'), el('dd', {}, jobBadge(j)),
      el('dt', {}, 'Attempt'), el('dd', {}, `${j.attempt} of ${j.max_attempts}`),
      el('dt', {}, 'Agent'), el('dd', {}, j.agent || 'any'),
      el('dt', {}, 'Vault'), el('dd', {}, j.vault || '—'),
      el('dt', {}, 'Queued'), el('dd', {}, when(j.created)),
      el('dt', {}, 'Started'), el('dd', {}, when(j.started)),
      el('dt', {}, 'Finished'), el('dd', {}, when(j.finished)),
      j.error ? [el('dt', {}, 'Error'), el('dd', { class: 'error' }, j.error)] : []),
  ];
  if (j.state === 'queued' || j.state === 'running') {
    out.push(runButton('cancel-job', 'Cancel job', async () => {
      await api('POST', `${jp}/cancel`);
      say(`Job ${j.id}: cancel requested.`);
    }));
  }
  if (j.state === 'running' && j.progress) out.push(el('h2', {}, 'Progress'), el('p', {}, progress(j) || JSON.stringify(j.progress)));
  if (j.result) out.push(el('h2', {}, 'Result'), el('pre', {}, JSON.stringify(j.result, null, 2)));
  out.push(el('h2', {}, 'Log'),
    logs.length ? el('pre', { class: 'log', id: 'job-log' }, logs.map((l) => `${l.time} ${l.level.padEnd(5)} ${l.message}\n`))
      : el('p', { class: 'empty' }, 'No log line yet.'));
  return out;
}

async function alerts() {
  const all = location.hash.endsWith('?all');
  const as = await api('GET', all ? '/v1/alerts?all=true' : '/v1/alerts');
  return [
    el('h1', {}, 'Alerts'),
    el('p', {}, all ? el('a', { href: '#/alerts' }, 'Show open alerts only') : el('a', { href: '#/alerts?all' }, 'Show cleared alerts too')),
    alertTable(as),
  ];
}

// replication lists every replicated machine, the members of a
// replication group together (their points are cut at one instant).
async function replication() {
  const reps = await api('GET', '/v1/replications');
  const groups = new Map();
  for (const r of reps) {
    const g = r.group || '';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(r);
  }
  const names = [...groups.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));
  const headers = ['Machine', 'State', 'Lag against RPO', 'Last crash-consistent point', 'Last app-consistent point', 'Target site', 'Agent', 'Journal', 'Problem'];
  const rows = (rs) => rs.sort((a, b) => a.machine.localeCompare(b.machine)).map((r) => [
    r.machine, replicationState(r), replicationLag(r), when(r.last_cut), when(r.last_app_cut), r.target, r.agent, journal(r), r.error || '']);
  const out = [el('h1', {}, 'Replication')];
  if (!reps.length) {
    out.push(el('p', { class: 'empty' }, 'No machine is replicated: enable one with lifeboat replicate enable --server … --agent NAME (PUT /v1/replications/NAME).'));
    return out;
  }
  for (const g of names) {
    const members = groups.get(g);
    out.push(el('section', { class: 'group', 'data-group': g, 'aria-label': g ? `Replication group ${g}` : 'Machines replicated on their own' },
      el('h2', {}, g ? `Group ${g}` : 'On their own'),
      g ? el('p', { class: 'empty' }, `${members.length} machine${members.length === 1 ? '' : 's'}, whose points are cut at the same instant.`) : null,
      table(g ? `Replication of group ${g}` : 'Machines replicated on their own', headers, rows(members), '')));
  }
  return out;
}

const RTO_CLS = { met: 'ok', missed: 'bad' };

function drillResult(run) {
  if (!run) return el('span', { class: 'badge none', 'data-result': 'none' }, 'never drilled');
  if (run.state === 'queued' || run.state === 'running') return el('span', { class: 'badge warn', 'data-result': run.state }, run.state);
  if (run.ok) return el('span', { class: 'badge ok', 'data-result': 'passed' }, 'passed');
  return el('span', { class: 'badge bad', 'data-result': 'failed', title: run.error || undefined }, run.state === 'cancelled' ? 'cancelled' : 'failed');
}

// drillRTO shows the recovery time the newest successful drill measured
// against the tier's RTO objective (the API holds it: rto_state).
function drillRTO(d) {
  if (!d.last_ok || !d.last_ok.rto_seconds) return '—';
  const measured = seconds(d.last_ok.rto_seconds);
  if (!d.rto_state) return `${measured} (no RTO objective)`;
  return el('span', { class: `badge ${RTO_CLS[d.rto_state]}`, 'data-rto': d.rto_state }, `${measured} of ${d.rto}: ${d.rto_state}`);
}

async function drills() {
  const ds = await api('GET', '/v1/drills');
  return [
    el('h1', {}, 'Drills'),
    el('p', {}, 'A drill boots a machine\'s recovery point in a sandbox with no network and waits for its guest to answer: the time it took is the recovery time measured against the tier\'s RTO.'),
    table('Each machine\'s latest drill', ['Machine', 'Tier', 'Latest drill', 'Result', 'Point', 'Error', 'Last passed', 'Measured RTO', 'Every'],
      ds.map((d) => [machineLink(d.machine), d.tier || '—',
        d.last ? [jobLink(d.last.job), ' ', when(d.last.finished || d.last.created)] : '—', drillResult(d.last),
        d.last && d.last.point ? el('code', { class: 'id' }, d.last.point.slice(0, 12)) : '—', (d.last && !d.last.ok && d.last.error) || '',
        d.last_ok ? when(d.last_ok.finished) : 'never', drillRTO(d), d.drill_every || 'server default']),
      'No machine yet.'),
  ];
}

async function vaults() {
  const [vs, agents] = await Promise.all([api('GET', '/v1/vaults'), api('GET', '/v1/agents')]);
  return [
    el('h1', {}, 'Vaults'),
    table('Vaults the server knows', ['Vault', 'URL', 'Copies to', 'Added'],
      vs.map((v) => [v.name, v.url, v.copy_to || '—', when(v.created)]), 'No vault yet.'),
    el('h2', {}, 'Agents'),
    table('Agents and their last heartbeat', ['Agent', 'Last heartbeat', 'Registered'],
      agents.map((a) => [a.name, when(a.heartbeat), when(a.created)]), 'No agent yet.'),
  ];
}

// ---- the frame: routing, refreshing, login ----

function route() {
  const parts = location.hash.replace(/^#\/?/, '').replace(/\?.*$/, '').split('/').map(decodeURIComponent);
  switch (parts[0]) {
    case 'machines': return parts[1] ? ['machines', () => machine(parts[1])] : ['machines', machines];
    case 'jobs': return parts[1] ? ['jobs', () => job(parts[1])] : ['jobs', jobs];
    case 'replication': return ['replication', replication];
    case 'drills': return ['drills', drills];
    case 'alerts': return ['alerts', alerts];
    case 'vaults': return ['vaults', vaults];
    default: return ['', overview];
  }
}

let shown = '';  // the page last drawn (hash and content), to redraw only on change
let timer = 0;
let drawing = 0; // the newest render: an older one that finishes later draws nothing

async function render() {
  clearTimeout(timer);
  const gen = ++drawing;
  if (!sessionStorage.getItem(TOKEN_KEY)) { showLogin(''); return; }
  const [section, page] = route();
  const hash = location.hash;
  for (const a of byId('nav').querySelectorAll('a')) {
    const here = a.getAttribute('href').slice(2) === section;
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  let nodes;
  try {
    if (!me) {
      try {
        me = await api('GET', '/v1/whoami');
      } catch (e) {
        // An agent's token, say: refused at the door.
        if (!(e instanceof Unauthorized)) { sessionStorage.removeItem(TOKEN_KEY); showLogin(e.message); return; }
        throw e;
      }
      byId('me').textContent = `Logged in as ${me.name} (${me.role})`;
    }
    nodes = await page();
  } catch (e) {
    if (e instanceof Unauthorized) { sessionStorage.removeItem(TOKEN_KEY); showLogin(e.message); return; }
    nodes = [el('h1', {}, 'Error'), el('p', { class: 'error', role: 'alert' }, e.message)];
  }
  if (gen !== drawing || hash !== location.hash) return; // a newer render draws
  const view = byId('view');
  const fresh = el('div', {}, nodes);
  const key = hash + '\n' + fresh.innerHTML;
  // Redraw only what changed, so a refresh does not move the focus.
  if (key !== shown) {
    const moved = !shown.startsWith(hash + '\n');
    const focused = view.contains(document.activeElement) ? document.activeElement.id : '';
    view.replaceChildren(...fresh.childNodes);
    // A refresh keeps the focus on the control it was on.
    if (focused && !moved && byId(focused)) byId(focused).focus();
    shown = key;
    if (moved) {
      const h1 = view.querySelector('h1');
      document.title = `${h1 ? h1.textContent : 'lifeboat'} — lifeboat`;
    }
  }
  byId('login').hidden = true;
  view.hidden = false;
  byId('nav').hidden = false;
  byId('logout').hidden = false;
  timer = setTimeout(render, REFRESH_MS);
}

function showLogin(msg) {
  clearTimeout(timer);
  shown = '';
  me = null;
  byId('me').textContent = '';
  byId('view').hidden = true;
  byId('view').replaceChildren();
  byId('nav').hidden = true;
  byId('logout').hidden = true;
  byId('login').hidden = false;
  byId('login-error').textContent = msg ? `Not logged in: ${msg}` : '';
  byId('token').focus();
}

// act runs an action of a button, disabled meanwhile, and shows its
// outcome in the status line.
async function act(button, fn) {
  if (button.disabled) return;
  button.disabled = true;
  try {
    await fn();
    render();
  } catch (e) {
    if (e instanceof Unauthorized) { sessionStorage.removeItem(TOKEN_KEY); showLogin(e.message); return; }
    say(e.message, true);
  } finally {
    button.disabled = false;
  }
}

function say(msg, bad) {
  const s = byId('status');
  s.textContent = msg;
  s.className = bad ? 'status error' : 'status';
}

function start() {
  byId('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = byId('token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    byId('token').value = '';
    shown = '';
    render().then(() => { if (!byId('view').hidden) byId('main').focus(); });
  });
  byId('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    say('Logged out.');
    showLogin('');
  });
  window.addEventListener('hashchange', () => { say(''); render().then(() => byId('main').focus()); });
  render();
}

start();
