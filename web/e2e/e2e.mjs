#!/usr/bin/env node
// End-to-end tests of the demo page in headless Chromium: each test starts its
// own `meshcast demo` (origin, publisher, nodes, relay, page server), opens the
// page and watches it play.
//
//   node web/e2e/e2e.mjs --meshcast target/debug/meshcast --web target/web --out target/e2e
//
// Tests:
//   play        30 s of live playback (the issue asks ≥ 20 s), no stall over
//               1 s, ≥ 90 % of the segment bytes from the mesh; screenshot in
//               <out>/demo.png
//   relay-down  --gateways 1: the relay is killed after 8 s of playback; the
//               page goes on ≥ 12 s more over HTTP (stalls up to 2 s around
//               the kill allowed, and reported)
//   tamper      --gateways 2 --tamper-every 1: the entry relay corrupts every
//               body it serves (so the first mesh request meets it whichever
//               gateway the client prefers later; a byte in the middle of each
//               body, its hashes true); a verify-failed event shows in the
//               page, caught at that byte's 16 KiB group (each failure's
//               offset is the group of the middle of a body then in flight),
//               the segment concerned is then obtained elsewhere
//               (other gateway or HTTP), and playback goes on ≥ 15 s with no
//               stall over 1 s
//   gateway-restart
//               --gateways 2 --restart-gateway-after 25s: the relay is told of
//               no other gateway; the page finds the edge node's gateway
//               through its signed record and uses it; the node restarts with
//               a new certificate and port (same node key); the page connects
//               to the new address, learnt from the new record the relay
//               pushes, and gets segments from it; no stall over 2 s
//   vod         --vod (a 5-minute VOD, fetched on demand by the gateways):
//               the page shows VOD and the duration; 20 s of playback, then
//               seeks to 150 s, 40 s, 230 s and 60 s, each followed by 5 s of
//               playback; after each seek has settled (seeked, a frame at the
//               target, the playhead moving) no stall over 1 s and the
//               playhead advances from the target; ≥ 90 % of the segment
//               bytes from the mesh; no verification or segment failure.
//               Prints the time from each seek to its first frame
//   low-latency --low-latency (LL-HLS parts, hls.js lowLatencyMode): 30 s of
//               playback with no stall (over 250 ms), hls.js' live latency
//               (median of the last 10 s) below 3 s, ≥ 30 parts and ≥ 90 %
//               of the segment bytes from the mesh
//   byte-range  --byte-range (a 20 s VOD whose every segment, and init
//               segment, is a byte range of one file per rendition: HLS
//               EXT-X-BYTERANGE): 15 s played with no stall over 1 s, ≥ 90 %
//               of the bytes asked for once the client connected from the
//               mesh, no verification or segment failure
//   alternate-audio
//               --alternate-audio (a 20 s VOD of video-only variants and an
//               EXT-X-MEDIA audio rendition): 15 s played with no stall
//               over 1 s; ≥ 5 audio and ≥ 3 WebVTT subtitle fragments come
//               from the mesh beside the video ones, and the audio init segment too unless it was
//               asked for while the client connected; ≥ 90 % of the bytes
//               asked for once connected from the mesh; no verification or
//               segment failure
//   poisoned-origin
//               --gateways 1 --poisoned-edge 3, ?loader=verify: the page
//               plays through an HTTP edge that corrupts every third media
//               segment, fetching every fragment over HTTP and checking it
//               against the headers the mesh announces; ≥ 2 poisoned bodies
//               are rejected (http-rejected) and each such fragment is then
//               delivered verified from the origin (the fallback mirror);
//               no fragment asked for after the client connected (init
//               segments included) reaches the player unverified; no stall
//               over 1 s
//   players-hls
//               --tamper-every 1 (the live HLS stream; the entry relay
//               corrupts every body it serves): Shaka (its networking
//               scheme plugin) and Video.js (hosting hls.js) play side by
//               side, each in its own page: 30 s with no stall over 1 s,
//               the tampering caught (verify-failed), ≥ 90 % of the bytes
//               asked for once connected from the mesh
//   players-dash
//               --tamper-every 1, ?format=dash (the demo's second stream:
//               the committed stream as a DASH VOD, 20 s long): Shaka and
//               dash.js (its loader extension) the same way, 15 s each
//   udp-blocked --gateways 1, with nftables dropping every UDP packet to the
//               relay's WebTransport port on input (needs root; skipped otherwise): the page's
//               WebTransport handshake stalls, the client races a WebSocket
//               to the same relay and plays over it: 20 s with no stall
//               over 1 s, every mesh segment over the WebSocket, ≥ 90 % of
//               the bytes asked for once connected from the mesh
//
// Prints `ok <test> (<figures>)` or `FAILED <test>: <why>` per test, then
// `e2e: N passed, N failed, N skipped`; exits 1 on any failure. Per test, <out> gets
// <test>.log (page console), <test>.meshcast.log (the demo's output) and
// <test>.json (window.demo at the end). --only NAME runs one test.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  cli,
  cleanupAll,
  fmtBytes,
  launchBrowser,
  median,
  onCleanup,
  openPage,
  stalls,
  startDemo,
  waitCurrentTime,
  waitPlaying,
  withTimeout,
} from './lib.mjs';

