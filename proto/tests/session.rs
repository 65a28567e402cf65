//! The viewer side of the browser-session protocol: what a gateway may send,
//! cut anywhere, and every lie it could tell.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use meshcast_proto::frame;
use meshcast_proto::pb::{self, server_message};
use meshcast_proto::session::{
    self, ControlReader, DeliveryReader, LIMITS, ServerEvent, SessionError,
};
use meshcast_proto::{BodyError, SegmentKind, SignedHeader, StreamKey, VerifyError};
use proptest::prelude::*;

fn delivery_bytes(request_id: u64, header: &SignedHeader, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let frame = frame::encode(
        &pb::Delivery {
            request_id,
            header: Some(header.to_pb()),
        },
        &LIMITS,
    )
    .expect("encode");
    out.extend_from_slice(&frame);
    // On the wire a body is its tree (parent hashes and 16 KiB groups).
    let wire = meshcast_proto::tree::Outboard::new(body)
        .encode(body)
        .expect("encodes");
    out.extend_from_slice(&wire);
    out.to_vec()
}

fn read_all(
    key: StreamKey,
    bytes: &[u8],
    cut: usize,
) -> Result<session::Delivered, session::DeliveryError> {
    let mut reader = DeliveryReader::new(key);
    let (a, b) = bytes.split_at(cut.min(bytes.len()));
    reader.feed(a)?;
    reader.feed(b)?;
    reader.finish()
}

proptest! {
    #[test]
    fn a_genuine_delivery_cut_anywhere_verifies(cut in 0usize..70_000) {
        let k = key(1);
        let s = stream(&k, "live");
        let b = body(60_000, 3);
        let bytes = delivery_bytes(9, &header(&k, &s, 4, &b), &b);
        let got = read_all(s, &bytes, cut).expect("genuine");
        prop_assert_eq!(got.request_id, 9);
        prop_assert_eq!(got.header.id().sequence, 4);
        prop_assert_eq!(&got.body[..], &b[..]);
    }

    #[test]
    fn a_flipped_body_bit_is_a_forgery_blamed_on_its_request(at in 0usize..5000, bit in 0u8..8) {
        let k = key(1);
        let s = stream(&k, "live");
        let b = body(5000, 3);
        let mut bytes = delivery_bytes(7, &header(&k, &s, 1, &b), &b);
        let len = bytes.len();
        bytes[len - 5000 + at] ^= 1 << bit;
        let err = read_all(s, &bytes, at).unwrap_err();
        prop_assert_eq!(err.request_id, Some(7));
        prop_assert!(err.error.is_forgery(), "{}", err);
    }

    /// A forged byte deep in a body of many groups fails at its own group:
    /// the groups before it were verified and kept, none after it.
    #[test]
    fn a_forged_byte_mid_body_fails_at_its_group(at in 0usize..200_000, bit in 0u8..8) {
        let k = key(1);
        let s = stream(&k, "live");
        let b = body(200_000, 5);
        let mut bytes = delivery_bytes(8, &header(&k, &s, 2, &b), &b);
        let start = bytes.len() - meshcast_proto::tree::encoded_len(200_000) as usize;
        let wire = meshcast_proto::tree::wire_offset(200_000, at as u64).expect("inside") as usize;
        bytes[start + wire] ^= 1 << bit;
        let mut reader = DeliveryReader::new(s);
        let err = reader.feed(&bytes).unwrap_err();
        prop_assert!(err.error.is_forgery(), "{}", err);
        let group = at as u64 / meshcast_proto::tree::GROUP_BYTES * meshcast_proto::tree::GROUP_BYTES;
        prop_assert!(
            err.to_string().contains(&format!("group at {group} bytes")),
            "{}", err
        );
    }
}

#[test]
fn a_header_signed_by_another_key_is_a_forgery() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(100, 0);
    let bytes = delivery_bytes(3, &header(&key(2), &s, 1, &b), &b);
    let err = read_all(s, &bytes, 0).unwrap_err();
    assert_eq!(err.request_id, Some(3));
    assert_eq!(
        err.error,
        SessionError::Verify(VerifyError::BadSignature {
            what: "segment header"
        })
    );
}

