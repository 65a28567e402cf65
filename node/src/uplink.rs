//! The volunteer's upload cap (`node.max_upload`): every segment body the
//! node sends, pushes and served pulls together, keeps to one rate.
//!
//! Bodies take turns: one body at a time is sent at the whole rate, in the
//! order they asked (a fair lock). Sharing the rate among all uploads at
//! once would make every one of them finish late — behind a 2 Mbit/s cap,
//! ten 100 kB segments would all arrive after 4 s instead of one every
//! 0.4 s — and pullers give up on late transfers and ask again, so a capped
//! node that interleaved would deliver nothing at all. Within its turn a
//! body is paced chunk by chunk on a virtual clock, with a small burst
//! allowance ([`BURST`]) so timer granularity does not cost rate.
//!
//! A body waits for its turn while its peer is already reading (a pull's
//! header is sent, a push was accepted), and peers read with a silence
//! timeout. So the node takes on only uploads that start within
//! [`MAX_QUEUE`] and end before their deadline ([`Uplink::fits`]): the
//! scheduler offers a push only if it fits, and a pull that does not is
//! answered `Absent`, so the puller asks another holder at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

/// How far ahead of the rate a burst may go.
pub const BURST: Duration = Duration::from_millis(50);

/// The longest an upload may wait for its turn: well within the silence a
/// reading peer allows (`read_timeout`, 10 s by default).
pub const MAX_QUEUE: Duration = Duration::from_secs(2);

/// The cap, shared by every upload of a node. Without a rate, it lets
/// everything through at once.
#[derive(Clone, Default)]
pub struct Uplink {
    cap: Option<Cap>,
}

#[derive(Clone)]
struct Cap {
    /// Bytes per second.
    rate: u64,
    /// The turn, and the virtual clock: when what was sent so far would
    /// have left at the rate.
    clock: Arc<Mutex<Instant>>,
}

/// One body's turn on the uplink: others wait until it is dropped.
pub struct Turn {
    clock: Option<(OwnedMutexGuard<Instant>, u64)>,
}

impl Uplink {
    /// An uplink of at most `rate` bytes per second (`None`: no cap).
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            cap: rate.filter(|r| *r > 0).map(|rate| Cap {
                rate,
                clock: Arc::new(Mutex::new(Instant::now())),
            }),
        }
    }

    /// The cap in bytes per second, if any.
    pub fn rate(&self) -> Option<u64> {
        self.cap.as_ref().map(|c| c.rate)
    }

    /// Waits for this body's turn. Call once per body, before its first
    /// byte; send it through [`Turn::take`].
    pub async fn turn(&self) -> Turn {
        let clock = match &self.cap {
            None => None,
            Some(cap) => Some((cap.clock.clone().lock_owned().await, cap.rate)),
        };
        Turn { clock }
    }

    /// Whether an upload of `len` bytes, queued behind `backlog` bytes
    /// already taken on, would start within [`MAX_QUEUE`] and be sent
    /// within `deadline`. Always true without a cap.
    pub fn fits(&self, backlog: u64, len: u64, deadline: Duration) -> bool {
        match &self.cap {
            None => true,
            Some(cap) => fits(cap.rate, backlog, len, deadline),
        }
    }
}

/// [`Uplink::fits`] for a cap of `rate` bytes per second: shared with the
/// scheduler, which knows the rate but holds no uplink.
pub fn fits(rate: u64, backlog: u64, len: u64, deadline: Duration) -> bool {
    transmission(backlog, rate) <= MAX_QUEUE
        && transmission(backlog.saturating_add(len), rate) <= deadline
}

impl Turn {
    /// Waits until `len` more bytes of this body may be sent. Call before
    /// each write of a chunk.
    pub async fn take(&mut self, len: usize) {
        let Some((clock, rate)) = &mut self.clock else {
            return;
        };
        let now = Instant::now();
        // Idle time is not saved up beyond the burst allowance.
        let start = (**clock).max(now.checked_sub(BURST).unwrap_or(now));
        **clock = start + transmission(len as u64, *rate);
        tokio::time::sleep_until(clock.checked_sub(BURST).unwrap_or(now)).await;
    }
}

/// The time `bytes` take at `rate` bytes per second (at most a day: sizes
/// come from the network).
fn transmission(bytes: u64, rate: u64) -> Duration {
    Duration::from_secs_f64((bytes as f64 / rate.max(1) as f64).min(86_400.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `bodies` bodies of `len` bytes in chunks of 1,000 at once;
    /// returns when each finished, from the start.
    async fn send_all(uplink: &Uplink, bodies: usize, len: usize) -> Vec<Duration> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..bodies {
            let uplink = uplink.clone();
            tasks.push(tokio::spawn(async move {
                let mut turn = uplink.turn().await;
                for _ in 0..len / 1_000 {
                    turn.take(1_000).await;
                }
                started.elapsed()
            }));
        }
        let mut ends = Vec::new();
        for task in tasks {
            ends.push(task.await.expect("task"));
        }
        ends.sort();
        ends
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_keep_to_the_rate_one_after_another() {
        let uplink = Uplink::new(Some(100_000));
        let ends = send_all(&uplink, 4, 25_000).await;
        // 100 kB at 100 kB/s: one second in all, less the burst allowance;
        // and each body whole in its own quarter, not all at the end.
        let ms: Vec<u128> = ends.iter().map(Duration::as_millis).collect();
        for (i, end) in ms.iter().enumerate() {
            let due = 250 * (i as u128 + 1);
            assert!(*end + 60 >= due && *end <= due, "{ms:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cap_nothing_waits() {
        let uplink = Uplink::new(None);
        let ends = send_all(&uplink, 4, 1_000_000).await;
        assert!(ends.iter().all(Duration::is_zero), "{ends:?}");
        assert!(uplink.fits(u64::MAX, u64::MAX, Duration::ZERO));
    }

    #[test]
    fn work_that_would_wait_too_long_or_end_too_late_does_not_fit() {
        let uplink = Uplink::new(Some(1_000_000));
        let deadline = Duration::from_secs(4);
        assert!(uplink.fits(1_000_000, 1_000_000, deadline));
        assert!(!uplink.fits(2_500_000, 1_000, deadline), "waits 2.5 s");
        assert!(
            !uplink.fits(1_500_000, 3_000_000, deadline),
            "ends at 4.5 s"
        );
        assert!(!uplink.fits(u64::MAX, u64::MAX, deadline), "no overflow");
    }
}
