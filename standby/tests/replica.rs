//! Hot replica against a real workload: a live core driven with real SIP
//! call flows appends every state-changing input to an `EmbeddedStore` (as
//! `bgf active` does); a `HotReplica` tails the store concurrently and must
//! hold exactly the live core's state — compared serialized — including
//! across a checkpoint + truncation, and a cold replica drained at the end
//! must agree too. A replica behind a truncation without checkpoint and a
//! damaged log are reported, never skipped.

#[path = "../../sip-control/tests/common/mod.rs"]
mod common;

use common::*;
use media_plane::Side;
use sip_control::msg::Message;
use standby::replica::{HotReplica, Replica, ReplicaError, TailState};
use state_log::embedded::EmbeddedStore;
use state_log::{Body, LogStore, Record, Seq};
use std::sync::Arc;
use std::time::Duration;

const INSTANCE: &str = "bgf1";

struct World {
    h: Harness,
    store: Arc<EmbeddedStore>,
    next_seq: Seq,
    logged: usize,
}

impl World {
    fn new(dir: &std::path::Path) -> World {
        World {
            h: Harness::new(),
            store: Arc::new(EmbeddedStore::open(dir).unwrap()),
            next_seq: 1,
            logged: 0,
        }
    }

    /// Append the inputs logged since the last flush (one batch).
    async fn flush(&mut self) {
        let recs: Vec<Record> = self.h.log[self.logged..]
            .iter()
            .map(|i| {
                let r = Record {
                    seq: self.next_seq,
                    epoch: 0,
                    body: Body::Input(i.clone()),
                };
                self.next_seq += 1;
                r
            })
            .collect();
        self.logged = self.h.log.len();
        if !recs.is_empty() {
            self.store.append(INSTANCE, 0, &recs).await.unwrap();
        }
    }

    async fn checkpoint_and_truncate(&mut self) {
        self.flush().await;
        let seq = self.next_seq;
        self.next_seq += 1;
        let cp = Record {
            seq,
            epoch: 0,
            body: Body::Checkpoint(rmp_serde::to_vec(self.h.core.state()).unwrap()),
        };
        self.store.append(INSTANCE, 0, &[cp]).await.unwrap();
        self.store.truncate_before(INSTANCE, seq).await.unwrap();
    }

    /// INVITE / 180 / 200 / ACK; returns the 200 as the UE saw it.
    fn call(&mut self, n: u32) -> Message {
        let call = format!("call{n}");
        let out = self.h.recv(
            Side::Access,
            UE,
            &sipp_invite(
                &call,
                &format!("z9hG4bK-{n}-1"),
                UE,
                6000 + 2 * (n % 500) as u16,
            ),
        );
        let inv = out
            .iter()
            .find(|s| s.side == Side::Core)
            .expect("INVITE forwarded")
            .msg
            .clone();
        let tag = format!("callee{n}");
        self.h.recv(
            Side::Core,
            NEXT_HOP,
            &respond(
                &inv,
                180,
                "Ringing",
                Some(&tag),
                Some("sip:svc@198.18.2.20:5060"),
                None,
            ),
        );
        let out = self.h.recv(
            Side::Core,
            NEXT_HOP,
            &respond(
                &inv,
                200,
                "OK",
                Some(&tag),
                Some("sip:svc@198.18.2.20:5060"),
                Some(&sdp_of("198.18.2.20", 7000 + 2 * (n % 500) as u16)),
            ),
        );
        let ok = out[0].msg.clone();
        let routes: Vec<String> = ok
            .headers_named("Record-Route")
            .map(str::to_string)
            .rev()
            .collect();
        let ack = in_dialog(
            "ACK",
            "sip:svc@198.18.2.20:5060",
            &routes,
            &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-{n}-ack"),
            ok.header("From").unwrap(),
            ok.header("To").unwrap(),
            &call,
            1,
            None,
        );
        self.h.recv(Side::Access, UE, &ack);
        ok
    }

    /// BYE from the core side, answered by the UE.
    fn bye(&mut self, n: u32, ok: &Message) {
        let routes: Vec<String> = ok
            .headers_named("Record-Route")
            .map(str::to_string)
            .collect();
        let bye = in_dialog(
            "BYE",
            "sip:sipp@198.18.1.100:5061",
            &routes,
            &format!("SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-bye{n}"),
            ok.header("To").unwrap(),
            ok.header("From").unwrap(),
            &format!("call{n}"),
            2,
            None,
        );
        let out = self.h.recv(Side::Core, NEXT_HOP, &bye);
        let fwd = out[0].msg.clone();
        self.h.recv(
            Side::Access,
            UE,
            &respond(&fwd, 200, "OK", None, None, None),
        );
    }
}

