/**
 * meshcast.js: the player-agnostic core (the mesh client, deadlines, the
 * verified HTTP fallback, stats and events) and its hls.js fragment loader.
 * Shaka (./shaka.js), dash.js (./dashjs.js) and Video.js (./videojs.js) are
 * small modules beside it. The loader fetches segments from the
 * meshcast mesh over WebTransport, verifies them in the browser (the wasm
 * client checks the publisher's Ed25519 signature and the BLAKE3 hash of every
 * segment), and falls back to plain HTTP from the origin whenever the mesh
 * cannot deliver in time. An ES module, no bundler needed.
 *
 * Usage:
 *
 *   import Hls from './hls.mjs';
 *   import { createMesh } from './meshcast.js';
 *
 *   const video = document.querySelector('video');
 *   const mesh = await createMesh({
 *     Hls,                                   // the hls.js class
 *     wellKnown: 'https://relay.example.org/.well-known/meshcast',
 *     stream: '<64 hex digits: the stream id>',
 *     token: '',                             // viewer token, for private streams
 *     media: video,                          // the deadline is read from its buffer
 *   });
 *   mesh.addEventListener('segment', (e) => console.log(e.detail));
 *   const hls = new Hls({ fLoader: mesh.fragmentLoader, lowLatencyMode: false });
 *   hls.loadSource('https://origin.example.org/live/master.m3u8');
 *   hls.attachMedia(video);
 *   // later: hls.destroy(); mesh.close();
 *
 * createMesh(options) resolves at once (it does not wait for the network):
 * the wasm client (`./pkg/meshcast_client.js` next to this file) is loaded and
 * connected in the background at once, while the player loads its playlists,
 * so that start-up fragments can come over the mesh too (see "Start-up"
 * below). `await mesh.ready` to wait for the
 * outcome (true when connected), or pass `awaitConnect: true`.
 *
 * Options (all optional; without wellKnown/stream everything is HTTP):
 *   Hls             the hls.js class; its DefaultConfig.loader is the
 *                   fallback of mesh.fragmentLoader (absent: no
 *                   fragmentLoader, for players that use mesh.load)
 *   wellKnown       URL of a relay's /.well-known/meshcast
 *   stream          stream id, 64 hex digits
 *   token           viewer token ('' for public streams)
 *   media           the HTMLMediaElement hls.js plays into (for the deadline)
 *   minDeadlineMs   least time given to the mesh for one segment (1000)
 *   maxDeadlineMs   most time given to the mesh for one segment (8000)
 *   safetyMarginMs  kept in the buffer on top of the HTTP estimate (500)
 *   connectTimeoutMs  for MeshClient.connect (5000)
 *   awaitConnect    resolve createMesh only once connected or failed (false)
 *   deferConnect    start the client only once `media` plays or
 *                   deferConnectMs (1000) have passed, whichever is first
 *                   (false): the start-up fragments then all go over HTTP,
 *                   and the client's start-up work (wasm compile,
 *                   handshakes) stays off their path
 *   startWaitMs     most a start-up fragment waits for the connection
 *                   (default: the page's measured HTTP round trip to the
 *                   origin, at most 150 ms; see "Start-up")
 *   HttpLoader      fallback loader class (Hls.DefaultConfig.loader)
 *   playlist        the master playlist URL the player loads (for fallback;
 *                   the descriptor's origin URL when absent)
 *   fallback        mirrors of the origin, tried in order when HTTP fails or
 *                   serves bytes that do not verify: URLs of the same master
 *                   playlist on each, e.g. ['https://mirror.example.org/live/master.m3u8']
 *   fetchFromMesh   false: every fragment over HTTP, still checked against
 *                   the headers the mesh announces (true)
 *   clientModule    URL of the wasm-bindgen module (./pkg/meshcast_client.js)
 *   MeshClient      a MeshClient class to use instead of loading the module
 *
 * The mesh object (an EventTarget):
 *   mesh.fragmentLoader  class for `new Hls({ fLoader: mesh.fragmentLoader })`
 *   mesh.load({ url, range, signal })  one segment named by URL (see
 *                        "Players that ask for URLs"): resolves { data,
 *                        source, from, status, ms }
 *   mesh.byUrl()         says a player will use mesh.load (integrations call it)
 *   mesh.client          the wasm MeshClient, null until connected
 *   mesh.state           'connecting' | 'connected' | 'unavailable' | 'closed'
 *   mesh.reason          why the state is not 'connected' (e.g. 'no WebTransport')
 *   mesh.ready           Promise<boolean>, settles after the first connect attempt
 *   mesh.descriptor      the signed stream descriptor, once connected
 *   mesh.gateways()      as the client reports them: [{ url, transport, connected,
 *                        throughputBps, inflight, failures, … }], [] if none
 *   mesh.totals()        { meshBytes, httpBytes, meshSegments, httpSegments, offload }
 *   mesh.deadline(frag)  the deadline the loader would use now (see below)
 *   mesh.close()         closes the client; later fragments go over HTTP
 *
 * Also exported: parseRange(header) (a Range header as { start, end }),
 * meshSupported() (WebAssembly, and WebTransport or WebSocket, present),
 * preloadClient(clientModule) (loads and compiles the wasm client once; call
 * it as early as the page can) and bufferAheadMs(media) (the aheadMs below).
 *
 * Events (CustomEvent, data in `event.detail`):
 *   segment        { url, source: 'mesh'|'http', bytes, ms, gateway,
 *                    transport ('webtransport'|'websocket' for the mesh),
 *                    reason,
 *                    why, rendition, sequence, init, part (a low-latency
 *                    part's index, else null), level, firstByteMs,
 *                    attempts, deadlineMs, aheadMs, verifyFailed, at }
 *                  ms: from hls.js' request to data handed over (loading.end
 *                  − loading.start); reason: why HTTP was used, null for mesh:
 *                  'connecting', 'mesh unavailable', 'mesh closed',
 *                  'rendition not in descriptor', 'no gateway connected',
 *                  'mesh failing' (cooling down after failures in a row),
 *                  'deadline', or the client's error code ('verify',
 *                  'mismatch', 'not-found', 'closed', 'no-gateway',
 *                  'deadline'); why: the details; verifyFailed: verification
 *                  failures reported while this segment was in flight; at:
 *                  performance.now() at delivery
 *                  For HTTP also from (the URL that delivered: the player's
 *                  or a mirror's) and verified (true when checked against
 *                  the signed header, false when none was known)
 *   segment-failed { url, from, reason }  the HTTP fallback failed too
 *   http-rejected  { url, from, reason, next, rendition, sequence, init,
 *                  part, at }  bytes from `from` did not verify (a poisoned
 *                  origin, CDN edge or mirror): dropped, and `next` (a
 *                  mirror, or null) is tried
 *   gateway        { type: 'connected'|'closed', url, reason, transport
 *                  ('webtransport'|'websocket' when connected) }
 *   verify-failed  { url, reason, inflight: [fragment urls] }
 *   state          { state, reason }
 *   totals         same as mesh.totals()
 *
 * Transports. The client opens each gateway over WebTransport. The entry
 * gateway (the relay of `wellKnown`) also serves the same protocol over a
 * WebSocket when its well-known document names one: the client races it
 * when WebTransport is missing (Safari), fails, or has not connected within
 * a second (a network that drops UDP stalls a QUIC handshake rather than
 * failing it), and keeps whichever connects first. Over HTTPS the WebSocket
 * is wss: on the relay's web address behind the operator's TLS.
 *
 * Which segments go over the mesh: every media fragment, low-latency part
 * (hls.js `lowLatencyMode`) and init segment of a rendition named in the stream descriptor (matched by playlist path), while
 * the client is connected and has a connected gateway. HTTP is used instead
 * when WebTransport is missing, the wasm client failed to load or connect, the
 * fragment's playlist is not a descriptor rendition, the client rejects (for
 * any reason but our own abort: verification failed on every gateway,
 * mismatch, not-found, closed, no-gateway, deadline), or the deadline passes.
 * After two mesh failures in a row the mesh is set aside for a cool-down (4 s,
 * doubling while failures go on, at most 30 s; a gateway connecting ends it),
 * so a gateway gone silent does not cost every fragment its deadline.
 *
 * The deadline. The mesh gets as long as HTTP can still be afforded after it:
 *
 *   aheadMs   = media buffered contiguously ahead of media.currentTime
 *   bytes     = rendition bandwidth (bit/s) × frag.duration / 8   (init: 4 KiB;
 *               a low-latency part: its own duration)
 *   httpMs    = httpTtfbMs + bytes × 8000 / httpBps    (HTTP estimate; both are
 *               moving averages of this page's HTTP fallbacks, defaults 300 ms
 *               and 4 Mbit/s)
 *   deadline  = clamp(aheadMs − safetyMarginMs − httpMs, minDeadlineMs, maxDeadlineMs)
 *               (for a part, the least is its duration if shorter, at least
 *               100 ms: a low-latency player holds only a few parts ahead)
 *
 * The fragment being loaded is appended where the buffer ends, so the player
 * stalls `aheadMs` from now unless it has arrived. If the mesh gives up at the
 * deadline, HTTP (httpMs, which grows with the fragment's duration through its
 * size) still lands `safetyMarginMs` before the buffer runs dry. With an empty
 * buffer (start-up, seek, after a stall) nothing can be spared and the mesh
 * gets minDeadlineMs only. Such an urgent fragment (slack at or under the
 * minimum) goes straight to HTTP while the client is still connecting, so the
 * mesh never delays start-up; a fragment with slack waits for the connection
 * within its deadline (the wait counts against it). The cap keeps a stuck
 * request from holding up hls.js, which loads one fragment at a time.
 *
 * Start-up. The client connects while the player loads its playlists (a
 * WebTransport handshake and the Welcome take a few round trips, like the
 * playlists). A fragment asked for while it is still connecting and with no
 * buffer to spare (the first ones) waits for the connection at most
 * startWaitMs: by default the page's HTTP round trip to the origin as the
 * browser timed the playlist loads (Resource Timing), at most 150 ms. If the
 * connection is up by then the mesh serves it, and no later than HTTP would
 * have by more than that round trip; if not, it goes over HTTP at once
 * ('connecting'). The same round trip seeds the HTTP estimate of the
 * deadline until this page has done an HTTP fallback. Pages load faster
 * when they preload the client: <link rel="modulepreload"
 * href="pkg/meshcast_client.js"> and <link rel="preload"
 * href="pkg/meshcast_client_bg.wasm" as="fetch" crossorigin>.
 *
 * Trustless HTTP fallback. The gateways announce the signed header of every
 * segment they store, and the client keeps the recent ones. Bytes fetched
 * over HTTP (from the origin, a CDN edge or a mirror) are checked against
 * the header of their segment when one is known, before hls.js sees them: a
 * mismatch is an `http-rejected` event and the next `fallback` mirror is
 * tried; with none left, hls.js gets an error and its retry starts over with
 * the mesh. A live player may see a new segment in its playlist before the
 * mesh has carried it to a gateway: its bytes wait for the announcement, up
 * to half the buffer ahead and at most 2 s (headerWaitMs; the segment event
 * says headerWaitMs). Without a header then (not connected yet, nothing
 * buffered, or not announced in time) the bytes are passed on unchecked, as
 * a player without meshcast would, and the segment event says verified:
 * false.
 *
 * Players that ask for URLs. Shaka and dash.js hand their loaders a URL
 * (and a Range header), not a rendition and sequence number. The client
 * keeps the signed headers it has seen (the Welcome's newest per rendition,
 * every announcement and delivery) indexed by where each segment is
 * served: its URL's path and query, resolved from the descriptor, and its
 * byte range start, so that a mirror's host matches too (MeshClient.locate).
 * A live player may ask for a segment before the mesh announced it: the
 * request waits for the announcement within its deadline (the buffer
 * decides, as above; a start-up request waits at most startWaitMs). For a
 * VOD, the client asks a gateway for the headers it holds (a header query,
 * at most every 5 s), at connect once an integration called byUrl(), so
 * that the first segments are found too. A segment not found in time goes
 * over HTTP ('not announced'), checked against its header if it turns up.
 * The segment's own signed length and duration then size its deadline.
 *
 * Stats: the loader fills hls.js' LoaderStats as its own loaders do:
 * loading.start when hls.js asked (so time spent on a failed mesh attempt
 * counts against the fallback, as the player saw it), loading.first at the
 * first byte of the delivery that succeeded, loading.end when the verified
 * data is handed over, loaded/total in bytes, bwEstimate, retry and aborted.
 * chunkCount is left alone: hls.js' stream controller counts chunks in it.
 */

