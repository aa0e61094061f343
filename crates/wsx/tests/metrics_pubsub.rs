//! Metrics of the topics hub (features `metrics` and `pubsub`): deliveries, drops and
//! slow-consumer closes, counted once per publish, and the topics and subscriptions gauges, in
//! the Prometheus text.
//!
//! Its own binary: the recorder is global to the process.

use wsx::{
    Config, WebSocket,
    pubsub::{Hub, SlowConsumer},
};

/// A server connection whose peer is a pipe nobody reads.
async fn server_side() -> (WebSocket<tokio::io::DuplexStream>, WebSocket<tokio::io::DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let request = http::Request::get("ws://x/").body(()).unwrap();
    let config = Config::default();
    let (client, server) = tokio::join!(wsx::handshake(a, &request, &config), wsx::accept(b));
    (client.unwrap().0, server.unwrap())
}

#[tokio::test]
async fn publishes_count_deliveries_drops_and_slow_consumer_closes() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    let quiet = Hub::new();
    let _ = quiet.publish("t", "before enable: not counted");
    wsx::metrics::enable();

    // Three subscribers, one publish: 3 deliveries.
    let hub = Hub::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (client, mut server) = server_side().await;
        server.subscribe(&hub, "t").unwrap();
        held.push((client, server));
    }
    assert_eq!(hub.publish("t", "x").delivered, 3);

    // Under the drop policy a subscriber whose connection is not driven takes one message, then
    // skips the next; under the close policy it is closed instead.
    let dropping = Hub::builder().max_queued_bytes(1).slow_consumer(SlowConsumer::Drop).build();
    let closing = Hub::builder().max_queued_bytes(1).build();
    for hub in [&dropping, &closing] {
        let (client, mut server) = server_side().await;
        server.subscribe(hub, "t").unwrap();
        held.push((client, server));
        hub.publish("t", "first");
        hub.publish("t", "second");
    }

    // A second topic on the first hub, then one subscription ended early.
    held[0].1.subscribe(&hub, "u").unwrap();
    held[1].1.subscribe(&hub, "u").unwrap();
    assert!(held[1].1.unsubscribe("u"));

    let values = |text: &str| -> Vec<String> {
        let mut values: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("wsx_pubsub") || l.starts_with("wsx_slow"))
            .map(str::to_owned)
            .collect();
        values.sort_unstable();
        values
    };
    // Subscriptions: 3 + 1 + 1 on "t" (three hubs), 1 on "u"; topics with a subscriber: "t" on
    // each hub, "u".
    let text = prometheus.render();
    assert_eq!(
        values(&text),
        [
            "wsx_pubsub_deliveries_total 5",
            "wsx_pubsub_dropped_total 1",
            "wsx_pubsub_subscriptions 6",
            "wsx_pubsub_topics 4",
            "wsx_slow_consumer_closes_total 1"
        ],
        "{text}"
    );
    // Every connection gone: both gauges back to zero.
    drop(held);
    let text = prometheus.render();
    assert!(values(&text).contains(&"wsx_pubsub_subscriptions 0".to_owned()), "{text}");
    assert!(values(&text).contains(&"wsx_pubsub_topics 0".to_owned()), "{text}");
}
