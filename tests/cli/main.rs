//! Drives the real `meshcast` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use meshcast_proto::{PublicKey, PublisherKey};

fn meshcast(args: &[&str]) -> Output {
    meshcast_env(args, &[])
}

fn meshcast_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcast"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run meshcast")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn key_in(path: &Path) -> PublisherKey {
    PublisherKey::from_pem(&std::fs::read_to_string(path).unwrap())
        .expect("key file holds a PEM key")
}

#[test]
fn keygen_writes_a_private_key_file_and_prints_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("publisher.key");
    let out = meshcast(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let printed: PublicKey = stdout(&out)
        .trim()
        .parse()
        .expect("stdout is the public key");
    assert_eq!(key_in(&path).public(), printed);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode is {mode:o}");
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("publisher.key");
    let p = path.to_str().unwrap();
    assert!(meshcast(&["keygen", "--out", p]).status.success());
    let before = std::fs::read(&path).unwrap();

    let again = meshcast(&["keygen", "--out", p]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists") && stderr(&again).contains("--force"),
        "{}",
        stderr(&again)
    );
    assert!(stdout(&again).is_empty());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the old key must be untouched"
    );

    let forced = meshcast(&["keygen", "--out", p, "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let new_public: PublicKey = stdout(&forced).trim().parse().unwrap();
    assert_eq!(key_in(&path).public(), new_public);
    assert_ne!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn keygen_into_a_missing_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/publisher.key");
    let out = meshcast(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn help_and_version_work() {
    let help = meshcast(&["--help"]);
    assert!(help.status.success());
    for word in ["keygen", "config", "MESHCAST_"] {
        assert!(
            stdout(&help).contains(word),
            "help lacks {word}: {}",
            stdout(&help)
        );
    }
    let version = meshcast(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        stdout(&version).trim(),
        format!("meshcast {}", env!("CARGO_PKG_VERSION"))
    );
    let keygen_help = meshcast(&["keygen", "--help"]);
    assert!(
        stdout(&keygen_help).contains("0600"),
        "{}",
        stdout(&keygen_help)
    );
}

#[test]
fn configuration_layers_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meshcast.toml");
    std::fs::write(&file, "[store]\nmax_bytes = \"64MiB\"\nlive_window = \"20s\"\n[node]\ndata_dir = \"/from/file\"\n").unwrap();
    let f = file.to_str().unwrap();

    let from_file = meshcast(&["config", "show", "--config", f]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert!(
        stdout(&from_file).contains("max_bytes = \"64MiB\""),
        "{}",
        stdout(&from_file)
    );

    // The environment beats the file; flags beat the environment.
    let env = [
        ("MESHCAST_CONFIG", f),
        ("MESHCAST_STORE__MAX_BYTES", "128MiB"),
        ("MESHCAST_NODE__DATA_DIR", "/from/env"),
    ];
    let layered = meshcast_env(&["config", "show", "--data-dir", "/from/flag"], &env);
    assert!(layered.status.success(), "{}", stderr(&layered));
    let text = stdout(&layered);
    assert!(text.contains("max_bytes = \"128MiB\""), "{text}");
    assert!(text.contains("live_window = \"20s\""), "{text}");
    assert!(text.contains("data_dir = \"/from/flag\""), "{text}");
}

#[test]
fn bad_configuration_names_the_key_the_reason_and_the_source() {
    let dir = tempfile::tempdir().unwrap();
    // A `--follow` entry whose seed budget is not a size.
    let follow_bad_budget = format!("{}:lots", "ab".repeat(32));
    let follow_flags = ["--follow", follow_bad_budget.as_str()];
    let file = dir.path().join("meshcast.toml");
    let f = file.to_str().unwrap();
    struct Case<'a> {
        toml: &'a str,
        env: &'a [(&'a str, &'a str)],
        flags: &'a [&'a str],
        expected: Vec<&'a str>,
    }
    let case = |toml, env, flags, expected| Case {
        toml,
        env,
        flags,
        expected,
    };
    let cases = [
        case(
            "[store]\nlive_window = \"1s\"\n",
            &[],
            &[],
            vec!["`store.live_window`", "between 2s and 1h", f],
        ),
        case(
            "[store]\nmax_bytes = \"huge\"\n",
            &[],
            &[],
            vec!["`store.max_bytes`", "not a size", f],
        ),
        case(
            "[node]\nlisten = [3]\n",
            &[],
            &[],
            vec!["`node.listen.0`", "expected a string", f],
        ),
        case(
            "",
            &[("MESHCAST_STORE__MAX_BYTES", "1KiB")],
            &[],
            vec![
                "`store.max_bytes`",
                "at least one segment",
                "MESHCAST_STORE__MAX_BYTES",
            ],
        ),
        case(
            "",
            &[],
            &["--bootstrap", "/ip4/127.0.0.1/udp/4001/quic-v1"],
            vec!["`node.bootstrap`", "/p2p/<peer id>", "--bootstrap"],
        ),
        case(
            "[store]\ndisk_max_bytes = \"64KiB\"\n",
            &[],
            &[],
            vec!["`store.disk_max_bytes`", "at least 1 MiB", f],
        ),
        case(
            "",
            &[],
            &follow_flags,
            vec!["`node.follow`", "bad seed budget", "--follow"],
        ),
        case(
            "[node]\nfollow = [\"cafe\"]\n",
            &[],
            &[],
            vec!["`node.follow`", "not a stream id", f],
        ),
    ];
    for Case {
        toml,
        env,
        flags,
        expected,
    } in cases
    {
        std::fs::write(&file, toml).unwrap();
        let mut args = vec!["config", "check", "--config", f];
        args.extend_from_slice(flags);
        let out = meshcast_env(&args, env);
        assert!(!out.status.success(), "accepted {toml:?} {env:?} {flags:?}");
        let err = stderr(&out);
        for word in expected {
            assert!(
                err.contains(word),
                "error for {toml:?} {env:?} {flags:?} lacks {word:?}: {err}"
            );
        }
    }

    std::fs::write(&file, "[store]\nmax_byts = 1\n").unwrap();
    let out = meshcast(&["config", "check", "--config", f]);
    assert!(stderr(&out).contains("unknown field"), "{}", stderr(&out));

    let out = meshcast(&["config", "check", "--config", "/no/such/file.toml"]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    std::fs::write(&file, "").unwrap();
    let ok = meshcast(&["config", "check", "--config", f]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn relay_and_external_flags_reach_the_configuration() {
    let relay =
        "/ip4/192.0.2.1/udp/4001/quic-v1/p2p/12D3KooWGzWcJsBBpQhWvZkK1YzwpkHwXRk3bTSi9V7j5L5SpfZ8";
    let external = "/ip4/192.0.2.2/udp/4001/quic-v1";
    let out = meshcast(&["config", "show", "--relay", relay, "--external", external]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("relays = [\"{relay}\"]")), "{text}");
    assert!(
        text.contains(&format!("external = [\"{external}\"]")),
        "{text}"
    );
}

#[test]
fn gateway_settings_layer_like_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    let (hash_a, hash_b) = ("ab".repeat(32), "cd".repeat(32));
    let stream = "ef".repeat(32);
    std::fs::write(
        &file,
        format!(
            "[node]\nfollow = [\"{stream}\"]\n[gateway]\nbrowser_listen = \"127.0.0.1:4433\"\n\
             web_listen = \"127.0.0.1:8080\"\npublic_host = \"file.example.org\"\n\
             cert_lifetime = \"7d\"\nmax_sessions = 100\nmax_sessions_per_ip = 4\n\
             peer_gateways = [\"https://a.example.org:4433/={hash_a}\"]\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let from_file = meshcast(&["config", "show", "--config", f]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let text = stdout(&from_file);
    for line in [
        "[gateway]".to_string(),
        format!("follow = [\"{stream}\"]"),
        "browser_listen = \"127.0.0.1:4433\"".into(),
        "web_listen = \"127.0.0.1:8080\"".into(),
        "public_host = \"file.example.org\"".into(),
        "cert_lifetime = \"7days\"".into(),
        "max_sessions = 100".into(),
        "max_sessions_per_ip = 4".into(),
        format!("peer_gateways = [\"https://a.example.org:4433/={hash_a}\"]"),
    ] {
        assert!(text.contains(&line), "lacks {line:?}: {text}");
    }

    // The environment beats the file; flags beat the environment.
    let peers_env = format!("[https://b.example.org:4433/={hash_b}]");
    let env = [
        ("MESHCAST_CONFIG", f),
        ("MESHCAST_GATEWAY__MAX_SESSIONS", "200"),
        ("MESHCAST_GATEWAY__PUBLIC_HOST", "env.example.org"),
        ("MESHCAST_GATEWAY__PEER_GATEWAYS", peers_env.as_str()),
    ];
    let layered = meshcast_env(
        &[
            "config",
            "show",
            "--public-host",
            "flag.example.org",
            "--max-sessions-per-ip",
            "8",
            "--follow",
            &"12".repeat(32),
        ],
        &env,
    );
    assert!(layered.status.success(), "{}", stderr(&layered));
    let text = stdout(&layered);
    for line in [
        "max_sessions = 200".to_string(),
        "max_sessions_per_ip = 8".into(),
        "public_host = \"flag.example.org\"".into(),
        "web_listen = \"127.0.0.1:8080\"".into(),
        format!("peer_gateways = [\"https://b.example.org:4433/={hash_b}\"]"),
        format!("follow = [\"{}\"]", "12".repeat(32)),
    ] {
        assert!(text.contains(&line), "lacks {line:?}: {text}");
    }

    // Unset, there is no browser_listen: a relay uses 0.0.0.0:4433, a node none.
    let defaults = meshcast(&["config", "show"]);
    let text = stdout(&defaults);
    assert!(
        text.contains("[gateway]") && !text.contains("browser_listen"),
        "{text}"
    );
    assert!(text.contains("web_listen = \"0.0.0.0:8443\""), "{text}");
    assert!(text.contains("cert_lifetime = \"14days\""), "{text}");
}

#[test]
fn bad_gateway_settings_name_the_key_the_reason_and_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meshcast.toml");
    let f = file.to_str().unwrap();
    let hash = "ab".repeat(32);
    let no_scheme = format!("gw.example.org:4433={hash}");
    let no_equals = format!("[https://gw.example.org:4433/{hash}]");
    /// The file, the environment, the flags, and what the error must say.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "[gateway]\ncert_lifetime = \"15d\"\n".into(),
            vec![],
            vec![],
            vec!["`gateway.cert_lifetime`", "between 2s and 14 days", f],
        ),
        (
            "[gateway]\nmax_sessions = 0\n".into(),
            vec![],
            vec![],
            vec!["`gateway.max_sessions`", "at least 1", f],
        ),
        (
            "[gateway]\nmax_sessions_per_ip = -1\n".into(),
            vec![],
            vec![],
            vec!["`gateway.max_sessions_per_ip`", f],
        ),
        (
            "[gateway]\nweb_listen = \"localhost\"\n".into(),
            vec![],
            vec![],
            vec!["`gateway.web_listen`", "socket address", f],
        ),
        (
            "[gateway]\ntls_key = \"/etc/key.pem\"\n".into(),
            vec![],
            vec![],
            vec!["`gateway.tls_key`", "tls_cert is not", f],
        ),
        (
            "[gateway]\nno_such_key = 1\n".into(),
            vec![],
            vec![],
            vec!["unknown field", "no_such_key", f],
        ),
        (
            "[node]\nfollow = [\"abc\"]\n".into(),
            vec![],
            vec![],
            vec!["`node.follow`", "64 hex digits", f],
        ),
        (
            String::new(),
            vec![("MESHCAST_GATEWAY__PEER_GATEWAYS", no_equals.as_str())],
            vec![],
            vec![
                "`gateway.peer_gateways`",
                "URL=CERT_HASH_HEX",
                "MESHCAST_GATEWAY__PEER_GATEWAYS",
            ],
        ),
        (
            String::new(),
            vec![],
            vec!["--peer-gateway", no_scheme.as_str()],
            vec!["`gateway.peer_gateways`", "https:// URL", "--peer-gateway"],
        ),
        (
            String::new(),
            vec![],
            vec!["--peer-gateway", "https://gw.example.org/=1234"],
            vec!["`gateway.peer_gateways`", "64 hex digits", "--peer-gateway"],
        ),
        (
            String::new(),
            vec![("MESHCAST_GATEWAY__CERT_LIFETIME", "1s")],
            vec![],
            vec![
                "`gateway.cert_lifetime`",
                "between 2s and 14 days",
                "MESHCAST_GATEWAY__CERT_LIFETIME",
            ],
        ),
        (
            String::new(),
            vec![],
            vec!["--max-sessions", "0"],
            vec!["`gateway.max_sessions`", "at least 1", "--max-sessions"],
        ),
        (
            String::new(),
            vec![],
            vec!["--public-host", "https://relay.example.org/"],
            vec!["`gateway.public_host`", "bare host name", "--public-host"],
        ),
    ];
    for (toml, env, flags, expected) in cases {
        std::fs::write(&file, &toml).unwrap();
        let mut args = vec!["config", "check", "--config", f];
        args.extend_from_slice(&flags);
        let out = meshcast_env(&args, &env);
        assert!(!out.status.success(), "accepted {toml:?} {env:?} {flags:?}");
        let err = stderr(&out);
        for word in expected {
            assert!(
                err.contains(word),
                "error for {toml:?} {env:?} {flags:?} lacks {word:?}: {err}"
            );
        }
    }
}

/// Starts `meshcast <args>` and returns it with the rest of its first stdout
/// line starting with `gateway `. Standard output is drained to the end, so
/// the process never writes to a closed pipe.
fn gateway_line(args: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshcast"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meshcast");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("gateway ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no `gateway` line from {args:?}: {}", stderr(&out));
        }
    }
}

