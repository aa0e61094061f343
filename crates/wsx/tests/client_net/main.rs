//! The client on the network: proxies (real tinyproxy and microsocks processes), redirects (with
//! the proxy chosen again per hop) and reconnecting, against wsx servers on loopback.

mod proxy;
mod reconnect;
mod redirect;
mod support;
