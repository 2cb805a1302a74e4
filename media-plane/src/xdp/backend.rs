//! The XDP backend: loads the program, attaches it to the access and core
//! interfaces (native where the driver can, else generic), keeps the
//! pinhole map in step with the relay's table, and runs the one user-space
//! thread of the path: it reads the upcall ring (packets the program could
//! not decide: latches, unresolved next hops), runs them through
//! [`Relay::process`] — the same decision as every backend — sends them
//! from a raw IP socket, writes latches back into the map, and copies the
//! program's last-packet times into the pinholes (so the plane's inactivity
//! scanner and counters see kernel-forwarded packets).
//!
//! No descriptor per pinhole: the map holds the pinholes, the port pools
//! reserve the ports. A pinhole costs four map entries and one statistics
//! slot; [`MediaError::TooManyPinholes`] when `max_pinholes` are in use.

use super::maps::{self, Ap, Iface, LegPort, PhStats, Range, Totals, Upcall};
use super::sys;
use super::{XdpAddr, XdpMode, XdpSettings};
use crate::backend::PacketBackend;
use crate::counters::{MediaCounters, PinholeCounters};
use crate::error::MediaError;
use crate::forward::Reason;
use crate::model::PinholeSpec;
use crate::packet;
use crate::table::{local_addrs, Clock, Outcome, Pinhole, Relay};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues, RingBuf};
use aya::programs::{Xdp, XdpFlags};
use aya::{Ebpf, EbpfLoader};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cfg_err(msg: String) -> MediaError {
    MediaError::Config(msg)
}

/// Map entries kept beyond `4 × max_pinholes` for upserts that move ports
/// (old and new entries coexist for a moment).
const KEY_SLACK: u32 = 4096;

/// The XDP backend's handle for one pinhole: its statistics slot, plane and
/// the four keys it holds in the map.
pub struct XdpIo {
    slot: u32,
    plane: u32,
    keys: [Ap; 4],
    /// Set when the pinhole's entries left the map (removed, or replaced by
    /// an upsert on other ports): a late sync must not bring them back.
    closed: AtomicBool,
}

/// An interface the program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Interface name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// `native` or `generic`.
    pub mode: &'static str,
}

struct Maps {
    pinholes: BpfHashMap<MapData, Ap, LegPort>,
    ranges: Array<MapData, Range>,
    planes: Array<MapData, u32>,
    stats: PerCpuArray<MapData, PhStats>,
    activity: PerCpuArray<MapData, u64>,
    totals: PerCpuArray<MapData, Totals>,
    /// Ranges installed, in map order.
    range_list: Vec<Range>,
    /// Keys in the pinhole map.
    keys: u32,
}

/// A plane attached to the program.
struct PlaneReg {
    relay: Arc<Relay<XdpIo>>,
    addrs: Vec<XdpAddr>,
    /// CLOCK_MONOTONIC ns at the relay clock's zero.
    mono_base_ns: u64,
}

struct Slots {
    free: Vec<u32>,
    /// Slot → the pinhole using it.
    owner: Vec<Option<Weak<Pinhole<XdpIo>>>>,
}

/// State shared by the planes and the upcall thread.
struct Shared {
    maps: Mutex<Maps>,
    slots: Mutex<Slots>,
    planes: Mutex<Vec<Option<Arc<PlaneReg>>>>,
    raw4: OwnedFd,
    raw6: OwnedFd,
    activity_fd: OwnedFd,
    ncpus: usize,
    max_pinholes: u32,
    refresh: AtomicU64,
    stop: AtomicBool,
}

/// The process's program on one set of interfaces (per network namespace).
pub struct Runtime {
    shared: Arc<Shared>,
    ebpf: Mutex<Ebpf>,
    thread: Mutex<Option<JoinHandle<()>>>,
    settings: XdpSettings,
    netns: u64,
    attached: Vec<Attached>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        tracing::info!(interfaces = ?self.attached.iter().map(|a| &a.name).collect::<Vec<_>>(),
            "XDP media program detached");
    }
}

static RUNTIMES: Mutex<Vec<Weak<Runtime>>> = Mutex::new(Vec::new());

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, MediaError> {
    ebpf.take_map(name)
        .ok_or_else(|| cfg_err(format!("XDP program has no map {name}")))
}

fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> MediaError + '_ {
    move |e| cfg_err(format!("XDP map {what}: {e}"))
}

fn load(settings: &XdpSettings) -> Result<Arc<Runtime>, MediaError> {
    let obj = super::object().ok_or_else(|| {
        cfg_err("the XDP program is not built into this binary (clang and libbpf-dev were missing when it was compiled)".into())
    })?;
    let keys = settings
        .max_pinholes
        .saturating_mul(4)
        .saturating_add(KEY_SLACK);
    let ring = settings.upcall_ring_kib.saturating_mul(1024);
    let mut ebpf = EbpfLoader::new()
        .set_max_entries("PINHOLES", keys)
        .set_max_entries("STATS", settings.max_pinholes)
        .set_max_entries("ACTIVITY", settings.max_pinholes)
        .set_max_entries("UPCALLS", ring)
        .load(obj)
        .map_err(|e| cfg_err(format!("cannot load the XDP program: {e}")))?;
    // bpf_fib_lookup answers only for an interface with forwarding on; the
    // program asks as `lo` (see relay.bpf.c), so only lo gets it — the
    // media interfaces keep forwarding off and the host routes nothing.
    for f in [
        "/proc/sys/net/ipv4/conf/lo/forwarding",
        "/proc/sys/net/ipv6/conf/lo/forwarding",
    ] {
        let on = std::fs::read_to_string(f).is_ok_and(|v| v.trim() == "1");
        if !on {
            if let Err(e) = std::fs::write(f, "1") {
                return Err(cfg_err(format!("cannot enable {f} (the XDP next-hop lookup needs it; set it with sysctl where /proc/sys is read-only): {e}")));
            }
        }
    }
    let mut ifaces: BpfHashMap<MapData, u32, Iface> =
        BpfHashMap::try_from(take(&mut ebpf, "IFACES")?).map_err(map_err("IFACES"))?;
    let mut names: Vec<&str> = vec![settings.access_interface.as_str()];
    if settings.core_interface != settings.access_interface {
        names.push(settings.core_interface.as_str());
    }
    let mut found = Vec::new();
    for name in &names {
        let (idx, mac) = sys::interface(name)
            .map_err(|e| cfg_err(format!("media.xdp interface {name:?}: {e}")))?;
        ifaces
            .insert(idx, Iface { mac, pad: [0; 2] }, 0)
            .map_err(map_err("IFACES"))?;
        found.push((name.to_string(), idx));
    }
    let prog: &mut Xdp = ebpf
        .program_mut("bgf_relay")
        .ok_or_else(|| cfg_err("XDP program bgf_relay missing from the object".into()))?
        .try_into()
        .map_err(|e| cfg_err(format!("XDP program: {e}")))?;
    prog.load().map_err(|e| {
        // The verifier's log is long; its end says why.
        let e = e.to_string();
        let tail = e.get(e.len().saturating_sub(600)..).unwrap_or(&e);
        cfg_err(format!("the kernel refused the XDP program: …{tail}"))
    })?;
    let mut attached = Vec::new();
    for (name, idx) in found {
        let tries: &[(XdpFlags, &'static str)] = match settings.mode {
            XdpMode::Auto => &[
                (XdpFlags::DRV_MODE, "native"),
                (XdpFlags::SKB_MODE, "generic"),
            ],
            XdpMode::Native => &[(XdpFlags::DRV_MODE, "native")],
            XdpMode::Generic => &[(XdpFlags::SKB_MODE, "generic")],
        };
        let mut last = String::new();
        let mut ok = None;
        for (flags, mode) in tries {
            match prog.attach_to_if_index(idx, *flags) {
                Ok(_) => {
                    ok = Some(*mode);
                    break;
                }
                Err(e) => last = format!("{mode}: {e}"),
            }
        }
        let Some(mode) = ok else {
            return Err(cfg_err(format!(
                "cannot attach the XDP program to {name} ({last}); another XDP program may be attached, or the driver does not support this mode"
            )));
        };
        tracing::info!(interface = %name, ifindex = idx, mode, "XDP media program attached");
        attached.push(Attached {
            name,
            ifindex: idx,
            mode,
        });
    }
    let stats: PerCpuArray<MapData, PhStats> =
        PerCpuArray::try_from(take(&mut ebpf, "STATS")?).map_err(map_err("STATS"))?;
    let activity_map = take(&mut ebpf, "ACTIVITY")?;
    let activity_fd = match &activity_map {
        aya::maps::Map::PerCpuArray(d) => d.fd().as_fd().try_clone_to_owned().ok(),
        _ => None,
    }
    .ok_or_else(|| cfg_err("XDP map ACTIVITY is not a per-CPU array".into()))?;
    let activity: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(activity_map).map_err(map_err("ACTIVITY"))?;
    let maps = Maps {
        pinholes: BpfHashMap::try_from(take(&mut ebpf, "PINHOLES")?)
            .map_err(map_err("PINHOLES"))?,
        ranges: Array::try_from(take(&mut ebpf, "RANGES")?).map_err(map_err("RANGES"))?,
        planes: Array::try_from(take(&mut ebpf, "PLANES")?).map_err(map_err("PLANES"))?,
        stats,
        activity,
        totals: PerCpuArray::try_from(take(&mut ebpf, "TOTALS")?).map_err(map_err("TOTALS"))?,
        range_list: Vec::new(),
        keys: 0,
    };
    let ring = RingBuf::try_from(take(&mut ebpf, "UPCALLS")?).map_err(map_err("UPCALLS"))?;
    let io = |what: &'static str| move |source| MediaError::Io { what, source };
    let shared = Arc::new(Shared {
        maps: Mutex::new(maps),
        slots: Mutex::new(Slots {
            free: (0..settings.max_pinholes).rev().collect(),
            owner: (0..settings.max_pinholes).map(|_| None).collect(),
        }),
        planes: Mutex::new((0..maps::MAX_PLANES).map(|_| None).collect()),
        raw4: sys::raw_socket(true).map_err(io("raw IPv4 socket for upcalled media"))?,
        raw6: sys::raw_socket(false).map_err(io("raw IPv6 socket for upcalled media"))?,
        activity_fd,
        ncpus: aya::util::nr_cpus().map_err(|(w, e)| cfg_err(format!("{w}: {e}")))?,
        max_pinholes: settings.max_pinholes,
        refresh: AtomicU64::new(1000),
        stop: AtomicBool::new(false),
    });
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name("media-xdp".into())
        .spawn(move || upcall_loop(&sh, ring))
        .map_err(io("spawning the XDP upcall thread"))?;
    Ok(Arc::new(Runtime {
        shared,
        ebpf: Mutex::new(ebpf),
        thread: Mutex::new(Some(thread)),
        settings: settings.clone(),
        netns: sys::netns_id(),
        attached,
    }))
}

/// The process's runtime for `settings` in the calling thread's network
/// namespace: the running one, or a new one (program loaded and attached).
fn runtime(settings: &XdpSettings) -> Result<Arc<Runtime>, MediaError> {
    let ns = sys::netns_id();
    let mut g = lock(&RUNTIMES);
    g.retain(|w| w.strong_count() > 0);
    for w in g.iter() {
        if let Some(rt) = w.upgrade() {
            if rt.netns != ns {
                continue;
            }
            if rt.settings != *settings {
                return Err(cfg_err("media.xdp: this process already runs the XDP program in this network namespace with other settings — every plane of a process (every protected active of a standby) must use the same [media.xdp] section".into()));
            }
            return Ok(rt);
        }
    }
    let rt = load(settings)?;
    g.push(Arc::downgrade(&rt));
    Ok(rt)
}

impl Runtime {
    fn plane(&self, idx: u32) -> Option<Arc<PlaneReg>> {
        lock(&self.shared.planes)
            .get(idx as usize)
            .and_then(|p| p.clone())
    }

    /// The program's cumulative run time and run count (kernel BPF stats:
    /// zero unless `kernel.bpf_stats_enabled` is 1).
    pub fn program_stats(&self) -> Option<(Duration, u64)> {
        let e = lock(&self.ebpf);
        let prog: &Xdp = e.program("bgf_relay")?.try_into().ok()?;
        let info = prog.info().ok()?;
        Some((info.run_time(), info.run_count()))
    }
}

/// The XDP backend of one plane. See the module docs.
pub struct XdpBackend {
    settings: XdpSettings,
    addrs: Vec<XdpAddr>,
    serve_now: bool,
    refresh: Duration,
    rt: Option<Arc<Runtime>>,
    plane: Option<u32>,
}

impl XdpBackend {
    /// A backend relaying for the media addresses `addrs` (with their port
    /// ranges); with `serve_now` the plane forwards from the start (an
    /// active), else only after [`XdpBackend::serve`] (a standby's idle
    /// plane). Last-packet times are copied from the program every
    /// `refresh` (the plane's scan interval).
    pub fn new(
        settings: XdpSettings,
        addrs: Vec<XdpAddr>,
        serve_now: bool,
        refresh: Duration,
    ) -> XdpBackend {
        XdpBackend {
            settings,
            addrs,
            serve_now,
            refresh,
            rt: None,
            plane: None,
        }
    }

    fn rt(&self) -> Result<(&Arc<Runtime>, u32), MediaError> {
        match (&self.rt, self.plane) {
            (Some(rt), Some(p)) => Ok((rt, p)),
            _ => Err(cfg_err("the XDP media plane is not started".into())),
        }
    }

    /// Start forwarding this plane's pinholes (a standby taking over).
    pub fn serve(&self) -> Result<(), MediaError> {
        let (rt, p) = self.rt()?;
        lock(&rt.shared.maps)
            .planes
            .set(p, 1u32, 0)
            .map_err(map_err("PLANES"))
    }

    /// The interfaces the program is attached to, and how.
    pub fn attached(&self) -> Vec<Attached> {
        self.rt
            .as_ref()
            .map(|r| r.attached.clone())
            .unwrap_or_default()
    }

    /// Run the program once on `frame` as if it arrived on `ifindex`
    /// (`BPF_PROG_TEST_RUN`: nothing is sent; upcalls do go up): its
    /// verdict and the frame as it left it. For tests comparing the program
    /// with the relay's own decision.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>), MediaError> {
        let (rt, _) = self.rt()?;
        let e = lock(&rt.ebpf);
        let prog: &Xdp = e
            .program("bgf_relay")
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| cfg_err("XDP program bgf_relay missing".into()))?;
        let fd = prog
            .fd()
            .map_err(|e| cfg_err(format!("XDP program fd: {e}")))?;
        sys::test_run(fd.as_fd().as_raw_fd(), frame, ifindex).map_err(|source| MediaError::Io {
            what: "BPF_PROG_TEST_RUN",
            source,
        })
    }

    /// The program's run time and count (see [`Runtime::program_stats`]).
    pub fn program_stats(&self) -> Option<(Duration, u64)> {
        self.rt.as_ref().and_then(|r| r.program_stats())
    }

    /// Pinholes the maps hold in all (all planes of the process).
    pub fn capacity(&self) -> usize {
        self.rt
            .as_ref()
            .map_or(0, |r| r.shared.max_pinholes as usize)
    }

    /// This plane's program totals, summed over CPUs.
    pub fn totals(&self) -> Totals {
        let mut out = Totals::default();
        let Ok((rt, plane)) = self.rt() else {
            return out;
        };
        if let Ok(v) = lock(&rt.shared.maps).totals.get(&plane, 0) {
            for t in v.iter() {
                out.fwd_pkts += t.fwd_pkts;
                out.fwd_bytes += t.fwd_bytes;
                for i in 0..t.drops.len() {
                    out.drops[i] += t.drops[i];
                }
                out.upcalls += t.upcalls;
                out.upcalls_lost += t.upcalls_lost;
                out.tx += t.tx;
                out.redirect += t.redirect;
            }
        }
        out
    }

    /// Pinholes the maps can still take (all planes of the process).
    pub fn free_pinholes(&self) -> usize {
        self.rt
            .as_ref()
            .map_or(0, |r| lock(&r.shared.slots).free.len())
    }

    fn sum_stats(&self, slot: u32) -> PhStats {
        let mut out = PhStats::default();
        if let Some(rt) = &self.rt {
            if let Ok(v) = lock(&rt.shared.maps).stats.get(&slot, 0) {
                for c in v.iter() {
                    for i in 0..2 {
                        out.pkts[i] += c.pkts[i];
                        out.bytes[i] += c.bytes[i];
                        out.drops[i] += c.drops[i];
                    }
                }
            }
        }
        out
    }
}

