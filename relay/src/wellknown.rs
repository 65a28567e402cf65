//! `GET /.well-known/meshcast`: how a page finds and pins this gateway.
//!
//! JSON with the WebTransport URL, the WebSocket path (the fallback when
//! WebTransport fails), the SHA-256 hashes of the certificates a
//! browser may pin (`serverCertificateHashes`), the node's peer id and the
//! external addresses its operator configured (never its listen addresses,
//! which name internal interfaces), and the version. CORS is open: the player page usually comes
//! from another origin.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::certs::CertSource;
use crate::shared::Shared;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WellKnown {
    pub webtransport: String,
    /// Hex SHA-256 of each certificate a client may pin, current first; empty
    /// when the gateway has an operator's certificate (verified by the Web PKI).
    pub certificate_hashes: Vec<String>,
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub version: String,
    /// Where the same viewer protocol is served over a WebSocket, relative
    /// to this document's URL (`/meshcast/ws`): for browsers that cannot
    /// open WebTransport. Absent from older gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
}

pub const PATH: &str = "/.well-known/meshcast";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route(PATH, get(move || well_known(shared.clone())))
}

async fn well_known(shared: Arc<Shared>) -> Response {
    let addresses = match shared.node.info().await {
        Ok(info) => info
            .external_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", info.peer_id))
            .collect(),
        Err(_) => Vec::new(),
    };
    let body = WellKnown {
        webtransport: shared.url.clone(),
        // Browsers pin by hash only certificates valid for at most 14 days
        // (`serverCertificateHashes`). An operator's certificate (ACME: 90
        // days) is checked by the Web PKI instead; listing its hash would make
        // browsers refuse the handshake.
        certificate_hashes: match shared.config.cert {
            CertSource::SelfSigned { .. } => shared
                .current_hashes()
                .iter()
                .map(|h| hex::encode(h.as_ref()))
                .collect(),
            CertSource::Files { .. } => Vec::new(),
        },
        peer_id: shared.node.peer_id().to_string(),
        addresses,
        version: env!("CARGO_PKG_VERSION").to_string(),
        websocket: Some(crate::websocket::PATH.to_string()),
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // Hashes change on rotation: never cache for long.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    response
}
