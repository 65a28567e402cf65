// Shared by e2e.mjs and bench.mjs: command line, `meshcast demo` processes,
// headless Chromium, playhead sampling, clean-up on any exit.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

// Never --disable-quic: WebTransport runs over HTTP/3.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

/** --meshcast BIN --web DIR --out DIR, plus the script's own options. */
export function cli(usage, extra = {}) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        meshcast: { type: 'string' },
        web: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        ...extra,
      },
    }));
  } catch (e) {
    console.error(`${e.message}\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  for (const key of ['meshcast', 'web', 'out']) {
    if (!values[key]) {
      console.error(`missing --${key}\n${usage}`);
      process.exit(2);
    }
  }
  values.meshcast = path.resolve(values.meshcast);
  values.web = path.resolve(values.web);
  values.out = path.resolve(values.out);
  if (!fs.existsSync(values.meshcast)) fail(`no meshcast binary at ${values.meshcast}`);
  if (!fs.existsSync(path.join(values.web, 'index.html'))) fail(`no index.html in ${values.web}`);
  if (!fs.existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM}`);
  fs.mkdirSync(values.out, { recursive: true });
  return values;
}

function fail(message) {
  console.error(message);
  process.exit(2);
}

// ------------------------------------------------------------ clean-up

// Everything still to be torn down, newest last.
const live = new Set();

/** Registers `close` (async) to run at teardown; returns an unregister function. */
export function onCleanup(close) {
  const entry = { close };
  live.add(entry);
  return () => live.delete(entry);
}

/** Tears down everything registered, newest first. */
export async function cleanupAll() {
  for (const entry of [...live].reverse()) {
    live.delete(entry);
    try {
      await entry.close();
    } catch (e) {
      console.error(`clean-up: ${e.message}`);
    }
  }
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, async () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${signal}: cleaning up`);
    await cleanupAll();
    process.exit(130);
  });
}

// ------------------------------------------------------------ meshcast demo

/**
 * Starts `meshcast demo --listen 127.0.0.1:0 --web DIR ...args` and waits for
 * its `demo <url>` line. Output goes to `logFile`. Returns
 * { url, stream, relay, pids: { role: pid }, gateways: [{ role, url }] (every
 * `gateway <role> <url>` line, also those printed later), proc, stop() }.
 */
export async function startDemo({ meshcast, web, args = [], logFile, timeoutMs = 120_000 }) {
  const argv = ['demo', '--listen', '127.0.0.1:0', '--web', web, ...args];
  const log = fs.createWriteStream(logFile);
  log.write(`$ ${meshcast} ${argv.join(' ')}\n`);
  const proc = spawn(meshcast, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const demo = { proc, url: null, stream: null, relay: null, pids: {}, gateways: [], poisoned: [], edge: null, exited: false, code: null };
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      demo.exited = true;
      demo.code = code ?? signal;
      log.write(`# exited: ${code ?? signal}\n`);
      resolve();
    });
  });
  let stopping = null;
  demo.stop = () => (stopping ??= stop());
  const unregister = onCleanup(() => demo.stop());

  async function stop() {
    if (!demo.exited) {
      proc.kill('SIGINT');
      const timedOut = await Promise.race([exited.then(() => false), sleep(15_000).then(() => true)]);
      if (timedOut) {
        log.write('# no exit 15 s after SIGINT: SIGKILL\n');
        proc.kill('SIGKILL');
        await exited;
      }
    }
    // The demo stops its children itself; make sure none outlived it.
    for (let i = 0; i < 30 && Object.values(demo.pids).some(alive); i++) await sleep(100);
    for (const [role, pid] of Object.entries(demo.pids)) {
      if (alive(pid)) {
        log.write(`# ${role} (pid ${pid}) still running after the demo: SIGKILL\n`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone meanwhile */
        }
      }
    }
    unregister();
    await new Promise((resolve) => log.end(resolve));
  }

  let buffered = '';
  const ready = new Promise((resolve, reject) => {
    proc.stdout.on('data', (chunk) => {
      log.write(chunk);
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        const [key, ...rest] = line.split(/\s+/);
        if (key === 'pid' && rest.length >= 2) demo.pids[rest[0]] = Number(rest[1]);
        else if (key === 'stream') demo.stream = rest[0];
        else if (key === 'gateway' && rest.length >= 2) demo.gateways.push({ role: rest[0], url: rest[1] });
        else if (key === 'relay') demo.relay = rest[0];
        else if (key === 'edge') demo.edge = rest[0];
        else if (key === 'poisoned') demo.poisoned.push({ path: rest[0], at: Date.now() });
        else if (key === 'demo' && rest[0]?.startsWith('http')) {
          demo.url = rest[0];
          resolve();
        }
      }
    });
    proc.stderr.on('data', (chunk) => log.write(chunk));
    proc.on('error', reject);
    exited.then(() => reject(new Error(`meshcast demo exited (${demo.code}) before printing its page URL; see ${logFile}`)));
  });
  ready.catch(() => {}); // may reject after the timeout below won
  try {
    await withTimeout(ready, timeoutMs, `meshcast demo printed no "demo <url>" line in ${timeoutMs / 1000} s; see ${logFile}`);
  } catch (e) {
    await demo.stop();
    throw e;
  }
  return demo;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------ browser

