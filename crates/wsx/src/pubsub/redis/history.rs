//! The resumable mode's format and bookkeeping: a topic's history in a Redis stream, each
//! message numbered by one Lua script that also publishes it, and a node's position in each
//! topic it receives.
//!
//! **Keys.** For topic `T` and prefix `P`: the stream `P{T}:h` (entries with id `OFFSET-0` and
//! one field `m`, the message as published) and the hash `P{T}:m` (`e`: the epoch, `s`: the last
//! offset given, `p:NODE`: the last publish number of each node that published, to skip a
//! publish sent again after a failed connection). Both carry the same hash tag, so that on Redis Cluster they live in one slot
//! and one script may touch both; both expire `ttl` after the topic's last publish, and the
//! epoch goes with them: offsets of a lost history are never mistaken for offsets of a new one.
//!
//! **A message** (version 2): version (1 byte), flags (1: bit 0 text), the publishing node
//! (8), the subscriber it is not for on that node (8, 0 for none), the offset (8), the epoch's
//! length (1) and the epoch, then the payload as it is. All integers big-endian. The script
//! builds the offset and epoch into it, so the stream entry and the PUB/SUB message are the
//! same bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::pubsub::{Position, Prepared, SubscriberId};

/// The version byte of a resumable message.
pub(super) const VERSION: u8 = 2;
/// Version, flags, node, except: what the publisher writes before the script adds the rest.
pub(super) const HEAD: usize = 18;

/// Numbers a message, appends it to the topic's history and publishes it, in one step.
///
/// KEYS: stream, meta. ARGV: channel, head ([`HEAD`] bytes), payload, history length, TTL in
/// seconds, an epoch to start with if the topic has none, the node's publish number and the
/// meta field that keeps the node's last one. A publish number not above the last is a publish
/// sent again after a connection failed although Redis had run it: it is skipped (0 returned).
/// Returns the offset.
pub(super) const PUBLISH_SCRIPT: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'e', ARGV[8])
local seq = tonumber(ARGV[7])
if seq <= tonumber(meta[2] or '0') then
  return 0
end
local epoch = meta[1]
if epoch then
  redis.call('HSET', KEYS[2], ARGV[8], seq)
else
  epoch = ARGV[6]
  redis.call('HSET', KEYS[2], ARGV[8], seq, 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
local message = ARGV[2] .. struct.pack('>I8B', offset, #epoch) .. epoch .. ARGV[3]
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], offset .. '-0', 'm', message)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], message)
return offset
";

/// The stream and meta keys of `topic`.
pub(super) fn keys(prefix: &str, topic: &str) -> (String, String) {
    (format!("{prefix}{{{topic}}}:h"), format!("{prefix}{{{topic}}}:m"))
}

/// What the publisher sends the script: the head of the message.
pub(super) fn head(node: u64, message: &Prepared, except: Option<SubscriberId>) -> Bytes {
    let mut head = BytesMut::with_capacity(HEAD);
    head.put_u8(VERSION);
    head.put_u8(u8::from(message.is_text()));
    head.put_u64(node);
    head.put_u64(except.map_or(0, |id| id.0));
    head.freeze()
}

/// A resumable message as read from PUB/SUB or from the history.
#[derive(Debug)]
pub(super) struct Numbered<'a> {
    pub node: u64,
    pub except: u64,
    pub offset: u64,
    pub epoch: &'a str,
    pub text: bool,
    pub payload: &'a [u8],
}

/// Decode a version-2 message, or `None` if it is not one (text that is not UTF-8 included).
pub(super) fn decode(data: &[u8]) -> Option<Numbered<'_>> {
    if data.len() < HEAD + 9 || data[0] != VERSION || data[1] & !1 != 0 {
        return None;
    }
    let word = |at: usize| u64::from_be_bytes(data[at..at + 8].try_into().expect("eight bytes"));
    let epoch_len = usize::from(data[HEAD + 8]);
    let rest = &data[HEAD + 9..];
    if rest.len() < epoch_len {
        return None;
    }
    let (epoch, payload) = rest.split_at(epoch_len);
    let text = data[1] & 1 != 0;
    if text && std::str::from_utf8(payload).is_err() {
        return None;
    }
    Some(Numbered {
        node: word(2),
        except: word(10),
        offset: word(HEAD),
        epoch: std::str::from_utf8(epoch).ok()?,
        text,
        payload,
    })
}

