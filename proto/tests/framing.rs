//! The frame decoder: round trips, limits and garbage.

use meshcast_proto::frame::{self, Decoder, FrameError, Item, Limits};
use meshcast_proto::pb;
use proptest::prelude::*;

fn frames(dec: &mut Decoder) -> Result<Vec<Item>, FrameError> {
    let mut out = Vec::new();
    while let Some(item) = dec.next_item()? {
        out.push(item);
    }
    Ok(out)
}

fn error_msg(code: i32, text: &str) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::Error(pb::Error {
            code,
            message: text.into(),
            request_id: 0,
        })),
    }
}

#[test]
fn frame_over_the_limit_is_rejected_from_its_prefix() {
    let mut dec = Decoder::new(Limits::default());
    // A prefix claiming 64 KiB + 1, and nothing else.
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(64 * 1024 + 1, &mut prefix);
    dec.feed(&prefix);
    let err = dec.next_item().unwrap_err();
    assert_eq!(
        err,
        FrameError::FrameTooLarge {
            claimed: 65537,
            max: 65536
        }
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
}

#[test]
fn exactly_the_limit_is_accepted() {
    let limits = Limits {
        max_frame: 100,
        ..Limits::default()
    };
    let mut dec = Decoder::new(limits);
    dec.feed(&[100]);
    dec.feed(&[7; 100]);
    assert_eq!(
        frames(&mut dec).unwrap(),
        vec![Item::Frame(vec![7u8; 100].into())]
    );
}

#[test]
fn encoder_refuses_what_the_peer_would_reject() {
    let limits = Limits {
        max_frame: 16,
        ..Limits::default()
    };
    let msg = error_msg(1, "a message that does not fit in sixteen bytes");
    assert!(matches!(
        frame::encode(&msg, &limits),
        Err(FrameError::FrameTooLarge { .. })
    ));
}

#[test]
fn overlong_length_prefix_is_rejected() {
    let mut dec = Decoder::new(Limits::default());
    dec.feed(&[0xff; 11]);
    assert_eq!(dec.next_item().unwrap_err(), FrameError::BadLength);
}

#[test]
fn body_over_the_limit_is_rejected() {
    let mut dec = Decoder::new(Limits::default());
    assert_eq!(
        dec.expect_body(u64::MAX).unwrap_err(),
        FrameError::BodyTooLarge {
            claimed: u64::MAX,
            max: Limits::DEFAULT_MAX_SEGMENT
        }
    );
}

#[test]
fn truncated_streams_are_reported() {
    let mut dec = Decoder::new(Limits::default());
    dec.feed(&[10, 1, 2, 3]);
    assert_eq!(dec.next_item().unwrap(), None);
    assert_eq!(
        dec.finish().unwrap_err(),
        FrameError::Truncated {
            inside: "control frame",
            missing: 7
        }
    );

    let mut dec = Decoder::new(Limits::default());
    dec.expect_body(10).unwrap();
    dec.feed(&[1, 2, 3]);
    assert_eq!(
        frames(&mut dec).unwrap(),
        vec![Item::Body {
            chunk: vec![1, 2, 3].into(),
            last: false
        }]
    );
    assert_eq!(
        dec.finish().unwrap_err(),
        FrameError::Truncated {
            inside: "segment body",
            missing: 7
        }
    );
}

#[test]
fn empty_body_yields_one_last_chunk() {
    let mut dec = Decoder::new(Limits::default());
    dec.expect_body(0).unwrap();
    assert_eq!(
        frames(&mut dec).unwrap(),
        vec![Item::Body {
            chunk: Default::default(),
            last: true
        }]
    );
    dec.finish().unwrap();
}

#[test]
fn a_second_body_cannot_be_announced_inside_the_first() {
    let mut dec = Decoder::new(Limits::default());
    dec.expect_body(5).unwrap();
    assert_eq!(dec.expect_body(5).unwrap_err(), FrameError::BodyPending);
}

#[test]
fn garbage_frame_is_a_typed_decode_error() {
    let err = frame::decode::<pb::ClientMessage>(vec![0xff, 0xff, 0xff].into()).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Malformed {
                what: "ClientMessage",
                ..
            }
        ),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn frames_round_trip_however_the_stream_is_cut(
        texts in prop::collection::vec(".{0,300}", 1..12),
        cuts in prop::collection::vec(1usize..97, 1..40),
    ) {
        let limits = Limits::default();
        let sent: Vec<_> = texts.iter().enumerate().map(|(i, t)| error_msg(i as i32, t)).collect();
        let wire: Vec<u8> = sent.iter().flat_map(|m| frame::encode(m, &limits).unwrap()).collect();
        let mut dec = Decoder::new(limits);
        let mut got = Vec::new();
        let mut pos = 0;
        for cut in cuts.iter().cycle() {
            if pos >= wire.len() { break; }
            let end = (pos + cut).min(wire.len());
            dec.feed(&wire[pos..end]);
            pos = end;
            for item in frames(&mut dec).unwrap() {
                let Item::Frame(f) = item else { panic!("unexpected body") };
                got.push(frame::decode::<pb::ServerMessage>(f).unwrap());
            }
        }
        dec.finish().unwrap();
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let limits = Limits { max_frame: 512, max_segment: 1024 };
        let mut dec = Decoder::new(limits);
        dec.feed(&data);
        loop {
            match dec.next_item() {
                Ok(Some(Item::Frame(f))) => {
                    prop_assert!(f.len() <= 512);
                    let _ = frame::decode::<pb::MeshMessage>(f);
                }
                Ok(Some(Item::Body { .. })) => unreachable!("no body was announced"),
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(dec.buffered() <= data.len());
    }
}