impl PacketBackend for XdpBackend {
    type Io = XdpIo;

    fn start(&mut self, relay: Arc<Relay<XdpIo>>) -> Result<(), MediaError> {
        let problems = self.settings.problems();
        if !problems.is_empty() {
            return Err(cfg_err(problems.join("; ")));
        }
        let rt = runtime(&self.settings)?;
        let mono_base_ns = sys::monotonic_ns().saturating_sub(relay.clock.now_ms() * 1_000_000);
        let reg = Arc::new(PlaneReg {
            relay,
            addrs: self.addrs.clone(),
            mono_base_ns,
        });
        let idx = {
            let mut planes = lock(&rt.shared.planes);
            let Some(i) = planes.iter().position(Option::is_none) else {
                return Err(cfg_err(format!(
                    "the XDP program serves at most {} planes per process",
                    maps::MAX_PLANES
                )));
            };
            planes[i] = Some(reg);
            i as u32
        };
        {
            let mut m = lock(&rt.shared.maps);
            let mut ranges = m.range_list.clone();
            for a in &self.addrs {
                ranges.push(Range {
                    addr: maps::mapped(a.ip),
                    lo: a.port_min,
                    hi: a.port_max,
                    plane: idx + 1,
                });
            }
            if ranges.len() > maps::MAX_RANGES as usize {
                lock(&rt.shared.planes)[idx as usize] = None;
                return Err(cfg_err(format!(
                    "the XDP program holds at most {} media address ranges per process",
                    maps::MAX_RANGES
                )));
            }
            write_ranges(&mut m, ranges)?;
            m.planes
                .set(idx, u32::from(self.serve_now), 0)
                .map_err(map_err("PLANES"))?;
        }
        let ms = self.refresh.as_millis().clamp(10, 60_000) as u64;
        rt.shared.refresh.fetch_min(ms, Relaxed);
        tracing::info!(plane = idx, addresses = ?self.addrs.iter().map(|a| format!("{} {} {}-{}", a.side, a.ip, a.port_min, a.port_max)).collect::<Vec<_>>(),
            serving = self.serve_now, "XDP media plane attached");
        self.rt = Some(rt);
        self.plane = Some(idx);
        Ok(())
    }

