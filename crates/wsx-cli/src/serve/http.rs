//! The plain-HTTP side of `serve`: reading a request head, the demo page, static files.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request head read (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 << 10;

/// The most headers a request may have.
const MAX_HEADERS: usize = 100;

/// The demo page served at `/`.
const DEMO_PAGE: &str = include_str!("demo.html");

/// What the head of a request said, as far as routing needs.
#[derive(Debug)]
pub(crate) struct Head {
    /// Every byte read so far: the head and possibly more (replayed to the WebSocket side).
    pub(crate) bytes: Vec<u8>,
    pub(crate) method: String,
    /// The request target as sent (path and query).
    pub(crate) target: String,
    /// Whether it asks for a WebSocket upgrade (`Upgrade: websocket`).
    pub(crate) upgrade: bool,
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The connection closed or failed before a full head arrived.
    Io(io::Error),
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers: answer 431.
    TooLarge,
    /// Not HTTP/1.x: answer 400.
    Malformed,
}

/// Read until the end of the request head (`\r\n\r\n`), at most [`MAX_HEAD`] bytes.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Head, HeadError> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&bytes) {
            Ok(httparse::Status::Complete(_)) => {
                let upgrade = request.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("upgrade")
                        && std::str::from_utf8(h.value)
                            .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
                });
                let method = request.method.unwrap_or_default().to_owned();
                let target = request.path.unwrap_or_default().to_owned();
                return Ok(Head { bytes, method, target, upgrade });
            }
            Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
        let want = chunk.len().min(MAX_HEAD + 1 - bytes.len());
        let n = io.read(&mut chunk[..want]).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Answer one plain-HTTP request (GET or HEAD), then close.
pub(crate) async fn respond<S>(io: &mut S, head: &Head, static_root: Option<&Path>) -> io::Result<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        write_simple(io, 405, "Method Not Allowed", &[("Allow", "GET, HEAD")], false).await?;
        return Ok(405);
    }
    let path = head.target.split(['?', '#']).next().unwrap_or("/");
    let Some(root) = static_root else {
        if path == "/" || path == "/index.html" {
            let headers = [("Content-Type", "text/html; charset=utf-8")];
            write_response(io, 200, "OK", &headers, DEMO_PAGE.len() as u64).await?;
            if !head_only {
                io.write_all(DEMO_PAGE.as_bytes()).await?;
            }
            io.shutdown().await?;
            return Ok(200);
        }
        write_simple(io, 404, "Not Found", &[], head_only).await?;
        return Ok(404);
    };
    let file = match resolve(root, path) {
        Resolved::File(file) => file,
        Resolved::NotFound => {
            write_simple(io, 404, "Not Found", &[], head_only).await?;
            return Ok(404);
        }
        Resolved::Forbidden => {
            write_simple(io, 403, "Forbidden", &[], head_only).await?;
            return Ok(403);
        }
        Resolved::BadRequest => {
            write_simple(io, 400, "Bad Request", &[], head_only).await?;
            return Ok(400);
        }
    };
    let opened = async {
        let f = tokio::fs::File::open(&file).await?;
        let len = f.metadata().await?.len();
        Ok::<_, io::Error>((f, len))
    };
    let Ok((mut f, len)) = opened.await else {
        write_simple(io, 404, "Not Found", &[], head_only).await?;
        return Ok(404);
    };
    let headers = [("Content-Type", content_type(&file))];
    write_response(io, 200, "OK", &headers, len).await?;
    if !head_only {
        tokio::io::copy(&mut (&mut f).take(len), io).await?;
    }
    io.shutdown().await?;
    Ok(200)
}

/// Answer with a status and a one-line text body, then close (for refusals before or instead
/// of a WebSocket handshake, too).
pub(crate) async fn write_simple<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    head_only: bool,
) -> io::Result<()> {
    let body = format!("{status} {reason}\n");
    let mut all = vec![("Content-Type", "text/plain; charset=utf-8")];
    all.extend_from_slice(headers);
    write_response(io, status, reason, &all, body.len() as u64).await?;
    if !head_only {
        io.write_all(body.as_bytes()).await?;
    }
    io.shutdown().await
}

async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    len: u64,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n\r\n"
    ));
    io.write_all(out.as_bytes()).await
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
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
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

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("x.HTML")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("x.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
