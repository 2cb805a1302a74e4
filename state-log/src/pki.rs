//! The lab's keys and certificates (`bgf gen-certs DIR`): one CA, a server
//! certificate per store node (its addresses and names as subject
//! alternative names, usable as a TLS server and as a client of the other
//! nodes — NATS routes), and a client certificate per active, standby and
//! operator, each naming its role in the subject common name
//! ([`crate::tls::Identity`]).
//!
//! An existing `ca.pem` + `ca.key` in the directory is reused, so
//! certificates can be added later (a spare active) without re-issuing the
//! others; existing leaf files are kept unless `overwrite`. Private keys are
//! written mode 0600. ECDSA P-256, valid until 2050: this is a lab PKI —
//! production uses the operator's CA with the same common names.
//!
//! Not here: loading them ([`crate::tls`]).

use crate::tls::{Identity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// What to issue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabSpec {
    /// Store nodes: name and the addresses / DNS names clients reach it by.
    pub servers: Vec<(String, Vec<String>)>,
    /// Active instance ids.
    pub actives: Vec<String>,
    /// Standby names.
    pub standbys: Vec<String>,
    /// Operator names.
    pub operators: Vec<String>,
    /// Replace existing leaf certificates.
    pub overwrite: bool,
}

/// File names of one issued certificate.
pub fn cert_file(dir: &Path, id: &Identity) -> PathBuf {
    dir.join(format!("{}-{}.pem", id.role.as_str(), id.name))
}

/// File name of its key.
pub fn key_file(dir: &Path, id: &Identity) -> PathBuf {
    dir.join(format!("{}-{}.key", id.role.as_str(), id.name))
}

/// The CA certificate's path in `dir`.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The [`crate::tls::TlsFiles`] of `id` in `dir`.
pub fn files_of(dir: &Path, id: &Identity) -> crate::tls::TlsFiles {
    crate::tls::TlsFiles {
        ca: ca_file(dir),
        cert: cert_file(dir, id),
        key: key_file(dir, id),
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

fn err(what: &str, e: rcgen::Error) -> String {
    format!("{what}: {e}")
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "bgf");
    d.push(DnType::CommonName, cn);
    d
}

fn validity(p: &mut CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2050, 1, 1);
}

/// Load the CA in `dir`, or create it.
fn ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, bool), String> {
    let (cert_p, key_p) = (ca_file(dir), dir.join("ca.key"));
    if cert_p.exists() && key_p.exists() {
        let key_pem =
            std::fs::read_to_string(&key_p).map_err(|e| format!("{}: {e}", key_p.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| err(&key_p.display().to_string(), e))?;
        let cert_pem =
            std::fs::read_to_string(&cert_p).map_err(|e| format!("{}: {e}", cert_p.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| err(&cert_p.display().to_string(), e))?;
        return Ok((issuer, false));
    }
    let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn("bgf lab CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p);
    let cert = p.self_signed(&key).map_err(|e| err("CA certificate", e))?;
    write_file(&key_p, &key.serialize_pem(), true)?;
    write_file(&cert_p, &cert.pem(), false)?;
    Ok((Issuer::new(p, key), true))
}

/// Issue everything `spec` names into `dir` (created if missing). Returns
/// the files written (existing ones kept are not listed).
pub fn generate(dir: &Path, spec: &LabSpec) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let (issuer, new_ca) = ca(dir)?;
    let mut written = Vec::new();
    if new_ca {
        written.push(ca_file(dir));
        written.push(dir.join("ca.key"));
    }
    let mut leaves: Vec<(Identity, Vec<String>)> = Vec::new();
    for (name, hosts) in &spec.servers {
        leaves.push((id(Role::Server, name)?, hosts.clone()));
    }
    for (role, names) in [
        (Role::Active, &spec.actives),
        (Role::Standby, &spec.standbys),
        (Role::Operator, &spec.operators),
    ] {
        for n in names {
            leaves.push((id(role, n)?, Vec::new()));
        }
    }
    for (ident, hosts) in leaves {
        let (cp, kp) = (cert_file(dir, &ident), key_file(dir, &ident));
        if !spec.overwrite && cp.exists() && kp.exists() {
            continue;
        }
        let key = KeyPair::generate().map_err(|e| err("key", e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&ident.common_name());
        p.subject_alt_names = hosts
            .iter()
            .map(
                |h| match h.trim_start_matches('[').trim_end_matches(']').parse() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => h
                        .as_str()
                        .try_into()
                        .map(SanType::DnsName)
                        .map_err(|e| err(&format!("host name {h:?}"), e)),
                },
            )
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if ident.role == Role::Server {
            // NATS nodes are clients of each other on their routes.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        validity(&mut p);
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| err(&format!("certificate of {ident}"), e))?;
        write_file(&kp, &key.serialize_pem(), true)?;
        write_file(&cp, &cert.pem(), false)?;
        written.push(cp);
        written.push(kp);
    }
    Ok(written)
}

/// Write a Heat environment file (`parameters: pki_files: {name: base64}`)
/// with every `*.pem` / `*.key` of `dir` but the CA's key; returns how many.
/// Mode 0600: it holds private keys.
pub fn heat_env(dir: &Path, out: &Path) -> Result<usize, String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".pem") || n.ends_with(".key")) && n != "ca.key")
        .collect();
    names.sort();
    let mut text = String::from(
        "# Written by `bgf gen-certs --heat-env`: the store credentials for\n# ops/openstack/bgf-cluster.yaml (second -e file). Secret: it holds keys.\nparameters:\n  pki_files:\n",
    );
    for n in &names {
        let p = dir.join(n);
        let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        text += &format!("    {n}: {}\n", base64(&b));
    }
    write_file(out, &text, true)?;
    Ok(names.len())
}

/// Standard base64 with padding (what cloud-init's `encoding: b64` reads).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, sh) in [18, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                out.push(A[((n >> sh) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn id(role: Role, name: &str) -> Result<Identity, String> {
    Identity::parse(&format!("{}:{name}", role.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_loadable_certificates_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LabSpec {
            servers: vec![("s1".into(), vec!["127.0.0.1".into(), "localhost".into()])],
            actives: vec!["bgf1".into()],
            standbys: vec!["sb1".into()],
            operators: vec!["ops".into()],
            overwrite: false,
        };
        let w = generate(dir.path(), &spec).unwrap();
        assert_eq!(w.len(), 2 + 4 * 2, "{w:?}");
        let a = id(Role::Active, "bgf1").unwrap();
        let f = files_of(dir.path(), &a);
        assert_eq!(f.identity().unwrap(), a);
        crate::tls::client_config(&f).unwrap();
        let s = files_of(dir.path(), &id(Role::Server, "s1").unwrap());
        crate::tls::server_config(&s).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        // A second run keeps everything; a new active joins under the same CA.
        let ca_before = std::fs::read(ca_file(dir.path())).unwrap();
        let more = LabSpec {
            actives: vec!["bgf1".into(), "bgf3".into()],
            ..Default::default()
        };
        let w = generate(dir.path(), &more).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(std::fs::read(ca_file(dir.path())).unwrap(), ca_before);
        crate::tls::client_config(&files_of(dir.path(), &id(Role::Active, "bgf3").unwrap()))
            .unwrap();
        assert!(generate(
            dir.path(),
            &LabSpec {
                actives: vec!["bad name".into()],
                ..Default::default()
            }
        )
        .is_err());
    }
}