const USAGE =
  'usage: node e2e.mjs --meshcast BIN --web DIR --out DIR [--only play|relay-down|tamper|gateway-restart|vod|low-latency|byte-range|alternate-audio|poisoned-origin|players-hls|players-dash|udp-blocked]';
const opts = cli(USAGE, { only: { type: 'string' } });

const TESTS = [
  { name: 'play', timeoutMs: 180_000, run: testPlay },
  { name: 'relay-down', timeoutMs: 200_000, run: testRelayDown },
  { name: 'tamper', timeoutMs: 200_000, run: testTamper },
  { name: 'gateway-restart', timeoutMs: 200_000, run: testGatewayRestart },
  { name: 'vod', timeoutMs: 200_000, run: testVod },
  { name: 'low-latency', timeoutMs: 180_000, run: testLowLatency },
  { name: 'byte-range', timeoutMs: 180_000, run: testByteRange },
  { name: 'alternate-audio', timeoutMs: 180_000, run: testAlternateAudio },
  { name: 'poisoned-origin', timeoutMs: 180_000, run: testPoisonedOrigin },
  { name: 'players-hls', timeoutMs: 200_000, run: testPlayersHls },
  { name: 'players-dash', timeoutMs: 200_000, run: testPlayersDash },
  // nftables needs root, as the network lab does; skipped otherwise.
  { name: 'udp-blocked', timeoutMs: 200_000, run: testUdpBlocked, needsRoot: true },
];

// ------------------------------------------------------------ the tests

/** a. 30 s of playback from the mesh, without stalls. */
async function testPlay(t) {
  const demo = await t.demo([]);
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const start = await snapshot(page);
  const end = await waitCurrentTime(page, start.currentTime + 30, 75_000);
  await page.screenshot({ path: path.join(opts.out, 'demo.png') });
  const after = await snapshot(page);
  const st = await stalls(page, after.firstFrameAt, 250);
  const share = meshShare(after.totals);

  const figures =
    `played ${(end - start.currentTime).toFixed(1)} s, ` +
    `mesh ${pct(share)} of ${fmtBytes(all(after.totals))} ` +
    `(${after.totals.meshSegments} mesh / ${after.totals.httpSegments} http segments), ` +
    `ttff ${after.ttffMs} ms, ${stallText(st)}`;
  const long = st.filter((s) => s.ms > 1000);
  if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
  if (!(share >= 0.9)) throw new Error(`only ${pct(share)} of segment bytes from the mesh (want ≥ 90 %); ${figures}`);
  return figures;
}

/**
 * f. --low-latency: hls.js in low-latency mode plays parts from the mesh,
 * near live. The issue's goals: no stall, ≥ 90 % of the bytes over the mesh;
 * latency below 3 s here (the 2 s goal is a benchmark: cargo xtask bench-browser).
 */
async function testLowLatency(t) {
  const demo = await t.demo(['--low-latency']);
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const start = await snapshot(page);
  const end = await waitCurrentTime(page, start.currentTime + 30, 75_000);
  const after = await snapshot(page);
  const st = await stalls(page, after.firstFrameAt, 250);
  const share = meshShare(after.totals);
  const parts = after.segments.filter((s) => s.part != null && s.source === 'mesh').length;
  // hls.js' own estimate, once a second; the last 10 s, after it settled.
  const recent = after.latencies.slice(-10).map((l) => l.s);
  const latency = recent.length ? median(recent) : NaN;
  const figures =
    `played ${(end - start.currentTime).toFixed(1)} s, latency ${latency.toFixed(2)} s ` +
    `(median of the last ${recent.length} s; max ${Math.max(...recent).toFixed(2)} s), ` +
    `mesh ${pct(share)} of ${fmtBytes(all(after.totals))} (${parts} parts from the mesh, ` +
    `${after.totals.httpSegments} http fragments), ${stallText(st)}`;
  if (recent.length < 5) throw new Error(`hls.js reported no live latency; ${figures}`);
  if (!(latency < 3)) throw new Error(`latency ${latency.toFixed(2)} s, not below 3 s; ${figures}`);
  if (st.length) throw new Error(`stalled: ${stallText(st)}; ${figures}`);
  if (!(parts >= 30)) throw new Error(`only ${parts} parts came over the mesh; ${figures}`);
  if (!(share >= 0.9)) throw new Error(`only ${pct(share)} of segment bytes from the mesh (want ≥ 90 %); ${figures}`);
  return figures;
}

