// meshcast demo page: plays the demo's stream (live, or a VOD with
// `meshcast demo --vod`) with hls.js, its fragments fetched over the mesh by
// the meshcast loader (or plain HTTP with ?loader=http), and shows where the
// bytes came from.
//
// For the browser tests everything measured is on `window.demo`:
//   state      'loading' | 'playing' | 'stalled' | 'error'
//   mode       'mesh' | 'verify' | 'http'
//   player     'hls' | 'shaka' | 'dashjs' | 'videojs' (?player=; by default
//              hls.js for HLS and Shaka for DASH)
//   config.format  'hls' | 'dash' (?format=dash: the demo's DASH stream)
//   config     /config.json (plus query overrides: playlist, wellKnown, stream);
//              config.vod says the demo published a VOD
//   vod        true | false once hls.js has loaded a media playlist (its
//              ENDLIST decides), config.vod until then
//   hls, mesh  the player and the mesh (mesh is null with ?loader=http)
//   totals()   { meshBytes, httpBytes, meshSegments, httpSegments, offload }
//   segments   one entry per fragment delivered (the loader's `segment`
//              events; with ?loader=http, hls.js FRAG_LOADED)
//   fragLoads  hls.js FRAG_LOADED of media fragments, in both modes:
//              { url, sn, level, bytes, ms (loading.end - loading.start), at }
//   events     everything else, each { type, at, ...detail }: 'gateway'
//              (change: 'connected'|'closed', url, reason), 'verify-failed'
//              (url, reason, inflight), 'http-rejected' (url, from, reason,
//              next: bytes from an HTTP server that did not verify),
//              'mesh-state', 'segment-failed',
//              'first-frame', 'hls-error', 'seek' (from, to), 'seek-frame'
//              (to, ms), 'gap-skip' (from, to)
//   stalls     { at, ms }: playback not advancing for over 250 ms after the
//              first frame while not paused, nor seeking, nor waiting for the
//              first frame after a seek (that wait is the seek's, below)
//   seeks      one per seek after the first frame: { from, requested (s of
//              media time), to (where it landed: hls.js may skip a hole in
//              the buffer just after the target), at (performance.now()),
//              seekedAt, frameAt (first frame presented at the new position),
//              ms (frameAt − at), superseded (another seek began first) }.
//              hls.js' own jumps over holes are not seeks: they are 'gap-skip'
//              events (from, to)
//   latencies  once a second after the first frame of a live stream, hls.js'
//              estimate of how far the playhead is behind the live edge:
//              { at, s } (hls.latency: the playlist's edge, advanced by the
//              time since it was loaded, minus currentTime)
//   startedAt  performance.now() when the player setup (mesh + playlist) began
//   ttffMs     first video frame (requestVideoFrameCallback) − startedAt
//   ttffNavMs  first video frame since the page's navigation began: what a
//              viewer waits, page load and the mesh client's start included

import Hls from './hls.mjs';
import { createMesh, preloadClient } from './meshcast.js';
import { attachShaka } from './shaka.js';
import { attachDashjs } from './dashjs.js';
import { registerVideojs } from './videojs.js';

const params = new URLSearchParams(location.search);
// mesh: fragments over the mesh, HTTP as the fallback; verify: every
// fragment over HTTP, checked against the headers the mesh announces; http:
// plain hls.js.
const mode = ['http', 'verify'].includes(params.get('loader')) ? params.get('loader') : 'mesh';
// The player: hls.js (the default for HLS), Shaka (the default for DASH),
// dash.js or Video.js (hosting hls.js).
const PLAYERS = ['hls', 'shaka', 'dashjs', 'videojs'];
const requestedPlayer = PLAYERS.includes(params.get('player')) ? params.get('player') : null;
// Compile the mesh client while the page loads its configuration.
if (mode !== 'http') preloadClient();

const demo = {
  state: 'loading',
  mode,
  player: null,
  config: null,
  hls: null,
  mesh: null,
  segments: [],
  fragLoads: [],
  events: [],
  stalls: [],
  seeks: [],
  latencies: [],
  vod: null,
  startedAt: null,
  firstFrameAt: null,
  ttffMs: null,
  ttffNavMs: null,
  error: null,
  totals,
};
window.demo = demo;

const $ = (id) => document.getElementById(id);
const video = $('video');

