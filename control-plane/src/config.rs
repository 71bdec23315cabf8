//! `serve` settings: flags, then `SUPPORT_CP_*` environment variables (both
//! through clap), then the TOML config file, then defaults. [`Settings::resolve`]
//! is that chain, written once; every default is a constant here or in
//! [`ServiceConfig::default`], and a test holds `--help` and the packaged
//! example config to them.
//!
//! Durations are written as people type them ("90m", "24h", "14d") or as
//! whole seconds, in the file and on the command line alike; the older
//! `*_secs` key names are still read.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

use crate::rate_limit::RateLimiter;
use crate::service::ServiceConfig;

/// The port the API listens on by default. The agent's and the admin's
/// example configs and infra/ use the same one (a test checks).
pub const DEFAULT_PORT: u16 = 8080;
/// The data directory (store, keys, operator socket) by default.
pub const DEFAULT_DATA: &str = "/var/lib/support-control-plane";
/// The most concurrent connections by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Connections one client address (an IPv6 /64) may hold: 5% of the whole,
/// and room for a few thousand devices behind one carrier-grade NAT.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
/// Tunnel requests per minute per client address by default.
pub const DEFAULT_CREATES_PER_MINUTE_PER_ADDRESS: u32 = 10;
/// Tunnel requests per minute overall by default.
pub const DEFAULT_CREATES_PER_MINUTE: u32 = 600;
/// The log format by default.
pub const DEFAULT_LOG_FORMAT: &str = "text";
/// However low its rate, an address may make this many creates at once.
const MIN_ADDRESS_BURST: u32 = 5;

/// `serve`'s flags, each also read from its `SUPPORT_CP_*` variable. The
/// `[default: …]` in each help text is checked against the code by a test.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML config file (flags and environment override it).
    #[arg(long, env = "SUPPORT_CP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SUPPORT_CP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` here (a private address) instead of on --listen.
    #[arg(long, env = "SUPPORT_CP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The data directory [default: /var/lib/support-control-plane].
    #[arg(long, env = "SUPPORT_CP_DATA")]
    pub data: Option<PathBuf>,
    /// A PostgreSQL store (postgres://user@host/database) that several replicas share; without it, store.redb in the data directory.
    #[arg(long, env = "SUPPORT_CP_STORE")]
    pub store: Option<String>,
    /// How long an approval nobody connected with stays live, e.g. 1h [default: 1h].
    #[arg(long, alias = "approval-window-secs", env = "SUPPORT_CP_APPROVAL_WINDOW", value_parser = parse_duration_arg)]
    pub approval_window: Option<u64>,
    /// The longest a pending request is kept; each device asks for its own window (24h by default) within this [default: 14d].
    #[arg(long, alias = "max-pending-window-secs", env = "SUPPORT_CP_MAX_PENDING_WINDOW", value_parser = parse_duration_arg)]
    pub max_pending_window: Option<u64>,
    /// How long an ended tunnel's record is kept; its audit records stay [default: 30d].
    #[arg(long, alias = "retention-secs", env = "SUPPORT_CP_RETENTION", value_parser = parse_duration_arg)]
    pub retention: Option<u64>,
    /// How long the record of a tunnel that ended without ever being approved is kept [default: 1h].
    #[arg(long, env = "SUPPORT_CP_UNAPPROVED_RETENTION", value_parser = parse_duration_arg)]
    pub unapproved_retention: Option<u64>,
    /// A pending request whose device has not polled for this long expires; devices poll all the time [default: 30m].
    #[arg(long, env = "SUPPORT_CP_PENDING_HEARTBEAT", value_parser = parse_duration_arg)]
    pub pending_heartbeat: Option<u64>,
    /// The longest tunnel a device may request [default: 30d].
    #[arg(long, alias = "max-duration-secs", env = "SUPPORT_CP_MAX_DURATION", value_parser = parse_duration_arg)]
    pub max_duration: Option<u64>,
    /// Most concurrent connections (long-polls included) [default: 20000].
    #[arg(long, env = "SUPPORT_CP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections one client address holds; IPv6 counts per /64 [default: 1000].
    #[arg(long, env = "SUPPORT_CP_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Most long-polls one client address holds; IPv6 counts per /64 [default: 1000].
    #[arg(long, env = "SUPPORT_CP_MAX_POLLS_PER_ADDRESS")]
    pub max_polls_per_address: Option<usize>,
    /// Most live tunnels at once [default: 50000].
    #[arg(long, env = "SUPPORT_CP_MAX_LIVE_TUNNELS")]
    pub max_live_tunnels: Option<u64>,
    /// Tunnel requests per minute per client address [default: 10].
    #[arg(long, env = "SUPPORT_CP_CREATES_PER_ADDRESS")]
    pub creates_per_minute_per_address: Option<u32>,
    /// Tunnel requests per minute overall [default: 600].
    #[arg(long, env = "SUPPORT_CP_CREATES_PER_MINUTE")]
    pub creates_per_minute: Option<u32>,
    /// A proxy whose X-Forwarded-For header is believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "SUPPORT_CP_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SUPPORT_CP_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// A support CA public key (hex; repeatable): approvals need a certificate it signed, valid now.
    #[arg(
        long = "support-ca-key",
        env = "SUPPORT_CP_SUPPORT_CA_KEYS",
        value_delimiter = ',',
        value_parser = parse_key_arg
    )]
    pub support_ca_keys: Vec<[u8; 32]>,
}

