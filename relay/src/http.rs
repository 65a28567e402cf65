//! Serving the small HTTP endpoints (`/.well-known/meshcast`, `/metrics`)
//! to the open web.
//!
//! `axum::serve` keeps a connection as long as the client likes: a client
//! that sends its request headers a byte a minute (slowloris) holds a socket
//! and a task for good, and nothing caps how many. Here each connection takes
//! a slot (per address, per IPv6 /64 and in total, as browser sessions do),
//! must send its headers within `header_timeout`, and ends after `lifetime`
//! whatever it does; over a cap, the socket is closed at once.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::admission::{Caps, Counter, canonical};

/// What one HTTP endpoint allows.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections from one address (and one IPv6 /64) at once.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Longest a connection is kept, keep-alive included.
    pub lifetime: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_connections_per_ip: 8,
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` within `limits` until the listener fails.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits) {
    let counter = Arc::new(Mutex::new(Counter::default()));
    let caps = Caps {
        total: limits.max_connections,
        per_ip: limits.max_connections_per_ip,
        per_prefix: limits.max_connections_per_ip,
    };
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(remote.ip());
        if count(&counter).take(ip, caps).is_err() {
            drop(socket);
            continue;
        }
        let slot = Held {
            counter: counter.clone(),
            ip,
        };
        // Handlers that count per address (the WebSocket sessions) read it
        // as axum's ConnectInfo.
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(remote))),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(16 << 10);
            // An upgraded connection (a viewer's WebSocket) leaves this
            // future, its lifetime and its slot at the upgrade: the session
            // holds a session slot of its own.
            let connection = builder
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            let _ = tokio::time::timeout(limits.lifetime, connection).await;
        });
    }
}

/// A connection's slot, given back when it ends.
struct Held {
    counter: Arc<Mutex<Counter>>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        count(&self.counter).give_back(self.ip);
    }
}

fn count(counter: &Mutex<Counter>) -> std::sync::MutexGuard<'_, Counter> {
    counter.lock().unwrap_or_else(|e| e.into_inner())
}
