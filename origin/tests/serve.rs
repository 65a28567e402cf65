//! The origin over a real socket on 127.0.0.1, serving `media/test-stream`.
//!
//! Requests are written by hand on a `TcpStream` (HTTP/1.1, `Connection:
//! close`) so that paths reach the server exactly as written: an HTTP client
//! library would normalise `..` away before sending it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshcast_origin::{Error, Origin, Running, spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn stream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../media/test-stream")
}

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// One HTTP/1.1 request with `target` sent verbatim.
async fn request(addr: SocketAddr, method: &str, target: &str, extra: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read");

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = std::str::from_utf8(&data[..eol]).expect("hex");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, &[]).await
}

fn file(name: &str) -> Vec<u8> {
    std::fs::read(stream_dir().join(name)).expect("read test-stream file")
}

/// Media sequence, segment URIs and EXT-X-DISCONTINUITY count of a live playlist.
fn parse_live(text: &str) -> (u64, Vec<String>, usize) {
    let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("live playlist parses");
    assert!(!p.end_list, "live playlist has no ENDLIST:\n{text}");
    assert_eq!(p.playlist_type, None, "{text}");
    assert_eq!(p.target_duration, 2);
    assert!(text.contains("#EXT-X-MAP:URI=\"init_"), "{text}");
    let uris = p.segments.iter().map(|s| s.uri.clone()).collect();
    let discontinuities = p.segments.iter().filter(|s| s.discontinuity).count();
    (p.media_sequence, uris, discontinuities)
}

async fn start() -> Running {
    spawn(stream_dir(), any_port())
        .await
        .expect("origin starts")
}

#[tokio::test]
async fn serves_vod_files_unchanged() {
    let origin = start().await;
    for (name, content_type) in [
        ("master.m3u8", "application/vnd.apple.mpegurl"),
        ("360p.m3u8", "application/vnd.apple.mpegurl"),
        ("init_180p.mp4", "video/mp4"),
        ("180p_04.m4s", "video/mp4"),
    ] {
        let r = get(origin.addr, &format!("/vod/{name}")).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type"), Some(content_type), "{name}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{name}");
        assert_eq!(r.body, file(name), "{name}");
    }
    let vod = get(origin.addr, "/vod/360p.m3u8").await.text();
    assert!(vod.contains("#EXT-X-ENDLIST"));

    let missing = get(origin.addr, "/vod/360p_99.m4s").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("access-control-allow-origin"), Some("*"));
    assert_eq!(get(origin.addr, "/elsewhere").await.status, 404);
}

/// `/range/`: each rendition one file, its playlist byte ranges of it, and
/// every range the segment file it stands for.
#[tokio::test]
async fn byte_ranges_of_one_file_are_the_segments() {
    let origin = start().await;
    let master = get(origin.addr, "/range/master.m3u8").await;
    assert_eq!(master.body, file("master.m3u8"));
    let text = get(origin.addr, "/range/360p.m3u8").await.text();
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert!(playlist.end_list);
    let map = playlist.segments[0].map.clone().expect("EXT-X-MAP");
    assert_eq!(map.uri, "360p.mp4");
    let whole = get(origin.addr, "/range/360p.mp4").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));

    let mut expected = vec![(
        map.byte_range.expect("a range").length,
        "init_360p.mp4".to_string(),
    )];
    let vod = m3u8_rs::parse_media_playlist_res(&file("360p.m3u8")[..]).expect("parses");
    for (ranged, original) in playlist.segments.iter().zip(&vod.segments) {
        assert_eq!(ranged.uri, "360p.mp4");
        let range = ranged.byte_range.clone().expect("EXT-X-BYTERANGE");
        expected.push((range.length, original.uri.clone()));
    }
    assert_eq!(playlist.segments.len(), vod.segments.len());
    // Offsets are implicit after the first segment: they follow on.
    let mut offset = 0u64;
    for (length, name) in expected {
        let last = offset + length - 1;
        let r = request(
            origin.addr,
            "GET",
            "/range/360p.mp4",
            &[("Range", &format!("bytes={offset}-{last}"))],
        )
        .await;
        assert_eq!(r.status, 206, "{name}");
        let total = whole.body.len();
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {offset}-{last}/{total}").as_str())
        );
        assert_eq!(r.body, file(&name), "{name}");
        offset += length;
    }
    assert_eq!(offset as usize, whole.body.len());

    let past = request(
        origin.addr,
        "GET",
        "/range/360p.mp4",
        &[("Range", &format!("bytes={offset}-"))],
    )
    .await;
    assert_eq!(past.status, 416);
    assert_eq!(get(origin.addr, "/range/nope.mp4").await.status, 404);
    assert_eq!(get(origin.addr, "/range/nope.m3u8").await.status, 404);
}

