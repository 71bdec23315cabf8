//! `support-control-plane`: see `--help`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use support_control_plane::config::{ServeArgs, Settings, DEFAULT_DATA};
use support_control_plane::http::{self, AppState};
use support_control_plane::operator::{self, Command};
use support_control_plane::server_keys;
use support_control_plane::service::{unix_now, Service};
use support_control_plane::store::postgres::{is_postgres_url, PgStore};
use support_control_plane::store::redb_store::RedbStore;
use support_control_plane::store::{AdminRole, Store};

/// The bookkeeping service of support-tunnel.
///
/// It stores device requests, relays sealed approvals, holds long-polls,
/// expires tunnels and keeps a hash-chained audit log. It never sees a
/// private key, PSK or one-time secret and cannot grant access by itself.
///
/// First start:  support-control-plane serve --listen 127.0.0.1:8080 --data /var/lib/support-cp
/// Then pin:     support-control-plane public-key --data /var/lib/support-cp
/// Enroll:       support-control-plane admins add alice <KEY from support-admin init>
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP service (creates the store and the first key on first start).
    Serve(Box<ServeArgs>),
    /// Print the public keys agents and admins pin (current first, one per line).
    PublicKey(DataArg),
    /// Rotate or retire the control plane's static keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Enroll, list and remove admin keys (effective at once on a running server).
    #[command(subcommand)]
    Admins(AdminsCmd),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Write a consistent copy of the store, also while the server runs.
    Backup {
        #[command(flatten)]
        data: StoreArg,
        /// The copy to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct DataArg {
    /// The data directory (store, keys, operator socket).
    #[arg(long, env = "SUPPORT_CP_DATA", default_value = DEFAULT_DATA)]
    data: PathBuf,
}

/// Where an operator command finds the store when no server runs.
#[derive(clap::Args)]
struct StoreArg {
    #[command(flatten)]
    data: DataArg,
    /// The PostgreSQL store's URL (postgres://…), when the service uses one;
    /// without it, store.redb in the data directory.
    #[arg(long, env = "SUPPORT_CP_STORE")]
    store: Option<String>,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a new current key; the old ones stay served until retired.
    Rotate(DataArg),
    /// Stop serving an old key (after every agent has pinned the new one).
    Retire {
        #[command(flatten)]
        data: DataArg,
        /// The public key to retire (hex).
        public_key: String,
    },
}

