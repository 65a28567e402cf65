//! `meshcast demo`: the whole local deployment as real processes, driven from
//! outside like a browser would (HTTP for the page, WebTransport for segments).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use meshcast_proto::{SegmentId, StreamId};
use meshcast_relay::wellknown::WellKnown;
use meshcast_relay::{Client, ClientEvent};
use wtransport::tls::Sha256Digest;

const INDEX: &str = "<!doctype html><title>meshcast demo test</title>\n";

/// A child process killed on drop: made before anything can panic, so a
/// failed start leaves no `meshcast demo` (and its children) behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A running `meshcast demo`, killed on drop (its children die with it).
struct Demo {
    child: Running,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// `pid <role> <pid>` lines.
    pids: Vec<(String, u32)>,
    stream: StreamId,
    well_known: String,
    page: String,
    _web: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo with a tiny page of our own and reads its lines up to `demo <url>`.
    fn start(extra: &[&str]) -> Demo {
        let web = tempfile::tempdir().unwrap();
        std::fs::write(web.path().join("index.html"), INDEX).unwrap();
        std::fs::write(web.path().join("app.mjs"), "export {};\n").unwrap();
        let mut child = Running(
            Command::new(env!("CARGO_BIN_EXE_meshcast"))
                .args(["demo", "--listen", "127.0.0.1:0", "--web"])
                .arg(web.path())
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start meshcast demo"),
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                eprint!("{text}");
                collected.lock().unwrap().push_str(&text);
            }
        });
        let mut pids = Vec::new();
        let mut stream = None;
        let mut well_known = None;
        let deadline = Instant::now() + Duration::from_secs(90);
        let page = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `demo` line; stderr:\n{}", stderr.lock().unwrap()));
            let (key, rest) = line.split_once(' ').expect("`key value` lines");
            match key {
                "pid" => {
                    let (role, pid) = rest.split_once(' ').expect("pid <role> <pid>");
                    pids.push((role.to_string(), pid.parse().expect("a pid")));
                }
                "stream" => stream = Some(rest.parse().expect("a stream id")),
                // The same media as DASH, published beside it.
                "stream-dash" => {
                    let _: meshcast_proto::StreamId = rest.parse().expect("a stream id");
                }
                "relay" => well_known = Some(rest.to_string()),
                // The edge node's gateway (--gateways 2), which pages find
                // through its gateway record.
                "gateway" => {
                    let (role, url) = rest.split_once(' ').expect("gateway <role> <url>");
                    assert_eq!(role, "node1");
                    assert!(url.starts_with("https://"), "{url}");
                }
                "demo" => break rest.to_string(),
                other => panic!("unexpected line {other} {rest}"),
            }
        };
        let roles: Vec<&str> = pids.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            roles,
            [
                "origin",
                "publisher",
                "publisher-dash",
                "node1",
                "node2",
                "node3",
                "relay"
            ]
        );
        Demo {
            child,
            lines,
            stderr,
            pids,
            stream: stream.expect("a `stream` line before `demo`"),
            well_known: well_known.expect("a `relay` line before `demo`"),
            page,
            _web: web,
        }
    }

    fn pid(&self, role: &str) -> u32 {
        self.pids.iter().find(|(r, _)| r == role).expect(role).1
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The demo's temporary folder, from its "logs in DIR/logs" line.
    fn temp_dir(&self) -> PathBuf {
        let text = self.stderr();
        let logs = text
            .lines()
            .find_map(|l| l.strip_prefix("demo: logs in "))
            .and_then(|rest| rest.split(' ').next())
            .expect("a `logs in` line");
        Path::new(logs).parent().unwrap().to_path_buf()
    }

    /// SIGINT, then the exit status within `limit`.
    fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop within {limit:?} of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) with a pid this test was given; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Runtime::new().unwrap()
}

/// The status line of a raw HTTP/1.1 request for `target`, sent as is (no
/// client-side normalisation of `..`).
fn raw_status(page: &str, target: &str) -> u16 {
    let url = url::Url::parse(page).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut tcp = TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        tcp,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(tcp).read_line(&mut status).unwrap();
    status
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"))
}

fn hashes(hex_hashes: &[String]) -> Vec<Sha256Digest> {
    hex_hashes
        .iter()
        .map(|h| Sha256Digest::new(hex::decode(h).unwrap().try_into().unwrap()))
        .collect()
}

async fn get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let response = http.get(url).send().await.expect(url);
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    let body = get(http, url).await.bytes().await.expect(url);
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("JSON of {url}: {e}"))
}

/// Connects a native client to the gateway a well-known URL describes.
async fn connect(http: &reqwest::Client, well_known: &str, stream: StreamId) -> Client {
    let info: WellKnown = get_json(http, well_known).await;
    Client::connect(
        &info.webtransport,
        &hashes(&info.certificate_hashes),
        stream,
        "",
        Duration::from_secs(10),
    )
    .await
    .expect("a session with the relay")
}

