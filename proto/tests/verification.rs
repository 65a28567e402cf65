//! Every way a segment or descriptor can be forged or damaged is rejected with
//! a typed error.

mod common;

use common::*;
use meshcast_proto::frame::{self, Limits};
use meshcast_proto::{BodyError, DecodeError, SignedDescriptor, SignedHeader, VerifyError, pb};
use proptest::prelude::*;

const MAX: u64 = Limits::DEFAULT_MAX_SEGMENT;

#[test]
fn genuine_segment_verifies() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(100_000, 7);
    let h = header(&k, &s, 42, &b).verify(&s).expect("genuine header");
    h.verify_body(&b, MAX).expect("genuine body");
    assert_eq!(h.id().sequence, 42);
}

#[test]
fn header_signed_by_another_key_is_rejected() {
    let publisher = key(1);
    let attacker = key(2);
    let s = stream(&publisher, "live");
    let b = body(1000, 0);
    // The attacker signs a header naming the publisher's stream.
    let forged = header(&attacker, &s, 1, &b);
    let err = forged.verify(&s).unwrap_err();
    assert_eq!(
        err,
        VerifyError::BadSignature {
            what: "segment header"
        }
    );
    assert!(err.to_string().contains("invalid signature"), "{err}");
}

#[test]
fn altered_header_field_is_rejected() {
    let k = key(1);
    let s = stream(&k, "live");
    let mut h = header(&k, &s, 1, &body(1000, 0));
    h.info.id.sequence += 1;
    assert!(matches!(
        h.verify(&s),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn header_replayed_under_another_stream_is_rejected() {
    let k = key(1);
    let a = stream(&k, "channel-a");
    let b = stream(&k, "channel-b");
    let seg = body(1000, 0);
    let h = header(&k, &a, 5, &seg);

    // Delivered as-is where stream B is expected.
    let err = h.verify(&b).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongStream { expected, got, .. } if expected == b.id && got == a.id)
    );
    assert!(err.to_string().contains("belongs to stream"), "{err}");

    // Rewritten to name stream B: the signature no longer matches.
    let mut replayed = h;
    replayed.info.id.stream = b.id;
    assert_eq!(
        replayed.verify(&b).unwrap_err(),
        VerifyError::BadSignature {
            what: "segment header"
        }
    );
}

#[test]
fn body_with_flipped_bit_is_rejected() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(4096, 3);
    let h = header(&k, &s, 1, &b).verify(&s).unwrap();
    let mut bad = b.clone();
    bad[1234] ^= 0x10;
    let err = h.verify_body(&bad, MAX).unwrap_err();
    assert!(matches!(err, BodyError::HashMismatch { .. }));
    assert!(err.to_string().contains("BLAKE3"), "{err}");
}

#[test]
fn short_body_is_rejected() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(4096, 3);
    let h = header(&k, &s, 1, &b).verify(&s).unwrap();
    let err = h.verify_body(&b[..4095], MAX).unwrap_err();
    assert_eq!(
        err,
        BodyError::TooShort {
            declared: 4096,
            received: 4095
        }
    );
}

#[test]
fn long_body_is_rejected_the_moment_it_overflows() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(4096, 3);
    let h = header(&k, &s, 1, &b).verify(&s).unwrap();
    let mut v = h.body_verifier(MAX).unwrap();
    v.update(&b[..4000]).unwrap();
    v.update(&b[4000..]).unwrap();
    assert_eq!(v.remaining(), 0);
    // One byte more than declared fails at once, before any end-of-stream.
    assert_eq!(
        v.update(&[0]).unwrap_err(),
        BodyError::TooLong {
            declared: 4096,
            received: 4097
        }
    );
}

#[test]
fn oversized_declared_body_is_rejected_before_reading() {
    let k = key(1);
    let s = stream(&k, "live");
    let mut info = meshcast_proto::SegmentInfo::for_body(
        meshcast_proto::SegmentId::media(s.id, 0, 1),
        &[],
        0,
        0,
    );
    info.length = MAX + 1;
    let h = info.sign(&k).verify(&s).unwrap();
    assert_eq!(
        h.body_verifier(MAX).unwrap_err(),
        BodyError::TooLarge {
            declared: MAX + 1,
            max: MAX
        }
    );
}

