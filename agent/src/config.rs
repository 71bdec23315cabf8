//! `/etc/support-tunnel/agent.toml`: what the device trusts and allows.
//!
//! The file decides who can get a shell on this device, so it must be
//! root-owned and writable by root only; anything else is refused, as the
//! original agent refused it. Environment variables (`SUPPORT_AGENT_*`) and
//! flags override single settings, for development and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default config path.
pub const DEFAULT_PATH: &str = "/etc/support-tunnel/agent.toml";
/// The longest a tunnel may last when the config does not say (DESIGN section 4).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// How long a request stays approvable when the config does not say.
pub const DEFAULT_PENDING_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The longest a request may stay approvable (DESIGN section 4).
pub const MAX_PENDING_WINDOW: Duration = Duration::from_secs(14 * 24 * 3600);
/// The uids support users get, in turn: a range no other account uses, so
/// a uid is not handed out again until 100,000 tunnels later.
pub const DEFAULT_SUPPORT_UIDS: (u32, u32) = (2_100_000_000, 2_100_099_999);

/// Why the configuration (or a root-only file it names, like a hook)
/// cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file cannot be read.
    Unreadable {
        /// What the file is ("config file", "pre-up hook").
        what: String,
        /// Where.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not root's: whoever owns it decides who may reach the device.
    NotOwnedByRoot {
        /// What the file is.
        what: String,
        /// Where.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Group or others may write the file.
    WritableByOthers {
        /// What the file is.
        what: String,
        /// Where.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not TOML, or a key or value this agent does not know.
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// What the TOML parser says.
        error: toml::de::Error,
    },
    /// A setting has a value that cannot be used.
    Setting {
        /// The setting.
        name: &'static str,
        /// What is wrong with its value, and what would do.
        why: String,
    },
    /// A duration setting's text is not a duration.
    Duration {
        /// The setting.
        name: &'static str,
        /// Why.
        error: DurationError,
    },
    /// A `[ports]` key is not a port number.
    Port(PortsError),
    /// `support_uids` is not a usable range.
    SupportUids(UidRangeError),
    /// `control_plane` is an `https://` URL (its value).
    Https(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { what, path, error } => {
                write!(f, "cannot read the {what} {}: {error}", path.display())
            }
            Self::NotOwnedByRoot { what, path, uid } => write!(
                f,
                "refusing the {what} {}: it is owned by uid {uid}, not root (it decides who may reach this device)",
                path.display()
            ),
            Self::WritableByOthers { what, path, mode } => write!(
                f,
                "refusing the {what} {}: mode {mode:o} lets others change it; run chmod go-w on it",
                path.display()
            ),
            Self::Syntax {
                path: Some(path),
                error,
            } => write!(f, "{}: {error}", path.display()),
            Self::Syntax { path: None, error } => write!(f, "{error}"),
            Self::Setting { name, why } => write!(f, "{name}: {why}"),
            Self::Duration { name, error } => write!(f, "{name}: {error}"),
            Self::Port(e) => write!(f, "ports: {e}"),
            Self::SupportUids(e) => write!(f, "support_uids: {e}"),
            Self::Https(url) => write!(
                f,
                "control_plane is '{url}', but the agent speaks plain http:// only. Every call is \
                 already encrypted and authenticated end to end by the Noise channel to the pinned \
                 control_plane_keys, so TLS would add nothing but ~1 MB to the agent and a \
                 certificate store to keep current; write http://HOST:PORT (the control plane's \
                 port, 8080 by default)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { error, .. } => Some(error),
            Self::Syntax { error, .. } => Some(error),
            Self::Duration { error, .. } => Some(error),
            Self::Port(e) => Some(e),
            Self::SupportUids(e) => Some(e),
            Self::NotOwnedByRoot { .. }
            | Self::WritableByOthers { .. }
            | Self::Setting { .. }
            | Self::Https(_) => None,
        }
    }
}

/// Why a text is not a duration (`--duration`, `max_duration = "24h"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The reason `support_protocol::duration_text::parse` gives (it names the text).
    pub reason: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DurationError {}

/// Why a text is not a list of ports (`--ports 22,80`, a `[ports]` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortsError {
    /// An item is not a port number from 1 to 65535 (the item).
    NotAPort(String),
    /// The list is empty.
    NoPorts,
}

