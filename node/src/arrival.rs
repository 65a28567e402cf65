//! A segment's body while it arrives, so that pushes can forward it as it
//! comes (cut-through).
//!
//! The download reading a body writes each verified piece of its encoding
//! (parent hashes and 16 KiB groups, exactly as they will go on the wire)
//! through a [`Feed`]; pushes of the same segment read them with a
//! [`Reader`], waiting for more until the feed completes. The encoding of a
//! body is the same whoever makes it, so forwarding the verified pieces sends
//! the bytes a push of the whole body would: the receiver verifies them as
//! it would any other. Nothing unverified is ever appended.
//!
//! A download that fails (or is dropped mid-body) fails the arrival, and
//! every push reading it ends early: its receiver sees a stream that ends
//! inside a body, which is never held against anyone. A download superseded
//! by another that delivered first ([`Arrival::complete_from`]) completes it
//! from the held body instead.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use meshcast_proto::VerifiedHeader;
use meshcast_proto::tree::{self, Outboard};
use tokio::sync::{mpsc, watch};

use crate::mesh::scheduler::TransferId;

/// How an arrival ended, if it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Arriving,
    Complete,
    Failed(String),
}

/// A segment's verified encoding so far; see the module docs.
#[derive(Debug)]
pub struct Arrival {
    header: VerifiedHeader,
    pieces: Mutex<Pieces>,
    state: watch::Sender<(usize, End)>,
}

#[derive(Debug, Default)]
struct Pieces {
    list: Vec<Bytes>,
    /// Bytes of the encoding in `list`.
    wire: u64,
    /// No more pieces: set under the same lock as appends, so that the
    /// download's feed (on its own task) and `complete_from` (on the
    /// driver) never both append after the same prefix.
    closed: bool,
}

impl Arrival {
    pub fn new(header: VerifiedHeader) -> Arc<Self> {
        Arc::new(Self {
            header,
            pieces: Mutex::new(Pieces::default()),
            state: watch::Sender::new((0, End::Arriving)),
        })
    }

    pub fn header(&self) -> &VerifiedHeader {
        &self.header
    }

    /// Bytes of the body's encoding ([`tree::encoded_len`]).
    pub fn encoded_len(&self) -> u64 {
        tree::encoded_len(self.header.info().length)
    }

    fn pieces(&self) -> MutexGuard<'_, Pieces> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends verified bytes of the encoding (ignored once ended).
    fn append(&self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let count = {
            let mut pieces = self.pieces();
            if pieces.closed {
                return;
            }
            pieces.wire += piece.len() as u64;
            pieces.list.push(piece);
            pieces.list.len()
        };
        self.state.send_modify(|s| s.0 = count.max(s.0));
    }

    /// Ends the arrival (the first end counts): no piece is appended after.
    fn end(&self, end: End) {
        let count = {
            let mut pieces = self.pieces();
            if pieces.closed {
                return;
            }
            pieces.closed = true;
            pieces.list.len()
        };
        self.state.send_modify(|s| {
            s.0 = count;
            s.1 = end;
        });
    }

    /// The segment is held whole (another download delivered it first):
    /// appends the rest of its encoding and completes. Any `body` that is not
    /// the one the header signs fails the arrival instead.
    pub fn complete_from(&self, body: &[u8]) {
        if self.pieces().closed {
            return;
        }
        let outboard = Outboard::new(body);
        if outboard.root != self.header.info().hash
            || body.len() as u64 != self.header.info().length
        {
            self.end(End::Failed("a body other than the signed one".into()));
            return;
        }
        let count = {
            // Under one lock: the feed may still be appending.
            let mut pieces = self.pieces();
            if pieces.closed {
                return;
            }
            let sent = pieces.wire;
            let mut rest = Vec::new();
            let mut at = 0u64;
            if let Ok(items) = outboard.pieces(body) {
                for piece in items.map(tree::Item::wire) {
                    let end = at + piece.len() as u64;
                    if end > sent {
                        let skip = usize::try_from(sent.saturating_sub(at)).unwrap_or(0);
                        rest.extend_from_slice(&piece[skip.min(piece.len())..]);
                    }
                    at = end;
                }
            }
            if !rest.is_empty() {
                pieces.wire += rest.len() as u64;
                pieces.list.push(Bytes::from(rest));
            }
            pieces.closed = true;
            pieces.list.len()
        };
        self.state.send_modify(|s| {
            s.0 = count;
            s.1 = End::Complete;
        });
    }

    /// A reader from the first piece.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader {
            arrival: self.clone(),
            state: self.state.subscribe(),
            next: 0,
        }
    }
}

/// What a [`Feed`] tells the node the first time it has verified bytes: the
/// segment is arriving through `transfer`, and can be forwarded.
#[derive(Debug)]
pub struct Arrived {
    pub transfer: TransferId,
    pub arrival: Arc<Arrival>,
}

/// Where a download says that its body has started to arrive.
#[derive(Debug, Clone)]
pub struct Announcer {
    pub transfer: TransferId,
    pub tx: mpsc::Sender<Arrived>,
}

/// The writing end of an [`Arrival`], owned by the download. Dropped before
/// [`Feed::complete`], it fails the arrival.
#[derive(Debug)]
pub struct Feed {
    arrival: Arc<Arrival>,
    announcer: Option<Announcer>,
}

impl Feed {
    pub fn new(header: VerifiedHeader, announcer: Announcer) -> Self {
        Self {
            arrival: Arrival::new(header),
            announcer: Some(announcer),
        }
    }

