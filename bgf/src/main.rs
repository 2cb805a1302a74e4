//! # bgf — the daemon
//!
//! Owns process concerns: CLI, config loading and validation, logging, and the
//! wiring that drives the deterministic `sip-control` core from real sockets
//! (SIP over UDP/TCP), real time (timers) and the `media-plane` packet path.
//!
//! It does not own SIP or session logic (that is `sip-control`) nor packet
//! forwarding (that is `media-plane`).
//!
//! This file is the command line only: the roles, their wiring and every
//! module live in the `bgf` library (`lib.rs`), which the fuzz targets in
//! `tests/fuzz` drive too.

use bgf::process::{init_logging, start_role, wait_for_signal};
use bgf::{
    admin, commit, config, ha, media, runtime, standby_role, statelog_role, store, transport,
};

use clap::{Parser, Subcommand};
use config::{Config, LogFormat};
use media_plane::Side;
use runtime::{Channels, CoreLoop, LoopEnd, TimerQueue};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn, Instrument};
use transport::{Counters, Transports};

/// bgf — IMS Border Gateway Function.
#[derive(Parser, Debug)]
#[command(name = "bgf", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run an active instance: proxy SIP, rewrite SDP, relay media.
    Active {
        /// Configuration file (TOML; see docs/CONFIG.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Log level or tracing filter (overrides RUST_LOG and log.level).
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
    },
    /// Run the standby: protect the actives listed in its file (heartbeats,
    /// hot replicas of their logs) and take over the one that fails.
    Standby {
        /// Standby configuration file (TOML; see docs/CONFIG.md, "Standby").
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format (overrides log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Log level or tracing filter (overrides RUST_LOG and log.level).
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
    },
    /// Run the embedded state log server (single node: one process, one data
    /// directory; multi-host deployments use JetStream or Redis). Clients
    /// connect over mutual TLS only.
    Statelog {
        /// TCP address to serve the state log on (e.g. 127.0.0.1:7400).
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Data directory (created if missing; one server per directory).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// CA certificate (PEM) whose client certificates are accepted.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// This server's certificate (PEM, `server:<name>`, naming the
        /// addresses clients reach it by).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Most client connections at once.
        #[arg(long, value_name = "N", default_value_t = 512)]
        max_connections: usize,
        /// Seconds a connection may stay idle (nothing in progress, no
        /// request) before it is closed.
        #[arg(long, value_name = "S", default_value_t = 300)]
        idle_timeout_s: u64,
        /// Admin API address (`/health`, `/metrics`; off without it).
        #[arg(long, value_name = "ADDR", requires = "admin_token_file")]
        admin: Option<std::net::SocketAddr>,
        /// File holding the admin API's bearer token (at least 16
        /// characters; required with --admin).
        #[arg(long, value_name = "FILE", requires = "admin")]
        admin_token_file: Option<PathBuf>,
        /// Log format.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
        /// Log level or tracing filter (overrides RUST_LOG; default info).
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
    },
    /// Print a fresh instance secret (256 bits from the OS random source,
    /// base64url) for `[instance] secret`.
    GenSecret,
    /// Make the lab's keys and certificates in DIR: a CA (reused when DIR
    /// has one), a server certificate per store node, a client certificate
    /// per active, standby and operator (docs/CONFIG.md, "State log
    /// credentials"). Existing certificates are kept unless --overwrite.
    GenCerts {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A store node: NAME=HOST[,HOST...] (addresses or DNS names its
        /// clients use). Repeatable.
        #[arg(long, value_name = "NAME=HOSTS")]
        server: Vec<String>,
        /// An active instance id. Repeatable.
        #[arg(long, value_name = "INSTANCE")]
        active: Vec<String>,
        /// A standby name. Repeatable.
        #[arg(long, value_name = "NAME")]
        standby: Vec<String>,
        /// An operator name. Repeatable.
        #[arg(long, value_name = "NAME")]
        operator: Vec<String>,
        /// Re-issue certificates that exist already.
        #[arg(long)]
        overwrite: bool,
        /// Also write a Heat environment file with every certificate and
        /// key of DIR but the CA key, base64 (parameter `pki_files` of
        /// ops/openstack/bgf-cluster.yaml).
        #[arg(long, value_name = "FILE")]
        heat_env: Option<PathBuf>,
        /// Also write `nats-<name>.conf` for every --server: the JetStream
        /// node configuration (client port 4222, cluster port 6222 on its
        /// first host, TLS with users mapped from these certificates and
        /// their rights, data in /var/lib/nats, PKI in /etc/bgf/pki).
        #[arg(long)]
        nats_conf: bool,
    },
    /// Validate a configuration file and print a summary (exit 2 on errors).
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Queue between the transports and the core loop.
const INPUT_QUEUE: usize = 8192;
/// Queue between the media plane's sink and the core loop.
const MEDIA_QUEUE: usize = 8192;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::GenSecret => match config::gen_secret() {
            Ok(s) => {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bgf gen-secret: cannot read /dev/urandom: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Active {
            config,
            log_format,
            log_level,
        } => active(&config, log_format, log_level),
        Cmd::Standby {
            config,
            log_format,
            log_level,
        } => standby_role::main(&config, log_format, log_level),
        Cmd::Statelog {
            listen,
            data,
            ca,
            cert,
            key,
            max_connections,
            idle_timeout_s,
            admin,
            admin_token_file,
            log_format,
            log_level,
        } => statelog(
            StatelogArgs {
                listen,
                data,
                tls: state_log::tls::TlsFiles { ca, cert, key },
                limits: state_log::server::Limits {
                    max_connections,
                    idle_timeout: Duration::from_secs(idle_timeout_s.max(1)),
                    ..Default::default()
                },
                admin: admin.zip(admin_token_file),
            },
            log_format,
            log_level,
        ),
        Cmd::GenCerts {
            dir,
            server,
            active,
            standby,
            operator,
            overwrite,
            heat_env,
            nats_conf,
        } => {
            let users = state_log::natsconf::Users {
                actives: active.clone(),
                standbys: standby.clone(),
                operators: operator.clone(),
            };
            let nodes = server.clone();
            let mut code = gen_certs(&dir, server, active, standby, operator, overwrite);
            if nats_conf && code == ExitCode::SUCCESS {
                if let Err(e) = write_nats_confs(&dir, &nodes, &users) {
                    eprintln!("bgf gen-certs: {e}");
                    code = ExitCode::from(1);
                }
            }
            match heat_env {
                Some(f) if code == ExitCode::SUCCESS => match state_log::pki::heat_env(&dir, &f) {
                    Ok(n) => {
                        eprintln!("bgf gen-certs: {n} file(s) in {} (parameter pki_files; keep it as secret as the keys)", f.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("bgf gen-certs: {e}");
                        ExitCode::from(1)
                    }
                },
                _ => code,
            }
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    // The core validates too (port pools); report its complaints here.
    let core_ok = |c: &config::Config| {
        sip_control::Core::new(c.core.clone())
            .map(|_| ())
            .map_err(|e| format!("core of {}: {e}", c.core.instance))
    };
    let checked = config::load_any(file).and_then(|any| {
        let problems: Vec<String> = match &any {
            config::AnyConfig::Active(c) => core_ok(c).err().into_iter().collect(),
            config::AnyConfig::Standby(s) => s
                .protects
                .iter()
                .filter_map(|p| core_ok(&p.config).err())
                .collect(),
        };
        if problems.is_empty() {
            Ok(any)
        } else {
            Err(config::ConfigErrors(problems))
        }
    });
    // Written with write! (not println!): `bgf check-config F | head -1`
    // must not panic on the closed pipe.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match checked {
        Ok(config::AnyConfig::Active(c)) => {
            let _ = writeln!(out, "{}: OK\n{}", file.display(), c.summary());
            ExitCode::SUCCESS
        }
        Ok(config::AnyConfig::Standby(s)) => {
            let _ = writeln!(out, "{}: OK\n{}", file.display(), s.summary());
            for p in &s.protects {
                let _ = writeln!(
                    out,
                    "  protects {}: {}",
                    p.path.display(),
                    p.config.summary()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}: {} problem(s):", file.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            ExitCode::from(2)
        }
    }
}

fn active(path: &Path, log_format: Option<LogFormat>, log_level: Option<String>) -> ExitCode {
    let (cfg, rt) = match start_role(
        path,
        log_format,
        log_level,
        "configuration",
        config::load,
        |c: &Config| (c.log_format, c.log_level.clone()),
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let span = tracing::info_span!("bgf", instance = %cfg.core.instance);
    let result = rt.block_on(run_active(cfg, span.clone()).instrument(span.clone()));
    // Tasks still running (connections mid-close) are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(2));
    let _enter = span.enter();
    match result {
        Ok(Stopped::Clean) => {
            info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Ok(Stopped::Fenced) => {
            error!("stopped: this instance was fenced by the state log (exit 3); restart it as a standby");
            ExitCode::from(3)
        }
        Ok(Stopped::TakenOver) => ExitCode::from(3),
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `bgf gen-certs`.
fn gen_certs(
    dir: &Path,
    server: Vec<String>,
    active: Vec<String>,
    standby: Vec<String>,
    operator: Vec<String>,
    overwrite: bool,
) -> ExitCode {
    let mut servers = Vec::new();
    for s in server {
        let Some((name, hosts)) = s.split_once('=') else {
            eprintln!("bgf gen-certs: --server {s:?}: write NAME=HOST[,HOST...], e.g. --server statelog=127.0.0.1,localhost");
            return ExitCode::from(2);
        };
        servers.push((
            name.to_string(),
            hosts.split(',').map(|h| h.trim().to_string()).collect(),
        ));
    }
    let spec = state_log::pki::LabSpec {
        servers,
        actives: active,
        standbys: standby,
        operators: operator,
        overwrite,
    };
    match state_log::pki::generate(dir, &spec) {
        Ok(written) => {
            for f in &written {
                println!("{}", f.display());
            }
            eprintln!(
                "bgf gen-certs: {} file(s) written in {} (existing ones kept); private keys are mode 0600 — copy each host only its own",
                written.len(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bgf gen-certs: {e}");
            ExitCode::from(1)
        }
    }
}

/// `nats-<name>.conf` for each `NAME=HOST,...` node (`--nats-conf`).
fn write_nats_confs(
    dir: &Path,
    servers: &[String],
    users: &state_log::natsconf::Users,
) -> Result<(), String> {
    let nodes: Vec<state_log::natsconf::Node> = servers
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(name, hosts)| {
            let host = hosts.split(',').next().unwrap_or("127.0.0.1").trim();
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            state_log::natsconf::Node {
                name: name.to_string(),
                client: format!("{host}:4222"),
                cluster: format!("{host}:6222"),
                monitor: Some("127.0.0.1:8222".into()),
            }
        })
        .collect();
    for me in &nodes {
        let text = state_log::natsconf::server_config(
            me,
            &nodes,
            Path::new("/etc/bgf/pki"),
            Path::new("/var/lib/nats"),
            users,
            "BGFLOG",
            "bgf.log",
        );
        let p = dir.join(format!("nats-{}.conf", me.name));
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("{}", p.display());
    }
    Ok(())
}

/// `bgf statelog`'s settings.
struct StatelogArgs {
    listen: std::net::SocketAddr,
    data: PathBuf,
    tls: state_log::tls::TlsFiles,
    limits: state_log::server::Limits,
    admin: Option<(std::net::SocketAddr, PathBuf)>,
}

fn statelog(args: StatelogArgs, log_format: LogFormat, log_level: Option<String>) -> ExitCode {
    if let Err(e) = init_logging(log_format, log_level.as_deref(), "info") {
        eprintln!("bgf: {e}");
        return ExitCode::from(1);
    }
    let listen = args.listen;
    let tls = match args.tls.identity().and_then(|id| {
        if id.role != state_log::tls::Role::Server {
            return Err(format!(
                "--cert {}: the certificate is {id}, a client's — the store needs a server certificate (server:<name>; `bgf gen-certs DIR --server NAME=HOST`)",
                args.tls.cert.display()
            ));
        }
        state_log::tls::server_config(&args.tls)
    }) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let settings = state_log::server::ServerSettings {
        tls,
        limits: args.limits,
    };
    let admin = match args
        .admin
        .map(|(a, f)| statelog_role::read_token(&f).map(|t| (a, t)))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime (out of threads or memory?)");
            return ExitCode::from(1);
        }
    };
    let span = tracing::info_span!("statelog", listen = %listen);
    let result =
        rt.block_on(run_statelog(listen, args.data, settings, admin).instrument(span.clone()));
    rt.shutdown_timeout(Duration::from_secs(2));
    let _enter = span.enter();
    match result {
        Ok(()) => {
            info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn run_statelog(
    listen: std::net::SocketAddr,
    data: PathBuf,
    settings: state_log::server::ServerSettings,
    admin: Option<(std::net::SocketAddr, String)>,
) -> Result<(), String> {
    // Bind first: a wrong or busy address is the most common startup error.
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} — pick a free local address for --listen, or stop the process holding it")
    })?;
    let admin_listener = match &admin {
        Some((a, _)) => Some(
            admin::bind(*a)
                .await
                .map_err(|e| e.replace("admin.listen", "--admin"))?,
        ),
        None => None,
    };
    let store = {
        let dir = data.clone();
        tokio::task::spawn_blocking(move || state_log::embedded::EmbeddedStore::open(&dir))
            .await
            .map_err(|e| format!("opening the store failed: {e}"))?
            .map_err(|e| format!("{e} — fix --data {} and start again", data.display()))?
    };
    let store = Arc::new(store);
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = admin_listener.zip(admin).map(|(l, (_, token))| {
        let m = Arc::new(statelog_role::StatelogMetrics::default());
        store.set_observer(m.clone());
        let app = statelog_role::router(Arc::new(statelog_role::StatelogAdmin {
            who: listen.to_string(),
            token,
            store: store.clone(),
            metrics: m,
            started: std::time::Instant::now(),
        }));
        let mut stop = admin_stopped.clone();
        tokio::spawn(admin::serve_router(l, app, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let signals = tokio::spawn(wait_for_signal());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = settings.limits;
    let server = tokio::spawn(state_log::server::serve(
        listener,
        store.clone(),
        settings,
        async {
            let _ = stop_rx.await;
        },
    ));
    info!(
        data = %data.display(),
        version = env!("CARGO_PKG_VERSION"),
        admin = %admin_task.as_ref().map_or("off".to_string(), |_| "on".to_string()),
        max_connections = limits.max_connections,
        idle_timeout_s = limits.idle_timeout.as_secs(),
        "bgf statelog started: mutual TLS, clients by certificate role (single node; multi-host deployments use JetStream or Redis)"
    );
    // Only the server and the admin API hold the store from here: the
    // server's is the last handle (the admin API stops first).
    drop(store);
    let failure = match signals.await {
        Ok(Ok(name)) => {
            info!(
                signal = name,
                "shutting down: stop accepting, finish the requests in hand, sync the store"
            );
            None
        }
        Ok(Err(e)) => Some(e),
        Err(e) => Some(format!("signal handler task failed: {e}")),
    };
    let _ = admin_stop.send(true);
    if let Some(t) = admin_task {
        if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            warn!("admin server did not stop within 5 s (a client holding a connection?)");
        }
    }
    let _ = stop_tx.send(());
    // serve() returns after its connections finish (bounded) and drops the
    // store, which commits the last group and closes the database.
    if let Err(e) = server.await {
        return Err(format!("state log server task failed: {e}"));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How `bgf active` ended without error.
enum Stopped {
    /// Signal: exit 0.
    Clean,
    /// The state log fenced this instance: exit 3.
    Fenced,
    /// A standby serves this instance (it took it over): exit 3, nothing served.
    TakenOver,
}

async fn run_active(cfg: Config, span: tracing::Span) -> Result<Stopped, String> {
    let core = sip_control::Core::new(cfg.core.clone())
        .map_err(|e| format!("invalid configuration for the session core: {e} — fix the config"))?;
    // Output commit: connect to the state log before serving anything.
    let mut log_store = None;
    let commit = match &cfg.statelog {
        Some(s) => {
            let store = store::connect(s).await?;
            log_store = Some(store.clone());
            let started =
                commit::Commit::start(s.clone(), store, cfg.core.instance.clone(), || {
                    rmp_serde::to_vec(core.state()).unwrap_or_default()
                })
                .await;
            let c = match started {
                Ok(c) => c,
                Err(e @ commit::StartError::TakenOver { .. }) => {
                    error!("{e}");
                    return Ok(Stopped::TakenOver);
                }
                Err(commit::StartError::Store(e)) => return Err(e),
            };
            let st = c.stats();
            info!(
                backend = st.backend,
                store = %s.backend.location(),
                epoch = st.epoch,
                next_seq = st.next_seq,
                "state log connected: output commit on"
            );
            Some(c)
        }
        None => None,
    };
    // N+1: heartbeats to the standby, which also brings fencing news.
    let mut ha = ha::ActiveHa::start(
        &cfg,
        commit.as_ref().map_or(0, |c| c.stats().epoch),
        commit.as_ref().map(|c| c.durable_watch()),
    )?;

    // Bind everything before starting anything: a wrong address is the most
    // common startup error and must not leave threads behind.
    let access = transport::bind_side(Side::Access, cfg.core.access.sip).await?;
    let core_side = transport::bind_side(Side::Core, cfg.core.core.sip).await?;
    let admin_listener = match &cfg.admin {
        Some(a) => Some(admin::bind(a.listen).await?),
        None => None,
    };
    let signals = tokio::spawn(wait_for_signal());

    let counters = Arc::new(Counters::default());
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    bgf::admission::reserve_for_tcp(cfg.guard.tcp_max_connections);
    let media = media::start(
        &cfg.media,
        media::kept_sockets(&cfg.core),
        runtime::media_event_sink(media_tx, counters.clone()),
    )?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);
    let (query_tx, query_rx) = mpsc::channel(64);
    let (transports, readers) = Transports::start_with(
        access,
        core_side,
        counters.clone(),
        in_tx,
        cfg.core.max_message_bytes,
        shutdown_rx.clone(),
        span.clone(),
        (&cfg.guard).into(),
    );
    let core_loop = CoreLoop {
        core,
        media,
        transports,
        counters,
        timers: TimerQueue::default(),
        commit,
        outbox: Default::default(),
        guard: bgf::guard::Guard::new(cfg.guard.clone()),
    };
    let mut core_task = tokio::spawn(
        core_loop
            .run(Channels {
                inputs: in_rx,
                media_events: media_rx,
                queries: query_rx,
                shutdown: shutdown_rx.clone(),
            })
            .instrument(span.clone()),
    );
    let ha_view = ha.as_ref().map(|h| h.view());
    let admin_task = admin_listener.map(|l| {
        let state = Arc::new(admin::AdminState {
            instance: cfg.core.instance.clone(),
            token: cfg
                .admin
                .as_ref()
                .map(|a| a.token.clone())
                .unwrap_or_default(),
            queries: query_tx,
            ha: ha_view,
            store: log_store,
            drills: cfg.admin.as_ref().is_some_and(|a| a.drills),
        });
        let mut stop = shutdown_rx.clone();
        tokio::spawn(
            admin::serve(l, state, async move {
                let _ = stop.changed().await;
            })
            .instrument(span.clone()),
        )
    });

    let c = &cfg.core;
    info!(
        access_sip = %c.access.sip,
        access_media = %c.access.media_ip,
        core_sip = %c.core.sip,
        core_media = %c.core.media_ip,
        next_hop = %c.core_next_hop,
        admin = %cfg.admin.as_ref().map(|a| a.listen.to_string()).unwrap_or_else(|| "off".into()),
        media_workers = cfg.media.workers,
        version = env!("CARGO_PKG_VERSION"),
        "bgf active started: {}",
        cfg.summary()
    );

    // Run until a signal, or until the core loop dies (a bug: exit non-zero so
    // that the standby takes over).
    let mut failure = None;
    let mut media_back = None;
    let mut fenced = false;
    tokio::select! {
        sig = signals => match sig {
            Ok(Ok(name)) => info!(signal = name, "shutting down: stop reading sockets, finish the input in hand, stop the media plane"),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("signal handler task failed: {e}")),
        },
        r = &mut core_task => match r {
            Ok(LoopEnd { media, fenced: f }) => {
                media_back = Some(media);
                if f.is_some() { fenced = true } else { failure = Some("core loop stopped unexpectedly".into()) }
            }
            Err(e) => failure = Some(format!("core loop failed: {e} — this is a bug; the instance stops so that the standby can take over")),
        },
        (own, store) = ha::fenced(&mut ha) => {
            error!(epoch = own, current = store, "fenced: the standby reports epoch {store} in the store (ours {own}); another instance serves our addresses — stopping");
            fenced = true;
        }
    }
    if fenced {
        // Stop answering for the service addresses before anything else.
        ha::release_service_addresses(&cfg);
    }
    let _ = shutdown_tx.send(true);
    for r in readers {
        let _ = r.await;
    }
    if media_back.is_none() && failure.is_none() {
        match core_task.await {
            Ok(end) => media_back = Some(end.media),
            Err(e) => failure = Some(format!("core loop failed: {e}")),
        }
    }
    if let Some(m) = media_back {
        if let Err(e) = tokio::task::spawn_blocking(move || m.shutdown()).await {
            warn!(error = %e, "media plane shutdown failed");
        }
    }
    if let Some(t) = admin_task {
        if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            warn!("admin server did not stop within 5 s (a client holding a connection?)");
        }
    }
    match (failure, fenced) {
        (Some(e), _) => Err(e),
        (None, true) => Ok(Stopped::Fenced),
        (None, false) => Ok(Stopped::Clean),
    }
}
