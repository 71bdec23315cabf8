//! What can go wrong, as types: the command layer's [`AdminError`], which
//! wraps each module's own error (the control plane's, the records', the
//! identity's, a session's, SSH's, a hand-off's), and the errors of
//! `approve` ([`ApproveError`], [`Refusal`]). Each prints as one sentence
//! for the engineer, after `support-admin: `; tests match the variants.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use support_protocol::certificate::CertificateError;
use support_protocol::connected_report::ReportError;
use support_protocol::messages::TunnelStateKind;
use support_protocol::one_time_code::CodeError;
use support_protocol::{ApprovalSeq, TunnelId};

use crate::ca::CaError;
use crate::control::ControlPlaneError;
use crate::handoff::HandoffError;
use crate::hub::HubError;
use crate::identity::IdentityError;
use crate::records::{ProviderKind, RecordError};
use crate::secret_file::SecretError;
use crate::session::SessionError;
use crate::settings::SettingsError;
use crate::ssh::SshError;
use crate::ssh_config::SshConfigError;

/// A file or directory that could not be read or written.
#[derive(Debug)]
pub struct FileError {
    /// Which.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

impl FileError {
    /// For `map_err`: the error of an operation on `path`.
    pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.into();
        move |source| FileError { path, source }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum AdminError {
    /// A call to the control plane (or its settings).
    ControlPlane(ControlPlaneError),
    /// A tunnel record on this machine.
    Record(RecordError),
    /// The engineer's keys and certificate.
    Identity(IdentityError),
    /// `admin.toml` and where the engineer's files live.
    Settings(SettingsError),
    /// The support CA's key, or a certificate it cannot issue.
    Ca(CaError),
    /// A passphrase-sealed key file, or the passphrase.
    Secret(SecretError),
    /// `approve` refused before launching anything.
    Refused(Refusal),
    /// `approve` or `wait` failed otherwise.
    Approve(ApproveError),
    /// A hand-off, sending or picking up.
    Handoff(HandoffError),
    /// The tunnel's session: starting it, attaching to it.
    Session(SessionError),
    /// SSH to the device.
    Ssh(SshError),
    /// An OpenSSH config for the tunnels.
    SshConfig(SshConfigError),
    /// The hub provider: launching, deleting or listing hubs.
    Hub(HubError),
    /// Arguments that cannot be honoured (found after clap parsed them).
    Usage(String),
    /// The engineer answered no: what was (not) done.
    Declined(&'static str),
    /// Reading `what` from stdin failed.
    Input {
        /// What was being read ("the code").
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file.
    File(FileError),
    /// This program's own path is unknown (sessions and ssh configs run it).
    Exe(std::io::Error),
    /// The async runtime did not start.
    Runtime(std::io::Error),
    /// `forward` cannot listen on a local port.
    Listen {
        /// The port asked for (0: any).
        port: u16,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ControlPlane(e) => e.fmt(f),
            Self::Record(e) => e.fmt(f),
            Self::Identity(e) => e.fmt(f),
            Self::Settings(e) => e.fmt(f),
            Self::Ca(e) => e.fmt(f),
            Self::Secret(e) => e.fmt(f),
            Self::Refused(e) => e.fmt(f),
            Self::Approve(e) => e.fmt(f),
            Self::Handoff(e) => e.fmt(f),
            Self::Session(e) => e.fmt(f),
            Self::Ssh(e) => e.fmt(f),
            Self::SshConfig(e) => e.fmt(f),
            Self::Hub(e) => e.fmt(f),
            Self::Usage(e) => f.write_str(e),
            Self::Declined(what) => f.write_str(what),
            Self::Input { what, source } => write!(f, "reading {what}: {source}"),
            Self::File(e) => e.fmt(f),
            Self::Exe(e) => write!(f, "cannot find this program's path: {e}"),
            Self::Runtime(e) => e.fmt(f),
            Self::Listen { port, source } => {
                write!(f, "cannot listen on 127.0.0.1:{port}: {source}")
            }
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ControlPlane(e) => Some(e),
            Self::Record(e) => Some(e),
            Self::Identity(e) => Some(e),
            Self::Settings(e) => Some(e),
            Self::Ca(e) => Some(e),
            Self::Secret(e) => Some(e),
            Self::Refused(e) => Some(e),
            Self::Approve(e) => Some(e),
            Self::Handoff(e) => Some(e),
            Self::Session(e) => Some(e),
            Self::Ssh(e) => Some(e),
            Self::SshConfig(e) => Some(e),
            Self::Hub(e) => Some(e),
            Self::File(e) => Some(e),
            Self::Input { source, .. } | Self::Listen { source, .. } => Some(source),
            Self::Exe(e) | Self::Runtime(e) => Some(e),
            Self::Usage(_) | Self::Declined(_) => None,
        }
    }
}

macro_rules! from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for AdminError {
            fn from(e: $ty) -> Self {
                AdminError::$variant(e)
            }
        })*
    };
}