    fn open(&self, spec: &PinholeSpec, prev: Option<&XdpIo>) -> Result<XdpIo, MediaError> {
        let (rt, plane) = self.rt()?;
        for (side, _, addr) in local_addrs(spec) {
            if !self
                .addrs
                .iter()
                .any(|a| a.side == side && a.ip == addr.ip())
            {
                return Err(MediaError::AddressNotLocal { addr });
            }
        }
        let keys = local_addrs(spec).map(|(_, _, a)| Ap::of(a));
        let slot = match prev {
            Some(p) => p.slot,
            None => {
                let s = lock(&rt.shared.slots)
                    .free
                    .pop()
                    .ok_or(MediaError::TooManyPinholes {
                        limit: rt.shared.max_pinholes as usize,
                    })?;
                // A reused slot starts from zero.
                let n = rt.shared.ncpus;
                let mut m = lock(&rt.shared.maps);
                if let Ok(v) = PerCpuValues::try_from(vec![PhStats::default(); n]) {
                    let _ = m.stats.set(s, v, 0);
                }
                if let Ok(v) = PerCpuValues::try_from(vec![0u64; n]) {
                    let _ = m.activity.set(s, v, 0);
                }
                s
            }
        };
        Ok(XdpIo {
            slot,
            plane,
            keys,
            closed: AtomicBool::new(false),
        })
    }

