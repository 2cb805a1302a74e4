//! Replay speed: how fast a standby rebuilds live sessions from a checkpoint
//! (MessagePack of `CoreState`, as the state log stores it) and from raw
//! inputs (what a log without checkpoints costs).
//!
//! Two set-ups:
//! - one instance with 10 000 confirmed sessions: checkpoint size, encode,
//!   decode, restore (decode + `Core::restore`), and the raw inputs replayed
//!   into a fresh core;
//! - 100 000 sessions as 4 instances × 25 000 (one instance holds at most
//!   32 256 audio sessions per media IP, and the standby replays each
//!   active's log separately), each with its own config and secret, restored
//!   one after the other and on 2 threads (2 instances each).
//!
//! Every timed step is repeated `CHECKPOINT_BENCH_REPS` times (default 5);
//! the median and the best are printed. Results are dropped outside the timed
//! sections. Every restored state is checked equal to the live one.
//!
//! Run: `cargo bench -p sip-control --bench checkpoint`
//! (`CHECKPOINT_BENCH_ONLY=10k` or `=100k` runs one set-up.)

use sip_control::{Core, CoreConfig, CoreState};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

mod workload;

/// The system allocator, counting allocations while `COUNTING` is set (one
/// untimed decode per set-up), to tell how many allocations a restore makes
/// per session.
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size(), Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (count, bytes) made by one `restore` of `bytes`.
fn allocations(cfg: &CoreConfig, bytes: &[u8]) -> (usize, usize) {
    ALLOCS.store(0, Relaxed);
    ALLOC_BYTES.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let core = restore(cfg, bytes);
    COUNTING.store(false, Relaxed);
    drop(core);
    (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed))
}

/// Median and best of `reps` runs of `f`; `f` returns something to drop
/// after the clock stopped.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut all = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = f();
        all.push(t.elapsed());
        drop(out);
    }
    all.sort();
    (all[all.len() / 2], all[0])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn restore(cfg: &CoreConfig, bytes: &[u8]) -> Core {
    let state: CoreState = rmp_serde::from_slice(bytes).expect("state decodes");
    Core::restore(cfg.clone(), state).expect("restores")
}

/// One instance's checkpoint and how it was made.
struct Instance {
    cfg: CoreConfig,
    bytes: Vec<u8>,
    sessions: usize,
    raw: Duration,
    inputs: usize,
}

fn instance(cfg: CoreConfig, prefix: &str, sessions: usize) -> (Instance, Core) {
    let inputs = workload::record_with(cfg.clone(), prefix, sessions, workload::Until::Confirmed);
    let t = Instant::now();
    let live = workload::run_with(cfg.clone(), &inputs);
    let raw = t.elapsed();
    assert_eq!(live.session_count(), sessions);
    let bytes = rmp_serde::to_vec(live.state()).expect("state encodes");
    let restored = restore(&cfg, &bytes);
    assert_eq!(
        restored.state(),
        live.state(),
        "checkpoint round trip is exact"
    );
    let inst = Instance {
        cfg,
        bytes,
        sessions,
        raw,
        inputs: inputs.len(),
    };
    (inst, live)
}

