//! A `meshcast node` process inside a lab host (`ip netns exec`), as a
//! volunteer runs it: killed with SIGKILL when the scenario says so or when
//! dropped, and by the kernel when this process dies (so no node outlives
//! a killed run; namespaces are the guardian's).
//!
//! What the scenario reads from it: its `/metrics` (served on the host's
//! loopback, read from a thread inside the host) and the segments in its
//! cache directory, whose header files' modification times say when each
//! segment arrived (the cache writes a segment once, when it is stored).

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use meshcast_proto::StreamId;

use crate::net::Host;

/// Where every process serves its metrics, on its host's loopback.
const METRICS: &str = "127.0.0.1:9464";
/// Largest `/metrics` page read.
const METRICS_MAX: u64 = 1 << 20;

/// A running `meshcast node`.
pub struct Process {
    pub host: Host,
    /// Its peer id, as it printed it.
    pub peer: libp2p::PeerId,
    dir: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `meshcast` (at `bin`) as `node` on `host` with `args` besides
    /// its data and cache directories under `dir` and its metrics address,
    /// and waits until it prints its peer id. Call it from a thread that
    /// lives as long as the node should (see [`die_with_parent`]): not from
    /// a blocking pool.
    pub async fn start(
        bin: &Path,
        host: &Host,
        dir: PathBuf,
        args: &[String],
    ) -> Result<Process, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stdout = std::fs::File::create(dir.join("stdout"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let stderr = std::fs::File::create(dir.join("stderr"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut command = command_in(host, bin);
        command
            .arg("node")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(["--metrics-listen", METRICS])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("MESHCAST_LAB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // `meshcast` reads MESHCAST_* variables as configuration: the
        // volunteers get only their flags.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MESHCAST_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut process = Process {
            host: host.clone(),
            peer: libp2p::PeerId::random(),
            dir,
            child: Some(child),
        };
        process.peer = process
            .line("peer", Duration::from_secs(60))
            .await?
            .parse()
            .map_err(|e| format!("the node printed a bad peer id: {e}"))?;
        Ok(process)
    }

    /// The rest of the first stdout line starting with `prefix `, waiting up
    /// to `timeout` for it.
    pub async fn line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default();
            if let Some(rest) = out
                .lines()
                .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
            {
                return Ok(rest.to_string());
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("killed".into()),
            };
            if exited.is_some() || Instant::now() >= deadline {
                let err = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(10).collect();
                return Err(format!(
                    "meshcast node on {} {} before printing `{prefix}`; its stderr ends:\n{}",
                    self.host.netns,
                    exited.map_or("took too long".into(), |s| format!("exited ({s})")),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it still runs.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no goodbye to its peers, as when a volunteer's box loses
    /// power.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its `/metrics` page.
    pub fn metrics(&self) -> Result<Metrics, String> {
        let netns = self.host.netns.clone();
        self.host
            .enter(move || scrape(METRICS))
            .map(Metrics)
            .map_err(|e| format!("metrics of the node on {netns}: {e}"))
    }

    /// The media segments of `stream` it stored, with their arrival times.
    pub fn stored(&self, stream: &StreamId) -> Vec<(u64, SystemTime)> {
        let dir = self.dir.join("cache").join(stream.to_string());
        let mut found = Vec::new();
        let renditions = std::fs::read_dir(&dir).into_iter().flatten().flatten();
        for rendition in renditions {
            let files = std::fs::read_dir(rendition.path()).into_iter().flatten();
            for file in files.flatten() {
                let name = file.file_name();
                let Some(sequence) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("media-"))
                    .and_then(|n| n.strip_suffix(".header"))
                    .and_then(|n| n.parse().ok())
                else {
                    continue;
                };
                if let Ok(modified) = file.metadata().and_then(|m| m.modified()) {
                    found.push((sequence, modified));
                }
            }
        }
        found
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include every one of
    /// `labels` (`key="value"`); 0 without any.
    pub fn value(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let rest = series.strip_prefix(name)?;
                if !(rest.is_empty() || rest.starts_with('{')) {
                    return None;
                }
                labels
                    .iter()
                    .all(|label| rest.contains(label))
                    .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }
}

/// A plain HTTP/1.0 GET of `/metrics` at `addr`, with a size limit and
/// timeouts (blocking: called on a thread inside a host).
fn scrape(addr: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: lab\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .take(METRICS_MAX)
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// `program` run on `host` (`ip netns exec`, which becomes `program`),
/// killed by the kernel when the thread that spawns it ends (this process
/// dying included, by any signal), so a killed run leaves no process
/// running. Spawn it from a thread that lives as long as the process
/// should: not from a blocking pool.
pub fn command_in(host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &host.netns]).arg(program);
    die_with_parent(&mut command);
    command
}

/// Makes the kernel kill the child when the thread that started it ends
/// (this process dying included), so a killed run leaves no node running.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, raise).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn a_metric_is_the_sum_of_the_samples_with_the_labels() {
        let page = Metrics(
            "# TYPE meshcast_bytes_total counter\n\
             meshcast_bytes_total{direction=\"in\",class=\"origin\"} 1500\n\
             meshcast_bytes_total{direction=\"in\",class=\"mesh\"} 9000\n\
             meshcast_bytes_total_other 7\n\
             meshcast_bans_total 2\n"
                .into(),
        );
        let origin = page.value(
            "meshcast_bytes_total",
            &["direction=\"in\"", "class=\"origin\""],
        );
        assert_eq!(origin, 1500.0);
        assert_eq!(
            page.value("meshcast_bytes_total", &["direction=\"in\""]),
            10500.0
        );
        assert_eq!(page.value("meshcast_bans_total", &[]), 2.0);
        assert_eq!(page.value("meshcast_missing", &[]), 0.0);
    }
}
