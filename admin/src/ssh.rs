//! SSH to the device over the admin's userspace peer (russh over the
//! engine's stream). The host key must be one the device sealed into its
//! connected report; anything else aborts before authentication.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::ChannelMsg;
use support_protocol::TunnelId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::AdminError;
use crate::records::AdminTunnel;

/// Why SSH to the device failed.
#[derive(Debug)]
pub enum SshError {
    /// The device has not sealed its host keys yet (it has not connected).
    NoHostKey(TunnelId),
    /// Nothing answered over the tunnel in time.
    DeviceSilent,
    /// The host key is not one the device sealed: refused before authenticating.
    HostKeyMismatch,
    /// The SSH handshake failed.
    Failed(russh::Error),
    /// Authentication failed to run.
    Authentication(russh::Error),
    /// The device refused our key.
    KeyRefused,
    /// No session channel.
    OpenSession(russh::Error),
    /// The command could not be started.
    Exec(russh::Error),
    /// No pseudo-terminal.
    Pty(russh::Error),
    /// No shell.
    Shell(russh::Error),
    /// Window-size changes cannot be followed.
    Signals(std::io::Error),
    /// The connection ended before the remote side reported an exit code.
    NoExitCode,
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHostKey(id) => write!(
                f,
                "no host key is known for tunnel {id}: the device has not reported connected yet (run approve again to wait)"
            ),
            Self::DeviceSilent => f.write_str(
                "the device did not answer over the tunnel within 30 s (is the tunnel still up? see support-admin show)",
            ),
            Self::HostKeyMismatch => f.write_str(
                "ABORTED: the device's SSH host key is not one it sealed in its connected report; someone is in the middle, or sshd's keys changed",
            ),
            Self::Failed(e) => write!(f, "SSH to the device failed: {e}"),
            Self::Authentication(e) => write!(f, "SSH authentication failed: {e}"),
            Self::KeyRefused => f.write_str(
                "the device refused the key: the tunnel has ended or expired (support-admin show)",
            ),
            Self::OpenSession(e) => write!(f, "cannot open a session: {e}"),
            Self::Exec(e) => write!(f, "cannot run the command: {e}"),
            Self::Pty(e) => write!(f, "cannot get a terminal on the device: {e}"),
            Self::Shell(e) => write!(f, "cannot start a shell: {e}"),
            Self::Signals(e) => e.fmt(f),
            Self::NoExitCode => {
                f.write_str("the connection ended before the command reported an exit code")
            }
        }
    }
}

impl std::error::Error for SshError {}

/// Checks the server's key against the sealed ones.
pub struct Pinned {
    keys: Vec<PublicKey>,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.keys.iter().any(|k| k.key_data() == key.key_data())
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }
}

/// The admin's per-tunnel SSH key.
pub fn private_key(rec: &AdminTunnel) -> Result<PrivateKey, AdminError> {
    let keys = rec.keys()?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(
        &keys.ssh_key_seed(),
    )))
}

/// The host keys the device sealed, parsed.
pub fn pinned_keys(rec: &AdminTunnel) -> Result<Vec<PublicKey>, SshError> {
    let keys: Vec<PublicKey> = rec
        .host_keys
        .iter()
        .filter_map(|l| PublicKey::from_openssh(l).ok())
        .collect();
    if keys.is_empty() {
        return Err(SshError::NoHostKey(rec.id));
    }
    Ok(keys)
}