/** b. One gateway; the relay dies mid-play; HTTP takes over. */
async function testRelayDown(t) {
  const demo = await t.demo(['--gateways', '1']);
  const relayPid = demo.pids.relay;
  if (!relayPid) throw new Error('the demo printed no "pid relay <pid>" line');
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const start = await snapshot(page);
  await waitCurrentTime(page, start.currentTime + 8, 40_000);

  const before = await snapshot(page);
  if (!(before.totals.meshBytes > 0)) {
    throw new Error(`no segment came from the mesh before the relay was killed (${totalsText(before.totals)})`);
  }
  process.kill(relayPid, 'SIGKILL');
  const killAt = await page.evaluate(() => performance.now());
  const end = await waitCurrentTime(page, before.currentTime + 12, 60_000);
  const after = await snapshot(page);

  const httpGrowth = after.totals.httpBytes - before.totals.httpBytes;
  const httpAfter = after.segments.filter((s) => s.at > killAt && s.source === 'http').length;
  const st = await stalls(page, after.firstFrameAt, 250);
  // Around the kill (1 s before to 10 s after) up to 2 s; elsewhere 1 s.
  const near = (s) => s.at >= killAt - 1000 && s.at <= killAt + 10_000;
  const bad = st.filter((s) => s.ms > (near(s) ? 2000 : 1000));
  const figures =
    `played ${(end - before.currentTime).toFixed(1)} s after the kill, ` +
    `http +${fmtBytes(httpGrowth)} (${httpAfter} segments) after it, ` +
    `mesh ${fmtBytes(before.totals.meshBytes)} before it, ${stallText(st, killAt, 'kill')}`;
  if (!(httpGrowth > 0)) throw new Error(`no HTTP bytes after the relay was killed; ${figures}`);
  if (bad.length) throw new Error(`stall too long: ${stallText(bad, killAt, 'kill')}; ${figures}`);
  return figures;
}

/**
 * A short VOD demo with `args` played for 15 s: fails on a verification or
 * segment failure, a stall over 1 s, or under 90 % of the bytes asked for
 * once connected from the mesh; `check(after, figures)` adds its own.
 */
async function playShortVod(t, args, describe, check = () => {}) {
  const demo = await t.demo(args);
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const start = await snapshot(page);
  const end = await waitCurrentTime(page, Math.max(start.currentTime, 0) + 15, 60_000);
  const after = await snapshot(page);
  const st = await stalls(page, after.firstFrameAt, 250);
  const share = meshShare(after.totals);
  const failures = after.events.filter((e) => e.type === 'verify-failed' || e.type === 'segment-failed');
  const figures =
    `played ${(end - start.currentTime).toFixed(1)} s, mesh ${pct(share)} of ${fmtBytes(all(after.totals))} ` +
    `(${after.totals.meshSegments} mesh / ${after.totals.httpSegments} http fragments)${describe(after)}, ${stallText(st)}`;
  if (failures.length) throw new Error(`${failures.length} failures (${failures[0].type}: ${failures[0].reason}); ${figures}`);
  check(after, figures);
  const long = st.filter((s) => s.ms > 1000);
  if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
  const connectedShare = meshShareOnceConnected(after);
  if (!(connectedShare >= 0.9)) {
    throw new Error(`only ${pct(connectedShare)} of the bytes asked for once connected from the mesh (want ≥ 90 %); ${figures}`);
  }
  return figures;
}

/** h. Byte-range segments (EXT-X-BYTERANGE) from the mesh. */
function testByteRange(t) {
  return playShortVod(t, ['--byte-range'], () => '');
}

/** i. Alternate audio and subtitles (EXT-X-MEDIA) from the mesh beside the video. */
function testAlternateAudio(t) {
  const audioOf = (after) => after.segments.filter((s) => /\/audio_\d+\.m4s$|\/init_audio\.mp4$/.test(s.url));
  const subtitlesOf = (after) => after.segments.filter((s) => /\/subs_\d+\.vtt$/.test(s.url));
  const mesh = (xs) => xs.filter((s) => s.source === 'mesh');
  return playShortVod(
    t,
    ['--alternate-audio'],
    (after) => {
      const [audio, subtitles] = [audioOf(after), subtitlesOf(after)];
      return `, ${mesh(audio).length} of ${audio.length} audio and ${mesh(subtitles).length} of ${subtitles.length} subtitle fragments from the mesh`;
    },
    (after, figures) => {
      const audio = audioOf(after);
      if (mesh(audio).length < 5) throw new Error(`too few audio fragments from the mesh; ${figures}`);
      if (mesh(subtitlesOf(after)).length < 3) throw new Error(`too few subtitle fragments from the mesh; ${figures}`);
      // Its init segment too, unless it was asked for while the client was
      // still connecting (start-up goes over HTTP then).
      const init = audio.find((s) => s.init);
      if (!init || (init.source !== 'mesh' && init.reason !== 'connecting')) {
        throw new Error(`the audio init segment: ${init ? `over HTTP (${init.reason})` : 'never loaded'}; ${figures}`);
      }
    },
  );
}

/** j. Shaka and Video.js on the live HLS stream, with a tampering relay. */
function testPlayersHls(t) {
  return playPlayers(t, ['--tamper-every', '1'], ['shaka', 'videojs'], 30);
}

