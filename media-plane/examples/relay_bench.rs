//! System-level relay benchmark: the same generator against bgf's kernel,
//! XDP and (feature `dpdk`) DPDK relays and against rtpengine. Two modes:
//!
//! `relay_bench serve --streams N [--backend kernel|xdp|dpdk] [--net loopback|netns]
//!   [--workers W] [--batch B] [--max-seconds T] [--xdp-mode auto|native|generic]
//!   [--dpdk-access DEV --dpdk-core DEV --lcore L]`
//!   Starts a bgf relay with N pinholes installed directly (no SIP): stream
//!   i: access local A_k:(20000+2j) ← remote UE:(20000+2j), core local
//!   C_k:(20000+2j) → remote PEER:5000, with k = i / 20000, j = i mod 20000
//!   (so more than 20 000 streams use several media addresses). Addresses:
//!   `loopback` A_k 127.60.k.1, C_k 127.61.k.1, UE 127.62.0.1, PEER
//!   127.63.0.1; `netns` (media-plane/bench/xdp_vs_all.sh) A_k 198.18.0.(41+k),
//!   C_k 198.18.1.(41+k), UE 198.18.0.200, PEER 198.18.1.200, XDP on r0/r1.
//!   Prints `READY <pid>`, runs until stdin closes (or T seconds), prints
//!   counters.
//!
//! `relay_bench gen --target bgf|rtpengine --pid PID --streams N --rate PPS
//!   --seconds S [--net loopback|netns] [--ng 127.0.0.1:2223] [--warmup-ms 500]`
//!   For rtpengine, first creates N calls over the ng protocol (offer from
//!   UE:(20000+2i), answer from PEER:5000) and reads the ports from the
//!   returned SDP. Then sends 172-byte PCMA RTP packets round-robin over the
//!   N streams at PPS total (raw socket, batches of 64, so the generator can
//!   source every stream's port cheaply), receives everything on PEER:5000,
//!   and reports as one JSON line: sent/received/loss, the relay process's
//!   CPU time (utime+stime from /proc/PID/stat) per received packet, the
//!   whole machine's busy CPU and softirq time per received packet
//!   (/proc/stat, the same window), and — when an XDP program named
//!   `bgf_relay` is loaded and `kernel.bpf_stats_enabled` is 1 — its run
//!   time per run (BPF stats).

use media_plane::{Leg, MediaConfig, MediaPlane, PinholeId, PinholeOp, PinholeSpec};
use std::collections::HashMap;
use std::io::Read;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE_PORT: u16 = 20000;
/// Streams per media address (ports 20000-59999).
const PER_IP: usize = 20000;
const MAX_STREAMS: usize = 100_000;
const PKT: usize = 172;

/// The benchmark's addresses (see the header).
#[derive(Clone, Copy)]
struct Net {
    netns: bool,
}

impl Net {
    fn of(m: &HashMap<String, String>) -> Res<Net> {
        match m.get("net").map(String::as_str) {
            None | Some("loopback") => Ok(Net { netns: false }),
            Some("netns") => Ok(Net { netns: true }),
            Some(o) => Err(format!("--net {o}: use loopback or netns")),
        }
    }

    fn access_local(self, i: usize) -> Ipv4Addr {
        let k = (i / PER_IP) as u8;
        if self.netns {
            Ipv4Addr::new(198, 18, 0, 41 + k)
        } else {
            Ipv4Addr::new(127, 60, k, 1)
        }
    }

    fn core_local(self, i: usize) -> Ipv4Addr {
        let k = (i / PER_IP) as u8;
        if self.netns {
            Ipv4Addr::new(198, 18, 1, 41 + k)
        } else {
            Ipv4Addr::new(127, 61, k, 1)
        }
    }

    fn ue(self) -> Ipv4Addr {
        if self.netns {
            Ipv4Addr::new(198, 18, 0, 200)
        } else {
            Ipv4Addr::new(127, 62, 0, 1)
        }
    }

    fn core_peer(self) -> Ipv4Addr {
        if self.netns {
            Ipv4Addr::new(198, 18, 1, 200)
        } else {
            Ipv4Addr::new(127, 63, 0, 1)
        }
    }
}

type Res<T> = Result<T, String>;

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let mut m = HashMap::new();
    while let Some(k) = it.next() {
        if let Some(k) = k.strip_prefix("--") {
            m.insert(k.to_string(), it.next().unwrap_or_default());
        }
    }
    (mode, m)
}

fn num<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str, def: Option<T>) -> Res<T> {
    match m.get(k) {
        Some(v) => v.parse().map_err(|_| format!("--{k}: cannot parse {v:?}")),
        None => def.ok_or_else(|| format!("--{k} is required")),
    }
}