#[test]
fn short_and_long_bodies_are_rejected() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(1000, 0);
    let h = header(&k, &s, 1, &b);
    let short = delivery_bytes(1, &h, &b[..999]);
    let err = read_all(s, &short, 10).unwrap_err();
    assert_eq!(err.request_id, Some(1));
    assert!(
        matches!(
            err.error,
            SessionError::Frame(frame::FrameError::Truncated { .. })
        ),
        "{err}"
    );

    let mut long = delivery_bytes(1, &h, &b);
    long.push(0);
    let err = read_all(s, &long, 10).unwrap_err();
    assert!(
        matches!(
            err.error,
            SessionError::Protocol(_) | SessionError::Frame(_)
        ),
        "{err}"
    );

    let err = read_all(s, &[], 0).unwrap_err();
    assert_eq!(err.request_id, None);
}

#[test]
fn a_delivery_over_the_size_limit_is_refused_before_its_body() {
    let k = key(1);
    let s = stream(&k, "live");
    let mut h = header(&k, &s, 1, &[]);
    h.info.length = LIMITS.max_segment + 1;
    let h = h.info.sign(&k);
    let mut reader = DeliveryReader::new(s);
    let frame = &delivery_bytes(5, &h, &[]);
    let err = reader.feed(frame).unwrap_err();
    assert_eq!(err.request_id, Some(5));
    assert!(
        matches!(err.error, SessionError::Body(BodyError::TooLarge { .. })),
        "{err}"
    );
}

/// The viewer's clock in these tests.
const NOW_US: u64 = 1_000_000_000;

/// A gateway list entry with a record of node `seed`, issued `age_s`
/// seconds before NOW_US, valid for 60 s, signed by `signer` (default: the
/// node).
fn gateway_record(seed: u8, url: &str, age_s: u64, signer: Option<u8>) -> pb::Gateway {
    use ed25519_dalek::Signer;
    let node = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let record = meshcast_proto::gateway::GatewayRecord {
        node: meshcast_proto::PublicKey::from_bytes(node.verifying_key().as_bytes()).expect("key"),
        url: url.into(),
        cert_hashes: vec![[age_s as u8; 32]],
        issued_at_us: NOW_US - age_s * 1_000_000,
        expires_at_us: NOW_US - age_s * 1_000_000 + 60_000_000,
        streams: vec![],
    };
    let signer = ed25519_dalek::SigningKey::from_bytes(&[signer.unwrap_or(seed); 32]);
    let signature = signer.sign(&record.signing_bytes()).to_bytes();
    pb::Gateway {
        url: String::new(),
        cert_hashes: vec![],
        record: Some(record.to_pb(&signature)),
    }
}

fn welcome(
    descriptor: pb::StreamDescriptor,
    live_edge: Vec<pb::SegmentHeader>,
    recent: Vec<pb::SegmentHeader>,
) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(server_message::Body::Welcome(pb::Welcome {
            descriptor: Some(descriptor),
            gateways: vec![
                pb::Gateway {
                    url: "https://other.example:4433/".into(),
                    cert_hashes: vec![Bytes::from(vec![7u8; 32])],
                    record: None,
                },
                pb::Gateway {
                    url: "https://bad-hash.example/".into(),
                    cert_hashes: vec![Bytes::from(vec![7u8; 31])],
                    record: None,
                },
                pb::Gateway {
                    url: "http://not-webtransport.example/".into(),
                    cert_hashes: vec![],
                    record: None,
                },
                gateway_record(9, "https://gw.example:4433/", 9, None),
                // Signed by another key than the one it names.
                gateway_record(9, "https://forged.example:4433/", 1, Some(10)),
                // Expired before the viewer's clock.
                gateway_record(9, "https://old.example:4433/", 90, None),
            ],
            live_edge,
            recent,
        })),
    }
}

