//! Interop with the Python `websockets` library (`tests-peers/python/`), both directions, ws:// and wss://.

use crate::{TEST_TIMEOUT, script_peers::ScriptPeer, within};

// (a) The Python client scenario against the wsx echo server.

#[tokio::test]
async fn python_client_to_wsx_server_deflate() {
    within(
        "python client → wsx server (deflate)",
        TEST_TIMEOUT,
        ScriptPeer::python().client_against_wsx(true, true, false),
    )
    .await;
}

#[tokio::test]
async fn python_client_to_wsx_server_no_deflate() {
    within(
        "python client → wsx server (no deflate)",
        TEST_TIMEOUT,
        ScriptPeer::python().client_against_wsx(false, true, false),
    )
    .await;
}

#[tokio::test]
async fn python_client_without_deflate_to_wsx_server_deflate() {
    within(
        "python client (no deflate) → wsx server (deflate)",
        TEST_TIMEOUT,
        ScriptPeer::python().client_against_wsx(true, false, false),
    )
    .await;
}

#[tokio::test]
async fn python_client_to_wsx_server_tls() {
    within(
        "python client → wsx server over wss://",
        TEST_TIMEOUT,
        ScriptPeer::python().client_against_wsx(true, true, true),
    )
    .await;
}

#[tokio::test]
async fn python_close_codes_to_wsx_server() {
    let peer = ScriptPeer::python();
    within("python close-test", TEST_TIMEOUT, peer.close_tests_against_wsx(&ScriptPeer::close_cases())).await;
}

// (b) The wsx client scenario against the Python echo server.

#[tokio::test]
async fn wsx_client_to_python_server_deflate() {
    within("wsx client → python server (deflate)", TEST_TIMEOUT, ScriptPeer::python().wsx_against_server(true, false))
        .await;
}

#[tokio::test]
async fn wsx_client_to_python_server_no_deflate() {
    within(
        "wsx client → python server (no deflate)",
        TEST_TIMEOUT,
        ScriptPeer::python().wsx_against_server(false, false),
    )
    .await;
}

#[tokio::test]
async fn wsx_client_to_python_server_tls() {
    within("wsx client → python server over wss://", TEST_TIMEOUT, ScriptPeer::python().wsx_against_server(true, true))
        .await;
}
