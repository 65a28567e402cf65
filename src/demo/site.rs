//! The demo's web server: the page's files and `/config.json`.

use super::*;

/// What the web server serves.
pub(super) struct Site {
    /// The page's folder, canonical.
    pub(super) root: PathBuf,
    /// `/config.json`.
    pub(super) config: Vec<u8>,
}

/// Serves `/config.json` and the files of the page's folder.
pub(super) async fn serve(State(site): State<Arc<Site>>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if uri.path() == "/config.json" {
        return respond(StatusCode::OK, "application/json", site.config.clone());
    }
    let path = match file_path(&site.root, uri.path()) {
        Ok(path) => path,
        Err(why) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{why}\n"),
            );
        }
    };
    let not_found = || {
        respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        )
    };
    // Symlinks are followed, but only to files inside the folder.
    let Ok(real) = tokio::fs::canonicalize(&path).await else {
        return not_found();
    };
    let is_file = tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_file());
    if !real.starts_with(&site.root) || !is_file {
        return not_found();
    }
    match tokio::fs::read(&real).await {
        Ok(bytes) => respond(StatusCode::OK, content_type(&real), bytes),
        Err(_) => not_found(),
    }
}

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The file a request path names inside `root`, or why the path is refused:
/// percent-escapes are decoded first, then `.`/`..` components, empty
/// components, backslashes and NULs are refused. `/` and `dir/` mean their
/// index.html.
pub(super) fn file_path(root: &Path, request_path: &str) -> Result<PathBuf, &'static str> {
    let decoded = percent_decode(request_path).ok_or("bad percent-escape in the path")?;
    let relative = decoded
        .strip_prefix('/')
        .ok_or("the path must start with /")?;
    if relative.contains(['\\', '\0']) {
        return Err("backslashes and NULs are not allowed in paths");
    }
    let (dirs, name) = match relative.rsplit_once('/') {
        Some((dirs, name)) => (Some(dirs), name),
        None => (None, relative),
    };
    let mut path = root.to_path_buf();
    for component in dirs.into_iter().flat_map(|d| d.split('/')) {
        match component {
            "" => return Err("empty path components are not allowed"),
            "." | ".." => return Err("`.` and `..` are not allowed in paths"),
            _ => path.push(component),
        }
    }
    match name {
        "" => path.push("index.html"),
        "." | ".." => return Err("`.` and `..` are not allowed in paths"),
        _ => path.push(name),
    }
    Ok(path)
}

/// Decodes %XX escapes; `None` for a bad escape or bytes that are not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_stay_inside_the_folder() {
        let root = Path::new("/srv/web");
        assert_eq!(file_path(root, "/"), Ok(root.join("index.html")));
        assert_eq!(file_path(root, "/app.js"), Ok(root.join("app.js")));
        assert_eq!(
            file_path(root, "/pkg/client_bg.wasm"),
            Ok(root.join("pkg/client_bg.wasm"))
        );
        assert_eq!(file_path(root, "/pkg/"), Ok(root.join("pkg/index.html")));
        assert_eq!(file_path(root, "/a%20b.css"), Ok(root.join("a b.css")));
        for bad in [
            "/../etc/passwd",
            "/..%2fetc%2fpasswd",
            "/%2e%2e/etc/passwd",
            "/pkg/../../x",
            "/..",
            "/.",
            "//etc/passwd",
            "/%2fetc/passwd",
            "/..%5cx",
            "/a\\b",
            "/a%00b",
            "/bad%zz",
            "/trunc%2",
            "relative",
        ] {
            assert!(file_path(root, bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn content_types_suit_browsers() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("m.mjs")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("c.WASM")), "application/wasm");
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }
}
