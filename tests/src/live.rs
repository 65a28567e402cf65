//! A signed live stream for tests that inject segments by hand.

use bytes::Bytes;
use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, VerifiedDescriptor, VerifiedHeader,
};

/// A live stream with one rendition and no origin: what the mesh does not
/// deliver, nobody does.
pub struct Live {
    pub key: PublisherKey,
    pub descriptor: VerifiedDescriptor,
}

impl Live {
    pub fn new(name: &str) -> Self {
        Self::issued(name, meshcast_node::unix_now_us())
    }

    /// The stream's descriptor as issued at `issued_at_us`.
    pub fn issued(name: &str, issued_at_us: u64) -> Self {
        let key = PublisherKey::from_seed([42; 32]);
        let descriptor = Descriptor {
            publisher: key.public(),
            name: name.into(),
            renditions: vec![Rendition {
                id: 0,
                name: "only".into(),
                bandwidth: 2_000_000,
                codecs: String::new(),
                width: 0,
                height: 0,
                uri: String::new(),
                ..Default::default()
            }],
            origin_url: String::new(),
            segment_duration_ms: 2_000,
            live: true,
            issued_at_us,
            private: false,
        }
        .sign(&key)
        .expect("descriptor");
        Self { key, descriptor }
    }

    pub fn id(&self, rendition: u32, sequence: u64) -> SegmentId {
        SegmentId::media(self.descriptor.stream_key().id, rendition, sequence)
    }

    /// A signed segment of `size` bytes, published now.
    pub fn segment(&self, rendition: u32, sequence: u64, size: usize) -> (VerifiedHeader, Bytes) {
        self.segment_of_run(0, rendition, sequence, size)
    }

    /// A segment as a publisher run started at `epoch_us` signs it: runs
    /// give one id different bytes.
    pub fn segment_of_run(
        &self,
        epoch_us: u64,
        rendition: u32,
        sequence: u64,
        size: usize,
    ) -> (VerifiedHeader, Bytes) {
        let body: Vec<u8> = (0..size)
            .map(|i| (i as u64 * 7 + sequence + epoch_us) as u8)
            .collect();
        let header = meshcast_proto::SegmentInfo::for_body(
            self.id(rendition, sequence),
            &body,
            2_000_000,
            meshcast_node::unix_now_us(),
        )
        .with_epoch(epoch_us)
        .sign(&self.key)
        .verify(&self.descriptor.stream_key())
        .expect("signed");
        (header, Bytes::from(body))
    }

    pub fn topic(&self) -> libp2p::gossipsub::IdentTopic {
        meshcast_node::behaviour::topic(&self.descriptor.stream_key().id, 0)
    }
}
