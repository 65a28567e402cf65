//! The demo's child processes: started, watched, stopped together.

use super::*;

/// One child process of the demo.
pub(super) struct Child {
    pub(super) role: String,
    pub(super) process: std::process::Child,
    /// Its standard error, unless --verbose.
    pub(super) log: Option<PathBuf>,
    /// Its standard output, line by line, from a reader thread.
    pub(super) lines: mpsc::UnboundedReceiver<String>,
    /// Lines read so far and not consumed by [`Children::line`].
    pub(super) seen: VecDeque<String>,
    pub(super) exited: Option<ExitStatus>,
}

pub(super) struct Children {
    pub(super) exe: PathBuf,
    pub(super) logs: PathBuf,
    pub(super) verbose: bool,
    pub(super) list: Vec<Child>,
    pub(super) relay_gone: bool,
    /// What start-up is doing, for progress lines and a timeout message.
    pub(super) step: &'static str,
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Children {
    pub(super) fn step(&mut self, step: &'static str) {
        eprintln!("demo: {step}…");
        self.step = step;
    }

    /// Starts `meshcast <args>` as `role`; returns its index.
    pub(super) fn spawn(&mut self, role: &str, args: &[&str]) -> anyhow::Result<usize> {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            // The demo's origin is on loopback: let its nodes fall back to it.
            .env("MESHCAST_NODE__ALLOW_PRIVATE_ORIGINS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only the
            // demo, which stops the children in order.
            .process_group(0);
        let log = if self.verbose {
            command.stderr(Stdio::inherit());
            None
        } else {
            let path = self.logs.join(format!("{role}.log"));
            // Appended to: a restarted child keeps its first run's log.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            // Plain text in files: no terminal colour codes.
            command.stderr(file).env("NO_COLOR", "1");
            Some(path)
        };
        crate::child::die_with_parent(&mut command);
        let mut process = command
            .spawn()
            .with_context(|| format!("starting the {role} ({})", self.exe.display()))?;
        let stdout = process
            .stdout
            .take()
            .context("the child's standard output")?;
        let (tx, lines) = mpsc::unbounded_channel();
        let echo = self.verbose.then(|| role.to_string());
        std::thread::Builder::new()
            .name(format!("demo-{role}-stdout"))
            .spawn(move || {
                // Read to the end even when nobody listens any more: a child
                // whose stdout is closed fails when it prints.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(role) = &echo {
                        eprintln!("[{role}] {line}");
                    }
                    let _ = tx.send(line);
                }
            })
            .context("starting a thread to read a child's output")?;
        self.list.push(Child {
            role: role.to_string(),
            process,
            log,
            lines,
            seen: VecDeque::new(),
            exited: None,
        });
        Ok(self.list.len() - 1)
    }

    /// Stops child `index` (SIGINT, killed after the grace period) and starts
    /// it again with `args`, under the same role; returns the new child's
    /// index. The old one counts as gone, not as failed.
    pub(super) fn restart(&mut self, index: usize, args: &[&str]) -> anyhow::Result<usize> {
        let role = self.list[index].role.clone();
        let child = &mut self.list[index];
        if let Ok(pid) = libc::pid_t::try_from(child.process.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our own unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        let status = loop {
            match child.process.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if Instant::now() >= deadline => {
                    let _ = child.process.kill();
                    break child.process.wait().ok();
                }
                _ => std::thread::sleep(Duration::from_millis(25)),
            }
        };
        child.exited = status;
        child.role = format!("{role} (before its restart)");
        self.spawn(&role, args)
    }

    /// Waits for the child's next stdout line starting with `prefix `, and
    /// returns the rest. Fails, with the tail of its log, if the child exits first.
    pub(super) async fn line(&mut self, index: usize, prefix: &str) -> anyhow::Result<String> {
        let child = &mut self.list[index];
        loop {
            while let Some(line) = child.seen.pop_front() {
                if let Some(rest) = line.strip_prefix(prefix).and_then(|r| r.strip_prefix(' ')) {
                    return Ok(rest.trim().to_string());
                }
            }
            match child.lines.recv().await {
                Some(line) => child.seen.push_back(line),
                None => break,
            }
        }
        // Standard output closed: the child is ending.
        let status = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Ok(Some(status)) = child.process.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if let Ok(status) = status {
            child.exited = Some(status);
        }
        let how = status.map_or_else(
            |_| "closed its output".to_string(),
            |s| format!("exited ({s})"),
        );
        bail!(
            "the {} {how} before printing `{prefix}`{}",
            child.role,
            tail(child)
        )
    }

    /// Fails if a child has exited, unless it is the relay and `relay_may_stop`:
    /// the relay's end is then reported once.
    pub(super) fn check(&mut self, relay_may_stop: bool) -> anyhow::Result<()> {
        for child in &mut self.list {
            if child.exited.is_some() {
                continue;
            }
            let status = child
                .process
                .try_wait()
                .with_context(|| format!("checking on the {}", child.role))?;
            let Some(status) = status else { continue };
            child.exited = Some(status);
            if child.role == RELAY && relay_may_stop {
                if !self.relay_gone {
                    self.relay_gone = true;
                    eprintln!(
                        "demo: relay stopped ({status}); the rest keeps running, but the page's entry gateway is gone"
                    );
                }
                continue;
            }
            bail!(
                "the {} exited unexpectedly ({status}){}",
                child.role,
                tail(child)
            );
        }
        Ok(())
    }

    /// The tail of `role`'s log, for an error message.
    pub(super) fn tail_of(&self, role: &str) -> String {
        self.list
            .iter()
            .find(|c| c.role == role)
            .map_or_else(String::new, tail)
    }

    /// SIGINT to every running child, SIGKILL to those still running after
    /// [`STOP_GRACE`]. Idempotent.
    pub(super) fn stop_all(&mut self) {
        for child in self.list.iter_mut().rev() {
            if child.exited.is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.process.try_wait() {
                child.exited = Some(status);
                continue;
            }
            if let Ok(pid) = libc::pid_t::try_from(child.process.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is
                // our own unreaped child, so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let mut running = 0;
            for child in &mut self.list {
                if child.exited.is_none() {
                    match child.process.try_wait() {
                        Ok(Some(status)) => child.exited = Some(status),
                        _ => running += 1,
                    }
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        for child in &mut self.list {
            if child.exited.is_none() {
                eprintln!(
                    "demo: the {} did not stop within {}s, killing it",
                    child.role,
                    STOP_GRACE.as_secs()
                );
                let _ = child.process.kill();
                child.exited = child.process.wait().ok();
            }
        }
    }
}

/// The last lines of a child's log, as a suffix for an error message.
pub(super) fn tail(child: &Child) -> String {
    const LINES: usize = 20;
    let Some(path) = &child.log else {
        return "; its log went to this terminal".to_string();
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("; cannot read its log {}: {e}", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "; its log is empty".to_string();
    }
    let start = lines.len().saturating_sub(LINES);
    format!("; the end of its log:\n  {}", lines[start..].join("\n  "))
}