    /// Appends verified bytes of the encoding; the first time, tells the
    /// node (without waiting: should its queue be full, this segment is
    /// simply not forwarded before it is held).
    pub fn append(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.arrival.append(piece);
        if let Some(announcer) = self.announcer.take() {
            let _ = announcer.tx.try_send(Arrived {
                transfer: announcer.transfer,
                arrival: self.arrival.clone(),
            });
        }
    }

    /// The whole body arrived and verified.
    pub fn complete(self) {
        self.arrival.end(End::Complete);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.arrival
            .end(End::Failed("the upstream transfer failed".into()));
    }
}

/// Reads an [`Arrival`]'s pieces in order, waiting for more.
#[derive(Debug)]
pub struct Reader {
    arrival: Arc<Arrival>,
    state: watch::Receiver<(usize, End)>,
    next: usize,
}

impl Reader {
    /// The pieces appended since the last call, waiting until there are
    /// some; `Ok(None)` once all are read and the arrival is complete,
    /// `Err` with the reason if it failed.
    pub async fn next(&mut self) -> Result<Option<Vec<Bytes>>, String> {
        loop {
            let (count, end) = self.state.borrow_and_update().clone();
            if let End::Failed(reason) = end {
                return Err(reason);
            }
            if count > self.next {
                let pieces = self.arrival.pieces().list[self.next..count].to_vec();
                self.next = count;
                return Ok(Some(pieces));
            }
            if end == End::Complete {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                return Err("the arrival was dropped".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::{PublisherKey, SegmentId, SegmentInfo, StreamKey};

    fn header(body: &[u8]) -> VerifiedHeader {
        let key = PublisherKey::from_seed([3; 32]);
        let stream = StreamKey::new(key.public(), "arrival");
        let id = SegmentId::media(stream.id, 0, 1);
        SegmentInfo::for_body(id, body, 2_000_000, 1)
            .sign(&key)
            .verify(&stream)
            .expect("verifies")
    }

    fn encoding(body: &[u8]) -> Vec<u8> {
        let outboard = Outboard::new(body);
        outboard
            .pieces(body)
            .expect("pieces")
            .flat_map(|p| p.wire().to_vec())
            .collect()
    }

    fn announcer_pair() -> (Announcer, mpsc::Receiver<Arrived>) {
        let (tx, rx) = mpsc::channel(4);
        (Announcer { transfer: 7, tx }, rx)
    }

    async fn read_all(mut reader: Reader) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(pieces) = reader.next().await? {
            for piece in pieces {
                out.extend_from_slice(&piece);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_reader_gets_every_piece_then_the_end_and_the_node_hears_once() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let wire = encoding(&body);
        let (announcer, mut arrived) = announcer_pair();
        let mut feed = Feed::new(header(&body), announcer);
        let reader = feed.arrival.reader();
        let reading = tokio::spawn(read_all(reader));
        for piece in wire.chunks(7_000) {
            feed.append(Bytes::copy_from_slice(piece));
            tokio::task::yield_now().await;
        }
        feed.complete();
        assert_eq!(reading.await.expect("task"), Ok(wire));
        let told = arrived.try_recv().expect("told once");
        assert_eq!(told.transfer, 7);
        assert!(arrived.try_recv().is_err(), "told more than once");
    }

    /// The feed appends on its download's task while the driver completes
    /// from the held body: whichever wins, readers get the encoding exactly
    /// once (a byte twice would be a forgery to the next hop, and an
    /// honest node banned: one lab run saw such a ban before the two took
    /// one lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_racing_complete_from_never_duplicates_a_byte() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let wire = encoding(&body);
        for round in 0..50 {
            let (announcer, _arrived) = announcer_pair();
            let mut feed = Feed::new(header(&body), announcer);
            let arrival = feed.arrival.clone();
            let chunks: Vec<Bytes> = wire.chunks(4_096).map(Bytes::copy_from_slice).collect();
            let feeding = std::thread::spawn(move || {
                for chunk in chunks {
                    feed.append(chunk);
                }
                feed.complete();
            });
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            arrival.complete_from(&body);
            feeding.join().expect("the feeding thread");
            let got = read_all(arrival.reader()).await;
            assert!(
                got.as_ref() == Ok(&wire),
                "round {round}: {:?} bytes, not the {} of the encoding",
                got.map(|g| g.len()),
                wire.len()
            );
        }
    }

    #[tokio::test]
    async fn a_dropped_feed_fails_its_readers() {
        let body = vec![9u8; 50_000];
        let (announcer, _arrived) = announcer_pair();
        let mut feed = Feed::new(header(&body), announcer);
        let reader = feed.arrival.reader();
        feed.append(Bytes::copy_from_slice(&encoding(&body)[..1000]));
        drop(feed);
        let error = read_all(reader).await.expect_err("fails");
        assert!(error.contains("upstream"), "{error}");
    }

    #[tokio::test]
    async fn a_superseded_arrival_is_completed_from_the_held_body() {
        let body: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let wire = encoding(&body);
        let (announcer, _arrived) = announcer_pair();
        let mut feed = Feed::new(header(&body), announcer);
        let arrival = feed.arrival.clone();
        // Cut mid-piece: the rest must join up byte for byte.
        feed.append(Bytes::copy_from_slice(&wire[..20_001]));
        arrival.complete_from(&body);
        drop(feed);
        assert_eq!(read_all(arrival.reader()).await, Ok(wire));

        let (announcer, _arrived) = announcer_pair();
        let feed = Feed::new(header(&body), announcer);
        let mut other = body.clone();
        other[5] ^= 1;
        feed.arrival.complete_from(&other);
        assert!(read_all(feed.arrival.reader()).await.is_err());
    }
}
