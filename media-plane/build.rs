//! Builds the XDP relay program (`bpf/relay.bpf.c`) into BPF bytecode with
//! clang when clang and the libbpf headers (`libbpf-dev`) are installed, and
//! embeds it (`cfg(bgf_xdp_object)`). Without them the crate still builds:
//! `media.backend = "xdp"` then reports that the program is not built in and
//! the daemon falls back to the kernel-socket backend.
//!
//! `BGF_CLANG` names the compiler (default `clang`; `false` forces the
//! no-clang build). `BGF_REQUIRE_XDP=1` turns a missing compiler or header
//! into a build error — CI and release builds set it, so a shipped binary
//! cannot silently lack the fast path.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bgf_xdp_object)");
    println!("cargo:rerun-if-changed=bpf/relay.bpf.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BGF_CLANG");
    println!("cargo:rerun-if-env-changed=BGF_REQUIRE_XDP");
    let require = std::env::var("BGF_REQUIRE_XDP").is_ok_and(|v| v == "1");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("relay.bpf.o");
    let clang = std::env::var("BGF_CLANG").unwrap_or_else(|_| "clang".into());
    // The BPF target has no multiarch include dir of its own: <asm/types.h>
    // lives under the host's (linux-libc-dev).
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/relay.bpf.c", "-o"])
        .arg(&obj)
        .output();
    let why = match result {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-cfg=bgf_xdp_object");
            return;
        }
        Ok(o) => format!(
            "{clang} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run {clang}: {e}"),
    };
    let msg = format!(
        "XDP relay program not built ({why}); media.backend = \"xdp\" will fall back to kernel sockets. Install clang and libbpf-dev to build it."
    );
    if require {
        panic!("BGF_REQUIRE_XDP=1: {msg}");
    }
    println!("cargo:warning={}", msg.lines().next().unwrap_or_default());
}