const DEFAULTS = {
  minDeadlineMs: 1000,
  maxDeadlineMs: 8000,
  safetyMarginMs: 500,
  connectTimeoutMs: 5000,
  awaitConnect: false,
  deferConnect: false,
  deferConnectMs: 1000,
  fetchFromMesh: true,
};

// Until this page has done an HTTP fallback, assume a modest connection.
const DEFAULT_HTTP_TTFB_MS = 300;
const DEFAULT_HTTP_BPS = 4e6;
// Weight of the newest sample in the HTTP moving averages.
const EWMA_ALPHA = 0.3;
// Assumed bit rate of a rendition whose bandwidth is unknown, and init size.
const DEFAULT_RENDITION_BPS = 2e6;
const INIT_SEGMENT_BYTES = 4096;
// The client enforces the deadline; this timer is a backstop for a client
// that does not answer at all.
const DEADLINE_GRACE_MS = 250;
// Least time left for the fetch itself after waiting for the connection.
const MIN_FETCH_MS = 200;
// Gaps in media.buffered smaller than this are played through (as hls.js'
// maxBufferHole).
const MAX_BUFFER_HOLE_S = 0.5;
// After this many mesh failures in a row, HTTP only for a while (doubling up
// to the max while failures go on); a new gateway connection ends it.
const FAIL_STREAK = 2;
const COOL_DOWN_MIN_MS = 4000;
const COOL_DOWN_MAX_MS = 30000;
// Longest live HTTP bytes wait for their header (see headerWaitMs).
const MAX_HEADER_WAIT_MS = 2000;
// Longest a start-up fragment waits for the connection by default.
const MAX_START_WAIT_MS = 150;