fn main() {
    let (mode, m) = args();
    let r = match mode.as_str() {
        "serve" => serve(&m),
        "gen" => gen(&m),
        _ => Err("usage: relay_bench serve|gen [--options]; see the source header".into()),
    };
    if let Err(e) = r {
        eprintln!("relay_bench: {e}");
        std::process::exit(1);
    }
}

fn port(i: usize) -> u16 {
    BASE_PORT + 2 * (i % PER_IP) as u16
}

/// The relay plane of `--backend`.
fn start_plane(m: &HashMap<String, String>, net: Net, streams: usize) -> Res<MediaPlane> {
    let cfg = MediaConfig {
        workers: num(m, "workers", Some(1))?,
        batch: num(m, "batch", Some(32))?,
        inactivity_timeout: Duration::from_secs(3600),
        ..MediaConfig::default()
    };
    let backend: String = num(m, "backend", Some("kernel".to_string()))?;
    let ips = streams.div_ceil(PER_IP);
    match backend.as_str() {
        "kernel" => MediaPlane::start_kernel(cfg, Box::new(|_| {})).map_err(|e| e.to_string()),
        "xdp" => {
            use media_plane::xdp::{XdpAddr, XdpMode, XdpSettings};
            let mode: String = num(m, "xdp-mode", Some("auto".to_string()))?;
            let s = XdpSettings {
                access_interface: num(m, "access-if", Some("r0".to_string()))?,
                core_interface: num(m, "core-if", Some("r1".to_string()))?,
                mode: XdpMode::parse(&mode).ok_or("--xdp-mode: auto, native or generic")?,
                max_pinholes: (streams as u32).max(1024),
                upcall_ring_kib: 8192,
            };
            let mut addrs = Vec::new();
            for k in 0..ips {
                for (side, ip) in [
                    (media_plane::Side::Access, net.access_local(k * PER_IP)),
                    (media_plane::Side::Core, net.core_local(k * PER_IP)),
                ] {
                    addrs.push(XdpAddr {
                        side,
                        ip: ip.into(),
                        port_min: BASE_PORT,
                        port_max: BASE_PORT + 2 * PER_IP as u16 - 1,
                    });
                }
            }
            let p = MediaPlane::start_xdp(cfg, &s, addrs, true, Box::new(|_| {}))
                .map_err(|e| e.to_string())?;
            eprintln!("xdp attached: {:?}", p.xdp_attached());
            Ok(p)
        }
        #[cfg(feature = "dpdk")]
        "dpdk" => {
            use media_plane::dpdk::{DpdkPort, DpdkSettings};
            let dev = |k: &str| -> Res<String> { num(m, k, None) };
            let lcore: String = num(m, "lcore", Some("1".to_string()))?;
            let s = DpdkSettings {
                eal_args: [
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
                ]
                .iter()
                .map(|x| x.to_string())
                .collect(),
                access: DpdkPort {
                    device: dev("dpdk-access")?,
                    gateway: None,
                },
                core: DpdkPort {
                    device: dev("dpdk-core")?,
                    gateway: None,
                },
                mbufs: 16383,
                ..DpdkSettings::default()
            };
            let mut addrs = Vec::new();
            for k in 0..ips {
                addrs.push((
                    media_plane::Side::Access,
                    net.access_local(k * PER_IP).into(),
                ));
                addrs.push((media_plane::Side::Core, net.core_local(k * PER_IP).into()));
            }
            MediaPlane::start_dpdk(cfg, &s, addrs, true, Box::new(|_| {}))
                .map_err(|e| e.to_string())
        }
        b => Err(format!(
            "--backend {b}: kernel, xdp{}",
            if cfg!(feature = "dpdk") {
                " or dpdk"
            } else {
                " (dpdk needs --features dpdk)"
            }
        )),
    }
}

