//! With the `link` feature: find DPDK with pkg-config, generate bindings
//! for the `rte_*` API with bindgen, and compile `shim/shim.c` (DPDK's
//! static-inline functions as real symbols). Without it: nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "link")]
    link::run();
}

#[cfg(feature = "link")]
mod link {
    use std::path::PathBuf;

    pub fn run() {
        println!("cargo:rerun-if-changed=shim/shim.c");
        println!("cargo:rerun-if-changed=shim/shim.h");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        let lib = match pkg_config::Config::new()
            .atleast_version("21.11")
            .probe("libdpdk")
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "dpdk-sys: DPDK not found with pkg-config ({e}).\n\
                     Install it (Debian/Ubuntu: apt-get install libdpdk-dev pkg-config libclang-dev)\n\
                     or build without the `dpdk` feature."
                );
                std::process::exit(1);
            }
        };
        // pkg-config's cflags also carry `-include rte_config.h` and -march.
        let cflags: Vec<String> = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut args: Vec<String> = Vec::new();
        let mut it = cflags.iter();
        while let Some(f) = it.next() {
            if f == "-include" {
                if let Some(h) = it.next() {
                    args.push("-include".into());
                    args.push(h.clone());
                }
            } else if f.starts_with("-I") || f.starts_with("-D") || f.starts_with("-march") {
                args.push(f.clone());
            }
        }
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));

        let mut b = bindgen::Builder::default()
            .header("shim/shim.h")
            .clang_args(&args)
            .allowlist_function("rte_.*")
            .allowlist_function("bgf_.*")
            .allowlist_type("rte_.*")
            .allowlist_var("RTE_.*")
            .opaque_type("rte_l2tpv2_combined_msg_hdr")
            .opaque_type("rte_gtp_psc_generic_hdr")
            .opaque_type("rte_arp_ipv4")
            .opaque_type("rte_arp_hdr")
            .generate_comments(false)
            .layout_tests(false)
            .derive_default(true)
            .prepend_enum_name(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        let _ = &mut b;
        let bindings = match b.generate() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("dpdk-sys: bindgen failed: {e} (is libclang-dev installed?)");
                std::process::exit(1);
            }
        };
        if let Err(e) = bindings.write_to_file(out.join("bindings.rs")) {
            eprintln!("dpdk-sys: writing bindings: {e}");
            std::process::exit(1);
        }

        let mut cc = cc::Build::new();
        cc.file("shim/shim.c").opt_level(3).warnings(false);
        for p in &lib.include_paths {
            cc.include(p);
        }
        for a in &args {
            if a.starts_with("-D") || a.starts_with("-march") {
                cc.flag(a);
            }
        }
        cc.flag("-include").flag("rte_config.h");
        cc.compile("bgf_dpdk_shim");
        // pkg-config already printed the rte_* link lines (shared libraries;
        // the PMDs load from DPDK's driver directory at EAL init).
    }
}
