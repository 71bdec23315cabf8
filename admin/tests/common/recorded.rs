//! A lab whose sshd sends support sessions through the session recorder
//! (the drop-in of `support-agent install-sshd`), for the recording tests
//! and bench.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

/// Where test recorders live: sshd runs the recorder as the support user,
/// so its binary and keys need a root-owned path anyone may traverse
/// (never /tmp: StrictModes refuses a world-writable parent).
fn run_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = PathBuf::from(format!(
        "/run/support-tunnel-tests/{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).expect("run dir");
    d
}

/// A [`Lab`] whose sshd sends support sessions through the recorder.
pub struct Recorded {
    pub lab: Lab,
    pub dir: PathBuf,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::ops::Deref for Recorded {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// The recorder's agent (a copy anyone may run) and the device's config.
pub fn agent_in(dir: &Path, device: &Device, args: &[&str]) -> Output {
    Command::new(dir.join("support-agent"))
        .arg("--config")
        .arg(&device.config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("agent runs")
}

/// A lab whose device config has `extra` and names the test sshd and a keys
/// directory; with `install`, `support-agent install-sshd` (the copy in the
/// run dir) writes the drop-in before sshd restarts and the daemon starts.
pub fn recorded_lab(extra: &str, install: bool) -> Recorded {
    let dir = run_dir();
    std::fs::copy(agent_bin(), dir.join("support-agent")).expect("copy the agent");
    let lab = Lab::with(
        |sshd| DeviceSettings {
            extra: format!(
                "sshd_config = \"{}\"\nauthorized_keys_dir = \"{}/keys\"\n{extra}",
                sshd.config_file().display(),
                dir.display()
            ),
            ..DeviceSettings::default()
        },
        |sshd, device| {
            if !install {
                return;
            }
            let drop_in = sshd.drop_in_dir().join("support-tunnel.conf");
            let out = agent_in(
                &dir,
                device,
                &[
                    "install-sshd",
                    "--drop-in",
                    drop_in.to_str().expect("utf-8"),
                ],
            );
            let said = ok(&out);
            assert!(said.contains("applies it"), "{said}");
            sshd.restart();
        },
    );
    Recorded { lab, dir }
}

/// The engineer's ssh config for `id`, written to a file; returns its path.
pub fn ssh_config(lab: &Lab, id: &str) -> String {
    lab.home_file("ssh_config", &ok(&lab.eng.run(&["ssh-config", id])))
}
