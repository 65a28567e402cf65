//! A peer's claimed length never turns into an allocation.
//!
//! Its own test binary with one test, so the counting allocator sees only
//! this test's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use meshcast_proto::frame::{Decoder, FrameError, Limits};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn huge_claims_are_rejected_without_allocating_them() {
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(1 << 40, &mut prefix); // claims 1 TiB
    let mut dec = Decoder::new(Limits::default());
    LARGEST.store(0, Ordering::SeqCst);
    dec.feed(&prefix);
    dec.feed(&[0u8; 100]);
    let err = dec.next_item().unwrap_err();
    let body_err = Decoder::new(Limits::default())
        .expect_body(1 << 40)
        .unwrap_err();
    let largest = LARGEST.load(Ordering::SeqCst);
    assert_eq!(
        err,
        FrameError::FrameTooLarge {
            claimed: 1 << 40,
            max: Limits::DEFAULT_MAX_FRAME
        }
    );
    assert!(matches!(body_err, FrameError::BodyTooLarge { .. }));
    // Only the fed bytes (and error text) were ever allocated, not the claim.
    assert!(largest < 4096, "largest allocation was {largest} bytes");
}
