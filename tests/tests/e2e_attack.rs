//! The attack suite (issue 15 item 5; threat model items 1–5): a hostile
//! UE on the access LAN attacks one `bgf active` in network namespaces —
//! an INVITE flood from one address, spoofed responses, requests aimed at a
//! core host that is not the next hop, SDP at loopback and at the BGF's own
//! ports, Call-ID hijacks of live calls, slow and idle TCP connections up to
//! the cap — one at a time and then all together, while a legitimate UE on
//! another address places calls with RTP (bgf-callgen: it measures media on
//! every call both ways) through the same BGF.
//!
//! Asserted: nothing reaches the internal core host (a listener counts UDP
//! and TCP); the legitimate calls succeed (≥ 99.9 %) with media both ways;
//! no core-side datagram is dropped by the BGF's socket (the core gets its
//! turn under the flood); every attack shows in the BGF's counters; the
//! attacker never receives more bytes than it sent (no reflection).
//!
//! `ATTACK_FLOOD_RATES="2000 10000 20000"` runs the flood phase at each
//! rate and prints one `ATTACK` line per rate (legitimate success, bgf CPU)
//! for docs/PERFORMANCE.md; CI runs 10 000/s.

use bgf_tests::admin::{stat_of, AdminClient};
use bgf_tests::callgen::{callgen_binary, Callgen};
use bgf_tests::cluster::start_bgf;
use bgf_tests::netns::{require_root, Lan, Topology};
use bgf_tests::util::TestDir;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "attack-token-0123456789";
const ATTACKER: &str = "198.18.0.201";
const INTERNAL: &str = "198.18.1.201";
const FLOOD_SECS: u64 = 10;
/// Per-IP TCP cap of the BGF under test.
const TCP_PER_IP: usize = 8;

fn bgf_toml(t: &Topology) -> String {
    let acc = t.service_v4(1, Lan::Access);
    let cor = t.service_v4(1, Lan::Core);
    format!(
        r#"[instance]
name = "bgf1"
secret = "atk-Wq7Zr3Lx9Mv2Np6Tc4Kb8Hj5Yf1Gd0sAe"

[access]
sip = "{acc}:5060"
rtp_ports = "20000-29999"

[core]
sip = "{cor}:5060"
rtp_ports = "30000-39999"
next_hop = "{peer}:5060"

[media]
workers = 1

[log]
format = "json"
level = "info"

[admin]
listen = "{mgmt}:8080"
token = "{TOKEN}"

# The legitimate UE here stands for many callers on one address (50 calls/s
# with INVITE, ACK and BYE; on a loaded machine a few hundred unanswered at
# once): its rates and dialog caps sit above the defaults. Short TCP timeouts
# so that the slow/idle phase is short.
[limits]
invite_rate = 150
other_rate = 600
sessions_per_source = 400
early_dialogs_per_source = 200
tcp_max_connections_per_ip = {TCP_PER_IP}
tcp_header_timeout_s = 2
tcp_idle_timeout_s = 5
"#,
        peer = t.core_peer(),
        mgmt = t.active_node(1, Lan::Mgmt),
    )
}