/// `/alt/`: video-only variants and one alternate audio rendition that
/// every variant names, each file holding one track.
#[tokio::test]
async fn alternate_audio_is_a_rendition_of_its_own() {
    let origin = start().await;
    let master = get(origin.addr, "/alt/master.m3u8").await.text();
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("parses");
    assert_eq!(parsed.alternatives.len(), 2, "{master}");
    let audio = &parsed.alternatives[0];
    assert_eq!(audio.uri.as_deref(), Some("audio.m3u8"));
    assert_eq!(audio.group_id, "aud");
    assert_eq!(parsed.variants.len(), 2);
    assert!(
        parsed
            .variants
            .iter()
            .all(|v| v.audio.as_deref() == Some("aud") && v.subtitles.as_deref() == Some("subs"))
    );
    let subs = &parsed.alternatives[1];
    assert_eq!(subs.uri.as_deref(), Some("subs.m3u8"));
    let text = get(origin.addr, "/alt/subs.m3u8").await.text();
    let media = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert_eq!(media.segments.len(), 10);
    let cue = get(origin.addr, &format!("/alt/{}", media.segments[3].uri)).await;
    assert_eq!(cue.header("content-type"), Some("text/vtt"));
    let cue = cue.text();
    assert!(cue.starts_with("WEBVTT"), "{cue}");
    assert!(
        cue.contains("00:00:06.000 --> 00:00:08.000\nSegment 3"),
        "{cue}"
    );
    for (playlist, handler) in [
        ("360p.m3u8", b"vide"),
        ("180p.m3u8", b"vide"),
        ("audio.m3u8", b"soun"),
    ] {
        let text = get(origin.addr, &format!("/alt/{playlist}")).await.text();
        let media = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
        assert_eq!(media.segments.len(), 10, "{playlist}");
        let init_uri = media.segments[0].map.clone().expect("EXT-X-MAP").uri;
        let init = get(origin.addr, &format!("/alt/{init_uri}")).await;
        assert_eq!(init.status, 200);
        let tracks = meshcast_origin::fmp4::Tracks::parse(&init.body).expect("an init segment");
        let handlers: Vec<[u8; 4]> = tracks.all().iter().map(|t| t.handler).collect();
        assert_eq!(handlers, [*handler], "{playlist}");
        for segment in &media.segments {
            let r = get(origin.addr, &format!("/alt/{}", segment.uri)).await;
            assert_eq!(r.status, 200, "{}", segment.uri);
            assert!(!r.body.is_empty());
        }
    }
    assert_eq!(get(origin.addr, "/alt/nope.m4s").await.status, 404);
}

#[tokio::test]
async fn live_playlist_advances_and_its_segments_are_the_files() {
    let origin = start().await;

    let master = get(origin.addr, "/live/master.m3u8").await;
    assert_eq!(master.status, 200);
    assert_eq!(master.body, file("master.m3u8"));
    assert_eq!(master.header("cache-control"), Some("no-cache"));

    let first = get(origin.addr, "/live/360p.m3u8").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));
    let (seq1, uris1, _) = parse_live(&first.text());
    assert_eq!(uris1.len(), 6, "a full window at once");

    // Segments are 2 s: after 2.1 s at least one more is published.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (seq2, uris2, _) = parse_live(&get(origin.addr, "/live/360p.m3u8").await.text());
    assert!(seq2 > seq1, "media sequence advanced: {seq1} -> {seq2}");
    assert_eq!(uris2.len(), 6);

    let mut to_fetch: Vec<String> = uris1.into_iter().chain(uris2).collect();
    to_fetch.push("init_360p.mp4".into());
    for uri in to_fetch {
        let r = get(origin.addr, &format!("/live/{uri}")).await;
        assert_eq!(r.status, 200, "{uri}");
        assert_eq!(r.header("content-type"), Some("video/mp4"), "{uri}");
        assert_eq!(r.body, file(&uri), "{uri} is byte-identical to the file");
    }

    // Both renditions are live; a playlist the master does not name is not.
    let (_, uris180, _) = parse_live(&get(origin.addr, "/live/180p.m3u8").await.text());
    assert!(uris180.iter().all(|u| u.starts_with("180p_")));
    assert_eq!(get(origin.addr, "/live/other.m3u8").await.status, 404);
}