// ---------------------------------------------------------------- formatting

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** Short byte counts for chart axes: 0, 512, 48K, 1.2M. */
function fmtAxisBytes(n) {
  if (n < 1024) return `${Math.round(n)}`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)}K`;
  return `${(n / 1024 / 1024).toFixed(1)}M`;
}

function fmtBps(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '–';
  if (bps < 1e6) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

function fmtMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return '–';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const shortUrl = (url) => {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return String(url);
  }
};

/** Media time as m:ss (h:mm:ss past an hour). */
function fmtClock(secs) {
  if (!Number.isFinite(secs) || secs < 0) return '–';
  const s = Math.floor(secs);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

const since = () => (demo.startedAt == null ? 0 : (performance.now() - demo.startedAt) / 1000);

// ---------------------------------------------------------------- state

function setState(state) {
  if (demo.state === state) return;
  demo.state = state;
  const pill = $('state');
  pill.textContent = state;
  pill.className = `pill state-${state}`;
}

function totals() {
  const t = { meshBytes: 0, httpBytes: 0, meshSegments: 0, httpSegments: 0 };
  for (const s of demo.segments) {
    if (s.source === 'mesh') {
      t.meshBytes += s.bytes;
      t.meshSegments += 1;
    } else {
      t.httpBytes += s.bytes;
      t.httpSegments += 1;
    }
  }
  const all = t.meshBytes + t.httpBytes;
  return { ...t, offload: all ? t.meshBytes / all : 0 };
}

// ---------------------------------------------------------------- log

const LOG_MAX = 300;

function log(kind, text, cls = '') {
  const li = document.createElement('li');
  li.className = cls;
  li.innerHTML = '<span class="t"></span><span class="k"></span><span class="x"></span>';
  li.children[0].textContent = `${since().toFixed(1)} s`;
  li.children[1].textContent = kind;
  li.children[2].textContent = text;
  const ol = $('log');
  ol.prepend(li);
  while (ol.children.length > LOG_MAX) ol.lastChild.remove();
}

function event(type, detail = {}) {
  const e = { ...detail, type, at: performance.now() };
  demo.events.push(e);
  return e;
}

// ---------------------------------------------------------------- segments

// Bytes per source per 2 s bucket, for the chart.
const BUCKET_MS = 2000;
const buckets = []; // [{ mesh, http }]

function book(seg) {
  demo.segments.push(seg);
  const i = Math.max(0, Math.floor((seg.at - demo.startedAt) / BUCKET_MS));
  while (buckets.length <= i) buckets.push({ mesh: 0, http: 0 });
  buckets[i][seg.source === 'mesh' ? 'mesh' : 'http'] += seg.bytes;
  const what = seg.init ? 'init' : `#${seg.sequence ?? seg.sn ?? '?'}`;
  const name = seg.url ? seg.url.split('/').pop() : '';
  if (seg.source === 'mesh') {
    const via = seg.gateway ? ` via ${shortUrl(seg.gateway)}` : '';
    const retried = seg.attempts > 1 ? `, ${seg.attempts} attempts` : '';
    log('mesh', `${what} ${name} ${fmtBytes(seg.bytes)} in ${fmtMs(seg.ms)}${via}${retried}`, 'mesh');
  } else {
    const detail = seg.why && seg.reason !== 'mesh unavailable' ? `: ${seg.why}` : '';
    const why = seg.reason ? ` (${seg.reason}${detail})` : '';
    log('http', `${what} ${name} ${fmtBytes(seg.bytes)} in ${fmtMs(seg.ms)}${why}`, 'http');
  }
  renderCounters();
}

// ---------------------------------------------------------------- rendering

