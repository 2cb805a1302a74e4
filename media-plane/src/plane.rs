//! [`MediaPlane`]: the handle the daemon holds. Applies [`PinholeOp`]s
//! (control plane, any thread, serialised by a mutex that the packet path
//! never takes), exposes counters, runs the inactivity scanner, and owns the
//! backend's workers.

use crate::backend::PacketBackend;
use crate::counters::{MediaCounters, PinholeCounters};
use crate::error::MediaError;
use crate::forward::LatchPending;
use crate::kernel::KernelBackend;
use crate::model::{MediaEvent, PinholeId, PinholeOp, PinholeSpec};
use crate::table::{local_addrs, Entry, EventSink, Pinhole, Relay};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Media plane settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Packet worker threads (default: number of cores).
    pub workers: usize,
    /// A session with no accepted packet on any of its pinholes for this
    /// long is reported [`MediaEvent::Inactive`] (default 60 s).
    pub inactivity_timeout: Duration,
    /// How often the inactivity scanner runs (default 1 s).
    pub scan_interval: Duration,
    /// Datagrams per `recvmmsg`/`sendmmsg` (default 32).
    pub batch: usize,
    /// Released media sockets kept bound for reuse by later pinholes on the
    /// same port (kernel backend; default 0 = close at once, so a released
    /// port is free for others). Saves the bind/epoll/close work per call.
    pub keep_released: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            inactivity_timeout: Duration::from_secs(60),
            scan_interval: Duration::from_secs(1),
            batch: 32,
            keep_released: 0,
        }
    }
}

struct Control<H> {
    pinholes: HashMap<PinholeId, Arc<Pinhole<H>>>,
}

/// The plane, generic over its backend.
struct Plane<B: PacketBackend> {
    relay: Arc<Relay<B::Io>>,
    backend: B,
    control: Arc<Mutex<Control<B::Io>>>,
    scanner: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn validate(spec: &PinholeSpec) -> Result<(), MediaError> {
    let bad = |reason: &str| {
        Err(MediaError::InvalidSpec {
            id: spec.id,
            reason: reason.to_string(),
        })
    };
    let addrs = local_addrs(spec);
    for (side, _, a) in &addrs {
        if a.port() == 0 || a.port() == u16::MAX {
            return bad(&format!(
                "{side} local port {} leaves no RTCP port",
                a.port()
            ));
        }
    }
    for i in 0..addrs.len() {
        for j in i + 1..addrs.len() {
            if addrs[i].2 == addrs[j].2 {
                return bad(&format!("local address {} used twice", addrs[i].2));
            }
        }
    }
    Ok(())
}

impl<B: PacketBackend> Plane<B> {
    fn start(cfg: &MediaConfig, mut backend: B, events: EventSink) -> Result<Self, MediaError> {
        if cfg.scan_interval.is_zero() {
            return Err(MediaError::Config(
                "scan_interval must be greater than zero".into(),
            ));
        }
        let relay = Arc::new(Relay::new(cfg.workers, events));
        backend.start(relay.clone())?;
        let control = Arc::new(Mutex::new(Control {
            pinholes: HashMap::new(),
        }));
        let (tx, rx) = mpsc::channel();
        let scanner = {
            let relay = relay.clone();
            let control = control.clone();
            let timeout = cfg.inactivity_timeout.as_millis() as u64;
            let every = cfg.scan_interval;
            std::thread::Builder::new()
                .name("media-scan".into())
                .spawn(move || scan_loop(&relay, &control, timeout, every, &rx))
                .map_err(|source| MediaError::Io {
                    what: "spawning the inactivity scanner",
                    source,
                })?
        };
        Ok(Plane {
            relay,
            backend,
            control,
            scanner: Some((tx, scanner)),
        })
    }

