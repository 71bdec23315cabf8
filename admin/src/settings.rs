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

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use support_protocol::key_text::KeyTextError;

use crate::error::FileError;

/// Why the engineer's directories or `admin.toml` cannot be used.
#[derive(Debug)]
pub enum SettingsError {
    /// Neither `--home` nor `HOME`.
    NoHome,
    /// `admin.toml` does not parse.
    Toml {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: Box<toml::de::Error>,
    },
    /// `admin.toml` could not be read.
    File(FileError),
    /// No control plane URL, in `admin.toml` or on the command line.
    NoControlPlane,
    /// A key's text (a pinned control-plane key, an engineer's key to
    /// certify) is not 64 hex digits.
    Key {
        /// The text, trimmed. It is shown: callers that parse a secret
        /// (the CA's seed) replace this error with one that does not.
        text: String,
        /// Why it is not a key.
        source: KeyTextError,
    },
    /// `provider` names no provider.
    UnknownProvider(String),
    /// The gcp provider without its section.
    NoGcp,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHome => f.write_str("HOME is not set; pass --home DIR"),
            Self::Toml { path, source } => write!(f, "{}: {source}", path.display()),
            Self::File(e) => e.fmt(f),
            Self::NoControlPlane => f.write_str(
                "no control plane: set control_plane in admin.toml or pass --control-plane",
            ),
            Self::Key { text, source } => write!(f, "'{text}': {source}"),
            Self::UnknownProvider(name) => write!(f, "unknown provider '{name}'"),
            Self::NoGcp => f.write_str(
                "the gcp provider needs a [gcp] section in admin.toml (project, zone, relay_url, relay_sha256)",
            ),
        }
    }
}

impl std::error::Error for SettingsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Toml { source, .. } => Some(source),
            Self::File(e) => Some(e),
            Self::Key { source, .. } => Some(source),
            _ => None,
        }
    }
}

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
    pub fn new(home: Option<&Path>) -> Result<Dirs, SettingsError> {
        if let Some(h) = home {
            return Ok(Dirs {
                config: h.to_path_buf(),
                data: h.join("data"),
            });
        }
        let user_home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or(SettingsError::NoHome)?;
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

/// A URL, or an array of them (joined with commas, as `--control-plane`
/// takes several).
fn url_or_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match Urls::deserialize(d)? {
        Urls::One(u) => u,
        Urls::Many(list) if list.is_empty() => {
            return Err(serde::de::Error::custom("control_plane: an empty list"))
        }
        Urls::Many(list) => list.join(", "),
    }))
}

/// `admin.toml`.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The control plane's base URL; with replicas, each one's (an array
    /// in the file), kept here separated by commas.
    #[serde(default, deserialize_with = "url_or_urls")]
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
    pub fn load(dirs: &Dirs) -> Result<Settings, SettingsError> {
        let path = dirs.config.join("admin.toml");
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t).map_err(|e| SettingsError::Toml {
                path,
                source: Box::new(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(SettingsError::File(FileError::at(path)(e))),
        }
    }
}

/// A 32-byte key in hex (the protocol's one parser, [`support_protocol::key_text`]),
/// naming the text in the error.
pub fn parse_key(s: &str) -> Result<[u8; 32], SettingsError> {
    support_protocol::key_text::parse_key(s).map_err(|source| SettingsError::Key {
        text: s.trim().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(d: &tempfile::TempDir) -> Dirs {
        Dirs::new(Some(d.path())).expect("with --home")
    }

    #[test]
    fn no_admin_toml_is_the_defaults() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Settings::load(&dirs(&d)).expect("defaults");
        assert!(s.control_plane.is_none() && s.provider.is_none() && s.gcp.is_none());
    }

    #[test]
    fn a_bad_key_is_named_with_the_parser_s_reason() {
        assert_eq!(
            parse_key(&format!(" {} ", "ab".repeat(32))).ok(),
            Some([0xab; 32])
        );
        match parse_key(" abc\n") {
            Err(SettingsError::Key { text, source }) => {
                assert_eq!(text, "abc");
                assert_eq!(source, KeyTextError::Length { got: 3 });
            }
            other => panic!("{other:?}"),
        }
        let e = parse_key(&format!("{}g", "0".repeat(63))).expect_err("not hex");
        assert!(
            matches!(
                &e,
                SettingsError::Key {
                    source: KeyTextError::NotHex {
                        position: 64,
                        found: 'g'
                    },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("'{}g': ", "0".repeat(63))),
            "{e}"
        );
    }

    #[test]
    fn control_plane_is_one_url_or_a_list() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("admin.toml");
        let read = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Settings::load(&dirs(&d)).map(|s| s.control_plane)
        };
        assert_eq!(
            read("control_plane = \"http://a\"\n").expect("one"),
            Some("http://a".into())
        );
        assert_eq!(
            read("control_plane = [\"http://a\", \"http://b\"]\n").expect("two"),
            Some("http://a, http://b".into())
        );
        assert!(read("control_plane = []\n").is_err());
    }

    #[test]
    fn a_bad_admin_toml_names_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("admin.toml");
        for bad in ["control_plane = ", "contol_plane = \"http://cp\"\n"] {
            std::fs::write(&path, bad).expect("write");
            match Settings::load(&dirs(&d)) {
                Err(e @ SettingsError::Toml { .. }) => {
                    assert!(
                        e.to_string().starts_with(&format!("{}: ", path.display())),
                        "{e}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("a directory in its place");
        assert!(matches!(
            Settings::load(&dirs(&d)),
            Err(SettingsError::File(FileError { path: p, .. })) if p == path
        ));
    }
}
