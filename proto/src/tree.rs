//! Verified streaming of segment bodies: BLAKE3's tree, in chunk groups.
//!
//! BLAKE3 is a tree hash: the hash a publisher signs in a segment header,
//! `blake3::hash(body)`, is also the root of a binary tree over the body's
//! 1 KiB chunks. A body travels *encoded*: in pre-order, every parent node's
//! two child hashes (64 bytes) before its two subtrees, and the body itself
//! as leaves of [`GROUP_BYTES`] (bao-tree's format with 16 KiB chunk groups;
//! no length prefix, since the signed header carries the length). A receiver
//! that holds only the root and the length checks each parent pair against
//! the hash above it and each group against its pair's half, as they arrive
//! ([`Decoder`]): a forged byte is caught at the group it is in, before any
//! of it is used, and every group passed on has been verified — so a node can
//! forward a segment group by group while the rest still arrives
//! (cut-through), byte for byte the encoding it received.
//!
//! The cost: the parent pairs, 64 bytes per group beyond the first (0.4 % of
//! a body; 3,904 bytes for 1 MB). They are a body's *outboard* ([`Outboard`]),
//! which a holder keeps beside the body to encode it again.
//!
//! Why 16 KiB groups: a hop forwards only whole verified groups, so the group
//! is the unit of cut-through delay (13 ms on a 10 Mbit/s uplink), against
//! 0.4 % of overhead; 64 KiB would cost 0.1 % and 52 ms per hop.

use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkRanges};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Chunks of 1 KiB per group, as a power of two.
pub const GROUP_CHUNK_LOG: u8 = 4;
/// Body bytes per group: the leaves of the tree, the unit verified and
/// forwarded. Every group but a body's last is this long.
pub const GROUP_BYTES: u64 = 1024 << GROUP_CHUNK_LOG;
const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(GROUP_CHUNK_LOG);
/// A parent node on the wire: its left and right child's hash.
pub const PAIR_BYTES: usize = 64;

/// Bytes of the outboard (all parent pairs) of a body of `length` bytes.
pub fn outboard_len(length: u64) -> u64 {
    BaoTree::new(length, BLOCK_SIZE).outboard_size()
}

/// Bytes on the wire for a body of `length` bytes: the body and its outboard.
pub fn encoded_len(length: u64) -> u64 {
    length + outboard_len(length)
}

/// Where body byte `offset` of a body of `length` bytes sits in its encoding
/// (`None` past the end).
pub fn wire_offset(length: u64, offset: u64) -> Option<u64> {
    let mut wire = 0;
    for item in items(length) {
        match item {
            BaoChunk::Parent { .. } => wire += PAIR_BYTES as u64,
            BaoChunk::Leaf {
                start_chunk, size, ..
            } => {
                let start = start_chunk.to_bytes();
                if offset < start + size as u64 {
                    return Some(wire + offset - start);
                }
                wire += size as u64;
            }
        }
    }
    None
}

/// `body` encoded with the byte in its middle flipped and every hash true:
/// what a forger mid-segment sends, for fault injection in tests and
/// benchmarks.
#[doc(hidden)]
pub fn forge_middle(outboard: &Outboard, body: &[u8]) -> Result<Vec<u8>, TreeError> {
    let mut wire = outboard.encode(body)?;
    let middle = body.len() as u64 / 2;
    if let Some(byte) =
        wire_offset(outboard.length, middle).and_then(|at| wire.get_mut(at as usize))
    {
        *byte ^= 0x01;
    }
    Ok(wire)
}

/// The root of `body`'s tree: `blake3::hash(body)`, whatever the group size.
pub fn root(body: &[u8]) -> [u8; 32] {
    *blake3::hash(body).as_bytes()
}

/// A body's parent pairs in pre-order, and its root: what a holder keeps to
/// send the body encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    pub root: [u8; 32],
    pub length: u64,
    pairs: Vec<u8>,
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboard")
            .field("root", &hex::encode(self.root))
            .field("length", &self.length)
            .field("pairs", &(self.pairs.len() / PAIR_BYTES))
            .finish()
    }
}