/// What `serve` runs with: each setting from the first of its flag (or
/// environment variable), the config file and its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where `/metrics` is served instead of on `listen`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The data directory.
    pub data: PathBuf,
    /// The service's tunables.
    pub service: ServiceConfig,
    /// The limits on tunnel creates.
    pub creates: CreateLimits,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// The connection cap.
    pub max_connections: usize,
    /// The connection cap of one client address (IPv6: its /64).
    pub max_connections_per_address: usize,
    /// `text` or `json` (checked when logging starts).
    pub log_format: String,
    /// The PostgreSQL store's URL; None for the data directory's redb file.
    pub store: Option<String>,
}

/// The limits on tunnel creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateLimits {
    /// Per client address, per minute.
    pub per_address_per_minute: u32,
    /// How many an address may make at once.
    pub per_address_burst: u32,
    /// Overall, per minute.
    pub per_minute: u32,
}

impl CreateLimits {
    /// A limiter with these limits, its buckets full at `now`.
    pub fn limiter(&self, now: Instant) -> RateLimiter {
        RateLimiter::new(
            self.per_address_per_minute,
            self.per_address_burst,
            self.per_minute,
            now,
        )
    }
}

impl Settings {
    /// Reads the config file `args` names, if any, and resolves.
    pub fn load(args: ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Ok(Self::resolve(args, file))
    }

