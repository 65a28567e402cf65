//! A host's link to the WAN: its rates, delay, jitter and loss.
//!
//! Rates are `tbf` qdiscs, on the host side's egress for the uplink and on
//! the bridge side's egress for the downlink. Delay, jitter and loss come
//! from `netem` where the kernel has it; otherwise (this machine's kernel
//! has none) the link is a pair of TAP devices, one in each namespace, and a
//! small forwarder of ours moves every frame between them after its delay,
//! or drops it: real packets of the real stack cross it either way. Which
//! one a lab uses is [`Impairment::detect`]'s answer, stated in reports.
//!
//! The forwarder keeps each direction in order (a frame leaves no earlier
//! than the one before it, as on a real line: jitter never reorders) and
//! bounds its queue (frames beyond it are dropped, as a router would).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The conditions of one host's link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Link {
    /// Uplink rate (host to WAN) in bit/s; `None` for the veth's own.
    pub up: Option<u64>,
    /// Downlink rate (WAN to host) in bit/s.
    pub down: Option<u64>,
    /// One-way delay, each direction: the round trip between two hosts is
    /// twice the sum of their delays.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within ± this.
    pub jitter: Duration,
    /// Fraction of frames dropped, each direction.
    pub loss: f64,
}

impl Link {
    /// Whether delay, jitter or loss is asked for (rates alone need no
    /// impairment stage).
    pub fn impaired(&self) -> bool {
        !self.delay.is_zero() || !self.jitter.is_zero() || self.loss > 0.0
    }

    /// Checks the figures: a clear message, never a panic later.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.loss) {
            return Err(format!("loss {} is not in [0, 1)", self.loss));
        }
        if self.jitter > self.delay {
            return Err(format!(
                "jitter {:?} is larger than the delay {:?}",
                self.jitter, self.delay
            ));
        }
        for rate in [self.up, self.down].into_iter().flatten() {
            if rate < 8_000 {
                return Err(format!("rate {rate} bit/s is below 8 kbit/s"));
            }
        }
        Ok(())
    }
}

/// How delay and loss are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impairment {
    /// The kernel's `netem` qdisc.
    Netem,
    /// TAP devices and this crate's forwarder.
    Userspace,
}

impl Impairment {
    /// `netem` if this kernel has it (tried on a scratch namespace's
    /// loopback), else the userspace stage.
    pub fn detect() -> Impairment {
        let ns = format!("mlprobe{}", std::process::id());
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .is_ok_and(|o| o.status.success());
        if !made {
            return Impairment::Userspace;
        }
        let netem = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                "1ms",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        if netem {
            Impairment::Netem
        } else {
            Impairment::Userspace
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Impairment::Netem => "netem",
            Impairment::Userspace => "a userspace stage (TAP devices and a forwarder)",
        }
    }
}

/// The `tc` arguments of a `tbf` at `rate` bit/s with a queue of about
/// 200 ms, a home router's buffer.
pub fn tbf_args(rate: u64) -> Vec<String> {
    // The bucket must hold at least one full frame, and a few ms of rate
    // so the shaper's timer granularity does not cap the rate.
    let burst = (rate / 8 / 200).max(3_000);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{rate}bit"),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "200ms".into(),
    ]
}

/// The `tc` arguments of a `netem` with `link`'s delay, jitter and loss.
pub fn netem_args(link: &Link) -> Vec<String> {
    let mut args = vec![
        "netem".into(),
        "delay".into(),
        format!("{}us", link.delay.as_micros()),
    ];
    if !link.jitter.is_zero() {
        args.push(format!("{}us", link.jitter.as_micros()));
    }
    if link.loss > 0.0 {
        args.extend(["loss".into(), format!("{}%", link.loss * 100.0)]);
    }
    args
}

/// Opens a TAP device named `name` in the calling thread's namespace. It
/// lives as long as the returned descriptor.
pub fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!(
            "interface name {name} is too long"
        )));
    }
    // SAFETY: a plain open of a path we own the string of.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: the name, then a union whose first member is the flags.
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `ifreq` is as
    // large as.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, ifreq.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Most frames queued in one direction: beyond it frames are dropped (at
/// 10 Mbit/s, over a second of 1,500-byte frames).
const MAX_QUEUED: usize = 1024;

/// Moves frames from `from` to `to` after `link`'s delay, dropping `loss`
/// of them. Runs until the task is dropped.
pub async fn forward(
    from: Arc<AsyncFd<OwnedFd>>,
    to: Arc<AsyncFd<OwnedFd>>,
    link: Link,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut last_release = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = queue.front().map(|(at, _)| *at);
        tokio::select! {
            ready = from.readable() => {
                let Ok(mut guard) = ready else { return };
                loop {
                    // SAFETY: reads into a buffer we own, at most its length.
                    let n = unsafe {
                        libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            guard.clear_ready();
                            break;
                        }
                        return;
                    }
                    if n == 0 {
                        return;
                    }
                    if link.loss > 0.0 && rng.r#gen::<f64>() < link.loss {
                        continue;
                    }
                    if queue.len() >= MAX_QUEUED {
                        continue;
                    }
                    let jitter = if link.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        link.jitter.mul_f64(rng.r#gen::<f64>() * 2.0)
                    };
                    let at = (Instant::now() + link.delay + jitter)
                        .checked_sub(link.jitter)
                        .unwrap_or_else(Instant::now)
                        .max(last_release);
                    last_release = at;
                    queue.push_back((at, buf[..n as usize].to_vec()));
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while queue.front().is_some_and(|(at, _)| *at <= now) {
                    let Some((_, frame)) = queue.pop_front() else { break };
                    // A full TAP queue drops the frame, as a full line would.
                    // SAFETY: writes a buffer we own, of its length.
                    let _ = unsafe {
                        libc::write(to.as_raw_fd(), frame.as_ptr().cast(), frame.len())
                    };
                }
            }
        }
    }
}
