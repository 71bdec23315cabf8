//! The commands behind the CLI, one module per topic: [`setup`] (the CA and
//! the engineer's keys), [`approve`] (approve and wait), [`sessions`]
//! (connect, exec, forward, up, proxy), [`status`], [`tunnels`] (list and
//! show), [`audit`], [`cleanup`] (stop and gc), [`ssh_config`],
//! [`handoff`] (handoff, handoffs, pickup) and [`docs`] (completions and
//! man pages). Here: what they share ([`Env`]) and the dispatch.

mod approve;
mod audit;
mod cleanup;
mod docs;
mod handoff;
mod sessions;
mod setup;
mod ssh_config;
mod status;
mod tunnels;

use std::process::ExitCode;
use std::time::Duration;

use support_protocol::TunnelId;

use crate::control::ControlPlane;
use crate::error::AdminError;
use crate::hub::gcp::Gcp;
use crate::hub::local::Local;
use crate::hub::{HubError, Provider};
use crate::records::{ProviderKind, Records};
use crate::settings::{parse_key, Dirs, Settings, SettingsError};
use crate::{identity, session};
use crate::{Cli, Command};

/// What every command works with: the engineer's directories and
/// settings, and the command line's overrides.
struct Env {
    dirs: Dirs,
    /// `--home`, passed on to the ProxyCommand of generated ssh configs.
    home: Option<std::path::PathBuf>,
    settings: Settings,
    cli_url: Option<String>,
    cli_keys: Vec<String>,
}

impl Env {
    fn control_plane(&self) -> Result<ControlPlane, AdminError> {
        let me = identity::load(&self.dirs)?;
        let url = self
            .cli_url
            .clone()
            .or_else(|| self.settings.control_plane.clone())
            .ok_or(SettingsError::NoControlPlane)?;
        let keys = if self.cli_keys.is_empty() {
            &self.settings.control_plane_keys
        } else {
            &self.cli_keys
        };
        let keys = keys
            .iter()
            .map(|k| parse_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ControlPlane::new(&url, keys, me.control_plane)?)
    }

    /// The provider `approve` uses unless told: admin.toml's, else local.
    fn default_provider(&self) -> Result<ProviderKind, AdminError> {
        match &self.settings.provider {
            None => Ok(ProviderKind::Local),
            Some(name) => ProviderKind::from_name(name)
                .ok_or_else(|| SettingsError::UnknownProvider(name.clone()).into()),
        }
    }

    fn provider(&self, kind: ProviderKind) -> Result<Box<dyn Provider>, AdminError> {
        match kind {
            ProviderKind::Local => Ok(Box::new(Local {
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
            ProviderKind::Gcp => {
                let settings = self.settings.gcp.clone().ok_or(SettingsError::NoGcp)?;
                Ok(Box::new(Gcp::new(settings).map_err(HubError::from)?))
            }
        }
    }

    fn records(&self) -> Records {
        Records::new(&self.dirs)
    }

    /// Starts or finds tunnels' sessions (as this program, with this `--home`).
    fn launcher(&self) -> Result<session::Launcher, AdminError> {
        let idle = std::env::var("SUPPORT_ADMIN_SESSION_IDLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(session::DEFAULT_IDLE);
        Ok(session::Launcher {
            exe: std::env::current_exe().map_err(AdminError::Exe)?,
            home: self.home.clone(),
            idle,
            owner: crate::hub::local::owner_tag(&self.dirs.data),
        })
    }

    /// Runs `f` on a small tokio runtime.
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, AdminError>>,
    ) -> Result<T, AdminError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?;
        let r = rt.block_on(f);
        // A read of local stdin may still block in tokio's pool: do not wait for it.
        rt.shutdown_background();
        r
    }

    /// A full id: parsed, or completed from local records.
    fn resolve(&self, id: &str) -> Result<TunnelId, AdminError> {
        if let Ok(t) = id.parse() {
            return Ok(t);
        }
        Ok(self.records().load(id)?.id)
    }

    /// Keeps the installed ssh config current after approve, stop, gc,
    /// hand-off and pick-up.
    fn refresh_ssh_config(&self) {
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        crate::ssh_config::refresh(
            &self.dirs,
            &self.records(),
            &crate::ssh_config::Route::Proxy {
                exe: &exe,
                home: self.home.as_deref(),
            },
        );
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, AdminError> {
    match &cli.command {
        Command::Completions { shell } => return Ok(docs::completions(*shell)),
        Command::Man { dir } => return docs::man_pages(dir),
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
        Command::Ca(c) => setup::ca(&env, c),
        Command::Init { certificate } => setup::init(&env, certificate.as_deref()),
        Command::Status { json } => status::status(&env, json),
        Command::List { state, json } => tunnels::list(&env, state.map(|s| s.0), json),
        Command::Show { id, json } => tunnels::show(&env, &id, json),
        Command::Audit { id, json } => audit::audit(&env, id.as_deref(), json),
        Command::Approve {
            code,
            provider,
            duration,
            ports,
            wait,
            yes,
        } => approve::approve(
            &env,
            code,
            provider.map(ProviderKind::from),
            duration,
            ports,
            Duration::from_secs(wait),
            yes,
        ),
        Command::Wait { id, wait } => approve::wait(&env, &id, Duration::from_secs(wait)),
        Command::Connect { id } => own_failure(sessions::connect(&env, &id)),
        Command::Exec { id, command } => own_failure(sessions::exec(&env, &id, &command)),
        Command::Up { id, idle } => sessions::up(&env, &id, Duration::from_secs(idle)),
        Command::Session { id, idle } => sessions::serve(&env, &id, Duration::from_secs(idle)),
        Command::Forward { id, specs } => sessions::forward(&env, &id, &specs),
        Command::Proxy { id, port } => sessions::proxy(&env, &id, port),
        Command::SshConfig { id, port, install } => {
            ssh_config::ssh_config(&env, id.as_deref(), port, install)
        }
        Command::Stop { id } => {
            let r = cleanup::stop(&env, &id);
            env.refresh_ssh_config();
            r
        }
        Command::Gc => {
            let r = cleanup::gc(&env);
            env.refresh_ssh_config();
            r
        }
        Command::Handoff { id, to, yes } => handoff::handoff(&env, &id, &to, yes),
        Command::Handoffs { json } => handoff::handoffs(&env, json),
        Command::Pickup { id } => handoff::pickup(&env, &id),
        Command::Completions { .. } | Command::Man { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// `exec` and `connect` pass the remote command's status on; their own
/// failures exit 255, as ssh's do, so a script can tell them apart.
fn own_failure(r: Result<ExitCode, AdminError>) -> Result<ExitCode, AdminError> {
    r.or_else(|e| {
        eprintln!("support-admin: {e}");
        Ok(ExitCode::from(255))
    })
}
