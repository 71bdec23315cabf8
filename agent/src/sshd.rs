//! The sshd drop-in that sends every support session through the session
//! recorder, its installation (`support-agent install-sshd`), and the check,
//! made again for each support user, that sshd really applies it.
//!
//! The check asks sshd itself (`sshd -T -C user=...`) what it would apply to
//! that user: a drop-in that is not included, or that an earlier `Match`
//! overrides, shows up there and nowhere else.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{plain_absolute, Config};
use crate::util::write_atomic;

/// Where the package and `install-sshd` put the drop-in.
pub const DEFAULT_DROP_IN: &str = "/etc/ssh/sshd_config.d/support-tunnel.conf";
/// The agent command sshd forces on support sessions.
pub const RECORD_COMMAND: &str = "record-session";
const SSHD: &str = "/usr/sbin/sshd";

/// What sshd must apply to a support user for its sessions to be recorded.
const REQUIRED: &[(&str, &str)] = &[
    ("disableforwarding", "yes"),
    ("allowtcpforwarding", "no"),
    ("allowstreamlocalforwarding", "no"),
    ("allowagentforwarding", "no"),
    ("x11forwarding", "no"),
    ("permittunnel", "no"),
    ("permituserrc", "no"),
    ("authorizedkeyscommand", "none"),
    ("trustedusercakeys", "none"),
];

/// The drop-in for `config`, forcing `agent`'s recorder.
pub fn drop_in(config: &Config, agent: &Path) -> String {
    format!(
        "# support-tunnel: written by `support-agent install-sshd` (and the package).\n\
         # Every session of a support user runs through the agent's session recorder;\n\
         # the owner can watch and replay it (support-agent watch, replay, log).\n\
         # Their keys live in a root-owned directory, so their home is an ordinary one.\n\
         Match Group {group} User support-*\n\
         \tAuthorizedKeysFile {keys}/%u\n\
         \tAuthorizedKeysCommand none\n\
         \tAuthorizedPrincipalsFile none\n\
         \tTrustedUserCAKeys none\n\
         \tAuthenticationMethods publickey\n\
         \tForceCommand {agent} --socket {socket} {RECORD_COMMAND}\n\
         \tDisableForwarding yes\n\
         \tAllowTcpForwarding no\n\
         \tAllowStreamLocalForwarding no\n\
         \tAllowAgentForwarding no\n\
         \tX11Forwarding no\n\
         \tPermitTunnel no\n\
         \tPermitUserRC no\n",
        group = config.group,
        keys = config.recording.authorized_keys_dir.display(),
        agent = agent.display(),
        socket = config.socket.display(),
    )
}

/// Why sshd does not, or cannot be made to, record support sessions.
#[derive(Debug)]
pub enum SshdError {
    /// sshd could not be run.
    Spawn(io::Error),
    /// sshd refused its configuration.
    Refused(String),
    /// sshd does not apply the drop-in to support users.
    NotApplied(String),
    /// A path that sshd's config would name cannot be written there.
    Path(PathBuf),
    /// A file could not be written.
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The probe user for the check could not be made.
    Probe(String),
}

impl std::fmt::Display for SshdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot run {SSHD}: {e}"),
            Self::Refused(said) => write!(f, "sshd refuses its configuration: {said}"),
            Self::NotApplied(why) => write!(f, "sshd does not record support sessions: {why}"),
            Self::Path(p) => write!(
                f,
                "{} cannot be named in sshd's config (an absolute path without spaces or quotes)",
                p.display()
            ),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Probe(why) => write!(f, "cannot make a user to check sshd with: {why}"),
        }
    }
}

impl std::error::Error for SshdError {}

/// What sshd would apply to `user`'s session: `sshd -T -C`, keyword -> value.
fn effective(config: &Config, user: &str) -> Result<HashMap<String, String>, SshdError> {
    let out = Command::new(SSHD)
        .arg("-T")
        .arg("-f")
        .arg(&config.recording.sshd_config)
        .arg("-C")
        .arg(format!("user={user},host=localhost,addr=127.0.0.1"))
        .stdin(Stdio::null())
        .output()
        .map_err(SshdError::Spawn)?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(SshdError::Refused(said.trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect())
}

/// Checks that sshd sends `user`'s sessions through the recorder, reads its
/// key from the root-owned directory only, and allows no forwarding.
pub fn check_recorded(config: &Config, user: &str) -> Result<(), SshdError> {
    let applied = effective(config, user)?;
    let get = |k: &str| applied.get(k).map(String::as_str).unwrap_or("");
    let force = get("forcecommand");
    let want_tail = format!("--socket {} {RECORD_COMMAND}", config.socket.display());
    let agent = force.split(' ').next().unwrap_or("");
    if !force.ends_with(&want_tail) || !Path::new(agent).is_absolute() {
        return Err(SshdError::NotApplied(format!(
            "its ForceCommand for {user} is '{force}', not the recorder (… {want_tail}); \
             run support-agent install-sshd and check that {} includes the drop-in",
            config.recording.sshd_config.display()
        )));
    }
    let keys = format!("{}/%u", config.recording.authorized_keys_dir.display());
    if get("authorizedkeysfile") != keys {
        return Err(SshdError::NotApplied(format!(
            "its AuthorizedKeysFile for {user} is '{}', not '{keys}'",
            get("authorizedkeysfile")
        )));
    }
    for (key, want) in REQUIRED {
        if get(key) != *want {
            return Err(SshdError::NotApplied(format!(
                "{key} is '{}' for {user}, not '{want}'",
                get(key)
            )));
        }
    }
    Ok(())
}

/// Makes the root-owned directory of support users' keys (0755: sshd reads
/// a key as its user, and `StrictModes` wants no one else able to write).
pub fn ensure_keys_dir(config: &Config) -> Result<(), SshdError> {
    let dir = &config.recording.authorized_keys_dir;
    let io = |error| SshdError::Io {
        path: dir.clone(),
        error,
    };
    fs::create_dir_all(dir).map_err(io)?;
    std::os::unix::fs::chown(dir, Some(0), Some(0)).map_err(io)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io)
}