#[test]
fn relay_and_node_serve_browsers_as_the_file_says_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let f = file.to_str().unwrap();
    for (role, host) in [("relay", "relay.test"), ("node", "node.test")] {
        let data = dir.path().join(role);
        std::fs::write(
            &file,
            format!(
                "[node]\ndata_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n\
                 [gateway]\nbrowser_listen = \"127.0.0.1:0\"\nweb_listen = \"127.0.0.1:0\"\n\
                 public_host = \"{host}\"\n"
            ),
        )
        .unwrap();
        let (child, url) = gateway_line(&[role, "--config", f]);
        assert!(
            url.starts_with(&format!("https://{host}:")),
            "{role}: {url}"
        );
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{role} did not stop cleanly on SIGTERM: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("stopping (SIGTERM)"),
            "{}",
            stderr(&out)
        );
    }

    // A flag beats the file.
    std::fs::write(
        &file,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n\
             [gateway]\nbrowser_listen = \"127.0.0.1:0\"\nweb_listen = \"127.0.0.1:0\"\n",
            dir.path().join("flags")
        ),
    )
    .unwrap();
    let (mut child, url) = gateway_line(&["node", "--config", f, "--public-host", "flag.test"]);
    assert!(url.starts_with("https://flag.test:"), "{url}");
    let _ = child.kill();
    let _ = child.wait();
}

