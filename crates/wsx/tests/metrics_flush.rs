//! Metrics (feature `metrics`): an open connection's counts reach the recorder without a
//! message or a read to carry them: at once through `wsx::metrics::flush`, and within
//! `FLUSH_INTERVAL` through the harvest thread `enable` starts.
//!
//! Its own binary: the recorder is global to the process.

mod metrics_common;

use std::time::{Duration, Instant};

use wsx::{Config, Message, metrics::FLUSH_INTERVAL};

/// The value of the sample `name` (with its labels) in Prometheus text, if present.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn an_open_silent_connection_shows_its_counts() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    wsx::metrics::enable();

    let config = Config::default().deflate(None);
    let (mut client, echo) = metrics_common::duplex_echo(&config, &config).await;
    let exchange = async |client: &mut wsx::WebSocket<_>, messages: &[Message]| {
        for message in messages {
            client.send(message.clone()).await.unwrap();
            assert_eq!(client.recv().await.unwrap().as_ref(), Some(message));
        }
    };

    // 1. Both sides open and silent: `flush` makes the scrape exact.
    exchange(&mut client, &[Message::text("a"), Message::text("bb"), Message::binary(vec![7u8; 3])]).await;
    wsx::metrics::flush();
    let text = prometheus.render();
    for (name, value) in [
        ("wsx_connections_active", 1),
        ("wsx_messages_received_total{kind=\"text\"}", 2),
        ("wsx_messages_received_total{kind=\"binary\"}", 1),
        ("wsx_messages_sent_total{kind=\"text\"}", 2),
        ("wsx_messages_sent_total{kind=\"binary\"}", 1),
        // In: 1 + 2 + 3 payload bytes, 3 × (2 + 4 masked) headers. Out: 6 + 3 × 2.
        ("wsx_bytes_received_total", 24),
        ("wsx_bytes_sent_total", 12),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }

    // 2. Without `flush`: the harvest thread brings the next exchange within the interval
    //    (waited for up to ten intervals, on the real clock).
    exchange(&mut client, &[Message::text("ccc")]).await;
    let started = Instant::now();
    let mut text = prometheus.render();
    while sample(&text, "wsx_messages_received_total{kind=\"text\"}") != Some(3) {
        assert!(started.elapsed() < FLUSH_INTERVAL * 10, "not harvested within 10 intervals:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = prometheus.render();
    }
    assert_eq!(sample(&text, "wsx_bytes_received_total"), Some(24 + 9), "{text}");
    assert_eq!(sample(&text, "wsx_connections_active"), Some(1), "{text}");

    drop(client);
    echo.await.unwrap().unwrap_err();
}
