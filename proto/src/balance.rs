//! Which gateway a viewer asks next, and when it reconnects: sans-I/O.
//!
//! A viewer holds sessions to a few gateways (the one it was pointed at and
//! those its Welcome listed). For every request it picks the connected gateway
//! expected to finish it first: `(requests in flight + 1) / throughput`, where
//! throughput is an exponentially weighted average of completed deliveries.
//! A gateway not yet measured is assumed as fast as the best measured one and
//! wins ties, so new gateways get tried. A measurement older than
//! [`REPROBE_MS`] counts as none: a gateway found slow once is asked again
//! now and then (its path or load may have changed), and the new sample
//! replaces the stale average. A gateway whose session closes is retried after an
//! exponential backoff (1 s, 2 s, 4 s, … capped at 30 s, reset by a success);
//! one caught sending forged data is banned for [`BAN_MS`] before it is retried.
//!
//! Time is passed in as milliseconds on any monotonic clock.

/// Backoff after the first failure.
pub const BACKOFF_MIN_MS: u64 = 1_000;
/// Longest backoff.
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// How long a gateway that sent forged data is shunned.
pub const BAN_MS: u64 = 120_000;
/// Age after which a gateway's measured throughput no longer counts, so that
/// a gateway passed over as slower is tried again.
pub const REPROBE_MS: u64 = 30_000;
/// Most gateways a viewer keeps.
pub const MAX_POOL: usize = 16;
/// Weight of a new throughput sample.
const EWMA_ALPHA: f64 = 0.3;
/// Deliveries smaller than this say more about latency than throughput.
const MIN_SAMPLE_BYTES: u64 = 16 * 1024;
/// Throughput assumed before anything is measured: 8 Mbit/s.
const DEFAULT_THROUGHPUT: f64 = 1_000_000.0;

/// A gateway's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    /// Closed; retried at `retry_at_ms`.
    Down {
        retry_at_ms: u64,
    },
}

/// One gateway as the pool sees it.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub url: String,
    pub state: State,
    /// Bytes per second, averaged over recent deliveries.
    pub throughput: Option<f64>,
    /// When `throughput` was last sampled.
    pub sampled_at_ms: u64,
    pub inflight: u32,
    /// Consecutive failures to connect or stay connected.
    pub failures: u32,
    pub banned: bool,
}

/// The gateways of one viewer. Indices are stable: gateways are never removed.
#[derive(Debug, Default, Clone)]
pub struct Pool {
    gateways: Vec<Gateway>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn gateways(&self) -> &[Gateway] {
        &self.gateways
    }

    pub fn get(&self, index: usize) -> Option<&Gateway> {
        self.gateways.get(index)
    }

    /// Adds a gateway in state `Connecting` and returns its index; `None` when
    /// the URL is already known (call sites then need not connect again) or
    /// the pool holds [`MAX_POOL`] already (gateways push lists: a hostile
    /// one must not grow the pool without end).
    pub fn add(&mut self, url: &str) -> Option<usize> {
        if self.gateways.len() >= MAX_POOL || self.gateways.iter().any(|g| g.url == url) {
            return None;
        }
        self.gateways.push(Gateway {
            url: url.to_string(),
            state: State::Connecting,
            throughput: None,
            sampled_at_ms: 0,
            inflight: 0,
            failures: 0,
            banned: false,
        });
        Some(self.gateways.len() - 1)
    }

    /// The gateway published a newer signed record (a restart, a new
    /// certificate): its address is now `url`, its past failures say nothing
    /// about it, and if it is down (not banned) it is due now. Returns whether
    /// the caller should reconnect it at once.
    pub fn moved(&mut self, index: usize, url: &str) -> bool {
        let Some(g) = self.gateways.get_mut(index) else {
            return false;
        };
        g.url = url.to_string();
        g.failures = 0;
        match g.state {
            State::Down { .. } if !g.banned => {
                g.state = State::Connecting;
                true
            }
            _ => false,
        }
    }

    /// The session is open: the gateway can take requests.
    pub fn connected(&mut self, index: usize) {
        if let Some(g) = self.gateways.get_mut(index) {
            g.state = State::Connected;
            g.banned = false;
        }
    }

    /// The session closed or could not open: retry after a backoff.
    pub fn closed(&mut self, index: usize, now_ms: u64) {
        if let Some(g) = self.gateways.get_mut(index) {
            if g.banned {
                return;
            }
            g.failures = g.failures.saturating_add(1);
            let backoff = BACKOFF_MIN_MS
                .saturating_mul(1 << g.failures.saturating_sub(1).min(16))
                .min(BACKOFF_MAX_MS);
            g.state = State::Down {
                retry_at_ms: now_ms.saturating_add(backoff),
            };
            g.inflight = 0;
        }
    }