#[derive(Subcommand)]
enum AdminsCmd {
    /// Enroll an admin's control-channel key (printed by `support-admin init`).
    Add {
        #[command(flatten)]
        data: StoreArg,
        /// The admin's name, as the audit log will show it.
        name: String,
        /// The admin's public key (hex).
        public_key: String,
        /// approver: may approve and stop; viewer: may only look.
        #[arg(long, value_enum, default_value = "approver")]
        role: RoleArg,
    },
    /// List enrolled admins.
    List(StoreArg),
    /// Remove an admin; its key is refused from the next call on.
    Remove {
        #[command(flatten)]
        data: StoreArg,
        /// The admin's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check that no audit record was edited, removed or reordered.
    Verify(StoreArg),
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Approver,
    Viewer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("support-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the store: the PostgreSQL database `store` names, else the
/// data directory's redb file. A data directory that has served from
/// PostgreSQL remembers it (`STORE_MARKER`), and without `store` is
/// refused rather than given an empty redb store of its own: a replica
/// whose setting got lost must not serve, and an operator command must not
/// write, where no other replica looks.
fn open_store(data: &Path, store: Option<&str>) -> Result<Arc<dyn Store>> {
    let marker = data.join(STORE_MARKER);
    match store {
        Some(url) if is_postgres_url(url) => {
            let pg = PgStore::open(url)?;
            let said = format!("{}\n", support_control_plane::store::postgres::redact(url));
            if std::fs::read_to_string(&marker).ok().as_deref() != Some(said.as_str()) {
                std::fs::write(&marker, said)
                    .with_context(|| format!("writing {}", marker.display()))?;
            }
            Ok(Arc::new(pg))
        }
        Some(other) => bail!(
            "--store {other:?} is not a PostgreSQL URL (postgres://user@host/database); \
             leave it out to use store.redb in the data directory"
        ),
        None => {
            if let Ok(url) = std::fs::read_to_string(&marker) {
                bail!(
                    "{} keeps its store in PostgreSQL ({}, says {}); pass --store or set \
                     SUPPORT_CP_STORE (the service has `store` in its config or environment). \
                     Not starting an empty redb store here. If the data directory really is to \
                     go back to redb, remove {} first.",
                    data.display(),
                    url.trim(),
                    marker.display(),
                    marker.display()
                );
            }
            Ok(Arc::new(RedbStore::open(&data.join("store.redb"))?))
        }
    }
}

/// In a data directory that has served from PostgreSQL: that store's URL,
/// without its password.
const STORE_MARKER: &str = "postgres-store";

/// Runs an operator command on the running server, or on the store directly.
fn operate(args: &StoreArg, cmd: Command) -> Result<()> {
    let data = args.data.data.as_path();
    if let Some(answer) = operator::send(data, &cmd)? {
        if !answer.ok {
            bail!("{}", answer.text);
        }
        print!("{}", ensure_newline(&answer.text));
        return Ok(());
    }
    check_owner(data)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let store = open_store(data, args.store.as_deref())?;
    let text = operator::execute(store.as_ref(), data, None, &cmd)?;
    print!("{}", ensure_newline(&text));
    Ok(())
}

/// Refuses to write into a data directory that belongs to another user
/// (root running a command on the service's directory): the files it made
/// would be root's, and the service, running as its own user, could not
/// open them at its next start.
fn check_owner(data: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(data) else {
        return Ok(());
    };
    let me = effective_uid()?;
    if meta.uid() == me {
        return Ok(());
    }
    let owner = user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string());
    bail!(
        "{} belongs to {owner}, and files written now would belong to uid {me}, which the \
         service could not open; run this as its owner: sudo -u {owner} support-control-plane ...",
        data.display()
    )
}

/// This process's effective uid (from /proc: the crate has no libc calls).
fn effective_uid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse() == Ok(uid)).then(|| name.to_string())
    })
}

fn ensure_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve(*args),
        Cmd::PublicKey(d) => {
            let keys = server_keys::load(&d.data)?;
            if keys.is_empty() {
                bail!(
                    "no keys in {} yet: start `serve` once, or run `keys rotate`",
                    d.data.display()
                );
            }
            for k in keys {
                println!("{}", hex::encode(k.keypair.public));
            }
            Ok(())
        }
        Cmd::Keys(KeysCmd::Rotate(d)) => {
            check_owner(&d.data)?;
            let public = server_keys::rotate(&d.data)?;
            println!("{}", hex::encode(public));
            eprintln!("new current key above; older keys stay served until `keys retire`");
            if operator::send(&d.data, &Command::ReloadKeys)?.is_some() {
                eprintln!("the running server now serves it");
            }
            Ok(())
        }
        Cmd::Keys(KeysCmd::Retire { data, public_key }) => {
            check_owner(&data.data)?;
            server_keys::retire(&data.data, &operator::parse_key(&public_key)?)?;
            let _ = operator::send(&data.data, &Command::ReloadKeys)?;
            eprintln!(
                "retired; agents that still pin only that key can no longer reach this server"
            );
            Ok(())
        }
        Cmd::Admins(AdminsCmd::Add {
            data,
            name,
            public_key,
            role,
        }) => {
            let role = match role {
                RoleArg::Approver => AdminRole::Approver,
                RoleArg::Viewer => AdminRole::Viewer,
            };
            operate(
                &data,
                Command::AdminsAdd {
                    name,
                    key: public_key,
                    role,
                },
            )
        }
        Cmd::Admins(AdminsCmd::List(d)) => operate(&d, Command::AdminsList),
        Cmd::Admins(AdminsCmd::Remove { data, name }) => {
            operate(&data, Command::AdminsRemove { name })
        }
        Cmd::Audit(AuditCmd::Verify(d)) => operate(&d, Command::AuditVerify),
        Cmd::Backup { data, out } => {
            let out = std::path::absolute(&out)?;
            operate(&data, Command::Backup { out })
        }
    }
}

