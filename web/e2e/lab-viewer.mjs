#!/usr/bin/env node
// A headless Chromium viewer inside a network-lab host (`meshcast_lab::browser`
// starts it with `ip netns exec`): it serves the built page on this host's
// loopback — a secure context, which WebTransport needs, whereas a page from a
// lab address over plain HTTP would not be one — and plays the lab's stream
// through the relay's gateway, with the origin as the page's HTTP fallback.
//
//   node web/e2e/lab-viewer.mjs --web target/web --playlist URL --well-known URL
//        --stream ID --seconds N --log FILE
//
// After N seconds of playback it prints one line, `lab-viewer {json}`:
//   played     seconds the playhead advanced
//   stalls     [{ at, ms }] from the page's playhead samples (over 250 ms,
//              after the first frame)
//   totals     the page's totals(): meshBytes, httpBytes, meshSegments,
//              httpSegments, offload
//   verifyFailed, segmentFailed   counts of the page's events
//   ttffMs     time to first frame
// and exits 0; on any failure it prints `lab-viewer-error <why>` and exits 1.
// The page's console goes to --log.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cleanupAll, launchBrowser, openPage, stalls, sleep, waitPlaying, withTimeout } from './lib.mjs';

const USAGE =
  'usage: node lab-viewer.mjs --web DIR --playlist URL --well-known URL --stream ID --seconds N --log FILE';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
};

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        web: { type: 'string' },
        playlist: { type: 'string' },
        'well-known': { type: 'string' },
        stream: { type: 'string' },
        seconds: { type: 'string' },
        log: { type: 'string' },
      },
    }));
  } catch (e) {
    fail(`${e.message}\n${USAGE}`);
  }
  for (const key of ['web', 'playlist', 'well-known', 'stream', 'seconds', 'log']) {
    if (!values[key]) fail(`missing --${key}\n${USAGE}`);
  }
  const seconds = Number(values.seconds);
  if (!(seconds > 0 && seconds <= 3600)) fail(`--seconds must be a number of seconds up to 3600, not ${values.seconds}`);
  const web = path.resolve(values.web);
  if (!fs.existsSync(path.join(web, 'index.html'))) fail(`no index.html in ${web} (cargo xtask web builds it)`);
  return { ...values, web, seconds };
}

function fail(why) {
  console.log(`lab-viewer-error ${why.replaceAll('\n', ' ')}`);
  process.exit(1);
}

/**
 * Serves the page's folder and `/config.json` on 127.0.0.1 (an ephemeral
 * port); GET only, no path outside the folder. Resolves to its base URL.
 */
function servePage(web, config) {
  const body = JSON.stringify(config);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (url.pathname === '/config.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
      return;
    }
    const relative = decodeURIComponent(url.pathname).replace(/^\/+/, '') || 'index.html';
    const file = path.resolve(web, relative);
    if (!file.startsWith(web + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}/`, server }));
  });
}

async function main() {
  const opts = options();
  const { url, server } = await servePage(opts.web, {
    playlist: opts.playlist,
    wellKnown: opts['well-known'],
    stream: opts.stream,
    vod: false,
    token: '',
  });
  const { context } = await launchBrowser();
  const page = await openPage(context, url, opts.log);
  await waitPlaying(page, 60_000);
  const start = await page.evaluate(() => document.querySelector('video').currentTime);
  await sleep(opts.seconds * 1000);
  const state = await page.evaluate(() => ({
    currentTime: document.querySelector('video').currentTime,
    firstFrameAt: window.demo.firstFrameAt,
    ttffMs: window.demo.ttffMs,
    totals: window.demo.totals(),
    verifyFailed: window.demo.events.filter((e) => e.type === 'verify-failed').length,
    segmentFailed: window.demo.events.filter((e) => e.type === 'segment-failed').length,
    error: window.demo.error,
  }));
  const report = {
    played: state.currentTime - start,
    stalls: await stalls(page, state.firstFrameAt, 250),
    totals: state.totals,
    verifyFailed: state.verifyFailed,
    segmentFailed: state.segmentFailed,
    ttffMs: state.ttffMs,
    error: state.error,
  };
  server.close();
  console.log(`lab-viewer ${JSON.stringify(report)}`);
}

try {
  await withTimeout(main(), 600_000, 'the viewer took over 10 minutes');
  await cleanupAll();
  process.exit(0);
} catch (e) {
  await cleanupAll();
  fail(e.message);
}
