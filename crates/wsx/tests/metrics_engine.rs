//! Metrics the engine counts (feature `metrics`): permessage-deflate bytes before and after
//! compression, and the keep-alive ping's round trip, after a scripted session under tokio's
//! paused clock, as exact values in the Prometheus text.
//!
//! Its own binary: the recorder is global to the process.

mod metrics_common;

use std::time::Duration;

use wsx::{CloseCode, Config, DeflateConfig, Message};

#[tokio::test(start_paused = true)]
async fn deflate_bytes_and_the_ping_round_trip_give_exact_values() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    wsx::metrics::enable();

    let client_config = Config::default().deflate(Some(DeflateConfig::default()));
    let server_config = client_config.clone().ping_interval(Some(Duration::from_secs(10)));
    let (mut client, echo) = metrics_common::duplex_echo(&client_config, &server_config).await;

    // One compressible text each way (over the 1 KiB threshold), and one under the threshold,
    // which is not compressed and not counted.
    let text = "{\"price\": 101.25, \"symbol\": \"WSX\"} ".repeat(100);
    for message in [Message::text(text.as_str()), Message::text("short")] {
        client.send(message.clone()).await.unwrap();
        assert_eq!(client.recv().await.unwrap(), Some(message));
    }
    // The server's keep-alive ping comes after 10 s (the paused clock jumps there once both
    // sides wait); the client answers it as it reads, and then closes. Nothing moves the
    // clock between the ping and its pong: the round trip is exactly zero.
    assert!(matches!(client.recv().await.unwrap(), Some(Message::Ping(_))));
    client.close(CloseCode::NORMAL, "").await.unwrap();
    while client.recv().await.unwrap().is_some() {}
    echo.await.unwrap().unwrap();

    let text = prometheus.render();
    let mut values: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("wsx_deflate") || l.starts_with("wsx_ping") || l.starts_with("wsx_bytes"))
        .filter(|l| !l.contains("quantile"))
        .collect();
    values.sort_unstable();
    // Wire bytes: in, the text compressed (76 bytes of payload) + 2 + 4 (mask), "short"
    // 5 + 2 + 4, the pong (the ping's 4-byte counter) 4 + 2 + 4, the close 2 + 2 + 4:
    // 82 + 11 + 10 + 8 = 111. Out: the same without masks, 78 + 7 + 6 (the ping) + 4 = 95.
    // Deflate: the 3,500-byte text each way, 76 bytes compressed (zlib-rs level 1).
    assert_eq!(
        values,
        [
            "wsx_bytes_received_total 111",
            "wsx_bytes_sent_total 95",
            "wsx_deflate_bytes_total{direction=\"received\",form=\"compressed\"} 76",
            "wsx_deflate_bytes_total{direction=\"received\",form=\"uncompressed\"} 3500",
            "wsx_deflate_bytes_total{direction=\"sent\",form=\"compressed\"} 76",
            "wsx_deflate_bytes_total{direction=\"sent\",form=\"uncompressed\"} 3500",
            "wsx_ping_rtt_seconds_count 1",
            "wsx_ping_rtt_seconds_sum 0",
        ],
        "{text}"
    );
}