#[tokio::test]
async fn replay_is_a_long_vod_of_the_files() {
    let origin = start().await;

    let master = get(origin.addr, "/replay/15/master.m3u8").await;
    assert_eq!(master.status, 200);
    assert_eq!(master.body, file("master.m3u8"));
    assert_eq!(master.header("access-control-allow-origin"), Some("*"));

    for rendition in ["360p", "180p"] {
        let r = get(origin.addr, &format!("/replay/15/{rendition}.m3u8")).await;
        assert_eq!(r.status, 200, "{rendition}");
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        let text = r.text();
        let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("replay parses");
        assert!(p.end_list, "{text}");
        assert_eq!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert_eq!(p.media_sequence, 0);
        assert_eq!(p.segments.len(), 150, "15 loops of 10 segments");
        let seconds: f32 = p.segments.iter().map(|s| s.duration).sum();
        assert!((seconds - 300.0).abs() < 0.01, "five minutes: {seconds}");
        let tags: Vec<usize> = (0..150).filter(|&k| p.segments[k].discontinuity).collect();
        assert_eq!(tags, (1..15).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(p.segments[149].uri, format!("{rendition}_09.m4s"));
        assert!(text.contains(&format!("#EXT-X-MAP:URI=\"init_{rendition}.mp4\"")));
    }
    let hundred = get(origin.addr, "/replay/10/180p.m3u8").await.text();
    assert_eq!(hundred.matches("#EXTINF").count(), 100);

    for name in ["init_360p.mp4", "360p_07.m4s"] {
        let r = get(origin.addr, &format!("/replay/15/{name}")).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type"), Some("video/mp4"), "{name}");
        assert_eq!(r.body, file(name), "{name} is byte-identical to the file");
    }
    assert_eq!(get(origin.addr, "/replay/15/other.m3u8").await.status, 404);
    assert_eq!(get(origin.addr, "/replay/15/360p_99.m4s").await.status, 404);
    assert_eq!(
        get(origin.addr, "/replay/15/../Cargo.toml").await.status,
        400
    );

    for loops in ["0", "1001", "-1", "x", "1e3", "99999999999999999999999"] {
        for name in ["360p.m3u8", "master.m3u8", "360p_00.m4s"] {
            let r = get(origin.addr, &format!("/replay/{loops}/{name}")).await;
            assert_eq!(r.status, 400, "/replay/{loops}/{name}");
            assert!(r.text().contains("from 1 to 1000"), "{}", r.text());
            assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        }
    }
    assert_eq!(get(origin.addr, "/replay/1000/360p.m3u8").await.status, 200);
    assert_eq!(get(origin.addr, "/replay/1/360p.m3u8").await.status, 200);
}

#[tokio::test]
async fn fast_clock_crosses_the_loop_boundary() {
    let origin = Origin::load(stream_dir())
        .expect("loads")
        .with_clock_rate(20.0)
        .spawn(any_port())
        .await
        .expect("starts");
    // The 20 s loop restarts at live time 8 s (a 12 s head start); at 20× that
    // is 0.4 s of real time, and the boundary stays in the window until 1 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = get(origin.addr, "/live/360p.m3u8").await.text();
    let (seq, uris, discontinuities) = parse_live(&text);
    assert!(seq >= 4, "{text}");
    assert_eq!(discontinuities, 1, "{text}");
    assert!(uris.contains(&"360p_09.m4s".into()) && uris.contains(&"360p_00.m4s".into()));
    origin.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn refuses_path_traversal() {
    let origin = start().await;
    let secret = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("read Cargo.toml");
    for target in [
        "/vod/../Cargo.toml",
        "/vod/../../origin/Cargo.toml",
        "/live/../../origin/Cargo.toml",
        "/vod/%2e%2e/%2e%2e/origin/Cargo.toml",
        "/live/..%2f..%2forigin%2fCargo.toml",
        "/vod//etc/passwd",
        "/vod/%2fetc%2fpasswd",
        "/vod/..\\..\\origin\\Cargo.toml",
        "/vod/./master.m3u8",
    ] {
        let r = get(origin.addr, target).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{target}: status {}",
            r.status
        );
        assert_ne!(r.body, secret, "{target}");
        assert!(!r.text().contains("root:"), "{target}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
}

#[tokio::test]
async fn refuses_symlinks_out_of_the_directory() {
    let outside = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(outside.path(), b"secret").expect("write");
    let dir = copy_stream();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("leak.m4s")).expect("symlink");
    let origin = spawn(dir.path(), any_port()).await.expect("starts");
    for target in ["/vod/leak.m4s", "/live/leak.m4s"] {
        let r = get(origin.addr, target).await;
        assert_eq!(r.status, 404, "{target}");
        assert_ne!(r.body, b"secret");
    }
}

#[tokio::test]
async fn cors_preflight_and_head() {
    let origin = start().await;
    let r = request(
        origin.addr,
        "OPTIONS",
        "/live/360p.m3u8",
        &[
            ("Origin", "http://example.invalid"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("range"));
    assert!(
        r.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("GET"))
    );

    let head = request(origin.addr, "HEAD", "/vod/180p_00.m4s", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(file("180p_00.m4s").len().to_string().as_str())
    );
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn stops_on_shutdown_and_on_drop() {
    let origin = start().await;
    let addr = origin.addr;
    assert_eq!(get(addr, "/vod/master.m3u8").await.status, 200);
    origin.shutdown().await.expect("clean shutdown");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "closed after shutdown"
    );

    let origin = start().await;
    let addr = origin.addr;
    drop(origin);
    // The aborted task releases the listener when the runtime next polls it.
    let mut closed = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "closed after drop");
}

/// A temporary copy of the test stream, to break on purpose.
fn copy_stream() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(stream_dir()).expect("list test-stream") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

#[test]
fn load_errors_name_the_file() {
    let err = |dir: &Path| Origin::load(dir).expect_err("must not load").to_string();

    let missing = Path::new("/nonexistent/meshcast-stream");
    let e = err(missing);
    assert!(e.contains("/nonexistent/meshcast-stream"), "{e}");

    let not_dir = tempfile::NamedTempFile::new().expect("temp file");
    assert!(matches!(
        Origin::load(not_dir.path()),
        Err(Error::NotADirectory { .. })
    ));

    let empty = tempfile::tempdir().expect("temp dir");
    let e = err(empty.path());
    assert!(e.contains("master.m3u8"), "{e}");

    let dir = copy_stream();
    std::fs::write(
        dir.path().join("master.m3u8"),
        "#EXTM3U\n#EXTINF:2,\na.m4s\n",
    )
    .expect("write");
    let e = err(dir.path());
    assert!(
        e.contains("master.m3u8") && e.contains("not a master playlist"),
        "{e}"
    );

    let dir = copy_stream();
    std::fs::write(
        dir.path().join("180p.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n",
    )
    .expect("write");
    let e = err(dir.path());
    assert!(e.contains("180p.m3u8") && e.contains("no segment"), "{e}");

    let dir = copy_stream();
    std::fs::remove_file(dir.path().join("360p.m3u8")).expect("remove");
    let e = err(dir.path());
    assert!(e.contains("360p.m3u8"), "{e}");

    let dir = copy_stream();
    std::fs::remove_file(dir.path().join("360p_07.m4s")).expect("remove");
    let e = err(dir.path());
    assert!(e.contains("360p.m3u8") && e.contains("360p_07.m4s"), "{e}");

    let dir = copy_stream();
    std::fs::remove_file(dir.path().join("init_180p.mp4")).expect("remove");
    let e = err(dir.path());
    assert!(e.contains("init_180p.mp4"), "{e}");

    // The untouched copy loads, and names both renditions.
    let origin = Origin::load(copy_stream().path()).expect("loads");
    let mut names: Vec<&str> = origin.media_playlists().collect();
    names.sort_unstable();
    assert_eq!(names, ["180p.m3u8", "360p.m3u8"]);
}

/// The value of `URI="…"` in the playlist's `#EXT-X-PRELOAD-HINT`.
fn preload_hint(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("a preload hint in\n{text}"));
    line.split('"').nth(1).expect("quoted URI").to_owned()
}

#[tokio::test]
async fn low_latency_parts_block_until_published_and_make_up_their_segment() {
    let origin = Origin::load(stream_dir())
        .expect("loads")
        .with_parts(Duration::from_millis(500))
        .expect("the committed stream cuts into parts")
        .spawn(any_port())
        .await
        .expect("starts");
    let addr = origin.addr;

    let first = get(addr, "/ll/360p.m3u8").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let text = first.text();
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.520000\n"),
        "{text}"
    );
    assert!(text.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
    let hint = preload_hint(&text);
    let (msn, part) = hint
        .strip_prefix("360p/")
        .and_then(|h| h.strip_suffix(".m4s"))
        .and_then(|h| h.split_once('.'))
        .map(|(m, p)| (m.parse::<u64>().unwrap(), p.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("hint {hint:?}"));

    // A blocking reload for the hinted part answers once it is listed.
    let reload = get(
        addr,
        &format!("/ll/360p.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    )
    .await;
    assert_eq!(reload.status, 200);
    assert!(
        reload.text().contains(&format!("URI=\"{hint}\"")),
        "{}",
        reload.text()
    );

    // Every part of the next segment, each asked for before it is out, and
    // the segment itself: the parts make it up exactly.
    let next = msn + 1;
    let mut joined = Vec::new();
    for j in 0..4 {
        let part = get(addr, &format!("/ll/360p/{next}.{j}.m4s")).await;
        assert_eq!(part.status, 200, "part {next}.{j}");
        assert_eq!(part.header("content-type"), Some("video/mp4"));
        assert_eq!(&part.body[4..8], b"moof", "part {next}.{j} is a fragment");
        joined.extend_from_slice(&part.body);
    }
    let whole = get(addr, &format!("/ll/360p/{next}.m4s")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, joined);
    // The parts hold the VOD segment's media: as many bytes, less its index
    // boxes (styp, sidx) and with a moof per part.
    let vod = file(&format!("360p_{:02}.m4s", next % 10));
    let diff = vod.len().abs_diff(joined.len());
    assert!(diff < 2_000, "{} against {}", joined.len(), vod.len());

    // Bad requests.
    for (target, status) in [
        (format!("/ll/360p.m3u8?_HLS_msn={}", next + 10), 400),
        ("/ll/360p.m3u8?_HLS_part=1".to_owned(), 400),
        ("/ll/360p.m3u8?_HLS_msn=x".to_owned(), 400),
        (format!("/ll/360p/{}.m4s", next + 10), 404),
        (format!("/ll/360p/{next}.4.m4s"), 404),
        ("/ll/480p.m3u8".to_owned(), 404),
        ("/ll/480p/1.m4s".to_owned(), 404),
    ] {
        assert_eq!(get(addr, &target).await.status, status, "{target}");
    }
    assert_eq!(
        get(addr, "/ll/init_360p.mp4").await.body,
        file("init_360p.mp4")
    );
    assert_eq!(get(addr, "/ll/master.m3u8").await.body, file("master.m3u8"));
}

#[tokio::test]
async fn low_latency_needs_parts_and_fragmented_mp4() {
    let origin = start().await;
    assert_eq!(get(origin.addr, "/ll/360p.m3u8").await.status, 404);

    let dir = tempfile::tempdir().unwrap();
    meshcast_origin::synthetic::write(dir.path(), 1_000_000, Duration::from_secs(2), 3).unwrap();
    let err = Origin::load(dir.path())
        .unwrap()
        .with_parts(Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(err, Error::Parts { .. }), "{err}");
    assert!(err.to_string().contains("EXT-X-MAP"), "{err}");
}
