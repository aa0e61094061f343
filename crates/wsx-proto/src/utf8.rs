//! Incremental UTF-8 validation (RFC 6455 §8.1).
//!
//! A text message may be split across frames and a frame across reads, and a character across
//! either. [`Validator`] is fed the pieces in order and fails on the first byte that cannot
//! begin or continue a valid sequence, so an invalid message is refused as its bytes arrive
//! rather than when it ends. `simdutf8`'s `compat` API does the bulk work and says whether an
//! error is a real one or just a character cut at the end of the piece.

/// The text is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a stream of UTF-8 pieces; holds at most 3 bytes between calls.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate the next piece. Fails as soon as the bytes seen so far cannot be the start of
    /// valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = width(self.partial[0]) - have;
            let take = need.min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let bytes = &self.partial[..have + take];
            match simdutf8::compat::from_utf8(bytes) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; wait for more.
                    self.partial_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            input = &input[take..];
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Whether everything fed so far ends on a character boundary: call it when the text ends.
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }

    /// Forget any state, for the next text.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// Check that `bytes` is complete, valid UTF-8.
pub fn validate(bytes: &[u8]) -> Result<(), Utf8Error> {
    simdutf8::basic::from_utf8(bytes).map(drop).map_err(|_| Utf8Error)
}

/// The length of the sequence a lead byte starts; only called on lead bytes that
/// `simdutf8` accepted as the start of an incomplete sequence (0xC2..=0xF4).
fn width(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<bool, Utf8Error> {
        let mut v = Validator::new();
        for p in pieces {
            v.feed(p)?;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn accepts_split_characters_at_every_point() {
        let text = "κόσμε ✓ 𝄞 end".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(feed_all(&[&text[..i], &text[i..j], &text[j..]]), Ok(true), "{i} {j}");
            }
        }
    }

    #[test]
    fn fails_fast_on_the_first_bad_byte() {
        let mut v = Validator::new();
        v.feed(b"hello ").unwrap();
        // 0xF4 0x90 would encode a code point above U+10FFFF: invalid at its second byte.
        v.feed(&[0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
        // An overlong encoding is invalid at its second byte too.
        let mut v = Validator::new();
        v.feed(&[0xE0]).unwrap();
        assert_eq!(v.feed(&[0x80]), Err(Utf8Error));
        // A surrogate (U+D800) is invalid at its second byte.
        let mut v = Validator::new();
        assert_eq!(v.feed(&[0xED, 0xA0]), Err(Utf8Error));
        // A stray continuation byte fails at once.
        assert_eq!(Validator::new().feed(&[0x80]), Err(Utf8Error));
    }

    #[test]
    fn incomplete_at_the_end_is_reported() {
        assert_eq!(feed_all(&[b"ok", &[0xE2, 0x82]]), Ok(false));
        assert_eq!(feed_all(&[b"ok", &[0xE2], &[0x82], &[0xAC]]), Ok(true));
    }

    #[test]
    fn agrees_with_std_on_all_short_sequences() {
        let mut buf = [0u8; 3];
        for a in 0..=255u8 {
            for b in (0..=255u8).step_by(3) {
                for c in [0x00, 0x80, 0x8F, 0x90, 0xBF, 0xC0] {
                    buf.copy_from_slice(&[a, b, c]);
                    let std_ok = std::str::from_utf8(&buf).is_ok();
                    let one = feed_all(&[&buf]).unwrap_or(false);
                    let split = feed_all(&[&buf[..1], &buf[1..2], &buf[2..]]).unwrap_or(false);
                    assert_eq!(one, std_ok, "{buf:x?}");
                    assert_eq!(split, std_ok, "{buf:x?}");
                }
            }
        }
    }
}
