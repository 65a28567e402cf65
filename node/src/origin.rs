//! Which origin URLs a node may fetch when the mesh is late.
//!
//! A node falls back to a stream's origin with a URL built from the stream's
//! signed descriptor and a signed header: data chosen by whoever published
//! the stream, who may be an attacker. Fetched as it comes, that is a blind
//! request forgery (SSRF) into the node's network, with a hash-match oracle.
//! So a node fetches only
//!
//! - URLs under the descriptor's origin (checked in the mesh core, see
//!   `Descriptor::origin_segment_url`): same scheme, host, port and path
//!   prefix; an absolute segment URI elsewhere is refused;
//! - over http or https, from public addresses only: the client's resolver
//!   drops loopback, private, link-local, CGNAT and other special-use
//!   addresses, IP literals are checked before the request, and each
//!   redirect's target too (at most 5). An operator whose origin is on a
//!   private network allows it (`allow_private_origins`).
//!
//! The response size limit (the signed length) and the cap on fetches in
//! flight are the fetch's and the scheduler's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::ingest::source::{FetchError, FetchLimits};

/// Most redirects followed for one origin fetch.
const MAX_REDIRECTS: usize = 5;

/// True for addresses any host on the internet could reach: not loopback,
/// private, link-local, CGNAT, documentation, multicast or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64: an IPv4 address in disguise
}

/// Checks what can be checked of `url` before any lookup: the scheme, and the
/// address when the host is an IP literal.
pub fn check(url: &Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{url}: only http and https origins are fetched"));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(format!("{url}: no host")),
    };
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "{url}: {ip} is not a public address (allow_private_origins is off)"
        ))
    }
}

/// Resolves names with the system resolver and keeps public addresses only,
/// so that a name pointing inside the node's network is never connected to
/// (and the check holds at connect time, not just before it).
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for origin fallbacks: public addresses only unless
/// `allow_private`, redirects checked like the first URL.
pub fn client(limits: &FetchLimits, allow_private: bool) -> Result<reqwest::Client, FetchError> {
    // See `ingest::source::http_client`.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if let Err(why) = check(attempt.url(), allow_private) {
            attempt.error(why)
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .user_agent(concat!("meshcast/", env!("CARGO_PKG_VERSION")))
        .redirect(redirects);
    if !allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    builder.build().map_err(|error| FetchError::Client {
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = internal.parse().expect("address");
            assert!(!is_public(ip), "{internal} counted as public");
        }
        for public in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            let ip: IpAddr = public.parse().expect("address");
            assert!(is_public(ip), "{public} counted as internal");
        }
    }

    #[test]
    fn literal_internal_hosts_and_other_schemes_are_refused() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(check(&url("http://127.0.0.1:8080/x.m4s"), false).is_err());
        assert!(check(&url("http://[::1]/x.m4s"), false).is_err());
        assert!(check(&url("http://169.254.169.254/latest/meta-data/"), false).is_err());
        assert!(check(&url("file:///etc/passwd"), true).is_err());
        assert!(check(&url("http://127.0.0.1:8080/x.m4s"), true).is_ok());
        assert!(check(&url("https://cdn.example.org/live/x.m4s"), false).is_ok());
        assert!(check(&url("https://1.1.1.1/x.m4s"), false).is_ok());
    }

    /// Real sockets: a loopback "internal" server that must see no request.
    #[tokio::test]
    async fn a_name_or_literal_that_leads_inside_is_never_connected_to() {
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = internal.local_addr().expect("addr").port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let server = tokio::spawn(async move {
            while let Ok((_socket, _)) = internal.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let limits = FetchLimits::default();
        let guarded = client(&limits, false).expect("client");
        // `localhost` goes through the resolver, which drops 127.0.0.1.
        let by_name = guarded
            .get(format!("http://localhost:{port}/secret"))
            .send()
            .await;
        assert!(by_name.is_err(), "a loopback name was fetched");
        // The same client allowed private origins does connect: the check is
        // what kept it out, not a dead port.
        let open = client(&limits, true).expect("client");
        let _ = open
            .get(format!("http://127.0.0.1:{port}/secret"))
            .timeout(std::time::Duration::from_millis(300))
            .send()
            .await;
        let seen = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(seen, 1, "only the allowed client reached the server");
        server.abort();
    }
}