function renderCounters() {
  const t = totals();
  $('mesh-bytes').textContent = fmtBytes(t.meshBytes);
  $('http-bytes').textContent = fmtBytes(t.httpBytes);
  $('mesh-segs').textContent = `${t.meshSegments} segment${t.meshSegments === 1 ? '' : 's'}`;
  $('http-segs').textContent = `${t.httpSegments} segment${t.httpSegments === 1 ? '' : 's'}`;
  const any = t.meshBytes + t.httpBytes > 0;
  $('offload').textContent = any ? `${(t.offload * 100).toFixed(1)} %` : '–';
  $('offload-bar').style.width = `${(t.offload * 100).toFixed(1)}%`;
  $('ttff').textContent = fmtMs(demo.ttffMs);
  const worst = demo.stalls.reduce((m, s) => Math.max(m, s.ms), 0);
  $('stalls').textContent = demo.stalls.length
    ? `${demo.stalls.length} stall${demo.stalls.length === 1 ? '' : 's'}, longest ${fmtMs(worst)}`
    : 'no stall';
  $('seeks').textContent = String(demo.seeks.length);
  const timed = demo.seeks.filter((s) => s.ms != null).map((s) => s.ms);
  $('seek-ms').textContent = timed.length
    ? `to frame: last ${fmtMs(timed[timed.length - 1])}, median ${fmtMs(median(timed))}`
    : demo.seeks.length
      ? 'waiting for a frame'
      : 'none yet';
}

/** The LIVE / VOD badge, from demo.vod. */
function renderKind() {
  const pill = $('kind');
  if (demo.vod == null) {
    pill.textContent = '…';
    pill.className = 'pill kind';
    return;
  }
  pill.textContent = demo.vod ? 'VOD' : 'LIVE';
  pill.className = `pill kind ${demo.vod ? 'kind-vod' : 'kind-live'}`;
}

/** Position and, for a VOD, duration, under the player. */
function renderPosition() {
  const t = video.currentTime;
  const d = video.duration;
  let text = fmtClock(t);
  if (demo.vod && Number.isFinite(d)) text += ` / ${fmtClock(d)}`;
  else if (demo.vod === false) {
    const last = demo.latencies[demo.latencies.length - 1];
    text += last ? ` · live, ${last.s.toFixed(1)} s behind` : ' · live';
  }
  $('position').textContent = text;
}

/** Sizes a canvas' backing store to its CSS box; returns its 2D context. */
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  return ctx;
}

const css = getComputedStyle(document.documentElement);
const color = (name) => css.getPropertyValue(name).trim();

/** Stacked bars of bytes per 2 s bucket (mesh below, HTTP above) and the
 * cumulative offload as a line on a 0–100 % scale. */
function drawChart() {
  const canvas = $('chart');
  const ctx = fitCanvas(canvas);
  const W = canvas.clientWidth;
  const H = canvas.clientHeight;
  const padL = 40;
  const padR = 36;
  const padT = 8;
  const padB = 18;
  const plotW = W - padL - padR;
  const plotH = H - padT - padB;
  const n = Math.max(30, Math.min(90, buckets.length));
  const first = Math.max(0, buckets.length - n);
  const shown = buckets.slice(first);
  const max = Math.max(1, ...shown.map((b) => b.mesh + b.http));

  ctx.font = '11px ui-monospace, monospace';
  ctx.fillStyle = color('--muted');
  ctx.strokeStyle = '#232a34';
  ctx.lineWidth = 1;
  // Grid: 4 horizontal lines with byte labels on the left, % on the right.
  for (let i = 0; i <= 4; i++) {
    const y = padT + plotH - (plotH * i) / 4 + 0.5;
    ctx.beginPath();
    ctx.moveTo(padL, y);
    ctx.lineTo(W - padR, y);
    ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(fmtAxisBytes((max * i) / 4), padL - 6, y + 4);
    ctx.textAlign = 'left';
    ctx.fillText(`${25 * i}%`, W - padR + 6, y + 4);
  }

  const slot = plotW / n;
  const barW = Math.max(1, slot - 2);
  shown.forEach((b, i) => {
    const x = padL + i * slot + 1;
    const hm = (b.mesh / max) * plotH;
    const hh = (b.http / max) * plotH;
    ctx.fillStyle = color('--mesh');
    ctx.fillRect(x, padT + plotH - hm, barW, hm);
    ctx.fillStyle = color('--http');
    ctx.fillRect(x, padT + plotH - hm - hh, barW, hh);
  });

  // Cumulative offload over all buckets up to each shown one.
  let mesh = 0;
  let all = 0;
  for (let i = 0; i < first; i++) {
    mesh += buckets[i].mesh;
    all += buckets[i].mesh + buckets[i].http;
  }
  ctx.strokeStyle = color('--good');
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  shown.forEach((b, i) => {
    mesh += b.mesh;
    all += b.mesh + b.http;
    if (!all) return;
    const x = padL + i * slot + slot / 2;
    const y = padT + plotH - (mesh / all) * plotH;
    if (started) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
    started = true;
  });
  ctx.stroke();

  // Time axis: seconds since start at a few ticks.
  ctx.fillStyle = color('--muted');
  ctx.textAlign = 'center';
  for (let i = 0; i < n; i += Math.ceil(n / 6)) {
    const x = padL + i * slot + slot / 2;
    ctx.fillText(`${((first + i) * BUCKET_MS) / 1000}s`, x, H - 4);
  }
  if (!buckets.length) {
    ctx.textAlign = 'center';
    ctx.fillText('waiting for the first segment…', padL + plotW / 2, padT + plotH / 2);
  }
}