/// Why an outboard or an encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("an outboard for {length} bytes is {expected} bytes long, not {got}")]
    OutboardLength {
        length: u64,
        expected: u64,
        got: u64,
    },
    #[error("the body is {got} bytes, the outboard is for {expected}")]
    BodyLength { expected: u64, got: u64 },
    #[error("the hashes above {offset} bytes into the body do not match (a forged parent)")]
    Parent { offset: u64 },
    #[error(
        "the group at {offset} bytes into the body does not match its hash (forged or damaged)"
    )]
    Group { offset: u64 },
    #[error("bytes past the end of the encoded body")]
    TooLong,
    #[error("an earlier part of this body failed verification")]
    Failed,
}

impl Outboard {
    /// Computes `body`'s outboard (hashes it once).
    pub fn new(body: &[u8]) -> Self {
        let outboard = bao_tree::io::outboard::PreOrderMemOutboard::create(body, BLOCK_SIZE);
        Self {
            root: *outboard.root.as_bytes(),
            length: body.len() as u64,
            pairs: outboard.data,
        }
    }

    /// An outboard kept earlier ([`Self::as_bytes`]), for a body of `length`
    /// bytes with root `root`; checked for size only (encoding checks each
    /// pair against the body again only in debug builds: keep it beside a
    /// body you verified).
    pub fn from_parts(root: [u8; 32], length: u64, pairs: Vec<u8>) -> Result<Self, TreeError> {
        let expected = outboard_len(length);
        if pairs.len() as u64 != expected {
            return Err(TreeError::OutboardLength {
                length,
                expected,
                got: pairs.len() as u64,
            });
        }
        Ok(Self {
            root,
            length,
            pairs,
        })
    }

    /// The parent pairs in pre-order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pairs
    }

    /// `body` encoded for the wire: parent pairs and groups in pre-order.
    /// `body` must be the body this outboard was made for.
    pub fn encode(&self, body: &[u8]) -> Result<Vec<u8>, TreeError> {
        let mut out = Vec::with_capacity(encoded_len(self.length) as usize);
        for piece in self.pieces(body)? {
            out.extend_from_slice(piece.wire());
        }
        Ok(out)
    }

    /// The encoding of `body` as slices of the outboard and of the body, in
    /// wire order, to write without copying. `body` must be the body this
    /// outboard was made for (of its length: checked).
    pub fn pieces<'a>(
        &'a self,
        body: &'a [u8],
    ) -> Result<impl Iterator<Item = Item<'a>> + 'a, TreeError> {
        if body.len() as u64 != self.length {
            return Err(TreeError::BodyLength {
                expected: self.length,
                got: body.len() as u64,
            });
        }
        // new() and from_parts() made the pairs exactly as many as the
        // tree's parents, so the zip ends with the items.
        let mut pairs = self.pairs.chunks_exact(PAIR_BYTES);
        Ok(items(self.length).map_while(move |item| match item {
            BaoChunk::Parent { .. } => pairs.next()?.try_into().ok().map(Item::Parent),
            BaoChunk::Leaf {
                start_chunk, size, ..
            } => {
                let start = start_chunk.to_bytes() as usize;
                Some(Item::Group {
                    offset: start as u64,
                    data: body.get(start..start + size)?,
                })
            }
        }))
    }
}

/// The items of a body's encoding, in wire order.
fn items(length: u64) -> bao_tree::iter::ResponseIter {
    bao_tree::iter::ResponseIter::new(BaoTree::new(length, BLOCK_SIZE), ChunkRanges::all())
}

/// A verified item of an encoded body, as [`Decoder::push`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A parent node's pair of child hashes: forward it as is; kept in
    /// order, the pairs are the body's outboard.
    Parent(&'a [u8; PAIR_BYTES]),
    /// Body bytes `offset..offset + data.len()`, verified.
    Group { offset: u64, data: &'a [u8] },
}

impl<'a> Item<'a> {
    /// The item's bytes on the wire.
    pub fn wire(self) -> &'a [u8] {
        match self {
            Item::Parent(pair) => &pair[..],
            Item::Group { data, .. } => data,
        }
    }
}

