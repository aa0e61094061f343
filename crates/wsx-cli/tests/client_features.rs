//! `wsx connect --proxy` through real tinyproxy and microsocks processes (`ws://` and `wss://`
//! with a self-signed certificate), `--reconnect` against a `wsx serve` killed and restarted
//! five times, and `wsx serve --metrics`.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::{Proc, bounded, http, port_in, run_wsx, serve, temp_dir, within, wsx_bin};
use tokio::io::AsyncWriteExt;

/// A proxy program from `target/peers.env` (written by `scripts/setup-peers`) or /usr/bin.
fn program(name: &str) -> PathBuf {
    let var = format!("WSX_{}", name.to_ascii_uppercase());
    let path = std::env::var(&var).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/bin").join(name));
    assert!(path.exists(), "{} not found: run `bash scripts/setup-peers`", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A proxy child on a free port, killed on drop, once it listens.
struct ProxyChild {
    child: std::process::Child,
    port: u16,
}

impl ProxyChild {
    async fn start(mut command: std::process::Command, port: u16) -> Self {
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let proxy = Self { child, port };
        within("the proxy to listen", async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        proxy
    }

    async fn tinyproxy(dir: &std::path::Path, auth: Option<(&str, &str)>) -> Self {
        let port = free_port();
        let mut conf = format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogLevel Connect\n");
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let path = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(&path, conf).unwrap();
        let mut command = std::process::Command::new(program("tinyproxy"));
        command.arg("-d").arg("-c").arg(&path);
        Self::start(command, port).await
    }

    async fn microsocks(user: &str, password: &str) -> Self {
        let port = free_port();
        let mut command = std::process::Command::new(program("microsocks"));
        command.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-u", user, "-P", password]);
        Self::start(command, port).await
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn connect_through_http_and_socks5_proxies_ws_and_wss() {
    bounded(async {
        let dir = temp_dir("client-proxies");
        let cert = dir.join("cert.pem");
        let (_plain, ws_port) = serve(&["--echo", "--quiet"]).await;
        let (_tls, wss_port) =
            serve(&["--echo", "--quiet", "--tls-self-signed", "--cert-out", cert.to_str().unwrap()]).await;
        let tiny = ProxyChild::tinyproxy(&dir, Some(("dave", "pw123"))).await;
        let socks = ProxyChild::microsocks("erin", "pw456").await;
        let proxies = [
            format!("http://dave:pw123@127.0.0.1:{}", tiny.port),
            format!("socks5h://erin:pw456@127.0.0.1:{}", socks.port),
        ];
        for proxy in &proxies {
            for url in [format!("ws://127.0.0.1:{ws_port}/"), format!("wss://localhost:{wss_port}/")] {
                let args = ["connect", "--proxy", proxy, "--ca", cert.to_str().unwrap(), &url, "--wait", "300ms"];
                let run = run_wsx(&args, "through\n").await;
                assert_eq!(run.code, Some(0), "{proxy} {url}: {}", run.stderr);
                assert!(run.stdout.lines().any(|l| l == "< through"), "{proxy} {url}: {}", run.stdout);
            }
        }
        // Wrong password: a clear error naming the proxy, without the password.
        let wrong = format!("http://dave:nope@127.0.0.1:{}", tiny.port);
        let run = run_wsx(&["connect", "--proxy", &wrong, &format!("ws://127.0.0.1:{ws_port}/")], "").await;
        assert_eq!(run.code, Some(3), "{}", run.stderr);
        assert!(run.stderr.contains(&format!("proxy http://127.0.0.1:{}", tiny.port)), "{}", run.stderr);
        assert!(!run.stderr.contains("nope"), "{}", run.stderr);
    })
    .await;
}

#[tokio::test]
async fn proxy_from_the_environment_and_proxy_none() {
    bounded(async {
        let (_server, port) = serve(&["--echo", "--quiet"]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let dead = format!("http://127.0.0.1:{}", free_port());
        let run = |args: Vec<String>, env: Vec<(&'static str, String)>| async move {
            let mut cmd = tokio::process::Command::new(wsx_bin());
            cmd.args(&args).env_remove("NO_PROXY").env_remove("no_proxy");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.stdin(Stdio::null()).kill_on_drop(true);
            within("wsx connect", cmd.output()).await.unwrap()
        };
        let base = vec!["connect".to_owned(), url.clone(), "--wait".to_owned(), "100ms".to_owned()];
        // From the environment: the dead proxy is used, and named.
        let out = run(base.clone(), vec![("ALL_PROXY", dead.clone())]).await;
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("proxy {dead}")));
        // NO_PROXY bypasses it; so does --proxy none.
        let out = run(base.clone(), vec![("ALL_PROXY", dead.clone()), ("NO_PROXY", "127.0.0.0/8".into())]).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let mut none = base.clone();
        none.extend(["--proxy".to_owned(), "none".to_owned()]);
        let out = run(none, vec![("ALL_PROXY", dead.clone())]).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        // A CGI environment: HTTP_PROXY is ignored.
        let out = run(base, vec![("HTTP_PROXY", dead), ("REQUEST_METHOD", "GET".into())]).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await;
}

#[tokio::test]
async fn reconnect_through_five_server_kills() {
    // Rounds follow each other faster than the 5 s of uptime that resets the backoff, so the
    // delays grow (full jitter up to 1, 2, 4, 8, 16 s): a longer bound than `bounded`'s.
    let limit = Duration::from_secs(180);
    let test = async {
        let port = free_port();
        let port_arg = port.to_string();
        let serve_args = ["serve", "--echo", "--quiet", "--host", "127.0.0.1", "--port", port_arg.as_str()];
        let mut server = Proc::spawn(wsx_bin(), &serve_args);
        server.stderr_line("the server to listen", |l| l.contains("listening on ")).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let mut client = Proc::spawn(wsx_bin(), &["connect", "--reconnect", "--proxy", "none", &url]);
        let stdin = client.child.stdin.as_mut().unwrap();
        stdin.write_all(b"round 0\n").await.unwrap();
        client.stdout_line("the first echo", |l| l == "< round 0").await;
        for round in 1..=5 {
            // SIGKILL: no close frame, the client sees 1006.
            server.child.start_kill().unwrap();
            within("the server to die", server.child.wait()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            server = Proc::spawn(wsx_bin(), &serve_args);
            server.stderr_line("the server to listen again", |l| l.contains("listening on ")).await;
            let stdin = client.child.stdin.as_mut().unwrap();
            stdin.write_all(format!("round {round}\n").as_bytes()).await.unwrap();
            let want = format!("< round {round}");
            client.stdout_line_within(Duration::from_secs(40), "the echo after reconnecting", |l| l == want).await;
        }
        let reconnects = client.stderr_text().matches("reconnecting in").count();
        assert!(reconnects >= 5, "{}", client.stderr_text());
        drop(client.child.stdin.take());
        let status = within("the client to exit", client.child.wait()).await.unwrap();
        assert!(status.success(), "{}", client.stderr_text());
    };
    tokio::time::timeout(limit, test).await.expect("the test took over 180 s");
}

/// A server that closes with 1013 and `retry-after=2` is retried after about 2 s: the hint, not
/// the 10 s floor a bare 1013 gets.
#[tokio::test]
async fn reconnect_honours_the_retry_after_hint_of_a_1013() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let server = wsx::Server::builder().from_listener(listener);
        tokio::spawn(server.serve(move |mut ws, _| {
            let first = first.swap(false, std::sync::atomic::Ordering::SeqCst);
            async move {
                if first {
                    return ws.close(wsx::CloseCode::AGAIN, "retry-after=2; busy").await;
                }
                while let Some(message) = ws.recv().await? {
                    if message.is_data() {
                        ws.send(message).await?;
                    }
                }
                Ok(())
            }
        }));
        let url = format!("ws://127.0.0.1:{port}/");
        let mut client = Proc::spawn(wsx_bin(), &["connect", "--reconnect", "--json", "--proxy", "none", &url]);
        let line = client.stdout_line("the reconnect", |l| l.contains("\"type\":\"reconnect\"")).await;
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let delay = event["delay"].as_f64().unwrap();
        assert!((2.0..10.0).contains(&delay), "{line}");
        let stdin = client.child.stdin.as_mut().unwrap();
        stdin.write_all(b"after the wait\n").await.unwrap();
        client.stdout_line("the echo on the second connection", |l| l.contains("after the wait")).await;
        drop(client.child.stdin.take());
        let status = within("the client to exit", client.child.wait()).await.unwrap();
        assert!(status.success(), "{}", client.stderr_text());
    })
    .await;
}

#[tokio::test]
async fn serve_metrics_in_prometheus_text() {
    bounded(async {
        let (server, port) = serve(&["--echo", "--quiet", "--metrics", "127.0.0.1:0"]).await;
        let line = server.stderr_line("the metrics address", |l| l.contains("metrics on http://")).await;
        let metrics_port = port_in(&line);
        let url = format!("ws://127.0.0.1:{port}/");
        let run = run_wsx(&["connect", "--proxy", "none", &url, "--wait", "300ms"], "one\ntwo\n").await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let mut text = String::new();
        for _ in 0..100 {
            text = http(metrics_port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if text.contains("wsx_connections_active 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("text/plain; version=0.0.4"), "{text}");
        for line in [
            "wsx_connections_accepted_total 1",
            "wsx_connections_active 0",
            "wsx_messages_received_total{kind=\"text\"} 2",
            "wsx_messages_sent_total{kind=\"text\"} 2",
            "wsx_closes_total{code_class=\"normal\",initiator=\"remote\"} 1",
            "# TYPE wsx_connections_accepted_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    })
    .await;
}