#[test]
fn header_with_malformed_fields_is_rejected_on_decode() {
    let k = key(1);
    let s = stream(&k, "live");
    let mut msg = header(&k, &s, 1, &body(10, 0)).to_pb();
    msg.signature.truncate(10);
    assert_eq!(
        SignedHeader::from_pb(&msg).unwrap_err(),
        DecodeError::FieldLength {
            field: "signature",
            expected: 64,
            got: 10
        }
    );
    let mut msg = header(&k, &s, 1, &body(10, 0)).to_pb();
    msg.kind = 9;
    assert_eq!(
        SignedHeader::from_pb(&msg).unwrap_err(),
        DecodeError::UnknownValue {
            field: "kind",
            value: 9
        }
    );
}

#[test]
fn parts_are_named_and_signed_and_only_media_is_made_of_parts() {
    use meshcast_proto::{MAX_PARTS, SegmentId, SegmentInfo, SegmentKind};
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(5000, 1);
    let part = SegmentId::part(s.id, 0, 42, 3);
    assert_eq!(part.parent(), SegmentId::media(s.id, 0, 42));
    assert!(part.to_string().ends_with("/0/42.3"), "{part}");
    let h = SegmentInfo::for_body(part, &b, 500_000, 1).sign(&k);
    let back = SignedHeader::from_pb(&h.to_pb()).expect("decodes");
    assert_eq!(back, h);
    back.verify(&s)
        .expect("verifies")
        .verify_body(&b, MAX)
        .unwrap();
    assert_eq!(SegmentId::from_pb(&part.to_pb()), Ok(part));

    // The part index and the part count are signed.
    let mut moved = h.clone();
    moved.info.id.part = 2;
    assert!(matches!(
        moved.verify(&s),
        Err(VerifyError::BadSignature { .. })
    ));
    let whole = SegmentInfo::for_body(SegmentId::media(s.id, 0, 42), &b, 2_000_000, 1)
        .with_parts(4)
        .sign(&k);
    let back = SignedHeader::from_pb(&whole.to_pb()).unwrap();
    assert_eq!(back.info.parts, 4);
    let mut fewer = whole.clone();
    fewer.info.parts = 3;
    assert!(matches!(
        fewer.verify(&s),
        Err(VerifyError::BadSignature { .. })
    ));

    // One encoding per id: a part index on a media segment, a part count on
    // a part or an init segment, too many parts: all refused on decode.
    let refused = |msg: pb::SegmentHeader, field: &str| {
        let err = SignedHeader::from_pb(&msg).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnknownValue { field: f, .. } if f == field),
            "{err:?}"
        );
    };
    let mut msg = whole.to_pb();
    msg.part = 1;
    refused(msg, "part");
    let mut msg = h.to_pb();
    msg.parts = 2;
    refused(msg, "parts");
    let mut msg = h.to_pb();
    msg.part = MAX_PARTS;
    refused(msg, "part");
    let mut msg = whole.to_pb();
    msg.parts = MAX_PARTS + 1;
    refused(msg, "parts");
    let mut msg = whole.to_pb();
    msg.kind = SegmentKind::Init as i32;
    refused(msg, "parts");
    let mut id = part.to_pb();
    id.kind = SegmentKind::Media as i32;
    assert!(SegmentId::from_pb(&id).is_err());
}

#[test]
fn descriptor_round_trip_and_forgery() {
    let k = key(1);
    let signed = descriptor(&k, "live").sign(&k).unwrap();
    let wire = frame::encode(&signed.signed().to_pb(), &Limits::default()).unwrap();
    let mut dec = frame::Decoder::new(Limits::default());
    dec.feed(&wire);
    let Some(frame::Item::Frame(f)) = dec.next_item().unwrap() else {
        panic!("no frame")
    };
    let back =
        SignedDescriptor::from_pb(&frame::decode::<pb::StreamDescriptor>(f).unwrap()).unwrap();
    let verified = back.verify_for(&signed.stream_key().id).unwrap();
    assert_eq!(verified, signed);

    // Another key cannot sign for this publisher...
    let attacker = key(2);
    assert!(descriptor(&k, "live").sign(&attacker).is_err());
    // ...nor can it redirect the origin of a genuine descriptor.
    let mut tampered = back.clone();
    tampered.descriptor.origin_url = "https://evil.example/".into();
    assert_eq!(
        tampered.verify().unwrap_err(),
        VerifyError::BadSignature {
            what: "stream descriptor"
        }
    );
    // A genuine descriptor for another stream is not accepted for this one.
    let other = descriptor(&k, "other").sign(&k).unwrap();
    assert!(matches!(
        other.signed().verify_for(&signed.stream_key().id),
        Err(VerifyError::WrongDescriptor { .. })
    ));
}

