//! `meshcast demo --poisoned-edge N` (testing): an HTTP edge in front of the
//! origin, as a CDN's would be, that corrupts every Nth media segment it
//! serves. The page plays from it with the origin as its `fallback` mirror,
//! so that the trustless HTTP fallback can be watched: the browser rejects
//! those bytes against the signed headers the mesh announced and takes the
//! segment from the origin.

use std::sync::atomic::{AtomicU64, Ordering};

use super::site::respond;
use super::*;

/// Largest response the edge passes on: the demo's files are far smaller.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long the origin may take to answer (a blocking reload takes a few
/// target durations at most).
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct Edge {
    origin: String,
    every: u64,
    served: AtomicU64,
    http: reqwest::Client,
}

impl Edge {
    pub(super) fn new(origin: &str, every: u32) -> anyhow::Result<Self> {
        Ok(Self {
            origin: origin.trim_end_matches('/').to_owned(),
            every: u64::from(every.max(1)),
            served: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .timeout(ORIGIN_TIMEOUT)
                .build()
                .context("building the edge's HTTP client")?,
        })
    }
}

/// A media segment: not a playlist, not an init segment.
fn is_media(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    !name.ends_with(".m3u8") && !name.contains("init") && name.contains('.')
}

/// Fetches `uri` from the origin and passes it on, corrupting one byte in
/// the middle of every `every`th media segment.
pub(super) async fn serve_edge(
    State(edge): State<Arc<Edge>>,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n",
        );
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_and_query}", edge.origin);
    let fetched = async {
        let response = edge.http.get(&url).send().await?;
        let status = response.status();
        let kind = response.headers().get(header::CONTENT_TYPE).cloned();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(Some((status, kind, body)))
    };
    let (status, kind, mut body) = match fetched.await {
        Ok(Some(answer)) => answer,
        Ok(None) => {
            return respond(
                StatusCode::BAD_GATEWAY,
                "text/plain; charset=utf-8",
                "the origin's answer is too large\n",
            );
        }
        Err(e) => {
            return respond(
                StatusCode::BAD_GATEWAY,
                "text/plain; charset=utf-8",
                format!("the origin did not answer: {e}\n"),
            );
        }
    };
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status == StatusCode::OK && is_media(uri.path()) && !body.is_empty() {
        let n = edge.served.fetch_add(1, Ordering::Relaxed) + 1;
        if n % edge.every == 0 {
            let middle = body.len() / 2;
            body[middle] ^= 0x55;
            println!("poisoned {}", uri.path());
        }
    }
    let mut response = respond(status, "application/octet-stream", body);
    if let Some(kind) = kind {
        response.headers_mut().insert(header::CONTENT_TYPE, kind);
    }
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_segments_are_poisoned() {
        assert!(is_media("/live/360p_03.m4s"));
        assert!(is_media("/live/360p/57.2.m4s"));
        assert!(!is_media("/live/360p.m3u8"));
        assert!(!is_media("/live/360p_init.mp4"));
        assert!(!is_media("/live/"));
    }
}