    fn conflict(&self, addr: SocketAddr, id: PinholeId) -> Result<(), MediaError> {
        match self.relay.table.owner(addr) {
            Some(other) if other != id => Err(MediaError::PortInUse {
                addr,
                by: Some(other),
            }),
            _ => Ok(()),
        }
    }

    fn apply(&self, op: &PinholeOp) -> Result<(), MediaError> {
        let mut ctl = lock(&self.control);
        match op {
            PinholeOp::Upsert(spec) => {
                validate(spec)?;
                for (_, _, a) in local_addrs(spec) {
                    self.conflict(a, spec.id)?;
                }
                let table = &self.relay.table;
                if let Some(ph) = ctl.pinholes.get(&spec.id).cloned() {
                    let old = ph.entry();
                    let io = Arc::new(self.backend.open(spec, Some(&old.io))?);
                    let new_addrs = local_addrs(spec);
                    for (side, kind, a) in new_addrs {
                        table.bind(a, side, kind, ph.clone());
                    }
                    ph.state.store(Arc::new(Entry {
                        spec: spec.clone(),
                        pending: LatchPending::from_spec(spec),
                        io: io.clone(),
                    }));
                    self.backend.sync(&ph);
                    for (_, _, a) in local_addrs(&old.spec) {
                        if !new_addrs.iter().any(|(_, _, n)| *n == a) {
                            table.unbind(a, spec.id);
                        }
                    }
                    self.backend.close(&old.io, Some(&io));
                    tracing::debug!(pinhole = %spec.id, "pinhole updated");
                } else {
                    let io = Arc::new(self.backend.open(spec, None)?);
                    let ph = Arc::new(Pinhole::new(
                        Entry {
                            spec: spec.clone(),
                            pending: LatchPending::from_spec(spec),
                            io,
                        },
                        self.relay.clock.now_ms(),
                    ));
                    for (side, kind, a) in local_addrs(spec) {
                        table.bind(a, side, kind, ph.clone());
                    }
                    self.backend.sync(&ph);
                    ctl.pinholes.insert(spec.id, ph);
                    tracing::debug!(pinhole = %spec.id, access = %spec.access.local, core = %spec.core.local, "pinhole opened");
                }
                Ok(())
            }
            PinholeOp::Remove(id) => {
                if let Some(ph) = ctl.pinholes.remove(id) {
                    let entry = ph.entry();
                    for (_, _, a) in local_addrs(&entry.spec) {
                        self.relay.table.unbind(a, *id);
                    }
                    self.backend.close(&entry.io, None);
                    tracing::debug!(pinhole = %id, "pinhole closed");
                }
                Ok(())
            }
        }
    }

    fn counters(&self) -> MediaCounters {
        let mut out = MediaCounters::default();
        for w in self.relay.workers.iter() {
            w.add_to(&mut out);
        }
        self.backend.add_totals(&mut out);
        out
    }

    fn pinhole_counters(&self, id: PinholeId) -> Option<PinholeCounters> {
        let ph = self.pinhole(id)?;
        let mut c = ph.counters(&self.relay.clock);
        self.backend
            .add_pinhole_counters(&ph.entry().io, &mut c, &self.relay.clock);
        Some(c)
    }

    fn pinhole(&self, id: PinholeId) -> Option<Arc<Pinhole<B::Io>>> {
        lock(&self.control).pinholes.get(&id).cloned()
    }