/// Verifies an encoded body as its bytes arrive, in any pieces, against the
/// root and length of a verified header; sans-I/O. It buffers at most one
/// group; the first bad parent or group fails it for good.
pub struct Decoder {
    items: bao_tree::iter::ResponseIter,
    /// The item being received, and its bytes so far.
    current: Option<BaoChunk>,
    buf: Vec<u8>,
    /// Hashes still to be matched, the next one on top.
    stack: Vec<blake3::Hash>,
    /// Bytes taken so far, of `encoded_len(length)`.
    received: u64,
    length: u64,
    failed: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("length", &self.length)
            .field("received", &self.received)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for the body of `length` bytes whose root (signed hash) is
    /// `root`.
    pub fn new(root: [u8; 32], length: u64) -> Self {
        let mut items = items(length);
        let current = items.next();
        Self {
            items,
            current,
            buf: Vec::new(),
            stack: vec![blake3::Hash::from_bytes(root)],
            received: 0,
            length,
            failed: false,
        }
    }

    /// Takes the next bytes of the encoding and hands every item they
    /// complete, verified, to `verified`, in order. Fails at the first
    /// parent or group that does not match, and on bytes past the end; after
    /// a failure every call fails.
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut verified: impl FnMut(Item<'_>),
    ) -> Result<(), TreeError> {
        if self.failed {
            return Err(TreeError::Failed);
        }
        loop {
            let Some(item) = self.current else {
                if input.is_empty() {
                    return Ok(());
                }
                self.failed = true;
                return Err(TreeError::TooLong);
            };
            let size = match item {
                BaoChunk::Parent { .. } => PAIR_BYTES,
                BaoChunk::Leaf { size, .. } => size,
            };
            // Whole items straight from the input; a split one through `buf`.
            let bytes: &[u8] = if self.buf.is_empty() && input.len() >= size {
                let (whole, rest) = input.split_at(size);
                input = rest;
                whole
            } else {
                let take = (size - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.buf.len() < size {
                    return Ok(());
                }
                &self.buf
            };
            if let Err(e) = check(&mut self.stack, item, bytes) {
                self.failed = true;
                return Err(e);
            }
            match item {
                BaoChunk::Parent { .. } => {
                    let pair: &[u8; PAIR_BYTES] =
                        bytes.try_into().map_err(|_| TreeError::TooLong)?;
                    verified(Item::Parent(pair));
                }
                BaoChunk::Leaf { start_chunk, .. } => verified(Item::Group {
                    offset: start_chunk.to_bytes(),
                    data: bytes,
                }),
            }
            self.received += size as u64;
            self.buf.clear();
            self.current = self.items.next();
        }
    }

    /// Whether the whole body has arrived, verified.
    pub fn is_complete(&self) -> bool {
        self.current.is_none() && !self.failed
    }

    /// Encoded bytes taken so far (of [`encoded_len`]).
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// Checks one whole item against the hash on top of `stack`, and pushes the
/// hashes its subtrees must match.
fn check(stack: &mut Vec<blake3::Hash>, item: BaoChunk, bytes: &[u8]) -> Result<(), TreeError> {
    {
        let expected = stack.pop();
        match item {
            BaoChunk::Parent {
                node,
                is_root,
                left,
                right,
                ..
            } => {
                // bao-tree's node ranges count groups.
                let offset = node.chunk_range().start.0 * GROUP_BYTES;
                let mut l: ChainingValue = [0; 32];
                let mut r: ChainingValue = [0; 32];
                l.copy_from_slice(&bytes[..32]);
                r.copy_from_slice(&bytes[32..PAIR_BYTES]);
                let actual = if is_root {
                    merge_subtrees_root(&l, &r, Mode::Hash)
                } else {
                    blake3::Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
                };
                if expected != Some(actual) {
                    return Err(TreeError::Parent { offset });
                }
                if right {
                    stack.push(blake3::Hash::from(r));
                }
                if left {
                    stack.push(blake3::Hash::from(l));
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                is_root,
                ..
            } => {
                let actual = if is_root {
                    blake3::hash(bytes)
                } else {
                    let mut hasher = blake3::Hasher::new();
                    hasher.set_input_offset(start_chunk.to_bytes());
                    hasher.update(bytes);
                    blake3::Hash::from(hasher.finalize_non_root())
                };
                if expected != Some(actual) {
                    return Err(TreeError::Group {
                        offset: start_chunk.to_bytes(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(length: usize) -> Vec<u8> {
        (0..length)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
            .collect()
    }

    /// Lengths around every boundary: empty, a chunk, a group, a few groups,
    /// and not a power of two.
    const LENGTHS: &[usize] = &[
        0, 1, 1023, 1024, 1025, 16_383, 16_384, 16_385, 32_768, 49_152, 65_537, 100_000, 1_000_000,
    ];

    /// Decodes `wire` fed in pieces of `piece` bytes; the verified body and
    /// the parent pairs seen.
    fn decode(
        root: [u8; 32],
        length: u64,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), TreeError> {
        let mut decoder = Decoder::new(root, length);
        let (mut body, mut pairs, mut forwarded) = (Vec::new(), Vec::new(), Vec::new());
        for part in wire.chunks(piece.max(1)) {
            decoder.push(part, |item| {
                forwarded.extend_from_slice(item.wire());
                match item {
                    Item::Parent(pair) => pairs.extend_from_slice(pair),
                    Item::Group { offset, data } => {
                        assert_eq!(offset, body.len() as u64, "groups arrive in order");
                        body.extend_from_slice(data);
                    }
                }
            })?;
        }
        decoder.push(&[], |_| {})?;
        assert!(
            decoder.is_complete(),
            "incomplete after {} bytes",
            wire.len()
        );
        // Forwarding the verified items gives the same encoding.
        assert_eq!(forwarded, wire);
        Ok((body, pairs))
    }

    #[test]
    fn the_trees_root_is_the_hash_the_header_signs() {
        for &length in LENGTHS {
            let body = body(length);
            let outboard = Outboard::new(&body);
            assert_eq!(outboard.root, root(&body), "{length}");
            assert_eq!(outboard.root, *blake3::hash(&body).as_bytes(), "{length}");
            assert_eq!(
                outboard.as_bytes().len() as u64,
                outboard_len(length as u64)
            );
        }
        // 1 MB in 16 KiB groups: 62 groups, 61 pairs.
        assert_eq!(outboard_len(1_000_000), 61 * 64);
    }

    #[test]
    fn an_encoded_body_decodes_whole_in_any_pieces() {
        for &length in LENGTHS {
            let body = body(length);
            let outboard = Outboard::new(&body);
            let wire = outboard.encode(&body).expect("encodes");
            assert_eq!(wire.len() as u64, encoded_len(length as u64));
            for piece in [1, 7, 64, 1000, 16_384, 16_448, usize::MAX] {
                let (decoded, pairs) =
                    decode(outboard.root, length as u64, &wire, piece).expect("decodes");
                assert_eq!(decoded, body, "{length} in pieces of {piece}");
                // The pairs received are the outboard, to keep.
                assert_eq!(pairs, outboard.as_bytes(), "{length}");
            }
        }
    }

    #[test]
    fn a_forged_byte_is_caught_at_its_group_and_nothing_after_it_is_used() {
        let body = body(200_000);
        let outboard = Outboard::new(&body);
        let wire = outboard.encode(&body).expect("encodes");
        // Flip one byte at a time across the encoding: parents and groups.
        for at in (0..wire.len()).step_by(997) {
            let mut forged = wire.clone();
            forged[at] ^= 0x40;
            let mut decoder = Decoder::new(outboard.root, body.len() as u64);
            // Wire bytes handed over, verified: the forged one never is.
            let mut handed = 0usize;
            let mut result = Ok(());
            for part in forged.chunks(4096) {
                result = decoder.push(part, |item| {
                    handed += item.wire().len();
                    assert!(handed <= at, "{at}: handed over up to {handed}");
                    if let Item::Group { offset, data } = item {
                        let end = offset as usize + data.len();
                        assert_eq!(data, &body[offset as usize..end]);
                    }
                });
                if result.is_err() {
                    break;
                }
            }
            let err = result.expect_err("a forged byte went through");
            assert!(
                matches!(err, TreeError::Group { .. } | TreeError::Parent { .. }),
                "{at}: {err}"
            );
            assert!(
                decoder.push(&[], |_| {}).is_err(),
                "a failed decoder stays failed"
            );
        }
    }

    #[test]
    fn a_body_bytes_place_on_the_wire_is_known() {
        for &length in LENGTHS {
            let body = body(length);
            let wire = Outboard::new(&body).encode(&body).expect("encodes");
            for offset in (0..length).step_by(4099).chain(length.checked_sub(1)) {
                let at = wire_offset(length as u64, offset as u64).expect("inside") as usize;
                assert_eq!(wire[at], body[offset], "{length} at {offset}");
            }
            assert_eq!(wire_offset(length as u64, length as u64), None);
        }
    }

    #[test]
    fn a_wrong_root_length_or_tail_is_refused() {
        let body = body(50_000);
        let outboard = Outboard::new(&body);
        let wire = outboard.encode(&body).expect("encodes");
        let mut other = outboard.root;
        other[0] ^= 1;
        assert!(decode(other, body.len() as u64, &wire, 4096).is_err());
        // The signed length decides the tree: another length fails.
        assert!(decode(outboard.root, body.len() as u64 - 1, &wire, 4096).is_err());
        let mut longer = wire.clone();
        longer.push(0);
        let mut decoder = Decoder::new(outboard.root, body.len() as u64);
        assert_eq!(decoder.push(&longer, |_| {}), Err(TreeError::TooLong));
        // The empty body: nothing on the wire, complete at the first push.
        let mut empty = Decoder::new(root(&[]), 0);
        assert_eq!(empty.push(&[], |_| {}), Ok(()));
        assert!(empty.is_complete());
        assert!(Decoder::new(root(b"x"), 0).push(&[], |_| {}).is_err());
        assert!(matches!(
            Outboard::from_parts(outboard.root, 50_000, vec![0; 3]),
            Err(TreeError::OutboardLength { .. })
        ));
        assert!(outboard.encode(&body[1..]).is_err());
    }

    proptest::proptest! {
        /// Garbage of any shape for a body of any length: an error or a
        /// wait for more, never a panic, and nothing verified that is not.
        #[test]
        fn garbage_never_panics(
            length in 0u64..300_000,
            pieces in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20_000), 0..6),
        ) {
            let mut decoder = Decoder::new(root(b"a real segment"), length);
            for piece in &pieces {
                let mut groups = 0;
                let result = decoder.push(piece, |item| {
                    if matches!(item, Item::Group { .. }) {
                        groups += 1;
                    }
                });
                proptest::prop_assert_eq!(groups, 0);
                if result.is_err() {
                    break;
                }
            }
        }
    }

    /// Our decoder against bao-tree's own (pull-style) one, on bao-tree's
    /// encoder: the same format.
    #[test]
    fn the_format_is_bao_trees() {
        use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
        for &length in LENGTHS {
            let body = body(length);
            let theirs = bao_tree::io::outboard::PreOrderMemOutboard::create(&body, BLOCK_SIZE);
            let mut wire = Vec::new();
            encode_ranges_validated(&body[..], &theirs, &ChunkRanges::all(), &mut wire)
                .expect("bao-tree encodes");
            let ours = Outboard::new(&body);
            assert_eq!(ours.encode(&body).expect("encodes"), wire, "{length}");
            let tree = BaoTree::new(length as u64, BLOCK_SIZE);
            let mut decoded = Vec::new();
            for item in DecodeResponseIter::new(
                theirs.root,
                tree,
                std::io::Cursor::new(&wire),
                &ChunkRanges::all(),
            ) {
                if let bao_tree::io::BaoContentItem::Leaf(leaf) = item.expect("bao-tree decodes") {
                    decoded.extend_from_slice(&leaf.data);
                }
            }
            assert_eq!(decoded, body);
        }
    }
}