/// What `install-sshd` did.
pub struct Installed {
    /// The drop-in written.
    pub drop_in: PathBuf,
    /// The recorder it forces.
    pub agent: PathBuf,
}

/// Writes the drop-in, has sshd check its whole configuration, and checks
/// with a short-lived probe user of the support group that sshd applies it.
/// A drop-in sshd refuses, or does not apply, is taken back.
pub fn install(config: &Config, drop_in_path: &Path) -> Result<Installed, SshdError> {
    let agent = std::env::current_exe().map_err(|error| SshdError::Io {
        path: PathBuf::from("/proc/self/exe"),
        error,
    })?;
    for p in [&agent, &drop_in_path.to_path_buf()] {
        if !plain_absolute(p) {
            return Err(SshdError::Path(p.clone()));
        }
    }
    ensure_keys_dir(config)?;
    let io = |error| SshdError::Io {
        path: drop_in_path.to_path_buf(),
        error,
    };
    if let Some(dir) = drop_in_path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let before = fs::read(drop_in_path).ok();
    write_atomic(drop_in_path, drop_in(config, &agent).as_bytes(), 0o644).map_err(io)?;
    let undo = || match &before {
        Some(b) => write_atomic(drop_in_path, b, 0o644),
        None => fs::remove_file(drop_in_path),
    };
    let syntax = Command::new(SSHD)
        .arg("-t")
        .arg("-f")
        .arg(&config.recording.sshd_config)
        .stdin(Stdio::null())
        .output()
        .map_err(SshdError::Spawn)?;
    if !syntax.status.success() {
        let _ = undo();
        return Err(SshdError::Refused(
            String::from_utf8_lossy(&syntax.stderr).trim().to_string(),
        ));
    }
    // A drop-in sshd does not apply records nothing: it is taken back too.
    if let Err(e) = with_probe_user(config, |user| check_recorded(config, user)) {
        let _ = undo();
        return Err(e);
    }
    Ok(Installed {
        drop_in: drop_in_path.to_path_buf(),
        agent,
    })
}

/// Runs `f` with a user of the support group that exists for the call only
/// (sshd evaluates `Match Group` against a real account).
fn with_probe_user<T>(
    config: &Config,
    f: impl FnOnce(&str) -> Result<T, SshdError>,
) -> Result<T, SshdError> {
    crate::access::ensure_group(&config.group).map_err(|e| SshdError::Probe(e.to_string()))?;
    let user = format!("support-check{}", std::process::id() % 100_000);
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .args(["--gid", &config.group])
        .args(["--comment", "support-tunnel install-sshd check", &user])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SshdError::Probe(e.to_string()))?;
    if !made.status.success() {
        return Err(SshdError::Probe(
            String::from_utf8_lossy(&made.stderr).trim().to_string(),
        ));
    }
    let result = f(&user);
    let _ = Command::new("userdel")
        .arg(&user)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_names_the_recorder_the_keys_and_no_forwarding() {
        let config = Config::parse(&format!(
            "control_plane = \"http://x\"\ncontrol_plane_keys = [\"{k}\"]\nsupport_ca_keys = [\"{k}\"]\n\
             group = \"helpers\"\nsocket = \"/run/st/agent.sock\"\nauthorized_keys_dir = \"/etc/st/keys\"\n",
            k = "ab".repeat(32)
        ))
        .expect("config");
        let text = drop_in(&config, Path::new("/usr/bin/support-agent"));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::trim)
            .collect();
        assert_eq!(lines[0], "Match Group helpers User support-*");
        assert!(lines.contains(&"AuthorizedKeysFile /etc/st/keys/%u"));
        assert!(lines.contains(
            &"ForceCommand /usr/bin/support-agent --socket /run/st/agent.sock record-session"
        ));
        for (key, want) in REQUIRED {
            assert!(
                lines
                    .iter()
                    .any(|l| l.to_ascii_lowercase() == format!("{key} {want}")),
                "{key} {want}"
            );
        }
    }
}