impl fmt::Display for PortsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAPort(p) => write!(f, "'{p}' is not a port number"),
            Self::NoPorts => f.write_str("no ports given"),
        }
    }
}

impl std::error::Error for PortsError {}

/// Why a text is not a usable uid range (`support_uids`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UidRangeError {
    /// No `-` between two numbers (the text).
    NotARange(String),
    /// One end is not a uid (that end).
    NotAUid(String),
    /// Fewer than 1,000 uids, or some at or below 100000 (the text).
    Unsafe(String),
}

impl fmt::Display for UidRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotARange(s) => write!(f, "'{s}' is not a range like 2100000000-2100099999"),
            Self::NotAUid(t) => write!(f, "'{t}' is not a uid"),
            Self::Unsafe(s) => write!(
                f,
                "'{s}' must hold at least 1,000 uids, all above 100000 (clear of the ranges useradd uses)"
            ),
        }
    }
}

impl std::error::Error for UidRangeError {}

fn bad(name: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        name,
        why: why.into(),
    }
}

/// URLs written as one string, separated by commas (as the environment
/// and `--control-plane` give them).
fn url_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// The file as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    control_plane: Option<toml::Value>,
    control_plane_keys: Option<Vec<String>>,
    support_ca_keys: Option<Vec<String>>,
    max_duration: Option<toml::Value>,
    default_duration: Option<toml::Value>,
    default_ports: Option<Vec<u16>>,
    ports: Option<BTreeMap<String, String>>,
    sudo: Option<bool>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    group: Option<String>,
    home_base: Option<PathBuf>,
    host_keys: Option<Vec<PathBuf>>,
    hooks: Option<Hooks>,
    pending_window: Option<toml::Value>,
    pre_up_failure: Option<PreUpFailure>,
    support_uids: Option<String>,
    log_level: Option<String>,
    require_recording: Option<bool>,
    record_input: Option<bool>,
    recording_cap: Option<toml::Value>,
    sshd_config: Option<PathBuf>,
    authorized_keys_dir: Option<PathBuf>,
    sftp_server: Option<PathBuf>,
}

/// What a failing `pre_up` hook does.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PreUpFailure {
    /// The tunnel ends as failed (the default).
    #[default]
    Abort,
    /// The failure is logged and the tunnel comes up anyway (the original's behaviour).
    Continue,
}

/// Hook scripts, run as root with the tunnel's values (never through a shell).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the tunnel and the support access come up.
    pub pre_up: Option<PathBuf>,
    /// After they are up.
    pub post_up: Option<PathBuf>,
    /// Before they are torn down.
    pub pre_down: Option<PathBuf>,
    /// After they are gone.
    pub post_down: Option<PathBuf>,
}

/// The agent's settings, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control plane's base URLs (`http://host:port`): one (a single
    /// or load-balanced address), or each replica's, tried in turn when
    /// one is unreachable.
    pub control_plane: Vec<String>,
    /// The control plane's pinned Noise public keys (current first).
    pub control_plane_keys: Vec<[u8; 32]>,
    /// The pinned support-CA public keys.
    pub support_ca_keys: Vec<[u8; 32]>,
    /// The longest tunnel this device accepts.
    pub max_duration: Duration,
    /// What `request` asks for when `--duration` is not given.
    pub default_duration: Duration,
    /// What `request` asks for when `--ports` is not given.
    pub default_ports: Vec<u16>,
    /// The allowlist: tunnel port -> local service.
    pub ports: BTreeMap<u16, SocketAddr>,
    /// Whether the support user gets passwordless sudo.
    pub sudo: bool,
    /// Where tunnel records, status and the owner's log live.
    pub state_dir: PathBuf,
    /// The daemon's local socket.
    pub socket: PathBuf,
    /// The group of support users and of the socket.
    pub group: String,
    /// Where support users' home directories are created.
    pub home_base: PathBuf,
    /// sshd's public host key files, sealed into the connected report.
    pub host_keys: Vec<PathBuf>,
    /// Hook scripts.
    pub hooks: Hooks,
    /// How long a request stays approvable (the control plane follows it).
    pub pending_window: Duration,
    /// What a failing `pre_up` hook does.
    pub pre_up_failure: PreUpFailure,
    /// The uid range support users are given, in turn (inclusive).
    pub support_uids: (u32, u32),
    /// The least important journal lines written (`--verbose` makes it debug).
    pub log_level: crate::journal::Level,
    /// Session recording: the sshd drop-in and what the recorder keeps.
    pub recording: Recording,
}

