//! Interop with the Node `ws` library (`tests-peers/node/`), both directions, ws:// and wss://.

use crate::{TEST_TIMEOUT, script_peers::ScriptPeer, within};

// (a) The Node client scenario against the wsx echo server.

#[tokio::test]
async fn node_client_to_wsx_server_deflate() {
    within(
        "node client → wsx server (deflate)",
        TEST_TIMEOUT,
        ScriptPeer::node().client_against_wsx(true, true, false),
    )
    .await;
}

#[tokio::test]
async fn node_client_to_wsx_server_no_deflate() {
    within(
        "node client → wsx server (no deflate)",
        TEST_TIMEOUT,
        ScriptPeer::node().client_against_wsx(false, true, false),
    )
    .await;
}

#[tokio::test]
async fn node_client_without_deflate_to_wsx_server_deflate() {
    within(
        "node client (no deflate) → wsx server (deflate)",
        TEST_TIMEOUT,
        ScriptPeer::node().client_against_wsx(true, false, false),
    )
    .await;
}

#[tokio::test]
async fn node_client_to_wsx_server_tls() {
    within(
        "node client → wsx server over wss://",
        TEST_TIMEOUT,
        ScriptPeer::node().client_against_wsx(true, true, true),
    )
    .await;
}

#[tokio::test]
async fn node_close_codes_to_wsx_server() {
    let peer = ScriptPeer::node();
    within("node close-test", TEST_TIMEOUT, peer.close_tests_against_wsx(&ScriptPeer::close_cases())).await;
}

// (b) The wsx client scenario against the Node echo server.

#[tokio::test]
async fn wsx_client_to_node_server_deflate() {
    within("wsx client → node server (deflate)", TEST_TIMEOUT, ScriptPeer::node().wsx_against_server(true, false))
        .await;
}

#[tokio::test]
async fn wsx_client_to_node_server_no_deflate() {
    within("wsx client → node server (no deflate)", TEST_TIMEOUT, ScriptPeer::node().wsx_against_server(false, false))
        .await;
}

#[tokio::test]
async fn wsx_client_to_node_server_tls() {
    within("wsx client → node server over wss://", TEST_TIMEOUT, ScriptPeer::node().wsx_against_server(true, true))
        .await;
}
