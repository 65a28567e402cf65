//! Where playlists and segments come from: an HTTP(S) origin or a local folder.
//!
//! Every fetch is bounded in time and size. Over HTTP, the client carries a
//! connect timeout and a total timeout covering the whole request, body
//! included ([`FetchLimits`], 5 s and 10 s by default); the body is read chunk
//! by chunk and refused the moment it passes the caller's `max_bytes`, and a
//! `Content-Length` over the limit is refused before any byte is read. The
//! buffer grows with the bytes received, never with a length the server
//! claims. From a folder, a file is read only if its canonical path (symlinks
//! resolved) lies inside the canonical root, its size is checked before
//! reading, and reading stops one byte past the limit in case it grows.
//!
//! URIs follow RFC 3986 on both sources: a segment URI is relative to the
//! playlist that lists it. [`Source::resolve`] returns an absolute URL (HTTP)
//! or a normalised, still percent-encoded path relative to the root (folder);
//! pass that string as `relative_to` when fetching what that playlist lists.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use url::Url;

use super::playlist::ByteRange;

/// Time limits of every fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// The whole request, from connecting to the last byte of the body; also
    /// bounds reading a file from a folder source.
    pub request_timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a fetch failed. `url` is the resolved URL or file path (a URL's
/// password is never shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: timed out")]
    Timeout { url: String },
    #[error("{url}: larger than the limit of {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: {message}")]
    Io { url: String, message: String },
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{path:?} is outside the origin folder")]
    OutsideRoot { path: String },
    #[error(
        "{}: no master.m3u8 and {found} other .m3u8 files (exactly one is needed); name the playlist file instead",
        dir.display()
    )]
    NoPlaylist { dir: PathBuf, found: usize },
    #[error("cannot build the HTTP client: {message}")]
    Client { message: String },
    #[error("{url}: {reason}")]
    Range { url: String, reason: String },
}

/// The origin of a stream.
#[derive(Debug, Clone)]
pub enum Source {
    /// `base` is the entry playlist's URL.
    Http { base: Url, client: reqwest::Client },
    /// Files under `root` (canonical); `entry` is the playlist file's
    /// percent-encoded path relative to it.
    Folder {
        root: PathBuf,
        entry: String,
        request_timeout: Duration,
    },
}

impl Source {
    /// `--origin` accepts an http(s) URL of a playlist or a folder path (then
    /// `master.m3u8`, or the only .m3u8 if there is exactly one, or a playlist
    /// file path).
    pub fn from_arg(arg: &str, limits: FetchLimits) -> Result<Self, FetchError> {
        if arg.contains("://") {
            let base = Url::parse(arg).map_err(|error| FetchError::BadUrl {
                url: arg.to_owned(),
                reason: error.to_string(),
            })?;
            check_http_scheme(&base)?;
            return Ok(Source::Http {
                base,
                client: http_client(&limits)?,
            });
        }
        let (root, entry) = folder_entry(Path::new(arg))?;
        Ok(Source::Folder {
            root,
            entry,
            request_timeout: limits.request_timeout,
        })
    }

    /// The playlist to start from, relative to the base or root (for HTTP, the
    /// absolute URL itself). Valid as `relative_to` and as `uri`.
    pub fn entry(&self) -> &str {
        match self {
            Source::Http { base, .. } => base.as_str(),
            Source::Folder { entry, .. } => entry,
        }
    }

    /// Fetches `uri` resolved against `relative_to`: the entry, a string
    /// returned by [`resolve`](Self::resolve), or `""` for the base or root.
    pub async fn get(
        &self,
        relative_to: &str,
        uri: &str,
        max_bytes: u64,
    ) -> Result<Bytes, FetchError> {
        self.get_range(relative_to, uri, None, max_bytes).await
    }