    /// The gateway sent data that failed verification: stop using it for
    /// [`BAN_MS`]. The caller closes its session.
    pub fn ban(&mut self, index: usize, now_ms: u64) {
        if let Some(g) = self.gateways.get_mut(index) {
            g.banned = true;
            g.state = State::Down {
                retry_at_ms: now_ms.saturating_add(BAN_MS),
            };
            g.inflight = 0;
            g.throughput = None;
        }
    }

    /// Gateways whose retry time has come; they move to `Connecting` and the
    /// caller reconnects them.
    pub fn due(&mut self, now_ms: u64) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, g) in self.gateways.iter_mut().enumerate() {
            if let State::Down { retry_at_ms } = g.state
                && retry_at_ms <= now_ms
            {
                g.state = State::Connecting;
                g.banned = false;
                due.push(i);
            }
        }
        due
    }

    /// When [`due`](Self::due) next has something to return.
    pub fn next_retry_ms(&self) -> Option<u64> {
        self.gateways
            .iter()
            .filter_map(|g| match g.state {
                State::Down { retry_at_ms } => Some(retry_at_ms),
                _ => None,
            })
            .min()
    }

    /// True while some gateway's session is being opened: a request with time
    /// to spare may wait for it rather than give up.
    pub fn any_connecting(&self) -> bool {
        self.gateways.iter().any(|g| g.state == State::Connecting)
    }

    /// The connected gateway expected to deliver soonest at `now_ms`, skipping
    /// `exclude` (gateways already tried for this request).
    pub fn pick(&self, exclude: &[usize], now_ms: u64) -> Option<usize> {
        let fresh = |g: &Gateway| {
            g.throughput
                .filter(|_| now_ms.saturating_sub(g.sampled_at_ms) < REPROBE_MS)
        };
        let best_measured = self
            .gateways
            .iter()
            .filter_map(fresh)
            .fold(None, |best: Option<f64>, t| {
                Some(best.map_or(t, |b| b.max(t)))
            });
        let assumed = best_measured.unwrap_or(DEFAULT_THROUGHPUT);
        self.gateways
            .iter()
            .enumerate()
            .filter(|(i, g)| g.state == State::Connected && !exclude.contains(i))
            .map(|(i, g)| {
                let measured = fresh(g);
                let throughput = measured.unwrap_or(assumed).max(1.0);
                (
                    i,
                    f64::from(g.inflight + 1) / throughput,
                    measured.is_some(),
                )
            })
            // On a tie the unmeasured (or stale) gateway goes first: that is
            // how it gets measured when requests come one at a time, as from
            // hls.js.
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .map(|(i, _, _)| i)
    }

    /// A request was sent to `index`.
    pub fn started(&mut self, index: usize) {
        if let Some(g) = self.gateways.get_mut(index) {
            g.inflight = g.inflight.saturating_add(1);
        }
    }

    /// A request to `index` completed at `now_ms`: `bytes` in `ms` from
    /// request to last byte.
    pub fn finished(&mut self, index: usize, bytes: u64, ms: f64, now_ms: u64) {
        if let Some(g) = self.gateways.get_mut(index) {
            g.inflight = g.inflight.saturating_sub(1);
            g.failures = 0;
            if bytes >= MIN_SAMPLE_BYTES && ms > 0.0 {
                let sample = bytes as f64 * 1000.0 / ms;
                let stale = now_ms.saturating_sub(g.sampled_at_ms) >= REPROBE_MS;
                g.throughput = Some(match g.throughput {
                    Some(t) if !stale => t + EWMA_ALPHA * (sample - t),
                    _ => sample,
                });
                g.sampled_at_ms = now_ms;
            }
        }
    }

    /// A request to `index` ended without data (error, deadline, cancel).
    pub fn abandoned(&mut self, index: usize) {
        if let Some(g) = self.gateways.get_mut(index) {
            g.inflight = g.inflight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_pool_is_bounded_and_a_moved_gateway_is_retried_at_once() {
        let mut pool = Pool::new();
        for i in 0..MAX_POOL + 4 {
            pool.add(&format!("https://g{i}/"));
        }
        assert_eq!(pool.gateways().len(), MAX_POOL);
        pool.connected(0);
        pool.closed(0, 1_000);
        assert!(pool.due(1_000).is_empty(), "in its backoff");
        assert!(pool.moved(0, "https://g0-new/"), "down: reconnect now");
        assert_eq!(pool.get(0).map(|g| g.url.as_str()), Some("https://g0-new/"));
        pool.connected(1);
        assert!(
            !pool.moved(1, "https://g1-new/"),
            "connected: keep its session"
        );
        pool.ban(2, 1_000);
        assert!(
            !pool.moved(2, "https://g2-new/"),
            "a ban outlives a new address"
        );
    }

    use super::*;

    fn pool(n: usize) -> Pool {
        let mut pool = Pool::new();
        for i in 0..n {
            let index = pool.add(&format!("https://g{i}/")).expect("new url");
            pool.connected(index);
        }
        pool
    }

    #[test]
    fn the_faster_gateway_gets_more_requests() {
        let mut pool = pool(2);
        pool.finished(0, 1_000_000, 100.0, 0); // 10 MB/s
        pool.finished(1, 1_000_000, 1000.0, 0); // 1 MB/s
        let mut counts = [0; 2];
        for _ in 0..22 {
            let i = pool.pick(&[], 0).expect("a gateway");
            counts[i] += 1;
            pool.started(i);
        }
        // Expected completion balances: in-flight ratio follows throughput ratio.
        assert_eq!(counts, [20, 2]);
    }

    #[test]
    fn an_unmeasured_gateway_is_tried() {
        let mut pool = pool(1);
        pool.finished(0, 1_000_000, 100.0, 0);
        let late = pool.add("https://late/").expect("new");
        pool.connected(late);
        assert_eq!(
            pool.pick(&[], 0),
            Some(late),
            "a tie goes to the unmeasured"
        );
        assert_eq!(pool.pick(&[late], 0), Some(0), "exclusions are honoured");
        pool.started(late);
        pool.finished(late, 1_000_000, 200.0, 0);
        assert_eq!(pool.pick(&[], 0), Some(0), "then the faster one");
    }

    #[test]
    fn a_gateway_passed_over_as_slower_is_probed_again_once_its_figure_is_stale() {
        let mut pool = pool(2);
        pool.finished(0, 1_000_000, 100.0, 0); // 10 MB/s
        pool.finished(1, 1_000_000, 1000.0, 0); // 1 MB/s
        // One request at a time, as from hls.js: always the faster one.
        let mut now = 0;
        while now < REPROBE_MS {
            assert_eq!(pool.pick(&[], now), Some(0));
            pool.started(0);
            pool.finished(0, 1_000_000, 100.0, now);
            now += 2_000;
        }
        // Gateway 1 has not been measured for REPROBE_MS: it is tried again.
        assert_eq!(pool.pick(&[], now), Some(1), "the stale one is probed");
        pool.started(1);
        // It has become fast: the new sample replaces the old average.
        pool.finished(1, 1_000_000, 50.0, now);
        assert_eq!(pool.get(1).and_then(|g| g.throughput), Some(20_000_000.0));
        assert_eq!(pool.pick(&[], now), Some(1), "now the faster one");
        // A gateway still slow goes back to being passed over.
        pool.finished(1, 1_000_000, 1000.0, now + 1);
        pool.finished(1, 1_000_000, 1000.0, now + 2);
        pool.finished(1, 1_000_000, 1000.0, now + 3);
        pool.finished(1, 1_000_000, 1000.0, now + 4);
        pool.finished(1, 1_000_000, 1000.0, now + 5);
        assert_eq!(pool.pick(&[], now + 5), Some(0));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        let mut pool = pool(1);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            pool.closed(0, now);
            assert_eq!(pool.pick(&[], 0), None);
            let retry = pool.next_retry_ms().expect("scheduled");
            waits.push(retry - now);
            assert!(pool.due(retry - 1).is_empty());
            assert_eq!(pool.due(retry), vec![0]);
            now = retry;
        }
        assert_eq!(waits, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        pool.connected(0);
        pool.finished(0, 100, 1.0, 0);
        pool.closed(0, now);
        assert_eq!(pool.next_retry_ms(), Some(now + BACKOFF_MIN_MS));
    }

    #[test]
    fn a_banned_gateway_stays_out_until_the_ban_ends() {
        let mut pool = pool(2);
        pool.ban(1, 10);
        pool.closed(1, 20); // the session closing afterwards must not shorten the ban
        assert_eq!(pool.pick(&[], 0), Some(0));
        assert!(pool.due(10 + BAN_MS - 1).is_empty());
        assert_eq!(pool.due(10 + BAN_MS), vec![1]);
        assert!(pool.add("https://g1/").is_none());
    }
}
