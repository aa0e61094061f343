//! Interop with a real browser: headless Chromium, driven by playwright-core
//! (`tests-peers/browser/run.js`), runs `page.html` against the wsx echo server over ws:// and
//! wss://. Screenshots are kept under `target/interop-browser/`.

use wsx::{CloseCode, CloseFrame};

use crate::{
    TEST_TIMEOUT,
    certs::TestCert,
    echo_server::{EchoServer, server_config},
    peers::{PeerEnv, repo_root, run_client},
    within,
};

/// The steps `page.html` reports.
const STEPS: &[&str] = &["open", "text", "binary", "binary_65536", "utf8_text", "close"];

async fn browser_to_wsx(deflate: bool, tls: bool) {
    let env = PeerEnv::load();
    let script = env.require_browser();
    let cert = tls.then(TestCert::generate);
    let server = EchoServer::start(server_config(deflate), cert.as_ref()).await;
    // 127.0.0.1 in both cases: the certificate is not checked (self-signed, ignored).
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://127.0.0.1:{}/", server.port());

    let shots = repo_root().join("target/interop-browser");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let shot = shots.join(format!("{scheme}-{}.png", if deflate { "deflate" } else { "plain" }));
    let _ = std::fs::remove_file(&shot);
    let mut args = vec![
        script.display().to_string(),
        url.clone(),
        "--screenshot".into(),
        shot.display().to_string(),
        "--timeout".into(),
        "90".into(),
    ];
    if tls {
        args.push("--ignore-https-errors".into());
    }
    let run = run_client(&env, "chromium (playwright)", &env.node, &args).await;

    run.assert_steps("/results/steps", STEPS);
    assert_eq!(run.bool_at("/results/ok"), Some(true), "{}", run.describe());
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.int_at("/results/close/code"), Some(4000), "close code; {}", run.describe());
    assert_eq!(run.str_at("/results/close/reason"), Some("done"), "close reason; {}", run.describe());
    assert_eq!(run.bool_at("/results/close/wasClean"), Some(true), "wasClean; {}", run.describe());
    let extensions = run.str_at("/results/extensions").unwrap_or_else(|| panic!("no extensions: {}", run.describe()));
    if deflate {
        assert!(
            extensions.starts_with("permessage-deflate"),
            "the browser did not negotiate permessage-deflate with our server: {extensions:?}"
        );
    } else {
        assert_eq!(extensions, "", "our server without deflate negotiated an extension");
    }
    assert!(shot.is_file(), "no screenshot at {}", shot.display());

    // Our side: one connection, deflate as the browser saw it, the page's 4000 "done" echoed.
    let logs = server.settle().await;
    assert_eq!(logs.len(), 1, "connections: {logs:#?}");
    let log = &logs[0];
    assert_eq!(log.compressed, deflate, "{log:?}");
    assert!(log.error.is_none(), "{log:?}");
    assert_eq!(log.echoed, 4, "messages echoed: {log:?}");
    assert_eq!(log.peer_close, Some(Some(CloseFrame::new(CloseCode(4000), "done"))), "{log:?}");
    let reason = log.close_reason.as_ref().expect("a close reason");
    assert!(reason.is_clean(), "{reason:?}");
    // Chromium reports the reason it sent, not the one it got back, so check our answer here.
    assert_eq!(
        reason.sent.as_ref().map(|f| f.code),
        Some(CloseCode(4000)),
        "the close our server answered: {reason:?}"
    );
}

#[tokio::test]
async fn chromium_to_wsx_server_deflate() {
    within("chromium → wsx server (ws://, deflate)", TEST_TIMEOUT, browser_to_wsx(true, false)).await;
}

#[tokio::test]
async fn chromium_to_wsx_server_no_deflate() {
    within("chromium → wsx server (ws://, no deflate)", TEST_TIMEOUT, browser_to_wsx(false, false)).await;
}

#[tokio::test]
async fn chromium_to_wsx_server_tls() {
    within("chromium → wsx server (wss://, deflate)", TEST_TIMEOUT, browser_to_wsx(true, true)).await;
}
