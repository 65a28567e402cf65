/**
 * meshcast for Video.js (8.x): a source handler for its HTML5 tech that
 * plays HLS sources with hls.js and the meshcast fragment loader, inside
 * the Video.js player (its skin, controls, events and plugins unchanged).
 *
 * Why hls.js inside Video.js rather than Video.js' own engine (VHS): VHS's
 * request hooks (`xhr.onRequest`, `beforeRequest`) may change a request's
 * URL and headers but cannot answer it — every byte still comes from VHS's
 * XHR — so no loader can be put in its place. Hosting hls.js is what
 * Video.js' own hls.js integrations do; the mesh then works exactly as
 * with hls.js alone (./meshcast.js). DASH in Video.js: host dash.js the
 * same way (./dashjs.js), not done here.
 *
 *   // videojs: window.videojs of video.min.js; Hls: the hls.js class
 *   import { createMesh } from './meshcast.js';
 *   import { registerVideojs } from './videojs.js';
 *
 *   const mesh = await createMesh({ Hls, wellKnown, stream, media: videoElement, playlist });
 *   registerVideojs(videojs, { Hls, mesh });
 *   const player = videojs(videoElement);
 *   player.src({ src: playlist, type: 'application/x-mpegURL' });
 *   // player.meshcastHls(): the hls.js instance of the current source
 */

const HLS_TYPE = /^(application\/(x-)?mpegurl|audio\/mpegurl)$/i;

/**
 * Puts the mesh source handler first in Video.js' HTML5 tech, for HLS
 * sources. `hlsConfig`: more hls.js options (the mesh's fLoader is added);
 * `onHls(hls)`: called with each hls.js instance made.
 */
export function registerVideojs(videojs, { Hls, mesh, hlsConfig = {}, onHls = null }) {
  if (!mesh.fragmentLoader) throw new TypeError('registerVideojs: create the mesh with { Hls }');
  const Html5 = videojs.getTech('Html5');
  let current = null;
  const handler = {
    canPlayType(type) {
      return HLS_TYPE.test(type ?? '') && Hls.isSupported() ? 'probably' : '';
    },
    canHandleSource(source) {
      return handler.canPlayType(source?.type);
    },
    handleSource(source, tech) {
      const hls = new Hls({ ...hlsConfig, fLoader: mesh.fragmentLoader });
      current = hls;
      onHls?.(hls);
      hls.loadSource(source.src);
      hls.attachMedia(tech.el());
      return {
        dispose() {
          if (current === hls) current = null;
          hls.destroy();
        },
      };
    },
  };
  Html5.registerSourceHandler(handler, 0);
  if (!videojs.getPlugin?.('meshcastHls')) videojs.registerPlugin?.('meshcastHls', () => current);
  return handler;
}
