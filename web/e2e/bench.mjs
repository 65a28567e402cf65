#!/usr/bin/env node
// Browser benchmark: the meshcast loader against plain hls.js HTTP loading,
// on one `meshcast demo` run, in headless Chromium.
//
//   node web/e2e/bench.mjs --meshcast target/release/meshcast --web target/web --out target/bench
//       [--rounds 5] [--play 10] [--low-latency] [--players hls,shaka,videojs]
//       [--dash --players shaka,dashjs]
//
// --players: the rounds below for each player in turn on one demo, each
// against that player's own plain-HTTP loading (?loader=http: Shaka's and
// dash.js' own fetches, Video.js' VHS engine), then a line per player and
// `bench-browser-players {json}`. --dash plays the demo's DASH stream
// (?format=dash: the test stream as a 20 s VOD; keep --play under 15).
//
// --low-latency runs the demo with --low-latency (LL-HLS parts, hls.js in
// low-latency mode, both loaders) and adds its goals: live latency (hls.js'
// estimate, median of each page's second half of play) ≤ 2.0 s with the mesh
// and within 0.3 s of plain HTTP, no stall, ≥ 90 % of the mesh loader's bytes
// over the mesh.
//
// One warm-up page per loader (discarded), then --rounds rounds, each opening
// a fresh browser on ?loader=mesh and on ?loader=http, in alternating order.
// Per page: time to first frame (window.demo.ttffMs: requestVideoFrameCallback
// of the first frame − the start of the player setup; ttffNavMs: since the
// page's navigation, the goal's measure) and, over --play seconds
// of playback, the fetch latency of each media segment (request to data handed
// to hls.js): with the mesh loader from its `segment` events (whichever source
// delivered), with plain hls.js from FRAG_LOADED stats (loading.end −
// loading.start).
//
// Prints a table of medians and p95 (nearest rank) with the mesh/http ratios,
// then one line `bench-browser {json}`. The goal: TTFF (from navigation) mesh
// ≤ 1.1 × http.
// <out> gets each page's console (bench-<loader>-<round>.log), what it
// measured (.json) and the demo's output (bench.meshcast.log).
// Exits 1 when a loader got no successful page at all.
//
// --viewers N (with --stagger SECONDS, 4 by default, and --play): instead of
// the rounds, N meshcast pages joining SECONDS apart, each playing --play
// seconds; prints the origin offload (the viewers' HTTP bytes and the
// publisher's ingest, against all bytes delivered) and its ceiling 1 − 1/N,
// then `bench-browser-viewers {json}`. With --together, every viewer stays
// until the last to join has played --play seconds (the audience of one live
// event): the earlier ones play longer, and the schedule's own ceiling
// approaches 1 − 1/N as --play grows.

import fs from 'node:fs';
import path from 'node:path';
import {
  cli,
  cleanupAll,
  launchBrowser,
  median,
  openPage,
  percentile,
  sleep,
  startDemo,
  waitPlaying,
} from './lib.mjs';

const USAGE =
  'usage: node bench.mjs --meshcast BIN --web DIR --out DIR [--rounds N] [--play SECONDS] [--low-latency] ' +
  '[--viewers N [--stagger SECONDS] [--together]] [--players hls,shaka,videojs | --dash --players shaka,dashjs]';
const opts = cli(USAGE, {
  rounds: { type: 'string', default: '5' },
  play: { type: 'string', default: '10' },
  'low-latency': { type: 'boolean', default: false },
  viewers: { type: 'string', default: '0' },
  stagger: { type: 'string', default: '4' },
  together: { type: 'boolean', default: false },
  players: { type: 'string' },
  dash: { type: 'boolean', default: false },
});
const DASH = opts.dash;
// Comma-separated: hls, shaka, dashjs, videojs (hls.js and Video.js play
// HLS, dash.js DASH, Shaka both).
const PLAYERS = (opts.players ?? (DASH ? 'shaka' : 'hls')).split(',').filter(Boolean);
const VIEWERS = Math.max(0, Number(opts.viewers) || 0);
const STAGGER_MS = Math.max(0, Number(opts.stagger) || 0) * 1000;
const TOGETHER = opts.together;
const LOW_LATENCY = opts['low-latency'];
const LATENCY_GOAL_S = 2.0;
const LATENCY_GAP_GOAL_S = 0.3;
const ROUNDS = Math.max(1, Number(opts.rounds) || 5);
const PLAY_MS = Math.max(2, Number(opts.play) || 10) * 1000;
const TTFF_GOAL = 1.1;

