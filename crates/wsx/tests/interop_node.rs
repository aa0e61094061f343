//! Interop with the Node `ws` library (`tests-peers/node/`), both directions, ws:// and wss://.

mod common;

use common::{ScriptPeer, within};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

// (a) The Node client scenario against the wsx echo server.

#[tokio::test]
async fn node_client_to_wsx_server_deflate() {
    within("node client → wsx server (deflate)", LIMIT, ScriptPeer::node().client_against_wsx(true, true, false)).await;
}

#[tokio::test]
async fn node_client_to_wsx_server_no_deflate() {
    within("node client → wsx server (no deflate)", LIMIT, ScriptPeer::node().client_against_wsx(false, true, false))
        .await;
}

#[tokio::test]
async fn node_client_without_deflate_to_wsx_server_deflate() {
    within(
        "node client (no deflate) → wsx server (deflate)",
        LIMIT,
        ScriptPeer::node().client_against_wsx(true, false, false),
    )
    .await;
}

#[tokio::test]
async fn node_client_to_wsx_server_tls() {
    within("node client → wsx server over wss://", LIMIT, ScriptPeer::node().client_against_wsx(true, true, true))
        .await;
}

#[tokio::test]
async fn node_close_codes_to_wsx_server() {
    let peer = ScriptPeer::node();
    within("node close-test", LIMIT, peer.close_tests_against_wsx(&ScriptPeer::close_cases())).await;
}

// (b) The wsx client scenario against the Node echo server.

#[tokio::test]
async fn wsx_client_to_node_server_deflate() {
    within("wsx client → node server (deflate)", LIMIT, ScriptPeer::node().wsx_against_server(true, false)).await;
}

#[tokio::test]
async fn wsx_client_to_node_server_no_deflate() {
    within("wsx client → node server (no deflate)", LIMIT, ScriptPeer::node().wsx_against_server(false, false)).await;
}

#[tokio::test]
async fn wsx_client_to_node_server_tls() {
    within("wsx client → node server over wss://", LIMIT, ScriptPeer::node().wsx_against_server(true, true)).await;
}
