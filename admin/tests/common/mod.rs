//! The admin CLI against real parts: the control-plane binary, a device
//! agent (root, real users) with Debian's sshd, the relay binary. A support
//! CA and an engineer are made with the CLI itself.
#![allow(dead_code)]

pub mod discovery;
pub mod fake_gcp;
pub mod recorded;
pub mod schema;
pub mod tmux;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use support_testkit::world::*;

pub const ADMIN: &str = env!("CARGO_BIN_EXE_support-admin");

/// Runs support-admin with `home`.
pub fn admin_in(home: &Path, args: &[&str]) -> Output {
    Command::new(ADMIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("SUPPORT_ADMIN_PASSPHRASE", "")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .expect("support-admin runs")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The hex key on the line that contains `marker`.
pub fn key_after(text: &str, marker: &str) -> String {
    text.lines()
        .find(|l| l.contains(marker))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
        .to_string()
}

/// Installs `cert` (as `ca sign` printed it) with `init --certificate`.
pub fn install_certificate(home: &Path, cert: &str) {
    let file = home.join("cert.txt");
    std::fs::write(&file, cert.trim()).expect("cert file");
    ok(&admin_in(
        home,
        &["init", "--certificate", file.to_str().expect("utf-8")],
    ));
}

/// A support CA, on its own "offline machine" (a home dir).
pub struct Ca {
    pub home: tempfile::TempDir,
    pub public: String,
}

impl Ca {
    pub fn new() -> Ca {
        let home = tempdir();
        let public = ok(&admin_in(home.path(), &["ca", "init"]))
            .trim()
            .to_string();
        assert_eq!(public.len(), 64, "{public}");
        Ca { home, public }
    }

    pub fn sign(&self, name: &str, key: &str) -> String {
        ok(&admin_in(self.home.path(), &["ca", "sign", name, key]))
            .trim()
            .to_string()
    }
}

/// An engineer's machine: keys, enrolled at `cp`, certified by `ca` (if given).
pub struct Engineer {
    pub home: tempfile::TempDir,
    pub cp_key: String,
    pub approver_key: String,
}

impl Engineer {
    pub fn new(cp: &ControlPlane, ca: Option<&Ca>, name: &str) -> Engineer {
        let home = tempdir();
        let out = ok(&admin_in(home.path(), &["init"]));
        let cp_key = key_after(&out, "admins add");
        let approver_key = key_after(&out, "ca sign");
        let enrolled = Command::new(sibling_bin("support-control-plane"))
            .args(["admins", "add", "--data"])
            .arg(cp.dir.path())
            .args([name, &cp_key, "--role", "approver"])
            .env("SUPPORT_CP_LOG", "warn")
            .output()
            .expect("cli");
        ok(&enrolled);
        if let Some(ca) = ca {
            install_certificate(home.path(), &ca.sign(name, &approver_key));
        }
        std::fs::write(
            home.path().join("admin.toml"),
            format!(
                "control_plane = \"{}\"\ncontrol_plane_keys = [\"{}\"]\n\n[local]\nrelay_binary = \"{}\"\n",
                cp.url,
                hex::encode(cp.public),
                sibling_bin("support-relay").display()
            ),
        )
        .expect("admin.toml");
        Engineer {
            home,
            cp_key,
            approver_key,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        admin_in(self.home.path(), args)
    }

    /// The owner tag support-admin puts in its local relays' environment:
    /// a hash of the data dir (computed here independently).
    pub fn hub_owner(&self) -> String {
        let data = self.home.path().join("data");
        let digest =
            ring::digest::digest(&ring::digest::SHA256, data.as_os_str().as_encoded_bytes());
        hex::encode(&digest.as_ref()[..8])
    }

    pub fn records_dir(&self) -> PathBuf {
        self.home.path().join("data/tunnels")
    }

    /// Every file the engineer's side wrote, concatenated (secret hunting).
    pub fn append_toml(&self, text: &str) {
        let p = self.home.path().join("admin.toml");
        let mut s = std::fs::read_to_string(&p).expect("toml");
        s.push_str(text);
        std::fs::write(p, s).expect("toml");
    }
}

impl Drop for Engineer {
    /// Ends this engineer's local relays that a test left running.
    fn drop(&mut self) {
        let want = format!("SUPPORT_HUB_OWNER={}", self.hub_owner());
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
                let _ = Command::new("kill")
                    .arg(e.file_name())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// The device side and the engineer, ready to approve.
pub struct Lab {
    pub sshd: Sshd,
    pub cp: ControlPlane,
    pub ca: Ca,
    pub eng: Engineer,
    pub device: Device,
}

impl Lab {
    pub fn new(settings: &DeviceSettings) -> Lab {
        Lab::with(|_| settings.clone(), |_, _| {})
    }

    /// A lab whose device settings may name its sshd, with a step between
    /// the device's config and the daemon's start (installing a drop-in).
    pub fn with(
        settings: impl FnOnce(&Sshd) -> DeviceSettings,
        before_start: impl FnOnce(&mut Sshd, &Device),
    ) -> Lab {
        require_root_and_sshd();
        let mut sshd = Sshd::start(None);
        let cp = ControlPlane::start(&[]);
        let ca = Ca::new();
        let eng = Engineer::new(&cp, Some(&ca), "alice");
        let ca_key: [u8; 32] = hex::decode(&ca.public)
            .expect("hex")
            .try_into()
            .expect("32");
        let mut device = Device::new(&cp.url, &cp.public, &ca_key, &sshd, &settings(&sshd));
        before_start(&mut sshd, &device);
        device.start_daemon(None);
        Lab {
            sshd,
            cp,
            ca,
            eng,
            device,
        }
    }

    /// Writes `text` to a file in the engineer's home; returns its path.
    pub fn home_file(&self, name: &str, text: &str) -> String {
        let p = self.eng.home.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    }

    /// request on the device, approve with the CLI; returns the tunnel id.
    pub fn approve(&self, request: &[&str], approve: &[&str]) -> (String, String) {
        let (id, code) = self.device.request(request);
        let mut args = vec!["approve", &code, "--provider", "local"];
        args.extend_from_slice(approve);
        let out = self.eng.run(&args);
        let stdout = ok(&out);
        assert_eq!(stdout.trim(), id.to_string());
        (id.to_string(), code)
    }
}

/// A file of `mib` MiB from /dev/urandom at `dir/name` (incompressible:
/// what a transfer benchmark should send).
pub fn random_file(dir: &Path, name: &str, mib: u32) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ])
        .arg(format!("of={}", path.display()))
        .status()
        .expect("dd");
    assert!(st.success());
    path
}

/// Live processes on this machine whose arguments satisfy `f`.
pub fn processes(f: impl Fn(&[String]) -> bool) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            f(&args) && !stat.contains(") Z ")
        })
        .count()
}

/// Relay processes serving `tunnel` on this machine.
pub fn relays_for(tunnel: &str) -> usize {
    processes(|args| {
        let cmd = args.join(" ");
        cmd.contains("support-relay") && cmd.contains(tunnel)
    })
}