/// Fetches `id` through `client` and checks it against the origin's file,
/// fetched over HTTP at the header's uri resolved against its rendition's playlist.
async fn fetch_and_compare(http: &reqwest::Client, client: &mut Client, id: SegmentId) {
    let (header, body) = client
        .fetch(id, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("fetching {id}: {e}"));
    let url = client
        .descriptor()
        .descriptor()
        .segment_url(id.rendition, &header.info().uri)
        .expect("the segment's rendition is in the descriptor");
    let origin = get(http, &url).await.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert_eq!(body, origin, "{id} differs from the origin's {url}");
}

#[test]
fn demo_serves_the_page_and_the_stream_then_stops_every_process() {
    let mut demo = Demo::start(&["--gateways", "2"]);
    let rt = runtime();
    let http = reqwest::Client::new();
    rt.block_on(async {
        // The page, with content types and no caching.
        let index = get(&http, &demo.page).await;
        let headers = index.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(index.text().await.unwrap(), INDEX);
        let module = get(&http, &format!("{}app.mjs", demo.page)).await;
        assert!(
            module.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );

        // Where everything is.
        let config: serde_json::Value = get_json(&http, &format!("{}config.json", demo.page)).await;
        assert_eq!(config["wellKnown"], demo.well_known.as_str());
        assert_eq!(config["stream"], demo.stream.to_string().as_str());
        assert_eq!(config["token"], "");
        assert_eq!(config["gateways"], 2);
        assert_eq!(config["tamperEvery"], 0);
        let playlist = config["playlist"].as_str().expect("playlist");
        assert!(
            playlist.starts_with("http://127.0.0.1:") && playlist.ends_with("/live/master.m3u8"),
            "{playlist}"
        );
        get(&http, playlist).await;

        // The relay serves the live edge, byte for byte the origin's, and
        // names the node's gateway, which serves it too.
        let mut client = connect(&http, &demo.well_known, demo.stream).await;
        assert_eq!(client.descriptor().descriptor().origin_url, playlist);
        let edge: Vec<SegmentId> = client.live_edge().iter().map(|h| h.id()).collect();
        assert!(!edge.is_empty(), "Welcome named no live edge");
        for id in &edge {
            fetch_and_compare(&http, &mut client, *id).await;
            if id.sequence > 0 {
                let previous = SegmentId {
                    sequence: id.sequence - 1,
                    ..*id
                };
                fetch_and_compare(&http, &mut client, previous).await;
            }
        }
        let gateways = client.gateways().to_vec();
        assert_eq!(gateways.len(), 1, "Welcome lists the node's gateway");
        let hashes: Vec<Sha256Digest> = gateways[0]
            .cert_hashes
            .iter()
            .map(|h| Sha256Digest::new(h.as_ref().try_into().expect("32-byte hash")))
            .collect();
        let mut second = Client::connect(
            &gateways[0].url,
            &hashes,
            demo.stream,
            "",
            Duration::from_secs(10),
        )
        .await
        .expect("a session with the node's gateway");
        fetch_and_compare(&http, &mut second, edge[0]).await;
    });

    // No way out of the page's folder.
    for target in [
        "/..%2fCargo.toml",
        "/../Cargo.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%5cCargo.toml",
        "//etc/passwd",
    ] {
        let status = raw_status(&demo.page, target);
        assert!((400..500).contains(&status), "{target}: {status}");
    }

    // The demo survives its relay (browser tests stop it on purpose).
    signal(demo.pid("relay"), libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !demo.stderr().contains("relay stopped") {
        assert!(Instant::now() < deadline, "no `relay stopped` line");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(demo.child.try_wait().unwrap().is_none(), "the demo ended");

    // Ctrl-C stops everything and cleans up.
    let temp = demo.temp_dir();
    assert!(temp.is_dir());
    let status = demo.interrupt(Duration::from_secs(10));
    assert!(status.success(), "{status}; stderr:\n{}", demo.stderr());
    for (role, pid) in &demo.pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the {role} ({pid}) outlived the demo"
        );
    }
    assert!(!temp.exists(), "{} was left behind", temp.display());
    assert!(
        demo.lines.try_recv().is_err(),
        "`demo` was not the last line"
    );
}

#[test]
fn a_tampering_relay_is_caught_by_the_client() {
    let mut demo = Demo::start(&["--gateways", "1", "--tamper-every", "1"]);
    let rt = runtime();
    let http = reqwest::Client::new();
    rt.block_on(async {
        let config: serde_json::Value = get_json(&http, &format!("{}config.json", demo.page)).await;
        assert_eq!(config["tamperEvery"], 1);
        assert_eq!(config["gateways"], 1);
        let mut client = connect(&http, &demo.well_known, demo.stream).await;
        assert!(client.gateways().is_empty());
        let id = client.live_edge().first().expect("a live edge").id();
        let wanted = client
            .request(id, 0, Duration::from_secs(10))
            .await
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match client.next_event().await.expect("the session stays open") {
                    ClientEvent::Rejected { request_id, reason } if request_id == wanted => {
                        return reason;
                    }
                    ClientEvent::Delivered { request_id, .. } if request_id == wanted => {
                        panic!("a corrupted segment passed verification")
                    }
                    ClientEvent::Error {
                        request_id,
                        message,
                        ..
                    } if request_id == wanted => panic!("the relay refused: {message}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("an answer to the request");
        assert!(!outcome.is_empty());
    });
    let status = demo.interrupt(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}
