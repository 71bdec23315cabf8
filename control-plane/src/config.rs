//! `serve` settings: flags, then `SUPPORT_CP_*` environment variables (both
//! through clap), then the TOML config file, then defaults.
//!
//! Durations are written as people type them ("90m", "24h", "14d") or as
//! whole seconds, in the file and on the command line alike; the older
//! `*_secs` key names are still read.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

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
    /// Longest duration a device may request, seconds.
    #[serde(
        default,
        alias = "max_duration_secs",
        deserialize_with = "duration_secs"
    )]
    pub max_duration: Option<u64>,
    /// Connection cap.
    pub max_connections: Option<usize>,
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
}

impl FileConfig {
    /// Reads `path` (a missing file is an error: it was asked for).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
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
