//! A small HTTP origin for tests and the demo: it serves one HLS directory
//! (such as `media/test-stream`) as VOD, as a longer VOD that repeats it, and
//! as an endless live stream.
//!
//! | route | serves |
//! |---|---|
//! | `GET /vod/<path>` | the file `<path>` of the directory, as is |
//! | `GET /live/master.m3u8` | the master playlist, unchanged |
//! | `GET /live/<media playlist>` | a live playlist rendered for *now* (see [`playlist`]) for every media playlist the master names |
//! | `GET /live/<path>` | any other file (segments, init segments), as is |
//! | `GET /replay/<loops>/master.m3u8` | the master playlist, unchanged |
//! | `GET /replay/<loops>/<media playlist>` | a VOD of the media playlist repeated `loops` times (see [`playlist`], *The replay*), for every media playlist the master names |
//! | `GET /replay/<loops>/<path>` | any other file, as is |
//!
//! | `GET /ll/master.m3u8` | the master playlist, unchanged (only with [`Origin::with_parts`]) |
//! | `GET /ll/<media playlist>` | the live loop as low-latency HLS, with blocking reload (see [`lowlatency`]) |
//! | `GET /ll/<stem>/<msn>.m4s`, `GET /ll/<stem>/<msn>.<part>.m4s` | a live segment or part, once published (a request for one about to be published waits for it) |
//! | `GET /ll/<path>` | any other file (init segments), as is |
//! | `GET /alt/master.m3u8` | the master playlist with an alternate audio rendition (`EXT-X-MEDIA`) that every variant names (see [`demuxed`]) |
//! | `GET /alt/<media playlist>`, `GET /alt/<file>` | the video-only variants and the audio rendition, as a VOD, and their files |
//! | `GET /dash/manifest.mpd`, `GET /dash/<file>` | the same files as a static DASH MPD (see [`demuxed`]) |
//! | `GET /range/master.m3u8` | the master playlist, unchanged |
//! | `GET /range/<media playlist>` | the VOD with every segment a byte range of one file (see [`ranged`]), for every media playlist with an init segment |
//! | `GET /range/<stem>.mp4` | that file: init segment then segments, with `Range` requests answered 206 (one range; 416 when unsatisfiable) |
//!
//! `/replay/` makes a long VOD of a short directory: the committed test
//! stream (20 s) under `/replay/15/` is a five-minute VOD, with the
//! discontinuities the live loop has. `<loops>` must be a number from 1 to
//! [`Origin::max_replay_loops`] (at most [`playlist::MAX_REPLAY_LOOPS`]),
//! else the answer is 400, whatever the path.
//!
//! The live stream loops the VOD forever with a sliding window of
//! [`playlist::DEFAULT_WINDOW`] segments, starting with a full window at once
//! (the stream pretends to have begun one window before the origin was
//! loaded); the algorithm is in the [`playlist`] module docs. Its clock starts
//! when the [`Origin`] is loaded and runs at real speed unless
//! [`Origin::with_clock_rate`] says otherwise.
//!
//! Every response carries `Access-Control-Allow-Origin: *` (players on other
//! origins fetch from it) and `OPTIONS` preflights are answered for every path.
//! Live playlists carry `Cache-Control: no-cache`. Paths with `..`, `.`, empty
//! components, backslashes or a leading `/` are refused with 400, and files are
//! resolved (symlinks too) strictly inside the directory, else 404. Files above
//! [`MAX_FILE_BYTES`] are not served.
//!
//! Everything is checked when the origin is loaded: the master playlist and
//! every media playlist it names must parse, and every segment and init
//! segment they name must be a readable file of at most [`MAX_FILE_BYTES`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshcast_origin::Error> {
//! let origin = meshcast_origin::spawn("media/test-stream", ([127, 0, 0, 1], 0).into()).await?;
//! println!("live at {}/live/master.m3u8", origin.url());
//! # Ok(()) }
//! ```

pub mod demuxed;
pub mod fmp4;
pub mod lowlatency;
pub mod playlist;
pub mod ranged;
pub mod synthetic;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::demuxed::{Demuxed, Muxed, demux};
use crate::fmp4::{Fmp4Error, Tracks};
use crate::lowlatency::{Availability, Blocking, LowLatency, MediaPath, SegmentParts};
use crate::playlist::{MasterPlaylist, PlaylistError, VodPlaylist, check_relative_path};
use crate::ranged::{Ranged, parse_range};

