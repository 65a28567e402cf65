//! A headless Chromium viewer in a lab host: the demo page, playing the
//! lab's stream through a gateway with the origin as its HTTP fallback, as a
//! browser on a home line would.
//!
//! `web/e2e/lab-viewer.mjs` runs under `ip netns exec`, so Chromium's
//! sockets are the host's and its packets cross the host's router and link.
//! It serves the page on the host's loopback because WebTransport needs a
//! secure context, and `http://127.0.0.1` is one where a lab address is not.
//! The script prints what the page measured as one JSON line; the process
//! group (node and Chromium) is killed when the viewer is dropped, and the
//! kernel kills node if this process dies.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshcast_proto::StreamId;

use crate::net::Host;

/// Where Chromium is, unless `CHROMIUM` says otherwise (as in the e2e tests).
const CHROMIUM: &str = "/usr/bin/chromium";
/// Beyond the playing time: Chromium's start, the page's first frame, and
/// closing down.
const GRACE: Duration = Duration::from_secs(120);
/// Largest output read from the script.
const OUTPUT_MAX: u64 = 1 << 20;

/// The script and the page it serves.
#[derive(Debug, Clone)]
pub struct Browser {
    /// `web/e2e/lab-viewer.mjs`.
    pub script: PathBuf,
    /// The built page (`cargo xtask web` writes it to `target/web`).
    pub web: PathBuf,
}

/// What the page is told (its `/config.json`).
#[derive(Debug, Clone)]
pub struct Page {
    /// The live master playlist on the origin.
    pub playlist: String,
    /// The gateway's `/.well-known/meshcast`.
    pub well_known: String,
    pub stream: StreamId,
}

/// What the page measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Playback {
    /// Seconds the playhead advanced over the watching time.
    pub played: f64,
    /// Spans over 250 ms with the playhead stuck, after the first frame.
    pub stalls: usize,
    pub longest_stall: Duration,
    /// Segment bytes the page got over the gateway and over HTTP.
    pub mesh_bytes: u64,
    pub http_bytes: u64,
    pub verify_failed: u64,
    pub segment_failed: u64,
    pub first_frame: Duration,
    /// A fatal player error, if any.
    pub error: Option<String>,
}

impl Playback {
    /// The share of segment bytes that came over the gateway.
    pub fn mesh_share(&self) -> f64 {
        self.mesh_bytes as f64 / (self.mesh_bytes + self.http_bytes).max(1) as f64
    }
}

impl Browser {
    /// The script and the page of the workspace at `root`.
    pub fn in_workspace(root: &Path) -> Browser {
        Browser {
            script: root.join("web/e2e/lab-viewer.mjs"),
            web: root.join("target/web"),
        }
    }

    /// Why no browser viewer can run here, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        if Command::new("node").arg("--version").output().is_err() {
            return Some("`node` is missing (Node.js 20 or newer)".into());
        }
        let chromium = chromium();
        if !Path::new(&chromium).exists() {
            return Some(format!("no Chromium at {chromium} (cargo xtask setup)"));
        }
        let modules = self.script.parent().and_then(Path::parent);
        let playwright = modules.map(|web| web.join("node_modules/playwright-core"));
        if !playwright.is_some_and(|p| p.exists()) {
            return Some("web/node_modules has no playwright-core (cargo xtask setup)".into());
        }
        if !self.web.join("index.html").exists() {
            return Some(format!(
                "no page in {} (cargo xtask web builds it)",
                self.web.display()
            ));
        }
        None
    }

    /// Starts a viewer on `host` that plays `page` for `seconds` once the
    /// first frame is shown; its page log and output go to `dir`.
    pub fn watch(
        &self,
        host: &Host,
        page: &Page,
        seconds: Duration,
        dir: &Path,
    ) -> Result<Watching, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stdout = dir.join("stdout");
        let create = |path: &Path| {
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut command = crate::process::command_in(host, "node");
        command
            .arg(&self.script)
            .arg("--web")
            .arg(&self.web)
            .args(["--playlist", &page.playlist])
            .args(["--well-known", &page.well_known])
            .args(["--stream", &page.stream.to_string()])
            .args(["--seconds", &seconds.as_secs_f64().to_string()])
            .arg("--log")
            .arg(dir.join("page.log"))
            .env("CHROMIUM", chromium())
            .stdin(Stdio::null())
            .stdout(create(&stdout)?)
            .stderr(create(&dir.join("stderr"))?)
            // Node and Chromium in a group of their own, killed together.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting the browser viewer: {e}"))?;
        Ok(Watching {
            child: Some(child),
            page_log: dir.join("page.log"),
            stdout,
            deadline: Instant::now() + seconds + GRACE,
        })
    }
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into())
}