    /// Flags (and environment), then the file, then the defaults.
    pub fn resolve(args: ServeArgs, file: FileConfig) -> Self {
        let defaults = ServiceConfig::default();
        let per_address = pick(
            args.creates_per_minute_per_address,
            file.creates_per_minute_per_address,
            DEFAULT_CREATES_PER_MINUTE_PER_ADDRESS,
        );
        Settings {
            listen: pick(
                args.listen,
                file.listen,
                SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            ),
            // No default: `/metrics` is then served on `listen`.
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            data: pick(args.data, file.data, PathBuf::from(DEFAULT_DATA)),
            service: ServiceConfig {
                approval_window_secs: pick(
                    args.approval_window,
                    file.approval_window,
                    defaults.approval_window_secs,
                ),
                max_pending_window_secs: pick(
                    args.max_pending_window.map(clamp_u32),
                    file.max_pending_window.map(clamp_u32),
                    defaults.max_pending_window_secs,
                ),
                max_duration_secs: pick(
                    args.max_duration.map(clamp_u32),
                    file.max_duration.map(clamp_u32),
                    defaults.max_duration_secs,
                ),
                max_live_tunnels: pick(
                    args.max_live_tunnels,
                    file.max_live_tunnels,
                    defaults.max_live_tunnels,
                ),
                long_poll_max_secs: defaults.long_poll_max_secs,
                retention_secs: pick(args.retention, file.retention, defaults.retention_secs),
                unapproved_retention_secs: pick(
                    args.unapproved_retention,
                    file.unapproved_retention,
                    defaults.unapproved_retention_secs,
                ),
                pending_heartbeat_secs: pick(
                    args.pending_heartbeat,
                    file.pending_heartbeat,
                    defaults.pending_heartbeat_secs,
                ),
                max_polls_per_address: pick(
                    args.max_polls_per_address,
                    file.max_polls_per_address,
                    defaults.max_polls_per_address,
                ),
                support_ca_keys: pick(
                    Some(args.support_ca_keys).filter(|k| !k.is_empty()),
                    file.support_ca_keys,
                    Vec::new(),
                ),
            },
            creates: CreateLimits {
                per_address_per_minute: per_address,
                per_address_burst: per_address.max(MIN_ADDRESS_BURST),
                per_minute: pick(
                    args.creates_per_minute,
                    file.creates_per_minute,
                    DEFAULT_CREATES_PER_MINUTE,
                ),
            },
            trusted_proxies: pick(
                Some(args.trusted_proxies).filter(|p| !p.is_empty()),
                file.trusted_proxies,
                Vec::new(),
            ),
            max_connections: pick(
                args.max_connections,
                file.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
            max_connections_per_address: pick(
                args.max_connections_per_address,
                file.max_connections_per_address,
                DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            ),
            log_format: pick(
                args.log_format,
                file.log_format,
                DEFAULT_LOG_FORMAT.to_string(),
            ),
            // No default: the redb file in the data directory.
            store: args.store.or(file.store),
        }
    }
}

/// The chain, written once: the flag (or its environment variable), else
/// the file, else the default.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// A setting in seconds that the service keeps as `u32`.
fn clamp_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// The config file's contents; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Where `/metrics` is served instead of `listen` (a private address).
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// A PostgreSQL URL for a store several replicas share.
    pub store: Option<String>,
    /// Unconnected-approval window, seconds.
    #[serde(
        default,
        alias = "approval_window_secs",
        deserialize_with = "duration_secs"
    )]
    pub approval_window: Option<u64>,
    /// The longest a pending request is kept, whatever the device asks, seconds.
    #[serde(
        default,
        alias = "max_pending_window_secs",
        deserialize_with = "duration_secs"
    )]
    pub max_pending_window: Option<u64>,
    /// How long an ended tunnel's record is kept, seconds.
    #[serde(default, alias = "retention_secs", deserialize_with = "duration_secs")]
    pub retention: Option<u64>,
    /// How long a never-approved tunnel's record is kept, seconds.
    #[serde(default, deserialize_with = "duration_secs")]
    pub unapproved_retention: Option<u64>,
    /// How long a pending request lives without a poll, seconds.
    #[serde(default, deserialize_with = "duration_secs")]
    pub pending_heartbeat: Option<u64>,
    /// Longest duration a device may request, seconds.
    #[serde(
        default,
        alias = "max_duration_secs",
        deserialize_with = "duration_secs"
    )]
    pub max_duration: Option<u64>,
    /// Connection cap.
    pub max_connections: Option<usize>,
    /// Connections one client address (IPv6: its /64) may hold.
    pub max_connections_per_address: Option<usize>,
    /// Long-polls one client address (IPv6: its /64) may hold.
    pub max_polls_per_address: Option<usize>,
    /// Cap on live tunnels.
    pub max_live_tunnels: Option<u64>,
    /// Creates per minute per client address.
    pub creates_per_minute_per_address: Option<u32>,
    /// Creates per minute overall.
    pub creates_per_minute: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// The support CA's public keys: approvals must carry a certificate
    /// they signed, valid by this server's clock.
    #[serde(default, deserialize_with = "keys")]
    pub support_ca_keys: Option<Vec<[u8; 32]>>,
}

impl FileConfig {
    /// Reads `path` (a missing file is an error: it was asked for).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

/// A key flag's value: 64 hex digits.
pub fn parse_key_arg(s: &str) -> Result<[u8; 32], String> {
    support_protocol::key_text::parse_key(s).map_err(|e| e.to_string())
}

fn keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<[u8; 32]>>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|k| parse_key_arg(k).map_err(serde::de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A duration flag's value: "24h" or seconds.
pub fn parse_duration_arg(s: &str) -> Result<u64, String> {
    support_protocol::duration_text::parse(s).map(u64::from)
}

fn duration_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Secs(u64),
        Text(String),
    }
    let secs = match Text::deserialize(d)? {
        Text::Secs(0) => {
            return Err(serde::de::Error::custom(
                "a duration of zero is not allowed",
            ))
        }
        Text::Secs(n) => n,
        Text::Text(s) => parse_duration_arg(&s).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(secs))
}

#[cfg(test)]
mod tests {
    use super::FileConfig;

