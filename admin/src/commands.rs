//! The commands behind the CLI.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use support_protocol::certificate::Role;
use support_protocol::messages::admin::{AuditQuery, TunnelSummary};
use support_protocol::messages::{AdminRequest, AdminResponse, TunnelStateKind};
use support_protocol::TunnelId;

use crate::control::ControlPlane;
use crate::hub::gcp::Gcp;
use crate::hub::local::Local;
use crate::hub::Provider;
use crate::records::Records;
use crate::settings::{parse_key, Dirs, Settings};
use crate::{approve, ca, handoff, identity, secret_file, session, ssh, ssh_config};
use crate::{CaCommand, Cli, Command, ProviderArg, RoleArg, StateArg};

struct Env {
    dirs: Dirs,
    /// `--home`, passed on to the ProxyCommand of generated ssh configs.
    home: Option<std::path::PathBuf>,
    settings: Settings,
    cli_url: Option<String>,
    cli_keys: Vec<String>,
}

impl Env {
    fn control_plane(&self) -> Result<ControlPlane, String> {
        let me = identity::load(&self.dirs)?;
        let url = self
            .cli_url
            .clone()
            .or_else(|| self.settings.control_plane.clone())
            .ok_or("no control plane: set control_plane in admin.toml or pass --control-plane")?;
        let keys = if self.cli_keys.is_empty() {
            &self.settings.control_plane_keys
        } else {
            &self.cli_keys
        };
        let keys = keys
            .iter()
            .map(|k| parse_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        ControlPlane::new(&url, keys, me.control_plane)
    }

    fn provider(&self, name: &str) -> Result<Box<dyn Provider>, String> {
        match name {
            "local" => Ok(Box::new(Local {
                relay: Local::find_relay(self.settings.local.relay_binary.as_deref())?,
                listen: self
                    .settings
                    .local
                    .listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:0".into()),
                log_dir: self.dirs.data.join("hubs"),
                owner: crate::hub::local::owner_tag(&self.dirs.data),
            })),
            "gcp" => Ok(Box::new(Gcp::new(self.settings.gcp.clone().ok_or(
                "the gcp provider needs a [gcp] section in admin.toml (project, zone, relay_url, relay_sha256)",
            )?)?)),
            other => Err(format!("unknown provider '{other}'")),
        }
    }

    fn records(&self) -> Records {
        Records::new(&self.dirs)
    }

    /// Starts or finds tunnels' sessions (as this program, with this `--home`).
    fn launcher(&self) -> Result<session::Launcher, String> {
        let idle = std::env::var("SUPPORT_ADMIN_SESSION_IDLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(session::DEFAULT_IDLE);
        Ok(session::Launcher {
            exe: std::env::current_exe().map_err(|e| e.to_string())?,
            home: self.home.clone(),
            idle,
            owner: crate::hub::local::owner_tag(&self.dirs.data),
        })
    }

    /// Runs `f` on a small tokio runtime.
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let r = rt.block_on(f);
        // A read of local stdin may still block in tokio's pool: do not wait for it.
        rt.shutdown_background();
        r
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "support-admin", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => return man_pages(dir),
        _ => {}
    }
    let dirs = Dirs::new(cli.home.as_deref())?;
    let settings = Settings::load(&dirs)?;
    let env = Env {
        dirs,
        home: cli.home.clone(),
        settings,
        cli_url: cli.control_plane,
        cli_keys: cli.control_plane_keys,
    };
    match cli.command {
        Command::Ca(c) => ca_command(&env, c),
        Command::Init { certificate } => init(&env, certificate.as_deref()),
        Command::Status { json } => status(&env, json),
        Command::List { state, json } => list(&env, state, json),
        Command::Show { id, json } => show(&env, &id, json),
        Command::Audit { id, json } => audit(&env, id.as_deref(), json),
        Command::Approve {
            code,
            provider,
            duration,
            ports,
            wait,
            yes,
        } => {
            let code = match code {
                Some(c) => c,
                None => read_code()?,
            };
            let cp = env.control_plane()?;
            let me = identity::load(&env.dirs)?;
            let name = match provider {
                Some(ProviderArg::Local) => "local".to_string(),
                Some(ProviderArg::Gcp) => "gcp".to_string(),
                None => env
                    .settings
                    .provider
                    .clone()
                    .unwrap_or_else(|| "local".into()),
            };
            let provider = env.provider(&name)?;
            let rec = approve::approve(
                &cp,
                &me,
                &env.records(),
                &code,
                &approve::Options {
                    provider: provider.as_ref(),
                    duration_secs: duration,
                    ports,
                    wait: Duration::from_secs(wait),
                    yes,
                },
            )?;
            refresh_ssh_config(&env);
            println!("{}", rec.id);
            eprintln!(
                "next: support-admin connect {id}   (or exec {id} -- CMD, forward {id} 8080:80, ssh support-{id} after ssh-config --install)",
                id = rec.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { id, wait } => {
            let records = env.records();
            let mut rec = records.load(&id)?;
            approve::wait(
                &env.control_plane()?,
                &records,
                &mut rec,
                Duration::from_secs(wait),
            )?;
            println!("{}", rec.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Connect { id } => own_failure((|| {
            let rec = env.records().load(&id)?;
            let code = env.block_on(async {
                let stream = env.launcher()?.open(&env.records(), &rec, 22).await?;
                let h = ssh::session(&rec, stream).await?;
                ssh::shell(&h).await
            })?;
            Ok(exit(code))
        })()),
        Command::Exec { id, command } => own_failure((|| {
            let rec = env.records().load(&id)?;
            let line = shell_join(&command);
            let code = env.block_on(async {
                let stream = env.launcher()?.open(&env.records(), &rec, 22).await?;
                let h = ssh::session(&rec, stream).await?;
                ssh::exec(&h, &line).await
            })?;
            Ok(exit(code))
        })()),
        Command::Up { id, idle } => {
            let records = env.records();
            let rec = records.load(&id)?;
            let launcher = session::Launcher {
                idle: Duration::from_secs(idle),
                ..env.launcher()?
            };
            let started = launcher.ensure(&records, &rec)?;
            eprintln!(
                "{} {}: connect, exec, forward and ssh share it; it ends {} s after the last one detaches, at stop, or at expiry",
                if started { "session started for" } else { "a session already runs for" },
                rec.id,
                idle
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Session { id, idle } => {
            let records = env.records();
            let rec = records.load(&id)?;
            session::serve(&records, &rec, Duration::from_secs(idle))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Forward { id, specs } => forward(&env, &id, &specs),
        Command::SshConfig { id, port, install } => ssh_config(&env, id.as_deref(), port, install),
        Command::Proxy { id, port } => proxy(&env, &id, port),
        Command::Stop { id } => {
            let r = stop(&env, &id);
            refresh_ssh_config(&env);
            r
        }
        Command::Gc => {
            let r = gc(&env);
            refresh_ssh_config(&env);
            r
        }
        Command::Handoff { id, to, yes } => handoff_command(&env, &id, &to, yes),
        Command::Handoffs { json } => handoffs(&env, json),
        Command::Pickup { id } => pickup(&env, &id),
        Command::Completions { .. } | Command::Man { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// Writes support-admin.1 and support-admin-COMMAND.1 into `dir`
/// (scripts/release packages them).
fn man_pages(dir: &std::path::Path) -> Result<ExitCode, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let write = |name: String, c: clap::Command| -> Result<(), String> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .render(&mut out)
            .map_err(|e| e.to_string())?;
        std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok(())
    };
    // Not the internal ones (`session`): --help does not list them either.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("support-admin-{}", sub.get_name());
        write(name.clone(), sub.clone().name(name))?;
    }
    write("support-admin".into(), cmd)?;
    Ok(ExitCode::SUCCESS)
}

/// `exec` and `connect` pass the remote command's status on; their own
/// failures exit 255, as ssh's do, so a script can tell them apart.
fn own_failure(r: Result<ExitCode, String>) -> Result<ExitCode, String> {
    r.or_else(|e| {
        eprintln!("support-admin: {e}");
        Ok(ExitCode::from(255))
    })
}

fn exit(code: u32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

/// Quotes each argument for the remote POSIX shell, so `exec ID -- ls "a b"` means what it says.
fn shell_join(args: &[String]) -> String {
    if args.len() == 1 {
        // One argument is a command line of its own (`exec ID -- 'hostname; id'`).
        return args[0].clone();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ca_command(env: &Env, c: CaCommand) -> Result<ExitCode, String> {
    match c {
        CaCommand::Init => {
            let pass = secret_file::new_passphrase("CA passphrase (empty for none): ")?;
            let public = ca::init(&env.dirs, &pass)?;
            eprintln!(
                "support CA created in {} (0600). Devices pin this public key (support_ca_keys in agent.toml):",
                env.dirs.ca().display()
            );
            println!("{}", hex::encode(public));
        }
        CaCommand::PublicKey => println!("{}", hex::encode(ca::public(&env.dirs)?)),
        CaCommand::Sign {
            name,
            pubkey,
            days,
            role,
        } => {
            let role = match role {
                RoleArg::Approver => Role::Approver,
                RoleArg::Viewer => Role::Viewer,
            };
            let cert = ca::sign(&env.dirs, &name, &pubkey, role, days)?;
            eprintln!(
                "certified {name} ({role:?}, serial {}) for {days} days; give them this line for `support-admin init --certificate`:",
                cert.body.serial
            );
            println!("{}", identity::encode_certificate(&cert));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init(env: &Env, certificate: Option<&str>) -> Result<ExitCode, String> {
    if let Some(src) = certificate {
        let text = if src == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| e.to_string())?;
            s
        } else {
            std::fs::read_to_string(src).map_err(|e| format!("{src}: {e}"))?
        };
        let cert = identity::decode_certificate(&text)?;
        let me = identity::load(&env.dirs)?;
        if cert.body.key.0 != me.approver.public() {
            return Err("this certificate is for another key than your approver key".into());
        }
        secret_file::write(
            &env.dirs.config.join("certificate"),
            identity::encode_certificate(&cert).as_bytes(),
            0o644,
        )?;
        eprintln!(
            "installed: {} certified as {:?} by CA {}, serial {}",
            cert.body.name.as_str(),
            cert.body.role,
            hex::encode(cert.body.issuer.0),
            cert.body.serial
        );
        eprintln!("(run `support-admin handoffs` once the control plane is set up, so that others can hand tunnels to you)");
        return Ok(ExitCode::SUCCESS);
    }
    let pass = secret_file::new_passphrase("Passphrase for your keys (empty for none): ")?;
    let me = identity::create(&env.dirs, &pass)?;
    println!(
        "Your keys are in {} (0600{}).\n\n\
         1. The control-plane operator enrolls you:\n   support-control-plane admins add YOUR_NAME {}\n\n\
         2. The support CA certifies your approver key:\n   support-admin ca sign YOUR_NAME {}\n\n\
         3. Install the certificate it returns:\n   support-admin init --certificate FILE",
        env.dirs.config.join("identity.key").display(),
        if pass.is_empty() {
            ", no passphrase"
        } else {
            ", sealed with your passphrase"
        },
        hex::encode(me.control_plane.public),
        hex::encode(me.approver.public()),
    );
    Ok(ExitCode::SUCCESS)
}

fn state_kind(s: StateArg) -> TunnelStateKind {
    match s {
        StateArg::Pending => TunnelStateKind::Pending,
        StateArg::Approved => TunnelStateKind::Approved,
        StateArg::Connected => TunnelStateKind::Connected,
        StateArg::Stopped => TunnelStateKind::Stopped,
        StateArg::Expired => TunnelStateKind::Expired,
        StateArg::Failed => TunnelStateKind::Failed,
    }
}

fn summary_json(t: &TunnelSummary) -> serde_json::Value {
    json!({
        "id": t.tunnel_id.to_string(),
        "state": t.state.kind().name(),
        "approval": t.state.approval().map(|s| s.0),
        "hostname": t.facts.hostname.as_str(),
        "model": t.facts.model.as_str(),
        "firmware": t.facts.firmware.as_str(),
        "agent_version": t.facts.agent_version.as_str(),
        "created_at": t.created_at,
        "expires_at": t.expires_at,
    })
}

fn list(env: &Env, state: Option<StateArg>, as_json: bool) -> Result<ExitCode, String> {
    let tunnels = env.control_plane()?.list_all(state.map(state_kind))?;
    if as_json {
        let v: Vec<_> = tunnels.iter().map(summary_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if tunnels.is_empty() {
        println!("No tunnels.");
    } else {
        let now = ca::now();
        let handed: Vec<handoff::HandedOff> = env.records().handed_off_all();
        println!(
            "{:<16}  {:<9}  {:<20}  {:>8}  {:<21}  MODEL",
            "TUNNEL", "STATE", "HOSTNAME", "AGE", "EXPIRES"
        );
        for t in &tunnels {
            let id = t.tunnel_id.to_string();
            let note = handed
                .iter()
                .find(|h| h.id == id)
                .map(|h| {
                    format!(
                        "  (handed off to {} at {})",
                        h.to,
                        support_protocol::time_text::format(h.at)
                    )
                })
                .unwrap_or_default();
            println!(
                "{:<16}  {:<9}  {:<20}  {:>8}  {:<21}  {}{note}",
                t.tunnel_id,
                t.state.kind().name(),
                t.facts.hostname.as_str(),
                age(now, t.created_at),
                support_protocol::time_text::format(t.expires_at),
                t.facts.model.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one-time code, asked on a terminal or read as a line from stdin.
fn read_code() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("the owner's one-time code: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the code: {e}"))?;
    let code = line.trim().to_string();
    if code.is_empty() {
        return Err("no code given (pass it, type it, or pipe it on stdin)".into());
    }
    Ok(code)
}

/// A full id: parsed, or completed from local records.
fn resolve(env: &Env, id: &str) -> Result<TunnelId, String> {
    if let Ok(t) = id.parse() {
        return Ok(t);
    }
    env.records().load(id)?.tunnel_id()
}

fn show(env: &Env, id: &str, as_json: bool) -> Result<ExitCode, String> {
    let d = env.control_plane()?.show(resolve(env, id)?)?;
    let mut v = summary_json(&d.summary);
    let b = &d.request.body;
    v["requested_duration_secs"] = json!(b.duration_secs);
    v["requested_ports"] = json!(b.ports.to_vec());
    v["note"] = json!(b.note.as_str());
    v["approver"] = json!(d
        .approval
        .as_ref()
        .map(|a| a.certificate.body.name.as_str()));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let now = ca::now();
        for (k, val) in v.as_object().into_iter().flatten() {
            let shown = match (k.as_str(), val) {
                (_, serde_json::Value::Null) => "-".to_string(),
                ("created_at", serde_json::Value::Number(n)) => {
                    let t = n.as_u64().unwrap_or(0);
                    format!(
                        "{} ({} ago)",
                        support_protocol::time_text::format(t),
                        age(now, t)
                    )
                }
                ("expires_at", serde_json::Value::Number(n)) => {
                    support_protocol::time_text::format(n.as_u64().unwrap_or(0))
                }
                ("requested_duration_secs", serde_json::Value::Number(n)) => {
                    support_protocol::duration_text::format(n.as_u64().unwrap_or(0))
                }
                (_, serde_json::Value::String(s)) => s.clone(),
                (_, other) => other.to_string(),
            };
            println!("{k:<24} {shown}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `support-admin status` found, printed for people or as JSON.
struct StatusReport {
    now: u64,
    identity_path: std::path::PathBuf,
    /// Whether the identity file is sealed with a passphrase; `None` when
    /// there is no identity (then nothing else is looked at).
    sealed: Option<bool>,
    checks: Option<StatusChecks>,
}

/// Everything `status` checks once there is an identity.
struct StatusChecks {
    certificate: Option<support_protocol::certificate::ApproverCertificate>,
    url: Option<String>,
    pinned_keys: Vec<String>,
    /// The control plane's tunnels, reached with its pinned key, or why not.
    control_plane: Result<Vec<TunnelSummary>, String>,
    provider: String,
    /// The provider's pre-flight: where hubs run, or why it is not ready.
    preflight: Result<String, String>,
    /// Local records: id and whether its session runs.
    tunnels: Vec<(String, bool)>,
    handed_off: Vec<handoff::HandedOff>,
}

impl StatusReport {
    fn gather(env: &Env) -> Result<StatusReport, String> {
        let now = ca::now();
        let identity_path = env.dirs.config.join("identity.key");
        let sealed = std::fs::read(&identity_path)
            .ok()
            .map(|b| secret_file::is_sealed(&b));
        let checks = match sealed {
            None => None,
            Some(_) => Some(StatusChecks::gather(env)?),
        };
        Ok(StatusReport {
            now,
            identity_path,
            sealed,
            checks,
        })
    }

    /// Whether everything is ready (exit 0): an identity, a certificate that
    /// has not expired, the control plane reached, the provider ready.
    fn fine(&self) -> bool {
        self.checks.as_ref().is_some_and(|c| {
            c.certificate
                .as_ref()
                .is_some_and(|cert| cert.body.not_after >= self.now)
                && c.control_plane.is_ok()
                && c.preflight.is_ok()
        })
    }

    fn exit_code(&self) -> ExitCode {
        if self.fine() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

impl StatusChecks {
    fn gather(env: &Env) -> Result<StatusChecks, String> {
        let certificate = identity::certificate(&env.dirs)?;
        let url = env
            .cli_url
            .clone()
            .or_else(|| env.settings.control_plane.clone());
        let pinned_keys = if env.cli_keys.is_empty() {
            env.settings.control_plane_keys.clone()
        } else {
            env.cli_keys.clone()
        };
        let control_plane = env.control_plane().and_then(|cp| cp.list_all(None));
        let provider = env
            .settings
            .provider
            .clone()
            .unwrap_or_else(|| "local".into());
        let preflight = env.provider(&provider).and_then(|p| p.preflight());
        let records = env.records();
        let tunnels = records
            .ids()
            .into_iter()
            .map(|id| {
                let session = session::running(&records, &id);
                (id, session)
            })
            .collect();
        Ok(StatusChecks {
            certificate,
            url,
            pinned_keys,
            control_plane,
            provider,
            preflight,
            tunnels,
            handed_off: records.handed_off_all(),
        })
    }

    /// The control plane's view of a local tunnel, if it was reached and knows it.
    fn summary(&self, id: &str) -> Option<&TunnelSummary> {
        self.control_plane
            .as_ref()
            .ok()?
            .iter()
            .find(|t| t.tunnel_id.to_string() == id)
    }
}

/// `support-admin status`: every line says what is fine or what to do.
fn status(env: &Env, as_json: bool) -> Result<ExitCode, String> {
    let report = StatusReport::gather(env)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&report)).unwrap_or_default()
        );
    } else {
        print_status(&report);
    }
    Ok(report.exit_code())
}

fn print_status(r: &StatusReport) {
    let now = r.now;
    let (Some(sealed), Some(c)) = (r.sealed, &r.checks) else {
        println!("identity     none: run support-admin init");
        return;
    };
    println!(
        "identity     {} ({})",
        r.identity_path.display(),
        if sealed {
            "sealed with a passphrase"
        } else {
            "NOT sealed: anyone who reads this file can act as you"
        }
    );
    match &c.certificate {
        Some(cert) => {
            let warn = if cert.body.not_after < now {
                "  EXPIRED: ask the support CA for a new one".to_string()
            } else if ca::expires_soon(cert, now) {
                format!(
                    "  expires in {}: ask the support CA for a new one soon",
                    support_protocol::duration_text::format(cert.body.not_after - now)
                )
            } else {
                String::new()
            };
            println!(
                "certificate  {}, {:?}, serial {}, valid until {}{warn}",
                cert.body.name.as_str(),
                cert.body.role,
                cert.body.serial,
                support_protocol::time_text::format(cert.body.not_after)
            );
        }
        None => println!(
            "certificate  none: send your approver key to the support CA, then init --certificate FILE"
        ),
    }
    match &c.control_plane {
        Ok(t) => println!(
            "control plane {} reached with its pinned key ({} tunnels)",
            c.url.clone().unwrap_or_default(),
            t.len()
        ),
        Err(e) => println!("control plane NOT reached: {e}"),
    }
    match &c.preflight {
        Ok(place) => println!("provider     {}: {place}", c.provider),
        Err(e) => println!("provider     {}: NOT ready: {e}", c.provider),
    }
    if c.tunnels.is_empty() {
        println!("tunnels      none on this machine");
    }
    for (id, session) in &c.tunnels {
        let state = c
            .summary(id)
            .map(|t| {
                format!(
                    "{}, expires {}",
                    t.state.kind().name(),
                    support_protocol::time_text::format(t.expires_at)
                )
            })
            .unwrap_or_else(|| "unknown to the control plane".into());
        println!(
            "tunnel       {id}: {state}{}",
            if *session { "; session running" } else { "" }
        );
    }
    for h in &c.handed_off {
        println!(
            "tunnel       {}: handed off to {} at {} (its secrets are wiped here)",
            h.id,
            h.to,
            support_protocol::time_text::format(h.at)
        );
    }
}

/// Unix seconds as `status --json` gives them: the number under `key`, and
/// the same time for people under `key_text`.
fn time_fields(v: &mut serde_json::Value, key: &str, secs: Option<u64>) {
    v[key] = json!(secs);
    v[format!("{key}_text")] = json!(secs.map(support_protocol::time_text::format));
}

/// `status --json`: the same facts as the text, the schema in
/// admin/status.schema.json.
fn status_json(r: &StatusReport) -> serde_json::Value {
    let identity = json!({
        "path": r.identity_path.display().to_string(),
        "present": r.sealed.is_some(),
        "sealed": r.sealed,
    });
    let Some(c) = &r.checks else {
        return json!({
            "ready": false,
            "identity": identity,
            "certificate": null,
            "control_plane": null,
            "provider": null,
            "tunnels": [],
            "handed_off": [],
        });
    };
    let certificate = c.certificate.as_ref().map(|cert| {
        let b = &cert.body;
        let mut v = json!({
            "name": b.name.as_str(),
            "role": format!("{:?}", b.role).to_lowercase(),
            "serial": b.serial,
            "issuer": hex::encode(b.issuer.0),
            "expired": b.not_after < r.now,
            "expires_soon": b.not_after >= r.now && ca::expires_soon(cert, r.now),
        });
        time_fields(&mut v, "valid_from", Some(b.not_before));
        time_fields(&mut v, "valid_until", Some(b.not_after));
        v
    });
    let (reachable, error, count) = match &c.control_plane {
        Ok(t) => (true, None, Some(t.len())),
        Err(e) => (false, Some(e.as_str()), None),
    };
    let control_plane = json!({
        "url": c.url,
        "pinned_keys": c.pinned_keys,
        "reachable": reachable,
        "error": error,
        "tunnel_count": count,
    });
    let provider = json!({
        "name": c.provider,
        "ready": c.preflight.is_ok(),
        "detail": c.preflight.as_ref().ok(),
        "error": c.preflight.as_ref().err(),
    });
    let tunnels: Vec<_> = c
        .tunnels
        .iter()
        .map(|(id, session)| {
            let t = c.summary(id);
            let mut v = json!({
                "id": id,
                "state": t.map(|t| t.state.kind().name()),
                "session_running": session,
            });
            time_fields(&mut v, "expires_at", t.map(|t| t.expires_at));
            v
        })
        .collect();
    let handed_off: Vec<_> = c
        .handed_off
        .iter()
        .map(|h| {
            let mut v = json!({"id": h.id, "to": h.to});
            time_fields(&mut v, "at", Some(h.at));
            v
        })
        .collect();
    json!({
        "ready": r.fine(),
        "identity": identity,
        "certificate": certificate,
        "control_plane": control_plane,
        "provider": provider,
        "tunnels": tunnels,
        "handed_off": handed_off,
    })
}

/// How long ago `t` was, roughly ("3h 05m").
fn age(now: u64, t: u64) -> String {
    support_protocol::duration_text::format(now.saturating_sub(t))
}

fn audit(env: &Env, id: Option<&str>, as_json: bool) -> Result<ExitCode, String> {
    let cp = env.control_plane()?;
    let tunnel_id = id.map(|i| resolve(env, i)).transpose()?;
    let mut after = 0;
    let mut rows = Vec::new();
    loop {
        let page = match cp.call(AdminRequest::Audit(AuditQuery {
            tunnel_id,
            after_seq: after,
            limit: 100,
        }))? {
            AdminResponse::Audit(r) => r.into_inner(),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let Some(last) = page.last().map(|r| r.entry.seq) else {
            break;
        };
        rows.extend(page);
        if last <= after {
            break;
        }
        after = last;
    }
    if as_json {
        let v: Vec<_> = rows.iter().map(audit_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for r in &rows {
            println!(
                "{:>6}  {}  {:<16}  {:<16}  {}",
                r.entry.seq,
                support_protocol::time_text::format(r.entry.at),
                actor_text(&r.entry.actor),
                r.entry
                    .tunnel_id
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                action_text(&r.entry.action)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One audit record as `audit --json` prints it: tagged objects, the schema
/// in admin/audit.schema.json.
fn audit_json(r: &support_protocol::audit::AuditRecord) -> serde_json::Value {
    use support_protocol::audit::{Actor, AuditAction};
    use support_protocol::messages::StopReason;
    let actor = match &r.entry.actor {
        Actor::Admin(name) => json!({"kind": "admin", "name": name.as_str()}),
        Actor::Device => json!({"kind": "device"}),
        Actor::System => json!({"kind": "system"}),
    };
    let action = match &r.entry.action {
        AuditAction::Requested => json!({"kind": "requested"}),
        AuditAction::Approved(s) => json!({"kind": "approved", "approval": s.0}),
        AuditAction::Connected(s) => json!({"kind": "connected", "approval": s.0}),
        AuditAction::Stopped(reason) => {
            let reason = match reason {
                StopReason::Owner => json!({"kind": "owner"}),
                StopReason::Admin => json!({"kind": "support"}),
                StopReason::Expired => json!({"kind": "expired"}),
                StopReason::Refused(t) => json!({"kind": "refused", "text": t.as_str()}),
                StopReason::Failed(t) => json!({"kind": "failed", "text": t.as_str()}),
            };
            json!({"kind": "stopped", "reason": reason})
        }
        AuditAction::Expired => json!({"kind": "expired"}),
        AuditAction::AdminAdded(n) => json!({"kind": "admin_added", "name": n.as_str()}),
        AuditAction::AdminRemoved(n) => json!({"kind": "admin_removed", "name": n.as_str()}),
        AuditAction::HandedOff(to) => json!({"kind": "handed_off", "to": to.as_str()}),
        AuditAction::PickedUp(from) => json!({"kind": "picked_up", "from": from.as_str()}),
    };
    json!({
        "seq": r.entry.seq,
        "at": r.entry.at,
        "actor": actor,
        "tunnel": r.entry.tunnel_id.map(|t| t.to_string()),
        "action": action,
        "hash": hex::encode(r.hash.0),
    })
}

fn actor_text(a: &support_protocol::audit::Actor) -> String {
    use support_protocol::audit::Actor;
    match a {
        Actor::Admin(name) => name.as_str().to_string(),
        Actor::Device => "(device)".into(),
        Actor::System => "(control plane)".into(),
    }
}

fn action_text(a: &support_protocol::audit::AuditAction) -> String {
    use support_protocol::audit::AuditAction;
    use support_protocol::messages::StopReason;
    match a {
        AuditAction::Requested => "requested".into(),
        AuditAction::Approved(s) => format!("approved ({s})"),
        AuditAction::Connected(s) => format!("connected ({s})"),
        AuditAction::Stopped(StopReason::Owner) => "stopped by the owner".into(),
        AuditAction::Stopped(StopReason::Admin) => "stopped by support".into(),
        AuditAction::Stopped(StopReason::Expired) => "expired (device)".into(),
        AuditAction::Stopped(StopReason::Refused(t)) => {
            format!("refused by the device: {}", t.as_str())
        }
        AuditAction::Stopped(StopReason::Failed(t)) => {
            format!("failed on the device: {}", t.as_str())
        }
        AuditAction::Expired => "expired".into(),
        AuditAction::AdminAdded(n) => format!("admin {} enrolled", n.as_str()),
        AuditAction::AdminRemoved(n) => format!("admin {} removed", n.as_str()),
        AuditAction::HandedOff(to) => format!("handed off to {}", to.as_str()),
        AuditAction::PickedUp(from) => format!("picked up (handed off by {})", from.as_str()),
    }
}

fn forward(env: &Env, id: &str, specs: &[String]) -> Result<ExitCode, String> {
    let mut pairs = Vec::new();
    for spec in specs {
        let (local, remote) = match spec.split_once(':') {
            Some((l, r)) => (l.parse::<u16>(), r.parse::<u16>()),
            None => (Ok(0), spec.parse::<u16>()),
        };
        let (Ok(local), Ok(remote)) = (local, remote) else {
            return Err(format!(
                "'{spec}' is not [LOCAL_PORT:]DEVICE_PORT, e.g. 8080:80"
            ));
        };
        pairs.push((local, remote));
    }
    let records = env.records();
    let rec = records.load(id)?;
    let launcher = std::sync::Arc::new(env.launcher()?);
    launcher.ensure(&records, &rec)?;
    env.block_on(async {
        let mut listeners = Vec::new();
        for (local, remote) in pairs {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", local))
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{local}: {e}"))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            // The address alone on stdout, for scripts; the explanation on stderr.
            println!("{addr}");
            eprintln!(
                "forwarding {addr} -> device {} port {remote} over the tunnel's session",
                rec.id
            );
            listeners.push((l, remote));
        }
        eprintln!("Ctrl-C stops");
        let records = std::sync::Arc::new(env.records());
        let rec = std::sync::Arc::new(rec.clone());
        for (l, remote) in listeners {
            let (launcher, records, rec) = (launcher.clone(), records.clone(), rec.clone());
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = l.accept().await {
                    let (launcher, records, rec) = (launcher.clone(), records.clone(), rec.clone());
                    tokio::spawn(async move {
                        match launcher.open(&records, &rec, remote).await {
                            Ok(mut s) => {
                                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut s).await;
                            }
                            Err(e) => eprintln!("support-admin: forward to port {remote}: {e}"),
                        }
                    });
                }
            });
        }
        let _ = tokio::signal::ctrl_c().await;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn proxy(env: &Env, id: &str, port: u16) -> Result<ExitCode, String> {
    let records = env.records();
    let rec = records.load(id)?;
    env.block_on(async {
        let mut stream = env.launcher()?.open(&records, &rec, port).await?;
        let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut stdio).await;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn ssh_config(
    env: &Env,
    id: Option<&str>,
    port: Option<u16>,
    install: bool,
) -> Result<ExitCode, String> {
    let records = env.records();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let route = match port {
        Some(p) => ssh_config::Route::Port(p),
        None => ssh_config::Route::Proxy {
            exe: &exe,
            home: env.home.as_deref(),
        },
    };
    if install {
        if id.is_some() || port.is_some() {
            return Err(
                "--install covers every tunnel through ProxyCommand: give no ID or --port".into(),
            );
        }
        let n = ssh_config::write_generated(&env.dirs, &records, &route)?;
        let generated = ssh_config::generated_path(&env.dirs);
        let user_config = user_ssh_config()?;
        let added = ssh_config::include_once(&user_config, &generated)?;
        eprintln!(
            "{} {} ({n} tunnel{} now; approve, stop and gc keep it current){}",
            if added { "installed" } else { "updated" },
            generated.display(),
            if n == 1 { "" } else { "s" },
            if added {
                format!("; {} includes it", user_config.display())
            } else {
                String::new()
            }
        );
        eprintln!("then: ssh support-ID");
        return Ok(ExitCode::SUCCESS);
    }
    let id = id.ok_or("say which tunnel (ssh-config ID), or --install for all of them")?;
    let rec = records.load(id)?;
    print!("{}", ssh_config::block(&records, &rec, &route)?);
    println!();
    if let Some(p) = port {
        eprintln!("(run `support-admin forward {} {p}:22` alongside)", rec.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `~/.ssh/config`, from HOME.
fn user_ssh_config() -> Result<std::path::PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    Ok(std::path::PathBuf::from(home).join(".ssh/config"))
}

/// Keeps the installed ssh config current after approve, stop and gc.
fn refresh_ssh_config(env: &Env) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    ssh_config::refresh(
        &env.dirs,
        &env.records(),
        &ssh_config::Route::Proxy {
            exe: &exe,
            home: env.home.as_deref(),
        },
    );
}

fn stop(env: &Env, id: &str) -> Result<ExitCode, String> {
    let records = env.records();
    let rec = records.load(id).ok();
    let tunnel = match &rec {
        Some(r) => r.tunnel_id()?,
        None => id
            .parse()
            .map_err(|_| format!("no tunnel {id} on this machine, and it is not a full id"))?,
    };
    let cp = env.control_plane()?;
    match cp.stop(tunnel, "stopped by support") {
        Ok(()) => eprintln!("tunnel {tunnel} stopped; the device is tearing down"),
        Err(e) => eprintln!("control plane: {e} (cleaning up here anyway)"),
    }
    if let Some(r) = rec {
        env.provider(&r.hub.provider)?.delete(&r.hub.handle)?;
        eprintln!("hub {} ({}) deleted", r.hub.handle, r.hub.provider);
        session::quit(&records, &r.id);
        records.wipe(&r.id);
        eprintln!("local secrets of {tunnel} wiped");
    }
    Ok(ExitCode::SUCCESS)
}

fn handoff_command(env: &Env, id: &str, to: &str, yes: bool) -> Result<ExitCode, String> {
    let records = env.records();
    let rec = records.load(id)?;
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        approve::confirm(
            &format!(
                "Hand tunnel {} to {to}? Its secrets are wiped here and you cannot connect any more. [y/N] ",
                rec.id
            ),
            "not handed off; nothing was sent",
        )?;
    }
    let note = handoff::handoff(&cp, &me, &records, &rec, to)?;
    refresh_ssh_config(env);
    eprintln!(
        "tunnel {} handed off to {to}: sealed to their certified key, signed by you, in the control plane's mailbox; \
         its session here ended and its secrets are wiped. {to} runs: support-admin pickup {}",
        note.id, note.id
    );
    println!("{}", note.id);
    Ok(ExitCode::SUCCESS)
}

fn handoffs(env: &Env, as_json: bool) -> Result<ExitCode, String> {
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    // Publishing is what lets others hand tunnels to us; listing works without it.
    let published = handoff::publish_key(&cp, &me);
    let list = handoff::waiting(&cp)?;
    if as_json {
        let v: Vec<_> = list
            .iter()
            .map(|h| {
                json!({
                    "id": h.tunnel_id.to_string(),
                    "from": h.from.as_str(),
                    "posted_at": h.posted_at,
                    "expires_at": h.expires_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if list.is_empty() {
        println!("No hand-offs wait for you.");
    } else {
        println!(
            "{:<16}  {:<16}  {:<21}  EXPIRES",
            "TUNNEL", "FROM", "POSTED"
        );
        for h in &list {
            println!(
                "{:<16}  {:<16}  {:<21}  {}",
                h.tunnel_id,
                h.from.as_str(),
                support_protocol::time_text::format(h.posted_at),
                support_protocol::time_text::format(h.expires_at)
            );
        }
        eprintln!("take one with: support-admin pickup ID");
    }
    match published {
        Ok(()) => eprintln!("your hand-off key is published: others can hand tunnels to you"),
        Err(e) => eprintln!(
            "warning: your hand-off key is not published, so nobody can hand you a tunnel: {e}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn pickup(env: &Env, id: &str) -> Result<ExitCode, String> {
    let cp = env.control_plane()?;
    let me = identity::load(&env.dirs)?;
    let tunnel: TunnelId = match id.parse() {
        Ok(t) => t,
        Err(_) => {
            let waiting = handoff::waiting(&cp)?;
            let found: Vec<_> = waiting
                .iter()
                .filter(|h| h.tunnel_id.to_string().starts_with(id))
                .collect();
            match found.as_slice() {
                [one] => one.tunnel_id,
                [] => return Err(format!("no hand-off of a tunnel {id} waits for you (support-admin handoffs lists them)")),
                _ => return Err(format!("{id} matches several hand-offs; give more digits")),
            }
        }
    };
    let (rec, from) = handoff::pickup(&cp, &me, &env.records(), tunnel)?;
    refresh_ssh_config(env);
    eprintln!(
        "picked up tunnel {} from {from}: their certificate and signature verified, the package was sealed to your key; \
         it is yours now (connect, exec, forward, ssh support-{}){}",
        rec.id,
        rec.id,
        if rec.host_keys.is_empty() {
            format!("; the device has not connected yet: support-admin wait {}", rec.id)
        } else {
            String::new()
        }
    );
    println!("{}", rec.id);
    Ok(ExitCode::SUCCESS)
}

fn gc(env: &Env) -> Result<ExitCode, String> {
    let cp = env.control_plane()?;
    let live: std::collections::HashSet<TunnelId> = cp
        .list_all(None)?
        .iter()
        .filter(|t| !t.state.kind().is_terminal())
        .map(|t| t.tunnel_id)
        .collect();
    let records = env.records();
    let mut done = 0;
    for id in records.ids() {
        let Ok(rec) = records.load(&id) else { continue };
        if rec.tunnel_id().map(|t| live.contains(&t)).unwrap_or(false) {
            continue;
        }
        if let Ok(p) = env.provider(&rec.hub.provider) {
            p.delete(&rec.hub.handle)?;
        }
        session::quit(&records, &id);
        records.wipe(&id);
        eprintln!(
            "tunnel {id} has ended: hub {} deleted, secrets wiped",
            rec.hub.handle
        );
        done += 1;
    }
    for h in records.handed_off_all() {
        if h.id.parse().map(|t| !live.contains(&t)).unwrap_or(true) {
            records.forget_handed_off(&h.id);
        }
    }
    let mut providers = vec!["local"];
    if env.settings.gcp.is_some() {
        providers.push("gcp");
    }
    for name in providers {
        let p = env.provider(name)?;
        for (tunnel, handle) in p.list()? {
            if live.contains(&tunnel) {
                continue;
            }
            p.delete(&handle)?;
            eprintln!("orphan hub {handle} ({name}) of ended tunnel {tunnel} deleted");
            done += 1;
        }
    }
    if done == 0 {
        eprintln!("nothing to collect");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        let a = |v: &[&str]| shell_join(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["hostname; id"]), "hostname; id");
        assert_eq!(a(&["ls", "-l", "a b"]), "ls -l 'a b'");
        assert_eq!(a(&["echo", "it's"]), "echo 'it'\\''s'");
    }
}
