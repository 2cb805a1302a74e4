//! The admin API, `/metrics` and `bgfctl` against a real `bgf active` with
//! output commit to a real `bgf statelog`, on loopback (no root needed):
//!
//! - `api_token_schemas_metrics_and_bgfctl`: every endpoint but `/health`
//!   answers 401 without the token (and the daemon logs the rejection);
//!   `/v1/stats`, `/v1/sessions` (filters, limit, headers, bad parameters),
//!   `/v1/sessions/{call_id}` and `/v1/log/{instance}` have the documented
//!   shapes while SIPp calls run and one call is held up; `/metrics` parses
//!   as Prometheus text with the named families; `bgfctl status`, `sessions
//!   list|show`, `log inspect` (tables and `--json`) show that state; a
//!   wrong token, an unreachable instance and a missing cluster file give
//!   errors that say what to do and a non-zero exit.

use bgf_tests::net::host;
use bgf_tests::ops::{bgfctl, parse_metrics};
use bgf_tests::sipp::require_sipp;
use bgf_tests::util::TestDir;
use bgf_tests::{wait_until, Bed, Sipp, StatelogProcess};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const READY: Duration = Duration::from_secs(10);
const SIPP_T: Duration = Duration::from_secs(90);

fn bed_with_log(name: &str) -> (Bed, StatelogProcess, TestDir) {
    let data = TestDir::new(&format!("{name}-log"));
    let mut store = None;
    let bed = Bed::start_with(name, |net, cfg| {
        let addr = net.addr(7, 7400);
        store = Some(
            StatelogProcess::start(addr, &data.join("data"), data.path())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let st = store.as_ref().unwrap();
        cfg.statelog = Some(format!(
            "{}checkpoint_every = 100\n",
            st.statelog_toml(&cfg.name)
        ));
    });
    (bed, store.unwrap(), data)
}

fn cluster_file(bed: &Bed, extra: &str, token: &str) -> PathBuf {
    let p = bed.dir.join(&format!("cluster-{}.toml", extra.len()));
    std::fs::write(
        &p,
        format!(
            "token = \"{token}\"\ntimeout_ms = 2000\n\n[[instance]]\nname = \"{}\"\nadmin = \"http://{}\"\n{extra}",
            bed.bgf.config.name, bed.bgf.config.admin_listen
        ),
    )
    .unwrap();
    p
}

fn get(bed: &Bed, path: &str, auth: bool) -> (u16, String) {
    bed.bgf.admin.get(path, auth).unwrap()
}

fn get_json(bed: &Bed, path: &str) -> Value {
    let (code, body) = get(bed, path, true);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

#[test]
fn api_token_schemas_metrics_and_bgfctl() {
    if !require_sipp("api_token_schemas_metrics_and_bgfctl") {
        return;
    }
    let (bed, _store, _data) = bed_with_log("admin-ops");
    let name = bed.bgf.config.name.clone();

    // --- 401 without (or with a wrong) token, logged; /health is public.
    let h: Value = serde_json::from_str(&get(&bed, "/health", false).1).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["role"], "active");
    assert_eq!(h["instance"], name.as_str());
    assert!(h["version"].is_string(), "{h}");
    for path in [
        "/v1/stats",
        "/v1/sessions",
        "/v1/sessions/x",
        "/v1/ha",
        "/v1/log/bgf1",
        "/metrics",
        "/nope",
    ] {
        let (code, body) = get(&bed, path, false);
        assert_eq!(code, 401, "GET {path} without token: {body}");
        assert!(body.contains("unauthorized"), "{body}");
    }
    let wrong = bgf_tests::AdminClient::new(bed.bgf.config.admin_listen, "wrong-token");
    assert_eq!(wrong.get("/v1/stats", true).unwrap().0, 401);
    assert!(
        wait_until(Duration::from_secs(5), || bed
            .bgf
            .logs()
            .contains("admin request rejected")
            .then_some(()))
        .is_some(),
        "no rejection logged:\n{}",
        bed.bgf.logs()
    );
    // Drills: token required, and refused (403) unless [admin] drills = true.
    let fault = r#"{"mode":"kill"}"#;
    let (code, body) = bed.bgf.admin.post("/v1/drill/fault", fault, false).unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, body) = bed.bgf.admin.post("/v1/drill/fault", fault, true).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("drills = true"), "{body}");
    assert_eq!(bed.bgf.admin.health().unwrap()["status"], "ok");
    let (code, body) = get(&bed, "/nope", true);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/v1/sessions/{call_id}"), "{body}");

    // --- Calls: 20 short ones through output commit (past one checkpoint),
    // and one held up while we look.
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(21)
        .spawn_bound(bed.dir.path(), READY);
    let long = Sipp::new("long", "uac_basic.xml")
        .local(bed.net.addr(host::UE, 5070))
        .remote(bed.access_sip())
        .key("rtp_port", 41500)
        .calls(1)
        // Held for the whole test (killed at the end): a loaded CI machine
        // took 33 s to get to the bgfctl checks, past a 30 s hold.
        .pause_ms(600_000)
        .spawn(bed.dir.path());
    let held = bed
        .wait_session_with_pinhole(Duration::from_secs(10))
        .expect("the long call never got a session");
    let short = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(20)
        .rate(10, 5)
        .spawn(bed.dir.path());
    let r = short.wait(SIPP_T);
    assert!(r.ok(), "short calls failed: {}", r.describe());

    // --- /v1/stats schema.
    let s = get_json(&bed, "/v1/stats");
    assert_eq!(s["instance"], name.as_str());
    assert_eq!(s["sessions"], 1, "{s}");
    assert_eq!(
        s["service"]["access_sip"],
        bed.access_sip().to_string().as_str()
    );
    assert_eq!(
        s["service"]["core_sip"],
        bed.core_sip().to_string().as_str()
    );
    let l = &s["statelog"];
    for k in ["epoch", "durable_seq", "lag", "appends", "checkpoints"] {
        assert!(l[k].is_u64(), "statelog.{k}: {s}");
    }
    assert!(l["checkpoints"].as_u64().unwrap() >= 1, "{s}");
    assert!(l["last_compaction_unix_ms"].is_u64(), "{s}");
    let lat = &l["append_latency"];
    assert_eq!(
        lat["cumulative"].as_array().unwrap().len(),
        lat["le_us"].as_array().unwrap().len() + 1
    );
    assert_eq!(
        lat["cumulative"].as_array().unwrap().last().unwrap(),
        &lat["count"]
    );
    assert!(lat["count"].as_u64().unwrap() >= 1, "{s}");
    let sent = &s["transport"]["sip_responses"]["sent"];
    assert!(sent[1].as_u64().unwrap() >= 21, "2xx sent: {s}"); // 200s both ways
    assert!(
        s["transport"]["sip_responses"]["received"][1]
            .as_u64()
            .unwrap()
            >= 21
    );

    // --- /v1/sessions: array, headers, filters, bad parameters.
    let (code, body) = get(&bed, "/v1/sessions?limit=5", true);
    assert_eq!(code, 200);
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["call_id"], held.call_id.as_str());
    for k in ["id", "state", "origin", "created_at", "pinholes"] {
        assert!(!list[0][k].is_null(), "session.{k}: {body}");
    }
    assert!(list[0]["pinholes"][0]["counters"].is_object(), "{body}");
    let q = format!("/v1/sessions?call_id={}", held.call_id.replace('@', "%40"));
    assert_eq!(get_json(&bed, &q).as_array().unwrap().len(), 1);
    assert_eq!(
        get_json(&bed, "/v1/sessions?call_id=nope")
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        get_json(&bed, "/v1/sessions?state=early")
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        get_json(&bed, "/v1/sessions?state=CONFIRMED&origin=access")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get_json(&bed, "/v1/sessions?limit=0")
            .as_array()
            .unwrap()
            .len(),
        0
    );
    for bad in ["/v1/sessions?limit=many", "/v1/sessions?colour=red"] {
        let (code, body) = get(&bed, bad, true);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("parameters: call_id"), "{body}");
    }
    let one = get_json(
        &bed,
        &format!("/v1/sessions/{}", held.call_id.replace('@', "%40")),
    );
    assert_eq!(one["call_id"], held.call_id.as_str());
    let (code, body) = get(&bed, "/v1/sessions/no-such-call", true);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no live session"), "{body}");

    // --- /v1/log/{instance}: what the store holds, and the writer's view.
    let log = get_json(&bed, &format!("/v1/log/{name}"));
    assert_eq!(log["instance"], name.as_str());
    assert!(log["records"].as_u64().unwrap() >= 1, "{log}");
    assert_eq!(
        log["records"].as_u64().unwrap(),
        log["inputs"]["records"].as_u64().unwrap()
            + log["checkpoints"]["records"].as_u64().unwrap()
            + log["operator"]["records"].as_u64().unwrap()
    );
    assert!(log["bytes"].as_u64().unwrap() > 0);
    let cp = log["last_checkpoint"]["seq"]
        .as_u64()
        .expect("a checkpoint");
    assert!(log["first_seq"].as_u64().unwrap() <= cp, "{log}");
    assert!(log["complete"].as_bool().unwrap());
    assert!(
        log["writer"]["truncated_records"].as_u64().unwrap() > 0,
        "{log}"
    );
    let (code, body) = get(&bed, "/v1/log/other", true);
    assert_eq!(code, 404, "{body}");

    // --- /metrics: valid exposition with the named families.
    let (code, text) = get(&bed, "/metrics", true);
    assert_eq!(code, 200);
    let fams = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for f in [
        "bgf_info",
        "bgf_sessions",
        "bgf_call_attempts_total",
        "bgf_sip_responses_total",
        "bgf_sip_messages_total",
        "bgf_sip_dropped_total",
        "bgf_media_packets_forwarded_total",
        "bgf_media_packets_dropped_total",
        "bgf_pinholes",
        "bgf_log_append_duration_seconds",
        "bgf_log_lag_records",
        "bgf_log_durable_seq",
    ] {
        assert!(fams.contains_key(f), "no {f} in\n{text}");
    }
    let v = |fam: &str, want: &[(&str, &str)]| -> f64 {
        fams[fam].samples[fam]
            .iter()
            .find(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .unwrap_or_else(|| panic!("{fam} {want:?} missing:\n{text}"))
            .value
    };
    assert_eq!(fams["bgf_call_attempts_total"].kind, "counter");
    assert_eq!(fams["bgf_log_append_duration_seconds"].kind, "histogram");
    assert_eq!(v("bgf_sessions", &[("bgf_instance", &name)]), 1.0);
    assert!(v("bgf_call_attempts_total", &[]) >= 21.0, "{text}");
    assert!(
        v(
            "bgf_sip_responses_total",
            &[("direction", "sent"), ("class", "2xx")]
        ) >= 21.0
    );
    v("bgf_media_packets_forwarded_total", &[]); // SIPp sends no RTP here
    v(
        "bgf_media_packets_dropped_total",
        &[("reason", "wrong_source")],
    );

    // --- bgfctl against this active (no standby in the cluster).
    let cluster = cluster_file(&bed, "", &bed.bgf.config.admin_token);
    let st = bgfctl(&cluster, &["status"]);
    assert_eq!(st.code, Some(2), "{st:?}");
    assert!(st.stdout.starts_with("cluster: no standby"), "{st:?}");
    let row = st
        .stdout
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no row for {name}: {st:?}"));
    assert!(row.contains("active"), "{row}");
    assert!(row.contains(&bed.access_sip().to_string()), "{row}");
    assert!(row.contains("no [ha]"), "{row}");
    let j = bgfctl(&cluster, &["--json", "status"]).json();
    assert_eq!(j["protection"], "no standby");
    assert_eq!(j["instances"][0]["role"], "active");
    assert_eq!(j["instances"][0]["sessions"], 1);
    assert_eq!(j["instances"][0]["log_lag"], 0);

    let ls = bgfctl(&cluster, &["sessions", "list"]);
    assert_eq!(ls.code, Some(0), "{ls:?}");
    assert!(ls.stdout.contains(&held.call_id), "{ls:?}");
    assert!(ls.stdout.starts_with("INSTANCE"), "{ls:?}");
    let lj = bgfctl(
        &cluster,
        &["sessions", "list", "--state", "early", "--json"],
    )
    .json();
    assert_eq!(lj["instances"][0]["sessions"].as_array().unwrap().len(), 0);
    assert_eq!(lj["instances"][0]["total"], 1);
    let show = bgfctl(&cluster, &["sessions", "show", &held.call_id]);
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("REMOTE RTP"), "{show:?}");
    let sj = bgfctl(&cluster, &["--json", "sessions", "show", &held.call_id]).json();
    assert_eq!(sj["session"]["call_id"], held.call_id.as_str());
    let none = bgfctl(&cluster, &["sessions", "show", "no-such-call"]);
    assert_eq!(none.code, Some(1));
    assert!(none.stderr.contains("no live session"), "{none:?}");

    let li = bgfctl(&cluster, &["log", "inspect", &name]);
    assert_eq!(li.code, Some(0), "{li:?}");
    assert!(li.stdout.contains("checkpoint:   seq"), "{li:?}");
    assert!(li.stdout.contains("records compacted"), "{li:?}");
    let lij = bgfctl(&cluster, &["log", "inspect", &name, "--json"]).json();
    assert_eq!(lij["via"], name.as_str());
    assert_eq!(lij["last_checkpoint"]["seq"], cp);

    // --- Errors that say what to do.
    let wrong = cluster_file(&bed, "", "not-the-token");
    let w = bgfctl(&wrong, &["status"]);
    assert_eq!(w.code, Some(1), "{w:?}");
    assert!(w.stdout.contains("rejected the token (HTTP 401)"), "{w:?}");
    assert!(w.stderr.contains("--token-file"), "{w:?}");
    let wl = bgfctl(&wrong, &["sessions", "list"]);
    assert_eq!(wl.code, Some(1), "{wl:?}");
    assert!(wl.stderr.contains("rejected the token"), "{wl:?}");
    // A standby listed but not running (closed port on our loopback /24).
    let dead = format!(
        "\n[[instance]]\nname = \"sb1\"\nadmin = \"http://{}\"\n",
        bed.net.addr(9, 1)
    );
    let down = cluster_file(&bed, &dead, &bed.bgf.config.admin_token);
    let d = bgfctl(&down, &["status"]);
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stdout.starts_with("cluster: degraded"), "{d:?}");
    assert!(d.stdout.contains("sb1 unreachable at http://"), "{d:?}");
    assert!(d.stdout.contains("is `bgf` running there"), "{d:?}");
    let sb_row = d.stdout.lines().find(|l| l.starts_with("sb1")).unwrap();
    assert!(sb_row.contains("unreachable"), "{sb_row}");
    let only_dead = bed.dir.join("dead.toml");
    std::fs::write(&only_dead, format!("token = \"x\"{dead}")).unwrap();
    let o = bgfctl(&only_dead, &["status"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("no instance of"), "{o:?}");
    let li = bgfctl(&only_dead, &["log", "inspect", "sb1"]);
    assert_eq!(li.code, Some(1), "{li:?}");
    assert!(li.stderr.contains("unreachable"), "{li:?}");
    let missing = bgfctl(&bed.dir.join("absent.toml"), &["status"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("BGF_CLUSTER"), "{missing:?}");

    // Completions and the man page need no cluster.
    for sh in ["bash", "zsh", "fish"] {
        let c = bgfctl(&only_dead, &["completions", sh]);
        assert_eq!(c.code, Some(0), "{c:?}");
        assert!(c.stdout.contains("bgfctl"), "{sh}");
    }
    let man = bgfctl(&only_dead, &["man"]);
    assert!(man.stdout.contains(".TH bgfctl 1"), "{man:?}");

    // The held call is still up: stop both SIPps (killed on drop).
    drop(long);
    drop(uas);
}
