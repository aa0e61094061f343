//! The broker task's resumable mode: numbering publishes, delivering in offset order, filling
//! gaps from the history, and resuming connections from a position.

use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::{Connection, Shared, Task, channel, history, random};
use crate::pubsub::{Prepared, Resume, SubscriberId, redis::Publication};
use history::{Next, Numbered, Track};

/// History entries read per `XRANGE` (a page holds at most this many messages of up to the
/// broker's `max_message_size` each).
const PAGE: usize = 64;

impl Task {
    /// Queue the script that numbers, stores and publishes one message on `pipe`.
    pub(super) async fn numbered(
        &mut self,
        conn: &mut Connection,
        pipe: &mut redis::Pipeline,
        topic: &str,
        head: &[u8],
        payload: &[u8],
        seq: u64,
    ) -> redis::RedisResult<()> {
        let Some(shared) = self.shared.upgrade() else { return Ok(()) };
        let Some(history) = shared.history else { return Ok(()) };
        let sha = match &conn.script {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(history::PUBLISH_SCRIPT)
                    .query_async(&mut conn.publisher)
                    .await?;
                conn.script = Some(sha.clone());
                sha
            }
        };
        let (stream, meta) = history::keys(&shared.prefix, topic);
        pipe.cmd("EVALSHA")
            .arg(sha)
            .arg(2)
            .arg(stream)
            .arg(meta)
            .arg(&*channel(&shared.prefix, topic))
            .arg(head)
            .arg(payload)
            .arg(history.size)
            .arg(history.ttl.as_secs())
            .arg(format!("{:016x}", random()))
            .arg(seq)
            .arg(format!("p:{:016x}", shared.node))
            .ignore();
        Ok(())
    }

    /// Before subscribing to `topics`: where each one not known yet stands now.
    pub(super) async fn baseline(&mut self, conn: &mut Connection, topics: &[String]) -> redis::RedisResult<()> {
        let new: Vec<String> = topics.iter().filter(|t| !self.tracks.contains_key(*t)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        for (topic, (epoch, top)) in new.iter().zip(self.heads(conn, &new).await?) {
            self.tracks.insert(topic.clone(), Track { epoch, last: top.unwrap_or(0) });
        }
        Ok(())
    }

    /// The epoch and last offset of each of `topics`.
    async fn heads(
        &self,
        conn: &mut Connection,
        topics: &[String],
    ) -> redis::RedisResult<Vec<(Option<String>, Option<u64>)>> {
        let Some(shared) = self.shared.upgrade() else { return Ok(Vec::new()) };
        let mut pipe = redis::pipe();
        for topic in topics {
            pipe.cmd("HMGET").arg(history::keys(&shared.prefix, topic).1).arg("e").arg("s");
        }
        pipe.query_async(&mut conn.publisher).await
    }

    /// After subscribing to `topics`: read from the history what was published since the
    /// baseline, or since the connection went down.
    pub(super) async fn sync(&mut self, conn: &mut Connection, topics: &[String]) -> redis::RedisResult<()> {
        let Some(shared) = self.shared.upgrade() else { return Ok(()) };
        let heads = self.heads(conn, topics).await?;
        for (topic, (epoch, top)) in topics.iter().zip(heads) {
            let top = top.unwrap_or(0);
            let Some(track) = self.tracks.get(topic).cloned() else {
                self.tracks.insert(topic.clone(), Track { epoch, last: top });
                continue;
            };
            match (&track.epoch, &epoch) {
                (Some(was), Some(now)) if was == now => {
                    if top > track.last && !self.catch_up(conn, &shared, topic, track.last + 1, top).await? {
                        self.gap(&shared, topic, top, epoch);
                    }
                }
                (None, Some(_)) => {
                    // The topic had no history when this node last looked: all of it is new.
                    self.tracks.insert(topic.clone(), Track { epoch: epoch.clone(), last: 0 });
                    if top > 0 && !self.catch_up(conn, &shared, topic, 1, top).await? {
                        self.gap(&shared, topic, top, epoch);
                    }
                }
                (None, None) => {}
                // The history was lost or replaced while this node was away.
                (Some(_), _) => self.gap(&shared, topic, top, epoch),
            }
        }
        Ok(())
    }

    /// Messages of `topic` may have been lost for this node: tell its subscribers (1012, or
    /// the hub's `on_gap`) and go on from `top` of `epoch`.
    fn gap(&mut self, shared: &Shared, topic: &str, top: u64, epoch: Option<String>) {
        warn!(topic, "redis: messages lost beyond the history; resynchronizing the topic's subscribers");
        shared.stats.gaps.fetch_add(1, Ordering::Relaxed);
        self.tracks.insert(topic.to_owned(), Track { epoch, last: top });
        if let Some(remote) = &self.remote {
            remote.lost(topic);
        }
    }

    /// Read offsets `from..=to` of `topic` from its history and deliver them to every local
    /// subscriber, page by page. `false` if the history does not hold them all (nothing more
    /// is delivered from there on).
    async fn catch_up(
        &mut self,
        conn: &mut Connection,
        shared: &Shared,
        topic: &str,
        from: u64,
        to: u64,
    ) -> redis::RedisResult<bool> {
        let Some(history) = shared.history else { return Ok(false) };
        // More than the history keeps cannot all be there (it keeps at least `size`, and
        // about that many).
        if to - from >= 2 * history.size as u64 + PAGE as u64 {
            return Ok(false);
        }
        let mut next = from;
        while next <= to {
            let page = read(conn, shared, topic, next, to).await?;
            if page.is_empty() {
                return Ok(false);
            }
            for (offset, data) in &page {
                let Some(message) = history::decode(data).filter(|m| m.offset == *offset && *offset == next) else {
                    return Ok(false);
                };
                let track = self.tracks.entry(topic.to_owned()).or_default();
                track.epoch = Some(message.epoch.to_owned());
                track.last = next;
                shared.stats.recovered.fetch_add(1, Ordering::Relaxed);
                self.deliver(shared, topic, &message);
                next += 1;
            }
        }
        Ok(true)
    }

    /// A live message in resumable mode: deliver it in order, reading any it skipped from the
    /// history first.
    pub(super) async fn received_numbered(
        &mut self,
        conn: &mut Connection,
        shared: &Shared,
        topic: &str,
        data: &[u8],
    ) -> redis::RedisResult<()> {
        let Some(message) = history::decode(data) else {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(topic, len = data.len(), "redis: dropped a message not in wsx's resumable format");
            return Ok(());
        };
        // Not tracked: a topic this node has just left.
        let Some(track) = self.tracks.get_mut(topic) else { return Ok(()) };
        match track.next(message.offset, message.epoch) {
            Next::Duplicate => return Ok(()),
            Next::Deliver => {
                // The common case: no allocation.
                track.last = message.offset;
                self.deliver(shared, topic, &message);
                return Ok(());
            }
            Next::Gap { from } => {
                if !self.catch_up(conn, shared, topic, from, message.offset - 1).await? {
                    self.gap(shared, topic, message.offset - 1, Some(message.epoch.to_owned()));
                }
            }
            Next::NewEpoch => {
                // The history was reset while this node was connected, so it has every message
                // of the old one; the new one's before this are read.
                self.tracks.insert(topic.to_owned(), Track { epoch: Some(message.epoch.to_owned()), last: 0 });
                if message.offset > 1 && !self.catch_up(conn, shared, topic, 1, message.offset - 1).await? {
                    self.gap(shared, topic, message.offset - 1, Some(message.epoch.to_owned()));
                }
            }
        }
        let track = self.tracks.entry(topic.to_owned()).or_default();
        if track.epoch.as_deref() == Some(message.epoch) && message.offset <= track.last {
            return Ok(());
        }
        *track = Track { epoch: Some(message.epoch.to_owned()), last: message.offset };
        self.deliver(shared, topic, &message);
        Ok(())
    }

    /// Deliver a numbered message to every local subscriber (but the one it was not for).
    fn deliver(&self, shared: &Shared, topic: &str, message: &Numbered<'_>) {
        let Some(remote) = &self.remote else { return };
        let except = (message.node == shared.node && message.except != 0).then_some(SubscriberId(message.except));
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        remote.deliver_except(topic, &envelope(shared, topic, message), except);
    }

    /// A connection resumes `request.topic()` from `request.since()`: give it the messages it
    /// missed, then join it to the live ones. Runs between live deliveries, so none is missed
    /// or doubled.
    pub(super) async fn resume(&mut self, conn: &mut Connection, request: Resume) -> redis::RedisResult<()> {
        let Some(shared) = self.shared.upgrade() else { return Ok(()) };
        let topic = request.topic().to_owned();
        if !request.is_wanted() {
            request.join(None, false);
            return Ok(());
        }
        if !self.subscribed.contains(&topic) {
            self.subscribe(conn, vec![topic.clone()]).await?;
        }
        let since = request.since().clone();
        let mut track = self.tracks.get(&topic).cloned().unwrap_or_default();
        if track.epoch.as_deref() != Some(since.epoch.as_str()) {
            request.join(track.position(), false);
            return Ok(());
        }
        if since.offset > track.last {
            // The client saw more than this node has delivered yet: catch the node up first.
            let (_, meta) = history::keys(&shared.prefix, &topic);
            let top: Option<u64> = redis::cmd("HGET").arg(meta).arg("s").query_async(&mut conn.publisher).await?;
            let top = top.unwrap_or(0);
            if top > track.last && !self.catch_up(conn, &shared, &topic, track.last + 1, top).await? {
                self.gap(&shared, &topic, top, track.epoch.clone());
            }
            track = self.tracks.get(&topic).cloned().unwrap_or_default();
            if since.offset > track.last || track.epoch.as_deref() != Some(since.epoch.as_str()) {
                request.join(track.position(), false);
                return Ok(());
            }
        }
        // The missed messages, all of them or none: they must fit in the subscriber's queue.
        let mut missed = Vec::new();
        let mut bytes = 0;
        let mut next = since.offset + 1;
        let mut complete = true;
        while next <= track.last {
            let page = read(conn, &shared, &topic, next, track.last).await?;
            let mut progressed = false;
            for (offset, data) in &page {
                let Some(message) = history::decode(data).filter(|m| m.offset == *offset && *offset == next) else {
                    break;
                };
                let prepared = envelope(&shared, &topic, &message);
                bytes += prepared.frame().len();
                if !request.fits(bytes) {
                    break;
                }
                missed.push(prepared);
                next += 1;
                progressed = true;
            }
            if !progressed || !request.fits(bytes) {
                complete = false;
                break;
            }
        }
        if !complete || next != track.last + 1 {
            request.join(track.position(), false);
            return Ok(());
        }
        for message in &missed {
            request.deliver(message);
        }
        request.join(track.position(), true);
        Ok(())
    }
}

/// The frame subscribers receive for `message`.
fn envelope(shared: &Shared, topic: &str, message: &Numbered<'_>) -> Prepared {
    let publication = Publication {
        topic,
        offset: message.offset,
        epoch: message.epoch,
        text: message.text,
        payload: message.payload,
    };
    (shared.envelope)(&publication)
}

/// Up to a page of `topic`'s history from offset `from` to `to`: (offset, message) pairs.
async fn read(
    conn: &mut Connection,
    shared: &Shared,
    topic: &str,
    from: u64,
    to: u64,
) -> redis::RedisResult<Vec<(u64, Vec<u8>)>> {
    let (stream, _) = history::keys(&shared.prefix, topic);
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("{from}-0"))
        .arg(format!("{to}-0"))
        .arg("COUNT")
        .arg(PAGE)
        .query_async(&mut conn.publisher)
        .await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let offset = history::entry_offset(&id)?;
            // Fields come as name, value: the one field is `m`.
            (fields.len() == 2 && fields[0] == b"m").then(|| (offset, fields.swap_remove(1)))
        })
        .collect())
}