/** k. Shaka and dash.js on the DASH VOD, with a tampering relay. */
function testPlayersDash(t) {
  return playPlayers(t, ['--tamper-every', '1'], ['shaka', 'dashjs'], 15, 'dash');
}

/**
 * Players other than hls.js, each in its own page of one browser, side by
 * side on one demo whose entry relay tampers with every body: each plays
 * `seconds` with no stall over 1 s, catches the tampering (a verify-failed
 * event; the bytes then come from the other gateway), and gets ≥ 90 % of
 * the bytes it asked for once connected from the mesh.
 */
async function playPlayers(t, args, players, seconds, format = 'hls') {
  const demo = await t.demo(args);
  const pages = [];
  for (const player of players) {
    const u = new URL(demo.url);
    u.searchParams.set('player', player);
    u.searchParams.set('format', format);
    pages.push({ player, page: await t.open(u.href, 'mesh', player) });
  }
  const results = await Promise.all(
    pages.map(async ({ player, page }) => {
      await waitPlaying(page, 45_000).catch((e) => {
        throw new Error(`${player}: ${e.message}`);
      });
      const start = await snapshot(page);
      const end = await waitCurrentTime(page, Math.max(start.currentTime, 0) + seconds, 60_000 + seconds * 1000).catch((e) => {
        throw new Error(`${player}: ${e.message}`);
      });
      const after = await snapshot(page);
      const st = await stalls(page, after.firstFrameAt, 250);
      return { player, played: end - start.currentTime, after, st };
    }),
  );
  const texts = [];
  for (const { player, played, after, st } of results) {
    const share = meshShareOnceConnected(after);
    const caught = after.events.filter((e) => e.type === 'verify-failed').length;
    const failed = after.events.filter((e) => e.type === 'segment-failed');
    const figures =
      `${player}: played ${played.toFixed(1)} s, mesh ${pct(share)} of the bytes asked for once connected ` +
      `(${after.totals.meshSegments} mesh / ${after.totals.httpSegments} http segments, ${fmtBytes(all(after.totals))}), ` +
      `${caught} tampered bodies caught, ${stallText(st)}`;
    texts.push(figures);
    if (failed.length) throw new Error(`${failed.length} segment failures (${failed[0].reason}); ${figures}`);
    if (!caught) throw new Error(`the tampering relay was never caught; ${figures}`);
    const long = st.filter((x) => x.ms > 1000);
    if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
    if (!(share >= 0.9)) throw new Error(`only ${pct(share)} from the mesh (want ≥ 90 %); ${figures}`);
  }
  return texts.join('; ');
}

/**
 * l. A network that drops UDP: WebTransport stalls, the WebSocket to the same
 * relay carries the session.
 */
async function testUdpBlocked(t) {
  const demo = await t.demo(['--gateways', '1']);
  const wellKnown = await (await fetch(demo.relay)).json();
  const port = Number(new URL(wellKnown.webtransport).port);
  if (!wellKnown.websocket) throw new Error(`the relay's well-known document names no WebSocket: ${JSON.stringify(wellKnown)}`);
  const unblock = dropUdpTo(port);
  try {
    const page = await t.open(demo.url);
    await waitPlaying(page, 45_000);
    const start = await snapshot(page);
    const end = await waitCurrentTime(page, Math.max(start.currentTime, 0) + 20, 80_000);
    const after = await snapshot(page);
    const st = await stalls(page, after.firstFrameAt, 250);
    const share = meshShareOnceConnected(after);
    const mesh = after.segments.filter((x) => x.source === 'mesh');
    const overWebSocket = mesh.filter((x) => x.transport === 'websocket').length;
    const connectedAt = after.events.find((e) => e.type === 'mesh-state' && e.state === 'connected')?.at;
    const figures =
      `played ${(end - start.currentTime).toFixed(1)} s with UDP to port ${port} dropped, ` +
      `${overWebSocket} of ${mesh.length} mesh segments over the WebSocket, mesh ${pct(share)} of the bytes asked for once connected ` +
      `(${fmtBytes(all(after.totals))}), connected ${connectedAt == null ? 'never' : `${Math.round(connectedAt)} ms after navigation`}, ${stallText(st)}`;
    if (!mesh.length || overWebSocket !== mesh.length) throw new Error(`mesh segments not over the WebSocket; ${figures}`);
    const long = st.filter((x) => x.ms > 1000);
    if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
    if (!(share >= 0.9)) throw new Error(`only ${pct(share)} from the mesh (want ≥ 90 %); ${figures}`);
    return figures;
  } finally {
    unblock();
  }
}

/**
 * Drops UDP packets to `port` (on every interface, loopback included) with
 * an nftables table of its own; returns the function that removes it (also
 * run on Ctrl-C). Needs root, as the network lab does.
 */