/** Bars of the last 40 media segments' latency, coloured by source. */
function drawLatency() {
  const canvas = $('latency');
  const ctx = fitCanvas(canvas);
  const W = canvas.clientWidth;
  const H = canvas.clientHeight;
  const segs = demo.segments.filter((s) => !s.init).slice(-40);
  const padL = 48;
  const padB = 4;
  const padT = 6;
  const plotH = H - padT - padB;
  const max = Math.max(50, ...segs.map((s) => s.ms));
  ctx.font = '11px ui-monospace, monospace';
  ctx.fillStyle = color('--muted');
  ctx.textAlign = 'right';
  ctx.fillText(fmtMs(max).replace(' ', ''), padL - 6, padT + 9);
  ctx.fillText('0', padL - 6, H - padB);
  const slot = (W - padL) / 40;
  segs.forEach((s, i) => {
    const h = Math.max(1, (s.ms / max) * plotH);
    ctx.fillStyle = color(s.source === 'mesh' ? '--mesh' : '--http');
    ctx.fillRect(padL + i * slot + 1, padT + plotH - h, Math.max(1, slot - 2), h);
  });

  const ms = (src) => segs.filter((s) => s.source === src).map((s) => s.ms);
  const parts = [];
  const mm = median(ms('mesh'));
  const mh = median(ms('http'));
  if (mm != null) parts.push(`median mesh ${fmtMs(mm)}`);
  if (mh != null) parts.push(`median HTTP ${fmtMs(mh)}`);
  if (segs.length) parts.push(`last ${fmtMs(segs[segs.length - 1].ms)}`);
  $('latency-summary').textContent = parts.join(' · ');
}

function renderGateways() {
  const body = $('gateways');
  const rows = demo.mesh ? demo.mesh.gateways() : [];
  body.replaceChildren();
  if (!rows.length) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = 5;
    td.className = 'muted';
    td.textContent = mode === 'http' ? 'mesh off (?loader=http)' : 'no gateway connected';
  }
  for (const g of rows) {
    const tr = body.insertRow();
    const cells = [
      shortUrl(g.url),
      g.banned ? 'banned' : g.connected ? (g.transport === 'websocket' ? 'connected (WebSocket)' : 'connected') : 'down',
      fmtBps(g.throughputBps),
      String(g.inflight ?? 0),
      String(g.failures ?? 0),
    ];
    cells.forEach((text, i) => {
      const td = tr.insertCell();
      td.textContent = text;
      if (i === 0) td.title = g.url;
      if (i === 1) td.className = g.banned ? 'banned' : g.connected ? 'up' : 'down';
    });
  }
  const m = demo.mesh;
  $('mesh-state').textContent = m
    ? `mesh ${m.state}${m.reason ? `: ${m.reason}` : ''}`
    : '';
}

function render() {
  renderCounters();
  renderGateways();
  drawChart();
  drawLatency();
}

// ---------------------------------------------------------------- playback watch

