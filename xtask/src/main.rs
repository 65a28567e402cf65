//! Project tasks: `cargo xtask <task>`.
//!
//! `test` is the one command that runs every check; it first installs what the
//! checks need (idempotent, quick when everything is there), so it works on a
//! fresh machine and is what `.ci/run` calls.

use std::process::{Command, ExitCode};
use std::time::Instant;

#[cfg(test)]
mod modules;

/// The cargo-fuzz release the fuzz targets are built with; pinned so a new
/// release cannot change flags under CI.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Crates that also build for the browser: clippy checks them for wasm32,
/// and `web()` builds the client (and so the proto crate) in release.
const WASM_CRATES: &[&str] = &["meshcast-proto", "meshcast-client"];
/// Must equal the wasm-bindgen version in Cargo.lock (pinned in Cargo.toml).
const WASM_BINDGEN_VERSION: &str = "0.2.108";
/// Where the assembled web page (demo page, loader, wasm, hls.js) goes.
const WEB_OUT: &str = "target/web";
const CHROMIUM: &str = "/usr/bin/chromium";
const FUZZ_TARGETS: &[&str] = &["frame_decoder", "header_verify", "tree_decoder"];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  demo [ARGS...]        build the browser client and the page, then run `meshcast demo ARGS`:
                        a local origin, publisher, 3 nodes, a relay and the player page
  setup                 install what the checks need (rustup components and targets,
                        cargo-fuzz, wasm-bindgen-cli, Debian chromium and, as root,
                        nftables and iproute2, the page's npm packages)
  test [--no-setup]     setup, then every check: fmt, clippy (host and wasm32), the fuzz
                        targets (built and run briefly), the page (release wasm), all cargo
                        tests, and the end-to-end tests in headless Chromium
  web                   build the browser client (release wasm) and assemble target/web
  bench ARGS...         build meshcast and meshcast-bench (release), then run
                        `meshcast-bench ARGS`, e.g. `cargo xtask bench all [--quick]`
  bench-browser [ARGS]  time to first frame and segment latency in Chromium: mesh loader
                        against plain hls.js HTTP, on one demo deployment
  fuzz TARGET [SECONDS] run one fuzz target (frame_decoder, header_verify, tree_decoder);
                        default 60 s";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Paths below are relative to the workspace root, wherever cargo was run.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    if let Err(e) = std::env::set_current_dir(root) {
        eprintln!("xtask: cannot enter the workspace root {root}: {e}");
        return ExitCode::FAILURE;
    }
    let result = match args.as_slice() {
        ["setup"] => setup(),
        ["test"] => setup().and_then(|()| test()),
        ["test", "--no-setup"] => test(),
        ["web"] => web_setup().and_then(|()| web()),
        ["demo", rest @ ..] => demo(rest),
        ["bench", rest @ ..] if !rest.is_empty() => bench(rest),
        ["bench-browser", rest @ ..] => web_setup()
            .and_then(|()| debian_setup())
            .and_then(|()| bench_browser(rest)),
        ["fuzz", target] => fuzz(target, "60"),
        ["fuzz", target, seconds] => fuzz(target, seconds),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

/// Runs a command with inherited output, failing on a non-zero exit.
fn run(program: &str, args: &[&str], dir: Option<&str>) -> Result {
    let shown = format!("{program} {}", args.join(" "));
    eprintln!("\n==> {shown}");
    let start = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status})"));
    }
    eprintln!("<== {shown}: ok in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Captures a command's standard output.
fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("could not start `{program}`: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything `test` needs.
fn setup() -> Result {
    web_setup()?;
    debian_setup()?;
    let fuzz = output("cargo", &["fuzz", "--version"]).unwrap_or_default();
    if !fuzz.contains(CARGO_FUZZ_VERSION) {
        let version = format!("={CARGO_FUZZ_VERSION}");
        run(
            "cargo",
            &["install", "cargo-fuzz", "--version", &version, "--locked"],
            None,
        )?;
    }
    Ok(())
}

/// What building the page needs: rustup bits, wasm-bindgen-cli, npm packages.
fn web_setup() -> Result {
    let components = output("rustup", &["component", "list", "--installed"])?;
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            run("rustup", &["component", "add", component], None)?;
        }
    }
    let targets = output("rustup", &["target", "list", "--installed"])?;
    if !targets.lines().any(|l| l.trim() == WASM_TARGET) {
        run("rustup", &["target", "add", WASM_TARGET], None)?;
    }
    let bindgen = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if !bindgen.contains(WASM_BINDGEN_VERSION) {
        let version = format!("={WASM_BINDGEN_VERSION}");
        run(
            "cargo",
            &[
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--locked",
            ],
            None,
        )?;
    }
    // `npm ci` installs exactly package-lock.json; skip it when that is done.
    let lock = std::fs::metadata("web/package-lock.json").and_then(|m| m.modified());
    let installed =
        std::fs::metadata("web/node_modules/.package-lock.json").and_then(|m| m.modified());
    let fresh = matches!((lock, installed), (Ok(l), Ok(i)) if i >= l);
    if !fresh {
        if output("npm", &["--version"]).unwrap_or_default().is_empty() {
            return Err(
                "npm is missing: install Node.js 20 or newer (Debian: apt-get install nodejs npm)"
                    .into(),
            );
        }
        run("npm", &["ci", "--no-audit", "--no-fund"], Some("web"))?;
    }
    Ok(())
}