/// Session recording settings (`require_recording`, `record_input`,
/// `recording_cap`, `sshd_config`, `authorized_keys_dir`, `sftp_server`).
#[derive(Clone, Debug)]
pub struct Recording {
    /// Refuse support sessions unless sshd sends them through the recorder.
    pub require: bool,
    /// Record what the engineer types, not only what the device shows.
    pub input: bool,
    /// The most bytes of recordings kept per tunnel; the oldest sessions
    /// are rotated out first, then the live one stops being recorded. All
    /// tunnels together keep about `recording::DEVICE_CAPS` caps.
    pub cap: u64,
    /// sshd's main config (the drop-in must be included from it).
    pub sshd_config: PathBuf,
    /// The root-owned directory of support users' keys when recording.
    pub authorized_keys_dir: PathBuf,
    /// The SFTP server the recorder runs for sftp and scp.
    pub sftp_server: PathBuf,
}

/// The default per-tunnel recording cap: 64 MiB.
pub const DEFAULT_RECORDING_CAP: u64 = 64 << 20;

/// Where a setting may be overridden from (flags first, then environment).
#[derive(Default, Debug)]
pub struct Overrides {
    /// `--control-plane`.
    pub control_plane: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (refusing unsafe ownership or modes), then applies
    /// environment variables and `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        check_owner_and_mode(path, "config file")?;
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
            what: "config file".into(),
            path: path.to_path_buf(),
            error,
        })?;
        let file: File = toml::from_str(&text).map_err(|error| ConfigError::Syntax {
            path: Some(path.to_path_buf()),
            error,
        })?;
        let env = |name: &str| std::env::var(format!("SUPPORT_AGENT_{name}")).ok();
        let mut c = Config::from_file(file)?;
        if let Some(v) = overrides
            .control_plane
            .clone()
            .or_else(|| env("CONTROL_PLANE"))
        {
            c.control_plane = url_list(&v);
        }
        if let Some(v) = overrides
            .state_dir
            .clone()
            .or_else(|| env("STATE_DIR").map(PathBuf::from))
        {
            c.state_dir = v;
        }
        if let Some(v) = overrides
            .socket
            .clone()
            .or_else(|| env("SOCKET").map(PathBuf::from))
        {
            c.socket = v;
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses and validates config text (no ownership check, no overrides).
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file =
            toml::from_str(text).map_err(|error| ConfigError::Syntax { path: None, error })?;
        let c = Config::from_file(file)?;
        c.validate()?;
        Ok(c)
    }

    fn from_file(f: File) -> Result<Config, ConfigError> {
        let keys = |v: Option<Vec<String>>, name| -> Result<Vec<[u8; 32]>, ConfigError> {
            v.unwrap_or_default()
                .iter()
                .map(|k| {
                    support_protocol::key_text::parse_key(k).map_err(|e| bad(name, e.to_string()))
                })
                .collect()
        };
        let mut ports = BTreeMap::new();
        for (p, target) in f
            .ports
            .unwrap_or_else(|| BTreeMap::from([("22".to_string(), "127.0.0.1:22".to_string())]))
        {
            let port = parse_port(&p).map_err(ConfigError::Port)?;
            let addr: SocketAddr = target.parse().map_err(|_| {
                bad(
                    "ports",
                    format!(
                        "the target of port {port}, '{target}', is not an address like 127.0.0.1:22"
                    ),
                )
            })?;
            ports.insert(port, addr);
        }
        let dur = |v: Option<toml::Value>, default: Duration, name| match v {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if n > 0 => Ok(Duration::from_secs(n as u64)),
            Some(toml::Value::String(s)) => {
                parse_duration(&s).map_err(|error| ConfigError::Duration { name, error })
            }
            Some(other) => Err(bad(
                name,
                format!("{other:?} is not a duration (e.g. \"24h\", \"90m\" or seconds)"),
            )),
        };
        let max_duration = dur(f.max_duration, DEFAULT_MAX_DURATION, "max_duration")?;
        Ok(Config {
            control_plane: match f.control_plane {
                None => Vec::new(),
                Some(toml::Value::String(s)) => url_list(&s),
                Some(toml::Value::Array(a)) => a
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s.trim().to_string()),
                        other => Err(bad("control_plane", format!("{other:?} is not a URL"))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(bad(
                        "control_plane",
                        format!("{other:?} is not a URL or a list of URLs"),
                    ))
                }
            },
            control_plane_keys: keys(f.control_plane_keys, "control_plane_keys")?,
            support_ca_keys: keys(f.support_ca_keys, "support_ca_keys")?,
            default_duration: dur(f.default_duration, max_duration, "default_duration")?,
            max_duration,
            default_ports: f.default_ports.unwrap_or_else(|| vec![22]),
            ports,
            sudo: f.sudo.unwrap_or(true),
            state_dir: f
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/support-tunnel")),
            socket: f
                .socket
                .unwrap_or_else(|| PathBuf::from("/run/support-tunnel/agent.sock")),
            group: f.group.unwrap_or_else(|| "support".to_string()),
            home_base: f.home_base.unwrap_or_else(|| PathBuf::from("/home")),
            host_keys: f.host_keys.unwrap_or_else(|| {
                ["ed25519", "ecdsa", "rsa"]
                    .iter()
                    .map(|k| PathBuf::from(format!("/etc/ssh/ssh_host_{k}_key.pub")))
                    .collect()
            }),
            hooks: f.hooks.unwrap_or_default(),
            pending_window: dur(f.pending_window, DEFAULT_PENDING_WINDOW, "pending_window")?,
            pre_up_failure: f.pre_up_failure.unwrap_or_default(),
            support_uids: match f.support_uids {
                None => DEFAULT_SUPPORT_UIDS,
                Some(s) => parse_uid_range(&s).map_err(ConfigError::SupportUids)?,
            },
            log_level: match f.log_level {
                None => crate::journal::Level::Info,
                Some(s) => crate::journal::Level::parse(&s).ok_or_else(|| {
                    bad(
                        "log_level",
                        format!("'{s}' is not one of error, warning, info, debug"),
                    )
                })?,
            },
            recording: Recording {
                require: f.require_recording.unwrap_or(false),
                input: f.record_input.unwrap_or(false),
                cap: match f.recording_cap {
                    None => DEFAULT_RECORDING_CAP,
                    Some(v) => parse_size(&v).map_err(|why| bad("recording_cap", why))?,
                },
                sshd_config: f
                    .sshd_config
                    .unwrap_or_else(|| PathBuf::from("/etc/ssh/sshd_config")),
                authorized_keys_dir: f
                    .authorized_keys_dir
                    .unwrap_or_else(|| PathBuf::from("/etc/support-tunnel/authorized_keys")),
                sftp_server: f
                    .sftp_server
                    .unwrap_or_else(|| PathBuf::from("/usr/lib/openssh/sftp-server")),
            },
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.control_plane.is_empty() {
            return Err(bad(
                "control_plane",
                "not set; write the control plane's http://HOST:PORT",
            ));
        }
        for url in &self.control_plane {
            if url.starts_with("https://") {
                return Err(ConfigError::Https(url.clone()));
            }
            if !url.starts_with("http://") {
                return Err(bad(
                    "control_plane",
                    format!(
                        "'{url}' is not an http:// URL (the channel is Noise-encrypted to the pinned keys)"
                    ),
                ));
            }
        }
        if self.control_plane_keys.is_empty() {
            return Err(bad(
                "control_plane_keys",
                "none pinned; pin at least one key (support-control-plane public-key prints it)",
            ));
        }
        if self.support_ca_keys.is_empty() {
            return Err(bad(
                "support_ca_keys",
                "none pinned; pin the support CA's public key (support-admin ca init prints it)",
            ));
        }
        if self.max_duration > Duration::from_secs(u64::from(u32::MAX)) {
            return Err(bad("max_duration", "too long"));
        }
        if self.pending_window > MAX_PENDING_WINDOW {
            return Err(bad("pending_window", "longer than 14 days"));
        }
        if self.default_duration > self.max_duration {
            return Err(bad("default_duration", "longer than max_duration"));
        }
        if let Some(p) = self
            .default_ports
            .iter()
            .find(|p| !self.ports.contains_key(p))
        {
            return Err(bad(
                "default_ports",
                format!("{p} is not in the [ports] allowlist"),
            ));
        }
        for (name, path) in [
            ("sshd_config", &self.recording.sshd_config),
            ("authorized_keys_dir", &self.recording.authorized_keys_dir),
            ("sftp_server", &self.recording.sftp_server),
            ("socket", &self.socket),
        ] {
            if !plain_absolute(path) {
                return Err(bad(
                    name,
                    format!(
                        "'{}' must be an absolute path without spaces, quotes or '%' (sshd's config names it)",
                        path.display()
                    ),
                ));
            }
        }
        if !valid_name(&self.group) {
            return Err(bad(
                "group",
                format!("'{}' is not a valid group name", self.group),
            ));
        }
        Ok(())
    }

    /// The maximum duration in whole seconds.
    pub fn max_duration_secs(&self) -> u32 {
        self.max_duration.as_secs() as u32
    }

    /// The allowlisted ports.
    pub fn allowed_ports(&self) -> Vec<u16> {
        self.ports.keys().copied().collect()
    }
}