    /// As [`get`](Self::get), only `range` of the resource when given (an
    /// HTTP `Range` request, or a seek in the file).
    pub async fn get_range(
        &self,
        relative_to: &str,
        uri: &str,
        range: Option<ByteRange>,
        max_bytes: u64,
    ) -> Result<Bytes, FetchError> {
        match self {
            Source::Http { base, client } => {
                let url = resolve_url(base, relative_to, uri)?;
                fetch_url_range(client, &url, range, max_bytes).await
            }
            Source::Folder {
                root,
                request_timeout,
                ..
            } => {
                let path = file_path(root, &join_relative(relative_to, uri)?)?;
                let read = read_inside(root, &path, range, max_bytes);
                tokio::time::timeout(*request_timeout, read)
                    .await
                    .map_err(|_| FetchError::Timeout {
                        url: path.display().to_string(),
                    })?
            }
        }
    }

    /// `uri` resolved against `relative_to` (as for [`get`](Self::get)): an
    /// absolute URL, or a percent-encoded path relative to the folder root.
    pub fn resolve(&self, relative_to: &str, uri: &str) -> Result<String, FetchError> {
        match self {
            Source::Http { base, .. } => resolve_url(base, relative_to, uri).map(String::from),
            Source::Folder { .. } => join_relative(relative_to, uri),
        }
    }
}

/// An HTTP client with the limits' timeouts, as [`fetch_url`] expects.
pub fn http_client(limits: &FetchLimits) -> Result<reqwest::Client, FetchError> {
    // Both rustls providers are in the dependency tree (libp2p forces
    // aws-lc-rs); reqwest panics unless a process default is installed.
    // An error only means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .user_agent(concat!("meshcast/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| FetchError::Client {
            message: error_chain(&error),
        })
}

/// GETs `url` into memory, refusing bodies over `max_bytes` as they stream in.
/// The time limit is the client's: build it with [`http_client`].
pub async fn fetch_url(
    client: &reqwest::Client,
    url: &Url,
    max_bytes: u64,
) -> Result<Bytes, FetchError> {
    fetch_url_range(client, url, None, max_bytes).await
}

/// As [`fetch_url`], only `range` of the resource when given: asked for
/// with an HTTP `Range`, and taken only as a `206 Partial Content` of
/// exactly that many bytes (a server that ignores `Range` sends the whole
/// resource with a 200, which is refused rather than read).
pub async fn fetch_url_range(
    client: &reqwest::Client,
    url: &Url,
    range: Option<ByteRange>,
    max_bytes: u64,
) -> Result<Bytes, FetchError> {
    let failed = |error: reqwest::Error| {
        if error.is_timeout() {
            FetchError::Timeout { url: shown(url) }
        } else {
            FetchError::Io {
                url: shown(url),
                message: error_chain(&error.without_url()),
            }
        }
    };
    let too_large = || FetchError::TooLarge {
        url: shown(url),
        max: max_bytes,
    };
    let bad_range = |reason: String| FetchError::Range {
        url: shown(url),
        reason,
    };
    let mut request = client.get(url.clone());
    if let Some(range) = range {
        if range.length > max_bytes {
            return Err(too_large());
        }
        let last = range.end().saturating_sub(1);
        request = request.header(
            reqwest::header::RANGE,
            format!("bytes={}-{last}", range.offset),
        );
    }
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: shown(url),
            status: status.as_u16(),
        });
    }
    if let Some(range) = range
        && status != reqwest::StatusCode::PARTIAL_CONTENT
    {
        return Err(bad_range(format!(
            "asked for bytes {}-{} and got HTTP {} instead of 206: the server ignores Range",
            range.offset,
            range.end().saturating_sub(1),
            status.as_u16()
        )));
    }
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if (body.len() as u64).saturating_add(chunk.len() as u64) > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(range) = range
        && body.len() as u64 != range.length
    {
        return Err(bad_range(format!(
            "asked for {} bytes from {} and got {}",
            range.length,
            range.offset,
            body.len()
        )));
    }
    Ok(body.freeze())
}