#[test]
fn welcome_is_verified_and_keeps_only_usable_gateways() {
    let k = key(1);
    let d = descriptor(&k, "live").sign(&k).expect("sign");
    let s = d.stream_key();
    let b = body(10, 0);
    let edge = header(&k, &s, 12, &b).to_pb();
    let got = session::welcome(
        welcome(
            d.signed().to_pb(),
            vec![edge.clone()],
            vec![header(&k, &s, 11, &b).to_pb(), edge.clone()],
        ),
        &s.id,
        NOW_US,
    )
    .expect("genuine welcome");
    assert_eq!(got.key, s);
    assert_eq!(got.live_edge[0].id().sequence, 12);
    let recent: Vec<u64> = got.recent.iter().map(|h| h.id().sequence).collect();
    assert_eq!(recent, [11, 12]);
    assert_eq!(got.gateways.len(), 2, "{:?}", got.gateways);
    assert_eq!(got.gateways[0].cert_hashes, vec![[7u8; 32]]);
    assert_eq!(got.gateways[0].record, None);
    // The record that verifies; the forged and the expired one are skipped.
    assert_eq!(got.gateways[1].url, "https://gw.example:4433/");
    assert!(got.gateways[1].record.is_some());

    // The descriptor of another stream, even genuinely signed, is refused.
    let other = descriptor(&k, "other").sign(&k).expect("sign");
    let err = session::welcome(
        welcome(other.signed().to_pb(), vec![], vec![]),
        &s.id,
        NOW_US,
    )
    .unwrap_err();
    assert!(err.is_forgery(), "{err}");

    // A live-edge header with a bad signature is refused.
    let mut forged = edge;
    forged.sequence += 1;
    let err = session::welcome(
        welcome(d.signed().to_pb(), vec![forged.clone()], vec![]),
        &s.id,
        NOW_US,
    )
    .unwrap_err();
    assert!(err.is_forgery(), "{err}");
    // So is a recent one.
    let err = session::welcome(
        welcome(d.signed().to_pb(), vec![], vec![forged]),
        &s.id,
        NOW_US,
    )
    .unwrap_err();
    assert!(err.is_forgery(), "{err}");

    // An Error instead of Welcome is a refusal with its code.
    let refusal = pb::ServerMessage {
        body: Some(server_message::Body::Error(pb::Error {
            code: pb::ErrorCode::TokenRequired as i32,
            message: "token".into(),
            request_id: 0,
        })),
    };
    assert!(matches!(
        session::welcome(refusal, &s.id, NOW_US),
        Err(SessionError::Refused {
            code: pb::ErrorCode::TokenRequired,
            ..
        })
    ));
}