// Samples the playhead every 100 ms: records stalls and the state pill.
let lastTime = null;
let stuckSince = null;
function watchPlayback() {
  const now = performance.now();
  const t = video.currentTime;
  renderPosition();
  if (demo.firstFrameAt == null) return;
  const moving = lastTime == null || t > lastTime + 0.001;
  // A seek's wait for data is measured as the seek's time to first frame,
  // not as a stall.
  const seeking =
    video.seeking || (currentSeek != null && currentSeek.frameAt == null && now - currentSeek.at < SEEK_FRAME_WAIT_MS);
  if (moving || video.paused || video.ended || seeking) {
    if (stuckSince != null) {
      const ms = now - stuckSince;
      if (ms > 250) {
        demo.stalls.push({ at: stuckSince, ms: Math.round(ms), currentTime: t });
        log('stall', `playback stalled for ${fmtMs(ms)}`, 'http');
      }
      stuckSince = null;
    }
    if (demo.state === 'stalled') setState('playing');
  } else if (stuckSince == null) {
    stuckSince = now;
  } else if (now - stuckSince > 500 && demo.state === 'playing') {
    setState('stalled');
  }
  lastTime = t;
  if (!demo.vod && demo.hls && now - lastLatencyAt >= 1000) {
    lastLatencyAt = now;
    const s = demo.hls.latency;
    if (Number.isFinite(s) && s > 0) demo.latencies.push({ at: Math.round(now), s: Math.round(s * 1000) / 1000 });
  }
}
let lastLatencyAt = -Infinity;

// hls.js jumps over holes in the buffer (at the test stream's loop
// boundaries, say) by setting currentTime itself, and reports it with one of
// these non-fatal errors just before the `seeking` event that follows (it has
// set currentTime by then).
const PLAYER_JUMPS = new Set(['bufferSeekOverHole', 'bufferNudgeOnStall']);
// The last such report: performance.now() and currentTime then. A `seeking`
// to that very time soon after is hls.js' jump; any other is a viewer's seek.
let playerJump = { at: -Infinity, to: NaN };
// After this long without a frame, a seek's wait counts as a stall again.
const SEEK_FRAME_WAIT_MS = 10_000;
// The latest seek (its first frame presented or not), or null.
let currentSeek = null;
// Playhead before the latest `seeking` (currentTime is the target by then).
let positionBefore = 0;

/** Records every seek and the time from it to the first frame presented at
 * the new position. */
function watchSeeks() {
  video.addEventListener('timeupdate', () => {
    if (!video.seeking) positionBefore = video.currentTime;
  });
  video.addEventListener('seeking', () => {
    // hls.js positions the player before the first frame (at the live
    // edge, say): part of the time to first frame, not a viewer's seek.
    if (demo.firstFrameAt == null) return;
    const now = performance.now();
    const pending = currentSeek && currentSeek.frameAt == null && !currentSeek.superseded ? currentSeek : null;
    if (now - playerJump.at < 200 && Math.abs(video.currentTime - playerJump.to) < 0.01) {
      if (pending) {
        // Part of the viewer's seek: its frame is awaited where it landed.
        pending.to = video.currentTime;
        log('seek', `landed at ${fmtClock(pending.to)} (hls.js skipped a hole)`, 'gw');
      } else {
        event('gap-skip', { from: positionBefore, to: video.currentTime });
        log('hls', `skipped a hole ${positionBefore.toFixed(2)} → ${video.currentTime.toFixed(2)} s`, '');
      }
      return;
    }
    if (pending) pending.superseded = true;
    const seek = {
      from: positionBefore,
      requested: video.currentTime,
      to: video.currentTime,
      at: now,
      seekedAt: null,
      frameAt: null,
      ms: null,
      superseded: false,
    };
    currentSeek = seek;
    demo.seeks.push(seek);
    event('seek', { from: seek.from, to: seek.to });
    log('seek', `${fmtClock(seek.from)} → ${fmtClock(seek.requested)}`, 'gw');
    // The watcher compares with the position before the jump otherwise.
    lastTime = null;
    stuckSince = null;
    awaitFrame(seek);
    renderCounters();
  });
  video.addEventListener('seeked', () => {
    if (currentSeek && currentSeek.seekedAt == null) currentSeek.seekedAt = performance.now();
    positionBefore = video.currentTime;
  });
}

function seekFramed(seek, at) {
  if (seek.frameAt != null || seek.superseded) return;
  seek.frameAt = at;
  seek.ms = Math.round(at - seek.at);
  event('seek-frame', { to: seek.to, ms: seek.ms });
  log('seek', `first frame at ${fmtClock(seek.to)} after ${fmtMs(seek.ms)}`, 'gw');
  renderCounters();
}