/** One page with `loader`; returns { ttffMs, latencies, sources } or { error }. */
async function run(demoUrl, loader, label, player = 'hls') {
  const browser = await launchBrowser();
  try {
    const url = new URL(demoUrl);
    url.searchParams.set('loader', loader);
    url.searchParams.set('player', player);
    url.searchParams.set('format', DASH ? 'dash' : 'hls');
    const page = await openPage(browser.context, url.href, path.join(opts.out, `bench-${label}.log`));
    await waitPlaying(page, 30_000);
    await sleep(PLAY_MS);
    const result = await page.evaluate((mode) => {
      const d = window.demo;
      const media = mode === 'mesh' ? d.segments.filter((s) => !s.init) : d.fragLoads;
      // hls.js settles on its target latency after start: the second half.
      const late = d.latencies.slice(Math.floor(d.latencies.length / 2)).map((l) => l.s).sort((a, b) => a - b);
      return {
        liveLatency: late.length ? late[Math.floor(late.length / 2)] : null,
        ttffMs: d.ttffMs,
        ttffNavMs: d.ttffNavMs,
        latencies: media.map((s) => s.ms),
        sources: mode === 'mesh' ? media.map((s) => s.source) : media.map(() => 'http'),
        // The fragments delivered before the first frame (init included).
        startup:
          mode === 'mesh'
            ? d.segments.filter((s) => d.firstFrameAt != null && s.at <= d.firstFrameAt).map((s) => s.source)
            : [],
        totals: d.totals(),
        stalls: d.stalls.length,
        segments: d.segments,
        fragLoads: d.fragLoads,
        events: d.events,
      };
    }, loader);
    // Everything the page saw, for a closer look; the summary needs less.
    fs.writeFileSync(path.join(opts.out, `bench-${label}.json`), JSON.stringify(result, null, 1));
    delete result.segments;
    delete result.fragLoads;
    delete result.events;
    return result;
  } catch (e) {
    return { error: e.message };
  } finally {
    await browser.close();
  }
}

const ms = (x) => (x == null ? '–' : `${Math.round(x)} ms`);
const ratio = (a, b) => (a == null || b == null || !b ? null : a / b);
const fmtRatio = (r) => (r == null ? '–' : r.toFixed(2));
const stats = (xs) => ({ median: median(xs), p95: percentile(xs, 95), n: xs.length });

/**
 * --viewers N: N pages with the meshcast loader, each in its own browser,
 * joining STAGGER apart and each playing --play seconds. Origin offload
 * counts every byte the origin served for them: the viewers' HTTP
 * fragments, and the publisher's ingest, which is each distinct segment
 * the viewers got once (the publisher fetches every segment once, and the
 * viewers watched these; each viewer's first segments were published before
 * it joined, so this is if anything more than the ingest during the run).
 * Ceiling: 1 − 1/N (the publisher's copy). --together: viewer i (from 0)
 * plays PLAY + (N − 1 − i) × STAGGER, so that all leave together.
 */
/** How long viewer `i` (from 0) plays. */
function playMsOf(i) {
  return TOGETHER ? PLAY_MS + (VIEWERS - 1 - i) * STAGGER_MS : PLAY_MS;
}

