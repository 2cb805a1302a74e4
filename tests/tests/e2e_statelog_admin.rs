//! `bgf statelog --admin`: a real server process on loopback, appended to
//! and read through the `RemoteStore` client. `/health` answers without a
//! token with role `statelog` and the store's figures; `/metrics` refuses a
//! request without the token (401, logged) and otherwise parses, counting
//! the appends, their latency histogram, the group commits, the instance's
//! last seq and the tailing reads; `bgfctl status` lists the server as a
//! `statelog` row; SIGTERM stops it cleanly. Runs without root.

use bgf_tests::ops::{bgfctl, parse_metrics};
use bgf_tests::util::{signal, wait_until, TestDir};
use state_log::{testkit, LogStore};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "statelog-admin-token-0123456789";

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` with or without the token: `(status, body)`, or `None` if
/// nothing answers.
fn get(addr: SocketAddr, path: &str, token: bool) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    // The bodies here are small: axum sends them with Content-Length.
    Some((code, body.to_string()))
}

fn value(
    fams: &std::collections::BTreeMap<String, bgf_tests::ops::Family>,
    sample: &str,
    family: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    let f = fams
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    f.samples
        .get(sample)
        .unwrap_or_else(|| panic!("no sample {sample} in {family}"))
        .iter()
        .find(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .unwrap_or_else(|| panic!("no {sample} with {label:?}"))
        .value
}

#[test]
fn statelog_admin_health_metrics_token_and_bgfctl_row() {
    let dir = TestDir::new("statelog-admin");
    let bin = bgf_tests::build::bgf_binary().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let data = dir.join("data");
    let pki = bgf_tests::pki::Pki::lab(&dir.join("pki"), &[listen.ip()]).unwrap();
    let err = std::fs::File::create(dir.join("statelog.err")).unwrap();
    let mut child = Command::new(&bin)
        .args(["statelog", "--listen", &listen.to_string(), "--data"])
        .arg(&data)
        .args(pki.server_args())
        .args(["--admin", &admin.to_string(), "--admin-token-file"])
        .arg(&token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(dir.join("statelog.err")).unwrap_or_default();
    let health = wait_until(Duration::from_secs(20), || get(admin, "/health", false))
        .unwrap_or_else(|| panic!("no /health on {admin}:\n{}", logs()));
    assert_eq!(health.0, 200, "{health:?}");
    let h: serde_json::Value = serde_json::from_str(&health.1).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["role"], "statelog");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["listen"], listen.to_string());
    assert_eq!(h["data"], data.display().to_string());
    assert!(h["uptime_s"].is_u64(), "{h}");
    assert_eq!(h["instances"], 0, "{h}");

    // Appends and a read through the client, as an active and a standby do.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = pki
            .connect("standby:sb1", &listen.to_string())
            .await
            .unwrap();
        // A stranger's plain TCP connection is refused (counted below).
        let mut raw = tokio::net::TcpStream::connect(listen).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        raw.write_all(b"\0\0\0\x05hello").await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;
        for seq in 1..=5 {
            c.append("bgf7", 0, &[testkit::rec("bgf7", seq, 0)])
                .await
                .unwrap();
        }
        let batch: Vec<_> = (6..=10).map(|s| testkit::rec("bgf7", s, 0)).collect();
        c.append("bgf7", 0, &batch).await.unwrap();
        assert!(c
            .append("bgf7", 0, &[testkit::rec("bgf7", 99, 0)])
            .await
            .is_err());
        assert_eq!(c.read("bgf7", 1, 100).await.unwrap().len(), 10);
        assert!(c
            .wait_for("bgf7", 5, Duration::from_millis(10))
            .await
            .unwrap());

        // The token is required for everything but /health (401, logged).
        let (code, body) = get(admin, "/metrics", false).unwrap();
        assert_eq!(code, 401, "{body}");
        assert!(
            logs().contains("admin request rejected"),
            "the 401 is logged:\n{}",
            logs()
        );
        let (code, body) = get(admin, "/v1/nothing", true).unwrap();
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("/metrics"), "404 lists the endpoints: {body}");

        let (code, text) = get(admin, "/metrics", true).unwrap();
        assert_eq!(code, 200, "{text}");
        let fams = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let durable = value(
            &fams,
            "bgf_statelog_appends_total",
            "bgf_statelog_appends_total",
            Some(("result", "durable")),
        );
        assert_eq!(durable, 6.0, "{text}");
        let refused = value(
            &fams,
            "bgf_statelog_appends_total",
            "bgf_statelog_appends_total",
            Some(("result", "refused")),
        );
        assert_eq!(refused, 1.0, "{text}");
        let lat = "bgf_statelog_append_duration_seconds";
        assert_eq!(fams[lat].kind, "histogram");
        assert_eq!(value(&fams, &format!("{lat}_count"), lat, None), 6.0);
        assert_eq!(
            value(&fams, &format!("{lat}_bucket"), lat, Some(("le", "+Inf"))),
            6.0
        );
        assert!(value(&fams, &format!("{lat}_sum"), lat, None) > 0.0);
        let groups = value(
            &fams,
            "bgf_statelog_groups_total",
            "bgf_statelog_groups_total",
            Some(("result", "ok")),
        );
        assert!((1.0..=7.0).contains(&groups), "{text}");
        assert_eq!(
            value(
                &fams,
                "bgf_statelog_records_appended_total",
                "bgf_statelog_records_appended_total",
                None
            ),
            10.0
        );
        assert!(
            value(
                &fams,
                "bgf_statelog_bytes_written_total",
                "bgf_statelog_bytes_written_total",
                None
            ) > 0.0
        );
        assert_eq!(
            value(
                &fams,
                "bgf_statelog_last_seq",
                "bgf_statelog_last_seq",
                Some(("log_instance", "bgf7"))
            ),
            10.0
        );
        assert_eq!(
            value(
                &fams,
                "bgf_statelog_requests_total",
                "bgf_statelog_requests_total",
                Some(("op", "read"))
            ),
            1.0
        );
        assert_eq!(
            value(&fams, "bgf_statelog_clients", "bgf_statelog_clients", None),
            1.0
        );
        let refused = value(
            &fams,
            "bgf_statelog_refused_total",
            "bgf_statelog_refused_total",
            Some(("what", "handshake")),
        );
        assert!(
            refused >= 1.0,
            "the stranger's connection is counted: {text}"
        );
        let info = &fams["bgf_info"].samples["bgf_info"][0];
        assert_eq!(info.labels["role"], "statelog");
        assert_eq!(info.labels["bgf_instance"], listen.to_string());
    });

    // bgfctl lists it as a statelog row (alone: no standby, exit 2).
    let cluster = dir.join("cluster.toml");
    std::fs::write(
        &cluster,
        format!(
            "token_file = \"token\"\n[[instance]]\nname = \"log\"\nadmin = \"http://{admin}\"\n"
        ),
    )
    .unwrap();
    let st = bgfctl(&cluster, &["status"]);
    assert_eq!(st.code, Some(2), "{st:?}");
    let row = st
        .stdout
        .lines()
        .find(|l| l.starts_with("log "))
        .unwrap_or_else(|| panic!("no row for the statelog: {st:?}"));
    assert!(
        row.contains("statelog") && row.contains("state log: 1 instances"),
        "{row}"
    );

    signal(child.id(), libc::SIGTERM);
    let status = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("bgf statelog did not stop on SIGTERM:\n{}", logs())
        });
    assert!(status.success(), "{status}:\n{}", logs());
    assert!(get(admin, "/health", false).is_none(), "admin API stopped");
}