#[test]
fn control_frames_are_cut_and_announcements_verified() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(10, 0);
    let announce = pb::ServerMessage {
        body: Some(server_message::Body::Announce(pb::Announce {
            headers: vec![header(&k, &s, 3, &b).to_pb()],
        })),
    };
    let bytes = frame::encode(&announce, &LIMITS).expect("encode");
    let mut reader = ControlReader::default();
    for byte in bytes.iter() {
        reader.feed(&[*byte]);
        if let Some(msg) = reader.next_message().expect("valid") {
            match session::server_event(msg, &s, NOW_US).expect("genuine") {
                Some(ServerEvent::Announced(h)) => assert_eq!(h[0].id().sequence, 3),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    reader.finish().expect("ended on a frame boundary");

    let forged = pb::ServerMessage {
        body: Some(server_message::Body::Announce(pb::Announce {
            headers: vec![header(&key(2), &s, 3, &b).to_pb()],
        })),
    };
    assert!(
        session::server_event(forged, &s, NOW_US)
            .unwrap_err()
            .is_forgery()
    );

    let mut reader = ControlReader::default();
    reader.feed(&[0xff; 11]);
    assert!(
        reader.next_message().is_err(),
        "a bad length prefix is refused"
    );
}

#[test]
fn a_genuine_segment_other_than_the_one_asked_for_is_a_forgery() {
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(100, 0);
    let sent = header(&k, &s, 5, &b);
    let got = read_all(s, &delivery_bytes(3, &sent, &b), 0).expect("validly signed");
    let mut asked = got.header.id();
    asked.sequence = 6;
    let err = got.answers(&asked).unwrap_err();
    assert!(err.is_forgery(), "{err}");
    asked.sequence = 5;
    assert_eq!(got.answers(&asked), Ok(()));
}

#[test]
fn a_newer_record_of_the_same_gateway_replaces_the_older_and_nothing_else_does() {
    let list = |entries: Vec<pb::Gateway>| session::gateways(&entries, NOW_US);
    let old = list(vec![gateway_record(
        9,
        "https://gw.example:4433/",
        30,
        None,
    )]);
    let new = list(vec![gateway_record(9, "https://gw.example:4434/", 5, None)]);
    let other = list(vec![gateway_record(
        11,
        "https://gw.example:4433/",
        1,
        None,
    )]);
    assert!(
        new[0].replaces(&old[0]),
        "a restart with a new port and hash"
    );
    assert!(!old[0].replaces(&new[0]), "an older record never wins");
    assert!(!other[0].replaces(&old[0]), "another node's record");
    assert!(other[0].same_gateway(&other[0]) && !other[0].same_gateway(&old[0]));
    let bare = list(vec![pb::Gateway {
        url: "https://gw.example:4433/".into(),
        cert_hashes: vec![Bytes::from(vec![1u8; 32])],
        record: None,
    }]);
    assert!(!bare[0].replaces(&old[0]) && !old[0].replaces(&bare[0]));
}

#[test]
fn welcome_recent_headers_are_each_renditions_newest_and_fewer_when_many() {
    use meshcast_proto::{SegmentId, SegmentInfo};
    let k = key(1);
    let s = stream(&k, "live");
    let b = body(10, 0);
    let signed = |id: SegmentId| SegmentInfo::for_body(id, &b, 2_000_000, 1).sign(&k);
    let held = |renditions: u32| {
        let mut headers = Vec::new();
        for r in 0..renditions {
            headers.push(signed(SegmentId::init(s.id, r, 0)));
            for n in 0..20 {
                headers.push(signed(SegmentId::media(s.id, r, n)));
                headers.push(signed(SegmentId::part(s.id, r, n, 0)));
            }
        }
        headers
    };
    // Two renditions: each its init and its newest WELCOME_RECENT segments.
    let two = session::recent(held(2));
    for r in 0..2 {
        let mine: Vec<_> = two
            .iter()
            .map(|h| h.info.id)
            .filter(|id| id.rendition == r)
            .collect();
        assert_eq!(
            mine.iter()
                .filter(|id| id.kind == SegmentKind::Init)
                .count(),
            1
        );
        let media: Vec<u64> = mine
            .iter()
            .filter(|id| id.kind == SegmentKind::Media)
            .map(|id| id.sequence)
            .collect();
        assert_eq!(media, (12..20).rev().collect::<Vec<_>>());
        assert!(mine.iter().all(|id| id.kind != SegmentKind::Part));
    }
    // Twenty renditions: 64 media headers in all, three each, and every init.
    let many = session::recent(held(20));
    let media = many
        .iter()
        .filter(|h| h.info.id.kind == SegmentKind::Media)
        .count();
    assert_eq!(media, 20 * (session::WELCOME_RECENT_TOTAL / 20));
    assert!(media <= session::WELCOME_RECENT_TOTAL);
    assert_eq!(
        many.iter()
            .filter(|h| h.info.id.kind == SegmentKind::Init)
            .count(),
        20
    );
}

#[test]
fn a_catalogue_is_inits_and_wholes_in_playing_order_within_its_bound_and_frames() {
    use meshcast_proto::{SegmentId, SegmentInfo};
    let k = key(1);
    let s = stream(&k, "vod");
    let b = body(10, 0);
    let signed = |id: SegmentId| SegmentInfo::for_body(id, &b, 2_000_000, 1).sign(&k);
    let held = |renditions: u32, segments: u64| {
        let mut headers = Vec::new();
        for r in 0..renditions {
            for n in (0..segments).rev() {
                headers.push(signed(SegmentId::media(s.id, r, n)));
                headers.push(signed(SegmentId::part(s.id, r, n, 0)));
            }
            headers.push(signed(SegmentId::init(s.id, r, 0)));
        }
        headers
    };
    let ids = |frames: &[pb::Announce]| -> Vec<SegmentId> {
        frames
            .iter()
            .flat_map(|f| &f.headers)
            .map(|h| SignedHeader::from_pb(h).expect("a header").info.id)
            .collect()
    };
    // Two renditions of 300: everything but the parts, each rendition's init
    // first, then its segments in order, in frames of CATALOGUE_FRAME.
    let frames = session::catalogue(held(2, 300), &[]);
    assert!(
        frames
            .iter()
            .all(|f| f.headers.len() <= session::CATALOGUE_FRAME)
    );
    let all = ids(&frames);
    assert_eq!(all.len(), 2 * 301);
    for r in 0..2u32 {
        let mine: Vec<_> = all.iter().filter(|id| id.rendition == r).collect();
        assert_eq!(mine[0].kind, SegmentKind::Init);
        let media: Vec<u64> = mine[1..].iter().map(|id| id.sequence).collect();
        assert_eq!(media, (0..300).collect::<Vec<_>>());
    }
    // One rendition asked for.
    assert!(
        ids(&session::catalogue(held(2, 300), &[1]))
            .iter()
            .all(|id| id.rendition == 1)
    );
    // Too many: an even share of CATALOGUE_MAX each, from the start.
    let big = ids(&session::catalogue(held(3, 2000), &[]));
    assert!(big.len() <= session::CATALOGUE_MAX);
    for r in 0..3u32 {
        let mine: Vec<_> = big.iter().filter(|id| id.rendition == r).collect();
        assert_eq!(mine.len(), session::CATALOGUE_MAX / 3);
        assert_eq!(mine[1].sequence, 0);
    }
}