fn resolve_url(base: &Url, relative_to: &str, uri: &str) -> Result<Url, FetchError> {
    let bad = |reason: String| FetchError::BadUrl {
        url: uri.to_owned(),
        reason,
    };
    if uri.is_empty() {
        return Err(bad("empty URI".to_owned()));
    }
    let playlist = base
        .join(relative_to)
        .map_err(|error| bad(format!("relative to {relative_to:?}: {error}")))?;
    let url = playlist.join(uri).map_err(|error| bad(error.to_string()))?;
    check_http_scheme(&url)?;
    Ok(url)
}

fn check_http_scheme(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(FetchError::BadUrl {
            url: shown(url),
            reason: format!("scheme {other:?}: only http and https are fetched"),
        }),
    }
}

/// A URL for messages: without its password.
fn shown(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut url = url.clone();
    let _ = url.set_password(None);
    url.to_string()
}

/// An error and its sources, "outer: inner: innermost".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The canonical root and the entry playlist of a folder argument.
fn folder_entry(arg: &Path) -> Result<(PathBuf, String), FetchError> {
    let io = |error: std::io::Error| FetchError::Io {
        url: arg.display().to_string(),
        message: error.to_string(),
    };
    let canonical = std::fs::canonicalize(arg).map_err(io)?;
    if !canonical.is_dir() {
        let (Some(root), Some(name)) = (canonical.parent(), canonical.file_name()) else {
            return Err(io(std::io::Error::other("not a playlist file")));
        };
        return Ok((
            root.to_owned(),
            percent_encode(utf8_name(name, &canonical)?),
        ));
    }
    if canonical.join("master.m3u8").is_file() {
        return Ok((canonical, "master.m3u8".to_owned()));
    }
    let mut playlists = Vec::new();
    for dir_entry in std::fs::read_dir(&canonical).map_err(io)? {
        let path = dir_entry.map_err(io)?.path();
        let is_playlist = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("m3u8"));
        if is_playlist && path.is_file() {
            playlists.push(path);
        }
    }
    match playlists.as_slice() {
        [only] => {
            let name = only.file_name().unwrap_or_default();
            let entry = percent_encode(utf8_name(name, only)?);
            Ok((canonical, entry))
        }
        _ => Err(FetchError::NoPlaylist {
            dir: canonical,
            found: playlists.len(),
        }),
    }
}

fn utf8_name<'a>(name: &'a std::ffi::OsStr, path: &Path) -> Result<&'a str, FetchError> {
    name.to_str().ok_or_else(|| FetchError::BadUrl {
        url: path.display().to_string(),
        reason: "file name is not UTF-8".to_owned(),
    })
}

/// `uri` resolved against the playlist `relative_to`, both percent-encoded
/// paths relative to the root; refuses anything that would leave the root.
fn join_relative(relative_to: &str, uri: &str) -> Result<String, FetchError> {
    let outside = || FetchError::OutsideRoot {
        path: uri.to_owned(),
    };
    if uri.is_empty() {
        return Err(FetchError::BadUrl {
            url: uri.to_owned(),
            reason: "empty URI".to_owned(),
        });
    }
    // Absolute paths, network paths (`//host`) and URLs with a scheme.
    if uri.starts_with('/') || Url::parse(uri).is_ok() {
        return Err(outside());
    }
    let directory = relative_to.rsplit_once('/').map_or("", |(dir, _)| dir);
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let mut segments: Vec<&str> = Vec::new();
    for segment in directory.split('/').chain(path.split('/')) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or_else(outside)?;
            }
            encoded => {
                check_segment(encoded, uri)?;
                segments.push(encoded);
            }
        }
    }
    if segments.is_empty() {
        return Err(FetchError::BadUrl {
            url: uri.to_owned(),
            reason: "names no file".to_owned(),
        });
    }
    Ok(segments.join("/"))
}

