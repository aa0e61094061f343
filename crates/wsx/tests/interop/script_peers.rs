//! The peers with a scenario client and an echo server of their own in `tests-peers/` (Node
//! `ws`, Python `websockets`), driven in both directions.

use std::path::PathBuf;

use wsx::CloseCode;

use crate::{
    certs::TestCert,
    echo_server::{EchoServer, Host, server_config},
    peers::{ClientRun, PeerEnv, PeerServer, run_client},
    scenario::{LONG_REASON, PEER_CLIENT_STEPS, SCENARIO_STEPS, assert_server_saw_scenario, client_scenario},
};

/// `--ca FILE` when `cert` is set.
pub(crate) fn ca_args(cert: Option<&TestCert>) -> Vec<String> {
    cert.map(|c| vec!["--ca".to_owned(), c.ca_path.display().to_string()]).unwrap_or_default()
}

/// `--tls CERT KEY` when `cert` is set.
pub(crate) fn tls_args(cert: Option<&TestCert>) -> Vec<String> {
    cert.map(|c| vec!["--tls".to_owned(), c.cert_path.display().to_string(), c.key_path.display().to_string()])
        .unwrap_or_default()
}

/// A peer implementation with a scenario client and an echo server in `tests-peers/`.
pub(crate) struct ScriptPeer {
    pub(crate) name: &'static str,
    pub(crate) env: PeerEnv,
    /// The interpreter.
    pub(crate) program: PathBuf,
    pub(crate) client_script: PathBuf,
    pub(crate) server_script: PathBuf,
    /// The server flags for permessage-deflate on or off.
    pub(crate) server_deflate_args: fn(bool) -> Vec<String>,
}

impl ScriptPeer {
    /// Node `ws` (permessage-deflate off on its server unless `--deflate`).
    pub(crate) fn node() -> Self {
        let env = PeerEnv::load();
        let client_script = env.require_node("node/client.js");
        let server_script = env.require_node("node/echo_server.js");
        Self {
            name: "node-ws",
            program: env.node.clone(),
            env,
            client_script,
            server_script,
            server_deflate_args: |on| if on { vec!["--deflate".into()] } else { vec![] },
        }
    }

    /// Python `websockets` (permessage-deflate on on its server unless `--no-deflate`).
    pub(crate) fn python() -> Self {
        let env = PeerEnv::load();
        let client_script = env.require_python("python/client.py");
        let server_script = env.require_python("python/echo_server.py");
        Self {
            name: "python-websockets",
            program: env.python.clone(),
            env,
            client_script,
            server_script,
            server_deflate_args: |on| {
                if on { vec![] } else { vec!["--no-deflate".into()] }
            },
        }
    }

    /// Run the peer's client with `url` and `extra` arguments.
    pub(crate) async fn run_client(&self, url: &str, extra: Vec<String>) -> ClientRun {
        let mut args = vec![self.client_script.display().to_string(), url.to_owned()];
        args.extend(extra);
        run_client(&self.env, &format!("{} client", self.name), &self.program, &args).await
    }

    /// Start the peer's echo server.
    pub(crate) async fn spawn_server(&self, deflate: bool, cert: Option<&TestCert>) -> PeerServer {
        let mut args = vec![self.server_script.display().to_string()];
        args.extend((self.server_deflate_args)(deflate));
        args.extend(tls_args(cert));
        PeerServer::spawn(&self.env, &format!("{} echo server", self.name), &self.program, &args).await
    }

    /// (a) Our echo server (deflate on or off) against the peer's client scenario (which
    /// offers deflate unless `client_deflate` is false), over TLS when `tls`.
    pub(crate) async fn client_against_wsx(&self, server_deflate: bool, client_deflate: bool, tls: bool) {
        self.client_against(Host::Native, server_deflate, client_deflate, tls).await;
    }

