//! The man page and shell completions the Debian package ships
//! (ops/deb/man, ops/deb/completions) are `bgfctl man` / `bgfctl completions`
//! of this very bgfctl: a command or option added without regenerating them
//! fails here, with the command that regenerates them.

use std::path::Path;
use std::process::Command;

const REGEN: &str = "cargo build -p ops && B=target/debug/bgfctl && $B man > ops/deb/man/bgfctl.1 && $B completions bash > ops/deb/completions/bgfctl.bash && $B completions zsh > ops/deb/completions/_bgfctl && $B completions fish > ops/deb/completions/bgfctl.fish";

fn check(args: &[&str], file: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_bgfctl"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bgfctl {args:?}: {out:?}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let shipped = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        shipped == out.stdout,
        "{file} is not `bgfctl {}` of this bgfctl — regenerate (from the workspace root): {REGEN}",
        args.join(" ")
    );
}

#[test]
fn man_page_and_completions_are_current() {
    check(&["man"], "deb/man/bgfctl.1");
    check(&["completions", "bash"], "deb/completions/bgfctl.bash");
    check(&["completions", "zsh"], "deb/completions/_bgfctl");
    check(&["completions", "fish"], "deb/completions/bgfctl.fish");
}
