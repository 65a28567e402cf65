//! The lab viewers' playback in the reports (thin and churn runs).

use std::time::Duration;

use serde::Serialize;

use super::figure::{Fig, fig};

/// How far behind the live edge the lab's viewers play: two 2 s segments
/// (hls.js sits three behind).
pub const VIEWER_BUFFER: Duration = Duration::from_secs(4);

/// The lab viewers' playback, all together.
#[derive(Debug, Serialize)]
pub struct ViewerFigs {
    pub viewers: Fig,
    pub segments: Fig,
    pub delivered: Fig,
    pub late: Fig,
    pub stalls: Fig,
    pub stalled: Fig,
    pub rejected: Fig,
}

impl ViewerFigs {
    pub fn new(viewers: usize, p: &meshcast_lab::viewer::Playback) -> Self {
        Self {
            viewers: fig(viewers as f64, "viewers"),
            segments: fig(p.announced as f64, "segments"),
            delivered: fig(p.delivered as f64, "segments"),
            late: fig(p.late as f64, "segments"),
            stalls: fig(p.stalls as f64, "stalls"),
            stalled: fig(p.stalled.as_secs_f64() * 1e3, "ms"),
            rejected: fig(p.rejected as f64, "deliveries"),
        }
    }

    /// Every viewer saw segments, and none stalled or got bad data.
    pub fn met(&self) -> bool {
        self.segments.value > 0.0 && self.stalls.value == 0.0 && self.rejected.value == 0.0
    }

    pub fn cells(&self) -> String {
        format!(
            "{} of {} | {} | {} ({:.0} ms) |",
            self.delivered.value,
            self.segments.value,
            self.late.value,
            self.stalls.value,
            self.stalled.value
        )
    }
}

/// How the lab's viewers play, for the reports.
pub const VIEWER_MODEL: &str = "A viewer asks its gateway for each segment when it is announced and plays it at its place in a playout that starts one buffer after the first announcement; a segment arriving after its play time is a stall (playback waits), one never delivered too; late means delivered more than one segment duration after the announcement (no stall while the buffer lasts).";
