//! Relay throughput bench (driven by `media-plane/bench/dpdk_vs_kernel.sh`):
//!
//! - `dpdk_bench relay kernel|dpdk SECONDS [DPDK_ACCESS_DEV DPDK_CORE_DEV LCORE]`
//!   — one pinhole, access 198.18.0.41:20000 ← UE 198.18.0.200:41000, core
//!   198.18.1.41:30000 → peer 198.18.1.200:40000; prints forwarded packets
//!   per second and the process's CPU seconds.
//! - `dpdk_bench gen SECONDS` — blasts RTP from the UE (sendmmsg, 64 per
//!   call, bounded by time and 100 M packets) to the relay; the peer's
//!   socket is bound but not read.
//!
//! Addresses are fixed inside 198.18.0.0/15 (namespaces only).

use media_plane::{Leg, MediaConfig, MediaPlane, PinholeId, PinholeOp, PinholeSpec};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const UE: &str = "198.18.0.200:41000";
const PEER: &str = "198.18.1.200:40000";
const ACCESS: &str = "198.18.0.41:20000";
const CORE: &str = "198.18.1.41:30000";
const MAX_PACKETS: u64 = 100_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)))
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf with a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn spec() -> PinholeSpec {
    PinholeSpec {
        id: PinholeId {
            session: 1,
            stream: 0,
        },
        access: Leg {
            local: sa(ACCESS),
            remote_rtp: Some(sa(UE)),
            remote_rtcp: None,
            latch_ip: None,
        },
        core: Leg {
            local: sa(CORE),
            remote_rtp: Some(sa(PEER)),
            remote_rtcp: None,
            latch_ip: None,
        },
    }
}

fn relay(args: &[String]) -> Result<(), String> {
    let backend = args.first().map(String::as_str).unwrap_or("kernel");
    let secs: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let cfg = MediaConfig {
        workers: 1,
        ..MediaConfig::default()
    };
    let plane = match backend {
        "kernel" => MediaPlane::start_kernel(cfg, Box::new(|_| {})).map_err(|e| e.to_string())?,
        #[cfg(feature = "dpdk")]
        "dpdk" => {
            use media_plane::dpdk::{DpdkPort, DpdkSettings};
            use media_plane::Side;
            let dev = |i: usize| args.get(i).cloned().unwrap_or_default();
            let s = DpdkSettings {
                eal_args: [
                    "-l",
                    args.get(4).map(String::as_str).unwrap_or("1"),
                    "--no-huge",
                    "-m",
                    "512",
                    "--no-pci",
                    "--no-shconf",
                    "--no-telemetry",
                    "--log-level",
                    "lib.eal:notice",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                access: DpdkPort {
                    device: dev(2),
                    gateway: None,
                },
                core: DpdkPort {
                    device: dev(3),
                    gateway: None,
                },
                ..DpdkSettings::default()
            };
            MediaPlane::start_dpdk(
                cfg,
                &s,
                vec![(Side::Access, sa(ACCESS).ip()), (Side::Core, sa(CORE).ip())],
                true,
                Box::new(|_| {}),
            )
            .map_err(|e| e.to_string())?
        }
        other => return Err(format!("backend {other}: not built (use --features dpdk)")),
    };
    plane
        .apply(&PinholeOp::Upsert(spec()))
        .map_err(|e| e.to_string())?;
    println!("READY {backend}");
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let mut last = plane.counters().forwarded_packets;
    let mut best = 0u64;
    let start_fwd = last;
    let mut busy_from: Option<(Instant, u64, f64)> = None;
    let busy0 = plane.poll_totals().map(|t| t.2).unwrap_or_default();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let c = plane.counters();
        let d = c.forwarded_packets - last;
        last = c.forwarded_packets;
        best = best.max(d);
        if d > 0 && busy_from.is_none() {
            busy_from = Some((Instant::now(), c.forwarded_packets, cpu_seconds()));
        }
        println!(
            "t={:>3}s forwarded/s {d} drops {:?}",
            t0.elapsed().as_secs(),
            c.drops
        );
    }
    let c = plane.counters();
    let (avg, cpu) = match busy_from {
        Some((t, n, cpu)) => {
            let el = t.elapsed().as_secs_f64().max(0.001);
            (
                (c.forwarded_packets - n) as f64 / el,
                (cpu_seconds() - cpu) / el,
            )
        }
        None => (0.0, 0.0),
    };
    let fwd = c.forwarded_packets - start_fwd;
    let total_cpu = cpu_seconds() - cpu0;
    // Packets per second of a fully busy core: DPDK from the poll loop's
    // busy time (a busy-polling core is always at 100 %), kernel from the
    // process's CPU time (softirq work on other CPUs not included).
    let per_core = match plane.poll_totals() {
        Some((_, _, busy)) => fwd as f64 / (busy - busy0).as_secs_f64().max(1e-9),
        None => fwd as f64 / total_cpu.max(1e-9),
    };
    println!(
        "RESULT backend={backend} forwarded={fwd} avg_pps={avg:.0} best_1s_pps={best} relay_cpu_cores={cpu:.2} total_cpu_s={total_cpu:.1} pps_per_busy_core={per_core:.0} send_errors={}",
        c.drops.send_error
    );
    plane.shutdown();
    Ok(())
}

