//! Operator commands (`admins add|list|remove`, `audit verify`, `backup`,
//! `keys rotate|retire`). While the server runs, the store file is locked by
//! it, so the CLI sends the command over `DATA/operator.sock` (0600, owner
//! only) and the running server carries it out at once; otherwise the CLI
//! opens the store itself. Either way the same [`execute`] runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use support_protocol::audit::Actor;
use support_protocol::control_channel::ServerKeys;

use crate::server_keys;
use crate::service::unix_now;
use crate::store::{AdminRecord, AdminRole, Store};

/// A command for the store's owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Enroll (or re-key) an admin.
    AdminsAdd {
        /// Name.
        name: String,
        /// Hex public key.
        key: String,
        /// Role.
        role: AdminRole,
    },
    /// List admins.
    AdminsList,
    /// Remove an admin.
    AdminsRemove {
        /// Name.
        name: String,
    },
    /// Check the audit chain.
    AuditVerify,
    /// Write a consistent copy of the store.
    Backup {
        /// Where.
        out: PathBuf,
    },
    /// Re-read the server keys (after a rotation or retirement).
    ReloadKeys,
}

/// The answer: text for the operator, or an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// Success?
    pub ok: bool,
    /// What to print.
    pub text: String,
}

/// The socket's path.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("operator.sock")
}

/// Parses a hex public key (the protocol's one parser, [`support_protocol::key_text`]).
pub fn parse_key(hex_key: &str) -> Result<[u8; 32]> {
    support_protocol::key_text::parse_key(hex_key).map_err(anyhow::Error::new)
}

/// Carries out `cmd` against `store` (and, for key reloads, the served keys).
pub fn execute(
    store: &dyn Store,
    data: &Path,
    keys: Option<&RwLock<Arc<ServerKeys>>>,
    cmd: &Command,
) -> Result<String> {
    let operator = Actor::System;
    match cmd {
        Command::AdminsAdd { name, key, role } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                bail!("an admin name is 1 to 64 printable characters");
            }
            let key = parse_key(key)?;
            store.put_admin(
                &AdminRecord {
                    name: name.clone(),
                    key,
                    role: *role,
                },
                operator,
                unix_now(),
            )?;
            Ok(format!("enrolled {name} as {role:?}"))
        }
        Command::AdminsList => {
            let mut out = String::new();
            for a in store.admins()? {
                out.push_str(&format!(
                    "{}\t{:?}\t{}\n",
                    a.name,
                    a.role,
                    hex::encode(a.key)
                ));
            }
            Ok(out)
        }
        Command::AdminsRemove { name } => {
            if store.remove_admin(name, operator, unix_now())? {
                Ok(format!("removed {name}; its key is refused from now on"))
            } else {
                bail!("no admin named {name}")
            }
        }
        Command::AuditVerify => match store.verify_audit()? {
            Ok(n) => Ok(format!("audit chain intact: {n} records")),
            Err(b) => bail!("{b}"),
        },
        Command::Backup { out } => {
            store.backup(out)?;
            Ok(format!("consistent copy written to {}", out.display()))
        }
        Command::ReloadKeys => {
            let loaded = server_keys::load(data)?;
            if loaded.is_empty() {
                bail!("no server keys found");
            }
            if let Some(k) = keys {
                *k.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(server_keys::server_keys(&loaded));
            }
            Ok(format!("serving {} key(s)", loaded.len()))
        }
    }
}

/// Sends `cmd` to a running server; `Ok(None)` if none is running.
pub fn send(data: &Path, cmd: &Command) -> Result<Option<Answer>> {
    let path = socket_path(data);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    let mut line = serde_json::to_string(cmd)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(Some(
        serde_json::from_str(&answer).context("the server's operator answer is malformed")?,
    ))
}

/// Serves the operator socket until the task is dropped.
pub async fn listen(
    data: PathBuf,
    store: Arc<dyn Store>,
    keys: Arc<RwLock<Arc<ServerKeys>>>,
) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let path = socket_path(&data);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (store, keys, data) = (store.clone(), keys.clone(), data.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(r).take(64 * 1024);
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let answer = match serde_json::from_str::<Command>(&line) {
                    Err(e) => Answer {
                        ok: false,
                        text: format!("malformed command: {e}"),
                    },
                    Ok(cmd) => {
                        tracing::info!(command = ?cmd, "operator command");
                        let result = tokio::task::spawn_blocking(move || {
                            execute(store.as_ref(), &data, Some(&keys), &cmd)
                        })
                        .await;
                        match result {
                            Ok(Ok(text)) => Answer { ok: true, text },
                            Ok(Err(e)) => Answer {
                                ok: false,
                                text: format!("{e:#}"),
                            },
                            Err(e) => Answer {
                                ok: false,
                                text: e.to_string(),
                            },
                        }
                    }
                };
                if let Ok(mut s) = serde_json::to_string(&answer) {
                    s.push('\n');
                    let _ = w.write_all(s.as_bytes()).await;
                }
            });
        }
    }))
}