// Reconnection after a failed first connect (the client reconnects by itself
// once it has connected).
const RETRY_MIN_MS = 2000;
const RETRY_MAX_MS = 30000;

/**
 * Creates the mesh and starts connecting (in the background unless
 * `awaitConnect`). See the top of this file.
 */
export async function createMesh(options) {
  const mesh = new Mesh(options);
  const start = () => mesh._start().catch((e) => mesh._unavailable(`mesh failed: ${errorText(e)}`));
  const media = mesh.media;
  const o = mesh.options;
  if (!mesh._canStart()) {
    // No relay, or neither WebTransport nor WebSocket: HTTP only, known at once.
  } else if (o.deferConnect && !o.awaitConnect && media && media.paused !== false && typeof media.addEventListener === 'function') {
    // Keep the client's start-up work (wasm compile, handshakes) off the
    // path to the first frame: the fragments needed for it go over HTTP
    // anyway while connecting.
    let timer = null;
    const go = () => {
      clearTimeout(timer);
      media.removeEventListener('playing', go);
      if (!mesh._closed) start();
    };
    media.addEventListener('playing', go);
    timer = setTimeout(go, o.deferConnectMs);
  } else {
    start();
  }
  if (o.awaitConnect) await mesh.ready;
  return mesh;
}

const clientLoads = new Map(); // module URL → Promise<MeshClient class>

/**
 * Loads and compiles the wasm client (`clientModule`, else
 * ./pkg/meshcast_client.js beside this file) once per page, resolving to
 * its MeshClient class. createMesh calls it; call it yourself as early as
 * the page can (before its configuration or the player have loaded) so that
 * the compile is done by the time the mesh connects.
 */
export function preloadClient(clientModule) {
  const url = clientModule ?? new URL('./pkg/meshcast_client.js', import.meta.url).href;
  let load = clientLoads.get(url);
  if (!load) {
    load = import(url).then(async (mod) => {
      await mod.default();
      return mod.MeshClient;
    });
    // A failed load may be retried by the next call.
    load.catch(() => clientLoads.delete(url));
    clientLoads.set(url, load);
  }
  return load;
}

/**
 * True when this browser can use the mesh at all: WebAssembly, and
 * WebTransport or a WebSocket (the fallback, where the relay offers it).
 */
export function meshSupported() {
  return typeof WebAssembly !== 'undefined' && (typeof WebTransport !== 'undefined' || typeof WebSocket !== 'undefined');
}