function dropUdpTo(port) {
  const table = `meshcast_e2e_${process.pid}`;
  const nft = (...args) => execFileSync('nft', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    nft('add', 'table', 'inet', table);
    // On input, as a firewall on the way would: the browser's packets leave
    // without an error and are never answered.
    nft('add', 'chain', 'inet', table, 'in', '{ type filter hook input priority 0 ; policy accept ; }');
    nft('add', 'rule', 'inet', table, 'in', 'udp', 'dport', String(port), 'drop');
  } catch (e) {
    try {
      nft('delete', 'table', 'inet', table);
    } catch {
      /* not made */
    }
    throw new Error(`cannot drop UDP with nftables (the test needs root and nft): ${e.stderr?.toString().trim() || e.message}`);
  }
  let done = false;
  const remove = () => {
    if (done) return;
    done = true;
    unregister();
    try {
      nft('delete', 'table', 'inet', table);
    } catch (e) {
      console.error(`removing nftables table ${table}: ${e.message}`);
    }
  };
  const unregister = onCleanup(remove);
  return remove;
}

/**
 * g. A poisoned CDN edge: HTTP bytes are checked against the signed headers
 * the mesh announced, rejected, and fetched from the next mirror.
 */
async function testPoisonedOrigin(t) {
  const demo = await t.demo(['--gateways', '1', '--poisoned-edge', '3']);
  if (!demo.edge) throw new Error('the demo printed no "edge <url>" line');
  const page = await t.open(demo.url, 'verify');
  await waitPlaying(page, 45_000);
  const rejectedAtLeast = (n) =>
    page.waitForFunction((k) => window.demo.events.filter((e) => e.type === 'http-rejected').length >= k, n, {
      timeout: 60_000,
      polling: 200,
    });
  try {
    await rejectedAtLeast(2);
  } catch {
    const s = await snapshot(page);
    throw new Error(
      `fewer than 2 http-rejected events in 60 s (the edge poisoned ${demo.poisoned.length}: ` +
        `${demo.poisoned.map((p) => p.path).join(', ')}; ${totalsText(s.totals)})`,
    );
  }
  const at = await snapshot(page);
  const end = await waitCurrentTime(page, at.currentTime + 10, 45_000);
  const after = await snapshot(page);
  const st = await stalls(page, after.firstFrameAt, 250);

  const rejected = after.events.filter((e) => e.type === 'http-rejected');
  const http = after.segments.filter((s) => s.source === 'http');
  const verified = http.filter((s) => s.verified);
  // Asked for once the client was connected: its Welcome's recent headers
  // and the announcements cover every fragment, init segments included.
  const connected = after.events.find((e) => e.type === 'mesh-state' && e.state === 'connected');
  const unverifiedLater = http.filter((s) => !s.verified && connected && s.at - s.ms > connected.at);
  const figures =
    `${rejected.length} rejected of ${demo.poisoned.length} poisoned, ` +
    `${verified.length} of ${http.length} HTTP fragments verified ` +
    `(the ${http.filter((s) => !s.verified).length} others asked for before the client connected), ` +
    `played ${(end - at.currentTime).toFixed(1)} s after, ${stallText(st)}`;
  for (const r of rejected) {
    if (!r.from.startsWith(demo.edge)) throw new Error(`bytes rejected from ${r.from}, not the poisoned edge; ${figures}`);
    if (!r.next) throw new Error(`no mirror to try after ${r.from}; ${figures}`);
    const later = http.find((s) => s.url === r.url && s.from === r.next && s.verified && s.at >= r.at);
    if (!later) throw new Error(`${r.url} was not delivered verified from ${r.next} after its rejection; ${figures}`);
  }
  if (unverifiedLater.length) {
    throw new Error(`fragments passed on unverified after the client connected: ${unverifiedLater.map((s) => s.url).join(', ')}; ${figures}`);
  }
  const long = st.filter((s) => s.ms > 1000);
  if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
  return figures;
}

