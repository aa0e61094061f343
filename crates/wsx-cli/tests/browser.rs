//! The demo page of `wsx serve` in headless Chromium (playwright-core, from tests-peers).

mod common;

use std::{path::Path, time::Duration};

use common::{Peers, bounded, serve, within};

/// Run `browser_demo.js` against `page`, returning its JSON result.
async fn drive(peers: &Peers, page: &str, extra: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser_demo.js");
    let mut args = vec![page, "--expect", "ho!", "--send", "hey", "--timeout", "50"];
    args.extend_from_slice(extra);
    let mut browser = peers.node(&script, &args);
    // The script exits when its stdin closes, and waiting on the child closes it: read the
    // result first.
    let line =
        browser.stdout_line_within(Duration::from_secs(55), "the browser's JSON result", |l| l.starts_with('{')).await;
    let status = within("the browser to exit", browser.child.wait()).await.expect("wait for node");
    let result: serde_json::Value = serde_json::from_str(&line).expect("JSON result");
    assert!(status.success(), "browser run failed: {result}\nstderr: {}", browser.stderr_text());
    result
}

#[tokio::test]
async fn demo_page_talks_to_the_server_in_chromium() {
    bounded(async {
        let peers = Peers::require("playwright-core");
        let (server, port) = serve(&[]).await;
        let screenshot = common::repo_root().join("target/wsx-cli-demo.png");
        let page = format!("http://127.0.0.1:{port}/");
        let result = drive(&peers, &page, &["--screenshot", screenshot.to_str().unwrap()]).await;
        assert_eq!(result["received"][0], "ho!", "{result}");
        let line = server.stdout_line("the server's log of the browser's message", |l| l.contains("Received")).await;
        assert_eq!(line, "Received message => hey");
        assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
    })
    .await;
}

#[tokio::test]
async fn demo_page_over_https_uses_wss() {
    bounded(async {
        let peers = Peers::require("playwright-core");
        let dir = common::temp_dir("browser-tls");
        let cert = dir.join("c.pem");
        let (server, port) = serve(&["--tls-self-signed", "--cert-out", cert.to_str().unwrap()]).await;
        let page = format!("https://localhost:{port}/");
        drive(&peers, &page, &["--ignore-https-errors"]).await;
        let line = server.stdout_line("the server's log of the browser's message", |l| l.contains("Received")).await;
        assert_eq!(line, "Received message => hey");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// Over TLS the page comes over HTTP/2 (ALPN), and Chromium opens the page's `wss://`
/// WebSocket on that same connection as an extended CONNECT (RFC 8441), which the server logs.
#[tokio::test]
async fn demo_page_over_http2_opens_its_websocket_on_the_same_connection() {
    bounded(async {
        let peers = Peers::require("playwright-core");
        let dir = common::temp_dir("browser-h2");
        let cert = dir.join("c.pem");
        let (server, port) = serve(&["--tls-self-signed", "--cert-out", cert.to_str().unwrap()]).await;
        let screenshot = common::repo_root().join("target/wsx-cli-demo-h2.png");
        let page = format!("https://localhost:{port}/");
        let result =
            drive(&peers, &page, &["--ignore-https-errors", "--screenshot", screenshot.to_str().unwrap()]).await;
        assert_eq!(result["received"][0], "ho!", "{result}");
        let line = server.stderr_line("the server's log of the page", |l| l.contains("GET /")).await;
        assert!(line.contains("HTTP/2"), "the page did not come over HTTP/2: {line}");
        let line = server.stderr_line("the server's log of the WebSocket", |l| l.contains("client connected")).await;
        assert!(line.contains("http=\"HTTP/2\""), "the WebSocket did not come over HTTP/2: {line}");
        let line = server.stdout_line("the server's log of the browser's message", |l| l.contains("Received")).await;
        assert_eq!(line, "Received message => hey");
        assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn two_pages_in_a_room_chat_in_chromium() {
    bounded(async {
        let peers = Peers::require("playwright-core");
        let (server, port) = serve(&["--rooms"]).await;
        let screenshot = common::repo_root().join("target/wsx-cli-rooms.png");
        let page = format!("http://127.0.0.1:{port}/?room=lounge");
        // Long enough to be compressed: both pages negotiate permessage-deflate, and the room's
        // messages reach them as one compressed frame shared by both.
        let said = format!("hey {}", "from the lounge, ".repeat(20));
        let result =
            drive(&peers, &page, &["--pages", "2", "--send", &said, "--screenshot", screenshot.to_str().unwrap()])
                .await;
        for (i, page) in result["pages"].as_array().expect("pages").iter().enumerate() {
            assert_eq!(page["room"], "lounge", "{result}");
            let extensions = page["extensions"].as_str().unwrap_or_default();
            assert!(extensions.starts_with("permessage-deflate"), "page {i}: {extensions}");
            let mut received: Vec<&str> =
                page["received"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
            // Two publishers: each one's messages in order, the two interleaved as they came.
            received[1..].sort_unstable();
            assert_eq!(received, ["ho!", &format!("{said} 0"), &format!("{said} 1")], "page {i}: {result}");
        }
        let line = server.stderr_line("the server's log of a room join", |l| l.contains("/room/lounge")).await;
        assert!(line.contains("client connected"), "{line}");
        assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
    })
    .await;
}