    fn stop(&mut self) {
        if let Some((tx, t)) = self.scanner.take() {
            drop(tx);
            let _ = t.join();
        }
        self.backend.shutdown();
        let ids: Vec<PinholeId> = lock(&self.control).pinholes.keys().copied().collect();
        for id in ids {
            let _ = self.apply(&PinholeOp::Remove(id));
        }
    }
}

impl<B: PacketBackend> Drop for Plane<B> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn scan_loop<H>(
    relay: &Relay<H>,
    control: &Mutex<Control<H>>,
    timeout_ms: u64,
    every: Duration,
    stop: &mpsc::Receiver<()>,
) {
    let mut reported: HashSet<u64> = HashSet::new();
    let mut latest: HashMap<u64, u64> = HashMap::new();
    loop {
        match stop.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        latest.clear();
        {
            let ctl = lock(control);
            for (id, ph) in &ctl.pinholes {
                let t = ph.last_activity();
                let e = latest.entry(id.session).or_insert(t);
                *e = (*e).max(t);
            }
        }
        let now = relay.clock.now_ms();
        reported.retain(|s| latest.contains_key(s));
        for (&session, &last) in &latest {
            if now.saturating_sub(last) >= timeout_ms {
                if reported.insert(session) {
                    tracing::info!(
                        session,
                        idle_ms = now.saturating_sub(last),
                        "media inactive"
                    );
                    (relay.events)(MediaEvent::Inactive { session });
                }
            } else {
                reported.remove(&session);
            }
        }
    }
}

/// The backends a [`MediaPlane`] can run.
enum Inner {
    Kernel(Plane<KernelBackend>),
    Xdp(Plane<crate::xdp::backend::XdpBackend>),
    #[cfg(feature = "dpdk")]
    Dpdk(Plane<crate::dpdk::backend::DpdkBackend>),
}

/// Run `$e` on the plane whatever its backend.
macro_rules! each {
    ($self:expr, $p:ident => $e:expr) => {
        match &$self.inner {
            Inner::Kernel($p) => $e,
            Inner::Xdp($p) => $e,
            #[cfg(feature = "dpdk")]
            Inner::Dpdk($p) => $e,
        }
    };
}

/// The media plane. Create with [`MediaPlane::start_kernel`] (or, with the
/// `dpdk` feature, `MediaPlane::start_dpdk`); all methods take `&self` and
/// may be called from any thread.
pub struct MediaPlane {
    inner: Inner,
}

impl MediaPlane {
    /// Start the kernel-socket backend: raise the open-files limit, spawn
    /// `cfg.workers` packet threads and the inactivity scanner. Events
    /// (latches, inactivity) go to `events`.
    pub fn start_kernel(cfg: MediaConfig, events: EventSink) -> Result<MediaPlane, MediaError> {
        if cfg.workers == 0 {
            return Err(MediaError::Config("workers must be at least 1".into()));
        }
        let backend = KernelBackend::new(cfg.workers, cfg.batch).keep_released(cfg.keep_released);
        Ok(MediaPlane {
            inner: Inner::Kernel(Plane::start(&cfg, backend, events)?),
        })
    }

    /// Start (or attach to) the process's XDP program for the media
    /// addresses `addrs` (each with its port range) on the interfaces of
    /// `xdp`: the first XDP plane of a process (per network namespace) loads
    /// the program and attaches it to the interfaces (native mode where the
    /// driver supports it, else generic — logged); later ones share it and
    /// must pass the same settings. With `serve` the plane forwards at once
    /// (an active); without, only after [`MediaPlane::announce`] (a
    /// standby's idle plane, whose pinholes wait in the map). Fails — for the
    /// caller to fall back to [`MediaPlane::start_kernel`] — when the program
    /// is not built in, the kernel refuses it or it cannot attach.
    pub fn start_xdp(
        cfg: MediaConfig,
        xdp: &crate::xdp::XdpSettings,
        addrs: Vec<crate::xdp::XdpAddr>,
        serve: bool,
        events: EventSink,
    ) -> Result<MediaPlane, MediaError> {
        let backend =
            crate::xdp::backend::XdpBackend::new(xdp.clone(), addrs, serve, cfg.scan_interval);
        Ok(MediaPlane {
            inner: Inner::Xdp(Plane::start(&cfg, backend, events)?),
        })
    }

    /// XDP: the interfaces the program is attached to and in which mode
    /// (`native`/`generic`); empty for other backends.
    pub fn xdp_attached(&self) -> Vec<crate::xdp::backend::Attached> {
        match &self.inner {
            Inner::Xdp(p) => p.backend.attached(),
            _ => Vec::new(),
        }
    }

