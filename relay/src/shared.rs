//! State shared by the gateway's driver, its sessions and its HTTP server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use meshcast_node::Node;
use meshcast_proto::{SegmentId, StreamId, VerifiedDescriptor};
use tokio::sync::oneshot;
use wtransport::tls::Sha256Digest;

use crate::config::Config;

/// State shared by the driver, sessions and the HTTP server.
pub(crate) struct Shared {
    pub node: Node,
    pub config: Config,
    pub url: String,
    /// Hashes browsers may pin: the current certificate's first.
    pub hashes: Mutex<Vec<(Sha256Digest, Option<SystemTime>)>>,
    pub sessions: Mutex<Sessions>,
    pub streams: Mutex<HashMap<StreamId, VerifiedDescriptor>>,
    /// Requests waiting for a segment to arrive from the mesh.
    pub waiters: Mutex<HashMap<SegmentId, Vec<oneshot::Sender<()>>>>,
    /// Deliveries sent so far, over all sessions (for [`Faults`]).
    pub deliveries: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Sessions {
    pub total: usize,
    pub per_ip: HashMap<IpAddr, usize>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn current_hashes(&self) -> Vec<Sha256Digest> {
        lock(&self.hashes).iter().map(|(h, _)| h.clone()).collect()
    }

    /// The body to send for the next delivery: `body` itself unless a fault
    /// is configured.
    pub fn delivery_body(&self, body: &Bytes) -> Bytes {
        let faults = self.config.faults;
        if faults.corrupt_every == 0 {
            return body.clone();
        }
        let n = self.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
        faults.body(n, body)
    }
}

pub(crate) fn wake(shared: &Shared, id: &SegmentId) {
    if let Some(waiters) = lock(&shared.waiters).remove(id) {
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

pub(crate) fn wake_all(shared: &Shared) {
    for (_, waiters) in lock(&shared.waiters).drain() {
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}