    fn sync(&self, ph: &Arc<Pinhole<XdpIo>>) {
        let Ok((rt, _)) = self.rt() else { return };
        sync_pinhole(&rt.shared, ph);
    }

    fn close(&self, io: &XdpIo, keep: Option<&XdpIo>) {
        let Ok((rt, _)) = self.rt() else { return };
        {
            let mut m = lock(&rt.shared.maps);
            io.closed.store(true, Relaxed);
            for k in &io.keys {
                if keep.is_some_and(|n| n.keys.contains(k)) {
                    continue;
                }
                if m.pinholes.remove(k).is_ok() {
                    m.keys = m.keys.saturating_sub(1);
                }
            }
        }
        if keep.is_none() {
            let mut s = lock(&rt.shared.slots);
            if let Some(o) = s.owner.get_mut(io.slot as usize) {
                *o = None;
            }
            s.free.push(io.slot);
        }
    }

    fn add_pinhole_counters(&self, io: &XdpIo, c: &mut PinholeCounters, clock: &Clock) {
        let st = self.sum_stats(io.slot);
        c.access_in.packets += st.pkts[0];
        c.access_in.bytes += st.bytes[0];
        c.access_in.drops += st.drops[0];
        c.core_in.packets += st.pkts[1];
        c.core_in.bytes += st.bytes[1];
        c.core_in.drops += st.drops[1];
        if let Some(rt) = &self.rt {
            if let Some(reg) = rt.plane(io.plane) {
                let last = lock(&rt.shared.maps)
                    .activity
                    .get(&io.slot, 0)
                    .map(|v| v.iter().copied().max().unwrap_or(0))
                    .unwrap_or(0);
                if last > reg.mono_base_ns {
                    let ms = clock.to_unix_ms((last - reg.mono_base_ns) / 1_000_000);
                    c.last_activity_ms = c.last_activity_ms.max(ms);
                }
            }
        }
    }