/// An absolute path that sshd's config can carry unquoted.
pub fn plain_absolute(path: &Path) -> bool {
    path.to_str().is_some_and(|s| {
        s.starts_with('/')
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'%' | b'\\'))
    })
}

/// A size: bytes, or a number with K, M or G (powers of 1024), at least 64 KiB.
fn parse_size(v: &toml::Value) -> Result<u64, String> {
    let bytes = match v {
        toml::Value::Integer(n) if *n > 0 => Some(*n as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let (digits, shift) = match s.char_indices().last() {
                Some((i, 'K' | 'k')) => (&s[..i], 10),
                Some((i, 'M' | 'm')) => (&s[..i], 20),
                Some((i, 'G' | 'g')) => (&s[..i], 30),
                _ => (s, 0),
            };
            digits
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(1 << shift))
        }
        _ => None,
    };
    match bytes {
        Some(b) if b >= 64 << 10 => Ok(b),
        Some(_) => Err("at least 64K".into()),
        None => Err(format!("{v:?} is not a size like \"64M\"")),
    }
}

/// A user or group name `useradd`/`groupadd` accept without surprises.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b == b'_' || (i > 0 && (b.is_ascii_digit() || b == b'-'))
        })
}

/// Refuses `path` unless it is owned by root and not writable by group or
/// others. `what` names the file in the error ("config file").
pub fn check_owner_and_mode(path: &Path, what: &str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|error| ConfigError::Unreadable {
        what: what.into(),
        path: path.to_path_buf(),
        error,
    })?;
    if meta.uid() != 0 {
        return Err(ConfigError::NotOwnedByRoot {
            what: what.into(),
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ConfigError::WritableByOthers {
            what: what.into(),
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// "90s", "15m", "24h", "7d", or plain seconds (see `support_protocol::duration_text`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    support_protocol::duration_text::parse(s)
        .map(|secs| Duration::from_secs(u64::from(secs)))
        .map_err(|reason| DurationError { reason })
}

/// "2100000000-2100099999" -> the inclusive range; it must hold at least
/// 1,000 uids and stay clear of root and of the usual account ranges.
pub fn parse_uid_range(s: &str) -> Result<(u32, u32), UidRangeError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| UidRangeError::NotARange(s.to_string()))?;
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| UidRangeError::NotAUid(t.to_string()))
    };
    let (lo, hi) = (num(a)?, num(b)?);
    if lo < 100_000 || hi < lo || hi - lo < 999 || hi >= u32::MAX - 1 {
        return Err(UidRangeError::Unsafe(s.to_string()));
    }
    Ok((lo, hi))
}

