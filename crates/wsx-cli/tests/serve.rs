//! `wsx serve`, driven as a child process.

mod common;

use common::{Ws, bounded, http, next_close, next_text, run_wsx, serve, talk_in_batches, temp_dir, within, wsx_bin};
use wsx::{ClientBuilder, CloseCode, Message};

async fn connect(port: u16) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/");
    within("connect", ClientBuilder::new(&url).connect()).await.expect("connect").0
}

/// Whether the head of `response` has the header line `line` (the name compared without case).
fn has_header(response: &str, line: &str) -> bool {
    let (name, value) = line.split_once(": ").expect("a header line");
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines().filter_map(|l| l.split_once(": ")).any(|(n, v)| n.eq_ignore_ascii_case(name) && v.starts_with(value))
}

#[tokio::test]
async fn classic_greets_and_logs_received_messages() {
    bounded(async {
        let (server, port) = serve(&[]).await;
        let mut ws = connect(port).await;
        assert_eq!(next_text(&mut ws).await, "ho!");
        ws.send("hey").await.unwrap();
        let line = server.stdout_line("the received-message log", |l| l.contains("Received message")).await;
        assert_eq!(line, "Received message => hey");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn greeting_and_echo() {
    bounded(async {
        let (_server, port) = serve(&["--echo", "--greeting", "welcome"]).await;
        let mut ws = connect(port).await;
        assert_eq!(next_text(&mut ws).await, "welcome");
        ws.send("one").await.unwrap();
        assert_eq!(next_text(&mut ws).await, "one");
        ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
        let echoed = within("binary echo", ws.recv()).await.unwrap();
        assert_eq!(echoed, Some(Message::binary(vec![0u8, 1, 2])));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

async fn connect_to(port: u16, path: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}{path}");
    within("connect", ClientBuilder::new(&url).connect()).await.expect("connect").0
}

#[tokio::test]
async fn broadcast_reaches_every_client() {
    bounded(async {
        let (_server, port) = serve(&["--broadcast", "--greeting", "hi"]).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut ws = connect(port).await;
            // The greeting is queued once the client is subscribed.
            assert_eq!(next_text(&mut ws).await, "hi");
            clients.push(ws);
        }
        clients[1].send("to all").await.unwrap();
        for ws in &mut clients {
            assert_eq!(next_text(ws).await, "to all");
        }
        clients[2].send("again").await.unwrap();
        for ws in &mut clients {
            assert_eq!(next_text(ws).await, "again");
        }
    })
    .await;
}

#[tokio::test]
async fn rooms_keep_their_messages_to_themselves() {
    bounded(async {
        let (server, port) = serve(&["--rooms", "--greeting", "hi"]).await;
        let mut clients = Vec::new();
        for path in ["/room/a", "/room/a", "/room/b", "/", "/room/lobby"] {
            let mut ws = connect_to(port, path).await;
            assert_eq!(next_text(&mut ws).await, "hi");
            clients.push(ws);
        }
        clients[0].send("in a").await.unwrap();
        clients[2].send("in b").await.unwrap();
        clients[3].send("in the lobby").await.unwrap();
        assert_eq!(next_text(&mut clients[0]).await, "in a", "the sender hears itself");
        assert_eq!(next_text(&mut clients[1]).await, "in a");
        assert_eq!(next_text(&mut clients[2]).await, "in b", "b hears only b");
        assert_eq!(next_text(&mut clients[3]).await, "in the lobby", "/ is the lobby");
        assert_eq!(next_text(&mut clients[4]).await, "in the lobby");
        // Nothing crossed rooms: the next message each gets is from its own room.
        clients[1].send(Message::binary(vec![7u8; 3])).await.unwrap();
        clients[2].send("b again").await.unwrap();
        let got = within("binary", clients[0].recv()).await.unwrap();
        assert_eq!(got, Some(Message::binary(vec![7u8; 3])));
        assert_eq!(next_text(&mut clients[2]).await, "b again");
        let line = server.stdout_line("the log of a room message", |l| l.contains("in b")).await;
        assert_eq!(line, "Received message => in b");

        for path in ["/room/", "/room/a/b", "/elsewhere"] {
            let url = format!("ws://127.0.0.1:{port}{path}");
            let refused = within("connect", ClientBuilder::new(&url).connect()).await.expect_err(path);
            assert!(refused.to_string().contains("404"), "{path}: {refused}");
        }
    })
    .await;
}

/// A client with a 4 KiB receive buffer that joins `path`, reads the greeting "hi" and then
/// reads nothing: the kernel's buffers cannot hide that it does not read.
async fn stalled_client(port: u16, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let mut tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(within("the answer", tcp.read(&mut byte)).await.unwrap(), 1, "closed early");
        seen.push(byte[0]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&seen));
    let mut greeting = [0u8; 4];
    within("the greeting", tcp.read_exact(&mut greeting)).await.unwrap();
    assert_eq!(greeting, *b"\x81\x02hi");
    tcp
}

/// Read frames until a close frame: how many data frames came first, and the close payload.
async fn frames_until_close(tcp: &mut tokio::net::TcpStream) -> (usize, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let Ok(n) = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut chunk)).await else {
            panic!("no close frame after {} bytes", bytes.len());
        };
        let n = n.unwrap();
        assert!(n > 0, "the connection ended without a close frame");
        bytes.extend_from_slice(&chunk[..n]);
        let (mut rest, mut data) = (&bytes[..], 0);
        while let Some((header, h)) = wsx::proto::frame::Header::decode(rest).unwrap() {
            let len = header.payload_len as usize;
            if rest.len() < h + len {
                break;
            }
            if header.opcode.bits() == 0x8 {
                return (data, rest[h..h + len].to_vec());
            }
            data += 1;
            rest = &rest[h + len..];
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_the_backlog_limit() {
    bounded(async {
        let (server, port) = serve(&["--rooms", "--greeting", "hi", "--max-backlog", "256KiB", "--quiet"]).await;
        let mut stalled = stalled_client(port, "/room/feed").await;
        let mut talker = connect_to(port, "/room/feed").await;
        assert_eq!(next_text(&mut talker).await, "hi");
        // The talker hears its own messages; it reads each batch back before sending the next
        // (128 KiB in flight, under its own limit), the other client reads nothing. 8 MiB in
        // all: twice what the server's socket may buffer (tcp_wmem's 4 MiB maximum).
        let count = 2048;
        talk_in_batches(&mut talker, count).await;
        // The stalled client reads at last: what fitted, then the server's 1008.
        let (received, close) = frames_until_close(&mut stalled).await;
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), CloseCode::POLICY.0);
        let text = String::from_utf8_lossy(&close[2..]).into_owned();
        assert_eq!(text, format!("slow consumer: over {} bytes queued", 256 << 10));
        assert!(received < count, "it was cut off before the end ({received} received)");
        // Answer the close (masked with a zero key) so that the server's log says how it ended.
        tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf0]).await.unwrap();
        let line = server.stderr_line("the stalled client's disconnection", |l| l.contains("code=1008")).await;
        assert!(line.contains("client disconnected"), "{line}");
    })
    .await;
}