fn serve(m: &HashMap<String, String>) -> Res<()> {
    let streams: usize = num(m, "streams", None)?;
    if streams == 0 || streams > MAX_STREAMS {
        return Err(format!("--streams must be 1..={MAX_STREAMS}"));
    }
    let net = Net::of(m)?;
    let max = Duration::from_secs(num(m, "max-seconds", Some(600))?);
    let plane = start_plane(m, net, streams)?;
    for i in 0..streams {
        let p = port(i);
        let spec = PinholeSpec {
            id: PinholeId {
                session: i as u64,
                stream: 0,
            },
            access: Leg {
                local: SocketAddr::new(net.access_local(i).into(), p),
                remote_rtp: Some(SocketAddr::new(net.ue().into(), p)),
                remote_rtcp: Some(SocketAddr::new(net.ue().into(), p + 1)),
                latch_ip: None,
            },
            core: Leg {
                local: SocketAddr::new(net.core_local(i).into(), p),
                remote_rtp: Some(SocketAddr::new(net.core_peer().into(), 5000)),
                remote_rtcp: Some(SocketAddr::new(net.core_peer().into(), 5001)),
                latch_ip: None,
            },
        };
        plane
            .apply(&PinholeOp::Upsert(spec))
            .map_err(|e| e.to_string())?;
    }
    println!("READY {}", std::process::id());
    // Wait for stdin EOF (the script closes it) or the time bound.
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            done.store(true, Ordering::SeqCst);
        });
    }
    let t = Instant::now();
    while !done.load(Ordering::SeqCst) && t.elapsed() < max {
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = plane.counters();
    println!(
        "COUNTERS forwarded={} drops={:?}",
        c.forwarded_packets, c.drops
    );
    plane.shutdown();
    Ok(())
}

/// utime+stime of a process in seconds.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let rest = s.rsplit_once(')').map(|x| x.1).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the ')' field 3 (state) is index 0; utime is field 14 → index 11.
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("bad utime")?;
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("bad stime")?;
    // SAFETY: sysconf with a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ut + st) / hz)
}

/// The whole machine's busy and softirq CPU seconds (/proc/stat, all CPUs).
fn machine_cpu() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // SAFETY: sysconf with a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
    (busy / hz.max(1.0), g(6) / hz.max(1.0))
}

/// Run time (ns) and run count of the loaded XDP program `bgf_relay`, if
/// any (zero unless `kernel.bpf_stats_enabled` is 1).
fn bpf_stats() -> Option<(u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.name_as_str() == Some("bgf_relay"))
        .map(|p| (p.run_time().as_nanos() as u64, p.run_count()))
}

// ---- rtpengine ng protocol (bencode over UDP) ----