async function viewers(demoUrl) {
  const pages = [];
  const started = [];
  for (let i = 0; i < VIEWERS; i++) {
    if (i) await sleep(STAGGER_MS);
    started.push(
      (async () => {
        const browser = await launchBrowser();
        const url = new URL(demoUrl);
        url.searchParams.set('loader', 'mesh');
        const page = await openPage(browser.context, url.href, path.join(opts.out, `viewer-${i + 1}.log`));
        pages.push({ browser, page, i });
        await waitPlaying(page, 30_000);
        await sleep(playMsOf(i));
        const seen = await page.evaluate(() => ({
          segments: window.demo.segments.map((s) => ({
            // A live loop serves the same file names again: a segment is
            // its rendition, sequence (and part) number.
            key: `${s.rendition}/${s.init ? 'init' : s.sequence}/${s.part ?? ''}`,
            bytes: s.bytes,
            source: s.source,
          })),
          stalls: window.demo.stalls.length,
          totals: window.demo.totals(),
        }));
        await browser.close();
        return seen;
      })(),
    );
  }
  const seen = await Promise.all(started);
  const all = seen.flatMap((v) => v.segments);
  const delivered = all.reduce((n, s) => n + s.bytes, 0);
  const http = all.filter((s) => s.source !== 'mesh').reduce((n, s) => n + s.bytes, 0);
  const distinct = new Map(all.map((s) => [s.key, s.bytes]));
  const ingest = [...distinct.values()].reduce((n, b) => n + b, 0);
  const offload = delivered ? 1 - (ingest + http) / delivered : null;
  const ceiling = 1 - 1 / VIEWERS;
  // The viewers join over (N − 1) × stagger, so the publisher ingests what
  // the first one's join to the last one's leaving spans, more than one
  // viewer watches: under this schedule no mesh can do better than
  // 1 − span ÷ (the sum of the plays).
  const span = TOGETHER ? playMsOf(0) : PLAY_MS + (VIEWERS - 1) * STAGGER_MS;
  let watched = 0;
  for (let i = 0; i < VIEWERS; i++) watched += playMsOf(i);
  const scheduleCeiling = 1 - span / watched;
  const json = {
    viewers: VIEWERS,
    staggerSeconds: STAGGER_MS / 1000,
    playSeconds: PLAY_MS / 1000,
    together: TOGETHER,
    delivered,
    httpBytes: http,
    ingestBytes: ingest,
    offload,
    ceiling,
    scheduleCeiling,
    meshShare: delivered ? 1 - http / delivered : null,
    stalls: seen.map((v) => v.stalls),
    goalMet: offload != null && offload >= ceiling - 0.02,
  };
  const pct = (x) => (x == null ? '–' : `${(x * 100).toFixed(1)} %`);
  console.log(
    `browser viewers: ${VIEWERS} joined ${STAGGER_MS / 1000} s apart, ` +
      `${TOGETHER ? `${playMsOf(0) / 1000} to ${PLAY_MS / 1000} s each, leaving together` : `${PLAY_MS / 1000} s each`}: ` +
      `${(delivered / 1e6).toFixed(1)} MB delivered, ${(http / 1e6).toFixed(2)} MB of it over HTTP, ` +
      `publisher ingest ${(ingest / 1e6).toFixed(2)} MB`,
  );
  console.log(
    `origin offload ${pct(offload)} (ceiling 1 − 1/${VIEWERS} = ${pct(ceiling)}; ${pct(scheduleCeiling)} for ` +
      `viewers joining over ${((VIEWERS - 1) * STAGGER_MS) / 1000} s), mesh share ${pct(json.meshShare)}, ` +
      `stalls per viewer ${json.stalls.join(' ')}`,
  );
  console.log(`goal offload within 2 points of the ceiling: ${json.goalMet ? 'met' : 'missed'}`);
  console.log(`bench-browser-viewers ${JSON.stringify(json)}`);
  return json;
}

