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

mod demo;
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
}
