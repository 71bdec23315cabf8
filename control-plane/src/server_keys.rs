//! The control plane's static Noise keys, one file each under `DATA/server-keys/`
//! (0600). The newest is current; older ones are still served so agents that
//! pinned them keep working during a rotation, until they are retired.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use support_protocol::control_channel::{ServerKeys, StaticKeypair};

fn dir(data: &Path) -> PathBuf {
    data.join("server-keys")
}

/// One stored key: its number and key pair.
pub struct StoredKey {
    /// Rotation number (higher is newer).
    pub number: u32,
    /// The key pair.
    pub keypair: StaticKeypair,
}

/// Loads every key, newest first; creates the first one if there is none.
pub fn load_or_create(data: &Path) -> Result<Vec<StoredKey>> {
    let keys = load(data)?;
    if !keys.is_empty() {
        return Ok(keys);
    }
    rotate(data)?;
    load(data)
}

/// Loads every key, newest first.
pub fn load(data: &Path) -> Result<Vec<StoredKey>> {
    let d = dir(data);
    let mut out = Vec::new();
    let entries = match fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(number) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let mode = fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others (mode {:o}); it must be 0600",
                path.display(),
                mode & 0o777
            );
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .with_context(|| format!("{} is not a hex key", path.display()))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))?;
        out.push(StoredKey {
            number,
            keypair: StaticKeypair::from_secret(secret),
        });
    }
    out.sort_by_key(|k| std::cmp::Reverse(k.number));
    Ok(out)
}

/// Adds a new current key; returns its public key.
pub fn rotate(data: &Path) -> Result<[u8; 32]> {
    let d = dir(data);
    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
    let next = load(data)?.first().map_or(1, |k| k.number + 1);
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let path = d.join(format!("{next:04}.key"));
    let tmp = d.join(format!(".{next:04}.key.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(hex::encode(secret).as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    fs::File::open(&d)?.sync_all()?;
    Ok(StaticKeypair::from_secret(secret).public)
}

/// Stops serving the key with public key `public` (never the last one).
pub fn retire(data: &Path, public: &[u8; 32]) -> Result<()> {
    let keys = load(data)?;
    if keys.len() <= 1 {
        bail!("refusing to retire the only key");
    }
    let k = keys
        .iter()
        .find(|k| &k.keypair.public == public)
        .context("no served key has that public key")?;
    fs::remove_file(dir(data).join(format!("{:04}.key", k.number)))?;
    Ok(())
}

/// The keys as the channel serves them.
pub fn server_keys(keys: &[StoredKey]) -> ServerKeys {
    ServerKeys::new(keys.iter().map(|k| k.keypair.clone()).collect())
}