class Mesh extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    // Only the hls.js loader needs it: the other integrations load by URL
    // (mesh.load) and fall back with fetch().
    this.HttpLoader = options.HttpLoader ?? options.Hls?.DefaultConfig.loader ?? null;
    this.media = options.media ?? null;
    this.client = null;
    this.descriptor = null;
    this.state = 'connecting';
    this.reason = null;
    // pathname of a rendition's playlist → rendition id
    this._renditions = new Map();
    this._bandwidth = new Map(); // rendition id → bit/s
    this._inflight = new Set(); // loaders with a mesh request out
    this._totals = { meshBytes: 0, httpBytes: 0, meshSegments: 0, httpSegments: 0 };
    this._http = { ttfbMs: DEFAULT_HTTP_TTFB_MS, bps: DEFAULT_HTTP_BPS, ttfbSamples: 0, bpsSamples: 0 };
    this._retryTimer = null;
    this._retryMs = RETRY_MIN_MS;
    this._failStreak = 0; // mesh failures in a row
    this._coolUntil = 0; // performance.now() until which the mesh is skipped
    this._coolMs = COOL_DOWN_MIN_MS;
    this._closed = false;
    this.ready = new Promise((resolve) => (this._resolveReady = resolve));
    this._lastQueryAt = -Infinity; // performance.now() of the last header query
    this._byUrl = false; // a player names segments by URL (see byUrl)
    this._headerWaiters = new Set(); // woken when the client learns headers
    this.fragmentLoader = this.HttpLoader ? makeLoaderClass(this) : null;
  }

  /**
   * Loads one segment that a player names by URL (Shaka, dash.js: see
   * "Players that ask for URLs" at the top), from the mesh if it can
   * deliver in time, else over HTTP (verified when its header is known,
   * then the `fallback` mirrors). `range`: { start, end } (end inclusive,
   * may be absent) for a byte-range request. Resolves { data (ArrayBuffer),
   * source ('mesh'|'http'), from (the URL or gateway), status, ms };
   * rejects with an Error whose `status` is the last HTTP status (0 for a
   * network error), or with name 'AbortError' when `signal` aborts.
   */
  async load({ url, range = null, signal = null }) {
    const start = performance.now();
    const job = { url, range, signal, start, verifyFailed: 0, plan: null, located: null };
    const aborted = () => signal?.aborted;
    let reason = null;
    let why = null;
    if (this.state === 'closed') reason = 'mesh closed';
    else if (!this.options.fetchFromMesh) reason = 'fetchFromMesh off';
    else if (this.state === 'unavailable') reason = 'mesh unavailable';
    if (!reason) {
      // Until the segment is located, the buffer alone says how urgent it
      // is (its size is unknown: count it as a segment of the target
      // duration).
      const guess = { sn: 0, duration: (this.descriptor?.segmentDurationMs ?? 2000) / 1000 };
      job.plan = this.deadline(guess, undefined, null);
      const waitMs = job.plan.urgent ? this.startWaitMs() : job.plan.deadlineMs - MIN_FETCH_MS;
      if (this.state === 'connecting') {
        if (waitMs <= 0 || !(await this._whenConnected(waitMs))) {
          reason = this.state === 'connecting' ? 'connecting' : 'mesh unavailable';
        }
      }
      if (!reason) {
        job.located = await this._locate(url, range, Math.max(0, start + waitMs - performance.now()), signal);
        if (aborted()) throw abortError();
        if (!job.located) reason = 'not announced';
        else if (!this.usable()) reason = 'no gateway connected';
        else if (this._coolingDown()) reason = 'mesh failing';
      }
    }
    if (aborted()) throw abortError();
    if (!reason) {
      const got = await this._loadFromMesh(job);
      if (got) return got;
      if (aborted()) throw abortError();
      reason = job.failure?.code ?? 'error';
      why = job.failure ? errorText(job.failure) : null;
    }
    return this._loadOverHttp(job, reason, why);
  }

  /**
   * Says that a player will name segments by URL (`load`): for a VOD, the
   * client then asks the gateway for the headers it holds as soon as it is
   * connected, so that even the first segments are found (a Welcome names
   * only the newest). The integrations call it.
   */
  byUrl() {
    this._byUrl = true;
    if (this.client) this._queryCatalogue();
  }

  _queryCatalogue() {
    const client = this.client;
    if (!client || !this.descriptor || this.descriptor.live) return;
    if (performance.now() - this._lastQueryAt <= 5000) return;
    this._lastQueryAt = performance.now();
    client.queryHeaders().catch(() => {});
  }

  /**
   * The segment at `url` (and range) among the headers the client knows,
   * waiting up to `ms` for it to be announced (a live edge segment the
   * player heard of before the mesh did) or, for a VOD, for the gateway's
   * catalogue (asked for once every 5 s at most).
   */
  async _locate(url, range, ms, signal) {
    const until = performance.now() + ms;
    let asked = false;
    for (;;) {
      const client = this.client;
      if (!client || signal?.aborted) return null;
      let located = null;
      try {
        located = client.locate({ url, ...(range ? { rangeStart: range.start } : {}) });
      } catch {
        return null;
      }
      if (located) return located;
      if (!asked) {
        asked = true;
        this._queryCatalogue();
      }
      const left = until - performance.now();
      if (left <= 0) return null;
      await this._whenHeaders(left, signal);
    }
  }

  /**
   * Resolves when the client next learns headers (an announcement, a
   * gateway's Welcome), after `ms`, or when `signal` aborts: what waits for
   * a segment's header looks again at once instead of polling.
   */
  _whenHeaders(ms, signal = null) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this._headerWaiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this._headerWaiters.add(done);
      signal?.addEventListener('abort', done);
    });
  }

  _headersLearned() {
    for (const wake of [...this._headerWaiters]) wake();
  }

  /**
   * How long HTTP bytes of a live fragment whose header the mesh has not
   * announced yet wait for it before they go to the player unchecked: the
   * player may see a new segment in its playlist before the mesh carried
   * it to a gateway. Half the buffer ahead, at most MAX_HEADER_WAIT_MS;
   * none at start-up or when no gateway is connected (nothing to wait for).
   */
  headerWaitMs() {
    if (!this.descriptor?.live || !this.usable()) return 0;
    return Math.min(MAX_HEADER_WAIT_MS, bufferAheadMs(this.media) / 2);
  }

  async _loadFromMesh(job) {
    const { located, signal } = job;
    const init = !!located.init;
    const frag = { sn: init ? 'initSegment' : located.sequence, duration: located.durationMs / 1000 };
    const plan = this.deadline(frag, located.rendition, null);
    // The elapsed wait counts against the deadline, as for hls.js.
    const left = job.plan ? job.plan.deadlineMs - (performance.now() - job.start) : plan.deadlineMs;
    plan.deadlineMs = Math.round(Math.max(MIN_FETCH_MS, Math.min(plan.deadlineMs, left)));
    job.plan = plan;
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal?.addEventListener('abort', onAbort);
    const tracker = { _verifyFailed: 0, context: { url: job.url } };
    this._inflight.add(tracker);
    const timer = setTimeout(() => ac.abort(), plan.deadlineMs + DEADLINE_GRACE_MS);
    const fetchStart = performance.now();
    let result = null;
    try {
      result = await this.client.fetch({
        rendition: located.rendition,
        sequence: init ? 0 : located.sequence,
        init,
        url: job.url,
        priority: plan.priority,
        deadlineMs: plan.deadlineMs,
        signal: ac.signal,
      });
    } catch (e) {
      job.failure = ac.signal.aborted && !signal?.aborted ? Object.assign(new Error('no answer by the deadline'), { code: 'deadline' }) : e;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      this._inflight.delete(tracker);
      job.verifyFailed = tracker._verifyFailed;
    }
    const data = toArrayBuffer(result?.data);
    if (!data) {
      if (!signal?.aborted) this._meshFailed();
      return null;
    }
    this._meshOk();
    const end = performance.now();
    const firstByteMs = Number(result.firstByteMs);
    this._delivered({
      url: job.url,
      source: 'mesh',
      bytes: data.byteLength,
      ms: Math.round(end - job.start),
      firstByteMs: Math.round((Number.isFinite(firstByteMs) ? fetchStart + firstByteMs : end) - job.start),
      gateway: result.gateway ?? null,
      transport: result.transport ?? null,
      attempts: result.attempts ?? 1,
      reason: null,
      rendition: located.rendition,
      sequence: init ? 0 : located.sequence,
      init,
      part: null,
      level: null,
      deadlineMs: plan.deadlineMs,
      aheadMs: plan.aheadMs,
      verifyFailed: job.verifyFailed,
      at: end,
    });
    return { data, source: 'mesh', from: result.gateway ?? null, status: 200, ms: end - job.start };
  }

  /**
   * Over HTTP with fetch(): the player's URL, then each `fallback` mirror
   * while one fails or serves bytes that do not verify.
   */
  async _loadOverHttp(job, reason, why) {
    const { url, range, signal } = job;
    const urls = this.httpUrls(url);
    let status = 0;
    let last = null;
    for (let i = 0; i < urls.length; i++) {
      const from = urls[i];
      const t0 = performance.now();
      let res;
      let data;
      let first;
      try {
        const headers = range ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {};
        res = await fetch(from, { headers, signal, cache: 'no-store' });
        first = performance.now();
        status = res.status;
        if (!res.ok) {
          last = `${from}: HTTP ${res.status}`;
          continue;
        }
        data = await res.arrayBuffer();
      } catch (e) {
        if (signal?.aborted) throw abortError();
        last = `${from}: ${errorText(e)}`;
        continue;
      }
      // A server that ignored the Range header sent the whole file.
      if (range && res.status === 200) {
        data = data.slice(range.start, range.end == null ? undefined : range.end + 1);
      }
      const end = performance.now();
      // Located now if the mesh announced it meanwhile.
      const located = job.located ?? this._locateNow(url, range);
      const check = this._verifyLocated(located, url, data);
      if (check.verdict === 'mismatch') {
        const next = urls[i + 1] ?? null;
        this._emit('http-rejected', {
          url,
          from,
          reason: check.reason,
          next,
          rendition: located?.rendition ?? null,
          sequence: located ? (located.init ? 0 : located.sequence) : null,
          init: !!located?.init,
          part: null,
          at: end,
        });
        last = `${from} served bytes that do not verify: ${check.reason}`;
        continue;
      }
      this._sampleHttp({ loading: { start: t0, first, end }, loaded: data.byteLength });
      this._delivered({
        url,
        from,
        source: 'http',
        verified: check.verdict === 'verified',
        bytes: data.byteLength,
        ms: Math.round(end - job.start),
        firstByteMs: Math.round(first - job.start),
        gateway: null,
        attempts: i + 1,
        reason,
        why: why ?? (reason === 'mesh unavailable' ? this.reason : null),
        rendition: located?.rendition ?? null,
        sequence: located ? (located.init ? 0 : located.sequence) : null,
        init: !!located?.init,
        part: null,
        level: null,
        deadlineMs: job.plan?.deadlineMs ?? null,
        aheadMs: job.plan?.aheadMs ?? Math.round(bufferAheadMs(this.media)),
        verifyFailed: job.verifyFailed,
        at: end,
      });
      return { data, source: 'http', from, status: res.status, ms: end - job.start };
    }
    this._emit('segment-failed', { url, from: urls[urls.length - 1], reason: last });
    throw Object.assign(new Error(last ?? `${url}: failed`), { status });
  }

  _locateNow(url, range) {
    try {
      return this.client?.locate({ url, ...(range ? { rangeStart: range.start } : {}) }) ?? null;
    } catch {
      return null;
    }
  }

  _verifyLocated(located, url, data) {
    if (!this.client || !located) return { verdict: 'unknown', reason: this.client ? 'not announced' : 'not connected' };
    try {
      return this.client.verify({
        rendition: located.rendition,
        sequence: located.init ? 0 : located.sequence,
        init: !!located.init,
        url,
        data,
      });
    } catch (e) {
      return { verdict: 'unknown', reason: errorText(e) };
    }
  }

  /** { meshBytes, httpBytes, meshSegments, httpSegments, offload (0..1) } */
  totals() {
    const t = this._totals;
    const all = t.meshBytes + t.httpBytes;
    return { ...t, offload: all ? t.meshBytes / all : 0 };
  }

  /** The client's gateways, [] when not connected. */
  gateways() {
    try {
      return this.client ? Array.from(this.client.gateways() ?? []) : [];
    } catch {
      return [];
    }
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._retryTimer);
    const client = this.client;
    this.client = null;
    try {
      client?.close();
    } catch {
      /* already closed */
    }
    this._setState('closed', 'closed by the page');
    this._resolveReady(false);
  }

  /**
   * The deadline for fragment `frag` now:
   * { deadlineMs, aheadMs, httpMs, urgent, priority } (see the top comment).
   */
  deadline(frag, renditionId, part = null) {
    const o = this.options;
    const aheadMs = bufferAheadMs(this.media);
    const init = frag?.sn === 'initSegment';
    const bps = this._bandwidth.get(renditionId) || frag?.bitrate || DEFAULT_RENDITION_BPS;
    // A low-latency part is a fraction of its fragment, and so is its time:
    // the player holds only a few parts ahead.
    const of = part ?? frag;
    const duration = Number.isFinite(of?.duration) ? of.duration : 0;
    const bytes = init ? INIT_SEGMENT_BYTES : (bps * duration) / 8;
    // Before any HTTP fallback of this page, the playlists' round trip is
    // the best guess of the origin's time to first byte.
    const ttfbMs = this._http.ttfbSamples ? this._http.ttfbMs : playlistRoundTripMs() ?? this._http.ttfbMs;
    const httpMs = ttfbMs + (bytes * 8000) / this._http.bps;
    const slack = aheadMs - o.safetyMarginMs - httpMs;
    const minMs = part ? Math.min(o.minDeadlineMs, Math.max(100, duration * 1000)) : o.minDeadlineMs;
    const deadlineMs = Math.round(Math.min(o.maxDeadlineMs, Math.max(minMs, slack)));
    const urgent = slack <= minMs;
    // 0 = most urgent for the gateway; then by seconds of buffer left.
    const priority = urgent ? 0 : Math.min(1000, 1 + Math.floor(aheadMs / 1000));
    return { deadlineMs, aheadMs: Math.round(aheadMs), httpMs: Math.round(httpMs), urgent, priority };
  }

  /**
   * Where to fetch `url` over HTTP, in order: the player's URL, then the same
   * file on each `fallback` mirror (at its path relative to the master
   * playlist: `playlist`, else the descriptor's origin).
   */
  httpUrls(url) {
    const urls = [url];
    const fallback = this.options.fallback ?? [];
    const master = this.options.playlist ?? this.descriptor?.originUrl;
    if (!fallback.length || !master) return urls;
    let rest;
    try {
      const dir = new URL('.', master).pathname;
      const u = new URL(url);
      if (!u.pathname.startsWith(dir)) return urls;
      rest = u.pathname.slice(dir.length) + u.search;
    } catch {
      return urls;
    }
    for (const mirror of fallback) {
      try {
        const m = new URL(rest, new URL('.', mirror)).href;
        if (!urls.includes(m)) urls.push(m);
      } catch {
        /* not a URL: skipped */
      }
    }
    return urls;
  }

  /**
   * Checks fragment bytes fetched over HTTP from `url` against the signed
   * header the mesh announced: { verdict: 'verified'|'mismatch'|'unknown',
   * reason }. Unknown without a connected client or a descriptor rendition.
   */
  verifyHttp(context, url, data) {
    const frag = context.frag;
    const rendition = frag ? this.renditionFor(frag.baseurl) : undefined;
    if (!this.client || rendition === undefined || !data || typeof data === 'string') {
      return { verdict: 'unknown', reason: this.client ? 'not a mesh fragment' : 'not connected' };
    }
    const init = frag.sn === 'initSegment';
    try {
      return this.client.verify({
        rendition,
        sequence: init ? 0 : frag.sn,
        init,
        part: context.part ? context.part.index : undefined,
        url,
        data,
      });
    } catch (e) {
      return { verdict: 'unknown', reason: errorText(e) };
    }
  }

  /**
   * verifyHttp, and for a live fragment whose header the mesh has not
   * announced yet, again at each announcement for up to headerWaitMs(),
   * while `stillWanted()`. Resolves { check, waitedMs }.
   */
  async verifyHttpAwaiting(context, url, data, stillWanted) {
    const start = performance.now();
    const until = start + this.headerWaitMs();
    let check = this.verifyHttp(context, url, data);
    // 'no header…': the client knows none of this segment yet. Anything
    // else that is unknown (not a mesh fragment, another file) stays so.
    while (check.verdict === 'unknown' && check.reason?.startsWith('no header') && stillWanted()) {
      const left = until - performance.now();
      if (left <= 0) break;
      await this._whenHeaders(left);
      check = this.verifyHttp(context, url, data);
    }
    return { check, waitedMs: performance.now() - start };
  }

  /**
   * How long a start-up fragment may wait for the connection: startWaitMs,
   * else the HTTP round trip measured on the playlist loads (at most
   * MAX_START_WAIT_MS), else 0.
   */
  startWaitMs() {
    if (Number.isFinite(this.options.startWaitMs)) return Math.max(0, this.options.startWaitMs);
    const rtt = playlistRoundTripMs();
    return rtt == null ? 0 : Math.min(MAX_START_WAIT_MS, rtt);
  }

  /** Rendition id of the playlist at `playlistUrl`, or undefined. */
  renditionFor(playlistUrl) {
    const path = pathnameOf(playlistUrl);
    return path === null ? undefined : this._renditions.get(path);
  }

  /** A mesh request succeeded. */
  _meshOk() {
    this._failStreak = 0;
    this._coolMs = COOL_DOWN_MIN_MS;
  }

  /**
   * A mesh request failed (not by our abort). A few in a row (a gateway gone
   * silent, say) put the mesh aside for a cool-down, so the following
   * fragments do not each wait for their deadline; then one fragment tries
   * the mesh again.
   */
  _meshFailed() {
    this._failStreak += 1;
    if (this._failStreak >= FAIL_STREAK) {
      this._coolUntil = performance.now() + this._coolMs;
      this._coolMs = Math.min(COOL_DOWN_MAX_MS, this._coolMs * 2);
      this._failStreak = FAIL_STREAK - 1; // the probe after the cool-down decides
    }
  }

  _coolingDown() {
    return performance.now() < this._coolUntil;
  }

  /** True when a mesh request can be sent right now. */
  usable() {
    if (this.state !== 'connected' || !this.client) return false;
    const gateways = this.gateways();
    // An empty list means the client does not report them: let it decide.
    return gateways.length === 0 || gateways.some((g) => g.connected);
  }

  /**
   * While the first connection is under way: resolves true once connected,
   * false if it fails or after `ms`.
   */
  _whenConnected(ms) {
    if (this.state !== 'connecting') return Promise.resolve(this.state === 'connected');
    return new Promise((resolve) => {
      const done = (ok) => {
        clearTimeout(timer);
        this.removeEventListener('state', onState);
        resolve(ok);
      };
      const onState = () => {
        if (this.state !== 'connecting') done(this.state === 'connected');
      };
      const timer = setTimeout(() => done(false), Math.max(0, ms));
      this.addEventListener('state', onState);
    });
  }

  /** False (and unavailable) when the mesh cannot be used at all here. */
  _canStart() {
    const o = this.options;
    if (!o.wellKnown || !o.stream) this._unavailable('no relay configured');
    else if (typeof WebTransport === 'undefined' && typeof WebSocket === 'undefined' && !o.MeshClient) {
      this._unavailable('neither WebTransport nor WebSocket in this browser');
    }
    else return true;
    return false;
  }

  async _start() {
    const o = this.options;
    let MeshClient = o.MeshClient;
    if (!MeshClient) {
      try {
        MeshClient = await preloadClient(o.clientModule);
      } catch (e) {
        return this._unavailable(`wasm client failed to load: ${errorText(e)}`);
      }
    }
    this._MeshClient = MeshClient;
    await this._connect();
  }

  async _connect() {
    const o = this.options;
    let client;
    try {
      client = await this._MeshClient.connect({
        wellKnown: o.wellKnown,
        stream: o.stream,
        token: o.token ?? '',
        timeoutMs: o.connectTimeoutMs,
      });
    } catch (e) {
      if (this._closed) return;
      this._unavailable(`connect failed: ${errorText(e)}`);
      // No relay answered: try again later, backing off.
      this._retryTimer = setTimeout(() => this._connect(), this._retryMs);
      this._retryMs = Math.min(RETRY_MAX_MS, this._retryMs * 2);
      return;
    }
    if (this._closed) {
      client.close();
      return;
    }
    this.client = client;
    this._retryMs = RETRY_MIN_MS;
    try {
      this._learnDescriptor(client.descriptor());
    } catch (e) {
      console.warn('meshcast: unreadable descriptor', e);
    }
    client.onEvent((ev) => this._onClientEvent(ev));
    if (this._byUrl) this._queryCatalogue();
    this._setState('connected', null);
    this._resolveReady(true);
  }

  _learnDescriptor(descriptor) {
    this.descriptor = descriptor;
    this._renditions.clear();
    this._bandwidth.clear();
    for (const r of descriptor?.renditions ?? []) {
      const url = r.playlistUrl ?? resolveUrl(r.uri, descriptor.originUrl);
      const path = pathnameOf(url);
      if (path !== null) this._renditions.set(path, r.id);
      if (r.bandwidth) this._bandwidth.set(r.id, Number(r.bandwidth));
    }
  }

  _onClientEvent(ev) {
    if (!ev || this._closed) return;
    if (ev.type === 'headers') {
      this._headersLearned();
    } else if (ev.type === 'verify-failed') {
      const inflight = [];
      for (const loader of this._inflight) {
        loader._verifyFailed++;
        inflight.push(loader.context?.url);
      }
      this._emit('verify-failed', { url: ev.url, reason: ev.reason ?? null, inflight });
    } else if (ev.type === 'gateway-connected' || ev.type === 'gateway-closed') {
      const type = ev.type === 'gateway-connected' ? 'connected' : 'closed';
      if (type === 'connected') {
        // A fresh gateway: give the mesh its chance again.
        this._coolUntil = 0;
        this._meshOk();
        // Its Welcome named the newest headers.
        this._headersLearned();
      }
      this._emit('gateway', { type, url: ev.url, reason: ev.reason ?? null, transport: ev.transport ?? null });
    }
  }

  _unavailable(reason) {
    this._setState('unavailable', reason);
    this._resolveReady(false);
  }

  _setState(state, reason) {
    this.state = state;
    this.reason = reason;
    this._emit('state', { state, reason });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Books a delivered segment and reports it. */
  _delivered(detail) {
    const t = this._totals;
    if (detail.source === 'mesh') {
      t.meshBytes += detail.bytes;
      t.meshSegments += 1;
    } else {
      t.httpBytes += detail.bytes;
      t.httpSegments += 1;
    }
    this._emit('segment', detail);
    this._emit('totals', this.totals());
  }

  /** Feeds the HTTP estimate with one successful HTTP load. */
  _sampleHttp(stats) {
    const { start, first, end } = stats.loading;
    if (!(first >= start && end >= first) || !stats.loaded) return;
    const h = this._http;
    const ttfb = first - start;
    // The first sample replaces the default, later ones are averaged in.
    h.ttfbMs = h.ttfbSamples ? EWMA_ALPHA * ttfb + (1 - EWMA_ALPHA) * h.ttfbMs : ttfb;
    h.ttfbSamples += 1;
    // Only transfers of some size say something about throughput; a transfer
    // too short to time is bounded.
    if (stats.loaded < 16384) return;
    const bps = Math.min(1e9, (stats.loaded * 8000) / Math.max(end - first, 1));
    h.bps = h.bpsSamples ? EWMA_ALPHA * bps + (1 - EWMA_ALPHA) * h.bps : bps;
    h.bpsSamples += 1;
  }
}