from! {
    ControlPlane(ControlPlaneError),
    Record(RecordError),
    Identity(IdentityError),
    Settings(SettingsError),
    Ca(CaError),
    Secret(SecretError),
    Refused(Refusal),
    Approve(ApproveError),
    Handoff(HandoffError),
    Session(SessionError),
    Ssh(SshError),
    SshConfig(SshConfigError),
    Hub(HubError),
    File(FileError),
}

/// Why `approve` refused before launching anything: the control plane's
/// answer cannot be trusted, the device would refuse our certificate, or
/// no hub can be launched.
#[derive(Debug)]
pub enum Refusal {
    /// The control plane's answer is not trustworthy (why).
    Untrustworthy(&'static str),
    /// The device would refuse the approval under our certificate.
    Certificate {
        /// Why.
        error: CertificateError,
        /// The certificate's validity window (not before, not after).
        valid: (u64, u64),
    },
    /// The provider's pre-flight failed.
    Hub(HubError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REFUSED before launching anything: ")?;
        match self {
            Self::Untrustworthy(why) => {
                write!(f, "the control plane's answer is not trustworthy: {why}")
            }
            Self::Certificate { error, valid } => {
                let time = support_protocol::time_text::format;
                match error {
                    CertificateError::Expired { not_after, .. } => write!(
                        f,
                        "your certificate expired at {}: ask the support CA for a new one",
                        time(*not_after)
                    ),
                    CertificateError::IssuedOutsideValidity { .. } => write!(
                        f,
                        "your certificate is valid only from {} to {}",
                        time(valid.0),
                        time(valid.1)
                    ),
                    CertificateError::WrongRole { certified, .. } => write!(
                        f,
                        "your certificate is for the {certified:?} role, which may not approve"
                    ),
                    other => write!(f, "your certificate is not valid: {other}"),
                }?;
                f.write_str("; the request stays approvable by someone whose certificate is valid")
            }
            Self::Hub(e) => write!(f, "the hub cannot be launched: {e}"),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Certificate { error, .. } => Some(error),
            Self::Hub(e) => Some(e),
            Self::Untrustworthy(_) => None,
        }
    }
}

/// Why `approve` or `wait` failed, other than a [`Refusal`].
#[derive(Debug)]
pub enum ApproveError {
    /// No code was given.
    NoCode,
    /// The code does not parse (mistyped, cut off).
    Code(CodeError),
    /// `--duration` asks for more than the device requested.
    Lengthened {
        /// The requested duration.
        requested_secs: u32,
    },
    /// `--ports` names a port the device did not request.
    PortNotRequested {
        /// The port.
        port: u16,
        /// The requested ones.
        requested: Vec<u16>,
    },
    /// Another engineer approved the tunnel.
    ApprovedByAnother {
        /// The tunnel.
        id: TunnelId,
        /// Their approval.
        seq: ApprovalSeq,
    },
    /// This machine approved the tunnel with another provider.
    OtherProvider {
        /// The tunnel.
        id: TunnelId,
        /// The provider of the hub it has.
        provider: ProviderKind,
    },
    /// The tunnel has our hub already.
    HasHub {
        /// The tunnel.
        id: TunnelId,
        /// The hub's address.
        endpoint: SocketAddr,
        /// Our approval.
        seq: ApprovalSeq,
    },
    /// No approval number is left.
    TooManyApprovals,
    /// The tunnel's state allows no approval.
    NotApprovable {
        /// The tunnel.
        id: TunnelId,
        /// Its state.
        state: TunnelStateKind,
    },
    /// Posting the approval failed; the hub was deleted.
    NotPosted(ControlPlaneError),
    /// The device did not connect in time.
    NotConnected {
        /// The tunnel.
        id: TunnelId,
        /// How long we waited.
        waited: Duration,
    },
    /// The tunnel ended before the device connected.
    Ended {
        /// Its state.
        state: TunnelStateKind,
        /// The device's reason, in words, if the audit has it.
        reason: Option<String>,
    },
    /// The tunnel is connected but the control plane shows no report.
    NoReport,
    /// The device's connected report does not open.
    Report(ReportError),
}

impl fmt::Display for ApproveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use support_protocol::duration_text;
        match self {
            Self::NoCode => f.write_str("no code given (pass it, type it, or pipe it on stdin)"),
            Self::Code(e) => e.fmt(f),
            Self::Lengthened { requested_secs } => write!(
                f,
                "--duration may shorten the request ({}), never lengthen it",
                duration_text::format(u64::from(*requested_secs))
            ),
            Self::PortNotRequested { port, requested } => write!(
                f,
                "port {port} was not requested (requested: {requested:?})"
            ),
            Self::ApprovedByAnother { id, seq } => write!(
                f,
                "tunnel {id} is already approved (approval {seq}) by another engineer; \
                 nothing was launched"
            ),
            Self::OtherProvider { id, provider } => write!(
                f,
                "you approved tunnel {id} with a {provider} hub; approve again with --provider {provider} \
                 (or support-admin stop {id} first)"
            ),
            Self::HasHub { id, endpoint, seq } => write!(
                f,
                "tunnel {id} already has your hub ({endpoint}, approval {seq}); nothing was launched: \
                 support-admin wait {id} waits for the device, support-admin stop {id} withdraws it"
            ),
            Self::TooManyApprovals => f.write_str("too many approvals for this tunnel"),
            Self::NotApprovable { id, state } => write!(
                f,
                "tunnel {id} is {}; only a pending tunnel (or one whose hub is gone before it connected) can be approved",
                state.name()
            ),
            Self::NotPosted(e) => write!(f, "{e}; the hub was deleted"),
            Self::NotConnected { id, waited } => write!(
                f,
                "the device did not connect within {} s; the approval stays posted (support-admin wait {id} waits again; support-admin stop {id} withdraws it)",
                waited.as_secs()
            ),
            Self::Ended {
                reason: Some(why), ..
            } => write!(f, "the tunnel ended before connecting: the device {why}"),
            Self::Ended { state, reason: None } => write!(
                f,
                "the tunnel ended before connecting ({})",
                state.name()
            ),
            Self::NoReport => f.write_str("the control plane shows no connected report"),
            Self::Report(e) => write!(f, "the device's connected report does not open: {e}"),
        }
    }
}

