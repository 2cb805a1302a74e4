//! The cluster file: which `bgf` processes make up the cluster, where their
//! admin APIs are, and the bearer token.
//!
//! ```toml
//! # /etc/bgf/cluster.toml
//! token_file = "/etc/bgf/admin.token"   # or: token = "..."
//! timeout_ms = 3000                     # per request (default 3000)
//!
//! [[instance]]
//! name = "bgf1"                          # the instance id / standby name
//! admin = "http://198.18.2.101:8080"     # its [admin] listen
//!
//! [[instance]]
//! name = "sb1"
//! admin = "http://198.18.2.99:8080"
//! token_file = "/etc/bgf/sb1.token"      # optional per-instance token
//! ```
//!
//! For `bgfctl drill failover` (lab and test deployments) an instance may
//! name how to cut its network and heal it (`--mode cut`), run by bgfctl as
//! given — e.g. `cut = ["openstack", "port", "set", "--disable", "bgf1-access"]`
//! — and a `[drill]` table says where the call generator runs:
//!
//! ```toml
//! [drill]
//! callgen = "/usr/bin/bgf-callgen"   # default: next to bgfctl, else PATH
//! uac_ip = "198.18.0.200"            # the UE side (IPv4 access addresses)
//! uac_ip6 = "fd00:a::200"            # the UE side (IPv6 access addresses)
//! uac_wrap = []                      # command prefix for the UAC (must exec)
//! uas_wrap = []                      # … for the UAS (on the core next hop)
//! rtp_ports = "24000-27999"          # the call generators' own RTP ports
//! report_dir = "/var/tmp/bgf-drill"  # reports go in a sub-directory per run
//! ```
//!
//! Roles are not written down: each process says what it is on `/health`.
//! Relative `token_file` paths are relative to the cluster file.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default cluster file.
pub const DEFAULT_PATH: &str = "/etc/bgf/cluster.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    token: Option<String>,
    token_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    instance: Vec<RawInstance>,
    #[serde(default)]
    drill: DrillConfig,
}

/// The `[drill]` table: where `bgfctl drill` runs its call generator.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The `bgf-callgen` binary.
    pub callgen: Option<PathBuf>,
    /// The UAC's (UE side's) IPv4 address.
    pub uac_ip: Option<std::net::Ipv4Addr>,
    /// The UAC's IPv6 address.
    pub uac_ip6: Option<std::net::Ipv6Addr>,
    /// Command prefix for the UAC (e.g. `["ip", "netns", "exec", "ue"]`).
    #[serde(default)]
    pub uac_wrap: Vec<String>,
    /// Command prefix for the UAS.
    #[serde(default)]
    pub uas_wrap: Vec<String>,
    /// The call generators' RTP ports (`LOW-HIGH`), shared out per active.
    pub rtp_ports: Option<String>,
    /// Where the run directories go.
    pub report_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    admin: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    cut: Option<Vec<String>>,
    heal: Option<Vec<String>>,
}

/// Where a token came from (named in errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub source: String,
}

/// One `bgf` process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    /// Base URL, without a trailing slash (`http://host:port`).
    pub admin: String,
    pub token: Token,
    /// `bgfctl drill --mode cut`: the command that cuts its network …
    pub cut: Option<Vec<String>>,
    /// … and the one that heals it.
    pub heal: Option<Vec<String>>,
}

/// A loaded cluster file.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub path: PathBuf,
    pub instances: Vec<Instance>,
    pub timeout: Duration,
    /// `[drill]`.
    pub drill: DrillConfig,
}

fn read_token(path: &Path, base: &Path) -> Result<Token, String> {
    let p = if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    };
    let v = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "cannot read token file {}: {e} — it holds the [admin] token of the bgf processes",
            p.display()
        )
    })?;
    let v = v.trim().to_string();
    if v.is_empty() {
        return Err(format!(
            "token file {} is empty — put the [admin] token in it",
            p.display()
        ));
    }
    Ok(Token {
        value: v,
        source: format!("token file {}", p.display()),
    })
}