/** c. Two gateways, one tampering: verification catches it, play goes on. */
async function testTamper(t) {
  const demo = await t.demo(['--gateways', '2', '--tamper-every', '1']);
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  try {
    await page.waitForFunction(() => window.demo.events.some((e) => e.type === 'verify-failed'), null, {
      timeout: 45_000,
      polling: 200,
    });
  } catch {
    const s = await snapshot(page);
    throw new Error(`no verify-failed event in 45 s of playback (${totalsText(s.totals)})`);
  }
  const atFailure = await snapshot(page);
  const end = await waitCurrentTime(page, atFailure.currentTime + 15, 60_000);
  const after = await snapshot(page);

  const failures = after.events.filter((e) => e.type === 'verify-failed');
  const first = failures[0];
  // The segment in flight when verification failed, delivered afterwards.
  const obtained =
    after.segments.find((s) => s.verifyFailed > 0 && s.bytes > 0) ??
    after.segments.find(
      (s) => s.at >= first.at && s.at - first.at < 10_000 && (first.inflight ?? []).includes(s.url) && s.bytes > 0,
    );
  const st = await stalls(page, after.firstFrameAt, 250);
  const where = obtained
    ? obtained.source === 'mesh'
      ? `from the mesh via ${obtained.gateway} in ${obtained.attempts} attempts`
      : `over HTTP (${obtained.reason})`
    : null;
  const figures =
    `${failures.length} verify-failed (first from ${first.url}: ${first.reason ?? 'no reason'}), ` +
    (obtained ? `${obtained.url.split('/').pop()} then obtained ${where}, ` : '') +
    `played ${(end - atFailure.currentTime).toFixed(1)} s after, mesh ${pct(meshShare(after.totals))}, ${stallText(st)}`;
  // The tampering relay flips a byte in the middle of each body, hashes
  // true: the client catches it at that byte's 16 KiB group, not at the end
  // (group 0 for a body under 32 KiB, an init segment). Which body failed
  // is one of those in flight; its size is known from its later delivery.
  const groupAt = (f) => Number((/group at (\d+) bytes/.exec(f.reason ?? '') ?? [])[1] ?? -1);
  const middleGroup = (bytes) => Math.floor(Math.floor(bytes / 2) / 16384) * 16384;
  const caughtAtItsGroup = (f) =>
    after.segments.some((s) => (f.inflight ?? []).includes(s.url) && s.bytes > 0 && middleGroup(s.bytes) === groupAt(f));
  if (!failures.every(caughtAtItsGroup)) {
    throw new Error(`no failure caught at the group of its body's middle (reasons: ${failures.map((f) => f.reason).join('; ')}); ${figures}`);
  }
  if (!obtained) {
    throw new Error(`no segment was delivered after the verification failure (in flight: ${JSON.stringify(first.inflight)}); ${figures}`);
  }
  if (obtained.source === 'mesh' && obtained.gateway && obtained.gateway === first.url) {
    throw new Error(`the segment came from the gateway that failed verification; ${figures}`);
  }
  const long = st.filter((s) => s.ms > 1000);
  if (long.length) throw new Error(`stall over 1 s: ${stallText(long)}; ${figures}`);
  return figures;
}