fn gen(args: &[String]) -> Result<(), String> {
    let secs: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let tx = UdpSocket::bind(sa(UE)).map_err(|e| format!("bind {UE}: {e}"))?;
    // The peer's socket is bound (no ICMP unreachable) but not read: the
    // generator's CPU goes to sending; the relay counts what it forwards.
    let _rx = UdpSocket::bind(sa(PEER)).map_err(|e| format!("bind {PEER}: {e}"))?;
    // RTP v2, PT 0, 160 bytes of payload.
    let mut pkt = vec![0u8; 172];
    pkt[0] = 0x80;
    let dst = sa(ACCESS);
    // SAFETY: a zeroed sockaddr_storage is valid; to_sockaddr fills it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = media_plane::kernel::to_sockaddr(&dst, &mut ss);
    const B: usize = 64;
    let mut iov = libc::iovec {
        iov_base: pkt.as_mut_ptr() as *mut libc::c_void,
        iov_len: pkt.len(),
    };
    // SAFETY: zeroed C structs, then filled with pointers to live data.
    let mut hdrs: Vec<libc::mmsghdr> = (0..B).map(|_| unsafe { std::mem::zeroed() }).collect();
    for h in hdrs.iter_mut() {
        h.msg_hdr.msg_name = &mut ss as *mut _ as *mut libc::c_void;
        h.msg_hdr.msg_namelen = len;
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut seq: u16 = 0;
    while t0.elapsed() < Duration::from_secs(secs) && sent < MAX_PACKETS {
        seq = seq.wrapping_add(1);
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        // SAFETY: B headers pointing to live buffers.
        let n = unsafe { libc::sendmmsg(tx.as_raw_fd(), hdrs.as_mut_ptr(), B as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    println!("GEN sent={sent} sent_pps={:.0}", sent as f64 / el);
    Ok(())
}

/// `gen-dpdk SECONDS DEVICE DST_MAC LCORE`: the same RTP stream from a DPDK
/// port (its own EAL process; e.g. net_af_xdp on the UE's veth), bursts of
/// 64 pre-built frames — a generator that can outrun one relay core.
#[cfg(feature = "dpdk")]
fn gen_dpdk(args: &[String]) -> Result<(), String> {
    use dpdk_sys as sys;
    use std::ffi::CString;
    let secs: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let dev = args.get(1).cloned().ok_or("device missing")?;
    let mac: Vec<u8> = args
        .get(2)
        .ok_or("destination MAC missing")?
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let dst_mac: [u8; 6] = mac.try_into().map_err(|_| "bad MAC")?;
    let lcore = args.get(3).cloned().unwrap_or_else(|| "0".into());
    let argv_s = [
        "dpdk_bench_gen",
        "-l",
        &lcore,
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "--log-level",
        "lib.eal:notice",
        &format!("--vdev={dev}"),
    ];
    let cargs: Vec<CString> = argv_s
        .iter()
        .map(|a| CString::new(*a).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*mut std::os::raw::c_char> =
        cargs.iter().map(|c| c.as_ptr() as *mut _).collect();
    // SAFETY: valid argv of C strings.
    if unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) } < 0 {
        return Err("rte_eal_init failed".into());
    }
    let name = CString::new("gen").map_err(|e| e.to_string())?;
    // SAFETY: valid arguments.
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(
            name.as_ptr(),
            8191,
            256,
            0,
            sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            sys::rte_socket_id() as i32,
        )
    };
    if pool.is_null() {
        return Err("mbuf pool".into());
    }
    let (mut off, mut src_mac) = (0i32, [0u8; 6]);
    // SAFETY: port 0 is the only device; valid out pointers.
    if unsafe { sys::bgf_port_start(0, 1024, 1024, pool, 0, &mut off, src_mac.as_mut_ptr()) } != 0 {
        return Err("port start".into());
    }
    let mut frame = [0u8; 256];
    let mut payload = [0u8; 160 + 12];
    payload[0] = 0x80;
    let n = media_plane::packet::build_udp(&mut frame[14..], sa(UE), sa(ACCESS), &payload)
        .map_err(|e| e.to_string())?;
    media_plane::l2::write_eth(&mut frame, &dst_mac, &src_mac, true);
    let len = 14 + n;
    const B: usize = 64;
    let mut bufs: Vec<*mut sys::rte_mbuf> = vec![std::ptr::null_mut(); B];
    let t0 = Instant::now();
    let (mut sent, mut dropped) = (0u64, 0u64);
    while t0.elapsed() < Duration::from_secs(secs) && sent < MAX_PACKETS {
        let mut k = 0;
        while k < B {
            // SAFETY: valid pool; a fresh mbuf has room for the frame.
            let m = unsafe { sys::bgf_pktmbuf_alloc(pool) };
            if m.is_null() {
                break;
            }
            // SAFETY: as above.
            unsafe {
                std::ptr::copy_nonoverlapping(frame.as_ptr(), sys::bgf_mbuf_data(m), len);
                sys::bgf_mbuf_set_len(m, len as u16);
            }
            bufs[k] = m;
            k += 1;
        }
        // SAFETY: k mbufs we own.
        let s = usize::from(unsafe { sys::bgf_tx_burst(0, 0, bufs.as_mut_ptr(), k as u16) });
        for &m in &bufs[s..k] {
            // SAFETY: unsent mbufs are still ours.
            unsafe { sys::bgf_pktmbuf_free(m) };
        }
        sent += s as u64;
        dropped += (k - s) as u64;
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "GEN dpdk sent={sent} sent_pps={:.0} tx_full={dropped}",
        sent as f64 / el
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("relay") => relay(&args[1..]),
        Some("gen") => gen(&args[1..]),
        #[cfg(feature = "dpdk")]
        Some("gen-dpdk") => gen_dpdk(&args[1..]),
        _ => Err(
            "usage: dpdk_bench relay kernel|dpdk SECONDS [ACCESS_DEV CORE_DEV LCORE] | gen SECONDS | gen-dpdk SECONDS DEVICE DST_MAC LCORE"
                .into(),
        ),
    };
    if let Err(e) = r {
        eprintln!("dpdk_bench: {e}");
        std::process::exit(2);
    }
}
