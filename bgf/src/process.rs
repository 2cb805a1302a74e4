//! Process start-up shared by the roles (`bgf active`, `bgf standby`,
//! `bgf statelog`): logging set-up, config load with every problem logged,
//! the SIP-side runtime, and the stop signals. Not here: what a role does
//! once started (`main.rs`, [`crate::standby_role`]).

use crate::config::{self, LogFormat};
use std::path::Path;
use std::process::ExitCode;
use tracing::error;

/// Log level precedence: `--log-level`, then `RUST_LOG`, then `log.level`.
pub fn init_logging(
    format: LogFormat,
    cli_level: Option<&str>,
    file_level: &str,
) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let (directive, from) = match (
        cli_level,
        std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()),
    ) {
        (Some(l), _) => (l.to_string(), "--log-level"),
        (None, Some(env)) => (env, "RUST_LOG"),
        (None, None) => (file_level.to_string(), "log.level"),
    };
    let filter = EnvFilter::try_new(&directive)
        .map_err(|e| format!("{from} \"{directive}\" is not a level or filter: {e} — use error, warn, info, debug or trace"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let res = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    res.map_err(|e| format!("cannot initialise logging: {e}"))
}

/// The start `bgf active` and `bgf standby` share: load and validate the
/// file (every problem logged, with the `bgf check-config` hint), start
/// logging (CLI over file settings), and build the one-thread runtime the
/// SIP side runs on — the core loop reads and writes the UDP sockets itself
/// and the TCP connections, the state log client and the admin API are
/// tasks on the same thread, so no message crosses threads (heartbeats and
/// media have their own). `Err` is the exit code.
pub fn start_role<C>(
    path: &Path,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    what: &str,
    load: impl FnOnce(&Path) -> Result<C, config::ConfigErrors>,
    file_logging: impl FnOnce(&C) -> (LogFormat, String),
) -> Result<(C, tokio::runtime::Runtime), ExitCode> {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(errs) => {
            let _ = init_logging(
                log_format.unwrap_or(LogFormat::Human),
                log_level.as_deref(),
                "info",
            );
            error!(
                config = %path.display(),
                "invalid {what} ({} problem(s)); fix them and start again (`bgf check-config {}` lists them)",
                errs.0.len(),
                path.display()
            );
            for e in &errs.0 {
                error!(config = %path.display(), "{e}");
            }
            return Err(ExitCode::from(1));
        }
    };
    let (file_format, file_level) = file_logging(&cfg);
    if let Err(e) = init_logging(
        log_format.unwrap_or(file_format),
        log_level.as_deref(),
        &file_level,
    ) {
        eprintln!("bgf: {e}");
        return Err(ExitCode::from(1));
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok((cfg, rt)),
        Err(e) => {
            error!(error = %e, "cannot start the async runtime (out of threads or memory?)");
            Err(ExitCode::from(1))
        }
    }
}

/// SIGTERM or SIGINT, whichever comes first (its name).
pub async fn wait_for_signal() -> Result<&'static str, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