/// Counts every UDP datagram and TCP connection reaching the internal host.
struct Canary {
    udp: Arc<AtomicU64>,
    tcp: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn canary(t: &Topology) -> Canary {
    let (udp, tcp, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (u, c, s) = (udp.clone(), tcp.clone(), stop.clone());
    t.spawn_in(&t.ns("core"), move || {
        let addr: SocketAddr = format!("{INTERNAL}:5060").parse().unwrap();
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 65535];
        let end = Instant::now() + Duration::from_secs(600);
        while !s.load(Ordering::Relaxed) && Instant::now() < end {
            if sock.recv_from(&mut buf).is_ok() {
                u.fetch_add(1, Ordering::Relaxed);
            }
            while l.accept().is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Canary { udp, tcp, stop }
}

/// What the attacker sent and got back.
#[derive(Default)]
struct Wire {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    got: AtomicU64,
    got_bytes: AtomicU64,
    got_488: AtomicU64,
    got_503: AtomicU64,
    got_481: AtomicU64,
}

fn sdp(ip: &str, port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

fn request(method: &str, ruri: &str, src: SocketAddr, n: u64, extra: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK-atk{n};rport\r\n{extra}Max-Forwards: 70\r\nFrom: <sip:evil@ims.example>;tag=e{n}\r\nTo: <sip:victim@ims.example>\r\nCall-ID: atk-{n}@{ATTACKER}\r\nCSeq: 1 {method}\r\nContact: <sip:evil@{src}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The attacker's UDP socket, reading what comes back on a thread of its own.
struct Attacker {
    sock: UdpSocket,
    wire: Arc<Wire>,
    bgf: SocketAddr,
    n: u64,
}

impl Attacker {
    fn new(bgf: SocketAddr, wire: Arc<Wire>, stop: Arc<AtomicBool>) -> Attacker {
        let sock = UdpSocket::bind(format!("{ATTACKER}:0")).unwrap();
        let rx = sock.try_clone().unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let w = wire.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65535];
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, _)) = rx.recv_from(&mut buf) {
                    w.got.fetch_add(1, Ordering::Relaxed);
                    w.got_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    for (code, c) in [
                        (&b" 488 "[..], &w.got_488),
                        (b" 503 ", &w.got_503),
                        (b" 481 ", &w.got_481),
                    ] {
                        if buf[..n.min(16)].windows(5).any(|x| x == code) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Attacker {
            sock,
            wire,
            bgf,
            n: 0,
        }
    }

    fn src(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&mut self, text: &str) {
        self.n += 1;
        if self.sock.send_to(text.as_bytes(), self.bgf).is_ok() {
            self.wire.sent.fetch_add(1, Ordering::Relaxed);
            self.wire
                .sent_bytes
                .fetch_add(text.len() as u64, Ordering::Relaxed);
        }
    }

    /// INVITEs with SDP, each a new call, at `rate`/s for `secs` (paced in
    /// 10 ms slices).
    fn flood(&mut self, rate: u64, secs: u64) {
        let per_slice = (rate / 100).max(1);
        let start = Instant::now();
        for slice in 0..secs * 100 {
            let src = self.src();
            for _ in 0..per_slice {
                let n = self.n;
                let body = sdp(ATTACKER, 40000 + (n % 1000) as u16 * 2);
                self.send(&request(
                    "INVITE",
                    "sip:victim@ims.example",
                    src,
                    n,
                    "",
                    &body,
                ));
            }
            let next = start + Duration::from_millis(10 * (slice + 1));
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }

    /// Registers (a subscriber's compromised UE), so that its requests pass
    /// `require_registration` and meet the policy and the caps instead.
    fn register(&mut self) {
        let src = self.src();
        let n = self.n;
        let reg = request("REGISTER", "sip:ims.example", src, n, "", "")
            .replace("CSeq: 1 REGISTER", "CSeq: 1 REGISTER\r\nExpires: 600")
            .replace("To: <sip:victim@ims.example>", "To: <sip:evil@ims.example>");
        let before = self.wire.got.load(Ordering::Relaxed);
        self.send(&reg);
        let end = Instant::now() + Duration::from_secs(10);
        while self.wire.got.load(Ordering::Relaxed) == before && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything but the flood, once: spoofed responses, routing to the
    /// internal host, SDP the policy refuses, hijacks of `live` Call-IDs.
    fn tricks(&mut self, bgf_access: IpAddr, live: &[String]) {
        self.register();
        let src = self.src();
        for i in 0..200u64 {
            // A response with our top Via and the internal host below it.
            let resp = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {bgf_access}:5060;branch=z9hG4bK-bgf-{i:016x};rport\r\nVia: SIP/2.0/UDP {INTERNAL}:5060;branch=z9hG4bK-x{i}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: spoof-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            self.send(&resp);
        }
        let n = self.n;
        let route = format!("Route: <sip:{INTERNAL};lr>\r\n");
        let tcp_route = format!("Route: <sip:{INTERNAL}:5060;transport=tcp;lr>\r\n");
        self.send(&request(
            "MESSAGE",
            "sip:victim@ims.example",
            src,
            n,
            &route,
            "",
        ));
        self.send(&request(
            "MESSAGE",
            "sip:victim@ims.example",
            src,
            n + 1,
            &tcp_route,
            "",
        ));
        self.send(&request(
            "OPTIONS",
            &format!("sip:{INTERNAL}"),
            src,
            n + 2,
            &route,
            "",
        ));
        let in_dialog = request("MESSAGE", &format!("sip:x@{INTERNAL}"), src, n + 3, "", "")
            .replace(
                "To: <sip:victim@ims.example>",
                "To: <sip:victim@ims.example>;tag=t1",
            );
        self.send(&in_dialog);
        self.send(&request(
            "INVITE",
            &format!("sip:x@{INTERNAL}"),
            src,
            n + 4,
            "",
            &sdp(ATTACKER, 41000),
        ));
        // SDP at loopback and at the BGF's own media ports.
        self.send(&request(
            "INVITE",
            "sip:victim@ims.example",
            src,
            n + 5,
            "",
            &sdp("127.0.0.1", 42000),
        ));
        self.send(&request(
            "INVITE",
            "sip:victim@ims.example",
            src,
            n + 6,
            "",
            &sdp(&bgf_access.to_string(), 20000),
        ));
        // Hijacks: BYE and re-INVITE for live calls of the legitimate UE.
        for (k, call) in live.iter().enumerate() {
            let k = n + 10 + 2 * k as u64;
            let bye = request("BYE", "sip:victim@ims.example", src, k, "", "")
                .replace(&format!("atk-{k}@{ATTACKER}"), call)
                .replace(
                    "To: <sip:victim@ims.example>",
                    "To: <sip:victim@ims.example>;tag=1",
                );
            self.send(&bye);
            let reinv = request(
                "INVITE",
                "sip:victim@ims.example",
                src,
                k + 1,
                "",
                &sdp(ATTACKER, 43000),
            )
            .replace(&format!("atk-{}@{ATTACKER}", k + 1), call)
            .replace(
                "To: <sip:victim@ims.example>",
                "To: <sip:victim@ims.example>;tag=1",
            );
            self.send(&reinv);
        }
        self.n += 20 + 2 * live.len() as u64;
    }
}

/// Slow (a header trickling) and idle TCP connections from the attacker,
/// `extra` more than the per-IP cap; returns how many the BGF accepted and
/// later closed.
fn tcp_phase(bgf: SocketAddr, extra: usize) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conns = Vec::new();
    for i in 0..TCP_PER_IP + extra {
        // From the attacker's own address (not the legitimate UE's).
        let connect = async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(ATTACKER.parse().unwrap(), 0))?;
            tokio::time::timeout(Duration::from_secs(2), s.connect(bgf))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        };
        let Ok(c) = rt.block_on(connect).and_then(|c| c.into_std()) else {
            continue;
        };
        let mut c: TcpStream = c;
        c.set_nonblocking(false).ok();
        if i % 2 == 0 {
            let _ = c.write_all(b"INVITE sip:victim@ims.example SIP/2.0\r\nVia: SIP/2.0/TCP x");
        }
        c.set_read_timeout(Some(Duration::from_secs(15))).ok();
        conns.push(c);
    }
    // The BGF refuses those past the cap at once (EOF) and closes the
    // others after the header / idle timeouts.
    let mut closed = 0;
    let mut open_at_first = 0;
    for c in &mut conns {
        let mut b = [0u8; 16];
        let t = Instant::now();
        match c.read(&mut b) {
            Ok(0) | Err(_) => {
                closed += 1;
                if t.elapsed() >= Duration::from_millis(1500) {
                    open_at_first += 1;
                }
            }
            Ok(_) => {}
        }
    }
    (open_at_first, closed)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Datagrams the kernel dropped on the BGF's core-side SIP socket.
fn core_socket_drops(t: &Topology) -> u64 {
    let core = t.service_v4(1, Lan::Core);
    let IpAddr::V4(v4) = core else { return 0 };
    let hex = format!("{:08X}:13C4", u32::from_le_bytes(v4.octets()));
    let out = t
        .command(&t.active_ns(1), "cat")
        .arg("/proc/net/udp")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(hex.as_str()))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_access_traffic_routes_hijacks_and_floods_nothing() {
    if !require_root("hostile_access_traffic_routes_hijacks_and_floods_nothing") {
        return;
    }
    let t = Topology::new("atk", 1).expect("topology");
    let dir = TestDir::new("attack");
    t.ip(
        &t.ns("ue"),
        &["addr", "add", &format!("{ATTACKER}/24"), "dev", "acc"],
    )
    .unwrap();
    t.ip(
        &t.ns("core"),
        &["addr", "add", &format!("{INTERNAL}/24"), "dev", "cor"],
    )
    .unwrap();
    std::fs::write(dir.join("bgf1.toml"), bgf_toml(&t)).unwrap();
    let bin = bgf_tests::build::bgf_binary().unwrap();
    let bgf = start_bgf(
        t.command(&t.active_ns(1), &bin.display().to_string()),
        "active",
        &dir,
        "bgf1.toml",
        "bgf1",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let admin_addr = SocketAddr::new(t.active_node(1, Lan::Mgmt), 8080);
    // The admin API is on the management LAN (the store's namespace is on it).
    let stats = || {
        t.run_in(&t.ns("store"), || {
            AdminClient::new(admin_addr, TOKEN).stats()
        })
        .unwrap()
    };
    let canary = canary(&t);
    let access = SocketAddr::new(t.service_v4(1, Lan::Access), 5060);

    // The legitimate traffic: 50 calls/s with RTP from the UE's own address
    // for the whole run, registered first.
    let rates: Vec<u64> = std::env::var("ATTACK_FLOOD_RATES")
        .ok()
        .map(|v| {
            v.split_whitespace()
                .filter_map(|r| r.parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![10_000]);
    let run_s = 10 + rates.len() as u64 * (FLOOD_SECS + 2) + 45;
    let calls = 50 * run_s;
    let sock = dir.join("uas.sock").display().to_string();
    let uas = Callgen::spawn_with(
        t.command(&t.ns("core"), &callgen_binary().display().to_string()),
        "uas",
        dir.path(),
        &bgf_tests::callgen::args(&[
            "uas",
            "--local",
            &format!("{}:5060", t.core_peer()),
            "--ctl-listen",
            &format!("unix:{sock}"),
            "--rtp-ports",
            "24000-27999",
            "--max-run-s",
            &(run_s + 120).to_string(),
            "--progress",
        ]),
    )
    .unwrap();
    assert!(
        uas.wait_stderr("SIP on", Duration::from_secs(20)),
        "{}",
        uas.logs()
    );
    let json = dir.join("uac.json");
    let uac = Callgen::spawn_with(
        t.command(&t.ns("ue"), &callgen_binary().display().to_string()),
        "uac",
        dir.path(),
        &bgf_tests::callgen::args(&[
            "uac",
            "--local",
            &format!("{}:5060", t.ue(false)),
            "--proxy",
            &access.to_string(),
            "--rtp-ports",
            "28000-31999",
            "--calls",
            &calls.to_string(),
            "--rate",
            "50",
            "--hold-ms",
            "2000",
            "--register",
            "--ctl-connect",
            &format!("unix:{sock}"),
            "--json",
            &json.display().to_string(),
            "--progress",
        ]),
    )
    .unwrap();
    // Calls up before the first attack.
    let up = bgf_tests::wait_until(Duration::from_secs(30), || {
        (stat_of(&stats().ok()?, "sessions").ok()? >= 20).then_some(())
    });
    assert!(up.is_some(), "legitimate calls not up: {}", uac.logs());

    let wire = Arc::new(Wire::default());
    let stop = Arc::new(AtomicBool::new(false));
    let live_call_ids = || -> Vec<String> {
        t.run_in(&t.ns("store"), || {
            AdminClient::new(admin_addr, TOKEN).sessions()
        })
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .take(20)
        .map(|s| s.call_id)
        .collect()
    };
    let pid = bgf.pid();
    let mut figures = Vec::new();

    // 1. The INVITE flood alone, at each rate.
    for &rate in &rates {
        let (w, s) = (wire.clone(), stop.clone());
        let sent0 = wire.sent.load(Ordering::Relaxed);
        let before = cpu_ticks(pid);
        let t0 = Instant::now();
        t.spawn_in(&t.ns("ue"), move || {
            let mut a = Attacker::new(access, w, s);
            a.flood(rate, FLOOD_SECS);
        })
        .join()
        .unwrap()
        .unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let tick = 100.0; // USER_HZ
        let cpu = (cpu_ticks(pid) - before) as f64 / tick / secs * 100.0;
        let achieved = (wire.sent.load(Ordering::Relaxed) - sent0) as f64 / secs;
        figures.push((rate, secs, cpu, achieved));
        std::thread::sleep(Duration::from_secs(2));
    }
    let s = stats().unwrap();
    assert!(stat_of(&s, "guard.dropped").unwrap() > 0, "{s}");
    assert!(stat_of(&s, "guard.refused_503").unwrap() > 0, "{s}");

    // 2. Spoofed responses, routing tricks, refused SDP, hijacks.
    let live = live_call_ids();
    assert!(!live.is_empty());
    let (w, s2) = (wire.clone(), stop.clone());
    let bgf_ip = access.ip();
    let l2 = live.clone();
    t.spawn_in(&t.ns("ue"), move || {
        let mut a = Attacker::new(access, w, s2);
        a.tricks(bgf_ip, &l2);
        std::thread::sleep(Duration::from_secs(2));
    })
    .join()
    .unwrap()
    .unwrap();

    // 3. Slow and idle TCP connections up to (and past) the per-IP cap.
    let (cut, closed) = t
        .spawn_in(&t.ns("ue"), move || tcp_phase(access, 4))
        .join()
        .unwrap()
        .unwrap();
    assert!(
        closed >= TCP_PER_IP,
        "slow/idle connections closed: {closed}"
    );
    assert!(cut >= 1, "some held until a timeout cut them: {cut}");

    // 4. Everything together.
    let (w, s3) = (wire.clone(), stop.clone());
    let live = live_call_ids();
    let together = t.spawn_in(&t.ns("ue"), move || {
        let mut a = Attacker::new(access, w, s3.clone());
        let mut f = Attacker::new(access, a.wire.clone(), s3);
        // Registered this time: the flood meets the caps, not the 403.
        f.register();
        let h = std::thread::spawn(move || f.flood(10_000, FLOOD_SECS));
        for _ in 0..5 {
            a.tricks(bgf_ip, &live);
            std::thread::sleep(Duration::from_secs(1));
        }
        let tcp = tcp_phase(access, 4);
        let _ = h.join();
        tcp
    });
    let _ = together.join().unwrap().unwrap();

    // The legitimate run ends (it places calls for run_s seconds).
    let res = uac.wait(Duration::from_secs(run_s + 120), Some(&json));
    stop.store(true, Ordering::Relaxed);
    canary.stop.store(true, Ordering::Relaxed);
    let s = stats().unwrap();
    let drops = core_socket_drops(&t);
    let r = res.report();
    let ok = r["summary"]["ok"].as_u64().unwrap_or(0);
    let placed = r["summary"]["calls"].as_u64().unwrap_or(0);
    let with_media = r["calls"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| {
                    c["outcome"] == "ok"
                        && c["down"]["received"].as_u64().unwrap_or(0) > 0
                        && c["up"]["received"].as_u64().unwrap_or(0) > 0
                })
                .count() as u64
        })
        .unwrap_or(0);
    for (rate, secs, cpu, achieved) in &figures {
        println!(
            "ATTACK flood {rate}/s asked, {achieved:.0}/s sent, for {secs:.1} s: bgf CPU {cpu:.0} % of one core"
        );
    }
    println!(
        "ATTACK legitimate calls (whole run) ok {ok}/{placed} ({:.2} %), with media both ways {with_media}",
        100.0 * ok as f64 / placed.max(1) as f64
    );
    println!("ATTACK bgf stats: {s}");
    let sent = wire.sent_bytes.load(Ordering::Relaxed);
    let got = wire.got_bytes.load(Ordering::Relaxed);
    println!(
        "ATTACK attacker sent {} messages / {sent} bytes, got {} / {got} bytes back (488: {}, 503: {}, 481: {})",
        wire.sent.load(Ordering::Relaxed),
        wire.got.load(Ordering::Relaxed),
        wire.got_488.load(Ordering::Relaxed),
        wire.got_503.load(Ordering::Relaxed),
        wire.got_481.load(Ordering::Relaxed),
    );

    // Nothing reached the internal host.
    assert_eq!(
        canary.udp.load(Ordering::Relaxed),
        0,
        "UDP reached {INTERNAL}"
    );
    assert_eq!(
        canary.tcp.load(Ordering::Relaxed),
        0,
        "TCP reached {INTERNAL}"
    );
    // The legitimate calls went through, with media.
    assert!(placed >= calls * 9 / 10, "{}", res.describe());
    assert!(
        ok * 1000 >= placed * 999,
        "legitimate success {ok}/{placed} below 99.9 %: {}",
        res.describe()
    );
    assert!(
        with_media * 1000 >= placed * 999,
        "calls with media both ways {with_media}/{placed}"
    );
    // The core side was served: nothing dropped on its socket.
    assert_eq!(drops, 0, "core-side SIP datagrams dropped by the kernel");
    // Every attack was seen and answered (or dropped) as designed.
    for (path, what) in [
        ("core.responses_unmatched", "spoofed responses"),
        ("core.dialog_mismatches", "hijacks and in-dialog routing"),
        ("core.media_refused", "SDP at loopback / own ports"),
        ("core.routing_refused", "unregistered calls, core routes"),
        (
            "core.capacity_refused",
            "a registered flooder's dialogs past the caps",
        ),
        ("transport.tcp_refused", "connections past the per-IP cap"),
        ("transport.tcp_timeouts", "slow and idle connections"),
    ] {
        assert!(stat_of(&s, path).unwrap_or(0) > 0, "{what}: {path} in {s}");
    }
    assert!(
        wire.got_488.load(Ordering::Relaxed) >= 2,
        "SDP refused with 488"
    );
    assert!(
        wire.got_481.load(Ordering::Relaxed) >= 1,
        "hijacks answered 481"
    );
    // No reflection: the attacker got back less than it sent.
    assert!(got < sent, "attacker got {got} bytes for {sent} sent");
    drop(uas);
    drop(bgf);
}