/// Debian packages: chromium for the end-to-end tests (never a browser
/// download: those fail on machines without general internet access), and
/// as root nftables and iproute2 for the network lab's routers and links
/// (`meshcast_lab`; without root the lab's tests are skipped, so neither is
/// needed).
fn debian_setup() -> Result {
    let root = output("id", &["-u"]).unwrap_or_default().trim() == "0";
    let mut packages = Vec::new();
    if !std::path::Path::new(CHROMIUM).exists() {
        packages.push("chromium");
    }
    if root && output("nft", &["-V"]).is_err() {
        packages.push("nftables");
    }
    // `ip` and `tc` (namespaces, veth, tbf).
    if root && (output("ip", &["-V"]).is_err() || output("tc", &["-V"]).is_err()) {
        packages.push("iproute2");
    }
    if packages.is_empty() {
        return Ok(());
    }
    let (program, prefix): (&str, &[&str]) = if root {
        ("apt-get", &[])
    } else {
        ("sudo", &["-n", "apt-get"])
    };
    let apt = |args: &[&str]| {
        let all: Vec<&str> = prefix.iter().chain(args).copied().collect();
        run(program, &all, None)
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    let wanted = packages.join(" ");
    apt(&["update"])
        .and_then(|()| apt(&install))
        .map_err(|e| format!("{e}\ninstalling Debian {wanted} needs root or passwordless sudo; or install it yourself (apt-get install {wanted})"))
}

/// Builds the browser client (release: small and fast) and assembles the page
/// into target/web: demo page, loader, wasm and glue, hls.js.
fn web() -> Result {
    run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "meshcast-client",
            "--target",
            WASM_TARGET,
        ],
        None,
    )?;
    let wasm = format!("target/{WASM_TARGET}/release/meshcast_client.wasm");
    let pkg = format!("{WEB_OUT}/pkg");
    run(
        "wasm-bindgen",
        &[
            "--target",
            "web",
            "--no-typescript",
            "--out-dir",
            &pkg,
            "--out-name",
            "meshcast_client",
            &wasm,
        ],
        None,
    )?;
    let copy = |from: &str, to: &str| {
        std::fs::copy(from, format!("{WEB_OUT}/{to}"))
            .map(|_| ())
            .map_err(|e| format!("copying {from}: {e}"))
    };
    for entry in std::fs::read_dir("web/demo").map_err(|e| format!("web/demo: {e}"))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            copy(&path.to_string_lossy(), name)?;
        }
    }
    // The mesh core and one small module per player (web/src/).
    for name in ["meshcast.js", "shaka.js", "dashjs.js", "videojs.js"] {
        copy(&format!("web/src/{name}"), name)?;
    }
    // The players, as their packages build them (web/package.json pins
    // their versions): hls.js and dash.js as ES modules, Shaka and Video.js
    // as scripts that set window.shaka and window.videojs.
    copy("web/node_modules/hls.js/dist/hls.mjs", "hls.mjs")?;
    copy(
        "web/node_modules/dashjs/dist/modern/esm/dash.all.min.js",
        "dash.all.min.js",
    )?;
    copy(
        "web/node_modules/shaka-player/dist/shaka-player.compiled.js",
        "shaka-player.compiled.js",
    )?;
    copy(
        "web/node_modules/video.js/dist/video.min.js",
        "video.min.js",
    )?;
    copy(
        "web/node_modules/video.js/dist/video-js.min.css",
        "video-js.min.css",
    )?;
    eprintln!("assembled the page in {WEB_OUT}/");
    Ok(())
}

