//! Keeping a standby's idle media plane in step with a protected active's.
//!
//! While hot, the standby's replica knows every pinhole of the active's
//! sessions. [`Presync`] installs them in the standby's (idle) plane ahead
//! of a failure — bound with freebind on the active's service addresses,
//! which the standby does not hold yet, so no packet can reach them; with
//! the XDP backend they go into the idle plane's part of the pinhole map (no
//! socket), switched on at takeover — and
//! follows the replica's snapshots with a diff (upsert what is new or
//! changed, remove what ended). A takeover then applies only the delta of
//! the records drained after the last snapshot ([`apply_diff`]), instead of
//! binding every session's sockets on the critical path.
//!
//! The process's descriptors (XDP: map entries) are shared by all protected
//! actives' planes: a [`Budget`] caps the pre-installed pinholes; the rest
//! are installed at takeover (logged).
//!
//! Not here: the events of the idle plane (gated in `standby_role`), the
//! replica itself (`standby::replica`).

use media_plane::{MediaPlane, PinholeId, PinholeOp, PinholeSpec};
use standby::replica::PinholeSnapshot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// What a plane holds: pinhole id → the spec it was installed with.
pub type Installed = HashMap<PinholeId, PinholeSpec>;

/// Pre-installed pinholes across all of the process's idle planes.
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
}

impl Budget {
    /// At most `cap` pinholes.
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            cap,
        })
    }

    fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.cap).then_some(u + 1)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

pub use crate::ifaddrs::is_local;

/// What one diff did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// New pinholes installed.
    pub added: usize,
    /// Existing pinholes whose spec changed.
    pub updated: usize,
    /// Pinholes removed (their session or stream ended).
    pub removed: usize,
    /// Not installed for lack of budget (left for the takeover).
    pub deferred: usize,
    /// Upserts the plane refused (after retries).
    pub failed: usize,
    /// The last refusal, for the log.
    pub last_error: Option<String>,
}

/// Make `plane` hold exactly `want` (as far as `budget` allows): removes
/// first (they free descriptors and ports), then upserts of what is new or
/// changed. An upsert refused because a port is still held by a pinhole that
/// moves away later in the same pass is retried. `stop` ends the pass early
/// (what was done is recorded in `installed`).
pub fn apply_diff(
    plane: &MediaPlane,
    want: &HashMap<PinholeId, PinholeSpec>,
    installed: &mut Installed,
    budget: Option<&Budget>,
    stop: Option<&AtomicBool>,
) -> DiffStats {
    let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut st = DiffStats::default();
    let gone: Vec<PinholeId> = installed
        .keys()
        .filter(|id| !want.contains_key(id))
        .copied()
        .collect();
    for id in gone {
        if stopped() {
            return st;
        }
        // Removing never fails (unknown ids are a no-op).
        let _ = plane.apply(&PinholeOp::Remove(id));
        installed.remove(&id);
        st.removed += 1;
    }
    if let Some(b) = budget {
        b.give(st.removed);
    }
    let mut todo: Vec<&PinholeSpec> = want
        .values()
        .filter(|s| installed.get(&s.id) != Some(*s))
        .collect();
    // Retry refused upserts while a pass makes progress (a port may be
    // freed by another pinhole's move later in the pass).
    for _pass in 0..3 {
        let mut refused = Vec::new();
        for spec in todo {
            if stopped() {
                return st;
            }
            let new = !installed.contains_key(&spec.id);
            if new && budget.is_some_and(|b| !b.take()) {
                st.deferred += 1;
                continue;
            }
            match plane.apply(&PinholeOp::Upsert(spec.clone())) {
                Ok(()) => {
                    installed.insert(spec.id, spec.clone());
                    if new {
                        st.added += 1;
                    } else {
                        st.updated += 1;
                    }
                }
                Err(e) => {
                    if new {
                        if let Some(b) = budget {
                            b.give(1);
                        }
                    }
                    st.last_error = Some(format!("pinhole {}: {e}", spec.id));
                    refused.push(spec);
                }
            }
        }
        let progress = refused.len() < want.len().max(1);
        todo = refused;
        if todo.is_empty() || !progress {
            break;
        }
    }
    st.failed = todo.len();
    st
}

/// A task keeping one idle plane in step with a hot replica's snapshots.
pub struct Presync {
    stop: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Installed>,
}

impl Presync {
    /// Start following `snapshots` into `plane` (which must bind with
    /// freebind: the addresses are not ours yet).
    pub fn spawn(
        instance: String,
        plane: Arc<MediaPlane>,
        snapshots: watch::Receiver<PinholeSnapshot>,
        budget: Arc<Budget>,
    ) -> Presync {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            instance,
            plane,
            snapshots,
            budget,
            stop.clone(),
            stop_rx,
        ));
        Presync {
            stop,
            stop_tx,
            task,
        }
    }

    /// Stop (an ongoing pass ends at the next pinhole) and hand back what the
    /// plane holds.
    pub async fn stop(self) -> Installed {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        match self.task.await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "media pre-install task failed; the takeover installs every pinhole");
                Installed::new()
            }
        }
    }
}