    /// [`client_against_wsx`](Self::client_against_wsx) with the echo on `host`.
    pub(crate) async fn client_against(&self, host: Host, server_deflate: bool, client_deflate: bool, tls: bool) {
        let cert = tls.then(TestCert::generate);
        let server = EchoServer::start_on(host, server_config(server_deflate), cert.as_ref()).await;
        let mut extra = ca_args(cert.as_ref());
        if !client_deflate {
            extra.push("--no-deflate".into());
        }
        let run = self.run_client(&server.url(tls), extra).await;
        let negotiated = server_deflate && client_deflate;

        run.assert_steps("/results", PEER_CLIENT_STEPS);
        assert_eq!(run.bool_at("/ok"), Some(true), "{}", run.describe());
        assert!(run.status.success(), "{}", run.describe());
        let extensions = run.str_at("/extensions").unwrap_or_else(|| panic!("no extensions: {}", run.describe()));
        assert_eq!(
            extensions.starts_with("permessage-deflate"),
            negotiated,
            "{}: Sec-WebSocket-Extensions {extensions:?} with server deflate {server_deflate}, client deflate {client_deflate}",
            self.name
        );
        assert_eq!(run.int_at("/close/code"), Some(4001), "{}", run.describe());
        assert_eq!(run.str_at("/close/reason"), Some("bye"), "{}", run.describe());
        assert_eq!(run.bool_at("/close/wasClean"), Some(true), "{}", run.describe());

        let logs = server.settle().await;
        assert_server_saw_scenario(&logs, self.name, negotiated);
        // 12 data steps, two of them fragmented: 12 echoes.
        assert_eq!(logs[0].echoed, 12, "{}: messages our server echoed", self.name);
        if host == Host::Axum {
            // Plain TCP under axum::serve: the WebSocket runs on the socket; under TLS it
            // runs over hyper's upgraded stream.
            assert_eq!(logs[0].fast_path, !tls, "{}: {:?}", self.name, logs[0]);
        }
    }

