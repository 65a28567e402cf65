//! Small runs: the model behaves, and a seed fixes every figure.

use std::time::Duration;

use crate::{Scenario, run};

fn small() -> Scenario {
    Scenario {
        nodes: 40,
        duration: Duration::from_secs(12),
        bitrate_bps: 1e6,
        ..Scenario::default()
    }
}

fn quiet(scenario: &Scenario) -> crate::Report {
    run(scenario, &mut |_| {}).expect("a valid scenario")
}

#[test]
fn same_seed_same_figures_other_seed_other_figures() {
    let scenario = Scenario {
        churn_per_min: 0.3,
        stallers: 0.1,
        ..small()
    };
    let a = quiet(&scenario);
    let b = quiet(&scenario);
    assert_eq!(a.figures(), b.figures());
    let c = quiet(&Scenario {
        seed: 2,
        ..scenario
    });
    assert_ne!(a.figures(), c.figures());
}

#[test]
fn a_healthy_mesh_delivers_everything_once_without_the_origin() {
    let r = quiet(&Scenario {
        nat: 0.0,
        ..small()
    });
    assert_eq!(r.expected_pairs, 40 * 6);
    assert_eq!(r.delivered, 1.0, "{r:#?}");
    assert!(r.duplicate_ratio < 1.01, "{r:#?}");
    assert_eq!(r.origin_bytes, 0, "{r:#?}");
    assert_eq!(r.bans, 0);
    // 1 Mbit/s in 2 s segments: 250 kB over 10 Mbit/s uplinks, a few hops.
    assert!(r.propagation_p95_s < 2.0, "{r:#?}");
    assert!(r.upload_none < 0.9, "pushes spread the upload: {r:#?}");
}

#[test]
fn stalling_peers_cost_time_but_are_never_banned_and_nobody_honest_is() {
    let r = quiet(&Scenario {
        stallers: 0.2,
        ..small()
    });
    assert_eq!(r.bans, 0, "nothing a staller sends fails verification");
    assert!(r.delivered > 0.95, "{r:#?}");
}

#[test]
fn forgers_are_banned_and_honest_peers_are_not() {
    let r = quiet(&Scenario {
        forgers: 0.2,
        ..small()
    });
    assert!(r.bans > 0, "{r:#?}");
    assert_eq!(r.honest_bans, 0, "{r:#?}");
    assert!(r.delivered > 0.95, "{r:#?}");
}

#[test]
fn nodes_that_leave_and_join_do_not_stop_the_stream() {
    let r = quiet(&Scenario {
        churn_per_min: 0.5,
        ..small()
    });
    assert!(r.delivered > 0.95, "{r:#?}");
}

#[test]
fn bad_settings_are_clear_errors() {
    let bad = Scenario {
        nat: 1.5,
        ..small()
    };
    let error = run(&bad, &mut |_| {}).unwrap_err();
    assert!(error.contains("nat"), "{error}");
}

/// The hostile mesh, scaled down: 10 % Sybil stallers and 10 %
/// forgers. No honest peer is banned, every honest node gets every segment,
/// and the origin serves at most twice its share of the honest run per
/// honest (node, segment), plus 5 % of a segment: at 100 nodes the honest
/// mesh needs no origin at all, and "twice nothing" would forbid the few
/// segments whose first holders were all stallers (they go to the origin
/// while the stallers are being benched).
#[test]
fn sybil_stallers_and_forgers_ban_no_honest_peer_and_at_most_double_the_origin() {
    let base = Scenario {
        nodes: 100,
        ..small()
    };
    let honest = quiet(&base);
    let hostile = quiet(&Scenario {
        stallers: 0.1,
        forgers: 0.1,
        ..base.clone()
    });
    assert_eq!(hostile.honest_bans, 0, "{hostile:#?}");
    assert_eq!(hostile.delivered, 1.0, "{hostile:#?}");
    let share = |r: &crate::Report| r.origin_bytes as f64 / r.expected_pairs.max(1) as f64;
    let allowance = 0.05 * base.segment_bytes() as f64;
    assert!(
        share(&hostile) <= 2.0 * share(&honest) + allowance,
        "origin bytes per (node, segment): {} hostile vs {} honest",
        share(&hostile),
        share(&honest)
    );
}

/// Cut-through against store-and-forward on one seed: 1 MB segments over
/// 10 Mbit/s uplinks take 0.8 s per hop whole, and a few hundred nodes are
/// several hops deep. Forwarding each verified piece at once must take most
/// of that away, deliver as much, and cost no more copies.
#[test]
fn cut_through_shortens_propagation_against_store_and_forward() {
    let base = Scenario {
        nodes: 200,
        duration: Duration::from_secs(12),
        nat: 0.0,
        ..Scenario::default()
    };
    let cut = quiet(&base);
    let whole = quiet(&Scenario {
        cut_through: false,
        ..base
    });
    assert_eq!(cut.delivered, 1.0, "{cut:#?}");
    assert_eq!(whole.delivered, 1.0, "{whole:#?}");
    assert!(
        cut.propagation_p95_s < 0.6 * whole.propagation_p95_s,
        "p95 {:.2} s with cut-through, {:.2} s without",
        cut.propagation_p95_s,
        whole.propagation_p95_s
    );
    assert!(cut.duplicate_ratio < 1.05, "{cut:#?}");
    assert!(cut.origin_bytes <= whole.origin_bytes, "{cut:#?}");
}
