//! `wsx connect`, against the Node `ws` echo server of tests-peers and against `wsx serve`.

mod common;

use common::{Peers, bounded, run_wsx, serve};
use serde_json::Value;

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[tokio::test]
async fn pipes_lines_to_the_node_echo_server() {
    bounded(async {
        let peers = Peers::require("ws");
        let (_echo, port) = peers.echo_server().await;
        let url = format!("ws://127.0.0.1:{port}");
        let run = run_wsx(&["connect", &url, "--wait", "500ms"], "hello\nsecond line\n//slash\n").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let incoming: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("< ")).collect();
        assert_eq!(incoming, ["< hello", "< second line", "< /slash", "< [close 1000]"], "{}", run.stdout);
    })
    .await;
}

#[tokio::test]
async fn json_output_and_binary_input() {
    bounded(async {
        let peers = Peers::require("ws");
        let (_echo, port) = peers.echo_server().await;
        let url = format!("ws://127.0.0.1:{port}");
        let run = run_wsx(&["connect", "--json", &url], "hi\n").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let events = json_lines(&run.stdout);
        assert_eq!(events[0]["type"], "open");
        assert_eq!(events[0]["status"], 101);
        assert!(events.contains(&serde_json::json!({"dir": "out", "type": "text", "data": "hi"})), "{events:?}");
        assert!(events.contains(&serde_json::json!({"dir": "in", "type": "text", "data": "hi"})), "{events:?}");
        let last = events.last().unwrap();
        assert_eq!(
            (last["dir"].as_str(), last["type"].as_str(), last["code"].as_u64()),
            (Some("in"), Some("close"), Some(1000))
        );

        let run = run_wsx(&["connect", "--json", "--binary", "hex", &url], "00ff68\n").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let events = json_lines(&run.stdout);
        let echo = serde_json::json!({"dir": "in", "type": "binary", "data": "00ff68", "encoding": "hex"});
        assert!(events.contains(&echo), "{events:?}");

        let run = run_wsx(&["connect", "--binary", "base64", &url], "not base64!\n").await;
        assert_eq!(run.code, Some(1), "a bad input line fails: {}", run.stderr);
        assert!(run.stderr.contains("bad base64"), "{}", run.stderr);
    })
    .await;
}

#[tokio::test]
async fn close_command_with_a_code_and_ping() {
    bounded(async {
        let peers = Peers::require("ws");
        let (_echo, port) = peers.echo_server().await;
        let url = format!("ws://127.0.0.1:{port}");
        let run = run_wsx(&["connect", "--json", &url], "/ping abc\n/close 4000 done here\nnot sent\n").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let events = json_lines(&run.stdout);
        assert!(events.contains(&serde_json::json!({"dir": "in", "type": "pong", "data": "abc"})), "{events:?}");
        let close_in = serde_json::json!({"dir": "in", "type": "close", "code": 4000, "reason": "done here"});
        assert!(events.contains(&close_in), "{events:?}");
        assert!(!run.stdout.contains("not sent"), "lines after /close are not sent: {}", run.stdout);
    })
    .await;
}

#[tokio::test]
async fn refusal_shows_the_http_status() {
    bounded(async {
        let (_server, port) = serve(&["--origin", "http://good.example"]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let run = run_wsx(&["connect", "--origin", "http://evil.example", &url], "").await;
        assert_eq!(run.code, Some(3), "stderr: {}", run.stderr);
        assert!(run.stderr.contains("HTTP 403 Forbidden"), "{}", run.stderr);

        let run = run_wsx(&["connect", "--origin", "http://good.example", &url, "--wait", "200ms"], "").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert!(run.stdout.contains("< ho!"), "{}", run.stdout);
    })
    .await;
}

#[tokio::test]
async fn abnormal_close_code_is_reported() {
    bounded(async {
        // The server echoes our close; an echo server closing with 1000 exits 0, but a server
        // that initiates a close with another code gives exit 6 with the code and reason.
        let (_server, port) = serve(&["--max-message-size", "16", "--greeting", ""]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let run = run_wsx(&["connect", &url, "--wait", "2s"], &format!("{}\n", "x".repeat(64))).await;
        assert_eq!(run.code, Some(6), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
        assert!(run.stderr.contains("1009"), "{}", run.stderr);
    })
    .await;
}

#[tokio::test]
async fn connection_failures_and_bad_urls() {
    bounded(async {
        let run = run_wsx(&["connect", "not a url"], "").await;
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("invalid URL"), "{}", run.stderr);

        let run = run_wsx(&["connect", "ftp://127.0.0.1/"], "").await;
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("scheme"), "{}", run.stderr);

        // Nothing listens on port 1.
        let run = run_wsx(&["connect", "ws://127.0.0.1:1/"], "").await;
        assert_eq!(run.code, Some(3), "{}", run.stderr);
        assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);

        let run = run_wsx(&["connect", "-H", "no colon", "ws://127.0.0.1:1/"], "").await;
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(run.stderr.contains("Name: value"), "{}", run.stderr);
    })
    .await;
}

#[tokio::test]
async fn tls_failure_has_its_own_exit_code() {
    bounded(async {
        let dir = common::temp_dir("connect-tls");
        let cert = dir.join("c.pem");
        let (_server, port) = serve(&["--tls-self-signed", "--cert-out", cert.to_str().unwrap()]).await;
        let url = format!("wss://localhost:{port}/");
        let run = run_wsx(&["connect", &url], "").await;
        assert_eq!(run.code, Some(4), "{}", run.stderr);
        assert!(run.stderr.contains("TLS"), "{}", run.stderr);
        let run = run_wsx(&["connect", "--insecure", "--wait", "200ms", &url], "").await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
