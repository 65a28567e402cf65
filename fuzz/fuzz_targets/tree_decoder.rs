//! A body's tree (`meshcast_proto::tree`) fed in arbitrary pieces, mostly
//! genuine with bytes flipped, sometimes garbage: never a panic, never more
//! than one group buffered, and every group handed on is the true body's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcast_proto::tree::{Decoder, GROUP_BYTES, Item, Outboard, encoded_len};

fuzz_target!(|data: &[u8]| {
    let [a, b, cut, flips @ ..] = data else {
        return;
    };
    // A body of up to 64 KiB + 1 (up to five groups), the same bytes each time.
    let length = usize::from(u16::from_le_bytes([*a, *b])) + usize::from(*cut & 1);
    let body: Vec<u8> = (0..length).map(|i| (i * 31 % 251) as u8).collect();
    let outboard = Outboard::new(&body);
    let Ok(mut wire) = outboard.encode(&body) else {
        return;
    };
    assert_eq!(wire.len() as u64, encoded_len(length as u64));
    // Each pair of bytes flips one bit somewhere in the encoding.
    for flip in flips.chunks_exact(2) {
        if !wire.is_empty() {
            let at = usize::from(u16::from_le_bytes([flip[0], flip[1]])) % wire.len();
            wire[at] ^= 1 << (flip[1] % 8);
        }
    }
    let mut decoder = Decoder::new(outboard.root, length as u64);
    let piece = usize::from(*cut).max(1);
    for chunk in wire.chunks(piece) {
        let result = decoder.push(chunk, |item| {
            if let Item::Group { offset, data } = item {
                assert!(data.len() as u64 <= GROUP_BYTES);
                let start = offset as usize;
                assert_eq!(
                    data,
                    &body[start..start + data.len()],
                    "a forged group went through"
                );
            }
        });
        if result.is_err() {
            return;
        }
    }
    if decoder.push(&[], |_| {}).is_ok() && flips.len() < 2 {
        assert!(decoder.is_complete(), "a genuine encoding did not complete");
    }
});
