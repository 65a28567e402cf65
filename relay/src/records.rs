//! Gateway records: this gateway's own, published through its node, and the
//! other gateways' that the mesh gossips, listed to viewers.
//!
//! The own record names the WebTransport URL, the certificate hashes a
//! browser may pin and the streams served; it is signed with the node's key,
//! valid for [`LIFETIME`], and published at start, on every certificate
//! change and every [`REPUBLISH`]. Others' records (verified by the node
//! before gossip passes them on) are kept per node key, newest first, at most
//! [`MAX_RECORDS`]; expired ones are dropped.

use std::collections::HashMap;
use std::time::Duration;

use meshcast_proto::gateway::GatewayRecord;
use meshcast_proto::{PublicKey, StreamId, pb, session};

/// How long a record is valid: a gateway that is gone drops out of lists
/// within this.
pub const LIFETIME: Duration = Duration::from_secs(600);
/// How often a gateway publishes its record again.
pub const REPUBLISH: Duration = Duration::from_secs(120);
/// Most other gateways' records kept.
pub const MAX_RECORDS: usize = 256;

/// Other gateways' records, newest per node.
#[derive(Default)]
pub(crate) struct Records {
    by_node: HashMap<PublicKey, (GatewayRecord, pb::SignedGatewayRecord)>,
    /// Bumped on every change, so sessions know to send a new list.
    pub version: u64,
}

impl Records {
    /// Keeps `record` if it is newer than what is held for its node. Returns
    /// whether a viewer would see a change (a new gateway, or a new address,
    /// hash or stream list): a mere refresh does not make every session send
    /// its list again.
    pub fn insert(
        &mut self,
        record: GatewayRecord,
        signed: pb::SignedGatewayRecord,
        now_us: u64,
    ) -> bool {
        self.expire(now_us);
        if self
            .by_node
            .get(&record.node)
            .is_some_and(|(held, _)| held.issued_at_us >= record.issued_at_us)
        {
            return false;
        }
        if !self.by_node.contains_key(&record.node) && self.by_node.len() >= MAX_RECORDS {
            // Full: make way only by dropping the record that expires first,
            // and only for one that lasts longer.
            let Some((soonest, expires)) = self
                .by_node
                .iter()
                .map(|(k, (r, _))| (*k, r.expires_at_us))
                .min_by_key(|(_, e)| *e)
            else {
                return false;
            };
            if expires >= record.expires_at_us {
                return false;
            }
            self.by_node.remove(&soonest);
        }
        let seen = |held: &GatewayRecord| {
            (&held.url, &held.cert_hashes, &held.streams)
                == (&record.url, &record.cert_hashes, &record.streams)
        };
        let refresh = self
            .by_node
            .get(&record.node)
            .is_some_and(|(held, _)| seen(held));
        self.by_node.insert(record.node, (record, signed));
        if refresh {
            return false;
        }
        self.version += 1;
        true
    }

    fn expire(&mut self, now_us: u64) {
        let before = self.by_node.len();
        self.by_node.retain(|_, (r, _)| r.expires_at_us > now_us);
        if self.by_node.len() != before {
            self.version += 1;
        }
    }

    /// Up to `max` records for a viewer of `stream`: those that serve it
    /// first, then the newest.
    pub fn for_stream(&mut self, stream: &StreamId, max: usize, now_us: u64) -> Vec<pb::Gateway> {
        self.expire(now_us);
        let mut all: Vec<&(GatewayRecord, pb::SignedGatewayRecord)> =
            self.by_node.values().collect();
        all.sort_by_key(|(r, _)| (!r.serves(stream), std::cmp::Reverse(r.issued_at_us)));
        all.into_iter()
            .take(max)
            .map(|(_, signed)| pb::Gateway {
                url: String::new(),
                cert_hashes: Vec::new(),
                record: Some(signed.clone()),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_node.len()
    }
}

/// The gateway list for a viewer of `stream`: the operator's bare hints
/// (`peers`), then records, at most [`session::MAX_GATEWAYS`] in all.
pub(crate) fn list(
    peers: &[crate::config::Peer],
    records: &mut Records,
    stream: &StreamId,
    now_us: u64,
) -> Vec<pb::Gateway> {
    let mut list: Vec<pb::Gateway> = peers
        .iter()
        .take(session::MAX_GATEWAYS)
        .map(|p| pb::Gateway {
            url: p.url.clone(),
            cert_hashes: p
                .cert_hashes
                .iter()
                .filter_map(|h| hex::decode(h).ok().map(Into::into))
                .collect(),
            record: None,
        })
        .collect();
    let room = session::MAX_GATEWAYS - list.len();
    list.extend(records.for_stream(stream, room, now_us));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::PublisherKey;

    fn record(n: u16, issued: u64, expires: u64) -> (GatewayRecord, pb::SignedGatewayRecord) {
        let mut seed = [1u8; 32];
        seed[..2].copy_from_slice(&n.to_le_bytes());
        let key = PublisherKey::from_seed(seed);
        let r = GatewayRecord {
            node: key.public(),
            url: format!("https://g{n}.example/"),
            cert_hashes: vec![],
            issued_at_us: issued,
            expires_at_us: expires,
            streams: vec![],
        };
        let signed = r.to_pb(&[0; 64]);
        (r, signed)
    }

    #[test]
    fn newest_per_node_wins_and_the_table_is_bounded() {
        let mut records = Records::default();
        let (a1, s1) = record(1, 10, 1_000);
        let (a2, s2) = record(1, 20, 1_000);
        assert!(records.insert(a2.clone(), s2, 0));
        assert!(
            !records.insert(a1, s1, 0),
            "an older record of the same node"
        );
        for n in 2..MAX_RECORDS as u16 + 40 {
            let (r, s) = record(n, 10, 500);
            records.insert(r, s, 0);
        }
        assert!(records.len() <= MAX_RECORDS);
        assert!(
            records.by_node.contains_key(&a2.node),
            "a longer-lived record was pushed out"
        );
        records.expire(2_000);
        assert_eq!(records.len(), 0, "all expired");
    }
}
