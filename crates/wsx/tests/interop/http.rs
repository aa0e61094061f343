//! The peers against the echo on an axum 0.8 route (`wsx::axum`, see [`crate::axum_host`]):
//! Node `ws` and Python `websockets` with permessage-deflate, tokio-tungstenite and the wsx
//! client over `axum::serve`; the same over TLS on `wsx::hyper::Server`; headless Chromium
//! loading the page over TLS + HTTP/2 and opening `wss://` on the same origin (an extended
//! CONNECT); Python `h2` opening a WebSocket over cleartext HTTP/2 with prior knowledge.

use http::Version;
use wsx::{CloseCode, CloseFrame, Message};

use crate::{
    TEST_TIMEOUT,
    certs::TestCert,
    echo_server::{EchoServer, Host, server_config},
    peers::{PeerEnv, PeerServer, repo_root, run_client},
    scenario::{SCENARIO_STEPS, client_scenario},
    script_peers::ScriptPeer,
    tungstenite::tungstenite_client_to,
    within,
};

#[tokio::test]
async fn node_client_to_axum_deflate() {
    let peer = ScriptPeer::node();
    within("node ws → axum (deflate)", TEST_TIMEOUT, peer.client_against(Host::Axum, true, true, false)).await;
}

#[tokio::test]
async fn python_client_to_axum_deflate() {
    let peer = ScriptPeer::python();
    within("python websockets → axum (deflate)", TEST_TIMEOUT, peer.client_against(Host::Axum, true, true, false))
        .await;
}

#[tokio::test]
async fn node_client_to_axum_on_hyper_server_tls() {
    let peer = ScriptPeer::node();
    within(
        "node ws → axum on wsx::hyper::Server (wss://)",
        TEST_TIMEOUT,
        peer.client_against(Host::Axum, true, true, true),
    )
    .await;
}

#[tokio::test]
async fn tungstenite_client_to_axum() {
    within("tungstenite → axum", TEST_TIMEOUT, tungstenite_client_to(Host::Axum, true, false)).await;
}

#[tokio::test]
async fn wsx_client_to_axum() {
    within("wsx client → axum", TEST_TIMEOUT, async {
        let server = EchoServer::start_on(Host::Axum, server_config(true), None).await;
        let (results, compressed) = client_scenario(server.port(), None, true).await;
        results.assert_all_ok("wsx client against axum", SCENARIO_STEPS);
        assert!(compressed, "permessage-deflate negotiated");
        let logs = server.settle().await;
        assert!(logs.iter().all(|log| log.fast_path && log.http_version == Some(Version::HTTP_11)), "{logs:#?}");
    })
    .await;
}

/// Headless Chromium loads the page from the axum app over TLS, which agrees HTTP/2 by ALPN,
/// and opens `wss://` on the same origin: the WebSocket must arrive as an extended CONNECT on
/// that HTTP/2 connection, and the page's scenario must pass.
#[tokio::test]
async fn chromium_over_tls_http2_to_axum() {
    within("chromium → axum over TLS + HTTP/2", TEST_TIMEOUT, async {
        let env = PeerEnv::load();
        let script = env.require_browser();
        let cert = TestCert::generate();
        let server = EchoServer::start_on(Host::Axum, server_config(true), Some(&cert)).await;
        let origin = format!("https://127.0.0.1:{}", server.port());
        let page = format!("{origin}/?ws={}", format!("wss://127.0.0.1:{}/", server.port()).replace(':', "%3A"));
        let shots = repo_root().join("target/interop-browser");
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        let shot = shots.join("h2-axum.png");
        let _ = std::fs::remove_file(&shot);
        let args = vec![
            script.display().to_string(),
            page,
            "--screenshot".into(),
            shot.display().to_string(),
            "--timeout".into(),
            "90".into(),
            "--ignore-https-errors".into(),
        ];
        let run = run_client(&env, "chromium (playwright)", &env.node, &args).await;
        assert_eq!(run.bool_at("/results/ok"), Some(true), "{}", run.describe());
        assert!(run.status.success(), "{}", run.describe());
        let extensions = run.str_at("/results/extensions").unwrap_or_default();
        assert!(extensions.starts_with("permessage-deflate"), "{extensions:?}");
        assert!(shot.is_file(), "no screenshot at {}", shot.display());

        let logs = server.settle().await;
        assert_eq!(logs.len(), 1, "{logs:#?}");
        let log = &logs[0];
        assert_eq!(log.http_version, Some(Version::HTTP_2), "the browser's WebSocket was not an extended CONNECT");
        assert!(!log.fast_path && log.compressed && log.error.is_none(), "{log:?}");
        assert_eq!(log.echoed, 4, "{log:?}");
        assert_eq!(log.peer_close, Some(Some(CloseFrame::new(CloseCode(4000), "done"))), "{log:?}");
        assert!(log.close_reason.as_ref().is_some_and(wsx::CloseReason::is_clean), "{log:?}");
    })
    .await;
}

