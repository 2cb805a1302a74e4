//! Memory per live session: heap bytes held by the core per confirmed call
//! (after its transactions have ended), measured with a counting allocator.
//!
//! Run: `cargo bench -p sip-control --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

mod workload;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    for calls in [1_000usize, 10_000] {
        let inputs = workload::record(calls, workload::Until::Confirmed);
        let empty = sip_control::Core::new(workload::bench_config()).unwrap();
        let base = LIVE.load(Ordering::Relaxed);
        let core = workload::run(&inputs);
        let used = LIVE.load(Ordering::Relaxed) - base;
        assert_eq!(core.session_count(), calls);
        assert_eq!(core.transaction_count(), 0, "transactions must have ended");
        println!(
            "live sessions: {calls:>6}  heap held by the core: {:>10} bytes  per session: {:>5} bytes",
            used,
            used / calls as isize
        );
        drop(core);
        drop(empty);
    }
}
