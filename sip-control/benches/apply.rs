//! `Core::apply` throughput: full calls (INVITE … BYE, with the transaction
//! timers that clean up after them) per second on one core, no I/O.
//!
//! Run: `cargo bench -p sip-control --bench apply`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod workload;

fn full_calls(c: &mut Criterion) {
    const CALLS: usize = 1000;
    let inputs = workload::record(CALLS, workload::Until::Ended);
    let end = workload::run(&inputs);
    assert_eq!(end.session_count(), 0, "workload must end every call");
    let mut g = c.benchmark_group("core_apply");
    g.throughput(Throughput::Elements(CALLS as u64));
    g.sample_size(20);
    g.bench_function("full_calls_1000", |b| b.iter(|| workload::run(&inputs)));
    g.finish();
}

criterion_group!(benches, full_calls);
criterion_main!(benches);