/** c'. A gateway found through its record restarts; the page follows it. */
async function testGatewayRestart(t) {
  const demo = await t.demo(['--gateways', '2', '--restart-gateway-after', '25s']);
  const first = demo.gateways[0]?.url;
  if (!first) throw new Error('the demo printed no "gateway node1 <url>" line');
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const connectedTo = (url) =>
    page.waitForFunction((u) => window.demo.events.some((e) => e.change === 'connected' && e.url === u), url, {
      timeout: 60_000,
      polling: 200,
    });
  try {
    await connectedTo(first);
  } catch {
    const s = await snapshot(page);
    throw new Error(`the page never connected to the edge gateway ${first} (known only from its record); events: ${gatewayEvents(s)}`);
  }
  const deadline = Date.now() + 60_000;
  while (demo.gateways.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const second = demo.gateways[1]?.url;
  if (!second) throw new Error('the demo did not restart the edge gateway within 60 s');
  if (second === first) throw new Error(`the restarted gateway kept its address ${first}`);
  const restartAt = await page.evaluate(() => performance.now());
  try {
    await connectedTo(second);
    await page.waitForFunction((u) => window.demo.segments.some((s) => s.gateway === u && s.bytes > 0), second, {
      timeout: 60_000,
      polling: 200,
    });
  } catch {
    const s = await snapshot(page);
    throw new Error(`no segment from the restarted gateway ${second}; events: ${gatewayEvents(s)}`);
  }
  const after = await snapshot(page);
  const reconnected = after.events.find((e) => e.change === 'connected' && e.url === second);
  const fromNew = after.segments.filter((s) => s.gateway === second && s.bytes > 0).length;
  const fromOld = after.segments.filter((s) => s.gateway === first && s.bytes > 0).length;
  const st = await stalls(page, after.firstFrameAt, 250);
  const figures =
    `${fromOld} segments from ${first}, then ${fromNew} from ${second} after its restart, ` +
    `reconnected ${((reconnected.at - restartAt) / 1000).toFixed(1)} s after the demo reported it, ` +
    `mesh ${pct(meshShare(after.totals))}, ${stallText(st)}`;
  if (!(fromOld > 0)) throw new Error(`no segment from the edge gateway before its restart; ${figures}`);
  const long = st.filter((s) => s.ms > 2000);
  if (long.length) throw new Error(`stall over 2 s: ${stallText(long)}; ${figures}`);
  return figures;
}

function gatewayEvents(s) {
  return s.events
    .filter((e) => e.type === 'gateway')
    .map((e) => `${e.change} ${e.url}${e.reason ? ` (${e.reason})` : ''}`)
    .join('; ');
}

/** Where `vod` seeks (s of media time), in order: forward and back, twice. */
const VOD_SEEKS = [150, 40, 230, 60];
/** Playback watched after each seek has settled, in s. */
const VOD_PLAY_AFTER_SEEK = 5;
/** The VOD `meshcast demo --vod` publishes: 15 × the 20 s test stream. */
const VOD_DURATION = 300;

/** d. A VOD played, then seeked in: every seek lands and plays on, from the mesh. */
async function testVod(t) {
  const demo = await t.demo(['--vod']);
  const page = await t.open(demo.url);
  await waitPlaying(page, 45_000);
  const shown = await page.evaluate(() => ({
    vod: window.demo.vod,
    badge: document.getElementById('kind').textContent,
    duration: document.querySelector('video').duration,
    position: document.getElementById('position').textContent,
  }));
  if (shown.vod !== true || shown.badge !== 'VOD') {
    throw new Error(`the page does not show a VOD (vod ${shown.vod}, badge ${JSON.stringify(shown.badge)})`);
  }
  if (!(Math.abs(shown.duration - VOD_DURATION) < 1)) {
    throw new Error(`duration ${shown.duration} s, expected ${VOD_DURATION} s`);
  }
  if (!shown.position.endsWith(' / 5:00')) throw new Error(`the page shows position ${JSON.stringify(shown.position)}`);

  const start = await snapshot(page);
  await waitCurrentTime(page, start.currentTime + 20, 45_000);
  // Each window of watched playback: from first frame (or a seek settling)
  // to the next seek.
  const windows = [{ what: 'start', from: start.firstFrameAt }];
  const seeks = [];
  for (const to of VOD_SEEKS) {
    const issuedAt = await page.evaluate((target) => {
      const v = document.querySelector('video');
      v.currentTime = target;
      return performance.now();
    }, to);
    windows[windows.length - 1].to = issuedAt;
    let settled;
    try {
      // Settled: the seek's `seeked` came, a frame at the target was
      // presented, and the playhead moves from there.
      const handle = await page.waitForFunction(
        ({ issuedAt, to }) => {
          const v = document.querySelector('video');
          const s = window.demo.seeks.find((x) => x.at >= issuedAt - 1 && Math.abs(x.requested - to) < 0.5);
          if (!s || s.seekedAt == null || s.frameAt == null || v.seeking || v.paused) return null;
          if (!(v.currentTime > s.to + 0.1)) return null;
          return { ms: s.ms, landed: s.to, resumedAt: performance.now(), position: v.currentTime };
        },
        { issuedAt, to },
        { timeout: 15_000, polling: 50 },
      );
      settled = await handle.jsonValue();
    } catch {
      const s = await page.evaluate(() => ({
        t: document.querySelector('video').currentTime,
        seeking: document.querySelector('video').seeking,
        seek: window.demo.seeks[window.demo.seeks.length - 1],
      }));
      throw new Error(`the seek to ${to} s did not settle in 15 s (currentTime ${s.t.toFixed(1)} s, seeking ${s.seeking}, page's last seek ${JSON.stringify(s.seek)})`);
    }
    if (!(settled.position >= to - 0.5 && settled.position <= to + 3)) {
      throw new Error(`after the seek to ${to} s playback resumed at ${settled.position.toFixed(1)} s`);
    }
    const end = await waitCurrentTime(page, settled.position + VOD_PLAY_AFTER_SEEK, 30_000);
    seeks.push({ to, ...settled, resumedMs: Math.round(settled.resumedAt - issuedAt), end });
    windows.push({ what: `seek to ${to} s`, from: settled.resumedAt });
  }
  const after = await snapshot(page);
  windows[windows.length - 1].to = after.now;
  await page.screenshot({ path: path.join(opts.out, 'vod.png') });

  const stallsBy = [];
  for (const w of windows) {
    const st = await stalls(page, w.from, 250, w.to);
    if (st.length) stallsBy.push({ ...w, stalls: st });
  }
  const long = stallsBy.flatMap((w) => w.stalls.filter((s) => s.ms > 1000).map((s) => `${(s.ms / 1000).toFixed(2)} s after ${w.what}`));
  const failures = after.events.filter((e) => e.type === 'verify-failed' || e.type === 'segment-failed');
  const share = meshShare(after.totals);
  const seekText = seeks
    .map((s) => `${s.to} s: frame ${s.ms} ms, playing ${s.resumedMs} ms, to ${s.end.toFixed(1)} s`)
    .join('; ');
  const stallList = stallsBy.flatMap((w) => w.stalls.map((s) => `${(s.ms / 1000).toFixed(2)} s after ${w.what}`));
  const figures =
    `mesh ${pct(share)} of ${fmtBytes(all(after.totals))} ` +
    `(${fmtBytes(after.totals.meshBytes)} / ${after.totals.meshSegments} segments mesh, ` +
    `${fmtBytes(after.totals.httpBytes)} / ${after.totals.httpSegments} http), ttff ${after.ttffMs} ms, ` +
    `seeks: ${seekText}; ${stallList.length ? `stalls ${stallList.join(', ')}` : 'no stall'}`;
  if (failures.length) {
    throw new Error(`${failures.length} failure(s): ${failures.map((e) => `${e.type} ${e.url}: ${e.reason}`).join('; ')}; ${figures}`);
  }
  if (long.length) throw new Error(`stall over 1 s: ${long.join(', ')}; ${figures}`);
  if (!(share >= 0.9)) throw new Error(`only ${pct(share)} of segment bytes from the mesh (want ≥ 90 %); ${figures}`);
  return figures;
}

// ------------------------------------------------------------ helpers

/** What the tests read from window.demo. */
function snapshot(page) {
  return page.evaluate(() => ({
    currentTime: document.querySelector('video').currentTime,
    now: performance.now(),
    state: window.demo.state,
    ttffMs: window.demo.ttffMs,
    firstFrameAt: window.demo.firstFrameAt,
    totals: window.demo.totals(),
    segments: window.demo.segments,
    events: window.demo.events,
    latencies: window.demo.latencies,
  }));
}

const all = (t) => t.meshBytes + t.httpBytes;
/**
 * The share of segment bytes from the mesh among fragments asked for once
 * the client was connected: a short VOD's start-up (over HTTP while the
 * client connects, which takes longer in a debug build) weighs heavily in
 * its totals.
 */
function meshShareOnceConnected(s) {
  const connected = s.events.find((e) => e.type === 'mesh-state' && e.state === 'connected');
  if (!connected) return 0;
  const later = s.segments.filter((x) => x.at - x.ms >= connected.at);
  const bytes = (xs) => xs.reduce((n, x) => n + x.bytes, 0);
  const total = bytes(later);
  return total ? bytes(later.filter((x) => x.source === 'mesh')) / total : 0;
}
const meshShare = (t) => (all(t) ? t.meshBytes / all(t) : 0);
const pct = (x) => `${(x * 100).toFixed(1)} %`;
const totalsText = (t) =>
  `mesh ${fmtBytes(t.meshBytes)} / ${t.meshSegments} segments, http ${fmtBytes(t.httpBytes)} / ${t.httpSegments} segments`;

function stallText(list, ref, refName) {
  if (!list.length) return 'no stall';
  const items = list.map((s) => {
    const when = ref == null ? '' : ` at ${refName}${s.at >= ref ? '+' : ''}${((s.at - ref) / 1000).toFixed(1)} s`;
    return `${(s.ms / 1000).toFixed(2)} s${when}${s.ongoing ? ' (ongoing)' : ''}`;
  });
  return `stalls: ${items.join(', ')}`;
}

/** Runs one test with its own demo and browser, always cleaned up. */
async function runTest(test) {
  const resources = { demo: null, browser: null, page: null, pages: [] };
  const t = {
    demo: async (args) => {
      resources.demo = await startDemo({
        meshcast: opts.meshcast,
        web: opts.web,
        args,
        logFile: path.join(opts.out, `${test.name}.meshcast.log`),
        timeoutMs: 90_000,
      });
      return resources.demo;
    },
    // Several calls open several pages in one browser (`name`: of each
    // page's log and state files).
    open: async (url, loader = 'mesh', name = null) => {
      resources.browser ??= await launchBrowser();
      const logFile = path.join(opts.out, `${test.name}${name ? `.${name}` : ''}.log`);
      fs.writeFileSync(logFile, '');
      const page = await openPage(resources.browser.context, pageUrl(url, loader), logFile);
      resources.pages.push({ name, page });
      resources.page ??= page;
      return page;
    },
  };
  let result;
  try {
    const figures = await withTimeout(test.run(t), test.timeoutMs, `timed out after ${test.timeoutMs / 1000} s`);
    result = { ok: true, text: `ok ${test.name} (${figures})` };
  } catch (e) {
    result = { ok: false, text: `FAILED ${test.name}: ${e.message}` };
  }
  // Keep what the pages saw, for post-mortems.
  for (const { name, page } of resources.pages) {
    const state = await page
      .evaluate(() => ({
        state: window.demo?.state,
        mode: window.demo?.mode,
        ttffMs: window.demo?.ttffMs,
        totals: window.demo?.totals?.(),
        mesh: window.demo?.mesh && { state: window.demo.mesh.state, reason: window.demo.mesh.reason, gateways: window.demo.mesh.gateways() },
        stalls: window.demo?.stalls,
        events: window.demo?.events,
        segments: window.demo?.segments,
      }))
      .catch((e) => ({ error: e.message }));
    fs.writeFileSync(path.join(opts.out, `${test.name}${name ? `.${name}` : ''}.json`), JSON.stringify(state, null, 1));
  }
  await resources.browser?.close();
  await resources.demo?.stop();
  return result;
}

function pageUrl(base, loader) {
  const u = new URL(base);
  u.searchParams.set('loader', loader);
  return u.href;
}

// ------------------------------------------------------------ main

const selected = opts.only ? TESTS.filter((x) => x.name === opts.only) : TESTS;
if (!selected.length) {
  console.error(`no test named ${opts.only}\n${USAGE}`);
  process.exit(2);
}
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  for (const test of selected) {
    if (test.needsRoot && process.getuid?.() !== 0) {
      console.log(`skipped ${test.name} (needs root)`);
      skipped++;
      continue;
    }
    const result = await runTest(test);
    console.log(result.text);
    if (result.ok) passed++;
    else failed++;
  }
} finally {
  await cleanupAll();
}
console.log(`e2e: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