/// A path segment must decode to a plain file name.
fn check_segment(encoded: &str, uri: &str) -> Result<(), FetchError> {
    let bad = |reason: &str| FetchError::BadUrl {
        url: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let decoded = percent_decode(encoded).ok_or_else(|| bad("bad percent-encoding"))?;
    if decoded == "." || decoded == ".." {
        // An encoded dot segment is an attempt to get around the check above.
        return Err(FetchError::OutsideRoot {
            path: uri.to_owned(),
        });
    }
    if decoded.contains(['/', '\\', '\0']) {
        return Err(bad("a path segment holds a separator or NUL"));
    }
    Ok(())
}

/// The file a path from [`join_relative`] names.
fn file_path(root: &Path, relative: &str) -> Result<PathBuf, FetchError> {
    let mut path = root.to_owned();
    for segment in relative.split('/') {
        let decoded = percent_decode(segment).ok_or_else(|| FetchError::BadUrl {
            url: relative.to_owned(),
            reason: "bad percent-encoding".to_owned(),
        })?;
        path.push(decoded);
    }
    Ok(path)
}

async fn read_inside(
    root: &Path,
    path: &Path,
    range: Option<ByteRange>,
    max_bytes: u64,
) -> Result<Bytes, FetchError> {
    let io = |error: std::io::Error| FetchError::Io {
        url: path.display().to_string(),
        message: error.to_string(),
    };
    // Symlinks may point anywhere: what counts is where they lead.
    let canonical = tokio::fs::canonicalize(path).await.map_err(io)?;
    if !canonical.starts_with(root) {
        return Err(FetchError::OutsideRoot {
            path: path.display().to_string(),
        });
    }
    let mut file = tokio::fs::File::open(&canonical).await.map_err(io)?;
    let metadata = file.metadata().await.map_err(io)?;
    if !metadata.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let too_large = || FetchError::TooLarge {
        url: path.display().to_string(),
        max: max_bytes,
    };
    if let Some(range) = range {
        if range.length > max_bytes {
            return Err(too_large());
        }
        if range.end() > metadata.len() {
            return Err(FetchError::Range {
                url: path.display().to_string(),
                reason: format!(
                    "bytes {}-{} are past the end of its {} bytes",
                    range.offset,
                    range.end().saturating_sub(1),
                    metadata.len()
                ),
            });
        }
        file.seek(std::io::SeekFrom::Start(range.offset))
            .await
            .map_err(io)?;
        let mut body = Vec::with_capacity(usize::try_from(range.length).unwrap_or(0));
        file.take(range.length)
            .read_to_end(&mut body)
            .await
            .map_err(io)?;
        if body.len() as u64 != range.length {
            return Err(io(std::io::Error::other("the file shrank while read")));
        }
        return Ok(Bytes::from(body));
    }
    if metadata.len() > max_bytes {
        return Err(too_large());
    }
    // The size is real and within the limit; a file still being written may
    // have grown since, hence the one-byte-over read.
    let mut body = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .await
        .map_err(io)?;
    if body.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(Bytes::from(body))
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let [high, low, after @ ..] = tail else {
                return None;
            };
            let digit = |b: u8| char::from(b).to_digit(16);
            let value = digit(*high)? * 16 + digit(*low)?;
            bytes.push(u8::try_from(value).ok()?);
            rest = after;
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Encodes a file name as a relative-URI path segment (RFC 3986 `pchar`
/// without `:`, so it can never read as a scheme).
fn percent_encode(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::{TcpListener, TcpStream};

    const BIG: usize = 100;

    /// A one-request-per-connection HTTP/1.1 server answering by path.
    async fn serve() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket));
            }
        });
        address
    }

    async fn answer(mut socket: TcpStream) {
        let mut head = Vec::new();
        let mut buffer = [0; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let big = "x".repeat(BIG);
        let response = match path.as_str() {
            "/missing" => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "/big-declared" => format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n{big}"),
            // No length: the body ends when the connection closes.
            "/big-undeclared" => format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{big}"),
            "/silent" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            // Honours `Range: bytes=a-b` of "0123456789", or not.
            "/digits" | "/digits-short" => {
                let asked = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("range: bytes=")
                            .or(l.strip_prefix("Range: bytes="))
                    })
                    .and_then(|r| r.trim().split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
                match asked {
                    Some((a, b)) => {
                        let end = if path == "/digits-short" { b } else { b + 1 };
                        let body = &"0123456789"[a..end.min(10)];
                        format!(
                            "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    None => "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789".to_owned(),
                }
            }
            "/ignores-range" => {
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789".to_owned()
            }
            _ => format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                path.len()
            ),
        };
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
    }

    fn http_source(address: SocketAddr, limits: FetchLimits) -> Source {
        let url = format!("http://{address}/live/master.m3u8");
        let source = Source::from_arg(&url, limits).unwrap();
        assert_eq!(source.entry(), url);
        source
    }

    #[tokio::test]
    async fn http_ok_and_status() {
        let source = http_source(serve().await, FetchLimits::default());
        let body = source.get(source.entry(), "/ok", 1000).await.unwrap();
        assert_eq!(body, "/ok");
        let entry = source.get("", source.entry(), 1000).await.unwrap();
        assert_eq!(entry, "/live/master.m3u8");
        let error = source.get("", "/missing", 1000).await.unwrap_err();
        assert!(
            matches!(error, FetchError::Status { status: 404, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn byte_ranges_over_http_and_from_a_folder() {
        let source = http_source(serve().await, FetchLimits::default());
        let range = Some(ByteRange {
            offset: 3,
            length: 4,
        });
        let body = source.get_range("", "/digits", range, 100).await.unwrap();
        assert_eq!(body, "3456");
        // A server that ignores Range, or answers it short, is refused.
        for path in ["/ignores-range", "/digits-short"] {
            let error = source.get_range("", path, range, 100).await.unwrap_err();
            assert!(matches!(error, FetchError::Range { .. }), "{path}: {error}");
        }
        // A range over the limit is refused before any request.
        let error = source.get_range("", "/digits", range, 3).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("all.mp4"), "0123456789").unwrap();
        std::fs::write(dir.path().join("master.m3u8"), "#EXTM3U\n").unwrap();
        let folder =
            Source::from_arg(&dir.path().to_string_lossy(), FetchLimits::default()).unwrap();
        let body = folder.get_range("", "all.mp4", range, 100).await.unwrap();
        assert_eq!(body, "3456");
        let past = Some(ByteRange {
            offset: 8,
            length: 4,
        });
        let error = folder
            .get_range("", "all.mp4", past, 100)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Range { .. }), "{error}");
    }

    #[tokio::test]
    async fn http_body_over_the_limit() {
        let address = serve().await;
        let client = http_client(&FetchLimits::default()).unwrap();
        for path in ["/big-declared", "/big-undeclared"] {
            let url = Url::parse(&format!("http://{address}{path}")).unwrap();
            let error = fetch_url(&client, &url, 10).await.unwrap_err();
            assert!(
                matches!(error, FetchError::TooLarge { max: 10, .. }),
                "{path}: {error}"
            );
            let whole = fetch_url(&client, &url, BIG as u64).await.unwrap();
            assert_eq!(whole.len(), BIG, "{path}: exactly the limit is fine");
        }
    }

    #[tokio::test]
    async fn http_silent_server_times_out() {
        let limits = FetchLimits {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
        };
        let source = http_source(serve().await, limits);
        let started = std::time::Instant::now();
        let error = source.get("", "/silent", 1000).await.unwrap_err();
        assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn http_relative_and_absolute_uris() {
        let address = serve().await;
        let source = http_source(address, FetchLimits::default());
        let variant = source.resolve(source.entry(), "720p/index.m3u8").unwrap();
        assert_eq!(variant, format!("http://{address}/live/720p/index.m3u8"));
        let up = source.get(&variant, "../seg.ts", 1000).await.unwrap();
        assert_eq!(up, "/live/seg.ts");
        let absolute = format!("http://{address}/elsewhere/seg.ts?t=1");
        assert_eq!(
            source.get(&variant, &absolute, 1000).await.unwrap(),
            "/elsewhere/seg.ts?t=1"
        );

        let not_http = source.resolve(&variant, "file:///etc/passwd").unwrap_err();
        assert!(matches!(not_http, FetchError::BadUrl { .. }), "{not_http}");
        let not_http = Source::from_arg("ftp://example.com/a.m3u8", FetchLimits::default());
        assert!(matches!(not_http, Err(FetchError::BadUrl { .. })));
    }

    fn write(path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    #[tokio::test]
    async fn folder_reads_files_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("master.m3u8"), "master");
        write(&dir.path().join("other.m3u8"), "other");
        write(&dir.path().join("v/index.m3u8"), "index");
        write(&dir.path().join("v/seg 1.ts"), "segment one");

        let source =
            Source::from_arg(dir.path().to_str().unwrap(), FetchLimits::default()).unwrap();
        let Source::Folder { root, .. } = &source else {
            panic!("expected a folder source");
        };
        assert_eq!(root, &dir.path().canonicalize().unwrap());
        assert_eq!(source.entry(), "master.m3u8");
        assert_eq!(source.get("", source.entry(), 100).await.unwrap(), "master");

        let variant = source.resolve(source.entry(), "./v/index.m3u8").unwrap();
        assert_eq!(variant, "v/index.m3u8");
        assert_eq!(
            source.resolve(&variant, "seg%201.ts?x#y").unwrap(),
            "v/seg%201.ts"
        );
        assert_eq!(
            source.get(&variant, "seg%201.ts", 100).await.unwrap(),
            "segment one"
        );
        assert_eq!(
            source.get(&variant, "../master.m3u8", 100).await.unwrap(),
            "master"
        );

        let error = source.get(&variant, "seg%201.ts", 5).await.unwrap_err();
        assert!(
            matches!(error, FetchError::TooLarge { max: 5, .. }),
            "{error}"
        );
        let error = source.get(&variant, "absent.ts", 100).await.unwrap_err();
        assert!(matches!(error, FetchError::Io { .. }), "{error}");
    }

    #[tokio::test]
    async fn folder_refuses_paths_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        write(&outside.path().join("secret.ts"), "secret");
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("live.m3u8"), "live");
        std::os::unix::fs::symlink(outside.path().join("secret.ts"), dir.path().join("link.ts"))
            .unwrap();

        let source =
            Source::from_arg(dir.path().to_str().unwrap(), FetchLimits::default()).unwrap();
        assert_eq!(source.entry(), "live.m3u8", "the only playlist");
        for uri in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "%2e%2e/x",
            "file:///etc/passwd",
            "http://example.com/x.ts",
            "link.ts",
        ] {
            let error = source.get(source.entry(), uri, 100).await.unwrap_err();
            assert!(
                matches!(error, FetchError::OutsideRoot { .. }),
                "{uri}: {error}"
            );
        }
        let error = source.get("", "a%2fb.ts", 100).await.unwrap_err();
        assert!(matches!(error, FetchError::BadUrl { .. }), "{error}");
    }

    #[test]
    fn folder_entry_choice() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("a.m3u8"), "a");
        write(&dir.path().join("b.m3u8"), "b");
        let error = Source::from_arg(dir.path().to_str().unwrap(), FetchLimits::default());
        assert!(matches!(
            error,
            Err(FetchError::NoPlaylist { found: 2, .. })
        ));

        let file = dir.path().join("b.m3u8");
        let source = Source::from_arg(file.to_str().unwrap(), FetchLimits::default()).unwrap();
        assert_eq!(source.entry(), "b.m3u8");

        write(&dir.path().join("my stream.m3u8"), "c");
        let file = dir.path().join("my stream.m3u8");
        let source = Source::from_arg(file.to_str().unwrap(), FetchLimits::default()).unwrap();
        assert_eq!(source.entry(), "my%20stream.m3u8");

        let missing = Source::from_arg("/nonexistent/meshcast", FetchLimits::default());
        assert!(matches!(missing, Err(FetchError::Io { .. })));
    }
}
