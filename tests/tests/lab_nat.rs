//! NAT traversal through real NATs (`meshcast_lab::matrix`): nodes behind
//! router namespaces doing nftables NAT, a relay and a publisher on the WAN.
//! The slim matrix: the pairs whose outcome is certain, over QUIC and TCP.
//! `meshcast-bench lab nat` runs every pair, repeatedly. Skipped, saying
//! why, without root or `ip`/`nft`.

use meshcast_lab::matrix::{self, Case, Outcome, Side, Transport};
use meshcast_lab::net::{Lab, Nat};

async fn run(a: Side, b: Side, transport: Transport) -> Outcome {
    let case = Case { a, b, transport };
    let outcome = matrix::run(case, &matrix::media_dir())
        .await
        .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    eprintln!("{outcome:?}");
    outcome
}

const PORT_PRESERVING: Side = Side::Behind(Nat::PortPreserving);
const SYMMETRIC: Side = Side::Behind(Nat::Symmetric);
const FULL_CONE: Side = Side::Behind(Nat::FullCone);

/// The common case: two home routers. (When the lab's routers accepted
/// unsolicited packets for themselves, the peer's first punch packet left a
/// conntrack entry that the node's own outbound flow then clashed with,
/// masquerade moved that flow to another port, and this failed every time;
/// a home router's firewall drops such packets, and so do the lab's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_port_preserving_nats_connect_directly_and_exchange_segments() {
    if Lab::skip_test() {
        return;
    }
    for transport in [Transport::Quic, Transport::Tcp] {
        let outcome = run(PORT_PRESERVING, PORT_PRESERVING, transport).await;
        assert!(
            outcome.direct.is_some(),
            "no direct connection: {outcome:?}"
        );
        assert!(outcome.delivered(), "{outcome:?}");
    }
}

/// A full-cone node is reachable by anyone it has sent to... from any port,
/// so even a symmetric NAT's fresh port gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symmetric_nat_connects_directly_with_a_full_cone() {
    if Lab::skip_test() {
        return;
    }
    let outcome = run(FULL_CONE, SYMMETRIC, Transport::Quic).await;
    assert!(
        outcome.direct.is_some(),
        "no direct connection: {outcome:?}"
    );
    assert!(outcome.delivered(), "{outcome:?}");
}

/// Both sides unreachable: no direct connection forms, no segment crosses
/// the circuit, and the symmetric-NAT node still gets every segment from a
/// public node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_symmetric_nats_never_connect_and_get_every_segment_from_a_public_node() {
    if Lab::skip_test() {
        return;
    }
    let outcome = run(SYMMETRIC, SYMMETRIC, Transport::Quic).await;
    assert!(outcome.direct.is_none(), "a direct connection: {outcome:?}");
    assert_eq!(outcome.from_a, 0, "{outcome:?}");
    assert!(outcome.delivered(), "{outcome:?}");
}

/// A NATed node dialled through the relay by a public one dials it back:
/// direct, and segments flow. Over TCP only the node's own dial-back does it
/// (libp2p's hole punch fails when its SYN lands on the public node's
/// listening socket: both sides then take the listener's role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_node_reaches_a_symmetric_nat_through_the_relay() {
    if Lab::skip_test() {
        return;
    }
    for transport in [Transport::Quic, Transport::Tcp] {
        let outcome = run(SYMMETRIC, Side::Public, transport).await;
        assert!(
            outcome.direct.is_some(),
            "no direct connection: {outcome:?}"
        );
        assert!(outcome.delivered(), "{outcome:?}");
    }
}