fn init_logging(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUPPORT_CP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => bail!("log format must be text or json, not {other:?}"),
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one: each held
/// long-poll is a socket, and the usual soft default (1024) would cap the
/// service far below `max_connections`. Logs the limit either way.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    let mut raised = before;
    raised.current = before.maximum;
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    if before.current == before.maximum {
        tracing::info!(limit = %show(before.current), "open-file limit");
        return;
    }
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = %show(before.current),
            to = %show(before.maximum),
            "open-file limit raised"
        ),
        Err(e) => tracing::warn!(
            limit = %show(before.current),
            error = %e,
            "cannot raise the open-file limit"
        ),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let Settings {
        listen,
        metrics_listen,
        data,
        service: config,
        creates,
        trusted_proxies,
        max_connections,
        max_connections_per_address,
        log_format,
        store,
    } = Settings::load(args)?;
    init_logging(&log_format)?;
    raise_open_file_limit();
    match config.support_ca_keys.len() {
        0 => tracing::warn!(
            "support_ca_keys is not set: approvals' certificates are checked by the devices only"
        ),
        n => tracing::info!(
            pinned = n,
            "approvals must carry a certificate of a pinned support CA, valid by this clock"
        ),
    }

    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let keys = server_keys::load_or_create(&data)?;
    let store = open_store(&data, store.as_deref())?;
    let keys = Arc::new(RwLock::new(Arc::new(server_keys::server_keys(&keys))));
    let service = Arc::new(Service::new(
        store.clone(),
        config,
        creates.limiter(Instant::now()),
    ));

    // Store calls run on the blocking pool. Past a few dozen threads they
    // only queue for the store (redb writes one at a time; PostgreSQL has
    // a pool of 16 connections), while every thread costs its stack and
    // malloc arena: 10,000 polls arriving at once grew tokio's default 512.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(64)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let local = listener.local_addr()?;
        let operator_task = operator::listen(data.clone(), store.clone(), keys.clone()).await?;
        let state = Arc::new(AppState {
            trusted_proxies,
            max_connections,
            max_connections_per_address,
            ..AppState::new(service.clone(), keys.clone())
        });
        let sweeper = {
            let service = service.clone();
            tokio::spawn(async move {
                loop {
                    let s = service.clone();
                    let swept = tokio::task::spawn_blocking(move || {
                        let now = unix_now();
                        (s.sweep_expired(now), s.purge_ended(now))
                    })
                    .await;
                    if let Ok((expired, purged)) = swept {
                        match expired {
                            Ok(n) if n > 0 => tracing::info!(expired = n, "expired tunnels"),
                            Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
                            _ => {}
                        }
                        match purged {
                            Ok(n) if n > 0 => {
                                tracing::info!(purged = n, "deleted ended tunnels past retention")
                            }
                            Err(e) => tracing::error!(error = %e, "retention purge failed"),
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let metrics_task = match metrics_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for /metrics on {addr}"))?;
                let at = l.local_addr()?;
                tracing::info!(%at, "serving /metrics");
                let state = state.clone();
                Some((
                    at,
                    tokio::spawn(http::serve(
                        l,
                        state,
                        http::Routes::Metrics,
                        std::future::pending(),
                    )),
                ))
            }
            None => None,
        };
        tracing::info!(%local, data = %data.display(), "support-control-plane serving");
        // Tests and supervisors read this line to learn the bound address.
        println!("listening on {local}");
        if let Some((at, _)) = &metrics_task {
            println!("metrics on {at}");
        }
        notify_systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!("serving on {local}")),
        ]);
        let routes = http::Routes::Api {
            with_metrics: metrics_task.is_none(),
        };
        http::serve(listener, state, routes, async {
            shutdown_signal().await;
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
        })
        .await;
        if let Some((_, t)) = metrics_task {
            t.abort();
        }
        sweeper.abort();
        operator_task.abort();
        let _ = std::fs::remove_file(operator::socket_path(&data));
        tracing::info!("stopped");
        Ok(())
    })
}

/// Tells systemd (`Type=notify`) about readiness and stopping; nothing
/// without `NOTIFY_SOCKET`, and a failure is logged, never fatal.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt"),
    }
}
