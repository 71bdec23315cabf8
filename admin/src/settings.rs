//! Where the engineer's files live, and `admin.toml`.
//!
//! ```text
//! CONFIG/admin.toml        control plane URL and pinned keys, hub settings
//! CONFIG/identity.key      0600 the engineer's control-plane and approver keys (optionally passphrase-sealed)
//! CONFIG/certificate       the approver certificate from the support CA
//! CONFIG/ca/               the support CA (only on the CA's offline machine)
//! DATA/tunnels/<id>.json   0600 per-tunnel secrets, wiped at stop and gc
//! DATA/tunnels/<id>/       0700 ssh-config's identity and known_hosts files
//! ```
//! `--home DIR` (or `SUPPORT_ADMIN_HOME`) puts both under one directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The engineer's directories.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// Keys, certificate, config.
    pub config: PathBuf,
    /// Per-tunnel state.
    pub data: PathBuf,
}

impl Dirs {
    /// From `--home`, else the XDG locations.
    pub fn new(home: Option<&Path>) -> Result<Dirs, String> {
        if let Some(h) = home {
            return Ok(Dirs {
                config: h.to_path_buf(),
                data: h.join("data"),
            });
        }
        let user_home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or("HOME is not set; pass --home DIR")?;
        let xdg = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| user_home.join(default))
        };
        Ok(Dirs {
            config: xdg("XDG_CONFIG_HOME", ".config").join("support-admin"),
            data: xdg("XDG_DATA_HOME", ".local/share").join("support-admin"),
        })
    }

    /// The CA's directory.
    pub fn ca(&self) -> PathBuf {
        self.config.join("ca")
    }
}

/// `admin.toml`.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The control plane's base URL.
    pub control_plane: Option<String>,
    /// Its pinned Noise public keys (hex), current first.
    #[serde(default)]
    pub control_plane_keys: Vec<String>,
    /// Which hub provider `approve` uses by default.
    pub provider: Option<String>,
    /// The local provider.
    #[serde(default)]
    pub local: LocalSettings,
    /// The GCP provider.
    pub gcp: Option<crate::hub::gcp::GcpSettings>,
}

/// The local provider's settings.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// The `support-relay` binary (default: next to support-admin, then PATH).
    pub relay_binary: Option<PathBuf>,
    /// The address the relay listens on (default 127.0.0.1, any port).
    pub listen: Option<String>,
}

impl Settings {
    /// Reads `CONFIG/admin.toml` (absent: defaults).
    pub fn load(dirs: &Dirs) -> Result<Settings, String> {
        let p = dirs.config.join("admin.toml");
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
}

/// A 32-byte key in hex.
pub fn parse_key(s: &str) -> Result<[u8; 32], String> {
    hex::decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("'{s}' is not a 32-byte key in hex (64 digits)"))
}