/// A node's place in one topic it receives: the epoch, and the last offset delivered to its
/// subscribers (0: none yet in this epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Track {
    pub epoch: Option<String>,
    pub last: u64,
}

impl Track {
    pub(super) fn position(&self) -> Option<Position> {
        self.epoch.as_ref().map(|epoch| Position::new(self.last, epoch.clone()))
    }
}

/// What to do with a live message at `offset` of `epoch`, given the node's track.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// The next one: deliver it.
    Deliver,
    /// Delivered already (a catch-up read it from the history first): skip it.
    Duplicate,
    /// Messages before it are missing: read them from the history first.
    Gap { from: u64 },
    /// The history was reset (a new epoch): what was before is gone. Read the new epoch's
    /// messages before it, if any.
    NewEpoch,
}

impl Track {
    pub(super) fn next(&self, offset: u64, epoch: &str) -> Next {
        if self.epoch.as_deref() != Some(epoch) {
            Next::NewEpoch
        } else if offset <= self.last {
            Next::Duplicate
        } else if offset == self.last + 1 {
            Next::Deliver
        } else {
            Next::Gap { from: self.last + 1 }
        }
    }
}

/// The offset in a stream entry id (`OFFSET-0`).
pub(super) fn entry_offset(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: u64, epoch: &str, payload: &[u8], text: bool) -> Vec<u8> {
        let prepared = if text {
            Prepared::text(std::str::from_utf8(payload).unwrap().to_owned())
        } else {
            Prepared::binary(payload)
        };
        let mut m = head(7, &prepared, None).to_vec();
        m.extend_from_slice(&offset.to_be_bytes());
        m.push(epoch.len() as u8);
        m.extend_from_slice(epoch.as_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn decode_reads_what_the_script_writes_and_refuses_the_rest() {
        let m = message(300, "ab12", "héllo".as_bytes(), true);
        let n = decode(&m).expect("a message");
        assert_eq!(
            (n.node, n.except, n.offset, n.epoch, n.text, n.payload),
            (7, 0, 300, "ab12", true, "héllo".as_bytes())
        );
        assert!(decode(&m[..HEAD + 8]).is_none(), "short");
        let mut v1 = m.clone();
        v1[0] = 1;
        assert!(decode(&v1).is_none(), "version 1");
        let mut long_epoch = m.clone();
        long_epoch[HEAD + 8] = 200;
        assert!(decode(&long_epoch).is_none(), "epoch longer than the message");
        let bad = message(1, "e", &[0xff], false);
        assert!(decode(&bad).is_some_and(|n| !n.text));
        let mut bad_text = bad;
        bad_text[1] = 1;
        assert!(decode(&bad_text).is_none(), "text that is not UTF-8");
    }

    #[test]
    fn a_track_delivers_in_order_and_reads_gaps() {
        let track = Track { epoch: Some("e".into()), last: 5 };
        assert_eq!(track.next(6, "e"), Next::Deliver);
        assert_eq!(track.next(5, "e"), Next::Duplicate);
        assert_eq!(track.next(1, "e"), Next::Duplicate);
        assert_eq!(track.next(9, "e"), Next::Gap { from: 6 });
        assert_eq!(track.next(6, "f"), Next::NewEpoch);
        assert_eq!(Track::default().next(1, "e"), Next::NewEpoch);
    }

    #[test]
    fn entry_ids_and_keys() {
        assert_eq!(entry_offset("42-0"), Some(42));
        assert_eq!(entry_offset("42-1"), None);
        assert_eq!(keys("wsx:", "a:b"), ("wsx:{a:b}:h".to_owned(), "wsx:{a:b}:m".to_owned()));
    }
}