    fn add_totals(&self, out: &mut MediaCounters) {
        let t = self.totals();
        out.forwarded_packets += t.fwd_pkts;
        out.forwarded_bytes += t.fwd_bytes;
        for r in Reason::ALL {
            *out.drops.slot(r) += t.drops[r.index()];
        }
    }

    fn shutdown(&mut self) {
        let (Some(rt), Some(p)) = (self.rt.take(), self.plane.take()) else {
            return;
        };
        {
            let mut m = lock(&rt.shared.maps);
            let _ = m.planes.set(p, 0u32, 0);
            let ranges: Vec<Range> = m
                .range_list
                .iter()
                .filter(|r| r.plane != p + 1)
                .copied()
                .collect();
            let _ = write_ranges(&mut m, ranges);
        }
        lock(&rt.shared.planes)[p as usize] = None;
    }
}

/// Replace the range table with `ranges` (unused tail entries zeroed).
fn write_ranges(m: &mut Maps, ranges: Vec<Range>) -> Result<(), MediaError> {
    let n = ranges.len().max(m.range_list.len());
    for i in 0..n {
        let r = ranges.get(i).copied().unwrap_or_default();
        m.ranges.set(i as u32, r, 0).map_err(map_err("RANGES"))?;
    }
    m.range_list = ranges;
    Ok(())
}

/// Write `ph`'s current entry into the map (its four keys), unless the
/// pinhole has left the map meanwhile. The entry is loaded under the map
/// lock, so of two racing syncs the later one writes the latest state.
fn sync_pinhole(sh: &Shared, ph: &Arc<Pinhole<XdpIo>>) {
    let mut m = lock(&sh.maps);
    let e = ph.entry();
    if e.io.closed.load(Relaxed) {
        return;
    }
    for (k, v) in maps::leg_ports(&e.spec, e.pending, e.io.slot, e.io.plane) {
        let new = m.pinholes.get(&k, 0).is_err();
        if new && m.keys >= sh.max_pinholes.saturating_mul(4).saturating_add(KEY_SLACK) {
            tracing::error!(pinhole = %ph.id, "XDP pinhole map full; the stream is not relayed");
            continue;
        }
        match m.pinholes.insert(k, v, 0) {
            Ok(()) if new => m.keys += 1,
            Ok(()) => {}
            Err(e) => {
                tracing::error!(pinhole = %ph.id, error = %e, "XDP pinhole map update failed; the stream is not relayed")
            }
        }
    }
    drop(m);
    let mut s = lock(&sh.slots);
    if let Some(o) = s.owner.get_mut(e.io.slot as usize) {
        *o = Some(Arc::downgrade(ph));
    }
}