/** Warm-up and --rounds rounds of one player on the demo; prints its table. */
async function benchPlayer(demo, player) {
    const results = { mesh: [], http: [] };
    const errors = [];
    for (const loader of ['mesh', 'http']) {
      const r = await run(demo.url, loader, `${player}-warmup-${loader}`, player);
      if (r.error) errors.push(`warm-up ${loader}: ${r.error}`);
    }
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 === 0 ? ['mesh', 'http'] : ['http', 'mesh'];
      for (const loader of order) {
        const r = await run(demo.url, loader, `${player}-${loader}-${i + 1}`, player);
        if (r.error) errors.push(`round ${i + 1} ${loader}: ${r.error}`);
        else results[loader].push(r);
        console.error(
          `${player} round ${i + 1} ${loader.padEnd(4)} ` +
            (r.error ? `error: ${r.error}` : `ttff ${ms(r.ttffMs)}, ${r.latencies.length} segments, median ${ms(median(r.latencies))}`),
        );
      }
    }
    const summary = {};
    for (const loader of ['mesh', 'http']) {
      const rs = results[loader];
      summary[loader] = {
        runs: rs.length,
        ttff: stats(rs.map((r) => r.ttffMs).filter((x) => x != null)),
        ttffNav: stats(rs.map((r) => r.ttffNavMs).filter((x) => x != null)),
        segment: stats(rs.flatMap((r) => r.latencies)),
        live: stats(rs.map((r) => r.liveLatency).filter((x) => x != null)),
        stalls: rs.reduce((n, r) => n + r.stalls, 0),
      };
    }
    const meshSources = results.mesh.flatMap((r) => r.sources);
    const meshTotals = results.mesh.reduce(
      (t, r) => ({ meshBytes: t.meshBytes + r.totals.meshBytes, httpBytes: t.httpBytes + r.totals.httpBytes }),
      { meshBytes: 0, httpBytes: 0 },
    );
    const all = meshTotals.meshBytes + meshTotals.httpBytes;
    const m = summary.mesh;
    const h = summary.http;
    const json = {
      player,
      format: DASH ? 'dash' : 'hls',
      rounds: ROUNDS,
      playSeconds: PLAY_MS / 1000,
      ttff: {
        mesh: { median: m.ttff.median, p95: m.ttff.p95 },
        http: { median: h.ttff.median, p95: h.ttff.p95 },
        ratioMedian: ratio(m.ttff.median, h.ttff.median),
        ratioP95: ratio(m.ttff.p95, h.ttff.p95),
      },
      ttffFromNavigation: {
        mesh: { median: m.ttffNav.median, p95: m.ttffNav.p95 },
        http: { median: h.ttffNav.median, p95: h.ttffNav.p95 },
        ratioMedian: ratio(m.ttffNav.median, h.ttffNav.median),
        ratioP95: ratio(m.ttffNav.p95, h.ttffNav.p95),
      },
      segment: {
        mesh: { median: m.segment.median, p95: m.segment.p95, n: m.segment.n },
        http: { median: h.segment.median, p95: h.segment.p95, n: h.segment.n },
        ratioMedian: ratio(m.segment.median, h.segment.median),
        ratioP95: ratio(m.segment.p95, h.segment.p95),
      },
      meshLoader: {
        segmentsFromMesh: meshSources.filter((s) => s === 'mesh').length,
        segmentsOverHttp: meshSources.filter((s) => s !== 'mesh').length,
        startupFromMesh: results.mesh.flatMap((r) => r.startup).filter((s) => s === 'mesh').length,
        startupFragments: results.mesh.flatMap((r) => r.startup).length,
        offload: all ? meshTotals.meshBytes / all : null,
      },
      liveLatency: {
        mesh: { median: m.live.median, p95: m.live.p95 },
        http: { median: h.live.median, p95: h.live.p95 },
      },
      stalls: { mesh: m.stalls, http: h.stalls },
      lowLatency: LOW_LATENCY,
      errors,
    };
    // The goal is on what a viewer waits: from the page's navigation, so that
    // work the mesh loader does before the player setup is counted too.
    json.ttffGoalMet = json.ttffFromNavigation.ratioMedian != null && json.ttffFromNavigation.ratioMedian <= TTFF_GOAL;
    if (LOW_LATENCY) {
      const gap = m.live.median != null && h.live.median != null ? m.live.median - h.live.median : null;
      json.liveLatency.gap = gap;
      json.lowLatencyGoalMet =
        m.live.median != null &&
        m.live.median <= LATENCY_GOAL_S &&
        gap != null &&
        gap <= LATENCY_GAP_GOAL_S &&
        m.stalls === 0 &&
        json.meshLoader.offload != null &&
        json.meshLoader.offload >= 0.9;
    }

    const row = (name, a, b, r) => `${name.padEnd(16)}${a.padStart(10)}${b.padStart(10)}${r.padStart(12)}`;
    console.log(`browser bench, ${player} (${DASH ? 'DASH' : 'HLS'}): ${ROUNDS} rounds (one warm-up page per loader discarded), ${PLAY_MS / 1000} s of play per page`);
    console.log(row('', 'mesh', 'http', 'mesh/http'));
    // Plain HTTP is that player's own loading (Video.js: its VHS engine).
    console.log(row('ttff median', ms(m.ttff.median), ms(h.ttff.median), fmtRatio(json.ttff.ratioMedian)));
    console.log(row('ttff p95', ms(m.ttff.p95), ms(h.ttff.p95), fmtRatio(json.ttff.ratioP95)));
    console.log(row('ttff from nav', ms(m.ttffNav.median), ms(h.ttffNav.median), fmtRatio(json.ttffFromNavigation.ratioMedian)));
    console.log(row('  p95', ms(m.ttffNav.p95), ms(h.ttffNav.p95), fmtRatio(json.ttffFromNavigation.ratioP95)));
    console.log(row('segment median', ms(m.segment.median), ms(h.segment.median), fmtRatio(json.segment.ratioMedian)));
    console.log(row('segment p95', ms(m.segment.p95), ms(h.segment.p95), fmtRatio(json.segment.ratioP95)));
    const secs = (x) => (x == null ? '–' : `${x.toFixed(2)} s`);
    console.log(row('live latency', secs(m.live.median), secs(h.live.median), fmtRatio(ratio(m.live.median, h.live.median))));
    console.log(
      `mesh loader: ${json.meshLoader.segmentsFromMesh} segments from the mesh, ${json.meshLoader.segmentsOverHttp} over HTTP, ` +
        `offload ${json.meshLoader.offload == null ? '–' : `${(json.meshLoader.offload * 100).toFixed(1)} %`}; ` +
        `stalls: mesh ${m.stalls}, http ${h.stalls}`,
    );
    console.log(
      `start-up (fragments delivered before the first frame): ${json.meshLoader.startupFromMesh} of ` +
        `${json.meshLoader.startupFragments} from the mesh`,
    );
    for (const e of errors) console.log(`error: ${e}`);
    console.log(
      `goal ttff (from navigation) mesh ≤ ${TTFF_GOAL} × http: ${json.ttffGoalMet ? 'met' : 'missed'} ` +
        `(${fmtRatio(json.ttffFromNavigation.ratioMedian)}; from the player setup ${fmtRatio(json.ttff.ratioMedian)})`,
    );
    if (LOW_LATENCY) {
      console.log(
        `goal low latency (mesh ≤ ${LATENCY_GOAL_S} s, ≤ ${LATENCY_GAP_GOAL_S} s behind http, no stall, ≥ 90 % mesh): ` +
          `${json.lowLatencyGoalMet ? 'met' : 'missed'} (mesh ${secs(m.live.median)}, http ${secs(h.live.median)}, ` +
          `stalls ${m.stalls}, offload ${json.meshLoader.offload == null ? '–' : `${(json.meshLoader.offload * 100).toFixed(1)} %`})`,
      );
    }
    console.log(`bench-browser ${JSON.stringify(json)}`);
    return { json, ok: m.runs > 0 && h.runs > 0 };
}

