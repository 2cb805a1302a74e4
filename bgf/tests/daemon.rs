//! Process-level tests of the `bgf` binary: `check-config`, `active` startup
//! on loopback, the admin API (auth, shapes), transport counters, TCP framing
//! errors, startup failures and SIGTERM shutdown. Independent of the session
//! core's SIP behaviour.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bgf");
const TOKEN: &str = "test-token-0123456789";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bgf-daemon-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A port free for both UDP and TCP on `ip` right now.
fn free_port(ip: &str) -> u16 {
    loop {
        let t = TcpListener::bind(format!("{ip}:0")).unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(format!("{ip}:{port}")).is_ok() {
            return port;
        }
    }
}

struct Ports {
    access: SocketAddr,
    core: SocketAddr,
    admin: SocketAddr,
}

fn config(p: &Ports) -> String {
    format!(
        r#"[instance]
name = "itest1"
secret = "int-Rk4Wq8Zx2Mv6Np9Tc3Lb7Hj5Yf1Gd0sA"
[access]
sip = "{}"
rtp_ports = "42000-42099"
[core]
sip = "{}"
rtp_ports = "42100-42199"
next_hop = "127.0.0.3:5060"
[media]
workers = 1
[log]
format = "json"
level = "debug"
[admin]
listen = "{}"
token = "{TOKEN}"
"#,
        p.access, p.core, p.admin
    )
}

fn ports() -> Ports {
    Ports {
        access: format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap(),
        core: format!("127.0.0.2:{}", free_port("127.0.0.2"))
            .parse()
            .unwrap(),
        admin: format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap(),
    }
}

/// `GET path` over HTTP/1.0 → (status, body).
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    req += "Connection: close\r\n\r\n";
    s.write_all(req.as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn json_get(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path, Some(TOKEN)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, cfg: &str) -> Daemon {
        let path = dir.join("bgf.toml");
        std::fs::write(&path, cfg).unwrap();
        let stderr = dir.join("stderr.log");
        let child = Command::new(BIN)
            .args(["active", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, stderr }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_healthy(&mut self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, body)) = http_get(admin, "/health", None) {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["status"], "ok");
                assert_eq!(v["instance"], "itest1");
                assert_eq!(v["role"], "active");
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("bgf exited early with {st}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("bgf not healthy within 30 s\n{}", self.logs());
    }

    fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("bgf did not exit within {bound:?}\n{}", self.logs());
    }

    fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `/v1/stats` until `pred` holds (bounded).
fn wait_stats(admin: SocketAddr, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json_get(admin, "/v1/stats");
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never held: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn version_flag() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("bgf "));
}

