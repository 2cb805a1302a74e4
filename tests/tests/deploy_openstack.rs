//! Offline validation of the OpenStack deployment (ops/openstack/,
//! ops/systemd/, ops/deb/, the .deb metadata in bgf/Cargo.toml):
//!
//! - the Heat templates parse and every reference resolves (nested templates
//!   and the properties passed to them included);
//! - rendered for concrete parameter sets (the example environment, and an
//!   IPv6-access / embedded-store / N=3 variant), every active service
//!   address is an allowed-address-pair (/32 or /128) of the standby's port
//!   and of its own active's port on that network, has a VIP port, and the
//!   security group on those ports opens its SIP port (UDP+TCP) and the RTP
//!   range the rendered bgf.toml uses; heartbeat and admin ports likewise;
//! - the cloud-init user-data each VM gets (rendered by the same
//!   str_replace/ResourceGroup substitution Heat applies) is cloud-config
//!   whose /etc/bgf files pass the real `bgf check-config`, active and
//!   standby, with no placeholder left and shell scripts that parse;
//! - the systemd units pass `systemd-analyze verify` and keep the
//!   capabilities / hardening / restart policy bgf needs;
//! - the .deb builds (cargo-deb, debug profile), installs into a throwaway
//!   root with `dpkg --root` (maintainer scripts run: bgf user, /var/lib/bgf),
//!   `bgf --version` runs from it, the installed units verify there, and a
//!   purge removes the user and the data.
//!
//! Tools: `systemd-analyze` (package systemd), `dpkg`, `cargo-deb`. When one
//! is missing the test says so and skips — unless BGF_REQUIRE_DEPLOY_TOOLS=1
//! (set by .ci/run, which installs them), where it fails.

#[path = "deploy/hot.rs"]
mod hot;

