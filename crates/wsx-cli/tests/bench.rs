//! `wsx bench` against `wsx serve --echo`.

mod common;

use common::{bounded, run_wsx, serve};

#[tokio::test]
async fn short_run_reports_json() {
    bounded(async {
        let (_server, port) = serve(&["--echo", "--quiet", "--greeting", ""]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let run = run_wsx(
            &["bench", &url, "--connections", "4", "--size", "64", "--duration", "1s", "--warmup", "200ms", "--json"],
            "",
        )
        .await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let result: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
        assert!(result["messages"].as_u64().unwrap() > 100, "{result}");
        assert!(result["msgs_per_s"].as_f64().unwrap() > 100.0, "{result}");
        assert_eq!(result["errors"], 0);
        let latency = &result["latency_us"];
        let p50 = latency["p50"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= latency["p99"].as_f64().unwrap(), "{result}");
        assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap(), "{result}");
    })
    .await;
}

#[tokio::test]
async fn pipelined_text_and_fixed_rate() {
    bounded(async {
        let (_server, port) = serve(&["--echo", "--quiet", "--greeting", ""]).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let run =
            run_wsx(&["bench", &url, "-c", "2", "--pipeline", "8", "--text", "-d", "500ms", "--warmup", "0s"], "")
                .await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert!(run.stdout.contains("msg/s") && run.stdout.contains("p99.9"), "{}", run.stdout);

        let args = ["bench", &url, "-c", "2", "--rate", "400", "-d", "1s", "--warmup", "0s", "--json"];
        let run = run_wsx(&args, "").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let result: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
        let rate = result["msgs_per_s"].as_f64().unwrap();
        assert!((300.0..=500.0).contains(&rate), "a fixed rate of 400/s gave {rate}");
    })
    .await;
}

#[tokio::test]
async fn fails_when_it_cannot_connect() {
    bounded(async {
        let run = run_wsx(&["bench", "ws://127.0.0.1:1/", "--duration", "1s"], "").await;
        assert_ne!(run.code, Some(0));
        assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
        let run = run_wsx(&["bench", "ws://127.0.0.1:1/", "--connections", "0"], "").await;
        assert_ne!(run.code, Some(0));
        assert!(run.stderr.contains("--connections"), "{}", run.stderr);
    })
    .await;
}

#[tokio::test]
async fn fanout_against_a_room_counts_every_delivery() {
    bounded(async {
        let (_server, port) = serve(&["--rooms", "--quiet", "--greeting", ""]).await;
        let url = format!("ws://127.0.0.1:{port}/room/bench");
        let args =
            ["bench", &url, "--fanout", "20", "-c", "2", "--pipeline", "4", "-d", "1s", "--warmup", "200ms", "--json"];
        let run = run_wsx(&args, "").await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        let result: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
        assert_eq!((result["listeners"].as_u64(), result["publishers"].as_u64()), (Some(20), Some(2)), "{result}");
        assert_eq!((result["lost"].as_u64(), result["reordered"].as_u64()), (Some(0), Some(0)), "{result}");
        // Every publish reaches all 22 connections: far more deliveries than one echo each.
        assert!(result["deliveries"].as_u64().unwrap() > 22 * 50, "{result}");
    })
    .await;
}