/** Waits for the first frame presented at (or just past) the seek target. */
function awaitFrame(seek) {
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) {
    video.addEventListener('seeked', () => seekFramed(seek, performance.now()), { once: true });
    return;
  }
  video.requestVideoFrameCallback((now, meta) => {
    if (seek !== currentSeek || seek.superseded) return;
    // A frame already on its way from before the seek does not count; the
    // first after it starts at the keyframe at or before the target.
    const near = meta.mediaTime >= seek.to - 2.5 && meta.mediaTime <= seek.to + 10;
    if (video.seeking || !near) {
      awaitFrame(seek);
      return;
    }
    const at = Number.isFinite(meta?.presentationTime) && meta.presentationTime > 0
      ? Math.min(now, meta.presentationTime)
      : now;
    seekFramed(seek, at);
  });
}

function watchFirstFrame() {
  const done = (at) => {
    if (demo.firstFrameAt != null) return;
    demo.firstFrameAt = at;
    demo.ttffMs = Math.round(at - demo.startedAt);
    demo.ttffNavMs = Math.round(at);
    event('first-frame', { ttffMs: demo.ttffMs });
    log('play', `first frame after ${fmtMs(demo.ttffMs)}`, 'gw');
    setState('playing');
    renderCounters();
  };
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback((now, meta) => {
      const at = Number.isFinite(meta?.presentationTime) && meta.presentationTime > 0
        ? Math.min(now, meta.presentationTime)
        : now;
      done(at);
    });
  } else {
    video.addEventListener('playing', () => done(performance.now()), { once: true });
  }
}

// ---------------------------------------------------------------- setup

async function loadConfig() {
  const res = await fetch('config.json', { cache: 'no-store' });
  if (!res.ok) throw new Error(`config.json: HTTP ${res.status}`);
  const config = await res.json();
  // ?format=dash: the demo's second stream, the same media as DASH.
  config.format = params.get('format') === 'dash' ? 'dash' : 'hls';
  if (config.format === 'dash') {
    if (!config.dash) throw new Error('this demo publishes no DASH stream');
    Object.assign(config, { stream: config.dash.stream, playlist: config.dash.playlist, vod: config.dash.vod, fallback: [] });
  }
  for (const key of ['playlist', 'wellKnown', 'stream', 'token']) {
    if (params.has(key)) config[key] = params.get(key);
  }
  return config;
}

function wireMesh(mesh) {
  mesh.addEventListener('segment', (e) => book({ ...e.detail }));
  mesh.addEventListener('segment-failed', (e) => {
    event('segment-failed', e.detail);
    log('failed', `${e.detail.url} ${e.detail.reason}`, 'bad');
  });
  mesh.addEventListener('gateway', (e) => {
    event('gateway', { ...e.detail, change: e.detail.type });
    log(`gateway ${e.detail.type}`, `${e.detail.url}${e.detail.reason ? ` (${e.detail.reason})` : ''}`, 'gw');
    renderGateways();
  });
  mesh.addEventListener('http-rejected', (e) => {
    event('http-rejected', e.detail);
    log('HTTP REJECTED', `${e.detail.from}: ${e.detail.reason}${e.detail.next ? `, trying ${e.detail.next}` : ''}`, 'bad');
  });
  mesh.addEventListener('verify-failed', (e) => {
    event('verify-failed', e.detail);
    log('VERIFY FAILED', `${e.detail.url}: ${e.detail.reason ?? 'bad signature or hash'}`, 'bad');
  });
  mesh.addEventListener('state', (e) => {
    event('mesh-state', e.detail);
    log('mesh', `${e.detail.state}${e.detail.reason ? `: ${e.detail.reason}` : ''}`, 'gw');
    renderGateways();
  });
}