    /// XDP: pinholes the maps hold in all (all planes of the process
    /// together); `None` for other backends.
    pub fn xdp_capacity(&self) -> Option<usize> {
        match &self.inner {
            Inner::Xdp(p) => Some(p.backend.capacity()),
            _ => None,
        }
    }

    /// XDP: pinholes the maps can still take (all planes of the process);
    /// `None` for other backends.
    pub fn xdp_free_pinholes(&self) -> Option<usize> {
        match &self.inner {
            Inner::Xdp(p) => Some(p.backend.free_pinholes()),
            _ => None,
        }
    }

    /// XDP: the program's own totals for this plane (packets forwarded in
    /// the kernel, sent back out / redirected, sent up to user space, lost
    /// because the upcall ring was full); `None` for other backends.
    pub fn xdp_totals(&self) -> Option<crate::xdp::maps::Totals> {
        match &self.inner {
            Inner::Xdp(p) => Some(p.backend.totals()),
            _ => None,
        }
    }

    /// XDP: run the program once on the Ethernet `frame` as if it arrived
    /// on interface `ifindex` (see `XdpBackend::test_run`); `None` for
    /// other backends.
    pub fn xdp_test_run(
        &self,
        frame: &[u8],
        ifindex: u32,
    ) -> Option<Result<(u32, Vec<u8>), MediaError>> {
        match &self.inner {
            Inner::Xdp(p) => Some(p.backend.test_run(frame, ifindex)),
            _ => None,
        }
    }

    /// XDP: the program's cumulative run time and run count from the
    /// kernel's BPF statistics (non-zero only while `kernel.bpf_stats_enabled`
    /// is 1); `None` for other backends.
    pub fn xdp_program_stats(&self) -> Option<(Duration, u64)> {
        match &self.inner {
            Inner::Xdp(p) => p.backend.program_stats(),
            _ => None,
        }
    }

    /// Start (or attach to) the process's DPDK poll loop for the service
    /// (media) addresses `addrs`. The first DPDK plane of a process
    /// initialises the EAL and the ports of `dpdk`; later ones must pass the
    /// same settings. With `answer` the plane answers ARP/ND for `addrs`
    /// from the start (an active); without, only after
    /// [`MediaPlane::announce`] (a standby's idle plane). `cfg.workers` is
    /// ignored: one poll thread serves every plane of the process.
    #[cfg(feature = "dpdk")]
    pub fn start_dpdk(
        cfg: MediaConfig,
        dpdk: &crate::dpdk::DpdkSettings,
        addrs: Vec<(crate::model::Side, std::net::IpAddr)>,
        answer: bool,
        events: EventSink,
    ) -> Result<MediaPlane, MediaError> {
        let problems = dpdk.problems();
        if !problems.is_empty() {
            return Err(MediaError::Config(problems.join("; ")));
        }
        let backend = crate::dpdk::backend::DpdkBackend::new(dpdk.clone(), addrs, answer);
        let cfg = MediaConfig { workers: 1, ..cfg };
        Ok(MediaPlane {
            inner: Inner::Dpdk(Plane::start(&cfg, backend, events)?),
        })
    }

    /// Which backend runs this plane (`kernel`, `xdp` or `dpdk`).
    pub fn backend_name(&self) -> &'static str {
        match &self.inner {
            Inner::Kernel(_) => "kernel",
            Inner::Xdp(_) => "xdp",
            #[cfg(feature = "dpdk")]
            Inner::Dpdk(_) => "dpdk",
        }
    }

