//! Process-level tests of `bgf statelog`: kill -9 loses no acknowledged
//! record, SIGTERM shuts down cleanly (exit 0), a busy address exits 1 with
//! a message, `bgf gen-certs` makes what the server and its clients load.

use state_log::remote::{ClientTls, RemoteStore, Timeouts};
use state_log::{testkit, LogStore, Record};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bgf");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bgf-statelog-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `bgf gen-certs` into `<data>/../pki`: the server and the standby sb1.
fn pki(data: &Path) -> PathBuf {
    let dir = data.parent().unwrap().join("pki");
    let out = Command::new(BIN)
        .arg("gen-certs")
        .arg(&dir)
        .args([
            "--server",
            "statelog=127.0.0.1,localhost",
            "--standby",
            "sb1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn tls_args(pki: &Path) -> Vec<String> {
    let f = |n: &str| pki.join(n).display().to_string();
    vec![
        "--ca".into(),
        f("ca.pem"),
        "--cert".into(),
        f("server-statelog.pem"),
        "--key".into(),
        f("server-statelog.key"),
    ]
}

fn start(addr: &str, data: &Path, log: &Path) -> Child {
    let pki = pki(data);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(BIN)
        .args(["statelog", "--listen", addr, "--data"])
        .arg(data)
        .args(tls_args(&pki))
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn connect(addr: &str, data: &Path) -> RemoteStore {
    let dir = data.parent().unwrap().join("pki");
    let files = state_log::tls::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("standby-sb1.pem"),
        key: dir.join("standby-sb1.key"),
    };
    let tls = ClientTls::from_files(&files, None, addr).unwrap();
    let t = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(5),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match RemoteStore::connect(addr, tls.clone(), t).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("bgf statelog not reachable: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bgf statelog did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn big_rec(instance: &str, seq: u64) -> Record {
    let mut r = testkit::rec(instance, seq, 0);
    if let state_log::Body::Operator(state_log::OperatorCommand::Command { args, .. }) = &mut r.body
    {
        args.push("s".repeat(600));
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_record() {
    let dir = tmpdir("kill9");
    let data = dir.join("data");
    let log = dir.join("statelog.log");
    let addr = free_addr();
    let mut child = start(&addr, &data, &log);
    let client = Arc::new(connect(&addr, &data).await);

    // Some acknowledged sequentially first.
    for s in 1..=50 {
        client.append("seq", 0, &[big_rec("seq", s)]).await.unwrap();
    }
    // Then 8 concurrent appenders (own instance each, batches of 1-3) that
    // keep going until the server dies; each remembers its last acked seq.
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("conc{t}");
            let (mut next, mut acked) = (1u64, 0u64);
            let stop = Instant::now() + Duration::from_secs(30);
            while Instant::now() < stop && next < 100_000 {
                let n = 1 + (next + t) % 3;
                let recs: Vec<_> = (next..next + n).map(|s| big_rec(&name, s)).collect();
                match c.append(&name, 0, &recs).await {
                    Ok(()) => {
                        acked = next + n - 1;
                        next += n;
                    }
                    Err(_) => break,
                }
            }
            (name, acked)
        }));
    }
    // Kill -9 once plenty is acknowledged, in the middle of the traffic.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.last_seq("conc0").await.unwrap_or(0) < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(!status.success());
    let mut acked = vec![("seq".to_string(), 50u64)];
    for t in tasks {
        acked.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(acked.iter().map(|(_, a)| a).sum::<u64>() > 150, "{acked:?}");

    // Restart on the same data directory and read everything back.
    let mut child = start(&addr, &data, &log);
    let client = connect(&addr, &data).await;
    for (name, last) in &acked {
        let stored = client.last_seq(name).await.unwrap();
        assert!(
            stored >= *last,
            "{name}: acked up to {last}, store has {stored}"
        );
        let mut got = Vec::new();
        while (got.len() as u64) < stored {
            let more = client.read(name, got.len() as u64 + 1, 1000).await.unwrap();
            assert!(!more.is_empty());
            got.extend(more);
        }
        let want: Vec<_> = (1..=stored).map(|s| big_rec(name, s)).collect();
        assert_eq!(got, want, "{name}: records intact and in order");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_and_keeps_data() {
    let dir = tmpdir("term");
    let data = dir.join("data");
    let log = dir.join("statelog.log");
    let addr = free_addr();
    let mut child = start(&addr, &data, &log);
    let client = connect(&addr, &data).await;
    client.append("t1", 0, &[big_rec("t1", 1)]).await.unwrap();
    assert_eq!(client.fence("t1").await.unwrap(), 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("shutdown complete"), "{text}");
    assert!(text.contains("single node"), "{text}");

    let mut child = start(&addr, &data, &log);
    let client = connect(&addr, &data).await;
    assert_eq!(client.epoch("t1").await.unwrap(), 1);
    assert_eq!(
        client.read("t1", 1, 10).await.unwrap(),
        vec![big_rec("t1", 1)]
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn busy_address_exits_1_with_advice() {
    let dir = tmpdir("busy");
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let pki = pki(&dir.join("data"));
    let out = Command::new(BIN)
        .args(["statelog", "--listen", &addr, "--data"])
        .arg(dir.join("data"))
        .args(tls_args(&pki))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("pick a free local address"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_tls_no_store_and_a_client_certificate_is_not_a_server_one() {
    let dir = tmpdir("notls");
    let addr = free_addr();
    // Without certificates the store does not start (no insecure mode).
    let out = Command::new(BIN)
        .args(["statelog", "--listen", &addr, "--data"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses the missing --ca");
    let pki = pki(&dir.join("data"));
    let f = |n: &str| pki.join(n).display().to_string();
    let out = Command::new(BIN)
        .args(["statelog", "--listen", &addr, "--data"])
        .arg(dir.join("data"))
        .args([
            "--ca",
            &f("ca.pem"),
            "--cert",
            &f("standby-sb1.pem"),
            "--key",
            &f("standby-sb1.key"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a server certificate"), "{err}");
    // gen-certs again keeps what exists and lists nothing new.
    let out = Command::new(BIN)
        .arg("gen-certs")
        .arg(&pki)
        .args(["--standby", "sb1", "--active", "bgf7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("active-bgf7.pem"), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}
