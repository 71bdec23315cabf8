//! Debian's sshd on a loopback port with its own host key, and OpenSSH keys.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_tcp_port, tempdir, wait_for, with_fake_clock};

/// A new passphrase-less ed25519 key at `path` (and `path`.pub), by
/// OpenSSH's ssh-keygen; returns the public key line.
pub fn ssh_keygen(path: &Path) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string()
}

/// Debian's sshd on a loopback port with its own host key. `faketime`
/// runs it with a shifted wall clock (as a device whose clock is wrong).
pub struct Sshd {
    pub port: u16,
    pub host_key: String,
    faketime: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd. Its config includes `drop_in_dir()/*.conf` first, as
    /// Debian's does `/etc/ssh/sshd_config.d/*.conf` (empty unless a test
    /// installs the recording drop-in there).
    pub fn start(faketime: Option<&str>) -> Sshd {
        let dir = tempdir();
        let key = dir.path().join("host_ed25519");
        let host_key = ssh_keygen(&key);
        let port = free_tcp_port();
        let cfg = dir.path().join("sshd_config");
        let drop_ins = dir.path().join("sshd_config.d");
        std::fs::create_dir(&drop_ins).expect("drop-in dir");
        std::fs::write(
            &cfg,
            format!(
                "Include {}/*.conf\n\
                 Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\n\
                 UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nStrictModes yes\nLogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n",
                drop_ins.display(),
                key.display(),
                dir.path().display()
            ),
        )
        .expect("config");
        let child = Self::spawn(&cfg, faketime, port);
        Sshd {
            port,
            host_key,
            faketime: faketime.map(String::from),
            child,
            _dir: dir,
        }
    }

    fn spawn(cfg: &Path, faketime: Option<&str>, port: u16) -> Child {
        std::fs::create_dir_all("/run/sshd").expect("privsep dir");
        let mut cmd = Command::new("/usr/sbin/sshd");
        if let Some(offset) = faketime {
            with_fake_clock(&mut cmd, offset);
        }
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        wait_for("sshd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    }

    /// Starts sshd again on the same port, reading its config anew.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.config_file(), self.faketime.as_deref(), self.port);
    }

    /// Its main config file.
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir.path().join("sshd_config")
    }

    /// The directory whose `*.conf` files its config includes.
    pub fn drop_in_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("sshd_config.d")
    }

    pub fn host_key_file(&self) -> String {
        self._dir
            .path()
            .join("host_ed25519.pub")
            .display()
            .to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