/// The pending window in whole seconds.
pub fn pending_window_secs(c: &Config) -> u32 {
    c.pending_window.as_secs().min(u64::from(u32::MAX)) as u32
}

/// "22,80" -> [22, 80].
pub fn parse_ports(s: &str) -> Result<Vec<u16>, PortsError> {
    let mut out = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = parse_port(p)?;
        if !out.contains(&port) {
            out.push(port);
        }
    }
    if out.is_empty() {
        return Err(PortsError::NoPorts);
    }
    Ok(out)
}

/// "22" -> 22; zero is no port.
fn parse_port(p: &str) -> Result<u16, PortsError> {
    p.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PortsError::NotAPort(p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_the_protocol_s() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        let e = parse_duration("0h").expect_err("zero");
        assert_eq!(e.to_string(), "a duration of zero is not allowed");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_ports("22, 80,22"), Ok(vec![22, 80]));
        assert_eq!(parse_ports("0"), Err(PortsError::NotAPort("0".into())));
        assert_eq!(
            parse_ports("22,http"),
            Err(PortsError::NotAPort("http".into()))
        );
        assert_eq!(parse_ports(" , "), Err(PortsError::NoPorts));
        assert_eq!(
            parse_ports("70000").map_err(|e| e.to_string()),
            Err("'70000' is not a port number".into())
        );
        assert_eq!(
            PortsError::NoPorts.to_string(),
            "no ports given".to_string()
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("support"));
        assert!(valid_name("support-0123abcd"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("Root"));
        assert!(!valid_name("a b"));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../dist/agent.toml").replace("<64 hex digits>", &"ab".repeat(32));
        let c = Config::parse(&text).expect("the example parses");
        assert_eq!(c.allowed_ports(), vec![22]);
        assert_eq!(c.max_duration, DEFAULT_MAX_DURATION);
    }

    #[test]
    fn https_is_refused_at_load_with_the_reason() {
        let text = include_str!("../dist/agent.toml")
            .replace("<64 hex digits>", &"ab".repeat(32))
            .replace("http://", "https://");
        let e = Config::parse(&text).expect_err("https is refused");
        assert!(
            matches!(&e, ConfigError::Https(url) if url.starts_with("https://")),
            "{e}"
        );
        let e = e.to_string();
        assert!(e.contains("speaks plain http:// only"), "{e}");
        assert!(e.contains("Noise channel"), "{e}");
        let text = include_str!("../dist/agent.toml")
            .replace("<64 hex digits>", &"ab".repeat(32))
            .replace("default_ports", "log_level = \"chatty\"\ndefault_ports");
        let e = Config::parse(&text).expect_err("bad level");
        assert!(
            matches!(
                &e,
                ConfigError::Setting {
                    name: "log_level",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "log_level: 'chatty' is not one of error, warning, info, debug"
        );
    }

    #[test]
    fn the_example_defaults_hold_when_uncommented() {
        let text = include_str!("../dist/agent.toml").replace("<64 hex digits>", &"ab".repeat(32));
        let (head, tail) = text
            .split_once("# Everything in this block")
            .expect("block");
        let (block, rest) = tail.split_once("\n\n").expect("end of block");
        let uncommented: String = block
            .lines()
            .skip(1)
            .map(|l| l.trim_start_matches("# ").to_string() + "\n")
            .collect();
        let c = Config::parse(&format!("{head}{uncommented}{rest}")).expect("the defaults parse");
        assert_eq!(c.pending_window, DEFAULT_PENDING_WINDOW);
        assert_eq!(c.support_uids, DEFAULT_SUPPORT_UIDS);
        assert_eq!(c.pre_up_failure, PreUpFailure::Abort);
        assert_eq!(c.log_level, crate::journal::Level::Info);
        assert!(c.sudo);
    }

    #[test]
    fn control_plane_names_one_url_or_several() {
        let with = |cp: &str| {
            Config::parse(&format!(
                "control_plane = {cp}\ncontrol_plane_keys = [\"{k}\"]\nsupport_ca_keys = [\"{k}\"]\n",
                k = "ab".repeat(32)
            ))
        };
        let urls = |cp: &str| with(cp).expect("parses").control_plane;
        assert_eq!(urls("\"http://a:8080\""), ["http://a:8080"]);
        let two = ["http://a:8080", "http://b:8080"];
        assert_eq!(urls("[\"http://a:8080\", \"http://b:8080\"]"), two);
        // The environment's and the flag's form: commas.
        assert_eq!(urls("\"http://a:8080, http://b:8080\""), two);
        for (bad, why) in [
            ("[\"http://a\", \"https://b\"]", "speaks plain http:// only"),
            (
                "[\"http://a\", \"b:8080\"]",
                "'b:8080' is not an http:// URL",
            ),
            ("[]", "control_plane: not set"),
            ("[\"http://a\", 8080]", "is not a URL"),
            ("8080", "is not a URL or a list of URLs"),
        ] {
            let e = with(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn pending_windows_and_uid_ranges_are_bounded() {
        let base = format!(
            "control_plane = \"http://x\"\ncontrol_plane_keys = [\"{k}\"]\nsupport_ca_keys = [\"{k}\"]\n",
            k = "ab".repeat(32)
        );
        let with = |extra: &str| Config::parse(&format!("{base}{extra}"));
        assert_eq!(
            with("pending_window = \"14d\"")
                .expect("14 days")
                .pending_window,
            MAX_PENDING_WINDOW
        );
        let e = with("pending_window = \"15d\"").expect_err("refused");
        assert_eq!(e.to_string(), "pending_window: longer than 14 days");
        assert_eq!(
            with("support_uids = \"300000-301000\"")
                .expect("ok")
                .support_uids,
            (300_000, 301_000)
        );
        for (bad, want) in [
            ("0-100000", UidRangeError::Unsafe("0-100000".into())),
            (
                "300000-300010",
                UidRangeError::Unsafe("300000-300010".into()),
            ),
            ("5-4", UidRangeError::Unsafe("5-4".into())),
            ("x-y", UidRangeError::NotAUid("x".into())),
            ("300000", UidRangeError::NotARange("300000".into())),
        ] {
            let e = with(&format!("support_uids = \"{bad}\"")).expect_err("refused");
            assert!(
                matches!(&e, ConfigError::SupportUids(got) if *got == want),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            with("support_uids = \"300000\"")
                .expect_err("refused")
                .to_string(),
            "support_uids: '300000' is not a range like 2100000000-2100099999"
        );
        let e = with("pending_window = \"3w\"").expect_err("refused");
        assert!(
            matches!(
                &e,
                ConfigError::Duration {
                    name: "pending_window",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "pending_window: '3w': unknown unit 'w' (use s, m, h or d)"
        );
        let e = with("pre_up_failure = \"ignore\"").expect_err("refused");
        assert!(
            matches!(&e, ConfigError::Syntax { path: None, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("unknown variant `ignore`"), "{e}");
    }

    #[test]
    fn file_defaults_and_unknown_keys() {
        let f: File = toml::from_str("control_plane = \"http://x\"").expect("parses");
        let c = Config::from_file(f).expect("valid");
        assert_eq!(c.default_ports, vec![22]);
        assert_eq!(c.max_duration, DEFAULT_MAX_DURATION);
        assert!(c.sudo);
        let Err(e) = toml::from_str::<File>("contro_plane = \"x\"") else {
            panic!("an unknown key is refused")
        };
        assert!(
            e.to_string().contains("unknown field `contro_plane`"),
            "{e}"
        );
        let f: File = toml::from_str("[ports]\nssh = \"127.0.0.1:22\"").expect("parses");
        let e = Config::from_file(f).expect_err("not a port");
        assert!(
            matches!(&e, ConfigError::Port(PortsError::NotAPort(p)) if p == "ssh"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "ports: 'ssh' is not a port number");
        let f: File = toml::from_str("[ports]\n22 = \"nowhere\"").expect("parses");
        let e = Config::from_file(f).expect_err("not an address");
        assert_eq!(
            e.to_string(),
            "ports: the target of port 22, 'nowhere', is not an address like 127.0.0.1:22"
        );
    }

    #[test]
    fn recording_settings_are_checked() {
        let base = format!(
            "control_plane = \"http://x\"\ncontrol_plane_keys = [\"{k}\"]\nsupport_ca_keys = [\"{k}\"]\n",
            k = "ab".repeat(32)
        );
        let with = |extra: &str| Config::parse(&format!("{base}{extra}"));
        let c = with("").expect("defaults");
        assert!(!c.recording.require && !c.recording.input);
        assert_eq!(c.recording.cap, DEFAULT_RECORDING_CAP);
        let cap = |v: &str| with(&format!("recording_cap = {v}")).map(|c| c.recording.cap);
        assert_eq!(cap("\"8M\"").expect("8M"), 8 << 20);
        assert_eq!(cap("\"512k\"").expect("512k"), 512 << 10);
        assert_eq!(cap("1048576").expect("bytes"), 1 << 20);
        for wrong in ["\"1K\"", "\"lots\"", "-5", "\"99999999999G\""] {
            assert!(cap(wrong).is_err(), "{wrong}");
        }
        let e = with("authorized_keys_dir = \"/etc/keys dir\"").expect_err("a space");
        assert!(
            e.to_string()
                .starts_with("authorized_keys_dir: '/etc/keys dir' must be an absolute path"),
            "{e}"
        );
        assert!(with("sftp_server = \"sftp-server\"").is_err(), "relative");
        assert!(with("socket = \"/run/%u.sock\"").is_err(), "an sshd token");
    }
}
