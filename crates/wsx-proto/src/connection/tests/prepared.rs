//! `send_prepared`: one frame for many connections, plain and with permessage-deflate under
//! every negotiation that changes what a recipient can take.

use super::*;
use crate::{DeflateConfig, Prepared, frame::RSV1};

/// A pair whose client offers `offer` and whose server accepts with its defaults.
fn pair_with(offer: Option<DeflateConfig>) -> Pair {
    let server = Config::default().deflate(Some(DeflateConfig::default()));
    Pair::new(Config::default().deflate(offer), server)
}

/// Compressible text that is not periodic: `n` quotes drawn by `seed`, so that a
/// back-reference to the wrong place in the peer's window inflates to different bytes.
fn json(n: usize) -> String {
    json_seeded(n, n as u64)
}

fn json_seeded(n: usize, seed: u64) -> String {
    let mut rng = wsx_testkit::Rng::new(seed);
    let symbols = ["WSX", "RUST", "TOKIO", "HYPER", "AXUM", "REDIS", "NODE"];
    (0..n)
        .map(|_| {
            let r = rng.bytes(3);
            format!("{{\"symbol\": \"{}\", \"price\": {}.{}}} ", symbols[usize::from(r[0]) % 7], r[1], r[2])
        })
        .collect()
}

#[test]
fn a_server_sends_the_prepared_frame_itself() {
    let mut pair = pair_with(None);
    for p in [Prepared::text("hello"), Prepared::binary(vec![9u8; 5000])] {
        pair.server.send_prepared(&p).unwrap();
        let out = drain(&mut pair.server);
        assert_eq!(out, p.frame()[..], "the same bytes");
        pair.client.receive(&out, pair.now);
        assert_eq!(message(&pair.client_events()[0]), &p.to_message());
    }
}

#[test]
fn a_client_masks_a_prepared_message() {
    let mut pair = pair_with(None);
    let p = Prepared::text("from the client");
    pair.client.send_prepared(&p).unwrap();
    let out = drain(&mut pair.client);
    let (header, _) = Header::decode(&out).unwrap().unwrap();
    assert!(header.mask.is_some());
    pair.server.receive(&out, pair.now);
    assert_eq!(message(&pair.server_events()[0]), &Message::text("from the client"));
}

#[test]
fn refused_before_open_and_after_close() {
    let (mut server, _) = open_server(Config::default());
    server.close(CloseCode::NORMAL, "", Instant::now()).unwrap();
    assert_eq!(server.send_prepared(&Prepared::text("late")), Err(SendError::Closed));
    let fresh = Connection::server(&Config::default(), Instant::now());
    assert_eq!(fresh.unwrap().send_prepared(&Prepared::text("early")), Err(SendError::NotOpen));
}

/// Own messages and prepared ones interleaved: every one must inflate to what was sent, which
/// fails if a shared frame left the connection's compressor referring past it. Returns, per
/// prepared message, whether the shared compressed frame went out.
fn interleave(pair: &mut Pair, prepared: &[Prepared]) -> Vec<bool> {
    let own = Message::text(json_seeded(60, 1000));
    let mut shared = Vec::new();
    for p in prepared {
        for m in [Some(own.clone()), None, Some(own.clone())] {
            match &m {
                Some(m) => pair.server.send(m.clone()).unwrap(),
                None => pair.server.send_prepared(p).unwrap(),
            }
            let out = drain(&mut pair.server);
            if m.is_none() {
                shared.push(p.deflated().is_some_and(|d| out == d[..]));
            }
            let sent = frames(&out);
            assert_eq!(sent.len(), 1);
            pair.client.receive(&out, pair.now);
            let want = m.unwrap_or_else(|| p.to_message());
            assert_eq!(message(&pair.client_events()[0]), &want);
        }
    }
    shared
}

#[test]
fn context_takeover_peers_share_the_frame_and_stay_in_sync() {
    let mut pair = pair_with(Some(DeflateConfig::default()));
    let messages = [Prepared::text(json(40)), Prepared::text(json(400)), Prepared::binary(json(80))];
    assert_eq!(interleave(&mut pair, &messages), [true, true, true]);
}

#[test]
fn no_context_takeover_peers_share_the_frame() {
    let mut pair = pair_with(Some(DeflateConfig::default().server_no_context_takeover(true)));
    let messages = [Prepared::text(json(40)), Prepared::text(json(400))];
    assert_eq!(interleave(&mut pair, &messages), [true, true]);
}

#[test]
fn a_small_window_shares_only_what_fits_it() {
    // 2^9 = 512 bytes: a message of 1 KiB or more is compressed for this peer alone.
    let mut pair = pair_with(Some(DeflateConfig::default().server_max_window_bits(9).threshold(100)));
    let fits = Prepared::text(json(10)); // 480 bytes
    let larger = Prepared::text(json(40));
    assert!(fits.len() <= 512 && larger.len() > 512);
    // The server's own threshold (1 KiB) decides: `fits` goes out plain, `larger` compressed alone.
    let shared = interleave(&mut pair, &[fits.clone(), larger.clone()]);
    assert_eq!(shared, [false, false]);
    let server = Config::default().deflate(Some(DeflateConfig::default().threshold(100)));
    let offer = DeflateConfig::default().server_max_window_bits(9);
    let mut pair = Pair::new(Config::default().deflate(Some(offer)), server);
    assert_eq!(interleave(&mut pair, &[fits, larger]), [true, false]);
}

#[test]
fn incompressible_messages_go_out_plain() {
    let mut pair = pair_with(Some(DeflateConfig::default()));
    let noise = wsx_testkit::Rng::new(11).bytes(5000);
    let p = Prepared::binary(noise);
    pair.server.send_prepared(&p).unwrap();
    let out = drain(&mut pair.server);
    assert_eq!(out, p.frame()[..]);
    assert_eq!(frames(&out)[0].1 & RSV1, 0);
    pair.client.receive(&out, pair.now);
    assert_eq!(message(&pair.client_events()[0]), &p.to_message());
}