function wireHls(hls) {
  hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
    log('hls', `manifest: ${data.levels.map((l) => `${l.height}p`).join(', ')}`, 'gw');
    video.play().catch((e) => log('hls', `autoplay refused: ${e.message}`, 'bad'));
  });
  hls.on(Hls.Events.LEVEL_LOADED, (_, data) => {
    const vod = !data.details.live;
    if (demo.vod !== vod) {
      demo.vod = vod;
      if (vod) log('hls', `VOD of ${fmtClock(data.details.totalduration)}, ${data.details.fragments.length} segments`, 'gw');
      renderKind();
      renderPosition();
    }
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
    const level = hls.levels[data.level];
    if (level) $('rendition').textContent = `${level.height}p · ${fmtBps(level.bitrate)}`;
  });
  hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
    const { frag } = data;
    const stats = frag.stats;
    const entry = {
      url: frag.url,
      sn: frag.sn,
      level: frag.level,
      bytes: stats.total || stats.loaded || data.payload?.byteLength || 0,
      ms: Math.round(stats.loading.end - stats.loading.start),
      firstByteMs: Math.round(stats.loading.first - stats.loading.start),
      at: performance.now(),
    };
    demo.fragLoads.push(entry);
    if (mode === 'http') {
      book({ ...entry, source: 'http', sequence: frag.sn, init: false, reason: 'loader=http', gateway: null });
    }
  });
  hls.on(Hls.Events.ERROR, (_, data) => {
    event('hls-error', { details: data.details, fatal: data.fatal, type: data.type });
    if (PLAYER_JUMPS.has(data.details)) playerJump = { at: performance.now(), to: video.currentTime };
    if (!data.fatal) {
      if (data.details !== 'bufferStalledError') log('hls', `${data.details}`, '');
      return;
    }
    log('hls', `fatal ${data.type}: ${data.details}`, 'bad');
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
    else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    else {
      demo.error = data.details;
      setState('error');
    }
  });
}

/** Links to this page with each player and format the demo offers. */
function renderPlayerLinks(player, format) {
  const choices = [
    ['hls', 'hls', 'hls.js'],
    ['hls', 'shaka', 'Shaka'],
    ['hls', 'videojs', 'Video.js'],
    ['dash', 'shaka', 'DASH: Shaka'],
    ['dash', 'dashjs', 'DASH: dash.js'],
  ];
  const nav = $('players');
  nav.replaceChildren();
  for (const [f, p, label] of choices) {
    const u = new URL(location.href);
    u.searchParams.set('player', p);
    u.searchParams.set('format', f);
    const a = document.createElement('a');
    a.href = u.href;
    a.textContent = label;
    if (f === format && p === player) a.className = 'current';
    nav.append(a);
  }
}

/** A classic script (Shaka and Video.js set globals), once. */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('script');
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`${src} did not load`));
    document.head.append(el);
  });
}

function playerReady(name) {
  video.play().catch((e) => log(name, `autoplay refused: ${e.message}`, 'bad'));
}

async function startShaka(config, mesh) {
  await loadScript('shaka-player.compiled.js');
  const shaka = window.shaka;
  shaka.polyfill.installAll();
  if (mesh) attachShaka(mesh, shaka);
  const player = new shaka.Player();
  demo.shaka = player;
  player.configure({ streaming: { bufferingGoal: 30, bufferBehind: 30 } });
  player.addEventListener('error', (e) => {
    event('player-error', { code: e.detail?.code, severity: e.detail?.severity });
    log('shaka', `error ${e.detail?.code}`, 'bad');
  });
  await player.attach(video);
  await player.load(config.playlist);
  if (demo.vod === null || demo.vod === undefined) demo.vod = !player.isLive();
  renderKind();
  playerReady('shaka');
}

async function startDashjs(config, mesh) {
  const dashjs = (await import('./dash.all.min.js')).default;
  const player = dashjs.MediaPlayer().create();
  demo.dashjs = player;
  player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING }, streaming: { buffer: { bufferTimeAtTopQuality: 30 } } });
  if (mesh) attachDashjs(mesh, player);
  player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
    event('player-error', { code: e.error?.code, message: e.error?.message });
    log('dash.js', `error ${e.error?.code}: ${e.error?.message}`, 'bad');
  });
  player.initialize(video, config.playlist, true);
  playerReady('dash.js');
}

async function startVideojs(config, mesh, hlsConfig) {
  const css = document.createElement('link');
  Object.assign(css, { rel: 'stylesheet', href: 'video-js.min.css' });
  document.head.append(css);
  await loadScript('video.min.js');
  const videojs = window.videojs;
  video.classList.add('video-js');
  if (mesh) {
    registerVideojs(videojs, {
      Hls,
      mesh,
      hlsConfig,
      onHls: (hls) => {
        demo.hls = hls;
        wireHls(hls);
      },
    });
  }
  const player = videojs(video, { autoplay: 'muted', muted: true, controls: true, fill: true });
  demo.videojs = player;
  player.src({ src: config.playlist, type: 'application/x-mpegURL' });
  playerReady('video.js');
}

