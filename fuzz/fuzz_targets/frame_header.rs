//! `Header::decode` on arbitrary bytes never panics, and what it decodes survives a round
//! trip through `encode`.
//!
//! Also checked: the reported length is 2..=14 and within the input; a prefix of a decoded
//! header is "need more" (`Ok(None)`); trailing bytes never change the answer; `Ok(None)` only
//! for inputs shorter than the longest header; and a header that used the shortest length
//! form re-encodes to exactly the input bytes (§5.2 "the minimal number of bytes MUST be used").
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_proto::frame::{Header, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let result = Header::decode(data);
    match &result {
        Ok(Some((header, n))) => {
            let n = *n;
            assert!((2..=MAX_HEADER_LEN).contains(&n) && n <= data.len(), "length {n}");
            assert_eq!(Header::decode(&data[..n]), result, "trailing bytes changed the answer");
            for end in 0..n {
                assert_eq!(Header::decode(&data[..end]), Ok(None), "prefix of {end} bytes");
            }
            assert!(header.payload_len >> 63 == 0);
            if header.opcode.is_control() {
                assert!(header.fin && header.payload_len <= 125);
            }
            let mut out = [0; MAX_HEADER_LEN];
            let m = header.encode(&mut out);
            assert!(m <= n, "encode used {m} bytes where the input used {n}");
            let again = Header::decode(&out[..m]);
            assert_eq!(again, Ok(Some((*header, m))), "round trip");
            if m == n {
                assert_eq!(&out[..m], &data[..n], "same length form, different bytes");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_LEN, "need more with {} bytes", data.len()),
        Err(_) => {
            // The verdict depends only on the first 10 bytes (the mask is never looked at
            // before a length or opcode fault).
            let head = &data[..data.len().min(10)];
            assert_eq!(Header::decode(head), result, "error depends on bytes past the length");
        }
    }
});