/// The steps of `cargo xtask demo`: what each does and how long it takes
/// the first time on a fresh machine (2 cores), printed as it starts, so a
/// long build never looks like a hang.
const DEMO_STEPS: [(&str, &str); 4] = [
    (
        "checking what the page needs: the wasm32 target, wasm-bindgen-cli, npm packages",
        "seconds; the first time about 2 minutes, to compile wasm-bindgen-cli",
    ),
    (
        "building the browser client (release wasm) and the page",
        "about 1 minute the first time, seconds after",
    ),
    (
        "building meshcast",
        "about 3 minutes the first time, seconds after",
    ),
    (
        "starting the demo: origin, publisher, three nodes, relay, web page",
        "about 10 s; it prints the page's address, Ctrl-C stops it",
    ),
];

fn demo_step(index: usize) {
    let (what, how_long) = DEMO_STEPS[index];
    eprintln!("\n[{}/{}] {what} ({how_long})", index + 1, DEMO_STEPS.len());
}

fn demo(args: &[&str]) -> Result {
    demo_step(0);
    web_setup()?;
    demo_step(1);
    web()?;
    // Built with cargo's progress shown, then run: `cargo run --quiet` used
    // to compile for minutes without a word.
    demo_step(2);
    run("cargo", &["build", "-p", "meshcast"], None)?;
    demo_step(3);
    let mut all = vec!["demo", "--web", WEB_OUT];
    all.extend_from_slice(args);
    run("target/debug/meshcast", &all, None)
}

/// The benchmarks: `meshcast-bench` drives the `meshcast` binary next to it,
/// so both are built (release, fresh) before it runs. Reports go to
/// `bench/results/` (its default `--out`, relative to the workspace root).
fn bench(args: &[&str]) -> Result {
    run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "meshcast",
            "-p",
            "meshcast-bench",
        ],
        None,
    )?;
    run("target/release/meshcast-bench", args, None)
}

fn bench_browser(args: &[&str]) -> Result {
    web()?;
    run("cargo", &["build", "--release", "-p", "meshcast"], None)?;
    let mut all = vec![
        "web/e2e/bench.mjs",
        "--meshcast",
        "target/release/meshcast",
        "--web",
        WEB_OUT,
        "--out",
        "target/e2e",
    ];
    all.extend_from_slice(args);
    run("node", &all, None)
}

/// The end-to-end tests in headless Chromium; returns (passed, failed).
/// The end-to-end tests in headless Chromium, of the page `web()` built and
/// the `meshcast` the workspace's tests built (building it again alone would
/// recompile three crates with other features, for nothing).
fn browser_tests() -> Result<(u64, u64)> {
    if !std::path::Path::new("target/debug/meshcast").exists() {
        run("cargo", &["build", "-p", "meshcast"], None)?;
    }
    let args = [
        "web/e2e/e2e.mjs",
        "--meshcast",
        "target/debug/meshcast",
        "--web",
        WEB_OUT,
        "--out",
        "target/e2e",
    ];
    eprintln!("\n==> node {}", args.join(" "));
    let out = Command::new("node")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start node: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let summary = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("e2e: "))
        .ok_or("the end-to-end tests printed no `e2e:` summary")?;
    let count = |what: &str| {
        summary
            .split(',')
            .find_map(|part| part.trim().strip_suffix(what))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((count("passed"), count("failed")))
}