async function main() {
  $('mode').textContent = `loader: ${mode}`;
  let config;
  try {
    config = demo.config = await loadConfig();
  } catch (e) {
    demo.error = e.message;
    setState('error');
    log('error', e.message, 'bad');
    return;
  }
  $('stream').textContent = config.stream ? `${config.stream.slice(0, 12)}…` : '–';
  $('stream').title = config.stream ?? '';
  const setup = [];
  if (config.gateways) setup.push(`${config.gateways} gateway${config.gateways === 1 ? '' : 's'}`);
  if (config.tamperEvery) setup.push(`one tampers with 1 segment in ${config.tamperEvery}`);
  $('demo-setup').textContent = setup.join(', ');
  if (typeof config.vod === 'boolean') demo.vod = config.vod;
  renderKind();
  video.addEventListener('durationchange', renderPosition);

  const player = (demo.player = requestedPlayer ?? (config.format === 'dash' ? 'shaka' : 'hls'));
  renderPlayerLinks(player, config.format);
  $('mode').textContent = `loader: ${mode} · player: ${player} · ${config.format.toUpperCase()}`;
  if (config.format === 'dash' && (player === 'hls' || player === 'videojs')) {
    demo.error = `${player} plays HLS only here: use ?player=shaka or dashjs with ?format=dash`;
    setState('error');
    log('error', demo.error, 'bad');
    return;
  }
  if (config.format !== 'dash' && player === 'dashjs') {
    demo.error = 'dash.js plays DASH only: add ?format=dash';
    setState('error');
    log('error', demo.error, 'bad');
    return;
  }

  if (!Hls.isSupported()) {
    demo.error = 'this browser has no Media Source Extensions';
    setState('error');
    log('error', demo.error, 'bad');
    return;
  }

  watchFirstFrame();
  watchSeeks();
  // The clock for time to first frame starts here, in both modes: the mesh
  // connects in the background while hls.js loads the playlists.
  demo.startedAt = performance.now();
  // hls.js buffers far ahead when the bit rate is low (up to maxBufferSize,
  // 60 MB: all of the demo's VOD in seconds). 30 s is plenty to play on and
  // keeps a seek meaningful: what is played after it is fetched then, through
  // the mesh's on-demand path, as for a viewer of a long video.
  // Low-latency mode only for a low-latency demo: it makes hls.js ask for
  // parts and blocking reloads, which a plain live origin does not offer.
  const hlsConfig = { lowLatencyMode: config.lowLatency === true, backBufferLength: 30, maxBufferLength: 30, maxMaxBufferLength: 30 };
  // Low latency: play up to 1.2× faster after a late part or a slow start,
  // back to the target latency (the playlist's PART-HOLD-BACK), instead of
  // staying as far behind as the worst moment left it.
  if (hlsConfig.lowLatencyMode) hlsConfig.maxLiveSyncPlaybackRate = 1.2;
  let mesh = null;
  if (mode !== 'http') {
    mesh = await createMesh({
      Hls,
      wellKnown: config.wellKnown,
      stream: config.stream,
      token: config.token ?? '',
      media: video,
      playlist: config.playlist,
      fallback: config.fallback ?? [],
      fetchFromMesh: mode === 'mesh',
      ...(params.has('deferConnect') ? { deferConnect: params.get('deferConnect') !== '0' } : {}),
    });
    demo.mesh = mesh;
    wireMesh(mesh);
    if (mesh.state !== 'connecting') {
      event('mesh-state', { state: mesh.state, reason: mesh.reason });
      log('mesh', `${mesh.state}${mesh.reason ? `: ${mesh.reason}` : ''}`, 'gw');
    }
    hlsConfig.fLoader = mesh.fragmentLoader;
  }
  if (player === 'shaka') await startShaka(config, mesh);
  else if (player === 'dashjs') await startDashjs(config, mesh);
  else if (player === 'videojs') await startVideojs(config, mesh, hlsConfig);
  else {
    const hls = new Hls(hlsConfig);
    demo.hls = hls;
    wireHls(hls);
    hls.loadSource(config.playlist);
    hls.attachMedia(video);
  }
  log(player, `loading ${config.playlist}`, 'gw');

  setInterval(watchPlayback, 100);
  setInterval(render, 1000);
  render();
}

main().catch((e) => {
  console.error(e);
  demo.error = e.message;
  setState('error');
  log('error', e.message, 'bad');
});