use bgf_tests::build::{bgf_binary, workspace_binary, workspace_root};
use hot::{Stack, Template};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn openstack_dir() -> PathBuf {
    workspace_root().join("ops/openstack")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bgf-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `Ok(path)` of a tool, or the reason it is missing. With
/// BGF_REQUIRE_DEPLOY_TOOLS=1 a missing tool fails the test.
fn tool(name: &str, how: &str) -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("HOME") {
        cands.push(Path::new(&h).join(".cargo/bin").join(name));
    }
    if let Some(found) = cands.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let msg = format!("{name} not found — {how}");
    if std::env::var("BGF_REQUIRE_DEPLOY_TOOLS").as_deref() == Ok("1") {
        panic!("{msg} (BGF_REQUIRE_DEPLOY_TOOLS=1: .ci/run installs it)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ----------------------------------------------------------- environments

fn example_env() -> Map<String, Value> {
    let env: Value = serde_norway::from_str(
        &std::fs::read_to_string(openstack_dir().join("env/example.yaml")).unwrap(),
    )
    .unwrap();
    env["parameters"].as_object().unwrap().clone()
}

/// IPv6 access, the embedded (lab) store, three actives.
fn v6_embedded_env() -> Map<String, Value> {
    let mut e = example_env();
    let set = |e: &mut Map<String, Value>, k: &str, v: Value| {
        e.insert(k.to_string(), v);
    };
    set(&mut e, "active_count", 3.into());
    set(&mut e, "access_ip_version", 6.into());
    set(&mut e, "access_subnet", "access-v6".into());
    set(&mut e, "access_remote_prefix", "::/0".into());
    set(
        &mut e,
        "access_vips",
        "fd00:10::11,fd00:10::12,fd00:10::13".into(),
    );
    set(
        &mut e,
        "core_vips",
        "198.18.20.11,198.18.20.12,198.18.20.13".into(),
    );
    set(
        &mut e,
        "active_mgmt_ips",
        "198.18.30.11,198.18.30.12,198.18.30.13".into(),
    );
    set(&mut e, "state_store", "embedded".into());
    let pki = pki_files(&e);
    set(&mut e, "pki_files", pki);
    set(&mut e, "access_rtp_min", 40000.into());
    set(&mut e, "access_rtp_max", 49999.into());
    set(&mut e, "admin_drills", "true".into());
    e
}

fn cluster(env: &Map<String, Value>) -> Stack {
    let t = Template::load(&openstack_dir().join("bgf-cluster.yaml")).unwrap();
    Stack::new(t, "bgf", env).unwrap_or_else(|e| panic!("{e}"))
}

// -------------------------------------------------------- template checks

#[test]
fn heat_templates_parse_and_every_reference_resolves() {
    let t = Template::load(&openstack_dir().join("bgf-cluster.yaml")).unwrap();
    let errs = hot::check(&t);
    assert!(errs.is_empty(), "template problems:\n{}", errs.join("\n"));

    // Every resource and output evaluates for both parameter sets (a
    // function misused, e.g. list_join of numbers, fails here).
    for env in [example_env(), v6_embedded_env()] {
        let s = cluster(&env);
        for (r, ty) in s.enabled_resources().unwrap() {
            s.properties(&r).unwrap_or_else(|e| panic!("{e}"));
            if ty == "OS::Heat::ResourceGroup" {
                for m in s.members(&r).unwrap() {
                    for (mr, _) in m.enabled_resources().unwrap() {
                        m.properties(&mr).unwrap_or_else(|e| panic!("{e}"));
                    }
                    m.outputs().unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
        let out = s.outputs().unwrap_or_else(|e| panic!("{e}"));
        let cluster_file = out["bgfctl_cluster_file"].as_str().unwrap();
        let parsed: toml::Table = toml::from_str(cluster_file)
            .unwrap_or_else(|e| panic!("bgfctl cluster file output: {e}\n{cluster_file}"));
        let n = s.param("active_count").unwrap().as_u64().unwrap() as usize;
        assert_eq!(parsed["instance"].as_array().unwrap().len(), n + 1);
    }

    // The checker itself catches broken references.
    let mut bad = t.clone();
    bad.doc["resources"]["standby"]["properties"]["flavor"] =
        serde_json::json!({"get_param": "no_such_param"});
    bad.doc["resources"]["standby"]["properties"]["key_name"] =
        serde_json::json!({"get_resource": "no_such_resource"});
    bad.doc["resources"]["standby"]["properties"]["image"] =
        serde_json::json!({"yaql": {"expression": "$.data", "data": 1}});
    bad.doc["resources"]["actives"]["depends_on"] = serde_json::json!(["nope"]);
    let errs = hot::check(&bad);
    for expect in [
        "get_param of undeclared Some(\"no_such_param\")",
        "get_resource of undeclared Some(\"no_such_resource\")",
        "yaql is valid HOT but not checked offline",
        "depends_on undeclared nope",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "{expect} not in {errs:#?}"
        );
    }
}

// ------------------------------------------------- addresses and security

/// The allowed-address-pairs of a port resource, as strings.
fn pairs(s: &Stack, port: &str) -> Vec<String> {
    s.properties(port).unwrap()["allowed_address_pairs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| p["ip_address"].as_str().unwrap().to_string())
        .collect()
}

/// The rules of the security groups a port resource is in (resolved from
/// the `get_resource` / parameter reference back to the cluster's group).
fn port_rules(cluster: &Stack, s: &Stack, port: &str) -> Vec<Value> {
    let groups = s.properties(port).unwrap()["security_groups"].clone();
    let mut rules = Vec::new();
    for g in groups.as_array().unwrap() {
        let g = g.as_str().unwrap();
        let name = g.rsplit('/').next().unwrap();
        assert!(
            g == format!("bgf/{name}"),
            "{port}: security group {g} is not one of the cluster's"
        );
        let p = cluster.properties(name).unwrap();
        rules.extend(p["rules"].as_array().unwrap().iter().cloned());
    }
    rules
}

/// Whether `rules` let `proto` traffic of the address family of `addr` in on
/// every port of `lo..=hi`.
fn opens(rules: &[Value], addr: IpAddr, proto: &str, lo: u64, hi: u64) -> bool {
    let eth = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    rules.iter().any(|r| {
        r["direction"] == "ingress"
            && r["ethertype"] == eth
            && r["protocol"] == proto
            && r["port_range_min"].as_u64().is_some_and(|m| m <= lo)
            && r["port_range_max"].as_u64().is_some_and(|m| m >= hi)
    })
}

fn rtp_range(side: &toml::Value) -> (u64, u64) {
    let s = side["rtp_ports"].as_str().unwrap();
    let (a, b) = s.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

fn host_port(s: &str) -> (IpAddr, u64) {
    let a: std::net::SocketAddr = s.parse().unwrap();
    (a.ip(), u64::from(a.port()))
}

/// The files a cloud-config user-data writes (`write_files`): path → content.
fn etc_bgf_files(user_data: &str) -> Vec<(String, String)> {
    assert!(
        user_data.starts_with("#cloud-config\n"),
        "user-data is not cloud-config:\n{user_data}"
    );
    let doc: Value = serde_norway::from_str(user_data)
        .unwrap_or_else(|e| panic!("user-data is not YAML: {e}\n{user_data}"));
    doc["write_files"]
        .as_array()
        .expect("write_files")
        .iter()
        .map(|f| {
            let content = f["content"].as_str().unwrap().to_string();
            let content = if f["encoding"] == "b64" {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD
                    .decode(content.trim())
                    .unwrap_or_else(|e| panic!("{}: bad base64: {e}", f["path"]));
                String::from_utf8(b).expect("PEM is text")
            } else {
                content
            };
            (f["path"].as_str().unwrap().to_string(), content)
        })
        .collect()
}

/// Write a VM's `/etc/bgf/...` files into `dir` (the PKI under `dir/pki`)
/// and point its TOML files there, so `bgf check-config` loads the very
/// credentials the VM would.
fn materialize(dir: &Path, files: &[(String, String)]) {
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    let root = format!("{}/", dir.display());
    for (path, content) in files {
        if let Some(rest) = path.strip_prefix("/etc/bgf/") {
            let p = dir.join(rest);
            let text = if path.ends_with(".toml") {
                content.replace("/etc/bgf/", &root)
            } else {
                content.clone()
            };
            std::fs::write(&p, text).unwrap();
        }
    }
}

/// The store credentials of a stack (`bgf gen-certs --heat-env`), as the
/// `pki_files` parameter.
fn pki_files(env: &Map<String, Value>) -> Value {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = tmpdir(&format!(
        "pki{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut args: Vec<String> = vec![
        "gen-certs".into(),
        dir.join("certs").display().to_string(),
        "--server".into(),
        format!("statelog={}", env["store_vip"].as_str().unwrap()),
        "--standby".into(),
        "sb1".into(),
        "--heat-env".into(),
        dir.join("pki-env.yaml").display().to_string(),
    ];
    let n = env["active_count"].as_u64().unwrap();
    for i in 1..=n {
        args.push("--active".into());
        args.push(format!("bgf{i}"));
    }
    let out = Command::new(bgf_binary().unwrap())
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("pki-env.yaml")).unwrap())
            .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    env["parameters"]["pki_files"].clone()
}

#[test]
fn every_active_service_address_is_an_allowed_pair_of_the_standby_and_open_in_its_groups() {
    for env in [example_env(), v6_embedded_env()] {
        let c = cluster(&env);
        let members = c.members("actives").unwrap();
        let n = c.param("active_count").unwrap().as_u64().unwrap() as usize;
        assert_eq!(members.len(), n);
        let sb_access = pairs(&c, "standby_access_port");
        let sb_core = pairs(&c, "standby_core_port");
        assert_eq!(sb_access.len(), n, "{sb_access:?}");
        assert_eq!(sb_core.len(), n, "{sb_core:?}");
        let sb_access_rules = port_rules(&c, &c, "standby_access_port");
        let sb_core_rules = port_rules(&c, &c, "standby_core_port");
        let sb_mgmt_rules = port_rules(&c, &c, "standby_mgmt_port");
        for m in &members {
            let ud = m.properties("server").unwrap()["user_data"]
                .as_str()
                .unwrap()
                .to_string();
            let files = etc_bgf_files(&ud);
            let (_, text) = files
                .iter()
                .find(|(p, _)| p.ends_with(".toml"))
                .expect("an /etc/bgf/<name>.toml");
            let cfg: toml::Value = toml::from_str(text).unwrap();
            let drills = c.param("admin_drills").unwrap().as_str() == Some("true");
            assert_eq!(
                cfg["admin"]["drills"].as_bool(),
                Some(drills),
                "[admin] drills"
            );
            for (side, port, vip_port) in [
                ("access", "access_port", "access_vip_port"),
                ("core", "core_port", "core_vip_port"),
            ] {
                let (sip_ip, sip_port) = host_port(cfg[side]["sip"].as_str().unwrap());
                let media: IpAddr = cfg[side]["media_ip"].as_str().unwrap().parse().unwrap();
                let (lo, hi) = rtp_range(&cfg[side]);
                let own = pairs(m, port);
                let sb = if side == "access" {
                    &sb_access
                } else {
                    &sb_core
                };
                for ip in [sip_ip, media] {
                    let host = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
                    assert!(
                        sb.contains(&host),
                        "{host} ({side}) not on the standby's port: {sb:?}"
                    );
                    assert!(
                        own.contains(&host),
                        "{host} ({side}) not on its active's port: {own:?}"
                    );
                    let vip = m.properties(vip_port).unwrap();
                    assert_eq!(
                        vip["fixed_ips"][0]["ip_address"].as_str().unwrap(),
                        ip.to_string(),
                        "{side} VIP port"
                    );
                    let sb_rules = if side == "access" {
                        &sb_access_rules
                    } else {
                        &sb_core_rules
                    };
                    for (who, rules) in
                        [("standby", sb_rules), ("active", &port_rules(&c, m, port))]
                    {
                        for proto in ["udp", "tcp"] {
                            assert!(
                                opens(rules, ip, proto, sip_port, sip_port),
                                "{who} {side}: SIP {proto} {sip_port} for {ip} not opened: {rules:#?}"
                            );
                        }
                        assert!(
                            opens(rules, ip, "udp", lo, hi),
                            "{who} {side}: RTP {lo}-{hi} for {ip} not opened: {rules:#?}"
                        );
                    }
                }
            }
            // Heartbeats and admin API on the management network.
            let (hb_ip, hb) = host_port(cfg["ha"]["heartbeat"].as_str().unwrap());
            let (sb_ip, sbp) = host_port(cfg["ha"]["standby"].as_str().unwrap());
            let (adm_ip, adm) = host_port(cfg["admin"]["listen"].as_str().unwrap());
            let mgmt = port_rules(&c, m, "mgmt_port");
            assert!(
                opens(&mgmt, hb_ip, "udp", hb, hb),
                "active heartbeat port {hb}"
            );
            assert!(opens(&mgmt, adm_ip, "tcp", adm, adm), "admin port {adm}");
            assert!(
                opens(&sb_mgmt_rules, sb_ip, "udp", sbp, sbp),
                "standby heartbeat port {sbp}"
            );
            assert_eq!(
                m.properties("mgmt_port").unwrap()["fixed_ips"][0]["ip_address"],
                hb_ip.to_string()
            );
        }
        // Neutron refuses a rule whose remote prefix is of another family
        // than its ethertype.
        for sg in ["sg_access", "sg_core", "sg_mgmt", "sg_store"] {
            for r in c.properties(sg).unwrap()["rules"].as_array().unwrap() {
                let prefix = r["remote_ip_prefix"].as_str().unwrap();
                let net: IpAddr = prefix.split('/').next().unwrap().parse().unwrap();
                let eth = if net.is_ipv4() { "IPv4" } else { "IPv6" };
                assert_eq!(r["ethertype"], eth, "{sg}: {r}");
            }
        }
        // ICMP (port unreachable: fast failure detection) on management.
        assert!(sb_mgmt_rules.iter().any(|r| r["protocol"] == "icmp"));
        // Anti-affinity for every bgf VM.
        let sg = c.properties("server_group").unwrap();
        assert_eq!(sg["policies"], serde_json::json!(["anti-affinity"]));
        for m in &members {
            assert_eq!(
                m.properties("server").unwrap()["scheduler_hints"]["group"],
                "bgf/server_group"
            );
        }
        assert_eq!(
            c.properties("standby").unwrap()["scheduler_hints"]["group"],
            "bgf/server_group"
        );
    }
}

// ------------------------------------------------------------- cloud-init

fn check_config(bgf: &Path, file: &Path) -> String {
    let out = Command::new(bgf)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "bgf check-config {} failed ({}):\n{text}\n--- file:\n{}",
        file.display(),
        out.status,
        std::fs::read_to_string(file).unwrap_or_default()
    );
    text
}

fn no_placeholder_left(what: &str, text: &str) {
    let re = regex::Regex::new(r"@[A-Z][A-Z0-9_]*@|%[A-Z][A-Z0-9_]*%|%index%").unwrap();
    if let Some(m) = re.find(text) {
        panic!("{what}: placeholder {} left in:\n{text}", m.as_str());
    }
}

fn shell_parses(what: &str, script: &str) {
    let dir = tmpdir("sh");
    let p = dir.join("script.sh");
    std::fs::write(&p, script).unwrap();
    let out = Command::new("sh").arg("-n").arg(&p).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: sh -n: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cloud_init_output_passes_bgf_check_config() {
    let bgf = bgf_binary().unwrap_or_else(|e| panic!("{e}"));
    for (tag, env) in [("v4", example_env()), ("v6", v6_embedded_env())] {
        let c = cluster(&env);
        let members = c.members("actives").unwrap();
        let mut active_files = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let ud = m.properties("server").unwrap()["user_data"]
                .as_str()
                .unwrap()
                .to_string();
            no_placeholder_left(&format!("active {i} user-data"), &ud);
            let dir = tmpdir(&format!("{tag}-a{i}"));
            let mut toml_path = None;
            let files = etc_bgf_files(&ud);
            materialize(&dir, &files);
            for (path, content) in files {
                if path.ends_with(".toml") {
                    let name = Path::new(&path).file_name().unwrap();
                    toml_path = Some(dir.join(name));
                    active_files.push((path.clone(), content.clone()));
                } else if path.starts_with("/usr/local/sbin/") {
                    shell_parses(&path, &content);
                }
            }
            let p = toml_path.expect("the active's toml");
            let out = check_config(&bgf, &p);
            let name = m.param("active_names").unwrap()[i]
                .as_str()
                .unwrap()
                .to_string();
            assert!(out.contains(&format!("instance {name}:")), "{out}");
            assert!(out.contains("heartbeats"), "{out}");
            let _ = std::fs::remove_dir_all(dir);
        }

        // The standby: its copies of the active files are byte-equal to the
        // actives' own, and standby.toml protects every one of them.
        let ud = c.properties("standby").unwrap()["user_data"]
            .as_str()
            .unwrap()
            .to_string();
        no_placeholder_left("standby user-data", &ud);
        let files = etc_bgf_files(&ud);
        let dir = tmpdir(&format!("{tag}-sb"));
        materialize(&dir, &files);
        for (path, content) in &files {
            if path.starts_with("/usr/local/sbin/") {
                shell_parses(path, content);
            }
        }
        for (path, content) in &active_files {
            let copy = files.iter().find(|(p, _)| p == path);
            assert_eq!(
                copy.map(|(_, c)| c),
                Some(content),
                "standby's copy of {path}"
            );
        }
        let out = check_config(&bgf, &dir.join("standby.toml"));
        let names: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.param("active_names").unwrap()[i]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            out.contains(&format!("protects {}", names.join(", "))),
            "{out}"
        );
        let sb: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("standby.toml")).unwrap()).unwrap();
        assert_eq!(
            sb["standby"]["access_interface"].as_str(),
            c.param("access_interface").unwrap().as_str()
        );
        let _ = std::fs::remove_dir_all(dir);

        // The store's user-data is cloud-config with nothing left to fill.
        for m in c.members("redis_nodes").unwrap() {
            let ud = m.properties("server").unwrap()["user_data"]
                .as_str()
                .unwrap()
                .to_string();
            no_placeholder_left("redis user-data", &ud);
            for (path, content) in etc_bgf_files(&ud) {
                if path.starts_with("/usr/local/sbin/") {
                    shell_parses(&path, &content);
                }
            }
        }
        if c.enabled("statelog_server").unwrap() {
            let ud = c.properties("statelog_server").unwrap()["user_data"]
                .as_str()
                .unwrap()
                .to_string();
            no_placeholder_left("statelog user-data", &ud);
            assert!(ud.contains("BGF_STATELOG_LISTEN=198.18.30.50:7400"), "{ud}");
        }
    }
}

// ---------------------------------------------------------- systemd units

fn units_dir() -> PathBuf {
    workspace_root().join("ops/systemd")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name)).unwrap()
}