fn test() -> Result {
    let start = Instant::now();
    let tree_before = work_tree_status();
    run("cargo", &["fmt", "--all", "--check"], None)?;
    run("cargo", &["fmt", "--check"], Some("fuzz"))?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        None,
    )?;
    for krate in WASM_CRATES {
        run(
            "cargo",
            &[
                "clippy",
                "-p",
                krate,
                "--target",
                WASM_TARGET,
                "--",
                "-D",
                "warnings",
            ],
            None,
        )?;
    }
    // `-s none`: the sanitizers need a nightly compiler; coverage guidance does not.
    run("cargo", &["fuzz", "build", "-s", "none"], Some("fuzz"))?;
    for target in FUZZ_TARGETS {
        run(
            "cargo",
            &["fuzz", "run", "-s", "none", target, "--", "-runs=20000"],
            Some("fuzz"),
        )?;
    }
    // Before the tests: the network lab's browser viewer plays this page.
    web()?;
    let mut totals = run_tests(&["test", "--workspace", "--no-fail-fast"])?;
    let (passed, failed) = browser_tests()?;
    totals.passed += passed;
    totals.failed += failed;
    if failed > 0 {
        println!("tests: {totals}");
        return Err(format!(
            "{failed} end-to-end browser test(s) failed; see target/e2e/"
        ));
    }
    if let Err(changed) = unchanged_work_tree(tree_before) {
        println!("tests: {totals}");
        return Err(changed);
    }
    eprintln!(
        "\nall checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    println!("tests: {totals}");
    Ok(())
}

/// `git status --porcelain` of the work tree, or `None` outside a git checkout.
fn work_tree_status() -> Option<String> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The checks must leave the work tree as they found it: a rewritten lock
/// file or a stray output would otherwise change every fresh checkout's tree
/// (and a committed file out of sync with what the build uses is a bug).
fn unchanged_work_tree(before: Option<String>) -> Result {
    let (Some(before), Some(after)) = (before, work_tree_status()) else {
        eprintln!("(not a git checkout: the work tree check is skipped)");
        return Ok(());
    };
    if before == after {
        return Ok(());
    }
    let old: std::collections::BTreeSet<&str> = before.lines().collect();
    let changed: Vec<&str> = after.lines().filter(|l| !old.contains(l)).collect();
    Err(format!(
        "the checks changed the work tree (`git status --porcelain`); commit or ignore:\n{}",
        changed.join("\n")
    ))
}

/// Passed, failed and ignored tests, summed over every test binary.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

impl Totals {
    /// Adds a libtest line such as `test result: ok. 6 passed; 0 failed; 1 ignored; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo <args>`, passing its output through, and totals the results.
fn run_tests(args: &[&str]) -> Result<Totals> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let shown = format!("cargo {}", args.join(" "));
    eprintln!("\n==> {shown}");
    let start = Instant::now();
    let mut child = Command::new("cargo")
        .args(args)
        // The workspace's test build has built `meshcast` next to
        // `meshcast-bench`: its tests need not build it again.
        .env("BENCH_TEST_MESHCAST_BUILT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("`{shown}`: {e}"))?;
    if !status.success() {
        println!("tests: {totals}");
        return Err(format!("`{shown}` failed ({status})"));
    }
    eprintln!("<== {shown}: ok in {:.1} s", start.elapsed().as_secs_f64());
    Ok(totals)
}

fn fuzz(target: &str, seconds: &str) -> Result {
    if !FUZZ_TARGETS.contains(&target) {
        return Err(format!(
            "unknown fuzz target {target:?}; targets: {}",
            FUZZ_TARGETS.join(", ")
        ));
    }
    if seconds.parse::<u32>().is_err() {
        return Err(format!("seconds must be a whole number, got {seconds:?}"));
    }
    let time = format!("-max_total_time={seconds}");
    run(
        "cargo",
        &["fuzz", "run", "-s", "none", target, "--", &time],
        Some("fuzz"),
    )
}

#[cfg(test)]
mod tests {
    use super::DEMO_STEPS;

    /// A newcomer's first `cargo xtask demo` compiles for minutes: every step
    /// says what it does and how long it takes, in minutes or seconds.
    #[test]
    fn every_demo_step_says_what_it_does_and_how_long() {
        for (what, how_long) in DEMO_STEPS {
            assert!(what.len() > 10, "{what:?}");
            assert!(
                how_long.contains("minute")
                    || how_long.contains("second")
                    || how_long.contains(" s"),
                "{what}: {how_long:?}"
            );
        }
    }
}
