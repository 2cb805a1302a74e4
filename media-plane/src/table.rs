//! The pinhole table and the shared per-packet logic every backend runs.
//!
//! Lookup is by local address (IP + port): one slot per port number, each an
//! `ArcSwapOption` holding the (usually one-element) list of pinhole legs
//! bound to that port on some local IP. Readers take no lock: a slot load is
//! an atomic pointer read. Writers (the control plane, serialised by the
//! caller) replace a slot's list copy-on-write, so an `apply` never stalls a
//! worker and a worker never sees a half-updated pinhole.
//!
//! A [`Pinhole`] holds its current [`Entry`] (an immutable snapshot: spec,
//! latch state and the backend's I/O handles) in an `ArcSwap`, plus atomic
//! counters and its last-activity time. Upserts and latches swap the entry;
//! counters live outside it and survive both.

use crate::counters::{DirStats, PinholeCounters, WorkerCounters};
use crate::forward::{decide, Arrival, LatchPending, PortKind, Reason, Verdict};
use crate::model::{MediaEvent, PinholeId, PinholeSpec, Side};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Callback receiving media events (latches, inactivity). Called on worker
/// and scanner threads: it must be cheap and must not block (e.g. push into
/// a channel).
pub type EventSink = Box<dyn Fn(MediaEvent) + Send + Sync>;

/// An immutable snapshot of a pinhole's forwarding state.
pub struct Entry<H> {
    /// Addresses as installed, with latched remotes applied.
    pub spec: PinholeSpec,
    /// Which (leg, port kind) may still latch.
    pub pending: LatchPending,
    /// The backend's handles for this pinhole's local ports.
    pub io: Arc<H>,
}

/// One media stream's relay state.
pub struct Pinhole<H> {
    /// Which stream.
    pub id: PinholeId,
    pub(crate) state: ArcSwap<Entry<H>>,
    access_in: DirStats,
    core_in: DirStats,
    /// Milliseconds on the plane's [`Clock`] of the last accepted packet
    /// (creation time until one arrives).
    last_activity: AtomicU64,
}

impl<H> Pinhole<H> {
    pub(crate) fn new(entry: Entry<H>, now_ms: u64) -> Self {
        Pinhole {
            id: entry.spec.id,
            state: ArcSwap::from_pointee(entry),
            access_in: DirStats::default(),
            core_in: DirStats::default(),
            last_activity: AtomicU64::new(now_ms),
        }
    }

    fn dir(&self, side: Side) -> &DirStats {
        match side {
            Side::Access => &self.access_in,
            Side::Core => &self.core_in,
        }
    }

    /// Last activity on the plane clock (ms).
    pub(crate) fn last_activity(&self) -> u64 {
        self.last_activity.load(Relaxed)
    }

    /// Count `now_ms` as activity (the inactivity timeout restarts).
    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_activity.fetch_max(now_ms, Relaxed);
    }

    /// The current entry.
    pub fn entry(&self) -> Arc<Entry<H>> {
        self.state.load_full()
    }

    pub(crate) fn counters(&self, clock: &Clock) -> PinholeCounters {
        PinholeCounters {
            access_in: self.access_in.snapshot(),
            core_in: self.core_in.snapshot(),
            last_activity_ms: clock.to_unix_ms(self.last_activity()),
        }
    }
}

impl Pinhole<()> {
    /// A pinhole with no I/O handles (benchmarks, raw-frame backends that
    /// keep their own port state).
    pub fn without_io(spec: PinholeSpec) -> Pinhole<()> {
        Pinhole::new(
            Entry {
                pending: LatchPending::from_spec(&spec),
                spec,
                io: Arc::new(()),
            },
            0,
        )
    }
}

