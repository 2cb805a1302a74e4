//! Replay speed: how fast a standby rebuilds N live sessions from a
//! checkpoint (MessagePack of `CoreState`, as the state log stores it) and
//! from raw inputs (what a log without checkpoints costs).
//!
//! Run: `cargo bench -p sip-control --bench checkpoint`

use sip_control::{Core, CoreState};
use std::time::Instant;

mod workload;

fn main() {
    // One media IP per side holds at most 32 256 port pairs: 30 000 is the
    // largest round figure one instance can carry with one stream per call.
    for sessions in [10_000usize, 30_000] {
        let inputs = workload::record(sessions, workload::Until::Confirmed);
        let t = Instant::now();
        let live = workload::run(&inputs);
        let raw = t.elapsed();
        assert_eq!(live.session_count(), sessions);

        let t = Instant::now();
        let bytes = rmp_serde::to_vec(live.state()).expect("state encodes");
        let encode = t.elapsed();

        let t = Instant::now();
        let state: CoreState = rmp_serde::from_slice(&bytes).expect("state decodes");
        let restored = Core::restore(workload::bench_config(), state).expect("restores");
        let restore = t.elapsed();
        assert_eq!(
            restored.state(),
            live.state(),
            "checkpoint round trip is exact"
        );

        let per_s = |d: std::time::Duration| sessions as f64 / d.as_secs_f64();
        println!(
            "{sessions:>7} sessions: checkpoint {:>6.1} MB ({:>4} B/session) encode {:>7.1} ms | restore {:>7.1} ms = {:>9.0} sessions/s | replay of {} raw inputs {:>8.1} ms = {:>7.0} sessions/s",
            bytes.len() as f64 / 1e6,
            bytes.len() / sessions,
            encode.as_secs_f64() * 1e3,
            restore.as_secs_f64() * 1e3,
            per_s(restore),
            inputs.len(),
            raw.as_secs_f64() * 1e3,
            per_s(raw),
        );
    }
}