let exitCode = 0;
try {
  const demo = await startDemo({
    meshcast: opts.meshcast,
    web: opts.web,
    logFile: path.join(opts.out, 'bench.meshcast.log'),
    timeoutMs: 90_000,
    args: LOW_LATENCY ? ['--low-latency'] : [],
  });
  if (VIEWERS) {
    await viewers(demo.url);
    await demo.stop();
    await cleanupAll();
    process.exit(0);
  }

  const all = [];
  for (const player of PLAYERS) {
    const { json, ok } = await benchPlayer(demo, player);
    all.push(json);
    if (!ok) exitCode = 1;
  }
  await demo.stop();
  if (PLAYERS.length > 1) {
    console.log('per player (ttff from navigation, mesh/http, and the mesh loader\'s bytes over the mesh):');
    for (const j of all) {
      const pct = j.meshLoader.offload == null ? '–' : `${(j.meshLoader.offload * 100).toFixed(1)} %`;
      console.log(`  ${j.player.padEnd(8)} ${fmtRatio(j.ttffFromNavigation.ratioMedian)}  ${pct}  goal ${j.ttffGoalMet ? 'met' : 'missed'}`);
    }
    console.log(`bench-browser-players ${JSON.stringify(all.map((j) => ({ player: j.player, ttffRatio: j.ttffFromNavigation.ratioMedian, offload: j.meshLoader.offload, ttffGoalMet: j.ttffGoalMet })))}`);
  }
} catch (e) {
  console.error(`bench failed: ${e.message}`);
  exitCode = 1;
} finally {
  await cleanupAll();
}
process.exit(exitCode);
