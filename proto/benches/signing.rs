//! Sign and verify throughput for 1 MiB segments.
//!
//! `cargo bench -p meshcast-proto` prints, per operation, the median time per
//! segment over several batches, segments/s and MiB/s of hashing. Verifying
//! means what every hop does: check the header signature, then hash the body
//! in 64 KiB chunks as a QUIC stream would deliver it.
//!
//! A plain harness rather than criterion: it prints exactly these figures and
//! keeps `cargo clippy --all-targets` from compiling a large dependency tree.

use std::hint::black_box;
use std::time::{Duration, Instant};

use meshcast_proto::{PublisherKey, SegmentId, SegmentInfo, StreamKey};

const SEGMENT: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;
const BATCHES: usize = 15;

/// Median seconds per call of `f`, over `BATCHES` batches of at least 50 ms each.
fn measure(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(50) {
        f();
        calls += 1;
    }
    let mut per_call: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_secs_f64() / f64::from(calls)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[BATCHES / 2]
}

fn report(name: &str, seconds: f64, hashed_bytes: usize) {
    let mib = hashed_bytes as f64 / (1024.0 * 1024.0);
    let hashing = if hashed_bytes > 0 {
        format!("{:>9.0} MiB/s hashed", mib / seconds)
    } else {
        String::new()
    };
    println!(
        "{name:<40} {:>9.1} µs/segment {:>10.0} segments/s {hashing}",
        seconds * 1e6,
        1.0 / seconds,
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("signing bench: run with `cargo bench -p meshcast-proto`");
        return;
    }
    let key = PublisherKey::from_seed([7; 32]);
    let stream = StreamKey::new(key.public(), "bench");
    let body: Vec<u8> = (0..SEGMENT).map(|i| (i * 7 + i / 251) as u8).collect();
    let id = SegmentId::media(stream.id, 0, 1);
    let header = SegmentInfo::for_body(id, &body, 2_000_000, 0).sign(&key);

    println!("1 MiB segments, one core, median of {BATCHES} batches");
    let sign = measure(|| {
        let info = SegmentInfo::for_body(black_box(id), black_box(&body), 2_000_000, 0);
        black_box(info.sign(&key));
    });
    report("sign (hash body + Ed25519 sign)", sign, SEGMENT);

    let verify = measure(|| {
        let verified = black_box(&header).verify(&stream).expect("genuine header");
        let mut body_check = verified.body_verifier(u64::MAX).expect("within limit");
        for chunk in black_box(&body).chunks(CHUNK) {
            body_check.update(chunk).expect("within length");
        }
        body_check.finish().expect("genuine body");
    });
    report(
        "verify (signature + hash in 64 KiB chunks)",
        verify,
        SEGMENT,
    );

    let signature_only = measure(|| {
        black_box(black_box(&header).verify(&stream).expect("genuine header"));
    });
    report("  of which header signature", signature_only, 0);

    let goal = 1e-3;
    println!(
        "goal: verify a 1 MiB segment in <= 1 ms of one core: {:.3} ms ({})",
        verify * 1e3,
        if verify <= goal { "met" } else { "MISSED" }
    );
}