fn directive(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn units_grant_what_bgf_needs_and_nothing_else() {
    let active = unit("bgf-active@.service");
    let standby = unit("bgf-standby.service");
    let statelog = unit("bgf-statelog.service");
    for (name, u) in [
        ("active", &active),
        ("standby", &standby),
        ("statelog", &statelog),
    ] {
        assert_eq!(
            directive(u, "User"),
            ["bgf"],
            "{name}: runs as bgf, not root"
        );
        assert_eq!(directive(u, "NoNewPrivileges"), ["yes"], "{name}");
        assert_eq!(directive(u, "ProtectSystem"), ["strict"], "{name}");
        assert_eq!(directive(u, "ReadWritePaths"), ["/var/lib/bgf"], "{name}");
        // The active is never restarted automatically (a restart after a
        // takeover would serve next to the standby); the others are.
        let restart = if name == "active" { "no" } else { "on-failure" };
        assert_eq!(directive(u, "Restart"), [restart], "{name}");
        // These would break rtnetlink on the host's interfaces.
        for k in ["PrivateNetwork", "PrivateUsers"] {
            assert!(directive(u, k).iter().all(|v| v == "no"), "{name}: {k}");
        }
    }
    // Exit 3 = fenced: never restarted as an active.
    assert_eq!(directive(&active, "RestartPreventExitStatus"), ["3"]);
    assert!(directive(&standby, "RestartPreventExitStatus").is_empty());
    // Capabilities: exactly what each role uses.
    let caps = |u: &str| directive(u, "AmbientCapabilities").join(" ");
    assert_eq!(caps(&active), "CAP_NET_ADMIN CAP_SYS_NICE");
    assert_eq!(caps(&standby), "CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_NICE");
    assert_eq!(caps(&statelog), "");
    for u in [&active, &standby, &statelog] {
        assert_eq!(caps(u), directive(u, "CapabilityBoundingSet").join(" "));
    }
    // SCHED_FIFO heartbeats: realtime not restricted for the HA roles.
    for u in [&active, &standby] {
        assert_eq!(directive(u, "RestrictRealtime"), ["no"]);
        assert!(directive(u, "LimitRTPRIO")[0].parse::<u32>().unwrap() >= 10);
        let nofile: u64 = directive(u, "LimitNOFILE")[0].parse().unwrap();
        assert!(nofile >= 262_144, "media sockets: LimitNOFILE {nofile}");
    }
    let families = |u: &str| directive(u, "RestrictAddressFamilies").join(" ");
    for fam in ["AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families(&active).contains(fam));
        assert!(families(&standby).contains(fam));
    }
    assert!(
        families(&standby).contains("AF_PACKET"),
        "GARP/NA need AF_PACKET"
    );
    assert!(!families(&statelog).contains("AF_NETLINK"));
}

/// Copy the host's targets and slices into `root` so `systemd-analyze
/// verify --root` can resolve the units' dependencies there.
fn seed_systemd_root(root: &Path) {
    let dst = root.join("lib/systemd/system");
    std::fs::create_dir_all(&dst).unwrap();
    for src in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        let Ok(rd) = std::fs::read_dir(src) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if (ext == "target" || ext == "slice") && p.is_file() {
                let to = dst.join(e.file_name());
                if !to.exists() {
                    std::fs::copy(&p, to).unwrap();
                }
            }
        }
    }
}