/// The upcall thread: packets from the ring, and last-packet times.
fn upcall_loop(sh: &Shared, mut ring: RingBuf<MapData>) {
    // SAFETY: epoll_create1 with a constant flag.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        tracing::error!(error = %std::io::Error::last_os_error(), "XDP upcall thread: epoll_create1 failed; latching and unresolved next hops will not work");
        return;
    }
    // SAFETY: fresh fd.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: valid fds and event.
    unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            ring.as_raw_fd(),
            &mut ev,
        )
    };
    let mut out = vec![0u8; maps::UPCALL_MAX + 64];
    let mut last_refresh = Instant::now();
    let mut seen: Vec<u64> = Vec::new();
    while !sh.stop.load(Relaxed) {
        // SAFETY: zeroed event buffer.
        let mut evs: [libc::epoll_event; 1] = unsafe { std::mem::zeroed() };
        // SAFETY: one event slot.
        unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), 1, 50) };
        let mut n = 0;
        while let Some(item) = ring.next() {
            handle_upcall(sh, &item, &mut out);
            n += 1;
            if n >= 4096 {
                break;
            }
        }
        let every = Duration::from_millis(sh.refresh.load(Relaxed));
        if last_refresh.elapsed() >= every {
            last_refresh = Instant::now();
            refresh_activity(sh, &mut seen);
        }
    }
}

fn handle_upcall(sh: &Shared, rec: &[u8], out: &mut [u8]) {
    if rec.len() < maps::UPCALL_HDR {
        return;
    }
    let len = usize::from(u16::from_ne_bytes([rec[4], rec[5]]));
    let why = Upcall::from_code(rec[6]);
    let Some(pkt) = rec.get(maps::UPCALL_HDR..maps::UPCALL_HDR + len) else {
        return;
    };
    let Ok(view) = packet::parse_udp(pkt) else {
        return;
    };
    let planes: Vec<Arc<PlaneReg>> = lock(&sh.planes).iter().flatten().cloned().collect();
    let Some(pl) = planes
        .iter()
        .find(|p| p.relay.table.owner(view.dst).is_some())
        .or_else(|| {
            planes
                .iter()
                .find(|p| p.addrs.iter().any(|a| a.ip == view.dst.ip()))
        })
    else {
        return;
    };
    let relay = &pl.relay;
    let payload = &pkt[view.payload_offset..view.payload_offset + view.payload_len];
    let now = relay.clock.now_ms();
    let fwd = relay.process(0, view.dst, view.src, payload, now, |o| match o {
        Outcome::Forward { from, to, .. } => Some((from, to)),
        Outcome::Drop(_) => None,
    });
    let Some((from, to)) = fwd else { return };
    if why == Upcall::Latch {
        if let Some(ph) = relay.table.with(view.dst, |b| b.pinhole.clone()) {
            sync_pinhole(sh, &ph);
        }
    }
    let sent = packet::build_udp(out, from, to, payload)
        .map_err(|e| e.to_string())
        .and_then(|n| {
            let fd = if to.is_ipv4() { &sh.raw4 } else { &sh.raw6 };
            sys::send_raw(fd, &out[..n], to).map_err(|e| e.to_string())
        });
    match sent {
        Ok(()) => relay.count_forwarded(0, 1, payload.len() as u64),
        Err(e) => {
            tracing::debug!(%from, %to, error = %e, "upcalled media send failed");
            relay.count_drop(0, Reason::SendError);
        }
    }
}

/// Copy the program's last-packet times into the pinholes (one batched read
/// of the per-CPU activity array).
fn refresh_activity(sh: &Shared, seen: &mut Vec<u64>) {
    let owners: Vec<Option<Weak<Pinhole<XdpIo>>>> = lock(&sh.slots).owner.clone();
    let planes: Vec<Option<Arc<PlaneReg>>> = lock(&sh.planes).clone();
    seen.resize(owners.len(), 0);
    let ncpus = sh.ncpus;
    let r = sys::read_percpu_array(
        sh.activity_fd.as_raw_fd(),
        sh.max_pinholes,
        8,
        ncpus,
        8192,
        |slot, vals| {
            let last = vals
                .chunks_exact(8)
                .take(ncpus)
                .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .max()
                .unwrap_or(0);
            let i = slot as usize;
            if last == 0 || seen.get(i) == Some(&last) {
                return;
            }
            if let Some(s) = seen.get_mut(i) {
                *s = last;
            }
            let Some(ph) = owners
                .get(i)
                .and_then(|o| o.as_ref())
                .and_then(Weak::upgrade)
            else {
                return;
            };
            let plane = ph.entry().io.plane as usize;
            if let Some(Some(reg)) = planes.get(plane) {
                if last > reg.mono_base_ns {
                    ph.touch((last - reg.mono_base_ns) / 1_000_000);
                }
            }
        },
    );
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot read the XDP activity map; inactivity of kernel-forwarded calls is not seen");
    }
}