/// Monotonic milliseconds since the plane started, convertible to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    unix_start_ms: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        let unix_start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            unix_start_ms,
        }
    }

    /// Milliseconds since start.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Unix time (ms) of a plane-clock reading.
    pub fn to_unix_ms(&self, ms: u64) -> u64 {
        self.unix_start_ms.saturating_add(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// One leg port of a pinhole bound at a local address.
pub struct Binding<H> {
    /// Local IP (the port is the slot index).
    pub ip: IpAddr,
    /// Which leg.
    pub side: Side,
    /// RTP or RTCP port.
    pub kind: PortKind,
    /// The pinhole.
    pub pinhole: Arc<Pinhole<H>>,
}

impl<H> Clone for Binding<H> {
    fn clone(&self) -> Self {
        Binding {
            ip: self.ip,
            side: self.side,
            kind: self.kind,
            pinhole: self.pinhole.clone(),
        }
    }
}

/// Local address → pinhole leg. See the module docs.
pub struct PinholeTable<H> {
    slots: Box<[ArcSwapOption<Vec<Binding<H>>>]>,
}

impl<H> Default for PinholeTable<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H> PinholeTable<H> {
    /// An empty table (one slot per port number).
    pub fn new() -> Self {
        let slots = (0..=u16::MAX).map(|_| ArcSwapOption::empty()).collect();
        PinholeTable { slots }
    }

    /// Run `f` on the binding of `local`, if any. Lock-free.
    #[inline]
    pub fn with<R>(&self, local: SocketAddr, f: impl FnOnce(&Binding<H>) -> R) -> Option<R> {
        let g = self.slots[usize::from(local.port())].load();
        let list = g.as_ref()?;
        list.iter().find(|b| b.ip == local.ip()).map(f)
    }

    /// Bind `local` to a pinhole leg, replacing any previous binding of
    /// that exact address. Control plane only; callers serialise writers.
    pub fn bind(&self, local: SocketAddr, side: Side, kind: PortKind, pinhole: Arc<Pinhole<H>>) {
        let slot = &self.slots[usize::from(local.port())];
        let mut list: Vec<Binding<H>> = slot
            .load()
            .as_ref()
            .map(|l| l.iter().filter(|b| b.ip != local.ip()).cloned().collect())
            .unwrap_or_default();
        list.push(Binding {
            ip: local.ip(),
            side,
            kind,
            pinhole,
        });
        slot.store(Some(Arc::new(list)));
    }

    /// Remove the binding of `local` if it belongs to `id`.
    pub fn unbind(&self, local: SocketAddr, id: PinholeId) {
        let slot = &self.slots[usize::from(local.port())];
        let cur = slot.load_full();
        let Some(cur) = cur else { return };
        let list: Vec<Binding<H>> = cur
            .iter()
            .filter(|b| !(b.ip == local.ip() && b.pinhole.id == id))
            .cloned()
            .collect();
        slot.store(if list.is_empty() {
            None
        } else {
            Some(Arc::new(list))
        });
    }

    /// The pinhole bound at `local`, if any.
    pub fn owner(&self, local: SocketAddr) -> Option<PinholeId> {
        self.with(local, |b| b.pinhole.id)
    }
}

/// The four local addresses of a spec in (side, kind) order:
/// access RTP, access RTCP, core RTP, core RTCP.
pub fn local_addrs(spec: &PinholeSpec) -> [(Side, PortKind, SocketAddr); 4] {
    [
        (Side::Access, PortKind::Rtp, spec.access.local),
        (Side::Access, PortKind::Rtcp, spec.access.local_rtcp()),
        (Side::Core, PortKind::Rtp, spec.core.local),
        (Side::Core, PortKind::Rtcp, spec.core.local_rtcp()),
    ]
}

/// Index of (side, kind) in [`local_addrs`] order.
#[inline]
pub fn port_index(side: Side, kind: PortKind) -> usize {
    let s = match side {
        Side::Access => 0,
        Side::Core => 2,
    };
    s + match kind {
        PortKind::Rtp => 0,
        PortKind::Rtcp => 1,
    }
}

/// What a backend does with a packet after [`Relay::process`].
pub enum Outcome<'a, H> {
    /// Send the payload from `from` (the other leg's local port, handle
    /// `io` at index [`port_index`]`(to_side, kind)`) to `to`.
    Forward {
        /// Local source address.
        from: SocketAddr,
        /// Destination.
        to: SocketAddr,
        /// The entry's I/O handles (valid for this call).
        io: &'a H,
        /// Leg the packet leaves on.
        to_side: Side,
        /// Port kind it leaves from.
        kind: PortKind,
    },
    /// Dropped (already counted).
    Drop(Reason),
}

/// State shared by the control plane, the workers and the scanner: the
/// table, the clock, the event sink and the per-worker totals. The per-packet
/// logic ([`Relay::process`]) lives here so every backend runs the same code.
pub struct Relay<H> {
    /// The pinhole table.
    pub table: PinholeTable<H>,
    /// The plane clock.
    pub clock: Clock,
    pub(crate) events: EventSink,
    pub(crate) workers: Box<[WorkerCounters]>,
}

impl<H> Relay<H> {
    /// A relay with `workers` counter slots (plus one for the control plane).
    pub fn new(workers: usize, events: EventSink) -> Self {
        Relay {
            table: PinholeTable::new(),
            clock: Clock::new(),
            events,
            workers: (0..workers.max(1) + 1)
                .map(|_| WorkerCounters::default())
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn counters(&self, worker: usize) -> &WorkerCounters {
        &self.workers[worker.min(self.workers.len() - 1)]
    }

    /// Count `n` forwarded packets / `bytes` on `worker`.
    #[inline]
    pub fn count_forwarded(&self, worker: usize, n: u64, bytes: u64) {
        self.counters(worker).forwarded(n, bytes);
    }

    /// Count a drop on `worker`.
    #[inline]
    pub fn count_drop(&self, worker: usize, r: Reason) {
        self.counters(worker).drop(r);
    }

    /// Decide what to do with `payload` received at `local` from `src`,
    /// apply a latch (report it), update counters and activity, and hand a
    /// forward to `send`. Returns the drop reason if dropped (counted).
    #[inline]
    pub fn process<R>(
        &self,
        worker: usize,
        local: SocketAddr,
        src: SocketAddr,
        payload: &[u8],
        now_ms: u64,
        send: impl FnOnce(Outcome<'_, H>) -> R,
    ) -> R {
        let mut send = Some(send);
        let mut reason = Reason::UnknownPort;
        let r = self.table.with(local, |b| {
            let ph = &b.pinhole;
            let arrival = Arrival {
                side: b.side,
                kind: b.kind,
                src,
            };
            let mut cur = ph.state.load();
            let verdict = loop {
                let v = decide(&cur.spec, cur.pending, &arrival, payload);
                let Verdict::Forward {
                    latched: Some(l), ..
                } = v
                else {
                    break v;
                };
                let (spec, pending) = l.apply(&cur.spec, cur.pending);
                let new = Arc::new(Entry {
                    spec,
                    pending,
                    io: cur.io.clone(),
                });
                let prev = ph.state.compare_and_swap(&*cur, new);
                if Arc::ptr_eq(&*prev, &*cur) {
                    (self.events)(MediaEvent::Latched {
                        id: ph.id,
                        side: l.side,
                        rtcp: l.kind == PortKind::Rtcp,
                        remote: l.remote,
                    });
                    tracing::info!(pinhole = %ph.id, side = %l.side, rtcp = (l.kind == PortKind::Rtcp), remote = %l.remote, "media latched");
                    cur = ph.state.load();
                    break v;
                }
                // Lost a race with an upsert or another latch: decide again.
                cur = ph.state.load();
            };
            match verdict {
                Verdict::Forward { from, to, .. } => {
                    ph.dir(b.side).accepted(payload.len());
                    if ph.last_activity.load(Relaxed) != now_ms {
                        ph.last_activity.store(now_ms, Relaxed);
                    }
                    let send = send.take()?;
                    Some(send(Outcome::Forward {
                        from,
                        to,
                        io: &cur.io,
                        to_side: b.side.other(),
                        kind: b.kind,
                    }))
                }
                Verdict::Drop(r) => {
                    ph.dir(b.side).dropped();
                    reason = r;
                    None
                }
            }
        });
        if let Some(Some(out)) = r {
            return out;
        }
        self.count_drop(worker, reason);
        match send.take() {
            Some(send) => send(Outcome::Drop(reason)),
            None => unreachable!("send is only taken on forward"),
        }
    }
}
