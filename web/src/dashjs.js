/**
 * meshcast for dash.js (5.x): its loader extension point. dash.js loads
 * every request through an `XHRLoader` made by its factory, which
 * `player.extend` may override per player; the override sends init and
 * media segment requests (byte ranges included) to the mesh through
 * `mesh.load` (./meshcast.js) and leaves the rest (the MPD, index
 * segments, licences, time sync) to dash.js' own XHR loader.
 *
 *   import dashjs from './dash.all.min.js';
 *   import { createMesh } from './meshcast.js';
 *   import { attachDashjs } from './dashjs.js';
 *
 *   const mesh = await createMesh({ wellKnown, stream, media: video, playlist: mpdUrl });
 *   const player = dashjs.MediaPlayer().create();
 *   attachDashjs(mesh, player);            // before initialize()
 *   player.initialize(video, mpdUrl, true);
 *   // later: player.destroy(); mesh.close();
 *
 * Not covered: dash.js fetches a low-latency (chunked CMAF) segment that is
 * not yet complete with its Fetch loader, which is not extended here; such
 * requests stay on HTTP.
 */

import { parseRange } from './meshcast.js';

// dash.js' HTTPRequest types that are segments of a rendition.
const SEGMENT_TYPES = new Set(['MediaSegment', 'InitializationSegment']);

/** Makes `player` (a dash.js MediaPlayer, before initialize) load segments through `mesh`. */
export function attachDashjs(mesh, player) {
  mesh.byUrl();
  player.extend(
    'XHRLoader',
    function meshLoader() {
      // `this.parent` is dash.js' own XHRLoader, whose methods this object
      // replaces: keep them for everything that is not a segment.
      const parent = { load: this.parent.load, abort: this.parent.abort, reset: this.parent.reset };
      const inflight = new Set();
      return {
        load(request, response) {
          const type = request.customData?.request?.type;
          if (!SEGMENT_TYPES.has(type) || (request.method && request.method !== 'GET')) {
            return parent.load(request, response);
          }
          loadSegment(mesh, request, response, inflight);
          return true;
        },
        abort() {
          for (const ac of inflight) ac.abort();
          inflight.clear();
          parent.abort();
        },
        reset() {
          for (const ac of inflight) ac.abort();
          inflight.clear();
          parent.reset();
        },
        resetInitialSettings() {
          for (const ac of inflight) ac.abort();
          inflight.clear();
          parent.abort();
        },
      };
    },
    true,
  );
}

/** One segment: fills dash.js' CommonMediaResponse as its XHR loader does. */
function loadSegment(mesh, request, response, inflight) {
  const ac = new AbortController();
  inflight.add(ac);
  const custom = request.customData;
  custom.abort = () => ac.abort();
  const range = parseRange(request.headers?.Range ?? request.headers?.range);
  mesh.load({ url: request.url, range, signal: ac.signal }).then(
    (got) => {
      inflight.delete(ac);
      response.url = request.url;
      response.status = got.status === 206 ? 206 : 200;
      response.statusText = 'OK';
      response.headers = {};
      response.data = got.data;
      const bytes = got.data.byteLength;
      custom.onprogress?.({ loaded: bytes, total: bytes, lengthComputable: true });
      custom.onloadend?.();
    },
    (e) => {
      inflight.delete(ac);
      if (e?.name === 'AbortError') {
        custom.onabort?.();
        return;
      }
      // Not 2xx: dash.js retries, then reports the error.
      response.url = request.url;
      response.status = e?.status || 0;
      response.statusText = e?.message ?? 'error';
      response.data = null;
      custom.onloadend?.();
    },
  );
}