/// `systemd-analyze verify --root ROOT` on the bgf units installed in ROOT:
/// exit 0 and not a word of output (unknown keys are only warnings).
fn verify_units(sa: &Path, root: &Path) {
    seed_systemd_root(root);
    let out = Command::new(sa)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args([
            "bgf-active@bgf1.service",
            "bgf-standby.service",
            "bgf-statelog.service",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify ({}):\n{text}",
        out.status
    );
    // Exposure score (systemd-analyze security, offline): 10 = unprotected.
    for u in [
        "bgf-active@bgf1.service",
        "bgf-standby.service",
        "bgf-statelog.service",
    ] {
        let out = Command::new(sa)
            .arg("security")
            .arg(format!("--root={}", root.display()))
            .args(["--offline=yes", "--threshold=30", "--no-pager", u])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{u}: exposure above 3.0 ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(sa) = tool(
        "systemd-analyze",
        "install the systemd package (apt-get install systemd)",
    ) else {
        return;
    };
    // A root with the units and a stand-in /usr/bin/bgf (the .deb test
    // verifies them again next to the real binary).
    let root = tmpdir("units");
    let sys = root.join("lib/systemd/system");
    std::fs::create_dir_all(&sys).unwrap();
    for u in [
        "bgf-active@.service",
        "bgf-standby.service",
        "bgf-statelog.service",
    ] {
        std::fs::copy(units_dir().join(u), sys.join(u)).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(bgf_binary().unwrap(), root.join("usr/bin/bgf")).unwrap();
    std::fs::create_dir_all(root.join("etc/bgf")).unwrap();
    for f in ["bgf1.toml", "standby.toml"] {
        std::fs::write(root.join("etc/bgf").join(f), "").unwrap();
    }
    std::fs::copy(
        workspace_root().join("ops/deb/etc/statelog.env"),
        root.join("etc/bgf/statelog.env"),
    )
    .unwrap();
    verify_units(&sa, &root);

    // And it catches a broken unit: a typo'd directive.
    let bad = unit("bgf-standby.service").replace("LockPersonality=", "LockPersonalty=");
    std::fs::write(sys.join("bgf-standby.service"), bad).unwrap();
    let out = Command::new(&sa)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("bgf-standby.service")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "verify missed a typo: {out:?}"
    );
    let _ = std::fs::remove_dir_all(root);
}

// ------------------------------------------------------------------- .deb

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn deb_builds_installs_into_a_throwaway_root_and_runs() {
    let Some(cargo_deb) = tool(
        "cargo-deb",
        "install it with `cargo install --locked cargo-deb --version 3.8.0`",
    ) else {
        return;
    };
    let Some(dpkg) = tool("dpkg", "install dpkg") else {
        return;
    };
    if !is_root() {
        let msg = "the .deb install test needs root (dpkg --root runs the maintainer scripts, which chown)";
        if std::env::var("BGF_REQUIRE_DEPLOY_TOOLS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    // The binaries of this profile (debug under `cargo test`): the .deb is a
    // debug-profile package here; releases use `cargo deb -p bgf --no-build`
    // after a release build (docs/DEPLOY-OPENSTACK.md).
    let bgf = bgf_binary().unwrap();
    workspace_binary("ops", "bgfctl", "BGFCTL_BIN").unwrap();
    workspace_binary("bgf-callgen", "bgf-callgen", "BGF_CALLGEN_BIN").unwrap();
    let profile_dir = bgf.parent().unwrap();
    let target = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_string(),
        p => p.to_string(),
    };
    let out_dir = tmpdir("deb-out");
    run(Command::new(&cargo_deb)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target)
        .args([
            "-q",
            "-p",
            "bgf",
            "--no-build",
            "--strip",
            "--fast",
            "--profile",
        ])
        .arg(&profile)
        .arg("-o")
        .arg(&out_dir));
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote a .deb");

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/bgf",
        "./usr/bin/bgfctl",
        "./usr/bin/bgf-callgen",
        "./lib/systemd/system/bgf-active@.service",
        "./lib/systemd/system/bgf-standby.service",
        "./lib/systemd/system/bgf-statelog.service",
        "./etc/bgf/statelog.env",
        "./etc/bgf/bgf1.toml.example",
        "./usr/share/doc/bgf/DEPLOY-OPENSTACK.md",
        "./usr/share/man/man1/bgfctl.1",
        "./usr/share/bash-completion/completions/bgfctl",
        "./usr/share/zsh/vendor-completions/_bgfctl",
        "./usr/share/fish/vendor_completions.d/bgfctl.fish",
    ] {
        assert!(contents.contains(f), "{f} not in the .deb:\n{contents}");
    }

    // A throwaway root: an empty dpkg database and root-only passwd/group.
    let root = tmpdir("deb-root");
    for d in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "usr/sbin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
    ] {
        std::fs::write(root.join(f), text).unwrap();
    }
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    run(Command::new(&dpkg)
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
            "-i",
        ])
        .arg(&deb));
    assert_eq!(
        std::fs::read_to_string("/etc/passwd").unwrap(),
        host_passwd,
        "the install touched the host's /etc/passwd"
    );
    let status = run(Command::new(&dpkg)
        .arg(format!("--root={}", root.display()))
        .args(["-s", "bgf"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let conffiles = run(Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["-W", "-f=${Conffiles}", "bgf"]));
    assert!(conffiles.contains("/etc/bgf/statelog.env"), "{conffiles}");

    // The maintainer scripts made the bgf user and its data directory.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("bgf:"))
        .unwrap_or_else(|| panic!("no bgf user in {passwd}"));
    let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    assert!(line.ends_with(":/var/lib/bgf:/usr/sbin/nologin"), "{line}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = std::fs::metadata(root.join("var/lib/bgf")).unwrap();
    assert_eq!(data.uid(), uid, "/var/lib/bgf owned by bgf");
    assert_eq!(data.permissions().mode() & 0o777, 0o750);

    // The binaries run from the root.
    for (b, expect) in [
        ("bgf", "bgf 0.1.0"),
        ("bgfctl", "bgfctl 0.1.0"),
        ("bgf-callgen", "bgf-callgen 0.1.0"),
    ] {
        let out = run(Command::new(root.join("usr/bin").join(b)).arg("--version"));
        assert!(out.contains(expect), "{b} --version: {out}");
    }
    // The shipped example configs pass the installed bgf's check-config.
    let ex = tmpdir("deb-examples");
    std::fs::copy(root.join("etc/bgf/bgf1.toml.example"), ex.join("bgf1.toml")).unwrap();
    std::fs::copy(
        root.join("etc/bgf/standby.toml.example"),
        ex.join("standby.toml"),
    )
    .unwrap();
    check_config(&root.join("usr/bin/bgf"), &ex.join("standby.toml"));
    let _ = std::fs::remove_dir_all(ex);

    // The installed units verify against the installed binary.
    if let Some(sa) = tool("systemd-analyze", "install the systemd package") {
        std::fs::write(root.join("etc/bgf/bgf1.toml"), "").unwrap();
        std::fs::write(root.join("etc/bgf/standby.toml"), "").unwrap();
        verify_units(&sa, &root);
    }

    // Purge removes the data and the user.
    run(Command::new(&dpkg)
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--log=/dev/null",
            "--purge",
            "bgf",
        ]));
    assert!(!root.join("var/lib/bgf").exists());
    assert!(!root.join("usr/bin/bgf").exists());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(!passwd.contains("bgf:"), "{passwd}");
    let _ = std::fs::remove_dir_all(root);
    let _ = std::fs::remove_dir_all(out_dir);
}

