//! Bodies in flight to peers, pushes and served pulls together, bounded in
//! bytes.
//!
//! A write returns once QUIC has *buffered* the bytes; an upload holds its
//! room until the peer has read the whole body and closed its side
//! ([`Framed::finish_read`](crate::exchange::Framed::finish_read)). Without
//! the bound, a node on a thin uplink with many neighbours would hand every
//! body to QUIC at once: memory for each, and no upload any sooner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub(super) struct Uploads {
    /// Free room, in KiB (a semaphore counts permits in `u32`).
    room: Arc<Semaphore>,
    total_kib: usize,
}

fn kib(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1024))
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

impl Uploads {
    /// Room for `bytes` of bodies in flight (the scheduler's
    /// `max_upload_bytes`).
    pub(super) fn new(bytes: u64) -> Self {
        let total_kib = kib(bytes);
        Self {
            room: Arc::new(Semaphore::new(total_kib)),
            total_kib,
        }
    }

    /// Bytes of bodies in flight now (whole KiB).
    pub(super) fn in_flight(&self) -> u64 {
        let free = self.room.available_permits().min(self.total_kib);
        ((self.total_kib - free) as u64) << 10
    }

    /// Room for a body of `len` bytes (a body larger than the whole bound
    /// takes all of it), held until the permit is dropped; `None` if none
    /// frees within `wait`.
    pub(super) async fn room(&self, len: u64, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let want = u32::try_from(kib(len).min(self.total_kib)).unwrap_or(u32::MAX);
        tokio::time::timeout(wait, self.room.clone().acquire_many_owned(want))
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_is_shared_and_returned() {
        let uploads = Uploads::new(3 << 20);
        let wait = Duration::from_millis(20);
        let a = uploads.room(2 << 20, wait).await.expect("room for 2 MiB");
        assert!(
            uploads.room(2 << 20, wait).await.is_none(),
            "over the bound"
        );
        let small = uploads.room(1 << 20, wait).await.expect("room for 1 MiB");
        drop(a);
        let huge = uploads.room(u64::MAX, Duration::from_millis(50)).await;
        assert!(huge.is_none(), "the 1 MiB upload still runs");
        drop(small);
        assert!(
            uploads.room(u64::MAX, wait).await.is_some(),
            "alone, any size fits"
        );
        assert!(uploads.room(0, wait).await.is_some());
    }
}
