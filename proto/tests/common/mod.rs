//! Fixtures shared by the proto tests.
#![allow(dead_code)]

use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo, SignedHeader, StreamKey,
};

pub fn key(n: u8) -> PublisherKey {
    PublisherKey::from_seed([n; 32])
}

pub fn stream(key: &PublisherKey, name: &str) -> StreamKey {
    StreamKey::new(key.public(), name)
}

pub fn body(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

pub fn header(key: &PublisherKey, stream: &StreamKey, sequence: u64, body: &[u8]) -> SignedHeader {
    SegmentInfo::for_body(
        SegmentId::media(stream.id, 0, sequence),
        body,
        2_000_000,
        1_700_000_000_000_000,
    )
    .with_uri(format!("seg{sequence}.m4s"))
    .sign(key)
}

pub fn descriptor(key: &PublisherKey, name: &str) -> Descriptor {
    Descriptor {
        publisher: key.public(),
        name: name.to_string(),
        renditions: vec![
            Rendition {
                id: 0,
                name: "360p".into(),
                bandwidth: 800_000,
                codecs: "avc1.42c01e,mp4a.40.2".into(),
                width: 640,
                height: 360,
                uri: "360p.m3u8".into(),
                ..Default::default()
            },
            Rendition {
                id: 1,
                name: "720p".into(),
                bandwidth: 2_000_000,
                codecs: "avc1.4d401f,mp4a.40.2".into(),
                width: 1280,
                height: 720,
                uri: "720p.m3u8".into(),
                ..Default::default()
            },
        ],
        origin_url: "https://origin.example/live/master.m3u8".into(),
        segment_duration_ms: 2000,
        live: true,
        issued_at_us: 1_700_000_000_000_000,
        private: false,
    }
}