fn bytes(s: &sip_control::CoreState) -> Vec<u8> {
    rmp_serde::to_vec(s).unwrap()
}

async fn assert_caught_up(hot: &HotReplica, w: &World) {
    let last = w.next_seq - 1;
    let applied = hot.wait_applied(last, Duration::from_secs(20)).await;
    assert_eq!(
        applied,
        last,
        "hot replica did not catch up: {:?}",
        hot.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_replica_equals_live_core_across_checkpoint_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    let hot = HotReplica::spawn(w.store.clone(), Replica::new(w.h.cfg.clone()).unwrap());

    // Phase 1: 60 calls, every third ended, appended in small batches while
    // the replica tails.
    let mut oks = Vec::new();
    for n in 0..60 {
        oks.push((n, w.call(n)));
        if n % 3 == 2 {
            let (m, ok) = oks.remove(0);
            w.bye(m, &ok);
        }
        if n % 4 == 0 {
            w.flush().await;
        }
    }
    w.h.advance(40_000); // transactions end, timers fire
    w.flush().await;
    assert_caught_up(&hot, &w).await;
    assert!(w.h.core.session_count() > 20);

    // Phase 2: checkpoint + truncation, then more traffic.
    w.checkpoint_and_truncate().await;
    for n in 60..90 {
        oks.push((n, w.call(n)));
        if n % 2 == 0 {
            let (m, ok) = oks.remove(0);
            w.bye(m, &ok);
        }
        w.flush().await;
    }
    assert_caught_up(&hot, &w).await;
    let st = hot.status();
    assert_eq!(st.state, TailState::Current, "{st:?}");
    assert_eq!(st.lag, 0);
    assert_eq!(st.sessions, w.h.core.session_count());
    let replica = hot.stop().await.unwrap();
    assert_eq!(
        bytes(replica.state()),
        bytes(w.h.core.state()),
        "hot replica state differs from the live core"
    );

    // A replica that was stopped before the truncation resumes at the checkpoint.
    let mut cold = Replica::new(w.h.cfg.clone()).unwrap();
    let d = cold.drain(w.store.as_ref()).await.unwrap();
    assert_eq!(d.last_seq, w.next_seq - 1);
    assert_eq!(
        cold.checkpoints(),
        1,
        "cold replay starts at the checkpoint"
    );
    assert_eq!(bytes(cold.state()), bytes(w.h.core.state()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_past_a_replica_without_checkpoint_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    for n in 0..5 {
        w.call(n);
    }
    w.flush().await;
    let mut r = Replica::new(w.h.cfg.clone()).unwrap();
    r.step(w.store.as_ref(), 3).await.unwrap();
    assert_eq!(r.applied(), 3);
    // Truncate past the replica's position with no checkpoint at the cut.
    w.store.truncate_before(INSTANCE, 6).await.unwrap();
    match r.drain(w.store.as_ref()).await {
        Err(ReplicaError::Gap {
            expected: 4,
            got: 6,
            ..
        }) => {}
        other => panic!("expected a gap at 4, got {other:?}"),
    }
    assert_eq!(r.applied(), 3, "nothing skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_tail_reports_damage_and_does_not_advance_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    for n in 0..3 {
        w.call(n);
    }
    w.flush().await;
    let last = w.next_seq - 1;
    // A record that cannot be the next (epoch going back) stands in for damage.
    w.store
        .append(
            INSTANCE,
            0,
            &[Record {
                seq: last + 1,
                epoch: 0,
                body: Body::Checkpoint(vec![0xc1]),
            }],
        )
        .await
        .unwrap();
    let hot = HotReplica::spawn(w.store.clone(), Replica::new(w.h.cfg.clone()).unwrap());
    let mut st = hot.status();
    for _ in 0..500 {
        st = hot.status();
        if st.state == TailState::Broken {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(st.state, TailState::Broken, "{st:?}");
    assert_eq!(st.applied, last);
    let err = st.error.unwrap();
    assert!(
        err.contains(&format!("checkpoint at record {}", last + 1)),
        "{err}"
    );
    let r = hot.stop().await.unwrap();
    assert_eq!(r.applied(), last);
}
