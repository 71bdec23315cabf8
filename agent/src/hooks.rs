//! Hook scripts (pre-up, post-up, pre-down, post-down), as the original ran
//! them: root-owned scripts from the root-owned config, given the tunnel's
//! values as arguments and environment, never pasted into a shell string.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::{check_owner_and_mode, ConfigError};

/// How long a hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookStage {
    /// Before the support access and the peer come up.
    PreUp,
    /// After they are up.
    PostUp,
    /// At the end, after the access is gone (the owner's stop never waits for it).
    PreDown,
    /// Last.
    PostDown,
}

impl HookStage {
    /// The stage's name, as the hook receives it.
    pub fn name(self) -> &'static str {
        match self {
            HookStage::PreUp => "pre-up",
            HookStage::PostUp => "post-up",
            HookStage::PreDown => "pre-down",
            HookStage::PostDown => "post-down",
        }
    }

    /// The configured script of this stage.
    pub fn script(self, hooks: &crate::config::Hooks) -> Option<&Path> {
        match self {
            HookStage::PreUp => hooks.pre_up.as_deref(),
            HookStage::PostUp => hooks.post_up.as_deref(),
            HookStage::PreDown => hooks.pre_down.as_deref(),
            HookStage::PostDown => hooks.post_down.as_deref(),
        }
    }
}

/// The values a hook receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookValues {
    /// The tunnel id.
    pub tunnel_id: String,
    /// The tunnel's name (what the original called the interface).
    pub tunnel_name: String,
    /// The device's tunnel address.
    pub address: String,
    /// The tunnel network, CIDR.
    pub network: String,
    /// The support user.
    pub user: String,
}

/// Why a hook did not run to success. The machine logs it as text.
#[derive(Debug)]
pub enum HookError {
    /// The script is not root's, or others may change it (or it is unreadable).
    Refused(ConfigError),
    /// The script could not be started.
    Spawn {
        /// When it was to run.
        stage: HookStage,
        /// The script.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The script exited unsuccessfully.
    Failed {
        /// When it ran.
        stage: HookStage,
        /// The script.
        path: PathBuf,
        /// How it exited.
        status: ExitStatus,
    },
    /// The script ran too long and was killed.
    TimedOut {
        /// When it ran.
        stage: HookStage,
        /// The script.
        path: PathBuf,
        /// How long it was given.
        after: Duration,
    },
    /// Waiting for the script failed.
    Wait {
        /// When it ran.
        stage: HookStage,
        /// What the OS said.
        error: std::io::Error,
    },
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(e) => e.fmt(f),
            Self::Spawn { stage, path, error } => {
                write!(f, "{} hook {}: {error}", stage.name(), path.display())
            }
            Self::Failed {
                stage,
                path,
                status,
            } => write!(
                f,
                "{} hook {} failed: {status}",
                stage.name(),
                path.display()
            ),
            Self::TimedOut { stage, path, after } => write!(
                f,
                "{} hook {} ran longer than {} s and was killed",
                stage.name(),
                path.display(),
                after.as_secs()
            ),
            Self::Wait { stage, error } => write!(f, "{} hook: {error}", stage.name()),
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Refused(e) => Some(e),
            Self::Spawn { error, .. } | Self::Wait { error, .. } => Some(error),
            Self::Failed { .. } | Self::TimedOut { .. } => None,
        }
    }
}

/// Runs `hook` (if configured) as `hook STAGE ID NAME ADDRESS NETWORK USER`
/// with the same values in `SUPPORT_TUNNEL_*` variables.
pub fn run(stage: HookStage, hook: Option<&Path>, v: &HookValues) -> Result<(), HookError> {
    let Some(hook) = hook else { return Ok(()) };
    let path = || hook.to_path_buf();
    check_owner_and_mode(hook, &format!("{} hook", stage.name())).map_err(HookError::Refused)?;
    let name = stage.name();
    let mut child = Command::new(hook)
        .args([
            name,
            &v.tunnel_id,
            &v.tunnel_name,
            &v.address,
            &v.network,
            &v.user,
        ])
        .env("SUPPORT_TUNNEL_STAGE", name)
        .env("SUPPORT_TUNNEL_ID", &v.tunnel_id)
        .env("SUPPORT_TUNNEL_NAME", &v.tunnel_name)
        .env("SUPPORT_TUNNEL_ADDRESS", &v.address)
        .env("SUPPORT_TUNNEL_NETWORK", &v.network)
        .env("SUPPORT_TUNNEL_USER", &v.user)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| HookError::Spawn {
            stage,
            path: path(),
            error,
        })?;
    let deadline = Instant::now() + HOOK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(HookError::Failed {
                    stage,
                    path: path(),
                    status,
                })
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::TimedOut {
                    stage,
                    path: path(),
                    after: HOOK_TIMEOUT,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(HookError::Wait { stage, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn values() -> HookValues {
        HookValues {
            tunnel_id: "0000000000000001".into(),
            tunnel_name: "support-1".into(),
            address: "10.0.0.2".into(),
            network: "10.0.0.0/24".into(),
            user: "support-0000000000000001".into(),
        }
    }

    #[test]
    fn a_hook_fails_with_its_reason() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(run(HookStage::PostUp, None, &values()).is_ok());

        // A link to a program, not a script written here: executing a file
        // this process just wrote can fail with ETXTBSY while other tests fork.
        let failing = d.path().join("failing");
        std::os::unix::fs::symlink("/bin/false", &failing).expect("symlink");
        let e = run(HookStage::PostUp, Some(&failing), &values()).expect_err("exit 1");
        assert!(
            matches!(&e, HookError::Failed { stage: HookStage::PostUp, path, status }
                if *path == failing && status.code() == Some(1)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("post-up hook {} failed: exit status: 1", failing.display())
        );

        let script = d.path().join("hook");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = run(HookStage::PreUp, Some(&script), &values()).expect_err("refused");
        assert!(
            matches!(&e, HookError::Refused(ConfigError::WritableByOthers { what, .. })
                if what == "pre-up hook"),
            "{e:?}"
        );

        let e =
            run(HookStage::PreDown, Some(&d.path().join("none")), &values()).expect_err("missing");
        assert!(
            matches!(&e, HookError::Refused(ConfigError::Unreadable { .. })),
            "{e:?}"
        );
    }
}