    /// For a plane whose data plane owns its addresses (DPDK): start
    /// answering ARP/ND for every service address and send a gratuitous ARP
    /// / unsolicited NA for each from the data plane at every offset of
    /// `schedule`; returns the addresses announced. The kernel backend
    /// returns an empty list: the kernel owns those addresses and the
    /// standby announces them from raw sockets.
    pub fn announce(&self, schedule: &[Duration]) -> Result<Vec<std::net::IpAddr>, MediaError> {
        match &self.inner {
            Inner::Kernel(_) => {
                let _ = schedule;
                Ok(Vec::new())
            }
            Inner::Xdp(p) => {
                p.backend.serve()?;
                Ok(Vec::new())
            }
            #[cfg(feature = "dpdk")]
            Inner::Dpdk(p) => p.backend.announce(schedule),
        }
    }

    /// Start relaying an idle plane's pinholes (XDP: a standby taking over,
    /// before its addresses are announced). No-op for the kernel backend
    /// (sockets relay once the addresses arrive) and DPDK (which starts
    /// with [`MediaPlane::announce`]).
    pub fn serve(&self) -> Result<(), MediaError> {
        match &self.inner {
            Inner::Xdp(p) => p.backend.serve(),
            _ => Ok(()),
        }
    }

    /// DPDK: the process's poll loop totals (packets received, packets sent,
    /// time spent in rounds that had packets); `None` for the kernel backend.
    pub fn poll_totals(&self) -> Option<(u64, u64, Duration)> {
        match &self.inner {
            Inner::Kernel(_) | Inner::Xdp(_) => None,
            #[cfg(feature = "dpdk")]
            Inner::Dpdk(p) => Some(p.backend.poll_totals()),
        }
    }

    /// Bind sockets of future pinholes with `IP_FREEBIND` / `IPV6_FREEBIND`,
    /// so addresses not (yet) configured on this host can be bound — for a
    /// standby preparing to take over. Off by default, so a missing address
    /// is reported as [`MediaError::AddressNotLocal`]. (No-op for DPDK,
    /// which binds no sockets.)
    pub fn set_freebind(&self, on: bool) {
        match &self.inner {
            Inner::Kernel(p) => p.backend.set_freebind(on),
            Inner::Xdp(_) => {}
            #[cfg(feature = "dpdk")]
            Inner::Dpdk(_) => {}
        }
    }

    /// Apply one operation. `Upsert` binds the pinhole's four local ports
    /// (access/core × RTP/RTCP) or, for an existing pinhole, swaps in the new
    /// addresses keeping counters (changed local ports are bound first, then
    /// the old ones closed; on error nothing changes). `Remove` closes the
    /// ports; removing an unknown pinhole is a no-op. Never stalls forwarding.
    pub fn apply(&self, op: &PinholeOp) -> Result<(), MediaError> {
        each!(self, p => p.apply(op))
    }

    /// Totals since start.
    pub fn counters(&self) -> MediaCounters {
        each!(self, p => p.counters())
    }

    /// Counters of one pinhole.
    pub fn pinhole_counters(&self, id: PinholeId) -> Option<PinholeCounters> {
        each!(self, p => p.pinhole_counters(id))
    }

    /// The pinhole as the packet path currently sees it (latched remotes
    /// applied).
    pub fn pinhole_spec(&self, id: PinholeId) -> Option<PinholeSpec> {
        each!(self, p => p.pinhole(id).map(|ph| ph.entry().spec.clone()))
    }

    /// Restart every pinhole's inactivity timeout now — for pinholes that
    /// were installed ahead of time (a standby's idle plane) and only start
    /// carrying media when it takes over.
    pub fn reset_activity(&self) {
        each!(self, p => {
            let now = p.relay.clock.now_ms();
            for ph in lock(&p.control).pinholes.values() {
                ph.touch(now);
            }
        })
    }

    /// Number of installed pinholes.
    pub fn pinhole_count(&self) -> usize {
        each!(self, p => lock(&p.control).pinholes.len())
    }

    /// Stop the scanner and workers, join them and close every socket.
    /// (Dropping the plane does the same.)
    pub fn shutdown(self) {
        drop(self);
    }
}
