//! The local provider: `support-relay` as a process on this machine, for
//! development and tests. Its label is the relay's `--tunnel` argument, so
//! `gc` finds relays no record knows by reading /proc. Each relay also
//! carries its owner (`SUPPORT_HUB_OWNER`, a hash of the engineer's data
//! dir) in its environment, so one engineer's gc never touches relays of
//! another home or another control plane on the same machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support_protocol::TunnelId;

use super::{b64, Hub, HubError, HubSpec, Provider};
use crate::error::FileError;

/// How long a relay has to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs relays on this machine.
pub struct Local {
    /// The relay binary.
    pub relay: PathBuf,
    /// Address to listen on (port 0 for any).
    pub listen: String,
    /// Where relay logs go.
    pub log_dir: PathBuf,
    /// This engineer's tag on the relays it starts.
    pub owner: String,
}

impl Local {
    /// Finds the relay binary: the setting, next to this program, or PATH.
    pub fn find_relay(setting: Option<&Path>) -> Result<PathBuf, HubError> {
        if let Some(p) = setting {
            return Ok(p.to_path_buf());
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            let p = dir.join("support-relay");
            if p.exists() {
                return Ok(p);
            }
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("support-relay"))
            .find(|p| p.exists())
            .ok_or(HubError::RelayNotFound)
    }
}

/// The command line of a process, split at NULs.
fn cmdline(pid: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).to_string())
        .collect()
}

/// A stable tag for the engineer whose data lives in `data_dir`.
pub fn owner_tag(data_dir: &Path) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        data_dir.as_os_str().as_encoded_bytes(),
    );
    hex::encode(&d.as_ref()[..8])
}

fn owned_by(pid: &str, owner: &str) -> bool {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let want = format!("SUPPORT_HUB_OWNER={owner}");
    env.split(|b| *b == 0).any(|v| v == want.as_bytes())
}

/// This owner's relays on this machine: (pid, tunnel label).
fn relays(owner: &str) -> Vec<(String, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<u32>().ok()?;
            let args = cmdline(&pid);
            let exe = args.first()?;
            if !exe.ends_with("support-relay") {
                return None;
            }
            let i = args.iter().position(|a| a == "--tunnel")?;
            if !owned_by(&pid, owner) {
                return None;
            }
            Some((pid, args.get(i + 1)?.clone()))
        })
        .collect()
}

impl Provider for Local {
    fn kind(&self) -> crate::records::ProviderKind {
        crate::records::ProviderKind::Local
    }