    /// (a) The peer's close-test mode against our server: it sends `code` (`"none"` for a
    /// body-less close) and `reason`, raw when its library refuses; we must answer
    /// `expected_code` (and `expected_reason` when given). An error text names what differed.
    pub(crate) async fn close_test_against_wsx(
        &self,
        code: &str,
        reason: &str,
        expected_code: u16,
        expected_reason: Option<&str>,
    ) -> Result<(), String> {
        let server = EchoServer::start(server_config(true), None).await;
        let run = self.run_client(&server.url(false), vec!["--close-test".into(), code.into(), reason.into()]).await;
        let logs = server.settle().await;
        let mut errors = Vec::new();
        if run.str_at("/echo") != Some("ok") {
            errors.push(format!("the echo before the close: {:?}", run.json.get("echo")));
        }
        if run.int_at("/close/code") != Some(i64::from(expected_code)) {
            errors.push(format!(
                "our server answered close code {:?}, expected {expected_code}",
                run.json.pointer("/close/code")
            ));
        }
        if let Some(expected) = expected_reason
            && run.str_at("/close/reason") != Some(expected)
        {
            errors.push(format!(
                "our server answered close reason {:?}, expected {expected:?}",
                run.json.pointer("/close/reason")
            ));
        }
        if !run.status.success() {
            errors.push(format!("the peer exited with {}", run.status));
        }
        match logs.as_slice() {
            [log] => match log.close_reason.as_ref().and_then(|r| r.sent.as_ref()) {
                Some(sent) if sent.code == CloseCode(expected_code) => {}
                _ => errors.push(format!("our server's own record of the close: {:?}", log.close_reason)),
            },
            _ => errors.push(format!("expected one connection, saw {logs:?}")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            let raw = run.bool_at("/sent/raw").unwrap_or(false);
            Err(format!(
                "{} sent close {code} {:?} (raw frame: {raw}): {}; peer output: {}",
                self.name,
                if reason.len() > 20 { format!("{} bytes", reason.len()) } else { reason.to_owned() },
                errors.join("; "),
                run.stdout.trim()
            ))
        }
    }

    /// Run [`close_test_against_wsx`](Self::close_test_against_wsx) for every case and fail
    /// listing each case that did not behave.
    pub(crate) async fn close_tests_against_wsx(&self, cases: &[(&str, &str, u16, Option<&str>)]) {
        let mut failures = Vec::new();
        for (code, reason, expected_code, expected_reason) in cases {
            if let Err(e) = self.close_test_against_wsx(code, reason, *expected_code, *expected_reason).await {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} close cases failed:\n  {}",
            failures.len(),
            cases.len(),
            failures.join("\n  ")
        );
    }

    /// The close cases every peer runs against our server.
    pub(crate) fn close_cases() -> Vec<(&'static str, &'static str, u16, Option<&'static str>)> {
        vec![
            // Valid codes are echoed; a body-less close is answered with a body-less one (1005).
            ("4002", "hi", 4002, Some("hi")),
            ("1000", "", 1000, Some("")),
            ("none", "", 1005, Some("")),
            // Codes that must never be on the wire (RFC 6455 §7.4.1, §7.4.2): fail with 1002.
            ("1005", "bad", 1002, None),
            ("1006", "bad", 1002, None),
            ("1015", "bad", 1002, None),
            ("999", "bad", 1002, None),
            ("1004", "bad", 1002, None),
            ("2999", "bad", 1002, None),
            ("5000", "bad", 1002, None),
            // A reason over 123 bytes makes the close payload over 125 bytes (§5.5): 1002.
            ("4000", LONG_REASON, 1002, None),
        ]
    }

    /// (b) The peer's echo server against the wsx client scenario.
    pub(crate) async fn wsx_against_server(&self, deflate: bool, tls: bool) {
        let cert = tls.then(TestCert::generate);
        let mut server = self.spawn_server(deflate, cert.as_ref()).await;
        let (results, compressed) = client_scenario(server.port, cert.as_ref(), deflate).await;
        let alive = server.is_running();
        if results.steps.values().any(|r| r.is_err()) {
            eprintln!("{} stderr:\n{}", server.name, server.stderr());
        }
        results.assert_all_ok(&format!("wsx client against {}", server.name), SCENARIO_STEPS);
        assert_eq!(compressed, deflate, "{}: permessage-deflate negotiated by the wsx client", server.name);
        assert!(alive, "{} exited during the scenario: {}", server.name, server.stderr());
        eprintln!("{} timings: {:?}", server.name, results.timings);
    }
}

/// The tests every scripted peer runs, declared in the module named after the peer:
/// `tests_in_both_directions!(ScriptPeer::node());`.
macro_rules! tests_in_both_directions {
    ($peer:expr) => {
        use crate::{TEST_TIMEOUT, script_peers::ScriptPeer, within};

        /// Run `case` on a fresh peer, within [`TEST_TIMEOUT`], naming the peer in a timeout.
        async fn bounded<F: std::future::Future<Output = ()>>(what: &str, case: impl FnOnce(ScriptPeer) -> F) {
            let peer = $peer;
            within(&format!("{}: {what}", peer.name), TEST_TIMEOUT, case(peer)).await;
        }

        // (a) The peer's client scenario against the wsx echo server.

        #[tokio::test]
        async fn client_to_wsx_server_deflate() {
            bounded("client → wsx server (deflate)", |p| async move { p.client_against_wsx(true, true, false).await })
                .await;
        }

        #[tokio::test]
        async fn client_to_wsx_server_no_deflate() {
            bounded(
                "client → wsx server (no deflate)",
                |p| async move { p.client_against_wsx(false, true, false).await },
            )
            .await;
        }

        #[tokio::test]
        async fn client_without_deflate_to_wsx_server_deflate() {
            bounded("client (no deflate) → wsx server (deflate)", |p| async move {
                p.client_against_wsx(true, false, false).await
            })
            .await;
        }

        #[tokio::test]
        async fn client_to_wsx_server_tls() {
            bounded("client → wsx server over wss://", |p| async move { p.client_against_wsx(true, true, true).await })
                .await;
        }

        #[tokio::test]
        async fn close_codes_to_wsx_server() {
            bounded("close-test", |p| async move { p.close_tests_against_wsx(&ScriptPeer::close_cases()).await }).await;
        }

        // (b) The wsx client scenario against the peer's echo server.

        #[tokio::test]
        async fn wsx_client_to_server_deflate() {
            bounded("wsx client → server (deflate)", |p| async move { p.wsx_against_server(true, false).await }).await;
        }

        #[tokio::test]
        async fn wsx_client_to_server_no_deflate() {
            bounded("wsx client → server (no deflate)", |p| async move { p.wsx_against_server(false, false).await })
                .await;
        }

        #[tokio::test]
        async fn wsx_client_to_server_tls() {
            bounded("wsx client → server over wss://", |p| async move { p.wsx_against_server(true, true).await }).await;
        }
    };
}

pub(crate) use tests_in_both_directions;
