//! Interop with the Python `websockets` library (`tests-peers/python/`), both directions, ws:// and wss://.

mod common;

use common::{ScriptPeer, within};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

// (a) The Node client scenario against the wsx echo server.

#[tokio::test]
async fn python_client_to_wsx_server_deflate() {
    within("python client → wsx server (deflate)", LIMIT, ScriptPeer::python().client_against_wsx(true, true, false))
        .await;
}

#[tokio::test]
async fn python_client_to_wsx_server_no_deflate() {
    within(
        "python client → wsx server (no deflate)",
        LIMIT,
        ScriptPeer::python().client_against_wsx(false, true, false),
    )
    .await;
}

#[tokio::test]
async fn python_client_without_deflate_to_wsx_server_deflate() {
    within(
        "python client (no deflate) → wsx server (deflate)",
        LIMIT,
        ScriptPeer::python().client_against_wsx(true, false, false),
    )
    .await;
}

#[tokio::test]
async fn python_client_to_wsx_server_tls() {
    within("python client → wsx server over wss://", LIMIT, ScriptPeer::python().client_against_wsx(true, true, true))
        .await;
}

#[tokio::test]
async fn python_close_codes_to_wsx_server() {
    let peer = ScriptPeer::python();
    within("python close-test", LIMIT, peer.close_tests_against_wsx(&ScriptPeer::close_cases())).await;
}

// (b) The wsx client scenario against the Node echo server.

#[tokio::test]
async fn wsx_client_to_python_server_deflate() {
    within("wsx client → python server (deflate)", LIMIT, ScriptPeer::python().wsx_against_server(true, false)).await;
}

#[tokio::test]
async fn wsx_client_to_python_server_no_deflate() {
    within("wsx client → python server (no deflate)", LIMIT, ScriptPeer::python().wsx_against_server(false, false))
        .await;
}

#[tokio::test]
async fn wsx_client_to_python_server_tls() {
    within("wsx client → python server over wss://", LIMIT, ScriptPeer::python().wsx_against_server(true, true)).await;
}