    fn preflight(&self) -> Result<String, HubError> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&self.relay) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(format!(
                "a relay on this machine ({})",
                self.relay.display()
            )),
            Ok(_) => Err(HubError::RelayNotExecutable {
                path: self.relay.clone(),
            }),
            Err(source) => Err(HubError::RelayMissing {
                path: self.relay.clone(),
                source,
            }),
        }
    }

    fn launch(&self, spec: &HubSpec, progress: &mut dyn FnMut(&str)) -> Result<Hub, HubError> {
        progress("starting support-relay on this machine");
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| HubError::Log(FileError::at(&self.log_dir)(e)))?;
        let log_path = self.log_dir.join(format!("relay-{}.log", spec.tunnel_id()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| HubError::Log(FileError::at(&log_path)(e)))?;
        let (child, line) = super::spawn_and_read_line(
            Command::new(&self.relay)
                .args(["--device-key", &b64(&spec.device_key())])
                .args(["--admin-key", &b64(&spec.admin_key())])
                .args(["--lifetime", &spec.lifetime_secs().to_string()])
                .args(["--listen", &self.listen])
                .args(["--tunnel", &spec.tunnel_id().to_string()])
                .env("SUPPORT_HUB_OWNER", &self.owner)
                .stderr(log),
            START_TIMEOUT,
        )
        .map_err(|source| HubError::Spawn {
            program: self.relay.clone(),
            source,
        })?;
        let line = line.ok_or(HubError::RelayDidNotStart {
            within: START_TIMEOUT,
        })?;
        let endpoint = line
            .trim()
            .strip_prefix("relaying on ")
            .and_then(|a| a.parse().ok())
            .ok_or(HubError::RelaySaid { line })?;
        Ok(Hub {
            endpoint,
            handle: child.id().to_string(),
        })
    }

    fn delete(&self, handle: &str) -> Result<(), HubError> {
        let Some((pid, _)) = relays(&self.owner).into_iter().find(|(p, _)| p == handle) else {
            return Ok(());
        };
        let raw: i32 = pid.parse().map_err(|_| HubError::NotAPid {
            handle: handle.to_string(),
        })?;
        if let Some(p) = rustix::process::Pid::from_raw(raw) {
            rustix::process::kill_process(p, rustix::process::Signal::TERM).map_err(|e| {
                HubError::Stop {
                    pid: pid.clone(),
                    source: e.into(),
                }
            })?;
        }
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HubError::RelayDidNotStop { pid })
    }

    fn list(&self) -> Result<Vec<(TunnelId, String)>, HubError> {
        Ok(relays(&self.owner)
            .into_iter()
            .filter_map(|(pid, label)| Some((label.parse().ok()?, pid)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn local(relay: &Path, dir: &Path) -> Local {
        Local {
            relay: relay.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            log_dir: dir.join("hubs"),
            owner: "test".into(),
        }
    }

    #[test]
    fn preflight_says_what_is_wrong_with_the_relay_binary() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("support-relay");
        match local(&missing, d.path()).preflight() {
            Err(HubError::RelayMissing { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&missing, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            local(&missing, d.path()).preflight(),
            Err(HubError::RelayNotExecutable { path }) if path == missing
        ));
        assert!(matches!(
            local(d.path(), d.path()).preflight(),
            Err(HubError::RelayNotExecutable { .. })
        ));
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let place = local(&missing, d.path()).preflight().expect("ready");
        assert!(place.starts_with("a relay on this machine"), "{place}");
    }

    #[test]
    fn a_relay_that_cannot_start_or_says_something_else_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = crate::hub::tests::spec();
        let missing = d.path().join("no-such-relay");
        match local(&missing, d.path()).launch(&spec, &mut |_| {}) {
            Err(HubError::Spawn { program, source }) => {
                assert_eq!(program, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{:?}", other.map(|h| h.endpoint)),
        }
        // A program that prints something else than `relaying on ADDRESS`.
        match local(Path::new("/bin/echo"), d.path()).launch(&spec, &mut |_| {}) {
            Err(HubError::RelaySaid { line }) => {
                assert!(line.starts_with("--device-key "), "{line:?}")
            }
            other => panic!("{:?}", other.map(|h| h.endpoint)),
        }
        // Its log cannot be written: the path is named.
        let file = d.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let mut l = local(Path::new("/bin/echo"), d.path());
        l.log_dir = file.join("hubs");
        match l.launch(&spec, &mut |_| {}) {
            Err(e @ HubError::Log(_)) => {
                assert!(e.to_string().contains(&*l.log_dir.to_string_lossy()), "{e}");
            }
            other => panic!("{:?}", other.map(|h| h.endpoint)),
        }
    }

    #[test]
    fn the_relay_setting_wins_and_deleting_an_unknown_hub_is_fine() {
        let p = Path::new("/opt/relay");
        assert_eq!(Local::find_relay(Some(p)).expect("the setting"), p);
        let d = tempfile::tempdir().expect("tempdir");
        local(p, d.path())
            .delete("999999999")
            .expect("nothing to delete");
        assert_eq!(
            HubError::RelayNotFound.to_string(),
            "support-relay is not next to support-admin nor on PATH; \
             set local.relay_binary in admin.toml"
        );
    }
}
