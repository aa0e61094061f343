//! The plain-HTTP side of `serve`: the demo page or a folder of static files, answered
//! through `wsx::Server`'s `on_http` (which reads the request, refuses other methods and
//! bodies, and leaves the body out of an answer to `HEAD`).

use std::{
    io,
    path::{Component, Path, PathBuf},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tokio::io::AsyncReadExt;
use wsx::Reject;

/// The demo page served at `/`.
const DEMO_PAGE: &str = include_str!("demo.html");

/// The largest file served from `--static`: each response is held in memory until written.
const MAX_FILE: u64 = 16 << 20;

/// What plain HTTP requests get: the demo page, or the files under a folder.
#[derive(Debug)]
pub(super) struct Site {
    /// The `--static` folder; `None` serves the demo page.
    root: Option<PathBuf>,
    /// The demo page as served.
    demo: Bytes,
}

impl Site {
    /// The demo page, or the files of `root`, which must be a directory. `resumable`
    /// (`--resumable`) marks the demo page so that it strips the positions from room messages
    /// and resumes from the last one when it reconnects.
    pub(super) fn new(root: Option<PathBuf>, resumable: bool) -> anyhow::Result<Self> {
        if let Some(dir) = &root {
            anyhow::ensure!(dir.is_dir(), "--static {}: not a directory", dir.display());
        }
        Ok(Self { root, demo: demo_page(resumable) })
    }

    /// The response to a `GET` or `HEAD` request.
    pub(super) async fn respond(&self, request: &http::Request<()>) -> Response<Bytes> {
        let path = request.uri().path();
        let Some(root) = &self.root else {
            return match path {
                "/" | "/index.html" => ok(self.demo.clone(), "text/html; charset=utf-8"),
                _ => status(StatusCode::NOT_FOUND),
            };
        };
        let file = match resolve(root, path) {
            Resolved::File(file) => file,
            Resolved::NotFound => return status(StatusCode::NOT_FOUND),
            Resolved::Forbidden => return status(StatusCode::FORBIDDEN),
            Resolved::BadRequest => return status(StatusCode::BAD_REQUEST),
        };
        match read_bounded(&file).await {
            Ok(Some(bytes)) => ok(bytes.into(), content_type(&file)),
            Ok(None) => {
                tracing::warn!(file = %file.display(), "not served: over {} MiB", MAX_FILE >> 20);
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Err(_) => status(StatusCode::NOT_FOUND),
        }
    }
}

/// The demo page, its `<body>` marked `data-resumable` for `--resumable`.
fn demo_page(resumable: bool) -> Bytes {
    if resumable {
        Bytes::from(DEMO_PAGE.replacen("<body>", "<body data-resumable>", 1))
    } else {
        Bytes::from_static(DEMO_PAGE.as_bytes())
    }
}

/// The contents of `file`, or `None` if it is over [`MAX_FILE`] bytes.
async fn read_bounded(file: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut contents = Vec::new();
    tokio::fs::File::open(file).await?.take(MAX_FILE + 1).read_to_end(&mut contents).await?;
    Ok((contents.len() as u64 <= MAX_FILE).then_some(contents))
}

/// `200 OK` with `body` of type `content_type`.
fn ok(body: Bytes, content_type: &'static str) -> Response<Bytes> {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    cautious(response)
}

/// `status` with its reason phrase as a plain-text body.
fn status(status: StatusCode) -> Response<Bytes> {
    cautious(Reject::status(status).into_response())
}

/// `response` with the headers every answer of this development server carries: no content
/// sniffing, no caching (the files change while you work on them).
fn cautious(mut response: Response<Bytes>) -> Response<Bytes> {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Where a request path leads under the static root.
#[derive(Debug, PartialEq)]
enum Resolved {
    File(PathBuf),
    NotFound,
    /// `..` or a hidden (dot) segment.
    Forbidden,
    /// Bad percent-encoding, a NUL or a backslash.
    BadRequest,
}

/// Map a URL path to a file under `root`: percent-decoded, no `..`, no hidden segments, no
/// backslashes or NULs, and after following symlinks still inside `root`. A directory means
/// its `index.html`.
fn resolve(root: &Path, path: &str) -> Resolved {
    let Some(decoded) = percent_decode(path) else { return Resolved::BadRequest };
    if !decoded.starts_with('/') || decoded.contains(['\0', '\\']) {
        return Resolved::BadRequest;
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Resolved::Forbidden,
            s if s.starts_with('.') => return Resolved::Forbidden,
            s => relative.push(s),
        }
    }
    // `push` of a plain segment can still be absolute or a prefix on some platforms: check.
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Resolved::Forbidden;
    }
    let Ok(root) = root.canonicalize() else { return Resolved::NotFound };
    let mut candidate = root.join(&relative);
    if candidate.is_dir() {
        candidate.push("index.html");
    }
    match candidate.canonicalize() {
        Ok(real) if real.starts_with(&root) && real.is_file() => Resolved::File(real),
        Ok(real) if !real.starts_with(&root) => Resolved::Forbidden,
        _ => Resolved::NotFound,
    }
}

/// Decode `%XX` escapes; `None` if one is malformed or the result is not UTF-8.
pub(super) fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // Two hex digits: `from_str_radix` alone would also take a sign (`%+1`).
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
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

/// The content type for a file, by extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_page_is_marked_resumable_only_with_resumable() {
        let marked = String::from_utf8(demo_page(true).to_vec()).unwrap();
        assert_eq!(marked.matches("<body data-resumable>").count(), 1);
        let plain = demo_page(false);
        assert!(!String::from_utf8_lossy(&plain).contains("<body data-resumable>"));
        assert_eq!(plain.len() + " data-resumable".len(), marked.len());
    }

    #[test]
    fn resolves_inside_root_only() {
        let dir = std::env::temp_dir().join(format!("wsx-cli-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("sub/index.html"), "i").unwrap();
        let root = dir.canonicalize().unwrap();
        assert_eq!(resolve(&dir, "/a.txt"), Resolved::File(root.join("a.txt")));
        assert_eq!(resolve(&dir, "/sub/"), Resolved::File(root.join("sub/index.html")));
        assert_eq!(resolve(&dir, "/sub/../a.txt"), Resolved::Forbidden);
        assert_eq!(resolve(&dir, "/%2e%2e/etc/passwd"), Resolved::Forbidden);
        assert_eq!(resolve(&dir, "/.hidden"), Resolved::Forbidden);
        assert_eq!(resolve(&dir, "/a%5c..%5cb"), Resolved::BadRequest);
        assert_eq!(resolve(&dir, "/%zz"), Resolved::BadRequest);
        assert_eq!(resolve(&dir, "/missing"), Resolved::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every `%` escape: decoded exactly when both characters are hex digits (`from_str_radix`
    /// alone also takes a sign, so `%+1` was byte 1).
    #[test]
    fn percent_escapes_need_two_hex_digits() {
        for a in 0u8..128 {
            for b in 0u8..128 {
                let input = format!("/x%{}{}", a as char, b as char);
                let valid = a.is_ascii_hexdigit() && b.is_ascii_hexdigit();
                let decoded = percent_decode(&input);
                if valid {
                    let byte = u8::from_str_radix(&input[3..], 16).unwrap();
                    let expected = String::from_utf8(vec![b'/', b'x', byte]).ok();
                    assert_eq!(decoded, expected, "{input:?}");
                } else {
                    assert_eq!(decoded, None, "{input:?}");
                }
            }
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("x.HTML")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("x.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