    #[test]
    fn durations_read_as_text_or_seconds_under_either_name() {
        let c: FileConfig = toml::from_str(
            "approval_window = \"90m\"\nmax_pending_window_secs = 120\nretention = \"30d\"\nmax_duration = 3600\n",
        )
        .expect("parses");
        assert_eq!(c.approval_window, Some(5400));
        assert_eq!(c.max_pending_window, Some(120));
        assert_eq!(c.retention, Some(30 * 86400));
        assert_eq!(c.max_duration, Some(3600));
    }

    #[test]
    fn bad_durations_are_refused_with_the_reason() {
        for (text, why) in [
            ("retention = \"3 weeks\"", "unknown unit"),
            ("retention = 0", "zero"),
            ("retention = \"0h\"", "zero"),
            ("retention = -5", "did not match"),
        ] {
            let e = toml::from_str::<FileConfig>(text).expect_err(text);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }
}

#[cfg(test)]
mod example {
    use super::FileConfig;

    /// The packaged example (`dist/control-plane.toml`) names every key and
    /// its values parse: uncommented, every field is set.
    #[test]
    fn the_example_config_documents_every_key_with_a_valid_value() {
        let text = include_str!("../dist/control-plane.toml");
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c: FileConfig = toml::from_str(&uncommented).expect("the example parses");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("None"),
            "a key is missing from the example: {shown}"
        );
    }
}

#[cfg(test)]
mod resolution {
    use super::{
        CreateLimits, FileConfig, ServeArgs, Settings, DEFAULT_CREATES_PER_MINUTE,
        DEFAULT_CREATES_PER_MINUTE_PER_ADDRESS, DEFAULT_DATA, DEFAULT_LOG_FORMAT,
        DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_PORT,
    };
    use crate::service::ServiceConfig;
    use clap::{Args, Parser};
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// Clap reads every `SUPPORT_CP_*` variable at each parse: the tests
    /// that parse or set one take turns.
    static ENV: Mutex<()> = Mutex::new(());

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse")
            .serve
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("the file parses")
    }

    fn defaults() -> Settings {
        Settings::resolve(ServeArgs::default(), FileConfig::default())
    }

    const FILE: &str = r#"
