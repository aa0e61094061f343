//! `wsx serve --rooms --redis`: two servers share their rooms through a real `redis-server`.

mod common;

use common::{Proc, Ws, bounded, next_text, serve, within, wsx_bin};
use wsx::{ClientBuilder, CloseCode, Message};
use wsx_testkit::redis::RedisServer;

async fn join(port: u16, room: &str) -> Ws {
    join_at(&format!("ws://127.0.0.1:{port}/room/{room}")).await
}

async fn join_at(url: &str) -> Ws {
    let mut ws = within("connect", ClientBuilder::new(url).connect()).await.expect("connect").0;
    assert_eq!(next_text(&mut ws).await, "hi", "greeted once in the room");
    ws
}

#[tokio::test]
async fn two_servers_share_a_room_and_close_its_clients_when_redis_dies() {
    bounded(async {
        let mut redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
        let url = redis.url();
        let args = ["--rooms", "--greeting", "hi", "--redis", url.as_str()];
        let (one, port_one) = serve(&args).await;
        let (_two, port_two) = serve(&args).await;
        let line = one.stderr_line("the Redis announcement", |l| l.contains("sharing rooms through Redis")).await;
        assert!(line.contains(&url), "{line}");

        let mut alice = join(port_one, "lounge").await;
        let mut bob = join(port_two, "lounge").await;
        let mut carol = join(port_two, "kitchen").await;
        // Each server subscribes to a room's channel when its first client joins; wait until
        // a message from each side gets across.
        let mut crossed = false;
        for i in 0..50 {
            alice.send(format!("probe {i}")).await.unwrap();
            assert_eq!(next_text(&mut alice).await, format!("probe {i}"), "alice hears herself once");
            let got = tokio::time::timeout(std::time::Duration::from_millis(100), bob.recv()).await;
            if let Ok(Ok(Some(Message::Text(t)))) = got {
                assert_eq!(t.as_str(), format!("probe {i}"));
                crossed = true;
                break;
            }
        }
        assert!(crossed, "a message from server one reached server two");
        bob.send("hello from two").await.unwrap();
        assert_eq!(next_text(&mut bob).await, "hello from two");
        assert_eq!(next_text(&mut alice).await, "hello from two");
        carol.send("kitchen only").await.unwrap();
        assert_eq!(next_text(&mut carol).await, "kitchen only");
        alice.send("lounge only").await.unwrap();
        assert_eq!(next_text(&mut bob).await, "lounge only", "nothing from the kitchen in between");
        assert_eq!(next_text(&mut alice).await, "lounge only");

        // Redis dies: every client of a shared room is closed with 1012, to reconnect.
        redis.kill();
        for ws in [&mut alice, &mut bob, &mut carol] {
            let reason = loop {
                match within("the close", ws.recv()).await {
                    Ok(Some(Message::Close(_) | Message::Ping(_) | Message::Pong(_))) => {}
                    Ok(None) | Err(_) => break ws.close_reason().expect("closed"),
                    Ok(Some(other)) => panic!("expected the close, got {other:?}"),
                }
            };
            assert_eq!(reason.code(), CloseCode::RESTART, "{reason:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn two_browser_tabs_on_two_servers_chat_through_redis() {
    bounded(async {
        let peers = common::Peers::require("playwright-core");
        let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
        let url = redis.url();
        let args = ["--rooms", "--redis", url.as_str()];
        let (_one, port_one) = serve(&args).await;
        let (_two, port_two) = serve(&args).await;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser_demo.js");
        let first = format!("http://127.0.0.1:{port_one}/?room=hall");
        let second = format!("http://127.0.0.1:{port_two}/?room=hall");
        let mut browser = peers.node(
            &script,
            &[
                &first,
                "--second-page",
                &second,
                "--pages",
                "2",
                "--expect",
                "ho!",
                "--send",
                "hello",
                "--timeout",
                "50",
            ],
        );
        let line = browser
            .stdout_line_within(std::time::Duration::from_secs(55), "the browser's JSON result", |l| l.starts_with('{'))
            .await;
        let _ = within("the browser to exit", browser.child.wait()).await;
        let result: serde_json::Value = serde_json::from_str(&line).expect("JSON result");
        for (i, page) in result["pages"].as_array().expect("pages").iter().enumerate() {
            let mut received: Vec<&str> =
                page["received"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
            received[1..].sort_unstable();
            assert_eq!(received, ["ho!", "hello 0", "hello 1"], "page {i} heard both servers: {result}");
        }
    })
    .await;
}

/// `OFFSET:EPOCH:text`, as `--resumable` sends room messages: (position, text).
fn numbered(message: &str) -> (String, String) {
    let mut parts = message.splitn(3, ':');
    let (offset, epoch, text) = (parts.next().unwrap(), parts.next().expect("an epoch"), parts.next().expect("a text"));
    assert!(offset.parse::<u64>().is_ok(), "{message}");
    (format!("{offset}:{epoch}"), text.to_owned())
}

#[tokio::test]
async fn a_client_resumes_on_another_server_with_what_it_missed() {
    bounded(async {
        let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
        let url = redis.url();
        let args = ["--rooms", "--greeting", "hi", "--redis", url.as_str(), "--resumable", "--quiet"];
        let (_one, port_one) = serve(&args).await;
        let (_two, port_two) = serve(&args).await;

        let mut alice = join(port_one, "den").await;
        let mut bob = join(port_two, "den").await;
        // Messages go through Redis to both servers (the sender's too) once each is subscribed.
        alice.send("one").await.unwrap();
        let (_, text) = numbered(&next_text(&mut alice).await);
        assert_eq!(text, "one");
        let mut last = String::new();
        for i in 0..50 {
            bob.send(format!("probe {i}")).await.unwrap();
            // Bob may hear "one" first, if server two was subscribed in time.
            let (position, text) = loop {
                let (position, text) = numbered(&next_text(&mut bob).await);
                if text != "one" {
                    break (position, text);
                }
            };
            assert_eq!(text, format!("probe {i}"));
            let got = tokio::time::timeout(std::time::Duration::from_secs(2), alice.recv()).await;
            if let Ok(Ok(Some(Message::Text(t)))) = got {
                let (alice_position, alice_text) = numbered(t.as_str());
                assert_eq!((alice_position.as_str(), alice_text.as_str()), (position.as_str(), text.as_str()));
                last = position;
                break;
            }
        }
        assert!(!last.is_empty(), "server two's messages reached server one");

        // Alice leaves; Bob goes on; Alice comes back on server two and gets what she missed,
        // then the live messages.
        drop(alice);
        for i in 0..3 {
            bob.send(format!("missed {i}")).await.unwrap();
            assert_eq!(numbered(&next_text(&mut bob).await).1, format!("missed {i}"));
        }
        let mut alice = join_at(&format!("ws://127.0.0.1:{port_two}/room/den?since={last}")).await;
        bob.send("live").await.unwrap();
        for expected in ["missed 0", "missed 1", "missed 2", "live"] {
            assert_eq!(numbered(&next_text(&mut alice).await).1, expected);
        }

        // A position from a history that does not exist: told, then live.
        let mut stranger = join_at(&format!("ws://127.0.0.1:{port_one}/room/den?since=1:0000")).await;
        let lost = next_text(&mut stranger).await;
        assert!(lost.starts_with("resume:lost:"), "{lost}");
        // And a malformed one is refused before the upgrade.
        let bad = ClientBuilder::new(format!("ws://127.0.0.1:{port_one}/room/den?since=soon")).connect().await;
        assert!(format!("{:?}", bad.expect_err("refused")).contains("400"), "answered 400");
    })
    .await;
}

/// The demo page under `--resumable`: when its server goes away and comes back, the page
/// reconnects by itself with `?since=` the last position it saw, and shows what it missed
/// (without the positions), then the live messages.
#[tokio::test]
async fn the_demo_page_reconnects_and_resumes_what_it_missed() {
    bounded(async {
        let peers = common::Peers::require("playwright-core");
        let redis = tokio::task::spawn_blocking(RedisServer::start).await.unwrap();
        let url = redis.url();
        let args = ["--rooms", "--greeting", "hi", "--redis", url.as_str(), "--resumable"];
        let (mut one, port_one) = serve(&args).await;
        let (_two, port_two) = serve(&args).await;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser_demo.js");
        let page = format!("http://127.0.0.1:{port_one}/?room=den");
        let browser =
            peers.node(&script, &[&page, "--expect", "hi", "--send", "hey", "--follow", "live", "--timeout", "80"]);
        let wait = std::time::Duration::from_secs(60);
        browser.stdout_line_within(wait, "the page to hear its own message", |l| l == "ready").await;

        // Server one goes away (its clients get 1001); Bob, on server two, talks meanwhile.
        let mut bob = join(port_two, "den").await;
        one.terminate().await;
        for i in 0..2 {
            bob.send(format!("missed {i}")).await.unwrap();
            assert_eq!(numbered(&next_text(&mut bob).await).1, format!("missed {i}"));
        }
        // Server one again, on the same port: the page comes back by itself.
        let port = port_one.to_string();
        let mut again = vec!["serve", "--host", "127.0.0.1", "--port", &port];
        again.extend_from_slice(&args);
        let one = Proc::spawn(wsx_bin(), &again);
        one.stderr_line("the page to reconnect", |l| l.contains("client connected")).await;
        bob.send("live").await.unwrap();

        let line = browser.stdout_line_within(wait, "the browser's JSON result", |l| l.starts_with('{')).await;
        let result: serde_json::Value = serde_json::from_str(&line).expect("JSON result");
        let page = &result["pages"][0];
        let received: Vec<&str> = page["received"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(received, ["hi", "hey", "hi", "missed 0", "missed 1", "live"], "{result}");
        assert_eq!(page["resumable"], true, "{result}");
        assert!(page["reconnects"].as_u64().unwrap_or(0) >= 1, "{result}");
        let last = page["urls"].as_array().and_then(|u| u.last()).and_then(|u| u.as_str()).unwrap_or_default();
        assert!(last.contains("/room/den?since="), "the page resumed from a position: {result}");
    })
    .await;
}
