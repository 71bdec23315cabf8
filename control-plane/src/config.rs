//! `serve` settings: flags, then `SUPPORT_CP_*` environment variables (both
//! through clap), then the TOML config file, then defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The config file's contents; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// Unconnected-approval window, seconds.
    pub approval_window_secs: Option<u64>,
    /// The longest a pending request is kept, whatever the device asks, seconds.
    pub max_pending_window_secs: Option<u32>,
    /// How long an ended tunnel's record is kept, seconds.
    pub retention_secs: Option<u64>,
    /// Longest duration a device may request, seconds.
    pub max_duration_secs: Option<u32>,
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
