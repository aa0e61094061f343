//! Metrics (features `metrics` and `redis`): the Redis broker measures its lag with a probe
//! through a real redis-server, and counts its reconnects.
//!
//! Its own binary: the recorder is global to the process.

mod redis_common;

use std::time::{Duration, Instant};

use redis_common::*;
use wsx::pubsub::redis::RedisBroker;

/// The value of the sample `name` (with its labels) in Prometheus text, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_records_its_lag_and_reconnects() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    wsx::metrics::enable();
    let mut redis = Redis::start().await;
    let broker = RedisBroker::connect(&redis.url()).await.unwrap();

    // The probe goes out at once and then every second: two round trips within the patience.
    let started = Instant::now();
    let mut text = prometheus.render();
    while sample(&text, "wsx_broker_lag_seconds_count").unwrap_or(0.0) < 2.0 {
        assert!(started.elapsed() < PATIENCE, "no lag recorded:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = prometheus.render();
    }
    // A round trip through a local Redis: above zero, well under the probe's period.
    let mean =
        sample(&text, "wsx_broker_lag_seconds_sum").unwrap() / sample(&text, "wsx_broker_lag_seconds_count").unwrap();
    assert!(mean > 0.0 && mean < 0.5, "mean lag {mean} s\n{text}");
    // The probe has a channel of its own, which the node subscribes to like a topic's.
    let channel = format!("wsx:\0lag:{:016x}", broker.node_id());
    assert_eq!(redis.subscribers(&channel).await, 1);

    // Redis restarted on the same port: one reconnect, and the probe comes back with it.
    let port = redis.port;
    redis.kill();
    let redis = Redis::on(port).await;
    let started = Instant::now();
    loop {
        let text = prometheus.render();
        if sample(&text, "wsx_broker_reconnects_total") == Some(1.0) && redis.subscribers(&channel).await == 1 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "no reconnect, or no probe after it:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = sample(&prometheus.render(), "wsx_broker_lag_seconds_count").unwrap();
    let started = Instant::now();
    while sample(&prometheus.render(), "wsx_broker_lag_seconds_count").unwrap() <= before {
        assert!(started.elapsed() < PATIENCE, "no probe after the reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(broker);
}
