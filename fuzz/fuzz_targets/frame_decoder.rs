//! Arbitrary bytes, fed in arbitrary pieces, through the frame decoder and the
//! message decoders: never a panic, never a frame over the limit, never more
//! buffered than was fed. The same bytes as one WebSocket message of the
//! viewer protocol (`mux`): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshcast_proto::frame::{self, Decoder, Item, Limits};
use meshcast_proto::pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(meshcast_proto::mux::Message::Data { bytes, .. }) = meshcast_proto::mux::decode(data)
    {
        assert!(bytes.len() < data.len());
    }
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_frame: 4096,
        max_segment: 8192,
    };
    let mut dec = Decoder::new(limits);
    let piece = usize::from(cut).max(1);
    let mut fed = 0;
    for chunk in data.chunks(piece) {
        dec.feed(chunk);
        fed += chunk.len();
        loop {
            match dec.next_item() {
                Ok(Some(Item::Frame(f))) => {
                    assert!(f.len() <= limits.max_frame);
                    let _ = frame::decode::<pb::ClientMessage>(f.clone());
                    let _ = frame::decode::<pb::ServerMessage>(f.clone());
                    if let Ok(msg) = frame::decode::<pb::MeshMessage>(f) {
                        // A Deliver announces a body, as a real peer's stream would.
                        if let Some(pb::mesh_message::Body::Deliver(d)) = msg.body {
                            let length = d.header.map_or(0, |h| h.length);
                            if dec.expect_body(length).is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(Some(Item::Body { chunk, .. })) => assert!(chunk.len() <= fed),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(dec.buffered() <= fed);
    }
    let _ = dec.finish();
});