/// Python `h2` over cleartext HTTP/2 with prior knowledge (`axum::serve` speaks both versions
/// on one port): extended CONNECT, permessage-deflate, 1,000 echoes, then the close and
/// END_STREAM both ways.
#[tokio::test]
async fn python_h2_client_to_axum() {
    within("python h2 → axum over h2c", TEST_TIMEOUT, async {
        let env = PeerEnv::load();
        let script = env.require_python("python/h2_client.py");
        let server = EchoServer::start_on(Host::Axum, server_config(true), None).await;
        let url = format!("http://127.0.0.1:{}/", server.port());
        let args = vec![script.display().to_string(), url, "--count".into(), "1000".into()];
        let run = run_client(&env, "python h2 client", &env.python, &args).await;
        assert_eq!(run.bool_at("/connect_protocol"), Some(true), "{}", run.describe());
        assert_eq!(run.str_at("/status"), Some("200"), "{}", run.describe());
        assert!(run.str_at("/extensions").is_some_and(|e| e.starts_with("permessage-deflate")), "{}", run.describe());
        assert_eq!(run.int_at("/echoes"), Some(1000), "{}", run.describe());
        assert_eq!(run.bool_at("/end_stream"), Some(true), "{}", run.describe());
        assert_eq!(run.bool_at("/reset"), Some(false), "{}", run.describe());
        assert_eq!(run.bool_at("/ok"), Some(true), "{}", run.describe());

        let logs = server.settle().await;
        assert_eq!(logs.len(), 1, "{logs:#?}");
        let log = &logs[0];
        assert_eq!(log.http_version, Some(Version::HTTP_2));
        assert!(log.compressed && log.error.is_none(), "{log:?}");
        assert_eq!(log.echoed, 1000);
        assert_eq!(log.peer_close, Some(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))), "{log:?}");
        assert!(log.close_reason.as_ref().is_some_and(wsx::CloseReason::is_clean), "{log:?}");
    })
    .await;
}

/// wsx's HTTP/2 client against a server that is not wsx: Hypercorn (Python, ASGI, on the `h2`
/// and `wsproto` libraries) over TLS with ALPN h2: extended CONNECT, permessage-deflate,
/// 1,000 echoes, then the close handshake.
#[tokio::test]
async fn wsx_http2_client_to_hypercorn() {
    within("wsx HTTP/2 client → hypercorn", TEST_TIMEOUT, async {
        let env = PeerEnv::load();
        let script = env.require_python("python/hypercorn_server.py");
        let cert = TestCert::generate();
        let args = vec![
            script.display().to_string(),
            "--tls".into(),
            cert.cert_path.display().to_string(),
            cert.key_path.display().to_string(),
        ];
        let mut server = PeerServer::spawn(&env, "hypercorn", &env.python, &args).await;
        let url = format!("wss://127.0.0.1:{}/echo", server.port);
        let config = wsx::Config::default()
            .deflate(Some(wsx::DeflateConfig::default()))
            .close_timeout(std::time::Duration::from_secs(2));
        let builder = wsx::ClientBuilder::new(&url).root_certificates_pem(&cert.ca_pem).config(config);
        let (mut ws, response) = builder.connect_http2().await.expect("connect over HTTP/2");
        assert_eq!(response.status(), http::StatusCode::OK);
        assert!(ws.is_compressed(), "permessage-deflate: {:?}", response.headers());
        for i in 0..1000 {
            let message =
                if i % 2 == 0 { Message::text(format!("m{i}")) } else { Message::binary(vec![i as u8; i % 300]) };
            ws.send(message.clone()).await.expect("send");
            assert_eq!(ws.recv().await.expect("recv"), Some(message));
        }
        let closing = std::time::Instant::now();
        let closed = ws.close(CloseCode::NORMAL, "bye").await;
        let close_took = closing.elapsed();
        let reason = ws.close_reason().expect("closed");
        assert_eq!(reason.received.as_ref().map(|f| f.code), Some(CloseCode::NORMAL), "{closed:?} {reason:?}");
        for _ in 0..100 {
            if server.stderr().contains("websocket http=2") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let log = server.stderr();
        assert!(log.contains("websocket http=2 echoed=1000"), "{log}");
        assert!(server.is_running());
        // Hypercorn ends its side only after ours: a client that waited for the server's
        // END_STREAM first (as over TCP) waited out the close timeout. (Hypercorn 0.18 reports
        // the end of an HTTP/2 WebSocket to its app as 1006 either way.)
        assert!(closed.is_ok() && reason.is_clean(), "{closed:?} {reason:?}");
        assert!(close_took < std::time::Duration::from_secs(2), "the close waited for the timeout: {close_took:?}");
    })
    .await;
}