fn bstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(format!("{}:", s.len()).as_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn ng_request(sock: &UdpSocket, cookie: &str, pairs: &[(&str, &str)]) -> Res<String> {
    let mut msg = format!("{cookie} d").into_bytes();
    let mut sorted = pairs.to_vec();
    sorted.sort_by_key(|p| p.0);
    for (k, v) in sorted {
        bstr(&mut msg, k);
        bstr(&mut msg, v);
    }
    msg.push(b'e');
    for _attempt in 0..5 {
        sock.send(&msg).map_err(|e| format!("ng send: {e}"))?;
        let mut buf = vec![0u8; 65536];
        match sock.recv(&mut buf) {
            Ok(n) => {
                let r = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(body) = r.strip_prefix(&format!("{cookie} ")) {
                    return Ok(body.to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(format!("ng recv: {e}")),
        }
    }
    Err("rtpengine did not answer the ng request (5 tries)".into())
}

/// The value of bencoded string key `key` in a flat response.
fn bget(body: &str, key: &str) -> Option<String> {
    let pat = format!("{}:{}", key.len(), key);
    let at = body.find(&pat)? + pat.len();
    let rest = &body[at..];
    let colon = rest.find(':')?;
    let len: usize = rest[..colon].parse().ok()?;
    rest.get(colon + 1..colon + 1 + len).map(|s| s.to_string())
}

fn sdp(addr: Ipv4Addr, port: u16, sess: usize) -> String {
    format!(
        "v=0\r\no=- {sess} 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn sdp_media(s: &str) -> Option<SocketAddrV4> {
    let mut ip = None;
    let mut port = None;
    for l in s.lines() {
        if let Some(r) = l.strip_prefix("c=IN IP4 ") {
            ip = r.trim().parse().ok();
        }
        if let Some(r) = l.strip_prefix("m=audio ") {
            port = r.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    Some(SocketAddrV4::new(ip?, port?))
}

fn rtpengine_setup(ng: &str, streams: usize, net: Net) -> Res<Vec<SocketAddrV4>> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect(ng)
        .map_err(|e| format!("ng connect {ng}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let run = std::process::id();
    let mut dests = Vec::with_capacity(streams);
    for i in 0..streams {
        let call = format!("bench-{run}-{i}");
        let offer = sdp(net.ue(), port(i), i);
        let r = ng_request(
            &sock,
            &format!("o{i}"),
            &[
                ("command", "offer"),
                ("call-id", &call),
                ("from-tag", "caller"),
                ("sdp", &offer),
            ],
        )?;
        if bget(&r, "result").as_deref() != Some("ok") {
            return Err(format!("rtpengine offer {i} failed: {r}"));
        }
        let answer = sdp(net.core_peer(), 5000, i);
        let r = ng_request(
            &sock,
            &format!("a{i}"),
            &[
                ("command", "answer"),
                ("call-id", &call),
                ("from-tag", "caller"),
                ("to-tag", "callee"),
                ("sdp", &answer),
            ],
        )?;
        if bget(&r, "result").as_deref() != Some("ok") {
            return Err(format!("rtpengine answer {i} failed: {r}"));
        }
        let s = bget(&r, "sdp").ok_or("answer without sdp")?;
        dests.push(sdp_media(&s).ok_or_else(|| format!("no media address in {s}"))?);
    }
    Ok(dests)
}

// ---- generator ----

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: zeroed sockaddr_in is valid.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
    s
}

fn set_int(fd: i32, level: i32, name: i32, v: i32) {
    // SAFETY: pointer to a live i32.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            size_of::<i32>() as u32,
        );
    }
}

fn gen(m: &HashMap<String, String>) -> Res<()> {
    let target: String = num(m, "target", Some("bgf".to_string()))?;
    let pid: u32 = num(m, "pid", None)?;
    let streams: usize = num(m, "streams", None)?;
    let rate: f64 = num(m, "rate", None)?;
    let seconds: f64 = num(m, "seconds", Some(5.0))?;
    let warmup = Duration::from_millis(num(m, "warmup-ms", Some(500))?);
    let net = Net::of(m)?;
    if streams == 0 || streams > MAX_STREAMS || !(1.0..=5e6).contains(&rate) || seconds > 60.0 {
        return Err("bounds: streams 1..=100000, rate 1..=5e6, seconds <= 60".into());
    }
    let dests: Vec<SocketAddrV4> = match target.as_str() {
        "bgf" => (0..streams)
            .map(|i| SocketAddrV4::new(net.access_local(i), port(i)))
            .collect(),
        "rtpengine" => {
            let ng: String = num(m, "ng", Some("127.0.0.1:2223".to_string()))?;
            let t = Instant::now();
            let d = rtpengine_setup(&ng, streams, net)?;
            eprintln!("rtpengine: {streams} calls set up in {:?}", t.elapsed());
            d
        }
        t => return Err(format!("unknown --target {t}")),
    };

    // Receiver: one socket for every stream's output.
    let rx = UdpSocket::bind(SocketAddrV4::new(net.core_peer(), 5000))
        .map_err(|e| format!("bind receiver {}:5000: {e}", net.core_peer()))?;
    set_int(
        rx.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        64 << 20,
    );
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // --rx-spin 1: the receiver polls without sleeping, so the relay's sends
    // do not pay for waking it (closer to sending to a NIC).
    let rx_spin: u8 = num(m, "rx-spin", Some(0))?;
    let rx_thread = {
        let received = received.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            const B: usize = 64;
            let mut bufs = vec![[0u8; 2048]; B];
            // SAFETY: zeroed C structs are valid.
            let mut iovs: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = (0..B).map(|_| unsafe { zeroed() }).collect();
            while !stop.load(Ordering::Relaxed) {
                for i in 0..B {
                    hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                    hdrs[i].msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: B headers with live iovecs; blocking with SO_RCVTIMEO.
                let n = unsafe {
                    libc::recvmmsg(
                        rx.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        B as u32,
                        if rx_spin == 1 {
                            libc::MSG_DONTWAIT
                        } else {
                            libc::MSG_WAITFORONE
                        },
                        std::ptr::null_mut(),
                    )
                };
                if n > 0 {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                } else if rx_spin == 1 {
                    std::thread::yield_now();
                }
            }
        })
    };

    // Sender: raw IPv4 socket, prebuilt packet per stream.
    // SAFETY: socket(2).
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if raw < 0 {
        return Err(format!(
            "raw socket: {} (the generator needs root/CAP_NET_RAW)",
            std::io::Error::last_os_error()
        ));
    }
    set_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20);
    let mut pkts: Vec<Vec<u8>> = Vec::with_capacity(streams);
    let mut names: Vec<libc::sockaddr_in> = Vec::with_capacity(streams);
    for (i, d) in dests.iter().enumerate() {
        let mut rtp = vec![0u8; PKT];
        rtp[0] = 0x80;
        rtp[1] = 8;
        rtp[8..12].copy_from_slice(&(i as u32 + 1).to_be_bytes());
        let mut buf = vec![0u8; 20 + 8 + PKT];
        let n = media_plane::packet::build_udp(
            &mut buf,
            SocketAddr::new(net.ue().into(), port(i)),
            SocketAddr::V4(*d),
            &rtp,
        )
        .map_err(|e| e.to_string())?;
        buf.truncate(n);
        buf[26] = 0; // UDP checksum 0 (none): sequence numbers change per packet
        buf[27] = 0;
        pkts.push(buf);
        names.push(sockaddr_in(*d));
    }
    const SB: usize = 64;
    let mut iovs: Vec<libc::iovec> = (0..SB)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid.
    let mut hdrs: Vec<libc::mmsghdr> = (0..SB).map(|_| unsafe { zeroed() }).collect();
    let mut next = 0usize;
    let mut seq: u16 = 0;
    let mut send_errors = 0u64;
    let mut run = |dur: Duration, sent: &mut u64| {
        let t0 = Instant::now();
        let mut done: u64 = 0;
        loop {
            let el = t0.elapsed();
            if el >= dur {
                break;
            }
            let due = (el.as_secs_f64() * rate) as u64;
            if due <= done {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let k = ((due - done) as usize).min(SB);
            for j in 0..k {
                let i = next;
                next = (next + 1) % streams;
                if i == 0 {
                    seq = seq.wrapping_add(1);
                }
                let p = &mut pkts[i];
                p[30..32].copy_from_slice(&seq.to_be_bytes());
                iovs[j].iov_base = p.as_mut_ptr() as *mut libc::c_void;
                iovs[j].iov_len = p.len();
                let h = &mut hdrs[j].msg_hdr;
                h.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                h.msg_iov = &mut iovs[j];
                h.msg_iovlen = 1;
            }
            let mut off = 0;
            while off < k {
                // SAFETY: headers off..k point to live packets and names.
                let r =
                    unsafe { libc::sendmmsg(raw, hdrs.as_mut_ptr().add(off), (k - off) as u32, 0) };
                if r <= 0 {
                    send_errors += 1;
                    off += 1;
                } else {
                    off += r as usize;
                }
            }
            done += k as u64;
            *sent += k as u64;
        }
    };
    let mut warm_sent = 0u64;
    run(warmup, &mut warm_sent);
    std::thread::sleep(Duration::from_millis(200));
    let r0 = received.load(Ordering::Relaxed);
    let c0 = cpu_seconds(pid)?;
    let m0 = machine_cpu();
    let b0 = bpf_stats();
    let t0 = Instant::now();
    let mut sent = 0u64;
    run(Duration::from_secs_f64(seconds), &mut sent);
    let send_secs = t0.elapsed().as_secs_f64();
    // Drain: wait until nothing more arrives for 200 ms (at most 3 s).
    let mut last = received.load(Ordering::Relaxed);
    let td = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = received.load(Ordering::Relaxed);
        if now == last || td.elapsed() > Duration::from_secs(3) {
            break;
        }
        last = now;
    }
    let c1 = cpu_seconds(pid)?;
    let m1 = machine_cpu();
    let b1 = bpf_stats();
    let r1 = received.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = rx_thread.join();
    // SAFETY: closing our raw socket.
    unsafe { libc::close(raw) };
    let got = r1 - r0;
    // Loss over the whole run (warm-up included), after the drain.
    let total_sent = warm_sent + sent;
    let loss = if total_sent > 0 {
        100.0 * (total_sent.saturating_sub(r1)) as f64 / total_sent as f64
    } else {
        0.0
    };
    let cpu = c1 - c0;
    let us_per_pkt = if got > 0 { cpu * 1e6 / got as f64 } else { 0.0 };
    let per = |x: f64| if got > 0 { x * 1e6 / got as f64 } else { 0.0 };
    let (busy, softirq) = (m1.0 - m0.0, m1.1 - m0.1);
    let bpf_ns_per_run = match (b0, b1) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => (t1 - t0) as f64 / (n1 - n0) as f64,
        _ => 0.0,
    };
    println!(
        "{{\"target\":\"{target}\",\"rx_spin\":{rx_spin},\"streams\":{streams},\"rate_target\":{rate},\"sent\":{sent},\"sent_pps\":{:.0},\"received\":{got},\"forwarded_pps\":{:.0},\"loss_pct\":{loss:.4},\"relay_cpu_s\":{cpu:.3},\"relay_cores\":{:.3},\"cpu_us_per_pkt\":{us_per_pkt:.3},\"machine_busy_us_per_pkt\":{:.3},\"softirq_us_per_pkt\":{:.3},\"bpf_ns_per_run\":{bpf_ns_per_run:.1},\"gen_send_errors\":{send_errors}}}",
        sent as f64 / send_secs,
        got as f64 / send_secs,
        cpu / send_secs,
        per(busy),
        per(softirq),
    );
    Ok(())
}
