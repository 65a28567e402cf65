//! `/metrics` and JSON logs of real `meshcast` processes: an origin, a
//! publisher, a node and a relay on 127.0.0.1, a native client fetching
//! through the relay, and the exposition format parsed properly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meshcast_proto::{SegmentId, StreamId};
use meshcast_relay::Client;

use crate::proc::{Proc, keygen};
use wtransport::tls::Sha256Digest;

const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const ANY: &str = "127.0.0.1:0";

/// One sample of the Prometheus text exposition format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page: the samples and the declared `# TYPE` of each family.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Exposition {
    /// Parses the text format (version 0.0.4): `# HELP`/`# TYPE` lines, and
    /// samples `name{label="value",...} value [timestamp]` with `\\`, `\"`
    /// and `\n` escapes in label values. Anything else is an error.
    fn parse(text: &str) -> Result<Exposition, String> {
        let mut out = Exposition::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        return Err(format!("line {}: bad TYPE: {line}", n + 1));
                    };
                    out.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|e| format!("line {}: {e}: {line}", n + 1))?;
            out.samples.push(sample);
        }
        Ok(out)
    }

    /// The value of the sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`], but the sample must be there.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.samples))
    }

    /// The sum over every sample of `name` whose labels include `labels`.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            match chars.peek() {
                Some(&(i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|&(_, c)| is_name_char(c, false)) {
                key.push(c);
            }
            if key.is_empty() || chars.next().map(|(_, c)| c) != Some('=') {
                return Err("bad label name".into());
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            if chars.next_if(|(_, c)| *c == ',').is_none()
                && !matches!(chars.peek(), Some((_, '}')))
            {
                return Err("expected , or } after a label".into());
            }
        }
        let consumed = consumed.ok_or("unterminated label set")?;
        rest = &after[consumed..];
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next() {
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some("NaN") => f64::NAN,
        Some(v) => v.parse().map_err(|_| format!("bad value {v:?}"))?,
        None => return Err("no value".into()),
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_rejects_garbage() {
    let text = "# HELP a_total Things.\n# TYPE a_total counter\n\
                a_total{x=\"1\",y=\"q\\\"uo\\\\te\\n\"} 3\n\
                b 2.5 1700000000000\n\
                c_bucket{le=\"+Inf\"} 7\n\
                d{} NaN\n";
    let page = Exposition::parse(text).unwrap();
    assert_eq!(page.types["a_total"], "counter");
    assert_eq!(
        page.get("a_total", &[("x", "1"), ("y", "q\"uo\\te\n")]),
        Some(3.0)
    );
    assert_eq!(page.get("a_total", &[("x", "1")]), None);
    assert_eq!(page.sum("a_total", &[("x", "1")]), 3.0);
    assert_eq!(page.get("b", &[]), Some(2.5));
    assert_eq!(page.get("c_bucket", &[("le", "+Inf")]), Some(7.0));
    assert!(page.get("d", &[]).unwrap().is_nan());
    for bad in [
        "a{x=1} 2",
        "a{x=\"1\" 2",
        "a{x=\"1\"} two",
        "a{x=\"1\",x=\"2\"} 2",
        "{x=\"1\"} 2",
        "a 1 2 3",
        "a",
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// GETs a `/metrics` page and parses it.
pub(crate) async fn scrape(http: &reqwest::Client, url: &str) -> Exposition {
    let response = http.get(url).send().await.expect(url);
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = response.text().await.unwrap();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{url}: {e}\n{text}"))
}

/// A `metrics http://ADDR/metrics` line, checked to name a real port.
fn metrics_url(proc: &mut Proc) -> String {
    let url = proc.line("metrics");
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{} printed metrics {url}", proc.name));
    assert_ne!(port, 0, "port 0 printed instead of the real one");
    url
}

/// JSON log lines of a process: every stderr line must be one JSON object.
fn json_logs(proc: &Proc) -> Vec<serde_json::Value> {
    proc.stderr()
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", proc.name));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// Log lines whose message is `message`, logged inside a span named `span`.
fn in_span<'a>(
    logs: &'a [serde_json::Value],
    message: &str,
    span: &str,
) -> Vec<&'a serde_json::Value> {
    logs.iter()
        .filter(|l| l["fields"]["message"] == message && l["span"]["name"] == span)
        .collect()
}

#[test]
fn node_and_relay_metrics_move_with_the_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("media/test-stream");

    let mut origin = Proc::start(
        "origin",
        &["origin", "--dir", media.to_str().unwrap(), "--listen", ANY],
        "warn",
    );
    let playlist = format!("{}/live/master.m3u8", origin.line("origin"));
    keygen(Path::new(&d("publisher.key")));

    let mut publisher = Proc::start(
        "publisher",
        &[
            "publish",
            "--origin",
            &playlist,
            "--key",
            &d("publisher.key"),
            "--name",
            "metrics",
            "--data-dir",
            &d("pub"),
            "--listen",
            QUIC,
            "--metrics-listen",
            ANY,
        ],
        "warn",
    );
    let publisher_metrics = metrics_url(&mut publisher);
    let publisher_peer = publisher.line("peer");
    let bootstrap = publisher.line("listening");
    let stream: StreamId = publisher.line("stream").parse().expect("a stream id");
    let stream_hex = stream.to_string();

    // The node logs JSON, with debug lines of the node crate (connections).
    let mut node = Proc::start(
        "node",
        &[
            "node",
            "--data-dir",
            &d("node"),
            "--listen",
            QUIC,
            "--bootstrap",
            &bootstrap,
            "--follow",
            &stream_hex,
            "--cache-dir",
            &d("cache"),
            "--max-upload",
            "8Mbit/s",
            "--metrics-listen",
            ANY,
            "--log-format",
            "json",
        ],
        "warn,meshcast_node::node=debug",
    );
    let node_metrics = metrics_url(&mut node);
    assert_eq!(node.line("following"), stream_hex);

    let mut relay = Proc::start(
        "relay",
        &[
            "relay",
            "--data-dir",
            &d("relay"),
            "--listen",
            QUIC,
            "--bootstrap",
            &bootstrap,
            "--follow",
            &stream_hex,
            "--browser-listen",
            ANY,
            "--web-listen",
            ANY,
            "--metrics-listen",
            ANY,
            "--log-format",
            "json",
        ],
        "warn,meshcast_relay=debug",
    );
    let relay_metrics = metrics_url(&mut relay);
    let gateway = relay.line("gateway");
    let hashes: Vec<Sha256Digest> = relay
        .lines("cert-hash")
        .iter()
        .map(|h| Sha256Digest::new(hex::decode(h).unwrap().try_into().unwrap()))
        .collect();
    assert_eq!(relay.line("following"), stream_hex);

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    rt.block_on(async {
        // Once the relay holds some of the stream, a few segments through
        // it, by a native client (one session: the gauge must read 1).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = scrape(&http, &relay_metrics).await;
            if m.sum("meshcast_segments_received_total", &[]) >= 6.0 {
                break;
            }
            assert!(Instant::now() < deadline, "the relay received no segment");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut client = Client::connect(&gateway, &hashes, stream, "", Duration::from_secs(10))
            .await
            .expect("a session with the relay");
        assert!(!client.live_edge().is_empty(), "Welcome named no live edge");
        let mut wanted: Vec<SegmentId> = client.live_edge().iter().map(|h| h.id()).collect();
        for id in wanted.clone() {
            if id.sequence > 0 {
                wanted.push(SegmentId {
                    sequence: id.sequence - 1,
                    ..id
                });
            }
        }
        let mut fetched_bytes = 0;
        for id in &wanted {
            let (_, body) = client
                .fetch(*id, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("fetching {id}: {e}"));
            assert!(!body.is_empty());
            fetched_bytes += body.len() as u64;
        }

        // The gateway counts a delivery once its stream is finished, which
        // may be a moment after the client has read it.
        let delivered = |m: &Exposition| {
            m.value(
                "meshcast_browser_requests_total",
                &[("result", "delivered")],
            )
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let relay_first = loop {
            let m = scrape(&http, &relay_metrics).await;
            if delivered(&m) >= wanted.len() as f64 || Instant::now() > deadline {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let node_first = scrape(&http, &node_metrics).await;
        // The node's upload cap (--max-upload 8Mbit/s), and none on the relay.
        assert_eq!(
            node_first.value("meshcast_upload_cap_bytes_per_second", &[]),
            1_000_000.0
        );
        assert_eq!(
            relay_first.value("meshcast_upload_cap_bytes_per_second", &[]),
            0.0
        );

        // The relay, while the client is connected.
        let m = &relay_first;
        assert_eq!(m.value("meshcast_browser_sessions", &[]), 1.0);
        assert!(m.value("meshcast_browser_sessions_total", &[]) >= 1.0);
        assert_eq!(delivered(m), wanted.len() as f64);
        for result in ["not_found", "deadline", "cancelled", "refused"] {
            assert_eq!(
                m.value("meshcast_browser_requests_total", &[("result", result)]),
                0.0,
                "{result}"
            );
        }
        assert_eq!(
            m.value(
                "meshcast_bytes_total",
                &[("direction", "out"), ("class", "browser")]
            ),
            fetched_bytes as f64,
            "browser bytes are the bodies the client received"
        );
        assert_eq!(
            m.value("meshcast_late_segments_total", &[("where", "browser")]),
            0.0
        );
        assert!(m.value("meshcast_peers_connected", &[]) > 0.0);
        assert_eq!(
            m.value(
                "meshcast_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        for (family, kind) in [
            ("meshcast_segments_received_total", "counter"),
            ("meshcast_bytes_total", "counter"),
            ("meshcast_peers_connected", "gauge"),
            ("meshcast_verification_failures_total", "counter"),
            ("meshcast_bans_total", "counter"),
            ("meshcast_streams_refused_total", "counter"),
            ("meshcast_propagation_seconds", "histogram"),
            ("meshcast_browser_sessions", "gauge"),
            ("meshcast_browser_sessions_total", "counter"),
            ("meshcast_browser_requests_total", "counter"),
            ("meshcast_late_segments_total", "counter"),
            ("meshcast_store_bytes", "gauge"),
            ("meshcast_store_segments", "gauge"),
            ("meshcast_cache_bytes", "gauge"),
            ("meshcast_upload_cap_bytes_per_second", "gauge"),
            ("meshcast_pulls_declined_at_cap_total", "counter"),
            ("meshcast_cut_through_forwards_total", "counter"),
            ("meshcast_build_info", "gauge"),
        ] {
            assert_eq!(
                m.types.get(family).map(String::as_str),
                Some(kind),
                "# TYPE of {family}"
            );
        }

        // Scrape again until the live stream has moved the node's counters.
        let received = |m: &Exposition| m.sum("meshcast_segments_received_total", &[]);
        let mesh_in = |m: &Exposition| {
            m.value(
                "meshcast_bytes_total",
                &[("direction", "in"), ("class", "mesh")],
            )
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (node_second, relay_second) = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let node_now = scrape(&http, &node_metrics).await;
            let relay_now = scrape(&http, &relay_metrics).await;
            if received(&node_now) > received(&node_first)
                && received(&relay_now) > received(&relay_first)
            {
                break (node_now, relay_now);
            }
            assert!(
                Instant::now() < deadline,
                "no new segment in 20 s: node {} → {}, relay {} → {}",
                received(&node_first),
                received(&node_now),
                received(&relay_first),
                received(&relay_now)
            );
        };
        for (name, first, second) in [
            ("node", &node_first, &node_second),
            ("relay", &relay_first, &relay_second),
        ] {
            assert!(
                mesh_in(second) > mesh_in(first) && mesh_in(first) > 0.0,
                "{name}: mesh bytes in {} → {}",
                mesh_in(first),
                mesh_in(second)
            );
            // Every stored segment from the mesh (or the origin) is timed.
            let mesh_received = second
                .value("meshcast_segments_received_total", &[("source", "push")])
                + second.value("meshcast_segments_received_total", &[("source", "pull")])
                + second.value("meshcast_segments_received_total", &[("source", "origin")]);
            // (A segment may be stored between reading one and the other.)
            let count = second.value("meshcast_propagation_seconds_count", &[]);
            assert!(
                count > 0.0 && (count - mesh_received).abs() <= 1.0,
                "{name}: {count} timed, {mesh_received} received"
            );
            assert_eq!(
                second.value("meshcast_propagation_seconds_bucket", &[("le", "+Inf")]),
                count
            );
            assert!(second.value("meshcast_propagation_seconds_sum", &[]) > 0.0);
            assert_eq!(
                second.value(
                    "meshcast_segments_received_total",
                    &[("source", "publisher")]
                ),
                0.0,
                "{name} published nothing"
            );
            assert!(
                second.value("meshcast_peers_connected", &[]) > 0.0,
                "{name}"
            );
            assert!(second.value("meshcast_store_bytes", &[]) > 0.0, "{name}");
            assert!(second.value("meshcast_store_segments", &[]) > 0.0, "{name}");
            assert_eq!(second.sum("meshcast_verification_failures_total", &[]), 0.0);
            assert_eq!(second.value("meshcast_bans_total", &[]), 0.0);
        }
        // The node writes its disk cache; the relay has none.
        assert!(node_second.value("meshcast_cache_bytes", &[]) > 0.0);
        assert_eq!(relay_second.value("meshcast_cache_bytes", &[]), 0.0);

        // The publisher: its own injections, bytes from the origin, bytes to the mesh.
        let publisher_now = scrape(&http, &publisher_metrics).await;
        let m = &publisher_now;
        assert!(
            m.value(
                "meshcast_segments_received_total",
                &[("source", "publisher")]
            ) > 0.0
        );
        // Its own segments are not timed (a histogram with no observation
        // is not rendered at all).
        assert_eq!(
            m.get("meshcast_propagation_seconds_count", &[])
                .unwrap_or(0.0),
            0.0
        );
        assert!(
            m.value(
                "meshcast_bytes_total",
                &[("direction", "in"), ("class", "origin")]
            ) > 0.0
        );
        assert!(
            m.value(
                "meshcast_bytes_total",
                &[("direction", "out"), ("class", "mesh")]
            ) > 0.0
        );

        // Closing the session shows in the gauge.
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(20);
        while scrape(&http, &relay_metrics)
            .await
            .value("meshcast_browser_sessions", &[])
            != 0.0
        {
            assert!(Instant::now() < deadline, "the session gauge stayed up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // JSON logs, with the peer's span around what concerns it and the
    // session's span around what the gateway logs of a session.
    let node_logs = json_logs(&node);
    let connected = in_span(&node_logs, "connection established", "peer");
    assert!(
        connected
            .iter()
            .any(|l| l["span"]["peer"] == publisher_peer.as_str()),
        "no connection to the publisher logged in its span: {node_logs:#?}"
    );
    for line in &connected {
        assert_eq!(line["level"], "DEBUG");
        assert!(line["timestamp"].is_string());
    }
    let relay_logs = json_logs(&relay);
    let welcomed = in_span(&relay_logs, "welcomed", "session");
    assert_eq!(welcomed.len(), 1, "{relay_logs:#?}");
    assert!(welcomed[0]["span"]["id"].is_u64());
    // A session id, not the viewer's address, unless the operator asks
    // (`gateway.log_addresses`).
    assert!(
        welcomed[0]["span"].get("remote").is_none(),
        "a viewer's address in the logs: {}",
        welcomed[0]
    );
    assert_eq!(welcomed[0]["fields"]["stream"], stream_hex.as_str());
    drop(origin);
}

#[test]
fn the_grafana_dashboard_charts_every_metric() {
    use meshcast_node::metrics as m;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/meshcast.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for name in [
        m::SEGMENTS_RECEIVED,
        m::BYTES,
        m::PEERS_CONNECTED,
        m::VERIFICATION_FAILURES,
        m::BANS,
        m::PROPAGATION,
        m::BROWSER_SESSIONS,
        m::BROWSER_SESSIONS_TOTAL,
        m::BROWSER_REQUESTS,
        m::LATE_SEGMENTS,
        m::STORE_BYTES,
        m::STORE_SEGMENTS,
        m::CACHE_BYTES,
        m::BUILD_INFO,
    ] {
        // A whole name: `meshcast_browser_sessions` must not count as charted
        // because `meshcast_browser_sessions_total` is.
        let charted = exprs.iter().any(|e| {
            e.match_indices(name).any(|(i, _)| {
                let next = e[i + name.len()..].chars().next();
                !next.is_some_and(|c| {
                    c.is_ascii_alphanumeric() || (c == '_' && name != m::PROPAGATION)
                })
            })
        });
        assert!(charted, "no panel charts {name}");
    }
    for quantile in ["histogram_quantile(0.5,", "histogram_quantile(0.95,"] {
        assert!(exprs.iter().any(|e| e.starts_with(quantile)), "{quantile}");
    }
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("media/test-stream");
    let dir = media.to_str().unwrap();
    // The flag, and the environment variable every role reads.
    let by_flag = Proc::start(
        "origin",
        &[
            "origin",
            "--dir",
            dir,
            "--listen",
            ANY,
            "--log-format",
            "json",
        ],
        "info",
    );
    let by_env = Proc::start_env(
        "origin (env)",
        &["origin", "--dir", dir, "--listen", ANY],
        &[("RUST_LOG", "info"), ("MESHCAST_LOG__FORMAT", "json")],
    );
    for mut origin in [by_flag, by_env] {
        let url = origin.line("origin");
        let deadline = Instant::now() + Duration::from_secs(10);
        while origin.stderr().is_empty() {
            assert!(Instant::now() < deadline, "{}: no log line", origin.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        let logs = json_logs(&origin);
        let serving = &logs[0];
        assert_eq!(serving["level"], "INFO", "{serving}");
        assert!(serving["timestamp"].is_string(), "{serving}");
        let message = serving["fields"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("serving {url}")), "{message}");
    }
    // A format that does not exist is refused, naming the flag and the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_meshcast"))
        .args(["origin", "--dir", dir, "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );
}

#[test]
fn metrics_and_log_settings_layer_and_name_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meshcast.toml");
    let f = file.to_str().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcast"));
        cmd.args(args).env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(
        &file,
        "[metrics]\nlisten = \"127.0.0.1:9100\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let (ok, shown, err) = run(&["config", "show", "--config", f], &[]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("[metrics]\nlisten = \"127.0.0.1:9100\""),
        "{shown}"
    );
    assert!(shown.contains("[log]\nformat = \"json\""), "{shown}");
    let (ok, shown, err) = run(
        &[
            "config",
            "show",
            "--config",
            f,
            "--metrics-listen",
            "[::1]:0",
            "--log-format",
            "text",
        ],
        &[("MESHCAST_METRICS__LISTEN", "127.0.0.1:9200")],
    );
    assert!(ok, "{err}");
    assert!(shown.contains("listen = \"[::1]:0\""), "{shown}");
    assert!(shown.contains("format = \"text\""), "{shown}");

    for (toml, env, flags, expected) in [
        (
            "[metrics]\nlisten = \"localhost\"\n",
            &[][..],
            &[][..],
            vec!["`metrics.listen`", "socket address", f],
        ),
        (
            "",
            &[("MESHCAST_METRICS__LISTEN", "9100")][..],
            &[][..],
            vec!["`metrics.listen`", "MESHCAST_METRICS__LISTEN"],
        ),
        (
            "",
            &[][..],
            &["--metrics-listen", "127.0.0.1"][..],
            vec!["`metrics.listen`", "--metrics-listen"],
        ),
        (
            "[log]\nformat = \"xml\"\n",
            &[][..],
            &[][..],
            vec!["`log.format`", "`text` or `json`", f],
        ),
        (
            "[metrics]\nport = 9100\n",
            &[][..],
            &[][..],
            vec!["unknown field", "port"],
        ),
    ] {
        std::fs::write(&file, toml).unwrap();
        let mut args = vec!["config", "check", "--config", f];
        args.extend_from_slice(flags);
        let (ok, _, err) = run(&args, env);
        assert!(!ok, "accepted {toml:?} {env:?} {flags:?}");
        for word in expected {
            assert!(
                err.contains(word),
                "{toml:?} {env:?} {flags:?}: lacks {word:?}: {err}"
            );
        }
    }

    // An address already in use stops the node at once, naming the key.
    let taken = std::net::TcpListener::bind(ANY).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("node");
    let (ok, _, err) = run(
        &[
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            QUIC,
            "--metrics-listen",
            &addr,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("`metrics.listen`") && err.contains(&addr),
        "{err}"
    );
}
