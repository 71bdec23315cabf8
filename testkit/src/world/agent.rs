//! The device agent under test: its config and state under a temp dir, the
//! daemon, and its CLI.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support_protocol::one_time_code::OneTimeCode;
use support_protocol::TunnelId;

use super::{sibling_bin, tempdir, with_fake_clock, Sshd};

/// The agent binary under test: this build's, or `SUPPORT_AGENT_BIN` (the
/// static release build, or a wrapper that runs the armv7 build under qemu).
pub fn agent_bin() -> String {
    std::env::var("SUPPORT_AGENT_BIN")
        .unwrap_or_else(|_| sibling_bin("support-agent").display().to_string())
}

/// The device: a config, a state dir, and the agent binary.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub daemon: Option<Child>,
    pub sshd_port: u16,
    pub stderr: PathBuf,
}

/// Device-side settings that tests vary.
#[derive(Clone)]
pub struct DeviceSettings {
    pub sudo: bool,
    pub max_duration: String,
    pub ports: Vec<(u16, String)>,
    pub extra: String,
}

impl Default for DeviceSettings {
    fn default() -> DeviceSettings {
        DeviceSettings {
            sudo: true,
            max_duration: "1h".into(),
            ports: vec![],
            extra: String::new(),
        }
    }
}

impl Device {
    pub fn new(
        cp_url: &str,
        cp_key: &[u8; 32],
        ca: &[u8; 32],
        sshd: &Sshd,
        s: &DeviceSettings,
    ) -> Device {
        let dir = tempdir();
        let config = dir.path().join("agent.toml");
        let mut ports = format!("22 = \"127.0.0.1:{}\"\n", sshd.port);
        for (p, t) in &s.ports {
            ports.push_str(&format!("{p} = \"{t}\"\n"));
        }
        std::fs::write(
            &config,
            format!(
                "control_plane = \"{cp_url}\"\ncontrol_plane_keys = [\"{}\"]\n\
                 support_ca_keys = [\"{}\"]\nmax_duration = \"{}\"\nsudo = {}\n\
                 state_dir = \"{}/state\"\nsocket = \"{}/agent.sock\"\n\
                 host_keys = [\"{}\"]\n{}\n[ports]\n{ports}",
                hex::encode(cp_key),
                hex::encode(ca),
                s.max_duration,
                s.sudo,
                dir.path().display(),
                dir.path().display(),
                sshd.host_key_file(),
                s.extra,
            ),
        )
        .expect("config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let stderr = dir.path().join("daemon.stderr");
        Device {
            config,
            daemon: None,
            sshd_port: sshd.port,
            stderr,
            dir,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn command(&self, faketime: Option<&str>) -> Command {
        let mut c = Command::new(agent_bin());
        if let Some(offset) = faketime {
            with_fake_clock(&mut c, offset);
        }
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn start_daemon(&mut self, faketime: Option<&str>) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("stderr file");
        let child = self
            .command(faketime)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("daemon starts");
        self.daemon = Some(child);
        let sock = self.socket();
        // A daemon that exits early says why in its stderr; show it rather
        // than time out.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the daemon exited ({status}) before its socket answered: {}",
                    self.daemon_stderr()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 20s waiting for the daemon's socket; its stderr: {}",
                self.daemon_stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// kill -9.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(None).args(args).output().expect("agent runs")
    }

    /// `support-agent request`, returning the tunnel id and the code line.
    pub fn request(&self, args: &[&str]) -> (TunnelId, String) {
        let mut all = vec!["request"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "request failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let code_line = stdout
            .lines()
            .find(|l| OneTimeCode::parse(l).is_ok())
            .unwrap_or_else(|| panic!("no code line alone in {stdout}"))
            .to_string();
        assert_eq!(
            code_line.trim(),
            code_line,
            "the code stands alone on its line"
        );
        let code = OneTimeCode::parse(&code_line).expect("parses");
        (code.tunnel_id, code_line)
    }

    pub fn daemon_stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every byte the agent wrote under its directory (state, logs, status).
    pub fn all_files_text(&self) -> String {
        fn walk(p: &Path, out: &mut Vec<u8>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else if let Ok(mut f) = std::fs::File::open(&path) {
                        let _ = f.read_to_end(out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        String::from_utf8_lossy(&out).to_string()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.crash();
        // Whatever a test left (a live tunnel, or a failure halfway): the
        // agent's own offline stop and repair remove it, so no user outlives the test.
        let _ = self.run(&["stop", "--all"]);
        let _ = self.run(&["repair"]);
    }
}

/// Writes raw bytes to a socket and reads what comes back (for hostile-input tests).
pub fn raw_socket(path: &Path, bytes: &[u8]) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