#[test]
fn descriptor_bounds_are_enforced() {
    let k = key(1);
    let mut d = descriptor(&k, "live");
    d.renditions[1].id = 0;
    assert!(matches!(
        d.sign(&k),
        Err(DecodeError::Invalid {
            field: "renditions.id",
            ..
        })
    ));
    let mut d = descriptor(&k, "live");
    d.name = "x".repeat(1000);
    assert!(matches!(
        d.sign(&k),
        Err(DecodeError::TooLong { field: "name", .. })
    ));
}

#[test]
fn stream_ids_and_keys_round_trip_as_text() {
    let k = key(9);
    let s = stream(&k, "live");
    assert_eq!(
        s.id.to_string()
            .parse::<meshcast_proto::StreamId>()
            .unwrap(),
        s.id
    );
    assert_eq!(
        k.public()
            .to_string()
            .parse::<meshcast_proto::PublicKey>()
            .unwrap(),
        k.public()
    );
    assert!("zz".parse::<meshcast_proto::StreamId>().is_err());
    let pem = k.to_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        meshcast_proto::PublisherKey::from_pem(&pem)
            .unwrap()
            .public(),
        k.public()
    );
    assert!(meshcast_proto::PublisherKey::from_pem("garbage").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_segment_round_trips_through_the_wire(
        seed in any::<[u8; 32]>(),
        name in "[a-z0-9-]{1,40}",
        rendition in any::<u32>(),
        sequence in any::<u64>(),
        init in any::<bool>(),
        duration in any::<u64>(),
        published in any::<u64>(),
        len in 0usize..20_000,
        split in any::<prop::sample::Index>(),
    ) {
        let k = meshcast_proto::PublisherKey::from_seed(seed);
        let s = stream(&k, &name);
        let b = body(len, seed[0]);
        let id = meshcast_proto::SegmentId {
            stream: s.id,
            rendition,
            kind: if init { meshcast_proto::SegmentKind::Init } else { meshcast_proto::SegmentKind::Media },
            sequence,
            part: 0,
        };
        let h = meshcast_proto::SegmentInfo::for_body(id, &b, duration, published).sign(&k);
        let msg = pb::MeshMessage { body: Some(pb::mesh_message::Body::Deliver(pb::Deliver { header: Some(h.to_pb()) })) };
        let mut wire = frame::encode(&msg, &Limits::default()).unwrap().to_vec();
        wire.extend_from_slice(&b);

        // Feed the stream in two pieces split at an arbitrary point.
        let cut = split.index(wire.len() + 1);
        let mut dec = frame::Decoder::new(Limits::default());
        let mut got_header = None;
        let mut verifier = None;
        let mut done = false;
        for piece in [&wire[..cut], &wire[cut..]] {
            dec.feed(piece);
            while let Some(item) = dec.next_item().unwrap() {
                match item {
                    frame::Item::Frame(f) => {
                        let m: pb::MeshMessage = frame::decode(f).unwrap();
                        let Some(pb::mesh_message::Body::Deliver(d)) = m.body else { panic!("not a deliver") };
                        let header = SignedHeader::from_pb(&d.header.unwrap()).unwrap().verify(&s).unwrap();
                        dec.expect_body(header.info().length).unwrap();
                        verifier = Some(header.body_verifier(MAX).unwrap());
                        got_header = Some(header);
                    }
                    frame::Item::Body { chunk, last } => {
                        verifier.as_mut().unwrap().update(&chunk).unwrap();
                        if last {
                            verifier.take().unwrap().finish().unwrap();
                            done = true;
                        }
                    }
                }
            }
        }
        dec.finish().unwrap();
        prop_assert!(done);
        let got = got_header.unwrap();
        prop_assert_eq!(got.signed(), &h);
    }

    #[test]
    fn any_single_bit_flip_in_a_body_is_caught(len in 1usize..8192, bit in any::<prop::sample::Index>()) {
        let k = key(3);
        let s = stream(&k, "live");
        let b = body(len, 1);
        let h = header(&k, &s, 0, &b).verify(&s).unwrap();
        let mut bad = b.clone();
        let i = bit.index(len * 8);
        bad[i / 8] ^= 1 << (i % 8);
        let caught = matches!(h.verify_body(&bad, MAX), Err(BodyError::HashMismatch { .. }));
        prop_assert!(caught);
    }

    #[test]
    fn any_single_bit_flip_in_a_header_is_caught(bit in any::<prop::sample::Index>()) {
        use prost::Message;
        let k = key(4);
        let s = stream(&k, "live");
        let h = header(&k, &s, 7, &body(100, 0));
        let mut bytes = h.to_pb().encode_to_vec();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        // Whatever the flip does — breaks decoding, a field, or the signature — it never verifies.
        let verified = pb::SegmentHeader::decode(bytes.as_slice())
            .ok()
            .and_then(|m| SignedHeader::from_pb(&m).ok())
            .map(|h| h.verify(&s));
        prop_assert!(!matches!(verified, Some(Ok(_))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Tokens: any viewer id, any expiry and any presented text give a
    /// token or a clear error, never a panic (a multibyte viewer id longer
    /// than the limit used to be sliced inside a character).
    #[test]
    fn tokens_never_panic_on_any_input(
        viewer in "\\PC{0,200}",
        expires_at_us in any::<u64>(),
        text in "\\PC{0,64}",
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        use meshcast_proto::token;
        let key = meshcast_proto::PublisherKey::from_seed([5; 32]);
        let stream = meshcast_proto::StreamKey::new(key.public(), "tokens");
        let issued = token::issue(&key, &stream.id, expires_at_us, &viewer);
        match token::verify(&issued, &stream, 0) {
            Ok(grant) => {
                prop_assert!(grant.viewer.len() <= token::MAX_VIEWER);
                prop_assert!(viewer.starts_with(&grant.viewer));
            }
            Err(e) => prop_assert_eq!(e, token::TokenError::Expired),
        }
        let _ = token::verify(&text, &stream, 0);
        let garbage = base64_url(&bytes);
        let _ = token::verify(&garbage, &stream, 0);
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_byte_range_is_signed_and_names_its_http_range() {
    use meshcast_proto::{SegmentId, SegmentInfo};
    let k = key(1);
    let s = stream(&k, "vod");
    let b = body(1000, 3);
    let ranged = SegmentInfo::for_body(SegmentId::media(s.id, 0, 7), &b, 2_000_000, 1)
        .with_uri("all.mp4")
        .with_range(5000)
        .sign(&k);
    assert_eq!(ranged.info.http_range().as_deref(), Some("bytes=5000-5999"));
    let back = SignedHeader::from_pb(&ranged.to_pb()).expect("decodes");
    assert_eq!(back, ranged);
    back.verify(&s).expect("verifies");
    // Moving the range, or dropping it (the whole file), breaks the signature.
    for range in [Some(5001), Some(0), None] {
        let mut moved = ranged.clone();
        moved.info.range_start = range;
        assert!(
            matches!(moved.verify(&s), Err(VerifyError::BadSignature { .. })),
            "{range:?}"
        );
    }
    // A whole resource has no range, and a range at 0 is one.
    let whole = SegmentInfo::for_body(SegmentId::media(s.id, 0, 7), &b, 2_000_000, 1);
    assert_eq!(whole.http_range(), None);
    assert_eq!(
        whole.with_range(0).http_range().as_deref(),
        Some("bytes=0-999")
    );
}

#[test]
fn a_discontinuity_and_a_program_date_time_are_signed() {
    use meshcast_proto::{SegmentId, SegmentInfo};
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(100, 1);
    let placed = SegmentInfo::for_body(SegmentId::media(s.id, 0, 9), &b, 2_000_000, 1)
        .with_timeline(true, Some(1_764_950_400_000))
        .sign(&k);
    let back = SignedHeader::from_pb(&placed.to_pb()).expect("decodes");
    assert_eq!(back, placed);
    back.verify(&s).expect("verifies");
    let mut moved = placed.clone();
    moved.info.program_date_time_ms = Some(1_764_950_400_001);
    assert!(matches!(
        moved.verify(&s),
        Err(VerifyError::BadSignature { .. })
    ));
    let mut joined = placed.clone();
    joined.info.discontinuity = false;
    assert!(matches!(
        joined.verify(&s),
        Err(VerifyError::BadSignature { .. })
    ));
}