/// A browser viewer playing; killed (with its Chromium) when dropped.
pub struct Watching {
    child: Option<Child>,
    stdout: PathBuf,
    page_log: PathBuf,
    deadline: Instant,
}

impl Watching {
    /// Waits for the viewer to finish and returns what its page measured.
    pub async fn finish(mut self) -> Result<Playback, String> {
        let status = loop {
            let Some(child) = self.child.as_mut() else {
                return Err("the browser viewer was killed".into());
            };
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < self.deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(None) => return Err("the browser viewer did not finish in time".into()),
                Err(e) => return Err(format!("the browser viewer: {e}")),
            }
        };
        self.child = None;
        let out = read_limited(&self.stdout)?;
        if let Some(line) = out.lines().find_map(|l| l.strip_prefix("lab-viewer ")) {
            return parse(line);
        }
        let why = out
            .lines()
            .find_map(|l| l.strip_prefix("lab-viewer-error "))
            .unwrap_or("no output");
        // The page's own log says why; the scratch directory may not outlive
        // the error.
        let log = read_limited(&self.page_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        Err(format!(
            "the browser viewer failed ({status}): {why}; the page log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) of the group this child leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(OUTPUT_MAX)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// The script's report line.
fn parse(json: &str) -> Result<Playback, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the browser viewer's report: {e}"))?;
    let number = |v: &serde_json::Value| v.as_f64().filter(|n| n.is_finite() && *n >= 0.0);
    let count = |key: &str| number(&value[key]).map_or(0, |n| n as u64);
    let stalls = value["stalls"].as_array().cloned().unwrap_or_default();
    let longest = stalls
        .iter()
        .filter_map(|s| number(&s["ms"]))
        .fold(0.0, f64::max);
    Ok(Playback {
        played: number(&value["played"]).ok_or("the report has no `played`")?,
        stalls: stalls.len(),
        longest_stall: Duration::from_secs_f64(longest / 1000.0),
        mesh_bytes: number(&value["totals"]["meshBytes"]).map_or(0, |n| n as u64),
        http_bytes: number(&value["totals"]["httpBytes"]).map_or(0, |n| n as u64),
        verify_failed: count("verifyFailed"),
        segment_failed: count("segmentFailed"),
        first_frame: Duration::from_secs_f64(number(&value["ttffMs"]).unwrap_or(0.0) / 1000.0),
        error: value["error"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_report_is_read() {
        let line = r#"{"played":20.4,"stalls":[{"at":1200.5,"ms":300},{"at":9000,"ms":820,"ongoing":true}],"totals":{"meshBytes":9000000,"httpBytes":1000000,"meshSegments":9,"httpSegments":2,"offload":0.9},"verifyFailed":0,"segmentFailed":1,"ttffMs":850,"error":null}"#;
        let p = parse(line).expect("parses");
        assert_eq!(p.stalls, 2);
        assert_eq!(p.longest_stall, Duration::from_millis(820));
        assert_eq!((p.mesh_bytes, p.http_bytes), (9_000_000, 1_000_000));
        assert!((p.mesh_share() - 0.9).abs() < 1e-9);
        assert_eq!((p.verify_failed, p.segment_failed), (0, 1));
        assert_eq!(p.first_frame, Duration::from_millis(850));
        assert_eq!(p.error, None);
        assert!(parse(r#"{"stalls":[]}"#).is_err(), "no played");
        assert!(parse("not json").is_err());
    }
}