mod attacks;
mod demo;
mod examples;
mod lab_churn;
mod metrics;
mod proc;
mod processes;

#[test]
fn token_issues_a_token_the_stream_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("publisher.key");
    let k = key_path.to_str().unwrap();
    assert!(meshcast(&["keygen", "--out", k]).status.success());
    let out = meshcast(&[
        "token", "--key", k, "--name", "demo", "--ttl", "2h", "--viewer", "alice",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = key_in(&key_path);
    let stream = meshcast_proto::StreamKey::new(key.public(), "demo");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let grant =
        meshcast_proto::token::verify(stdout(&out).trim(), &stream, now).expect("valid token");
    assert_eq!(grant.viewer, "alice");
    assert!(grant.expires_at_us > now + 7_000_000_000 && grant.expires_at_us < now + 7_300_000_000);

    let bad = meshcast(&["token", "--key", k, "--ttl", "2h"]);
    assert!(!bad.status.success(), "a token without --name or --stream");

    // Out-of-range input gets a clear error, not a panic: a viewer id over
    // the limit (multibyte, so a byte count lands inside a character) and
    // a validity past what a token can say.
    let long = "é".repeat(100);
    let out = meshcast(&[
        "token", "--key", k, "--name", "demo", "--ttl", "2h", "--viewer", &long,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--viewer is 200 bytes long; at most 128"),
        "{}",
        stderr(&out)
    );
    let out = meshcast(&[
        "token",
        "--key",
        k,
        "--name",
        "demo",
        "--ttl",
        "18446744073709551615s",
    ]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("--ttl"), "{text}");
}
