//! `meshcast` child processes for the tests that wire real processes together.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `meshcast` child process, killed on drop, with every line it writes.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Proc {
    pub fn start(name: &'static str, args: &[&str], rust_log: &str) -> Proc {
        Self::start_env(name, args, &[("RUST_LOG", rust_log)])
    }

    pub fn start_env(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshcast"))
            .args(args)
            .env_remove("MESHCAST_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meshcast");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Proc {
            name,
            child,
            stdout,
            stderr,
        }
    }

    /// The rest of every stdout line starting with `prefix `, waiting up to
    /// 30 s for the first.
    pub fn lines(&mut self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found: Vec<String> = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
                .map(str::to_string)
                .collect();
            if !found.is_empty() {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing `{prefix}`; stderr:\n{}",
                    self.name,
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` line from {}; stderr:\n{}",
                self.name,
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn line(&mut self, prefix: &str) -> String {
        self.lines(prefix).remove(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to end.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 10 s of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes a publisher key with `meshcast keygen`.
pub fn keygen(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcast"))
        .args(["keygen", "--out", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
}

pub fn media_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("media/test-stream")
}

/// The committed test stream served in this process, and a `meshcast
/// publish` process of its `playlist` (e.g. `live/master.m3u8`) with a new
/// key in `dir`.
pub fn start_publisher(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    playlist: &str,
    name: &str,
) -> (meshcast_origin::Running, Proc) {
    let d = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let origin = runtime
        .block_on(meshcast_origin::spawn(
            media_dir(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .expect("origin");
    keygen(Path::new(&d("publisher.key")));
    let playlist = format!("{}/{playlist}", origin.url());
    let publisher = Proc::start(
        "publisher",
        &[
            "publish",
            "--origin",
            &playlist,
            "--key",
            &d("publisher.key"),
            "--name",
            name,
            "--data-dir",
            &d("pub"),
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ],
        "warn",
    );
    (origin, publisher)
}