/**
 * The fragment loader class bound to `mesh`: one instance per fragment load,
 * used once, as hls.js' own loaders.
 */
function makeLoaderClass(mesh) {
  return class MeshFragmentLoader {
    constructor(hlsConfig) {
      this.hlsConfig = hlsConfig;
      this.context = null;
      this.config = null;
      this.callbacks = null;
      this.stats = newStats();
      this._phase = 'idle'; // idle → mesh → (http) → done
      this._http = null; // the fallback loader
      this._abort = null; // AbortController of the mesh request
      this._timer = null;
      this._verifyFailed = 0;
      this._plan = null;
    }

    load(context, config, callbacks) {
      if (this.stats.loading.start) throw new Error('Loader can only be used once.');
      this.stats.loading.start = performance.now();
      this.context = context;
      this.config = config;
      this.callbacks = callbacks;
      this._run().catch((e) => {
        // A bug here must not leave hls.js waiting: fall back.
        console.error('meshcast loader', e);
        if (this._phase !== 'done' && this._phase !== 'http') this._startHttp('error', errorText(e));
      });
    }

    abort() {
      const wasLoading = this._phase !== 'done' && this._phase !== 'idle';
      this._stop();
      if (wasLoading) this.stats.aborted = true;
      this.callbacks?.onAbort?.(this.stats, this.context, this._http ? this._networkDetails() : null);
    }

    destroy() {
      this.callbacks = null;
      this._stop();
      this.context = this.config = null;
    }

    getCacheAge() {
      return this._http?.getCacheAge?.() ?? null;
    }

    getResponseHeader(name) {
      return this._http?.getResponseHeader?.(name) ?? null;
    }

    _networkDetails() {
      return this._http?.loader ?? null;
    }

    /** Cancels whatever is in flight, without callbacks. */
    _stop() {
      this._phase = 'done';
      clearTimeout(this._timer);
      mesh._inflight.delete(this);
      this._abort?.abort();
      this._abort = null;
      this._http?.destroy();
    }

    async _run() {
      const { context } = this;
      const frag = context.frag;
      if (!frag) return this._startHttp('not a fragment');
      if (mesh.state === 'closed') return this._startHttp('mesh closed');
      if (!mesh.options.fetchFromMesh) return this._startHttp('fetchFromMesh off');

      this._plan = mesh.deadline(frag, mesh.renditionFor(frag.baseurl), context.part);
      let budgetMs = Infinity; // what is left of the deadline after waiting
      if (mesh.state === 'unavailable') return this._startHttp('mesh unavailable');
      if (mesh.state === 'connecting') {
        // First connection under way: an urgent fragment (start-up) waits
        // for it only as long as an HTTP round trip, so the mesh never
        // delays start-up by more; one with slack waits within its
        // deadline, keeping a little for the fetch.
        const waitMs = this._plan.urgent
          ? mesh.startWaitMs()
          : this._plan.deadlineMs - MIN_FETCH_MS;
        if (waitMs <= 0) return this._startHttp('connecting');
        this._phase = 'mesh';
        const waitStart = performance.now();
        const ok = await mesh._whenConnected(waitMs);
        if (this._phase !== 'mesh') return; // aborted meanwhile
        if (!ok) return this._startHttp(mesh.state === 'connecting' ? 'connecting' : 'mesh unavailable');
        budgetMs = Math.max(MIN_FETCH_MS, this._plan.deadlineMs - (performance.now() - waitStart));
      }
      const rendition = mesh.renditionFor(frag.baseurl);
      if (rendition === undefined) return this._startHttp('rendition not in descriptor');
      if (!mesh.usable()) return this._startHttp('no gateway connected');
      if (mesh._coolingDown()) return this._startHttp('mesh failing');
      // Again, with the rendition's bandwidth, and the buffer as it is now.
      const plan = mesh.deadline(frag, rendition, context.part);
      if (plan.deadlineMs > budgetMs) plan.deadlineMs = Math.round(budgetMs);
      this._plan = plan;
      await this._fetchMesh(rendition, plan);
    }

    async _fetchMesh(rendition, plan) {
      const { context } = this;
      const frag = context.frag;
      const init = frag.sn === 'initSegment';
      const ac = new AbortController();
      this._abort = ac;
      this._phase = 'mesh';
      mesh._inflight.add(this);
      const fetchStart = performance.now();
      // Backstop: should the client not answer by its deadline, move on.
      this._timer = setTimeout(() => {
        if (this._abort !== ac || this._phase !== 'mesh') return;
        mesh._inflight.delete(this);
        this._abort = null;
        ac.abort();
        mesh._meshFailed();
        this._startHttp('deadline', 'the client did not answer by the deadline');
      }, plan.deadlineMs + DEADLINE_GRACE_MS);

      let result;
      let failure = null;
      try {
        result = await mesh.client.fetch({
          rendition,
          sequence: init ? 0 : frag.sn,
          init,
          part: context.part ? context.part.index : undefined,
          url: context.url,
          priority: plan.priority,
          deadlineMs: plan.deadlineMs,
          signal: ac.signal,
        });
      } catch (e) {
        failure = e;
      }
      clearTimeout(this._timer);
      mesh._inflight.delete(this);
      if (this._abort !== ac || this._phase !== 'mesh') return; // aborted, or timed out
      this._abort = null;

      const data = failure ? null : toArrayBuffer(result?.data);
      if (!data) {
        mesh._meshFailed();
        // 'verify', 'mismatch', 'not-found', 'closed', 'no-gateway', 'deadline'…
        const code = failure?.code ?? (failure ? 'error' : 'no data');
        return this._startHttp(code, failure ? errorText(failure) : 'the client resolved without data');
      }

      this._phase = 'done';
      mesh._meshOk();
      const stats = this.stats;
      const end = performance.now();
      const firstByteMs = Number(result.firstByteMs);
      const first = Number.isFinite(firstByteMs) ? fetchStart + firstByteMs : end;
      stats.loading.first = Math.min(end, Math.max(stats.loading.start, first));
      stats.loading.end = end;
      stats.loaded = stats.total = data.byteLength;
      stats.bwEstimate = (stats.total * 8000) / Math.max(end - stats.loading.first, 1);
      const callbacks = this.callbacks;
      callbacks?.onProgress?.(stats, context, data, null);
      callbacks?.onSuccess({ url: context.url, data, code: 200 }, stats, context, null);
      mesh._delivered({
        url: context.url,
        source: 'mesh',
        bytes: data.byteLength,
        ms: Math.round(end - stats.loading.start),
        firstByteMs: Math.round(stats.loading.first - stats.loading.start),
        gateway: result.gateway ?? null,
        transport: result.transport ?? null,
        attempts: result.attempts ?? 1,
        reason: null,
        rendition,
        sequence: init ? 0 : frag.sn,
        init,
        part: context.part ? context.part.index : null,
        level: frag.level,
        deadlineMs: plan.deadlineMs,
        aheadMs: plan.aheadMs,
        verifyFailed: this._verifyFailed,
        at: end,
      });
    }

    /**
     * Loads the fragment with the stock loader: from the player's URL, then
     * from each `fallback` mirror in turn while one fails or serves bytes
     * that do not verify. Nothing reaches hls.js before it is checked against
     * the signed header, when the mesh announced one (see "Trustless HTTP
     * fallback" at the top).
     */
    _startHttp(reason, why = null) {
      const { context } = this;
      if (!context || this._phase === 'http' || this._phase === 'done') return;
      this._phase = 'http';
      this._httpReason = reason;
      this._httpWhy = why;
      this._httpUrls = mesh.httpUrls(context.url);
      this._httpAttempt = 0;
      this._retryBefore = this.stats.retry;
      this._loadHttp();
    }

    /** One HTTP attempt, at this._httpUrls[this._httpAttempt]. */
    _loadHttp() {
      const { context, config } = this;
      const url = this._httpUrls[this._httpAttempt];
      const ctx = url === context.url ? context : { ...context, url };
      const http = (this._http = new mesh.HttpLoader(this.hlsConfig));
      const mine = () => this._http === http && this._phase === 'http';
      const copy = (s) => {
        const t = this.stats;
        t.loading.first = s.loading.first;
        t.loading.end = s.loading.end;
        t.loaded = s.loaded;
        t.total = s.total;
        t.bwEstimate = s.bwEstimate;
        t.retry = this._retryBefore + this._httpAttempt + s.retry;
        t.aborted = s.aborted;
      };
      // Progress is held back until the whole fragment has verified: a
      // poisoned byte must never reach the player.
      const chunks = [];
      const callbacks = {
        onSuccess: (response, s, _ctx, details) => {
          if (!mine()) return;
          copy(s);
          const data = byteLength(response.data) || !chunks.length ? response.data : concat(chunks);
          mesh
            .verifyHttpAwaiting(context, url, data, mine)
            .then(({ check, waitedMs }) => mine() && this._httpChecked(url, response, data, details, s, check, waitedMs))
            .catch((e) => console.error('meshcast: checking HTTP bytes', e));
        },
        onError: (error, _ctx, details, s) => {
          if (!mine()) return;
          copy(s);
          this._nextHttp(error, details, () => this.callbacks?.onError(error, context, details, this.stats));
        },
        onTimeout: (s, _ctx, details) => {
          if (!mine()) return;
          copy(s);
          this._nextHttp({ code: 0, text: 'timeout' }, details, () =>
            this.callbacks?.onTimeout(this.stats, context, details),
          );
        },
        onAbort: (s, _ctx, details) => {
          // Aborts we start come through abort()/destroy(); forward others.
          if (!mine()) return;
          this._phase = 'done';
          copy(s);
          this.callbacks?.onAbort?.(this.stats, context, details);
        },
        onProgress: (s, _ctx, data) => {
          if (!mine()) return;
          copy(s);
          if (data && typeof data !== 'string' && byteLength(data)) chunks.push(data);
        },
      };
      http.load(ctx, config, callbacks);
    }

    /**
     * The bytes from `url` are whole and checked (`check`, after `waitedMs`
     * waiting for the header): on to the next mirror if they do not verify,
     * else to hls.js.
     */
    _httpChecked(url, response, data, details, s, check, waitedMs) {
      const { context } = this;
      const frag = context.frag;
      const init = frag?.sn === 'initSegment';
      if (check.verdict === 'mismatch') {
        const next = this._httpUrls[this._httpAttempt + 1] ?? null;
        mesh._emit('http-rejected', {
          url: context.url,
          from: url,
          reason: check.reason,
          next,
          rendition: frag ? mesh.renditionFor(frag.baseurl) ?? null : null,
          sequence: init ? 0 : frag?.sn,
          init,
          part: context.part ? context.part.index : null,
          at: performance.now(),
        });
        return this._nextHttp(
          { code: 0, text: `${url} served bytes that do not verify: ${check.reason}` },
          details,
        );
      }
      this._phase = 'done';
      mesh._sampleHttp(s);
      this.callbacks?.onProgress?.(this.stats, context, data, details);
      this.callbacks?.onSuccess({ ...response, data }, this.stats, context, details);
      const end = this.stats.loading.end || performance.now();
      mesh._delivered({
        url: context.url,
        from: url,
        source: 'http',
        verified: check.verdict === 'verified',
        headerWaitMs: Math.round(waitedMs),
        bytes: byteLength(data),
        ms: Math.round(end - this.stats.loading.start),
        firstByteMs: this.stats.loading.first
          ? Math.round(this.stats.loading.first - this.stats.loading.start)
          : null,
        gateway: null,
        attempts: 1 + this._httpAttempt + s.retry,
        reason: this._httpReason,
        why: this._httpWhy ?? (this._httpReason === 'mesh unavailable' ? mesh.reason : null),
        rendition: frag ? mesh.renditionFor(frag.baseurl) ?? null : null,
        sequence: init ? 0 : frag?.sn,
        init,
        part: context.part ? context.part.index : null,
        level: frag?.level,
        deadlineMs: this._plan?.deadlineMs ?? null,
        aheadMs: this._plan?.aheadMs ?? Math.round(bufferAheadMs(mesh.media)),
        verifyFailed: this._verifyFailed,
        at: end,
      });
    }

    /**
     * The attempt failed: on to the next mirror, or tell hls.js (`report`, or
     * an error) when none is left; hls.js' own retries then start over with
     * the mesh.
     */
    _nextHttp(error, details, report = null) {
      const url = this._httpUrls[this._httpAttempt];
      if (this._httpAttempt + 1 < this._httpUrls.length) {
        this._httpAttempt += 1;
        this._http?.destroy();
        this._http = null;
        return this._loadHttp();
      }
      this._phase = 'done';
      const reason = error.code ? `http ${error.code} ${error.text ?? ''}`.trim() : error.text;
      mesh._emit('segment-failed', { url: this.context.url, from: url, reason });
      if (report) return report();
      this.callbacks?.onError({ code: error.code, text: error.text }, this.context, details, this.stats);
    }
  };
}

