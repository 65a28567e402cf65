//! Project tasks: `cargo xtask <task>`.
//!
//! `test` is the one command that runs every check; it first installs what the
//! checks need (idempotent, quick when everything is there), so it works on a
//! fresh machine and is what `.ci/run` calls.

use std::process::{Command, ExitCode};
use std::time::Instant;

/// The cargo-fuzz release the fuzz targets are built with; pinned so a new
/// release cannot change flags under CI.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Crates that also build for the browser.
const WASM_CRATES: &[&str] = &["meshcast-proto"];
const FUZZ_TARGETS: &[&str] = &["frame_decoder", "header_verify"];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  setup                 install what the checks need (rustup components and targets, cargo-fuzz)
  test [--no-setup]     setup, then every check: fmt, clippy (host and wasm32), the wasm32
                        build, the fuzz targets (built and run briefly), and all tests
  fuzz TARGET [SECONDS] run one fuzz target (frame_decoder, header_verify); default 60 s";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["setup"] => setup(),
        ["test"] => setup().and_then(|()| test()),
        ["test", "--no-setup"] => test(),
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

fn setup() -> Result {
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

fn test() -> Result {
    let start = Instant::now();
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
        run(
            "cargo",
            &["build", "-p", krate, "--target", WASM_TARGET],
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
    // Last, so the test summary closes the output.
    let totals = run_tests(&["test", "--workspace", "--no-fail-fast"])?;
    eprintln!(
        "\nall checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    println!("tests: {totals}");
    Ok(())
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
