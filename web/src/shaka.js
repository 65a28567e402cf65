/**
 * meshcast for Shaka Player (HLS and DASH): a networking scheme plugin that
 * takes Shaka's segment requests (init and media segments, byte ranges
 * included) to the mesh through `mesh.load` (./meshcast.js) and leaves every
 * other request (manifests, playlists, licences, certificates, timing) to
 * Shaka's own fetch plugin.
 *
 *   import { createMesh } from './meshcast.js';
 *   import { attachShaka } from './shaka.js';
 *
 *   // shaka: the Shaka Player namespace (window.shaka of its compiled build)
 *   const mesh = await createMesh({ wellKnown, stream, media: video, playlist: manifestUrl });
 *   const detach = attachShaka(mesh, shaka);
 *   const player = new shaka.Player();
 *   await player.attach(video);
 *   await player.load(manifestUrl);
 *   // later: await player.destroy(); detach(); mesh.close();
 *
 * Shaka's scheme plugins are global (per page, not per player), so one mesh
 * serves every Shaka player of the page; detach() gives http: and https:
 * back to Shaka's fetch plugin.
 */

import { parseRange } from './meshcast.js';

/**
 * Registers the mesh for Shaka's `http:` and `https:` requests, at
 * application priority (above Shaka's own plugins). Returns a function that
 * undoes it.
 */
export function attachShaka(mesh, shaka, { schemes = ['http', 'https'] } = {}) {
  const { NetworkingEngine } = shaka.net;
  const plugin = shakaScheme(mesh, shaka);
  mesh.byUrl();
  for (const scheme of schemes) {
    NetworkingEngine.registerScheme(scheme, plugin, NetworkingEngine.PluginPriority.APPLICATION, true);
  }
  return () => {
    for (const scheme of schemes) {
      NetworkingEngine.registerScheme(
        scheme,
        shaka.net.HttpFetchPlugin.parse,
        NetworkingEngine.PluginPriority.APPLICATION,
        true,
      );
    }
  };
}

/** The scheme plugin itself: `(uri, request, requestType, …)` as Shaka calls it. */
export function shakaScheme(mesh, shaka) {
  const { RequestType } = shaka.net.NetworkingEngine;
  const ShakaError = shaka.util.Error;
  return (uri, request, requestType, progressUpdated, headersReceived, config) => {
    if (requestType !== RequestType.SEGMENT || (request.method && request.method !== 'GET')) {
      return shaka.net.HttpFetchPlugin.parse(uri, request, requestType, progressUpdated, headersReceived, config);
    }
    const range = parseRange(request.headers?.Range ?? request.headers?.range);
    const ac = new AbortController();
    const loaded = mesh.load({ url: uri, range, signal: ac.signal }).then(
      (got) => {
        headersReceived?.({});
        progressUpdated?.(got.ms, got.data.byteLength, 0);
        return {
          uri,
          originalUri: uri,
          data: got.data,
          status: got.status,
          headers: {},
          timeMs: got.ms,
          fromCache: false,
        };
      },
      (e) => {
        if (e?.name === 'AbortError') {
          throw new ShakaError(ShakaError.Severity.RECOVERABLE, ShakaError.Category.PLAYER, ShakaError.Code.OPERATION_ABORTED);
        }
        if (e?.status) {
          throw new ShakaError(
            ShakaError.Severity.RECOVERABLE,
            ShakaError.Category.NETWORK,
            ShakaError.Code.BAD_HTTP_STATUS,
            uri,
            e.status,
            e.message,
            {},
            requestType,
          );
        }
        throw new ShakaError(ShakaError.Severity.RECOVERABLE, ShakaError.Category.NETWORK, ShakaError.Code.HTTP_ERROR, uri, e, requestType);
      },
    );
    return new shaka.util.AbortableOperation(loaded, () => {
      ac.abort();
      return Promise.resolve();
    });
  };
}
