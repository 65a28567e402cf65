//! Arbitrary bytes as a segment header and body: decoding and verification
//! never panic, and nothing but the genuine header verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcast_proto::{
    PublisherKey, SegmentId, SegmentInfo, SignedDescriptor, SignedHeader, StreamKey, pb,
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let key = PublisherKey::from_seed([1; 32]);
    let stream = StreamKey::new(key.public(), "fuzz");
    let genuine =
        SegmentInfo::for_body(SegmentId::media(stream.id, 0, 1), b"body", 1, 1).sign(&key);

    let split = data.len() / 2;
    let (header_bytes, body) = data.split_at(split);
    if let Ok(msg) = pb::SegmentHeader::decode(header_bytes) {
        if let Ok(header) = SignedHeader::from_pb(&msg) {
            if let Ok(verified) = header.verify(&stream) {
                assert_eq!(verified.signed(), &genuine, "a forged header verified");
                let _ = verified.verify_body(body, 1 << 20);
            }
        }
    }
    if let Ok(msg) = pb::StreamDescriptor::decode(data) {
        if let Ok(descriptor) = SignedDescriptor::from_pb(&msg) {
            let _ = descriptor.verify_for(&stream.id);
        }
    }
});
