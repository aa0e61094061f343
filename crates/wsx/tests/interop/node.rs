//! Interop with the Node `ws` library (`tests-peers/node/`), both directions, ws:// and wss://.

crate::script_peers::tests_in_both_directions!(ScriptPeer::node());
