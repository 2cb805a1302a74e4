//! Finds the `bgf` binary of the profile the tests (or the demo) run under, and
//! builds it once per process when it is missing or older than the sources.
//!
//! Where: `$BGF_BIN` if set; else the profile directory this executable lives in
//! (`<target>/<profile>/deps/e2e_x-…` for tests, `<target>/<profile>/bgf-demo` for
//! the demo), which is `$CARGO_TARGET_DIR` or `<workspace>/target` — the same
//! directory `cargo test --workspace` just built into.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The SIPp scenario directory, `tests/sipp/`.
pub fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// `(target dir, profile dir name)` of the running executable.
fn profile_dir() -> Result<(PathBuf, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent", exe.display()))?
        .to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("cannot tell the profile from {}", dir.display()))?;
    let target = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", dir.display()))?
        .to_path_buf();
    // Cross-compiles put <target>/<triple>/<profile>; `cargo build --target-dir`
    // wants the outer dir, which is what a user would have set. Good enough here.
    Ok((target, profile))
}

fn newest_source_mtime(root: &Path) -> Option<SystemTime> {
    fn walk(p: &Path, newest: &mut Option<SystemTime>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n == "target" || n == ".git")
                {
                    continue;
                }
                walk(&path, newest);
            } else if path
                .extension()
                .is_some_and(|x| x == "rs" || x == "toml" || x == "lock")
            {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    if newest.is_none_or(|n| m > n) {
                        *newest = Some(m);
                    }
                }
            }
        }
    }
    let mut newest = None;
    // Everything the daemon links against lives in these crates.
    for c in ["bgf", "sip-control", "media-plane", "state-log", "standby"] {
        walk(&root.join(c), &mut newest);
    }
    for f in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(m) = std::fs::metadata(root.join(f)).and_then(|m| m.modified()) {
            if newest.is_none_or(|n| m > n) {
                newest = Some(m);
            }
        }
    }
    newest
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("BGF_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("BGF_BIN={} is not a file", p.display()))
        };
    }
    let (target, profile) = profile_dir()?;
    let bin = target.join(&profile).join("bgf");
    let root = workspace_root();
    let fresh = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
        Ok(bin_m) => newest_source_mtime(&root).is_none_or(|src| src <= bin_m),
        Err(_) => false,
    };
    if fresh {
        return Ok(bin);
    }
    eprintln!(
        "bgf-tests: building the bgf binary ({profile}) into {} ...",
        target.display()
    );
    cargo_build("bgf", "bgf")
}

/// `cargo build -p PACKAGE --bin BIN` for the running executable's profile
/// and target directory; returns the binary's path.
fn cargo_build(package: &str, bin: &str) -> Result<PathBuf, String> {
    let (target, profile) = profile_dir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "-q", "-p", package, "--bin", bin]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo} build -p {package}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p {package}` ({profile}) failed with {status}; fix the build and rerun"
        ));
    }
    let path = target.join(&profile).join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "`cargo build -p {package}` succeeded but {} does not exist",
            path.display()
        ))
    }
}

/// A workspace binary other than `bgf` (`bgf-callgen`, `bgfctl`): `$ENV` if
/// set, else built once per process for the running profile (cargo skips
/// the work when it is fresh).
pub fn workspace_binary(package: &str, bin: &str, env: &str) -> Result<PathBuf, String> {
    type Built = std::sync::Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>;
    static BUILT: OnceLock<Built> = OnceLock::new();
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    built
        .entry(bin.to_string())
        .or_insert_with(|| cargo_build(package, bin))
        .clone()
}

/// The path of an up-to-date `bgf` binary (built at most once per process).
pub fn bgf_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone()
}