/// Opens an authenticated SSH session over `stream` (a connection to the
/// device's port 22 through the tunnel).
pub async fn session<S>(rec: &AdminTunnel, stream: S) -> Result<Handle<Pinned>, AdminError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mismatch = Arc::new(AtomicBool::new(false));
    let handler = Pinned {
        keys: pinned_keys(rec)?,
        mismatch: mismatch.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    });
    let connect = client::connect_stream(config, stream, handler);
    let mut handle = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Err(_) => return Err(SshError::DeviceSilent.into()),
        Ok(Err(_)) if mismatch.load(Ordering::SeqCst) => {
            return Err(SshError::HostKeyMismatch.into())
        }
        Ok(Err(e)) => return Err(SshError::Failed(e).into()),
        Ok(Ok(h)) => h,
    };
    let key = PrivateKeyWithHashAlg::new(Arc::new(private_key(rec)?), None);
    let auth = handle
        .authenticate_publickey(rec.user(), key)
        .await
        .map_err(SshError::Authentication)?;
    if !auth.success() {
        return Err(SshError::KeyRefused.into());
    }
    Ok(handle)
}

/// Runs `command`; stdout and stderr stream separately; returns the exit code.
pub async fn exec(handle: &Handle<Pinned>, command: &str) -> Result<u32, SshError> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(SshError::OpenSession)?;
    channel.exec(true, command).await.map_err(SshError::Exec)?;
    // Local stdin goes to the command unless it is a terminal (use connect for that).
    let (input_tx, mut input_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(4);
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = input_tx.send(None).await;
                        return;
                    }
                    Ok(n) => {
                        if input_tx.send(Some(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(input_tx);
    }
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut code = None;
    let mut input_open = true;
    loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let _ = out.write_all(&data).await;
                    let _ = out.flush().await;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let _ = err.write_all(&data).await;
                    let _ = err.flush().await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    eprintln!("support-admin: the remote command died of signal {signal_name:?}");
                    code = Some(255);
                }
                // The channel's last message; the session may stay open.
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            data = input_rx.recv(), if input_open => match data {
                Some(Some(bytes)) => {
                    let _ = channel.data(&bytes[..]).await;
                }
                _ => {
                    input_open = false;
                    let _ = channel.eof().await;
                }
            },
        }
    }
    code.ok_or(SshError::NoExitCode)
}

/// An interactive shell with a pseudo-terminal: raw local terminal, window
/// resizes forwarded, the remote exit code returned.
pub async fn shell(handle: &Handle<Pinned>) -> Result<u32, SshError> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(SshError::OpenSession)?;
    let (cols, rows) = crate::term::size();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    channel
        .request_pty(true, &term, cols, rows, 0, 0, &[])
        .await
        .map_err(SshError::Pty)?;
    channel.request_shell(true).await.map_err(SshError::Shell)?;
    let _raw = crate::term::RawMode::enable();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(SshError::Signals)?;
    let mut stdin = tokio::io::stdin();
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 4096];
    let mut code = None;
    let mut input_open = true;
    loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let _ = out.write_all(&data).await;
                    let _ = out.flush().await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status),
                Some(ChannelMsg::ExitSignal { .. }) => code = Some(255),
                // The channel's last message; the session may stay open.
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            n = stdin.read(&mut buf), if input_open => match n {
                Ok(0) | Err(_) => {
                    input_open = false;
                    let _ = channel.eof().await;
                }
                Ok(n) => {
                    let _ = channel.data(&buf[..n]).await;
                }
            },
            _ = winch.recv() => {
                let (c, r) = crate::term::size();
                let _ = channel.window_change(c, r, 0, 0).await;
            }
        }
    }
    code.ok_or(SshError::NoExitCode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_without_sealed_host_keys_has_none_to_pin() {
        let mut rec = crate::records::tests::fixture(TunnelId(5));
        assert!(matches!(pinned_keys(&rec), Err(SshError::NoHostKey(id)) if id == TunnelId(5)));
        // A line that is not an OpenSSH key pins nothing either.
        rec.host_keys = vec!["ssh-ed25519 not-base64".into()];
        assert!(matches!(pinned_keys(&rec), Err(SshError::NoHostKey(_))));
        let host = PrivateKey::from(Ed25519Keypair::from_seed(&[3; 32]));
        rec.host_keys = vec![host.public_key().to_openssh().expect("openssh")];
        assert_eq!(pinned_keys(&rec).expect("one").len(), 1);
    }
}