#[test]
fn check_config_accepts_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bgf.toml");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{}: OK", example.display())),
        "{stdout}"
    );
    assert!(stdout.contains("instance bgf1"), "{stdout}");
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = tmpdir("broken");
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        r#"[instance]
name = "bgf1"
secret = "short"
[access]
sip = "198.18.1.10:70000"
rtp_ports = "20000-29999"
[core]
sip = "198.18.2.10:5060"
rtp_ports = "30000-29999"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "instance.secret",
        "access.sip: \"198.18.1.10:70000\" is not an IP:port (port must be 1-65535",
        "core.rtp_ports: range 30000-29999 is empty",
        "core.next_hop missing",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Unknown keys too.
    std::fs::write(&path, "[instance]\nname = \"x\"\nflavour = \"y\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `flavour`"));
    // And a file that does not exist.
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(dir.join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn active_serves_admin_counts_traffic_and_stops_on_sigterm() {
    let dir = tmpdir("active");
    let p = ports();
    let mut d = Daemon::start(&dir, &config(&p));
    d.wait_healthy(p.admin);

    // Auth: none and wrong → 401; right → 200 with the documented shape.
    assert_eq!(http_get(p.admin, "/v1/stats", None).unwrap().0, 401);
    assert_eq!(
        http_get(p.admin, "/v1/stats", Some("wrong-token-000000000"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(http_get(p.admin, "/v1/sessions", None).unwrap().0, 401);
    assert_eq!(http_get(p.admin, "/nope", None).unwrap().0, 401);
    assert_eq!(http_get(p.admin, "/nope", Some(TOKEN)).unwrap().0, 404);
    let s = json_get(p.admin, "/v1/stats");
    assert_eq!(s["instance"], "itest1");
    for k in ["sessions", "registrations", "pinholes"] {
        assert!(s[k].is_u64(), "{k}: {s}");
    }
    assert!(s["core"].is_object(), "{s}");
    assert!(s["media"]["forwarded_packets"].is_u64(), "{s}");
    assert!(s["media"]["drops"]["wrong_source"].is_u64(), "{s}");
    for k in [
        "udp_rx",
        "udp_tx",
        "tcp_rx",
        "tcp_tx",
        "oversize_drops",
        "framing_errors",
        "send_errors",
        "core_queue_full",
    ] {
        assert_eq!(s["transport"][k], 0, "{k}: {s}");
    }
    assert!(json_get(p.admin, "/v1/sessions").is_array());

    // UDP: a keep-alive is ignored, a message is counted.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(b"\r\n\r\n", p.access).unwrap();
    u.send_to(
        b"OPTIONS sip:bgf SIP/2.0\r\nContent-Length: 0\r\n\r\n",
        p.access,
    )
    .unwrap();
    wait_stats(p.admin, "udp_rx == 1", |v| v["transport"]["udp_rx"] == 1);

    // TCP on the core side: a framed message is counted; one without
    // Content-Length closes the connection and counts a framing error.
    let mut t = TcpStream::connect(p.core).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t.write_all(b"OPTIONS sip:bgf SIP/2.0\r\nl: 0\r\n\r\n")
        .unwrap();
    // A keep-alive ping is answered with CRLF.
    t.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    t.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    t.write_all(b"INVITE sip:bgf SIP/2.0\r\nVia: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        t.read_to_end(&mut rest).unwrap_or(0),
        0,
        "connection should be closed"
    );
    let s = wait_stats(p.admin, "framing error counted", |v| {
        v["transport"]["framing_errors"] == 1 && v["transport"]["tcp_connections"] == 0
    });
    assert_eq!(s["transport"]["tcp_rx"], 1, "{s}");

    // SIGTERM → clean exit 0.
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(20));
    let logs = d.logs();
    assert_eq!(st.code(), Some(0), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
    assert!(logs.contains("\"instance\":\"itest1\""), "{logs}");
    assert!(logs.contains("cannot frame the stream"), "{logs}");
}

#[test]
fn sigint_also_stops_cleanly() {
    let dir = tmpdir("sigint");
    let p = ports();
    let mut d = Daemon::start(&dir, &config(&p));
    d.wait_healthy(p.admin);
    d.signal(libc::SIGINT);
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        d.logs()
    );
}

#[test]
fn startup_fails_with_exit_1_when_the_address_is_taken() {
    let dir = tmpdir("taken");
    let p = ports();
    let _squatter = UdpSocket::bind(p.access).unwrap();
    let mut d = Daemon::start(&dir, &config(&p));
    let st = d.wait_exit(Duration::from_secs(20));
    let logs = d.logs();
    assert_eq!(st.code(), Some(1), "{logs}");
    assert!(
        logs.contains(&format!("cannot bind access.sip {}", p.access)),
        "{logs}"
    );
    assert!(logs.contains("already using it"), "{logs}");
}

#[test]
fn active_with_invalid_config_exits_1() {
    let dir = tmpdir("invalid");
    let mut d = Daemon::start(&dir, "[instance]\nname = \"x\"\n");
    let st = d.wait_exit(Duration::from_secs(20));
    let logs = d.logs();
    assert_eq!(st.code(), Some(1), "{logs}");
    assert!(logs.contains("instance.secret missing"), "{logs}");
    assert!(logs.contains("check-config"), "{logs}");
}

#[test]
fn log_format_flag_overrides_and_bad_level_is_reported() {
    let dir = tmpdir("logfmt");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[instance]\nname = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["active", "--log-format", "json", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.trim().is_empty());
    for line in err.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "ERROR", "{line}");
    }
    // An invalid --log-level is an error that names the flag.
    let p = ports();
    let cfg = dir.join("good.toml");
    std::fs::write(&cfg, config(&p)).unwrap();
    let out = Command::new(BIN)
        .args(["active", "--log-level", "info,=[", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}

#[test]
fn gen_secret_prints_a_secret_check_config_accepts_and_weak_ones_are_refused() {
    let out = Command::new(BIN).arg("gen-secret").output().unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(secret.len(), 43, "{secret}");
    let again = Command::new(BIN).arg("gen-secret").output().unwrap();
    assert_ne!(String::from_utf8_lossy(&again.stdout).trim(), secret);
    let dir = tmpdir("gen-secret");
    for (name, s, ok) in [
        ("strong", secret.as_str(), true),
        ("weak", "my-secret-2024", false),
    ] {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[instance]\nname = \"bgf1\"\nsecret = \"{s}\"\n[access]\nsip = \"198.18.1.10:5060\"\nrtp_ports = \"20000-29999\"\n[core]\nsip = \"198.18.2.10:5060\"\nrtp_ports = \"30000-39999\"\nnext_hop = \"198.18.2.20:5060\"\n"
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{name}: {err}");
        if !ok {
            assert!(err.contains("instance.secret: too weak"), "{err}");
            assert!(err.contains("bgf gen-secret"), "{err}");
        }
    }
}