/** A Range header, `bytes=a-b` or `bytes=a-`, as { start, end } (end inclusive, or null); else null. */
export function parseRange(header) {
  const m = /^bytes=(\d+)-(\d*)$/.exec(header ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: m[2] === '' ? null : Number(m[2]) };
}

function abortError() {
  return new DOMException('aborted', 'AbortError');
}

/** A fresh hls.js LoaderStats. */
function newStats() {
  return {
    aborted: false,
    loaded: 0,
    retry: 0,
    total: 0,
    chunkCount: 0,
    bwEstimate: 0,
    loading: { start: 0, first: 0, end: 0 },
    parsing: { start: 0, end: 0 },
    buffering: { start: 0, first: 0, end: 0 },
  };
}

/**
 * Milliseconds of media buffered contiguously ahead of the playhead (holes
 * under MAX_BUFFER_HOLE_S are bridged), 0 without a media element.
 */
export function bufferAheadMs(media) {
  if (!media?.buffered) return 0;
  const t = media.currentTime;
  const b = media.buffered;
  let end = null;
  for (let i = 0; i < b.length; i++) {
    const s = b.start(i);
    const e = b.end(i);
    if (end === null) {
      if (s <= t + MAX_BUFFER_HOLE_S && e > t) end = e;
    } else if (s <= end + MAX_BUFFER_HOLE_S) {
      end = Math.max(end, e);
    } else {
      break;
    }
  }
  return end === null ? 0 : Math.max(0, (end - t) * 1000);
}

