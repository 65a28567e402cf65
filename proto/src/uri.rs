//! URI reference resolution (RFC 3986 §5.2), for the one question every part
//! of meshcast asks: where on the origin is this segment?
//!
//! The descriptor names the origin's master playlist, a rendition names its
//! media playlist relative to that, and a signed header names its segment
//! relative to the media playlist. Nodes (the origin fallback), the browser
//! client and the benchmarks all resolve it with [`Descriptor::segment_url`]
//! so that they cannot disagree. Hand-written rather than the `url` crate: it
//! is all the client needs, and the wasm bundle stays free of IDNA tables.

use crate::Descriptor;

/// The five components of a URI reference; `None` where a component is absent
/// (which RFC 3986 distinguishes from empty).
struct Parts<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn parse(reference: &str) -> Parts<'_> {
    let (rest, fragment) = match reference.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (reference, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let scheme_end = rest.find(':').filter(|&end| {
        let scheme = &rest[..end];
        !scheme.contains('/')
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let (scheme, rest) = match scheme_end {
        Some(end) => (Some(&rest[..end]), &rest[end + 1..]),
        None => (None, rest),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    Parts {
        scheme,
        authority,
        path,
        query,
        fragment,
    }
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    // A path ending in `.` or `..` names a directory: keep its trailing slash.
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if absolute && i == 0 {
            continue;
        }
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                output.pop();
                trailing_slash = i == last;
            }
            other => {
                output.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&output.join("/"));
    if trailing_slash && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Resolves `reference` against the absolute URI `base` (RFC 3986 §5.2.2).
/// `None` if `base` has no scheme.
pub fn resolve(base: &str, reference: &str) -> Option<String> {
    let b = parse(base);
    b.scheme?;
    let r = parse(reference);
    let (scheme, authority, path, query);
    if r.scheme.is_some() {
        (scheme, authority, path, query) =
            (r.scheme, r.authority, remove_dot_segments(r.path), r.query);
    } else if r.authority.is_some() {
        (scheme, authority, path, query) =
            (b.scheme, r.authority, remove_dot_segments(r.path), r.query);
    } else if r.path.is_empty() {
        (scheme, authority, path, query) = (
            b.scheme,
            b.authority,
            b.path.to_string(),
            r.query.or(b.query),
        );
    } else if r.path.starts_with('/') {
        (scheme, authority, path, query) =
            (b.scheme, b.authority, remove_dot_segments(r.path), r.query);
    } else {
        let merged = if b.authority.is_some() && b.path.is_empty() {
            format!("/{}", r.path)
        } else {
            let dir = b.path.rfind('/').map_or("", |i| &b.path[..=i]);
            format!("{dir}{}", r.path)
        };
        (scheme, authority, path, query) =
            (b.scheme, b.authority, remove_dot_segments(&merged), r.query);
    }
    let mut out = String::new();
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push(':');
    }
    if let Some(authority) = authority {
        out.push_str("//");
        out.push_str(authority);
    }
    out.push_str(&path);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    if let Some(fragment) = r.fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

impl Descriptor {
    /// Where the origin serves a segment of `rendition` whose signed header
    /// names it `uri`: the master playlist (`origin_url`), then the
    /// rendition's playlist, then the segment, each relative to the last.
    /// `None` if the stream names no origin or no such rendition.
    pub fn segment_url(&self, rendition: u32, uri: &str) -> Option<String> {
        if self.origin_url.is_empty() {
            return None;
        }
        let rendition = self.renditions.iter().find(|r| r.id == rendition)?;
        let playlist = resolve(&self.origin_url, &rendition.uri)?;
        resolve(&playlist, uri)
    }

    /// [`segment_url`](Self::segment_url) for a node's origin fallback: the
    /// URL only if it lies under the origin, i.e. starts with `origin_url`
    /// up to the last `/` of its path (same scheme, host, port and path
    /// prefix). A segment URI that is absolute elsewhere, or climbs out
    /// with `..`, is refused: the header's signer chose it, and a node must
    /// not fetch where a stranger's stream tells it to.
    pub fn origin_segment_url(&self, rendition: u32, uri: &str) -> Result<String, String> {
        let url = self.segment_url(rendition, uri).ok_or_else(|| {
            format!("stream names no origin for rendition {rendition} (or {uri:?} is no URI)")
        })?;
        let base = self.origin_url.split(['?', '#']).next().unwrap_or_default();
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let prefix = match base[scheme_end..].rfind('/') {
            Some(slash) => &base[..scheme_end + slash + 1],
            None => return Err(format!("origin {:?} has no path", self.origin_url)),
        };
        if !(prefix.starts_with("http://") || prefix.starts_with("https://")) {
            return Err(format!("origin {:?} is not http or https", self.origin_url));
        }
        if url.starts_with(prefix) {
            Ok(url)
        } else {
            Err(format!("{url} is outside the stream's origin {prefix}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    /// RFC 3986 §5.4: the normal and abnormal examples.
    #[test]
    fn rfc_examples() {
        let base = "http://a/b/c/d;p?q";
        let cases = [
            ("g:h", "g:h"),
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q#s"),
            ("g#s", "http://a/b/c/g#s"),
            ("g?y#s", "http://a/b/c/g?y#s"),
            (";x", "http://a/b/c/;x"),
            ("g;x", "http://a/b/c/g;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("../../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            (".g", "http://a/b/c/.g"),
            ("g..", "http://a/b/c/g.."),
            ("..g", "http://a/b/c/..g"),
            ("./../g", "http://a/b/g"),
            ("./g/.", "http://a/b/c/g/"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
            ("g;x=1/../y", "http://a/b/c/y"),
            ("g?y/./x", "http://a/b/c/g?y/./x"),
            ("g#s/../x", "http://a/b/c/g#s/../x"),
        ];
        for (reference, expected) in cases {
            assert_eq!(
                resolve(base, reference).as_deref(),
                Some(expected),
                "{reference}"
            );
        }
    }

    #[test]
    fn a_relative_base_resolves_nothing() {
        assert_eq!(resolve("live/master.m3u8", "0/index.m3u8"), None);
    }

    #[test]
    fn segment_url_chains_master_rendition_and_segment() {
        let mut d = crate::Descriptor {
            publisher: crate::PublisherKey::from_seed([1; 32]).public(),
            name: "live".into(),
            renditions: vec![crate::Rendition {
                id: 3,
                name: "720p".into(),
                bandwidth: 1,
                codecs: String::new(),
                width: 0,
                height: 0,
                uri: "video/720p/index.m3u8".into(),
                ..Default::default()
            }],
            origin_url: "https://cdn.example/live/master.m3u8?token=1".into(),
            segment_duration_ms: 2000,
            live: true,
            issued_at_us: 0,
            private: false,
        };
        assert_eq!(
            d.segment_url(3, "seg-7.ts").as_deref(),
            Some("https://cdn.example/live/video/720p/seg-7.ts")
        );
        assert_eq!(
            d.segment_url(3, "https://other.example/x.ts").as_deref(),
            Some("https://other.example/x.ts")
        );
        assert_eq!(d.segment_url(4, "seg-7.ts"), None);
        assert_eq!(
            d.origin_segment_url(3, "seg-7.ts").as_deref(),
            Ok("https://cdn.example/live/video/720p/seg-7.ts")
        );
        for elsewhere in [
            "https://other.example/x.ts",
            "http://cdn.example/live/x.ts",
            "https://cdn.example:8443/live/x.ts",
            "../../../admin/x.ts",
            "//cdn.example.evil/live/x.ts",
            "/internal/x.ts",
        ] {
            assert!(
                d.origin_segment_url(3, elsewhere).is_err(),
                "{elsewhere} was let through"
            );
        }
        d.origin_url = "file:///srv/live/master.m3u8".into();
        assert!(d.origin_segment_url(3, "seg-7.ts").is_err());
        d.origin_url.clear();
        assert_eq!(d.segment_url(3, "seg-7.ts"), None);
    }
}
