//! The one way the harness gets store credentials: a lab PKI made by
//! `bgf gen-certs` (the product's own command, so the tests exercise it)
//! in a test's directory — the CA, the store's server certificate for the
//! addresses it listens on, client certificates for the actives, the
//! standby `sb1` and the operator `ops` — and the pieces that use them: the
//! `[statelog]` credential lines of a config, `bgf statelog`'s TLS
//! arguments, and a `RemoteStore` connected under a role.

use state_log::remote::{ClientTls, RemoteStore, Timeouts};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A lab PKI in a directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Where the files are.
    pub dir: PathBuf,
}

/// Actives every lab PKI has a certificate for.
pub const ACTIVES: [&str; 4] = ["bgf1", "bgf2", "bgf3", "bgf"];

impl Pki {
    /// `bgf gen-certs DIR` for a store reachable at `hosts` (plus
    /// 127.0.0.1 and localhost), the actives of [`ACTIVES`], `standby:sb1`
    /// and `operator:ops`. Reuses what `dir` holds.
    pub fn lab(dir: &Path, hosts: &[IpAddr]) -> Result<Pki, String> {
        let mut names: Vec<String> = hosts.iter().map(IpAddr::to_string).collect();
        names.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
        let mut args = vec![
            "--server".to_string(),
            format!("statelog={}", names.join(",")),
            "--standby".into(),
            "sb1".into(),
            "--operator".into(),
            "ops".into(),
        ];
        for a in ACTIVES {
            args.extend(["--active".to_string(), a.to_string()]);
        }
        let p = Pki {
            dir: dir.to_path_buf(),
        };
        p.gen(&args)?;
        Ok(p)
    }

    fn gen(&self, args: &[String]) -> Result<(), String> {
        let bin = crate::build::bgf_binary()?;
        let out = Command::new(&bin)
            .arg("gen-certs")
            .arg(&self.dir)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "bgf gen-certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Make sure `active:<name>` has a certificate.
    pub fn ensure_active(&self, name: &str) -> Result<(), String> {
        self.gen(&["--active".into(), name.into()])
    }

    fn file(&self, cn: &str, ext: &str) -> PathBuf {
        let (role, name) = cn.split_once(':').unwrap_or(("active", cn));
        self.dir.join(format!("{role}-{name}.{ext}"))
    }

    /// The credential lines of a `[statelog]` section for `cn`
    /// (`active:bgf1`, `standby:sb1`).
    pub fn toml_lines(&self, cn: &str) -> String {
        format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.dir.join("ca.pem").display(),
            self.file(cn, "pem").display(),
            self.file(cn, "key").display()
        )
    }

    /// `bgf statelog`'s `--ca --cert --key`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--ca".into(),
            self.dir.join("ca.pem").display().to_string(),
            "--cert".into(),
            self.file("server:statelog", "pem").display().to_string(),
            "--key".into(),
            self.file("server:statelog", "key").display().to_string(),
        ]
    }

    /// TLS files of `cn`.
    pub fn files(&self, cn: &str) -> state_log::tls::TlsFiles {
        state_log::tls::TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.file(cn, "pem"),
            key: self.file(cn, "key"),
        }
    }

    /// A client of the store at `addr` under `cn`.
    pub async fn connect(&self, cn: &str, addr: &str) -> Result<RemoteStore, String> {
        let tls = ClientTls::from_files(&self.files(cn), None, addr)?;
        RemoteStore::connect(addr, tls, Timeouts::default())
            .await
            .map_err(|e| e.to_string())
    }
}