/** A fresh headless Chromium (own profile in a temp dir), closed at clean-up. */
export async function launchBrowser() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshcast-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1400, height: 1000 },
      // Our own handlers close the browser *and* the demo processes.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let closing = null;
  const close = () =>
    (closing ??= (async () => {
      unregister();
      await context.close().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    })());
  const unregister = onCleanup(close);
  return { context, close };
}

// Installed in every page before its scripts run: samples the playhead every
// 100 ms into window.__samples as [performance.now(), currentTime, paused, ended].
const SAMPLER = `
  window.__samples = [];
  setInterval(() => {
    const v = document.querySelector('video');
    if (v) window.__samples.push([performance.now(), v.currentTime, v.paused, v.ended]);
  }, 100);
`;

/**
 * Opens `url` in a new page of `context`; console output and page errors go
 * to `logFile`. Returns the page.
 */
export async function openPage(context, url, logFile) {
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  const t0 = Date.now();
  const stamp = () => `${((Date.now() - t0) / 1000).toFixed(3).padStart(8)}s`;
  const page = await context.newPage();
  page.on('console', (m) => log.write(`${stamp()} ${m.type()} ${m.text()}\n`));
  page.on('pageerror', (e) => log.write(`${stamp()} pageerror ${e.stack ?? e.message}\n`));
  page.on('requestfailed', (r) => log.write(`${stamp()} requestfailed ${r.url()} ${r.failure()?.errorText}\n`));
  page.on('close', () => log.end());
  await page.addInitScript(SAMPLER);
  log.write(`${stamp()} open ${url}\n`);
  await page.goto(url);
  return page;
}

/** Waits until window.demo.state is 'playing'; throws with the page's state otherwise. */
export async function waitPlaying(page, timeoutMs = 30_000) {
  try {
    await page.waitForFunction(() => window.demo?.state === 'playing', null, { timeout: timeoutMs, polling: 100 });
  } catch {
    const s = await page.evaluate(() => ({ state: window.demo?.state, error: window.demo?.error })).catch(() => ({}));
    throw new Error(`not playing after ${timeoutMs / 1000} s (state ${s.state ?? '?'}${s.error ? `, ${s.error}` : ''})`);
  }
}

export const currentTime = (page) => page.evaluate(() => document.querySelector('video').currentTime);

/** Polls until video.currentTime ≥ `target`; throws after `timeoutMs`. */
export async function waitCurrentTime(page, target, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const t = await currentTime(page);
    if (t >= target) return t;
    if (Date.now() > end) {
      throw new Error(`currentTime ${t.toFixed(1)} s, wanted ${target.toFixed(1)} s within ${timeoutMs / 1000} s`);
    }
    await sleep(250);
  }
}

/**
 * Stalls in the page's playhead samples taken at or after `fromMs` and up to
 * `toMs` (performance.now() of the page): spans over `minMs` during which
 * currentTime did not advance while neither paused nor ended. A stall still
 * going on at the last sample is marked `ongoing`.
 * Returns [{ at, ms }] (at: page time the stall began).
 */
export async function stalls(page, fromMs, minMs = 0, toMs = Infinity) {
  const samples = (await page.evaluate(() => window.__samples)).filter(([t]) => t >= fromMs && t <= toMs);
  const out = [];
  let stuckAt = null; // page time of the last sample that had advanced
  let last = null; // [t, currentTime] of the previous sample
  for (const [t, ct, paused, ended] of samples) {
    const moving = last === null || ct > last[1] + 1e-3;
    if (moving || paused || ended) {
      if (stuckAt !== null && t - stuckAt > minMs) out.push({ at: stuckAt, ms: Math.round(t - stuckAt) });
      stuckAt = null;
    } else if (stuckAt === null) {
      stuckAt = last[0];
    }
    last = [t, ct];
  }
  const end = samples.length ? samples[samples.length - 1][0] : 0;
  if (stuckAt !== null && end - stuckAt > minMs) out.push({ at: stuckAt, ms: Math.round(end - stuckAt), ongoing: true });
  return out;
}

// ------------------------------------------------------------ small things

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** Nearest-rank percentile of numbers `xs` (p in 0..100). */
export function percentile(xs, p) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

export const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