/// Name of the master playlist in the served directory.
pub const MASTER_PLAYLIST: &str = "master.m3u8";

/// Largest file served (and accepted at load): segments of the test streams
/// are ~100 KB; this only bounds memory, as files are read whole.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Why an origin could not be loaded or started. Every variant names the file
/// or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Playlist {
        path: PathBuf,
        source: PlaylistError,
    },
    #[error("{}: {uri:?} ({}): {reason}", playlist.display(), path.display())]
    BadMedia {
        playlist: PathBuf,
        uri: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{}: cannot cut into low-latency parts: {reason}", path.display())]
    Parts { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// One HLS directory, loaded and checked, ready to be served.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Canonical path: every served file must resolve below it.
    root: PathBuf,
    /// Media playlists by URI (relative to the root, as the master names them).
    media: HashMap<String, VodPlaylist>,
    window: NonZeroUsize,
    clock_rate: f64,
    started: Instant,
    /// The low-latency renditions by the stem of their media playlist's URI
    /// (`360p` for `360p.m3u8`); empty unless [`Origin::with_parts`].
    parts: HashMap<String, Arc<PartedPlaylist>>,
    /// The byte-range renditions (`/range/`) by the stem of their media
    /// playlist's URI; those without an init segment have none.
    ranged: HashMap<String, Arc<Ranged>>,
    /// The rendering with alternate audio (`/alt/`); `None` when a
    /// rendition has no init segment or not both video and audio.
    demuxed: Option<Arc<Demuxed>>,
}

/// A media playlist cut into parts, with their bytes.
#[derive(Debug)]
struct PartedPlaylist {
    playlist: LowLatency,
    /// By VOD segment: its parts, and their concatenation (the segment as
    /// the low-latency stream serves it).
    parts: Vec<Vec<Arc<[u8]>>>,
    whole: Vec<Arc<[u8]>>,
}

impl Origin {
    /// Loads and checks the HLS directory `dir` (see the crate docs). The live
    /// clock starts now.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let root = std::fs::canonicalize(dir).map_err(io_err(dir))?;
        if !root.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_owned(),
            });
        }

        let master_path = root.join(MASTER_PLAYLIST);
        let text = read_bounded_sync(&master_path).map_err(io_err(&master_path))?;
        let master = MasterPlaylist::parse(&text).map_err(|source| Error::Playlist {
            path: master_path.clone(),
            source,
        })?;

        let mut media = HashMap::new();
        let mut ranged = HashMap::new();
        let mut order = Vec::new();
        for uri in master.media_playlists {
            order.push(uri.clone());
            let path = root.join(&uri);
            let text = read_bounded_sync(&path).map_err(io_err(&path))?;
            let playlist = VodPlaylist::parse(&text).map_err(|source| Error::Playlist {
                path: path.clone(),
                source,
            })?;
            check_media_files(&root, &path, &playlist)?;
            let stem = uri.strip_suffix(".m3u8").unwrap_or(&uri).to_owned();
            if let Some(packed) = pack(&root, &path, &stem, &playlist)? {
                ranged.insert(stem, Arc::new(packed));
            }
            media.insert(uri, playlist);
        }

        let demuxed = demuxed(&root, &text, &order, &media).map(Arc::new);
        Ok(Self {
            root,
            media,
            window: playlist::DEFAULT_WINDOW,
            clock_rate: 1.0,
            started: Instant::now(),
            parts: HashMap::new(),
            demuxed,
            ranged,
        })
    }

    /// Cuts every segment into parts of about `target` (see [`fmp4`]) and
    /// serves the live loop as low-latency HLS under `/ll/`. Every media
    /// playlist needs an fMP4 init segment (`EXT-X-MAP`).
    pub fn with_parts(mut self, target: Duration) -> Result<Self, Error> {
        let mut parted = HashMap::new();
        for (uri, vod) in &self.media {
            let path = self.root.join(uri);
            let base = path.parent().unwrap_or(&self.root).to_owned();
            let bad = |reason: String| Error::Parts {
                path: path.clone(),
                reason,
            };
            let init_uri = vod
                .init_uri()
                .ok_or_else(|| bad("no EXT-X-MAP: parts need fragmented MP4".into()))?;
            let init = read_bounded_sync(&base.join(init_uri)).map_err(|e| bad(e.to_string()))?;
            let tracks = Tracks::parse(&init).map_err(|e| bad(format!("{init_uri}: {e}")))?;
            let mut plans = Vec::new();
            let mut parts = Vec::new();
            let mut whole = Vec::new();
            for segment in vod.segments() {
                let cut = |e: Fmp4Error| bad(format!("{}: {e}", segment.uri));
                let bytes = read_bounded_sync(&base.join(&segment.uri))
                    .map_err(|e| bad(format!("{}: {e}", segment.uri)))?;
                let split = fmp4::split(&bytes, &tracks, target).map_err(cut)?;
                plans.push(SegmentParts {
                    starts: split.iter().map(|p| p.start.as_micros() as u64).collect(),
                    independent: split.iter().map(|p| p.independent).collect(),
                });
                whole.push(Arc::from(
                    split
                        .iter()
                        .flat_map(|p| p.bytes.iter().copied())
                        .collect::<Vec<_>>(),
                ));
                parts.push(split.into_iter().map(|p| Arc::from(p.bytes)).collect());
            }
            let stem = uri.strip_suffix(".m3u8").unwrap_or(uri);
            let file_stem = stem.rsplit('/').next().unwrap_or(stem);
            let playlist =
                LowLatency::new(vod.clone(), file_stem, plans).map_err(|e| bad(e.to_string()))?;
            parted.insert(
                stem.to_owned(),
                Arc::new(PartedPlaylist {
                    playlist,
                    parts,
                    whole,
                }),
            );
        }
        self.parts = parted;
        Ok(self)
    }

    /// The low-latency rendering of media playlist `uri`, if
    /// [`with_parts`](Self::with_parts) made one.
    pub fn low_latency(&self, uri: &str) -> Option<&LowLatency> {
        let stem = uri.strip_suffix(".m3u8")?;
        self.parts.get(stem).map(|p| &p.playlist)
    }

    /// Real time until `stream` more stream time has passed.
    fn real_time(&self, stream: Duration) -> Duration {
        Duration::try_from_secs_f64(stream.as_secs_f64() / self.clock_rate).unwrap_or(Duration::MAX)
    }

    /// Segments per live playlist (default [`playlist::DEFAULT_WINDOW`]).
    pub fn with_window(mut self, window: NonZeroUsize) -> Self {
        self.window = window;
        self
    }

    /// Runs the live clock `rate` times faster than real time (default 1.0),
    /// so tests can watch the live edge move without waiting.
    ///
    /// # Panics
    ///
    /// If `rate` is not a finite number greater than zero.
    pub fn with_clock_rate(mut self, rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "clock rate must be finite and > 0, got {rate}"
        );
        self.clock_rate = rate;
        self
    }

    /// The served directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// URIs of the media playlists served live, as the master names them.
    pub fn media_playlists(&self) -> impl Iterator<Item = &str> {
        self.media.keys().map(String::as_str)
    }

    /// The loaded VOD playlist behind a media playlist URI.
    pub fn vod_playlist(&self, uri: &str) -> Option<&VodPlaylist> {
        self.media.get(uri)
    }

    /// Live-clock time since the origin was loaded (scaled by the clock rate).
    pub fn elapsed(&self) -> Duration {
        let secs = self.started.elapsed().as_secs_f64() * self.clock_rate;
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// The live playlist for media playlist `uri` at live-clock time `elapsed`.
    pub fn live_playlist(&self, uri: &str, elapsed: Duration) -> Option<String> {
        self.media
            .get(uri)
            .map(|p| p.render_live(elapsed, self.window))
    }

    /// The most loops `/replay/<loops>/` accepts: the smallest
    /// [`VodPlaylist::max_replay_loops`] of the media playlists, so that every
    /// rendition of a replay has the same length.
    pub fn max_replay_loops(&self) -> u32 {
        self.media
            .values()
            .map(VodPlaylist::max_replay_loops)
            .min()
            .unwrap_or(playlist::MAX_REPLAY_LOOPS)
    }

    /// The HTTP routes (see the crate docs).
    pub fn router(self) -> Router {
        Router::new()
            .route("/vod/{*path}", get(vod))
            .route("/live/{*path}", get(live))
            .route("/replay/{loops}/{*path}", get(replay))
            .route("/ll/{*path}", get(low_latency))
            .route("/range/{*path}", get(range))
            .route("/alt/{*path}", get(alternate))
            .route("/dash/{*path}", get(dash))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(middleware::from_fn(cors))
            .with_state(Arc::new(self))
    }

    /// Binds `addr` (port 0 picks a free one) and serves on a background task;
    /// see [`Running`].
    pub async fn spawn(self, addr: SocketAddr) -> Result<Running, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, self.router())
                .with_graceful_shutdown(async {
                    // Also resolves when the sender is dropped.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Running {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// Serves `origin` on `listener` until an I/O error.
pub async fn serve(origin: Origin, listener: TcpListener) -> io::Result<()> {
    axum::serve(listener, origin.router()).await
}

/// Loads `dir` and serves it on `addr` (port 0 picks a free one) on a
/// background task: the one-line origin for tests.
pub async fn spawn(dir: impl AsRef<Path>, addr: SocketAddr) -> Result<Running, Error> {
    Origin::load(dir)?.spawn(addr).await
}

/// An origin running on a background task; dropping it stops the server.
#[derive(Debug)]
pub struct Running {
    /// The address actually bound.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// `http://<addr>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets requests in flight finish, and
    /// returns the server's result.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Drop cannot wait for a graceful end: abort, which closes the listener.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Adds `Access-Control-Allow-Origin: *` to every response and answers every
/// CORS preflight, whatever the path: the origin serves public, credential-free
/// content to players on any web origin.
async fn cors(req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        // Echo what was asked (e.g. Range from a player): the wildcard does not
        // cover every header name in every browser.
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn vod(State(origin): State<Arc<Origin>>, UrlPath(path): UrlPath<String>) -> Response {
    serve_file(&origin.root, &path).await
}

async fn live(State(origin): State<Arc<Origin>>, UrlPath(path): UrlPath<String>) -> Response {
    if path == MASTER_PLAYLIST {
        return no_cache(serve_file(&origin.root, &path).await);
    }
    if let Some(text) = origin.live_playlist(&path, origin.elapsed()) {
        return no_cache(([(header::CONTENT_TYPE, content_type(&path))], text).into_response());
    }
    if path.ends_with(".m3u8") {
        // Not named by the master: serving the VOD file here would present a
        // VOD playlist as live.
        return StatusCode::NOT_FOUND.into_response();
    }
    serve_file(&origin.root, &path).await
}

async fn replay(
    State(origin): State<Arc<Origin>>,
    UrlPath((loops, path)): UrlPath<(String, String)>,
) -> Response {
    let max = origin.max_replay_loops();
    let loops = match loops.parse::<u64>() {
        Ok(n) if (1..=u64::from(max)).contains(&n) => n,
        _ => {
            let text = format!("loops must be a number from 1 to {max}, got {loops:?}\n");
            return (StatusCode::BAD_REQUEST, text).into_response();
        }
    };
    if path == MASTER_PLAYLIST {
        return serve_file(&origin.root, &path).await;
    }
    if let Some(playlist) = origin.media.get(&path) {
        return match playlist.render_replay(loops) {
            Ok(text) => ([(header::CONTENT_TYPE, content_type(&path))], text).into_response(),
            // Not reached: max_replay_loops is the smallest bound of all.
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
    }
    if path.ends_with(".m3u8") {
        // Not named by the master: the file as is would be a different VOD.
        return StatusCode::NOT_FOUND.into_response();
    }
    serve_file(&origin.root, &path).await
}

async fn low_latency(
    State(origin): State<Arc<Origin>>,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if origin.parts.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "this origin serves no low-latency stream\n",
        )
            .into_response();
    }
    if path == MASTER_PLAYLIST {
        return no_cache(serve_file(&origin.root, &path).await);
    }
    if let Some(stem) = path.strip_suffix(".m3u8") {
        let Some(parted) = origin.parts.get(stem).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let blocking = match Blocking::parse(query.as_deref()) {
            Ok(b) => b,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
        if let Some(msn) = blocking.msn {
            match wait_for(&origin, &parted, msn, blocking.part).await {
                Waited::Ready => {}
                Waited::TooFar => {
                    let text = "_HLS_msn is more than two segments past the live edge\n";
                    return (StatusCode::BAD_REQUEST, text).into_response();
                }
                Waited::TimedOut => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }
        let text = parted.playlist.render(origin.elapsed(), origin.window);
        return no_cache(([(header::CONTENT_TYPE, content_type(&path))], text).into_response());
    }
    if let Some(media) = MediaPath::parse(&path)
        && let Some(parted) = origin.parts.get(media.stem).cloned()
    {
        if !parted.playlist.exists(media.msn, media.part) {
            return StatusCode::NOT_FOUND.into_response();
        }
        if wait_for(&origin, &parted, media.msn, media.part).await != Waited::Ready {
            return StatusCode::NOT_FOUND.into_response();
        }
        let index = (media.msn % parted.parts.len() as u64) as usize;
        let bytes = match media.part {
            None => parted.whole[index].clone(),
            // exists() checked the index.
            Some(j) => parted.parts[index][j as usize].clone(),
        };
        return (
            [(header::CONTENT_TYPE, content_type(&path))],
            Body::from(Bytes::from_owner(bytes)),
        )
            .into_response();
    }
    serve_file(&origin.root, &path).await
}

#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Ready,
    TooFar,
    TimedOut,
}

/// Holds a request until segment `msn` (or its part) is published: at most
/// three target durations, as RFC 8216bis asks of a blocking reload.
async fn range(
    State(origin): State<Arc<Origin>>,
    UrlPath(path): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if path == MASTER_PLAYLIST {
        return serve_file(&origin.root, &path).await;
    }
    if let Some(stem) = path.strip_suffix(".m3u8") {
        return match origin.ranged.get(stem) {
            Some(packed) => (
                [(header::CONTENT_TYPE, content_type(&path))],
                packed.playlist.clone(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let Some(packed) = path.strip_suffix(".mp4").and_then(|s| origin.ranged.get(s)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = packed.file.len() as u64;
    let Some(asked) = headers.get(header::RANGE) else {
        return (
            [
                (header::CONTENT_TYPE, "video/mp4"),
                (header::ACCEPT_RANGES, "bytes"),
            ],
            packed.file.clone(),
        )
            .into_response();
    };
    let asked = asked.to_str().unwrap_or_default();
    match parse_range(asked, len) {
        Ok((first, last)) => {
            let body = packed.file[first as usize..=last as usize].to_vec();
            let content_range = format!("bytes {first}-{last}/{len}");
            let mut response = (StatusCode::PARTIAL_CONTENT, body).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(v) = HeaderValue::from_str(&content_range) {
                h.insert(header::CONTENT_RANGE, v);
            }
            response
        }
        Err(e) => {
            let mut response =
                (StatusCode::RANGE_NOT_SATISFIABLE, format!("{e}\n")).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            response
        }
    }
}

async fn alternate(State(origin): State<Arc<Origin>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(demuxed) = &origin.demuxed else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let kind = [(header::CONTENT_TYPE, content_type(&path))];
    if path == MASTER_PLAYLIST {
        return (kind, demuxed.master.clone()).into_response();
    }
    if let Some(text) = demuxed.playlists.get(&path) {
        return (kind, text.clone()).into_response();
    }
    match demuxed.files.get(&path) {
        Some(bytes) => (kind, bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dash(State(origin): State<Arc<Origin>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(demuxed) = &origin.demuxed else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if path == "manifest.mpd" {
        return (
            [(header::CONTENT_TYPE, "application/dash+xml")],
            demuxed.mpd.clone(),
        )
            .into_response();
    }
    match demuxed.files.get(&path) {
        Some(bytes) => {
            ([(header::CONTENT_TYPE, content_type(&path))], bytes.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The rendering with alternate audio (see [`demuxed`]) of the directory's
/// renditions in master order; `None` if one cannot be taken apart.
fn demuxed(
    root: &Path,
    master: &[u8],
    order: &[String],
    media: &HashMap<String, VodPlaylist>,
) -> Option<Demuxed> {
    let master = std::str::from_utf8(master).ok()?;
    let mut loaded = Vec::new();
    for uri in order {
        let playlist = media.get(uri)?;
        let base = root.join(uri);
        let base = base.parent().unwrap_or(root);
        let init = read_bounded_sync(&base.join(playlist.init_uri()?)).ok()?;
        let segments = playlist
            .segments()
            .iter()
            .map(|s| read_bounded_sync(&base.join(&s.uri)).ok())
            .collect::<Option<Vec<_>>>()?;
        let stem = uri.strip_suffix(".m3u8")?.to_owned();
        loaded.push((stem, playlist, init, segments));
    }
    let muxed: Vec<Muxed<'_>> = loaded
        .iter()
        .map(|(stem, playlist, init, segments)| Muxed {
            stem,
            playlist,
            init,
            segments,
        })
        .collect();
    demux(master, &muxed).ok()
}

/// The byte-range rendering of a media playlist (see [`ranged`]): its init
/// segment and segments read into one file; `None` without an init segment.
fn pack(
    root: &Path,
    path: &Path,
    stem: &str,
    playlist: &VodPlaylist,
) -> Result<Option<Ranged>, Error> {
    let Some(init_uri) = playlist.init_uri() else {
        return Ok(None);
    };
    let base = path.parent().unwrap_or(root);
    let read = |uri: &str| {
        let file = base.join(uri);
        read_bounded_sync(&file).map_err(|source| Error::Io { path: file, source })
    };
    let init = read(init_uri)?;
    let segments = playlist
        .segments()
        .iter()
        .map(|s| read(&s.uri))
        .collect::<Result<Vec<_>, _>>()?;
    let file_stem = stem.rsplit('/').next().unwrap_or(stem);
    Ok(Some(Ranged::new(playlist, file_stem, &init, &segments)))
}

async fn wait_for(origin: &Origin, parted: &PartedPlaylist, msn: u64, part: Option<u64>) -> Waited {
    let limit = Duration::from_secs(3 * parted.playlist.vod().target_duration());
    let deadline = tokio::time::Instant::now() + origin.real_time(limit);
    loop {
        match parted
            .playlist
            .ready_at(msn, part, origin.elapsed(), origin.window)
        {
            None => return Waited::TooFar,
            Some(Availability::Now) => return Waited::Ready,
            Some(Availability::After(wait)) => {
                let until = tokio::time::Instant::now() + origin.real_time(wait);
                if until > deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Waited::TimedOut;
                }
                // A millisecond past: the clock is read again, not assumed.
                tokio::time::sleep_until(until + Duration::from_millis(1)).await;
            }
        }
    }
}

fn no_cache(mut response: Response) -> Response {
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// Serves the file `rel` below `root`, or an error status (never a file
/// outside `root`).
async fn serve_file(root: &Path, rel: &str) -> Response {
    if check_relative_path(rel).is_err() {
        return (StatusCode::BAD_REQUEST, "bad path\n").into_response();
    }
    // Resolve symlinks, then insist on staying inside the root.
    let path = match tokio::fs::canonicalize(root.join(rel)).await {
        Ok(p) if p.starts_with(root) => p,
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return io_status(rel, &e).into_response(),
    };
    match read_bounded(&path).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, content_type(rel))],
            Body::from(bytes),
        )
            .into_response(),
        Err(e) => io_status(rel, &e).into_response(),
    }
}

fn io_status(rel: &str, e: &io::Error) -> StatusCode {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
            StatusCode::NOT_FOUND
        }
        _ => {
            tracing::warn!(path = rel, error = %e, "cannot serve file");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`]; the cap holds even if
/// the file grows while being read.
async fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "not a file"));
    }
    check_size(meta.len())?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await?;
    check_size(bytes.len() as u64)?;
    Ok(bytes)
}

/// [`read_bounded`] for loading, before any runtime is needed.
fn read_bounded_sync(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    check_size(meta.len())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    check_size(bytes.len() as u64)?;
    Ok(bytes)
}

fn check_size(len: u64) -> io::Result<()> {
    if len > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks at load that every segment and init segment of `playlist` (at
/// `playlist_path`) is a servable file, so a broken directory fails at start
/// rather than mid-stream.
fn check_media_files(
    root: &Path,
    playlist_path: &Path,
    playlist: &VodPlaylist,
) -> Result<(), Error> {
    // URIs are relative to the playlist's own directory (inside root: the
    // master's URIs passed check_relative_path).
    let base = playlist_path.parent().unwrap_or(root);
    let uris = playlist
        .init_uri()
        .into_iter()
        .chain(playlist.segments().iter().map(|s| s.uri.as_str()));
    for uri in uris {
        let path = base.join(uri);
        let bad = |reason: String| Error::BadMedia {
            playlist: playlist_path.to_owned(),
            uri: uri.to_owned(),
            path: path.clone(),
            reason,
        };
        let resolved = std::fs::canonicalize(&path).map_err(|e| bad(e.to_string()))?;
        if !resolved.starts_with(root) {
            return Err(bad("resolves outside the served directory".into()));
        }
        let meta = std::fs::metadata(&resolved).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        check_size(meta.len()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// `Content-Type` by file extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mp4" | "m4s" | "m4v") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("ts") => "video/mp2t",
        Some("aac") => "audio/aac",
        Some("vtt") => "text/vtt",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("v/a.M4S"), "video/mp4");
        assert_eq!(content_type("init.mp4"), "video/mp4");
        assert_eq!(content_type("a.ts"), "video/mp2t");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