/** The data as an ArrayBuffer of exactly its bytes (copied if it is a view). */
/**
 * The median duration of the page's playlist and manifest loads (Resource
 * Timing; a cross-origin entry still has its duration): about one HTTP round
 * trip to the origin, or null before any.
 */
function playlistRoundTripMs() {
  if (typeof performance === 'undefined' || typeof performance.getEntriesByType !== 'function') return null;
  const times = performance
    .getEntriesByType('resource')
    .filter((e) => /\.(m3u8|mpd)(\?|$)/.test(e.name) && e.duration > 0)
    .map((e) => e.duration)
    .sort((a, b) => a - b);
  return times.length ? times[Math.floor(times.length / 2)] : null;
}

/** Progress chunks joined into one ArrayBuffer. */
function concat(chunks) {
  const all = new Uint8Array(chunks.reduce((n, c) => n + byteLength(c), 0));
  let at = 0;
  for (const c of chunks) {
    const bytes = c instanceof ArrayBuffer ? new Uint8Array(c) : new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
    all.set(bytes, at);
    at += bytes.byteLength;
  }
  return all.buffer;
}

function toArrayBuffer(data) {
  if (!data) return null;
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) {
    const { buffer, byteOffset, byteLength } = data;
    if (buffer instanceof ArrayBuffer && byteOffset === 0 && byteLength === buffer.byteLength) {
      return buffer;
    }
    return new Uint8Array(buffer, byteOffset, byteLength).slice().buffer;
  }
  return null;
}

function byteLength(data) {
  if (!data) return 0;
  if (typeof data === 'string') return data.length;
  return data.byteLength ?? 0;
}

function pathnameOf(url) {
  try {
    return new URL(url, globalThis.location?.href).pathname;
  } catch {
    return null;
  }
}

function resolveUrl(uri, base) {
  try {
    return new URL(uri, base).href;
  } catch {
    return uri;
  }
}

function errorText(e) {
  if (e == null) return 'unknown error';
  if (e.code && e.message) return `${e.code}: ${e.message}`;
  return e.message ?? String(e);
}