impl Cluster {
    /// Load `path`; `token_file` (from `--token-file`) overrides every token
    /// in the file.
    pub fn load(path: &Path, token_file: Option<&Path>) -> Result<Cluster, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read cluster file {}: {e} — pass --cluster FILE or set BGF_CLUSTER (format: docs/OPERATIONS.md, \"Cluster file\")",
                path.display()
            )
        })?;
        let cwd = PathBuf::from(".");
        let base = path.parent().unwrap_or(&cwd).to_path_buf();
        Cluster::parse(&text, path, &base, token_file)
    }

    /// Parse a cluster file's text (`base`: where relative paths start).
    pub fn parse(
        text: &str,
        path: &Path,
        base: &Path,
        token_file: Option<&Path>,
    ) -> Result<Cluster, String> {
        let raw: RawCluster =
            toml::from_str(text).map_err(|e| format!("cluster file {}: {e}", path.display()))?;
        if raw.instance.is_empty() {
            return Err(format!(
                "cluster file {}: no [[instance]] — list every bgf process (name, admin URL)",
                path.display()
            ));
        }
        let forced = token_file
            .map(|p| read_token(p, Path::new(".")))
            .transpose()?;
        let global = match (&raw.token, &raw.token_file) {
            (Some(t), _) => Some(Token {
                value: t.clone(),
                source: format!("token in {}", path.display()),
            }),
            (None, Some(f)) => Some(read_token(f, base)?),
            (None, None) => None,
        };
        let mut instances: Vec<Instance> = Vec::new();
        for r in raw.instance {
            if instances.iter().any(|i| i.name == r.name) {
                return Err(format!(
                    "cluster file {}: instance {:?} listed twice",
                    path.display(),
                    r.name
                ));
            }
            let admin = r.admin.trim_end_matches('/').to_string();
            if !admin.starts_with("http://") {
                return Err(format!(
                    "cluster file {}: instance {:?}: admin {:?} must be an http:// URL (the [admin] listen address, e.g. http://198.18.2.101:8080)",
                    path.display(),
                    r.name,
                    r.admin
                ));
            }
            let own = match (&r.token, &r.token_file) {
                (Some(t), _) => Some(Token {
                    value: t.clone(),
                    source: format!("token of {} in {}", r.name, path.display()),
                }),
                (None, Some(f)) => Some(read_token(f, base)?),
                (None, None) => None,
            };
            let token = forced
                .clone()
                .or(own)
                .or_else(|| global.clone())
                .ok_or_else(|| {
                    format!(
                        "cluster file {}: no token for {:?} — set token_file (or token) at the top of the file, or pass --token-file",
                        path.display(),
                        r.name
                    )
                })?;
            for (what, c) in [("cut", &r.cut), ("heal", &r.heal)] {
                if c.as_ref().is_some_and(|c| c.is_empty() || c[0].is_empty()) {
                    return Err(format!(
                        "cluster file {}: instance {:?}: {what} is empty — give the command and its arguments, e.g. [\"openstack\", \"port\", \"set\", \"--disable\", \"PORT\"]",
                        path.display(),
                        r.name
                    ));
                }
            }
            if r.cut.is_some() != r.heal.is_some() {
                return Err(format!(
                    "cluster file {}: instance {:?}: give both cut and heal (a drill that cuts must be able to heal)",
                    path.display(),
                    r.name
                ));
            }
            instances.push(Instance {
                name: r.name,
                admin,
                token,
                cut: r.cut,
                heal: r.heal,
            });
        }
        Ok(Cluster {
            path: path.to_path_buf(),
            instances,
            timeout: Duration::from_millis(raw.timeout_ms.unwrap_or(3000).max(1)),
            drill: raw.drill,
        })
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Result<&Instance, String> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.instances.iter().map(|i| i.name.as_str()).collect();
                format!(
                    "no instance {name:?} in {} (it lists {names:?})",
                    self.path.display()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_by_precedence_and_errors_say_what_to_do() {
        let dir = std::env::temp_dir().join(format!("bgfctl-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.token"), "file-token\n").unwrap();
        std::fs::write(dir.join("sb.token"), "sb-token").unwrap();
        let text = r#"
            token_file = "t.token"
            [[instance]]
            name = "a1"
            admin = "http://127.0.0.1:8080/"
            [[instance]]
            name = "sb"
            admin = "http://127.0.0.1:8081"
            token_file = "sb.token"
        "#;
        let p = dir.join("cluster.toml");
        let c = Cluster::parse(text, &p, &dir, None).unwrap();
        assert_eq!(c.instances[0].admin, "http://127.0.0.1:8080");
        assert_eq!(c.instances[0].token.value, "file-token");
        assert_eq!(c.instances[1].token.value, "sb-token");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert!(c.get("nope").unwrap_err().contains("a1"));
        // --token-file wins over everything.
        let forced = Cluster::parse(text, &p, &dir, Some(&dir.join("sb.token"))).unwrap();
        assert_eq!(forced.instances[0].token.value, "sb-token");

        let no_token = "[[instance]]\nname = \"a1\"\nadmin = \"http://127.0.0.1:1\"\n";
        assert!(Cluster::parse(no_token, &p, &dir, None)
            .unwrap_err()
            .contains("--token-file"));
        let https = "token = \"x\"\n[[instance]]\nname = \"a1\"\nadmin = \"https://h:1\"\n";
        assert!(Cluster::parse(https, &p, &dir, None)
            .unwrap_err()
            .contains("http://"));
        assert!(Cluster::parse("token = \"x\"\n", &p, &dir, None)
            .unwrap_err()
            .contains("no [[instance]]"));
        // Drill additions: cut needs heal, neither may be empty; [drill] typed.
        let cut = "token = \"x\"\n[[instance]]\nname = \"a1\"\nadmin = \"http://h:1\"\n";
        let with = |extra: &str| Cluster::parse(&format!("{cut}{extra}"), &p, &dir, None);
        let ok = with("cut = [\"sh\", \"-c\", \"x\"]\nheal = [\"y\"]\n[drill]\nuac_ip = \"198.18.0.200\"\nuac_wrap = [\"ip\", \"netns\", \"exec\", \"ue\"]\n").unwrap();
        assert_eq!(
            ok.instances[0].heal.as_deref(),
            Some(&["y".to_string()][..])
        );
        assert_eq!(ok.drill.uac_ip, Some("198.18.0.200".parse().unwrap()));
        assert_eq!(ok.drill.uac_wrap.len(), 4);
        assert!(with("cut = [\"x\"]\n")
            .unwrap_err()
            .contains("both cut and heal"));
        assert!(with("cut = []\nheal = [\"y\"]\n")
            .unwrap_err()
            .contains("cut is empty"));
        assert!(with("[drill]\nuac_ip = \"nope\"\n").is_err());
        assert!(with("[drill]\nbogus = 1\n").is_err());
        let missing = Cluster::load(&dir.join("absent.toml"), None).unwrap_err();
        assert!(missing.contains("BGF_CLUSTER"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
