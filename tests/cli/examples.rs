//! The example configurations and systemd units in docs/examples/: they must
//! load with the real binary, explain every key they set, and the units must
//! run real subcommands with real flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{meshcast, stderr, stdout};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name)
}

fn read(name: &str) -> String {
    let path = example(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `meshcast config show` of an example, which also validates it.
fn effective(name: &str) -> String {
    let path = example(name);
    let path = path.to_str().unwrap();
    let check = meshcast(&["config", "check", "--config", path]);
    assert!(
        check.status.success(),
        "{name} does not pass `meshcast config check`: {}",
        stderr(&check)
    );
    let show = meshcast(&["config", "show", "--config", path]);
    assert!(show.status.success(), "{name}: {}", stderr(&show));
    stdout(&show)
}

#[test]
fn example_configurations_pass_config_check_and_take_effect() {
    let node = effective("node.toml");
    for line in [
        "data_dir = \"/var/lib/meshcast-node\"",
        "max_bytes = \"1024MiB\"",
        "listen = \"127.0.0.1:9464\"",
    ] {
        assert!(node.contains(line), "node.toml: lacks {line:?}: {node}");
    }
    // A node runs no gateway unless the file says so.
    assert!(!node.contains("browser_listen"), "{node}");

    let relay = effective("relay.toml");
    for line in [
        "data_dir = \"/var/lib/meshcast-relay\"",
        "[gateway]",
        "browser_listen = \"0.0.0.0:4433\"",
        "web_listen = \"127.0.0.1:8443\"",
        "public_host = \"relay.example.org\"",
        "cert_lifetime = \"14days\"",
        "max_sessions = 5000",
        "max_sessions_per_ip = 32",
        "[metrics]",
        "listen = \"127.0.0.1:9464\"",
    ] {
        assert!(relay.contains(line), "relay.toml: lacks {line:?}: {relay}");
    }
    assert!(
        relay.contains("external = [") && !relay.contains("external = []"),
        "a relay needs node.external: {relay}"
    );
}

/// The keys an example sets (`key = …` lines outside comments), each with
/// the line above it.
fn keys_set(text: &str) -> Vec<(&str, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut keys = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if line.starts_with(char::is_alphabetic)
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.push((key, if i > 0 { lines[i - 1] } else { "" }));
        }
    }
    keys
}

#[test]
fn every_key_an_example_sets_is_explained_by_the_comment_above_it() {
    for name in ["node.toml", "relay.toml"] {
        let text = read(name);
        let keys = keys_set(&text);
        assert!(keys.len() >= 8, "{name}: only {keys:?}");
        for (key, above) in keys {
            assert!(
                above.trim_start().starts_with('#'),
                "{name}: `{key}` has no comment right above it"
            );
        }
    }
    // The check itself: a key without a comment is caught.
    assert_eq!(keys_set("# a\na = 1\n\nb = 2\n")[1], ("b", ""));
}

/// `ExecStart=` of a unit, continuation lines joined, split into words.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(lines.len(), 1, "one ExecStart= line: {lines:?}");
    lines[0].split_whitespace().map(str::to_string).collect()
}

/// The value of `Key=` in a unit (the last one, as systemd reads it).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

#[test]
fn systemd_units_run_real_subcommands_with_real_flags_and_the_example_configs() {
    for (unit_name, command, config) in [
        ("meshcast-node.service", "node", "node.toml"),
        ("meshcast-relay.service", "relay", "relay.toml"),
    ] {
        let unit = read(unit_name);
        let words = exec_start(&unit);
        assert!(words[0].ends_with("/meshcast"), "{unit_name}: {words:?}");
        assert_eq!(words[1], command, "{unit_name}");
        let help = meshcast(&[command, "--help"]);
        assert!(help.status.success(), "{}", stderr(&help));
        let help = stdout(&help);
        let flags: Vec<&str> = words[2..]
            .iter()
            .filter(|w| w.starts_with("--"))
            .map(|w| w.split('=').next().unwrap())
            .collect();
        assert!(flags.contains(&"--config"), "{unit_name}: {words:?}");
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} ")),
                "{unit_name}: `meshcast {command} --help` has no {flag}"
            );
        }
        // The unit reads the example config, whose data_dir is the unit's
        // state directory (the only place the service may write).
        let config_at = words.iter().position(|w| w == "--config").unwrap() + 1;
        assert_eq!(words[config_at], format!("/etc/meshcast/{config}"));
        let state = setting(&unit, "StateDirectory").expect("StateDirectory=");
        let shown = effective(config);
        assert!(
            shown.contains(&format!("data_dir = \"/var/lib/{state}\"")),
            "{config}: data_dir is not /var/lib/{state}: {shown}"
        );
        for (key, value) in [
            ("Restart", "on-failure"),
            ("KillSignal", "SIGTERM"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("AmbientCapabilities", ""),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(setting(&unit, key), Some(value), "{unit_name}: {key}=");
        }
        let families = setting(&unit, "RestrictAddressFamilies").unwrap_or_default();
        for family in ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"] {
            assert!(
                families.split_whitespace().any(|f| f == family),
                "{unit_name}: RestrictAddressFamilies lacks {family} (AF_NETLINK: listening on 0.0.0.0 needs rtnetlink)"
            );
        }
        let nofile: u64 = setting(&unit, "LimitNOFILE").unwrap().parse().unwrap();
        assert!(nofile >= 65536, "{unit_name}: LimitNOFILE={nofile}");
        assert!(
            setting(&unit, "DynamicUser") == Some("yes") || setting(&unit, "User").is_some(),
            "{unit_name}: runs as root"
        );
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("systemd-analyze"))
            .find(|path| path.is_file())
    }) else {
        println!("skipped: systemd-analyze is not installed (PATH has none)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in ["meshcast-node.service", "meshcast-relay.service"] {
        // `verify` checks that the program exists: point it at this build.
        let unit = read(name).replace("/usr/local/bin/meshcast", env!("CARGO_BIN_EXE_meshcast"));
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("run systemd-analyze");
        // Unknown or malformed settings are only warnings ("…, ignoring"):
        // any line about this unit fails the test.
        let complaints: Vec<String> = stderr(&out)
            .lines()
            .filter(|l| l.contains(name))
            .map(str::to_string)
            .collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify {name}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
    }
}
