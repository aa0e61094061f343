//! Interop with the Python `websockets` library (`tests-peers/python/`), both directions, ws://
//! and wss://.

crate::script_peers::tests_in_both_directions!(ScriptPeer::python());
