//! The published advisories that are about a client's I/O, replayed against the tokio client
//! over loopback: a decompression bomb from the server (undici CVE-2026-1526) and header lines
//! injected through values the application sets (undici CVE-2026-1527). The engine-level tests
//! of every advisory, these two included, are in `crates/wsx-proto/tests/advisories.rs`;
//! `docs/security.md` lists them all.

use flate2::{Compress, Compression, FlushCompress};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use wsx::ClientBuilder;

const MIB: usize = 1 << 20;

/// A raw deflate stream (sync-flushed, `00 00 ff ff` cut) that inflates to `mib` MiB of zeros,
/// about 1 KiB per MiB.
fn bomb(mib: usize) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(64 << 10);
    compress.compress_vec(&vec![0; MIB], &mut chunk, FlushCompress::Sync).expect("deflate 1 MiB of zeros");
    assert!(chunk.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    let mut stream = chunk.repeat(mib);
    stream.truncate(stream.len() - 4);
    stream
}

/// Read a request head (up to the blank line) from `tcp`.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.expect("read the request");
        assert!(n > 0, "the client hung up before finishing its request");
        assert!(head.len() < 64 << 10, "an endless request head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).expect("an ASCII request head")
}

/// The `Sec-WebSocket-Accept` answering the request `head`.
fn accept_for(head: &str) -> String {
    let key = head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).expect("a Sec-WebSocket-Key");
    wsx::proto::handshake::accept_key(key.trim().as_bytes())
}

/// undici CVE-2026-1526: a client inflated a server's compressed message without bound. The
/// tokio client, with its default configuration (permessage-deflate offered, 64 MiB messages),
/// fails a 65 MiB bomb with 1009, reports that to the application, and tells the server so.
#[tokio::test]
async fn undici_cve_2026_1526_tokio_client_stops_a_bomb_with_1009() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let head = read_head(&mut tcp).await;
        assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{head}");
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            accept_for(&head)
        );
        tcp.write_all(response.as_bytes()).await.expect("write the 101");
        let payload = bomb(65);
        let mut frame = vec![0x80 | 0x40 | 0x02, 127];
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        frame.extend_from_slice(&payload);
        tcp.write_all(&frame).await.expect("write the bomb");
        // What the client answers, up to its end of the connection.
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.expect("read the client's close");
        answer
    });
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).connect().await.expect("connect");
    let error = ws.recv().await.expect_err("the bomb is refused");
    assert_eq!(error.close_code().map(|c| c.0), Some(1009), "{error:?}");
    drop(ws);
    let answer = server.await.expect("the server task");
    // A masked close frame carrying 1009.
    let [0x88, len, k0, k1, k2, k3, c0, c1, ..] = answer[..] else { panic!("no close frame: {answer:?}") };
    assert!(len & 0x80 != 0 && len & 0x7f >= 2, "{answer:?}");
    assert_eq!(u16::from_be_bytes([c0 ^ k0, c1 ^ k1]), 1009, "{answer:?}");
    let _ = (k2, k3);
}

/// undici CVE-2026-1527: a value the application set was written into the request unchecked,
/// so CRLF in it added header lines. The tokio client refuses such values before it connects,
/// a URL whose path or query carries an encoded CRLF reaches the server still encoded, and a
/// raw CR or LF in a URL is dropped by the URL parser (WHATWG URL): the request has exactly the
/// lines the client means.
#[tokio::test]
async fn undici_cve_2026_1527_tokio_client_sends_only_the_lines_it_means() {
    let evil = "chat\r\nX-Evil: 1";
    let errors = [
        ClientBuilder::new("ws://127.0.0.1:1/").protocol(evil).connect().await.expect_err("a CRLF subprotocol"),
        ClientBuilder::new("ws://127.0.0.1:1/").header("x-app", evil).connect().await.expect_err("a CRLF header"),
        ClientBuilder::new("ws://127.0.0.1:1/").origin(evil).connect().await.expect_err("a CRLF origin"),
    ];
    for error in &errors {
        assert!(error.is_config(), "{error:?}");
        assert!(!error.is_io(), "refused before connecting: {error:?}");
    }

    for (url, request_line) in [
        ("/a%0D%0AX-Evil:%201?q=%0d%0aX-Evil:1", "GET /a%0D%0AX-Evil:%201?q=%0d%0aX-Evil:1 HTTP/1.1"),
        ("/a\r\nX-Evil:1", "GET /aX-Evil:1 HTTP/1.1"),
    ] {
        let head = request_for(url).await;
        check_lines(&head, request_line);
    }
}

/// The request head a client connecting with `path` sends (the server hangs up without
/// answering: only the request matters here).
async fn request_for(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        read_head(&mut tcp).await
    });
    let _ = ClientBuilder::new(format!("ws://{addr}{path}")).protocol("chat").connect().await;
    server.await.expect("the server task")
}

/// Check that `head` has `request_line` and exactly the header fields the client writes.
fn check_lines(head: &str, request_line: &str) {
    let lines: Vec<&str> = head.trim_end_matches("\r\n").split("\r\n").collect();
    assert_eq!(lines[0], request_line, "{head}");
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split(':').next().unwrap_or_default()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "Connection",
            "Host",
            "Sec-WebSocket-Extensions",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Upgrade",
            "sec-websocket-protocol"
        ],
        "{head}"
    );
    assert!(!head.contains("\r\nX-Evil"), "{head}");
}