fn one_instance(reps: usize) {
    const N: usize = 10_000;
    let inputs = workload::record(N, workload::Until::Confirmed);
    let cfg = workload::bench_config();
    let (raw, raw_best) = time(reps, || workload::run(&inputs));
    let live = workload::run(&inputs);
    assert_eq!(live.session_count(), N);
    let (encode, encode_best) = time(reps, || rmp_serde::to_vec(live.state()).expect("encodes"));
    let bytes = rmp_serde::to_vec(live.state()).expect("state encodes");
    let (decode, decode_best) = time(reps, || {
        rmp_serde::from_slice::<CoreState>(&bytes).expect("decodes")
    });
    let (rest, rest_best) = time(reps, || restore(&cfg, &bytes));
    assert_eq!(restore(&cfg, &bytes).state(), live.state());
    let (allocs, alloc_bytes) = allocations(&cfg, &bytes);
    println!(
        "1 instance × {N} sessions: checkpoint {:.2} MB ({} B/session)",
        bytes.len() as f64 / 1e6,
        bytes.len() / N
    );
    println!(
        "  restore allocates {:.1} times per session ({} B/session)",
        allocs as f64 / N as f64,
        alloc_bytes / N
    );
    println!(
        "  encode            median {:>7.1} ms  best {:>7.1} ms",
        ms(encode),
        ms(encode_best)
    );
    println!(
        "  decode only       median {:>7.1} ms  best {:>7.1} ms",
        ms(decode),
        ms(decode_best)
    );
    println!(
        "  restore           median {:>7.1} ms  best {:>7.1} ms  = {:>8.0} (best {:>8.0}) sessions/s",
        ms(rest),
        ms(rest_best),
        rate(N, rest),
        rate(N, rest_best)
    );
    println!(
        "  raw replay ({} inputs) median {:>7.1} ms  best {:>7.1} ms  = {:>8.0} (best {:>8.0}) sessions/s",
        inputs.len(),
        ms(raw),
        ms(raw_best),
        rate(N, raw),
        rate(N, raw_best)
    );
}

fn four_instances(reps: usize) {
    const PER: usize = 25_000;
    const K: u8 = 4;
    let total = PER * usize::from(K);
    let mut insts = Vec::new();
    let mut lives = Vec::new();
    for n in 0..K {
        let (inst, live) = instance(workload::instance_config(n), &format!("i{n}"), PER);
        insts.push(inst);
        lives.push(live);
    }
    let bytes: usize = insts.iter().map(|i| i.bytes.len()).sum();
    let raw: Duration = insts.iter().map(|i| i.raw).sum();
    let inputs: usize = insts.iter().map(|i| i.inputs).sum();
    println!(
        "{K} instances × {PER} sessions: checkpoints {:.2} MB in all ({} B/session)",
        bytes as f64 / 1e6,
        bytes / total
    );

    let (seq, seq_best) = time(reps, || {
        insts
            .iter()
            .map(|i| restore(&i.cfg, &i.bytes))
            .collect::<Vec<_>>()
    });
    println!(
        "  restore, sequential   median {:>7.1} ms  best {:>7.1} ms  = {:>8.0} (best {:>8.0}) sessions/s",
        ms(seq),
        ms(seq_best),
        rate(total, seq),
        rate(total, seq_best)
    );

    let parallel = || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let mine: Vec<&Instance> = insts.iter().skip(t).step_by(2).collect();
                    s.spawn(move || {
                        mine.iter()
                            .map(|i| restore(&i.cfg, &i.bytes))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("restore thread"))
                .collect::<Vec<_>>()
        })
    };
    let (par, par_best) = time(reps, parallel);
    println!(
        "  restore, 2 threads    median {:>7.1} ms  best {:>7.1} ms  = {:>8.0} (best {:>8.0}) sessions/s",
        ms(par),
        ms(par_best),
        rate(total, par),
        rate(total, par_best)
    );
    // The parallel path restores the same states (each instance its own).
    let restored = parallel();
    let mut restored: Vec<&Core> = restored.iter().collect();
    restored.sort_by(|a, b| a.config().instance.cmp(&b.config().instance));
    for (r, l) in restored.iter().zip(&lives) {
        assert_eq!(r.config().instance, l.config().instance);
        assert_eq!(r.state(), l.state(), "parallel restore is exact");
    }
    println!(
        "  (raw replay of the {inputs} inputs, once, one after the other: {:.1} ms = {:.0} sessions/s; each instance ~{} sessions)",
        ms(raw),
        rate(total, raw),
        insts[0].sessions
    );
}

fn main() {
    let reps = std::env::var("CHECKPOINT_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(5);
    let only = std::env::var("CHECKPOINT_BENCH_ONLY").unwrap_or_default();
    // `cargo bench` passes `--bench`; any other argument is a filter we ignore.
    if only != "100k" {
        one_instance(reps);
    }
    if only != "10k" {
        four_instances(reps);
    }
}