listen = "127.0.0.2:81"
metrics_listen = "127.0.0.2:82"
data = "/from/file"
store = "postgres://cp@file.internal/support"
approval_window = "2h"
max_pending_window = "2d"
retention = "2d"
unapproved_retention = "2h"
pending_heartbeat = "2m"
max_duration = "2h"
max_connections = 2
max_connections_per_address = 2
max_polls_per_address = 2
max_live_tunnels = 2
creates_per_minute_per_address = 20
creates_per_minute = 2
trusted_proxies = ["10.0.0.2"]
log_format = "json"
support_ca_keys = ["0202020202020202020202020202020202020202020202020202020202020202"]
"#;

    const FLAGS: &[&str] = &[
        "--listen=127.0.0.3:91",
        "--metrics-listen=127.0.0.3:92",
        "--data=/from/flag",
        "--store=postgres://cp@flag.internal/support",
        "--approval-window=3h",
        "--max-pending-window=3d",
        "--retention=3d",
        "--unapproved-retention=3h",
        "--pending-heartbeat=3m",
        "--max-duration=3h",
        "--max-connections=3",
        "--max-connections-per-address=3",
        "--max-polls-per-address=3",
        "--max-live-tunnels=3",
        "--creates-per-minute-per-address=30",
        "--creates-per-minute=3",
        "--trusted-proxy=10.0.0.3",
        "--log-format=text",
        "--support-ca-key=0303030303030303030303030303030303030303030303030303030303030303",
    ];

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn nothing_given_means_every_default() {
        assert_eq!(
            defaults(),
            Settings {
                listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
                metrics_listen: None,
                data: PathBuf::from(DEFAULT_DATA),
                service: ServiceConfig::default(),
                creates: CreateLimits {
                    per_address_per_minute: DEFAULT_CREATES_PER_MINUTE_PER_ADDRESS,
                    per_address_burst: DEFAULT_CREATES_PER_MINUTE_PER_ADDRESS,
                    per_minute: DEFAULT_CREATES_PER_MINUTE,
                },
                trusted_proxies: Vec::new(),
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
                log_format: DEFAULT_LOG_FORMAT.to_string(),
                store: None,
            }
        );
    }

    fn from_file() -> Settings {
        let d = ServiceConfig::default();
        Settings {
            listen: addr("127.0.0.2:81"),
            metrics_listen: Some(addr("127.0.0.2:82")),
            data: PathBuf::from("/from/file"),
            service: ServiceConfig {
                approval_window_secs: 2 * 3600,
                max_pending_window_secs: 2 * 86400,
                max_duration_secs: 2 * 3600,
                max_live_tunnels: 2,
                long_poll_max_secs: d.long_poll_max_secs,
                retention_secs: 2 * 86400,
                unapproved_retention_secs: 2 * 3600,
                pending_heartbeat_secs: 2 * 60,
                max_polls_per_address: 2,
                support_ca_keys: vec![[2; 32]],
            },
            creates: CreateLimits {
                per_address_per_minute: 20,
                per_address_burst: 20,
                per_minute: 2,
            },
            trusted_proxies: vec![ip("10.0.0.2")],
            max_connections: 2,
            max_connections_per_address: 2,
            log_format: "json".into(),
            store: Some("postgres://cp@file.internal/support".into()),
        }
    }

    #[test]
    fn the_file_beats_the_defaults() {
        assert_eq!(
            Settings::resolve(ServeArgs::default(), file(FILE)),
            from_file()
        );
    }

    #[test]
    fn a_flag_beats_the_file_and_the_defaults() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let want = Settings {
            listen: addr("127.0.0.3:91"),
            metrics_listen: Some(addr("127.0.0.3:92")),
            data: PathBuf::from("/from/flag"),
            service: ServiceConfig {
                approval_window_secs: 3 * 3600,
                max_pending_window_secs: 3 * 86400,
                max_duration_secs: 3 * 3600,
                max_live_tunnels: 3,
                long_poll_max_secs: ServiceConfig::default().long_poll_max_secs,
                retention_secs: 3 * 86400,
                unapproved_retention_secs: 3 * 3600,
                pending_heartbeat_secs: 3 * 60,
                max_polls_per_address: 3,
                support_ca_keys: vec![[3; 32]],
            },
            creates: CreateLimits {
                per_address_per_minute: 30,
                per_address_burst: 30,
                per_minute: 3,
            },
            trusted_proxies: vec![ip("10.0.0.3")],
            max_connections: 3,
            max_connections_per_address: 3,
            log_format: "text".into(),
            store: Some("postgres://cp@flag.internal/support".into()),
        };
        assert_eq!(Settings::resolve(parse(FLAGS), file(FILE)), want);
        assert_eq!(Settings::resolve(parse(FLAGS), FileConfig::default()), want);
    }

    #[test]
    fn each_setting_falls_through_on_its_own() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        // One flag given: that setting from the flag, the rest from the file.
        let s = Settings::resolve(parse(&["--retention=5m"]), file(FILE));
        let mut want = from_file();
        want.service.retention_secs = 300;
        assert_eq!(s, want);
        // One key in the file: that setting from the file, the rest defaults.
        let s = Settings::resolve(ServeArgs::default(), file("max_connections = 7\n"));
        let mut want = defaults();
        want.max_connections = 7;
        assert_eq!(s, want);
    }

    #[test]
    fn the_environment_beats_the_file() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var("SUPPORT_CP_RETENTION", "4h");
        std::env::set_var("SUPPORT_CP_TRUSTED_PROXIES", "10.0.0.4,10.0.0.5");
        let args = Cli::try_parse_from(["serve"]);
        let flag_too = Cli::try_parse_from(["serve", "--retention=5h"]);
        std::env::remove_var("SUPPORT_CP_RETENTION");
        std::env::remove_var("SUPPORT_CP_TRUSTED_PROXIES");
        let s = Settings::resolve(args.expect("parses").serve, file(FILE));
        assert_eq!(s.service.retention_secs, 4 * 3600);
        assert_eq!(s.trusted_proxies, vec![ip("10.0.0.4"), ip("10.0.0.5")]);
        assert_eq!(s.max_connections, 2, "the rest still from the file");
        // And a flag beats the environment.
        let s = Settings::resolve(flag_too.expect("parses").serve, file(FILE));
        assert_eq!(s.service.retention_secs, 5 * 3600);
    }

    #[test]
    fn an_address_may_always_burst_five_and_long_durations_are_capped() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        // A flag's duration must fit a u32 already; the file's whole seconds need not.
        let s = Settings::resolve(
            parse(&["--creates-per-minute-per-address=2"]),
            file("max_duration = 5000000000\nmax_pending_window = 5000000000\n"),
        );
        assert_eq!(
            (
                s.creates.per_address_per_minute,
                s.creates.per_address_burst
            ),
            (2, 5)
        );
        assert_eq!(s.service.max_duration_secs, u32::MAX);
        assert_eq!(s.service.max_pending_window_secs, u32::MAX);
    }

    #[test]
    fn a_bad_flag_value_is_refused_with_the_reason() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let e = Cli::try_parse_from(["serve", "--retention", "3 weeks"])
            .err()
            .expect("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("unknown unit"), "{e}");
    }

    /// "1h", "14d": the way the help and the example write a duration.
    fn duration(secs: u64) -> String {
        match secs {
            s if s % 86400 == 0 => format!("{}d", s / 86400),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }

    /// Every default as `--help` and the example config state it: (flag's
    /// id, the file's key, the value, whether TOML quotes it).
    fn stated_defaults() -> Vec<(&'static str, String, bool)> {
        let d = defaults();
        vec![
            ("listen", d.listen.to_string(), true),
            ("data", d.data.display().to_string(), true),
            (
                "approval_window",
                duration(d.service.approval_window_secs),
                true,
            ),
            (
                "max_pending_window",
                duration(d.service.max_pending_window_secs.into()),
                true,
            ),
            ("retention", duration(d.service.retention_secs), true),
            (
                "unapproved_retention",
                duration(d.service.unapproved_retention_secs),
                true,
            ),
            (
                "pending_heartbeat",
                duration(d.service.pending_heartbeat_secs),
                true,
            ),
            (
                "max_duration",
                duration(d.service.max_duration_secs.into()),
                true,
            ),
            ("max_connections", d.max_connections.to_string(), false),
            (
                "max_connections_per_address",
                d.max_connections_per_address.to_string(),
                false,
            ),
            (
                "max_polls_per_address",
                d.service.max_polls_per_address.to_string(),
                false,
            ),
            (
                "max_live_tunnels",
                d.service.max_live_tunnels.to_string(),
                false,
            ),
            (
                "creates_per_minute_per_address",
                d.creates.per_address_per_minute.to_string(),
                false,
            ),
            (
                "creates_per_minute",
                d.creates.per_minute.to_string(),
                false,
            ),
            ("log_format", d.log_format, true),
        ]
    }

    #[test]
    fn the_help_states_each_default_as_the_code_has_it() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let stated = stated_defaults();
        let mut seen = 0;
        for arg in cmd.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some((_, rest)) = help.split_once("[default: ") else {
                continue;
            };
            let shown = rest.split(']').next().unwrap_or_default();
            let id = arg.get_id().as_str();
            let (_, value, _) = stated.iter().find(|(k, _, _)| *k == id).unwrap_or_else(|| {
                panic!("--help states a default for {id} the test does not know")
            });
            assert_eq!(shown, value, "--help of {id}");
            seen += 1;
        }
        assert_eq!(seen, stated.len(), "a default is missing from --help");
    }

    #[test]
    fn the_example_config_states_each_default_as_the_code_has_it() {
        let text = include_str!("../dist/control-plane.toml");
        for (key, value, quoted) in stated_defaults() {
            let line = if quoted {
                format!("# {key} = \"{value}\"\n")
            } else {
                format!("# {key} = {value}\n")
            };
            assert!(
                text.contains(&line),
                "dist/control-plane.toml lacks {line:?}"
            );
        }
    }

    #[test]
    fn every_example_config_names_the_default_port() {
        let port = format!(":{DEFAULT_PORT}");
        let agent = include_str!("../../agent/dist/agent.toml");
        let line = agent
            .lines()
            .find(|l| l.starts_with("control_plane ="))
            .expect("the agent example names a control plane");
        assert!(line.contains(&port), "{line}");
        let cp = include_str!("../dist/control-plane.toml");
        assert!(cp.contains(&format!("# listen = \"127.0.0.1{port}\"")));
        let infra = include_str!("../../infra/variables.tf");
        let (_, var) = infra
            .split_once("variable \"control_plane_port\"")
            .expect("infra has the port variable");
        assert!(
            var.contains(&format!("default     = {DEFAULT_PORT}\n")),
            "infra/variables.tf control_plane_port"
        );
    }
}