// ------------------------------------- the units' capabilities, for real

/// `AmbientCapabilities=` of a unit as setpriv names (`net_admin`, ...).
fn unit_caps(name: &str) -> Vec<String> {
    directive(&unit(name), "AmbientCapabilities")
        .join(" ")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Network namespaces (and the processes in them) removed on drop.
struct Lab {
    namespaces: Vec<String>,
    children: Vec<std::process::Child>,
    /// Removed too (it holds a copy of the bgf binary).
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh_in(ns: &str, script: &str) {
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-ec", script]));
}

/// Start `bgf ARGS` in `ns` as an unprivileged uid with exactly `caps`
/// (ambient, inheritable and bounding set) and no_new_privs — what
/// `User=bgf`, `AmbientCapabilities=`, `CapabilityBoundingSet=` and
/// `NoNewPrivileges=yes` give the process under systemd.
fn spawn_as_unit(
    ns: &str,
    bgf: &Path,
    caps: &[String],
    args: &[&str],
    log: &Path,
) -> std::process::Child {
    let plus: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid=64123",
        "--regid=64123",
    ])
    .args(["--clear-groups", "--no-new-privs"])
    .arg(format!(
        "--inh-caps=-all{}",
        plus.iter().map(|p| format!(",{p}")).collect::<String>()
    ))
    .arg(format!(
        "--bounding-set=-all{}",
        plus.iter().map(|p| format!(",{p}")).collect::<String>()
    ));
    if !caps.is_empty() {
        cmd.arg(format!("--ambient-caps={}", plus.join(",")));
    }
    let f = std::fs::File::create(log).unwrap();
    cmd.arg(bgf)
        .args(args)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {args:?} in {ns}: {e}"))
}