#[tokio::test]
async fn demo_page_over_http_on_the_same_port() {
    bounded(async {
        let (_server, port) = serve(&[]).await;
        let page = http(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(has_header(&page, "content-type: text/html"), "{page}");
        assert!(page.contains("new WebSocket("), "{page}");
        let head = http(port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && !head.contains("<html"), "{head}");
        let post = http(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && has_header(&post, "allow: GET, HEAD"), "{post}");
        let missing = http(port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let garbage = http(port, "\x16\x03\x01 not http\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        let huge = http(port, &huge).await;
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        // WebSocket still works after all that.
        let mut ws = connect(port).await;
        assert_eq!(next_text(&mut ws).await, "ho!");
    })
    .await;
}

#[tokio::test]
async fn static_folder_with_safe_paths() {
    bounded(async {
        let dir = temp_dir("static");
        let root = dir.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("hello.txt"), "hello file\n").unwrap();
        std::fs::write(root.join("app.js"), "console.log(1)\n").unwrap();
        std::fs::write(root.join("sub/index.html"), "<p>sub</p>\n").unwrap();
        std::fs::write(dir.join("secret.txt"), "top secret\n").unwrap();
        let (_server, port) = serve(&["--static", root.to_str().unwrap()]).await;

        let file = http(port, "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(file.starts_with("HTTP/1.1 200 OK\r\n"), "{file}");
        assert!(has_header(&file, "content-type: text/plain") && file.ends_with("hello file\n"), "{file}");
        let js = http(port, "GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(has_header(&js, "content-type: text/javascript"), "{js}");
        let index = http(port, "GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(has_header(&index, "content-type: text/html") && index.ends_with("<p>sub</p>\n"), "{index}");
        for escape in ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt"] {
            let response = http(port, &format!("GET {escape} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert!(response.starts_with("HTTP/1.1 403 "), "{escape}: {response}");
            assert!(!response.contains("top secret"), "{escape}: {response}");
        }
        let missing = http(port, "GET /nope.txt HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        // The demo page is not served in --static mode (no index.html at the root).
        let root_page = http(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(root_page.starts_with("HTTP/1.1 404 "), "{root_page}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn origin_allow_list_rejects_others_with_403() {
    bounded(async {
        let (_server, port) = serve(&["--origin", "http://good.example"]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let refused = within("connect", ClientBuilder::new(&url).origin("http://evil.example").connect()).await;
        let error = refused.expect_err("a foreign origin must be refused");
        assert_eq!(error.http_status().map(|s| s.as_u16()), Some(403), "{error}");
        let (mut ws, _) =
            within("connect", ClientBuilder::new(&url).origin("http://good.example").connect()).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "ho!");
    })
    .await;
}

#[tokio::test]
async fn max_connections_answers_503() {
    bounded(async {
        let (_server, port) = serve(&["--max-connections", "1"]).await;
        let mut first = connect(port).await;
        assert_eq!(next_text(&mut first).await, "ho!");
        let url = format!("ws://127.0.0.1:{port}/");
        let error = within("connect", ClientBuilder::new(&url).connect()).await.expect_err("over the cap");
        assert_eq!(error.http_status().map(|s| s.as_u16()), Some(503), "{error}");
        // The cap counts every connection, plain HTTP ones too: that is what bounds memory.
        let page = http(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 503 ") && has_header(&page, "retry-after: 1"), "{page}");
        first.close(CloseCode::NORMAL, "").await.unwrap();
        // The slot is free again once the first client has gone.
        let mut retry = None;
        for _ in 0..50 {
            if let Ok((ws, _)) = ClientBuilder::new(&url).connect().await {
                retry = Some(ws);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(next_text(retry.as_mut().expect("a slot frees up")).await, "ho!");
    })
    .await;
}

#[tokio::test]
async fn subprotocol_picks_the_first_offered_that_is_supported() {
    bounded(async {
        let (_server, port) = serve(&["--subprotocol", "chat.v1", "--subprotocol", "chat.v2"]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let builder = ClientBuilder::new(&url).protocol("other").protocol("chat.v2").protocol("chat.v1");
        let (ws, _) = within("connect", builder.connect()).await.unwrap();
        assert_eq!(ws.protocol(), Some("chat.v2"));
        let (ws, _) = within("connect", ClientBuilder::new(&url).protocol("nope").connect()).await.unwrap();
        assert_eq!(ws.protocol(), None);
    })
    .await;
}

#[tokio::test]
async fn max_message_size_closes_with_1009() {
    bounded(async {
        let (_server, port) = serve(&["--echo", "--max-message-size", "1KiB", "--greeting", ""]).await;
        let mut ws = connect(port).await;
        ws.send("x".repeat(1024)).await.unwrap();
        assert_eq!(next_text(&mut ws).await.len(), 1024);
        ws.send("x".repeat(1025)).await.unwrap();
        assert_eq!(next_close(&mut ws).await, Some(CloseCode::TOO_BIG));
    })
    .await;
}

/// `--memory-budget` takes effect: with a budget of 256 KiB small messages still echo, and a
/// 1 MiB message (under `--max-message-size`) gets 1013 where the default budget echoes it.
#[tokio::test]
async fn memory_budget_closes_the_connection_past_it_with_1013() {
    bounded(async {
        let big = Message::binary(vec![7u8; 1 << 20]);
        // Without permessage-deflate, which would shrink the message to nothing.
        let args = ["--echo", "--deflate", "off", "--greeting", ""];
        let (_default, port) = serve(&args).await;
        let mut ws = connect(port).await;
        ws.send(big.clone()).await.unwrap();
        assert_eq!(within("the echo", ws.recv()).await.unwrap(), Some(big.clone()), "the default budget takes it");

        let (_tiny, port) = serve(&[&args[..], &["--memory-budget", "256KiB"]].concat()).await;
        let mut ws = connect(port).await;
        ws.send("small").await.unwrap();
        assert_eq!(next_text(&mut ws).await, "small");
        ws.send(big).await.unwrap();
        assert_eq!(next_close(&mut ws).await, Some(CloseCode::AGAIN));
        // The others keep working, and a new connection is served.
        let mut again = connect(port).await;
        again.send("after").await.unwrap();
        assert_eq!(next_text(&mut again).await, "after");
    })
    .await;
}

/// `--memory-budget off`: no server-wide budget, so the 1 MiB message that a 256 KiB budget
/// closes with 1013 (above) is echoed, over plain TCP (`wsx::Server`) and over TLS
/// (`wsx::hyper::Server`).
#[tokio::test]
async fn memory_budget_off_takes_no_budget() {
    bounded(async {
        let big = Message::binary(vec![7u8; 1 << 20]);
        let args = ["--echo", "--deflate", "off", "--greeting", "", "--memory-budget", "off"];
        let (_plain, port) = serve(&args).await;
        let mut ws = connect(port).await;
        ws.send(big.clone()).await.unwrap();
        assert_eq!(within("the echo", ws.recv()).await.unwrap(), Some(big.clone()), "no budget refuses it");

        let dir = temp_dir("budget-off");
        let cert = dir.join("dev.pem");
        let (_tls, port) =
            serve(&[&args[..], &["--tls-self-signed", "--cert-out", cert.to_str().unwrap()]].concat()).await;
        let builder = ClientBuilder::new(format!("wss://localhost:{port}/")).root_certificates_pem_file(&cert);
        let (mut ws, _) = within("connect over TLS", builder.connect()).await.expect("TLS connect");
        ws.send(big.clone()).await.unwrap();
        assert_eq!(within("the echo", ws.recv()).await.unwrap(), Some(big), "no budget refuses it over TLS");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn tls_self_signed_certificate_is_printed_and_usable() {
    bounded(async {
        let dir = temp_dir("tls");
        let cert = dir.join("dev.pem");
        let (server, port) = serve(&["--tls-self-signed", "--cert-out", cert.to_str().unwrap()]).await;
        let printed = server.stderr_line("the --ca hint", |l| l.contains("wsx connect --ca")).await;
        let printed_path = printed.split("--ca ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        assert_eq!(printed_path, cert.to_str().unwrap());
        assert!(dir.join("dev.key.pem").is_file());
        for host in ["localhost", "127.0.0.1"] {
            let url = format!("wss://{host}:{port}/");
            let builder = ClientBuilder::new(&url).root_certificates_pem_file(&printed_path);
            let (mut ws, _) = within("connect over TLS", builder.connect()).await.expect("TLS connect");
            assert_eq!(next_text(&mut ws).await, "ho!");
            ws.close(CloseCode::NORMAL, "").await.unwrap();
        }
        // Without trusting it, the certificate is refused.
        let error = within("connect", ClientBuilder::new(format!("wss://localhost:{port}/")).connect())
            .await
            .expect_err("untrusted certificate");
        assert!(error.is_tls(), "{error}");
        // The CLI client with the printed path.
        let url = format!("wss://localhost:{port}/");
        let run = run_wsx(&["connect", "--ca", &printed_path, "--wait", "300ms", &url], "hi\n").await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(run.stdout.contains("< ho!"), "{}", run.stdout);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001() {
    bounded(async {
        let (mut server, port) = serve(&[]).await;
        let mut ws = connect(port).await;
        assert_eq!(next_text(&mut ws).await, "ho!");
        let reader = tokio::spawn(async move { next_close(&mut ws).await });
        let status = server.terminate().await;
        assert!(status.success(), "exit status {status:?}: {}", server.stderr_text());
        assert_eq!(within("the close", reader).await.unwrap(), Some(CloseCode::AWAY));
    })
    .await;
}

#[tokio::test]
async fn json_logs() {
    bounded(async {
        let proc = common::Proc::spawn(wsx_bin(), &["serve", "--port", "0", "--log-format", "json"]);
        let line = proc.stdout_line("the listening event", |l| l.contains("listening on")).await;
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        assert_eq!(event["level"], "INFO");
        let port = common::port_in(event["fields"]["message"].as_str().unwrap());
        let mut ws = connect(port).await;
        assert_eq!(next_text(&mut ws).await, "ho!");
        ws.send("hey").await.unwrap();
        let line = proc.stdout_line("the received event", |l| l.contains("Received message")).await;
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        assert_eq!(event["fields"]["message"], "Received message => hey");
        assert!(event["fields"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_fail_clearly() {
    bounded(async {
        for (args, expect) in [
            (&["serve", "--port", "notanumber"][..], "notanumber"),
            (&["serve", "--deflate", "maybe"][..], "expected on or off"),
            (&["serve", "--max-message-size", "lots"][..], "not a size"),
            (&["serve", "--memory-budget", "1TB"][..], "unknown size unit"),
            (&["serve", "--ping-interval", "soon"][..], "not a duration"),
            (&["serve", "--echo", "--broadcast"][..], "cannot be used with"),
            (&["serve", "--static", "/definitely/not/here", "--port", "0"][..], "not a directory"),
            (&["serve", "--tls-cert", "/nope.pem", "--tls-key", "/nope.key", "--port", "0"][..], "nope.pem"),
        ] {
            let run = run_wsx(args, "").await;
            assert_ne!(run.code, Some(0), "{args:?} should fail");
            assert!(run.stderr.contains(expect), "{args:?}: stderr lacks {expect:?}:\n{}", run.stderr);
        }
    })
    .await;
}