async fn run(
    instance: String,
    plane: Arc<MediaPlane>,
    mut snapshots: watch::Receiver<PinholeSnapshot>,
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
    mut stop_rx: watch::Receiver<bool>,
) -> Installed {
    let mut installed = Installed::new();
    let mut deferred_logged = false;
    loop {
        let want = snapshots.borrow_and_update().clone();
        let (p, b, s) = (plane.clone(), budget.clone(), stop.clone());
        let job = tokio::task::spawn_blocking(move || {
            let st = apply_diff(&p, &want, &mut installed, Some(&b), Some(&s));
            (installed, st)
        });
        let st;
        (installed, st) = match job.await {
            Ok(r) => r,
            Err(e) => {
                warn!(%instance, error = %e, "media pre-install pass failed; the takeover installs every pinhole");
                return Installed::new();
            }
        };
        if st.added + st.updated + st.removed + st.failed > 0 {
            debug!(%instance, added = st.added, updated = st.updated, removed = st.removed,
                failed = st.failed, held = installed.len(), "media pre-install pass");
        }
        if st.failed > 0 {
            warn!(%instance, failed = st.failed, error = st.last_error.as_deref().unwrap_or(""),
                "pinholes not pre-installed (retried on the next pass and at takeover)");
        }
        if st.deferred > 0 && !deferred_logged {
            info!(%instance, deferred = st.deferred, held = installed.len(), budget = budget.cap,
                "media pre-install reached the descriptor budget (all protected actives together); the remaining pinholes are installed at takeover");
            deferred_logged = true;
        }
        if stop.load(Ordering::Relaxed) {
            return installed;
        }
        tokio::select! {
            _ = stop_rx.changed() => return installed,
            r = snapshots.changed() => if r.is_err() { return installed },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_plane::{Leg, MediaConfig};
    use std::net::SocketAddr;

    fn spec(session: u64, port: u16, remote: Option<&str>) -> PinholeSpec {
        let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let c: SocketAddr = format!("127.0.0.1:{}", port + 2).parse().unwrap();
        PinholeSpec {
            id: PinholeId { session, stream: 0 },
            access: Leg {
                local: a,
                remote_rtp: remote.map(|r| r.parse().unwrap()),
                remote_rtcp: None,
                latch_ip: None,
            },
            core: Leg {
                local: c,
                remote_rtp: Some("127.0.0.1:9".parse().unwrap()),
                remote_rtcp: None,
                latch_ip: None,
            },
        }
    }

    fn plane_holds(plane: &MediaPlane, want: &HashMap<PinholeId, PinholeSpec>) {
        assert_eq!(plane.pinhole_count(), want.len(), "no stale pinholes");
        for (id, s) in want {
            assert_eq!(plane.pinhole_spec(*id).as_ref(), Some(s), "pinhole {id}");
        }
    }

    /// After the last diff the plane holds exactly the core's pinholes: new
    /// ones added, ended ones removed, latched remotes kept; the budget
    /// defers the excess to the unbounded (takeover) diff.
    #[test]
    fn diff_makes_the_plane_hold_exactly_the_wanted_pinholes() {
        let plane = MediaPlane::start_kernel(
            MediaConfig {
                workers: 1,
                ..MediaConfig::default()
            },
            Box::new(|_| {}),
        )
        .unwrap();
        // Ports from a range unlikely to be in use; 4 per pinhole.
        let base = 47_000 + (std::process::id() % 1000) as u16 * 8;
        let mut want: HashMap<_, _> = (0..3)
            .map(|i| spec(i, base + (i as u16) * 4 * 8, None))
            .map(|s| (s.id, s))
            .collect();
        let budget = Budget::new(2);
        let mut installed = Installed::new();
        let st = apply_diff(&plane, &want, &mut installed, Some(&budget), None);
        assert_eq!((st.added, st.deferred, st.failed), (2, 1, 0));
        assert_eq!(plane.pinhole_count(), 2);

        // The session 0 ends, session 1 latches its access remote, a new
        // session 7 arrives; the takeover's diff has no budget.
        want.remove(&PinholeId {
            session: 0,
            stream: 0,
        });
        let latched = spec(1, base + 32, Some("127.0.0.2:4000"));
        want.insert(latched.id, latched.clone());
        let new = spec(7, base + 200, None);
        want.insert(new.id, new);
        let st = apply_diff(&plane, &want, &mut installed, None, None);
        assert_eq!(st.failed, 0, "{:?}", st.last_error);
        plane_holds(&plane, &want);
        assert_eq!(installed, want);
        assert_eq!(
            plane
                .pinhole_spec(latched.id)
                .and_then(|s| s.access.remote_rtp),
            Some("127.0.0.2:4000".parse().unwrap())
        );
        // Nothing to do the second time.
        let st = apply_diff(&plane, &want, &mut installed, None, None);
        assert_eq!(st, DiffStats::default());
        plane.shutdown();
    }
}