impl std::error::Error for ApproveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Code(e) => Some(e),
            Self::NotPosted(e) => Some(e),
            Self::Report(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_refused_once() {
        for r in [
            Refusal::Untrustworthy("it answered with another tunnel's request"),
            Refusal::Certificate {
                error: CertificateError::UnknownIssuer,
                valid: (0, 1),
            },
            Refusal::Hub(HubError::RelayNotFound),
        ] {
            let text = AdminError::from(r).to_string();
            assert!(
                text.starts_with("REFUSED before launching anything: "),
                "{text}"
            );
            assert_eq!(text.to_lowercase().matches("refused").count(), 1, "{text}");
        }
    }

    #[test]
    fn a_certificate_refusal_says_what_to_do() {
        use support_protocol::certificate::Role;
        let refusal = |error| {
            Refusal::Certificate {
                error,
                valid: (0, 86400),
            }
            .to_string()
        };
        let expired = refusal(CertificateError::Expired {
            not_after: 86400,
            time_floor: 90000,
        });
        assert!(
            expired.starts_with(
                "REFUSED before launching anything: your certificate expired at 1970-01-02"
            ),
            "{expired}"
        );
        assert!(
            expired
                .ends_with("; the request stays approvable by someone whose certificate is valid"),
            "{expired}"
        );
        let viewer = refusal(CertificateError::WrongRole {
            required: Role::Approver,
            certified: Role::Viewer,
        });
        assert!(
            viewer.contains("your certificate is for the Viewer role, which may not approve"),
            "{viewer}"
        );
    }

    #[test]
    fn states_are_named_by_their_one_name() {
        let e = ApproveError::NotApprovable {
            id: TunnelId(1),
            state: TunnelStateKind::Stopped,
        };
        assert!(
            e.to_string()
                .starts_with("tunnel 0000000000000001 is stopped; "),
            "{e}"
        );
        let e = ApproveError::Ended {
            state: TunnelStateKind::Expired,
            reason: None,
        };
        assert_eq!(
            e.to_string(),
            "the tunnel ended before connecting (expired)"
        );
    }

    #[test]
    fn a_file_error_names_the_file() {
        let e = FileError::at("/x/y")(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/x/y: "), "{e}");
    }

    #[test]
    fn the_wrapped_error_is_the_source() {
        use std::error::Error as _;
        let e = AdminError::from(FileError::at("/x/y")(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
        let file = e
            .source()
            .and_then(|s| s.downcast_ref::<FileError>())
            .expect("the file error");
        assert_eq!(file.path, PathBuf::from("/x/y"));
        let io = file
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the OS error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

        let e = AdminError::from(Refusal::Hub(HubError::RelayNotFound));
        assert!(
            matches!(
                e.source().and_then(|s| s.downcast_ref::<Refusal>()),
                Some(Refusal::Hub(HubError::RelayNotFound))
            ),
            "{e:?}"
        );
        assert!(AdminError::Usage("x".into()).source().is_none());
        assert!(AdminError::Declined("nothing was done").source().is_none());
    }
}
