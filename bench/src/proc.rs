//! Child processes of the benches, and what `/proc` says about processes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

/// Lines of a child's standard error kept for error messages.
const STDERR_TAIL: usize = 20;
/// Standard-output lines queued before the reader thread waits for us.
const STDOUT_QUEUE: usize = 4096;

/// Memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Peak resident set size (VmHWM), bytes.
    pub peak: u64,
    /// Resident set size now (VmRSS), bytes.
    pub now: u64,
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Bytes in MB (10⁶), the unit of the memory figures.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let peak = status_kib(&status, "VmHWM:").with_context(|| format!("{path} has no VmHWM"))?;
    let now = status_kib(&status, "VmRSS:").with_context(|| format!("{path} has no VmRSS"))?;
    Ok(Memory {
        peak: peak * 1024,
        now: now * 1024,
    })
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`
/// (`self` for this process).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path} is malformed"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {} is missing", i + 3))
    };
    // utime and stime, in clock ticks; USER_HZ is 100 on every Linux we run on.
    Ok((field(11)? + field(12)?) / 100.0)
}

/// A child process: killed (and reaped) on drop, dies with this process,
/// standard output read line by line, the tail of standard error kept.
pub struct Spawned {
    pub name: String,
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Spawned {
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        // MESHCAST_BENCH_LOGS=1: children log to our standard error (with
        // RUST_LOG, e.g. RUST_LOG=meshcast_node=debug), for debugging a bench.
        let inherit = std::env::var_os("MESHCAST_BENCH_LOGS").is_some_and(|v| v == "1");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if inherit {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .env("NO_COLOR", "1")
            // Its own process group: a Ctrl-C in the terminal reaches only the
            // bench, which stops its children and cleans up.
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {name} ({command:?})"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the child's standard output")?;
        let stderr_pipe = child.stderr.take();
        let (tx, lines) = mpsc::channel(STDOUT_QUEUE);
        std::thread::Builder::new()
            .name(format!("bench-{name}-out"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // Keep reading after the receiver is gone: a child whose
                    // standard output is closed fails when it prints.
                    let _ = tx.blocking_send(line);
                }
            })
            .context("starting a thread to read a child's output")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        if let Some(pipe) = stderr_pipe {
            std::thread::Builder::new()
                .name(format!("bench-{name}-err"))
                .spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if tail.len() == STDERR_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                })
                .context("starting a thread to read a child's errors")?;
        }
        Ok(Self {
            name: name.to_string(),
            child,
            stdin,
            lines,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the child wrote to standard error.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status})"),
            _ => "it is still running".to_string(),
        };
        anyhow::anyhow!(
            "the {} {what}; {status}; its last errors:\n{}",
            self.name,
            self.stderr_tail()
        )
    }

    /// The next standard-output line, `None` at the end of output or at `until`.
    pub async fn next_line(&mut self, until: tokio::time::Instant) -> Option<String> {
        tokio::time::timeout_at(until, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a line `<prefix> <rest>` and returns `rest`.
    pub async fn line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            match self.next_line(until).await {
                Some(line) if line.trim() == prefix => return Ok(String::new()),
                Some(line) => {
                    if let Some(rest) = line.strip_prefix(prefix).and_then(|r| r.strip_prefix(' '))
                    {
                        return Ok(rest.trim().to_string());
                    }
                }
                None if tokio::time::Instant::now() >= until => {
                    return Err(self.failure(&format!("printed no `{prefix}` line in {timeout:?}")));
                }
                None => return Err(self.failure(&format!("closed its output before `{prefix}`"))),
            }
        }
    }

    /// Writes one line to the child's standard input.
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("the {}'s standard input is closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the {}", self.name))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a `meshcast node` or `relay` command a browser gateway on loopback
/// (ephemeral ports) with room for `sessions` viewers in all, keeping the
/// default per-address limits (viewers from many addresses).
pub fn serve_browsers_from_many(command: &mut Command, sessions: usize) {
    command.args([
        "--browser-listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
        "--max-sessions",
        &(sessions + 16).to_string(),
    ]);
}

/// Makes a `meshcast node` or `relay` command a browser gateway on loopback
/// (ephemeral ports) with room for `sessions` viewers, all from one address.
pub fn serve_browsers(command: &mut Command, sessions: usize) {
    serve_browsers_from_many(command, sessions);
    let limit = (sessions + 16).to_string();
    command.args(["--max-sessions-per-ip", &limit]);
    // Every viewer of these benches connects from 127.0.0.1 at once.
    command
        .env("MESHCAST_GATEWAY__CONNECTION_BURST_PER_IP", &limit)
        .env("MESHCAST_GATEWAY__CONNECTIONS_PER_SECOND_PER_IP", &limit);
}

/// Environment variable naming the `meshcast` binary the benches run.
pub const MESHCAST_BIN: &str = "MESHCAST_BIN";

/// The `meshcast` binary: `$MESHCAST_BIN`, else the one next to this program
/// (`cargo build` puts both in the same target directory).
pub fn meshcast_path() -> anyhow::Result<PathBuf> {
    let (path, whence) = match std::env::var_os(MESHCAST_BIN).filter(|v| !v.is_empty()) {
        Some(path) => (PathBuf::from(path), format!("named by {MESHCAST_BIN}")),
        None => {
            let me = std::env::current_exe().context("finding the meshcast-bench binary")?;
            let dir = me
                .parent()
                .context("the meshcast-bench binary has no parent directory")?;
            (dir.join("meshcast"), format!("next to {}", me.display()))
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "the meshcast binary {} ({whence}) is missing: build it with `cargo build -p meshcast` (or --release), or set {MESHCAST_BIN} to a meshcast binary",
        path.display()
    );
    Ok(path)
}

/// `Command` for `meshcast` (see [`meshcast_path`]), with `RUST_LOG=error`
/// unless the caller's environment says otherwise.
pub fn meshcast() -> anyhow::Result<Command> {
    let mut command = Command::new(meshcast_path()?);
    // `meshcast` reads MESHCAST_* variables as configuration, and would
    // refuse this one as an unknown key.
    command.env_remove(MESHCAST_BIN);
    // Every origin a bench runs is on loopback: let nodes fall back to it.
    command.env("MESHCAST_NODE__ALLOW_PRIVATE_ORIGINS", "true");
    Ok(quiet(command))
}

/// `meshcast node` on loopback with its own data directory and a metrics
/// endpoint on an ephemeral port (printed on its `metrics` line): the
/// process the node benches measure. Add its other flags.
pub fn meshcast_node(data_dir: &std::path::Path) -> anyhow::Result<Command> {
    let mut command = meshcast()?;
    command.arg("node").arg("--data-dir").arg(data_dir).args([
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    Ok(command)
}

/// This program (`meshcast-bench`), for its hidden `peer` and `node`
/// subcommands.
pub fn bench_self() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the meshcast-bench binary")
}

/// `RUST_LOG=error` for a child unless the caller's environment says otherwise.
pub fn quiet(mut command: Command) -> Command {
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "error");
    }
    command
}

/// Makes the kernel kill the child when this process dies, however it dies
/// (even by SIGKILL), so a killed bench leaves no process behind.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, raise).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// The text of a child's `/metrics` page at `url` (as it printed it).
pub async fn scrape(url: &str) -> anyhow::Result<String> {
    let http = meshcast_node::ingest::source::http_client(&Default::default())?;
    let url = url::Url::parse(url).with_context(|| format!("the node printed a bad URL {url}"))?;
    let body = meshcast_node::ingest::source::fetch_url(&http, &url, 4 << 20).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of an unlabelled Prometheus gauge (the sum over its label sets otherwise).
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
