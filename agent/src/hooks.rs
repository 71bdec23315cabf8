//! Hook scripts (pre-up, post-up, pre-down, post-down), as the original ran
//! them: root-owned scripts from the root-owned config, given the tunnel's
//! values as arguments and environment, never pasted into a shell string.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::check_owner_and_mode;

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

/// Runs `hook` (if configured) as `hook STAGE ID NAME ADDRESS NETWORK USER`
/// with the same values in `SUPPORT_TUNNEL_*` variables. Errors say why.
pub fn run(stage: &str, hook: Option<&Path>, v: &HookValues) -> Result<(), String> {
    let Some(hook) = hook else { return Ok(()) };
    check_owner_and_mode(hook, &format!("{stage} hook")).map_err(|e| e.to_string())?;
    let mut child = Command::new(hook)
        .args([
            stage,
            &v.tunnel_id,
            &v.tunnel_name,
            &v.address,
            &v.network,
            &v.user,
        ])
        .env("SUPPORT_TUNNEL_STAGE", stage)
        .env("SUPPORT_TUNNEL_ID", &v.tunnel_id)
        .env("SUPPORT_TUNNEL_NAME", &v.tunnel_name)
        .env("SUPPORT_TUNNEL_ADDRESS", &v.address)
        .env("SUPPORT_TUNNEL_NETWORK", &v.network)
        .env("SUPPORT_TUNNEL_USER", &v.user)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{stage} hook {}: {e}", hook.display()))?;
    let deadline = Instant::now() + HOOK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("{stage} hook {} failed: {s}", hook.display())),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{stage} hook {} ran longer than {} s and was killed",
                    hook.display(),
                    HOOK_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{stage} hook: {e}")),
        }
    }
}