/// Wait (bounded) until `log` contains `needle`.
fn wait_log(log: &Path, needle: &str, secs: u64) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{} has no \"{needle}\" after {secs} s:\n{text}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn addrs_of(ns: &str, dev: &str) -> String {
    run(Command::new("ip").args(["-n", ns, "-br", "addr", "show", "dev", dev]))
}

/// The capabilities in the units are enough for bgf as a non-root user, and
/// used for real: two namespaces (an active's VM and the standby's), the
/// statelog with none, the active and the standby with their unit's set.
/// SIGSTOP of the active (a frozen VM): the standby claims the service
/// addresses (rtnetlink, CAP_NET_ADMIN) and announces them (AF_PACKET,
/// CAP_NET_RAW); SIGCONT: the active learns it was fenced, drops its
/// addresses (CAP_NET_ADMIN) and exits 3. Both heartbeat threads get
/// SCHED_FIFO (CAP_SYS_NICE). The seccomp filter and mount namespacing of
/// the units are not applied here (no systemd as PID 1 on the test machines).
#[test]
fn unit_capabilities_suffice_for_takeover_and_fencing_as_non_root() {
    if !is_root() {
        let msg = "the capability test needs root (network namespaces, setpriv)";
        if std::env::var("BGF_REQUIRE_DEPLOY_TOOLS").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let (Some(_), Some(_)) = (
        tool("setpriv", "install util-linux"),
        tool("ip", "install iproute2"),
    ) else {
        return;
    };
    let dir = tmpdir("caps");
    let bgf = dir.join("bgf");
    std::fs::copy(bgf_binary().unwrap(), &bgf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    run(Command::new("chown").arg("64123:64123").arg(&data));
    // The store's and its clients' certificates, readable by the bgf user
    // only (as the package's /etc/bgf/pki would be).
    let pki = dir.join("pki");
    run(Command::new(&bgf).args(["gen-certs"]).arg(&pki).args([
        "--server",
        "statelog=198.18.30.99",
        "--active",
        "bgf1",
        "--standby",
        "sb1",
    ]));
    run(Command::new("chown").arg("-R").arg("64123:64123").arg(&pki));

    let tag = std::process::id() % 100_000;
    let (a, s) = (format!("dplA{tag}"), format!("dplS{tag}"));
    let mut lab = Lab {
        namespaces: Vec::new(),
        children: Vec::new(),
        dir: dir.clone(),
    };
    for ns in [&a, &s] {
        run(Command::new("ip").args(["netns", "add", ns]));
        lab.namespaces.push(ns.clone());
        sh_in(ns, "ip link set lo up");
    }
    for p in ["m", "a", "c"] {
        run(Command::new("ip").args([
            "link",
            "add",
            &format!("dpl{p}0"),
            "netns",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &format!("dpl{p}1"),
            "netns",
            &s,
        ]));
    }
    sh_in(&a, "ip addr add 198.18.30.11/24 dev dplm0; ip addr add 198.18.10.2/24 dev dpla0; ip addr add 198.18.20.2/24 dev dplc0; for i in dplm0 dpla0 dplc0; do ip link set $i up; done; ip addr add 198.18.10.11/32 dev dpla0; ip addr add 198.18.20.11/32 dev dplc0");
    sh_in(&s, "ip addr add 198.18.30.99/24 dev dplm1; ip addr add 198.18.10.3/24 dev dpla1; ip addr add 198.18.20.3/24 dev dplc1; for i in dplm1 dpla1 dplc1; do ip link set $i up; done");

    std::fs::write(
        dir.join("bgf1.toml"),
        "[instance]\nname = \"bgf1\"\nsecret = \"lab-Mz5Kq9Xv3Nw7Rc2Lp8Tb4Hj6Yf1Gd0sAe\"\n\
         [access]\nsip = \"198.18.10.11:5060\"\nrtp_ports = \"20000-20099\"\n\
         [core]\nsip = \"198.18.20.11:5060\"\nrtp_ports = \"30000-30099\"\nnext_hop = \"198.18.20.5:5060\"\n\
         [statelog]\nbackend = \"embedded\"\naddr = \"198.18.30.99:7400\"\n\
         ca = \"pki/ca.pem\"\ncert = \"pki/active-bgf1.pem\"\nkey = \"pki/active-bgf1.key\"\n\
         [ha]\nheartbeat = \"198.18.30.11:7500\"\nstandby = \"198.18.30.99:7501\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("standby.toml"),
        "[instance]\nname = \"sb1\"\n[standby]\naccess_interface = \"dpla1\"\ncore_interface = \"dplc1\"\n\
         [[standby.protect]]\nconfig = \"bgf1.toml\"\n\
         [statelog]\nca = \"pki/ca.pem\"\ncert = \"pki/standby-sb1.pem\"\nkey = \"pki/standby-sb1.key\"\n",
    )
    .unwrap();
    for f in ["bgf1.toml", "standby.toml"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (log_store, log_active, log_standby) = (
        dir.join("statelog.log"),
        dir.join("active.log"),
        dir.join("standby.log"),
    );
    let data_s = data.to_str().unwrap().to_string();
    let pem = |n: &str| pki.join(n).to_str().unwrap().to_string();
    let (ca, cert, key) = (
        pem("ca.pem"),
        pem("server-statelog.pem"),
        pem("server-statelog.key"),
    );
    lab.children.push(spawn_as_unit(
        &s,
        &bgf,
        &unit_caps("bgf-statelog.service"),
        &[
            "statelog",
            "--listen",
            "198.18.30.99:7400",
            "--data",
            &data_s,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
        &log_store,
    ));
    wait_log(&log_store, "bgf statelog started", 30);
    let active_cfg = dir.join("bgf1.toml").to_str().unwrap().to_string();
    lab.children.push(spawn_as_unit(
        &a,
        &bgf,
        &unit_caps("bgf-active@.service"),
        &["active", "--config", &active_cfg],
        &log_active,
    ));
    wait_log(&log_active, "bgf active started", 30);
    let sb_cfg = dir.join("standby.toml").to_str().unwrap().to_string();
    lab.children.push(spawn_as_unit(
        &s,
        &bgf,
        &unit_caps("bgf-standby.service"),
        &["standby", "--config", &sb_cfg],
        &log_standby,
    ));
    wait_log(&log_standby, "active bgf1 heard: protected", 30);
    for log in [&log_active, &log_standby] {
        wait_log(
            log,
            "heartbeat thread runs at real-time priority (SCHED_FIFO)",
            5,
        );
    }

    // Freeze the active: the standby takes over as uid 64123.
    let active_pid = lab.children[1].id() as i32;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(active_pid, libc::SIGSTOP) };
    wait_log(&log_standby, "takeover complete: bgf1 taken over", 30);
    let held = addrs_of(&s, "dpla1") + &addrs_of(&s, "dplc1");
    assert!(
        held.contains("198.18.10.11/32") && held.contains("198.18.20.11/32"),
        "the standby did not claim the service addresses: {held}"
    );
    let text = std::fs::read_to_string(&log_standby).unwrap();
    assert!(
        !text.contains("first_announcement_us=-") && text.contains("first_announcement_us="),
        "no announcement was sent: {text}"
    );

    // Thaw it: fenced, addresses dropped, exit 3.
    // SAFETY: as above.
    unsafe { libc::kill(active_pid, libc::SIGCONT) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = lab.children[1].try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < end,
            "the fenced active did not exit:\n{}",
            std::fs::read_to_string(&log_active).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(3),
        "{}",
        std::fs::read_to_string(&log_active).unwrap_or_default()
    );
    wait_log(&log_active, "service addresses dropped", 1);
    let left = addrs_of(&a, "dpla0") + &addrs_of(&a, "dplc0");
    assert!(
        !left.contains("198.18.10.11") && !left.contains("198.18.20.11"),
        "the fenced active kept its addresses: {left}"
    );
    drop(lab);
}
