//! Hand-off: `support-admin handoff ID --to NAME` gives a live tunnel to
//! another enrolled, certified engineer; `support-admin handoffs` lists what
//! waits for you (and publishes your hand-off key), `support-admin pickup
//! ID` takes it.
//!
//! The control plane is only the mailbox (`protocol::handoff`): the package
//! is sealed to the receiver's enrolled X25519 key, which the receiver signed
//! with their CA-certified approver key (so a control plane cannot answer
//! the lookup with a key of its own), and it is signed by the sender's
//! certified key with the sender's certificate. Both sides check the other's
//! certificate against the CA their own certificate pins.
//!
//! Order on the sender's side: check our certificate and the receiver's
//! key, seal, post; only once the control plane confirmed: end the session,
//! note the hand-off, wipe the secrets. On the receiver's side: fetch,
//! verify and open, check the record is for that tunnel, save it like
//! approve does, then tell the control plane to delete the package.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use support_protocol::bounded::{BoundError, BoundedString};
use support_protocol::certificate::{ApproverCertificate, CertificateError};
use support_protocol::handoff::{
    seal_handoff, HandoffError as SealError, HandoffKey, HandoffPackage, HandoffSender,
};
use support_protocol::messages::admin::{AdminInfo, HandoffPost, HandoffSummary};
use support_protocol::messages::{AdminRequest, AdminResponse, ErrorCode, TunnelStateKind};
use support_protocol::TunnelId;
use zeroize::Zeroizing;

use crate::ca::now;
use crate::control::{ControlPlane, ControlPlaneError};
use crate::error::AdminError;
use crate::identity::Identity;
use crate::records::{id_text, AdminTunnel, Records};
use crate::secret_file::random;
use crate::session;

/// Why a hand-off was not sent, or not taken.
#[derive(Debug)]
pub enum HandoffError {
    /// The receiver's name cannot be a name.
    NotAName {
        /// The name given.
        to: String,
        /// Why not.
        error: BoundError,
    },
    /// Nobody of that name is enrolled.
    NotEnrolled(String),
    /// The receiver is a viewer.
    Viewer(String),
    /// The receiver has not published a hand-off key.
    NoKey(String),
    /// The control plane's hand-off key is not the receiver's enrolled key.
    Inconsistent(String),
    /// The receiver's hand-off key does not verify.
    UntrustedKey {
        /// The receiver.
        to: String,
        /// Why.
        error: SealError,
    },
    /// Our certificate would not be accepted by a receiver.
    MyCertificate(CertificateError),
    /// Sealing the package failed.
    Seal(SealError),
    /// The serialized record.
    Encode(serde_json::Error),
    /// Posting failed; nothing was wiped.
    NotSent(ControlPlaneError),
    /// The package does not open or verify.
    Unopenable {
        /// The tunnel.
        id: TunnelId,
        /// Why.
        error: SealError,
    },
    /// The package opened but the record in it does not parse.
    DamagedRecord {
        /// The tunnel.
        id: TunnelId,
        /// The sender.
        from: String,
    },
    /// The record in the package is about another tunnel.
    AnotherTunnel {
        /// The tunnel.
        id: TunnelId,
        /// The sender.
        from: String,
    },
    /// The tunnel has ended.
    Ended {
        /// The tunnel.
        id: TunnelId,
        /// Its state.
        state: TunnelStateKind,
    },
    /// A prefix matches no waiting hand-off.
    NoneWaiting(String),
    /// A prefix matches several waiting hand-offs.
    Ambiguous(String),
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAName { to, error } => write!(f, "'{to}' is not a name: {error}"),
            Self::NotEnrolled(to) => write!(
                f,
                "nobody named '{to}' is enrolled at the control plane; `support-admin audit` lists who was enrolled (admin_added)"
            ),
            Self::Viewer(to) => write!(f, "{to} is enrolled as a viewer and cannot take a tunnel"),
            Self::NoKey(to) => write!(
                f,
                "{to} is enrolled but has not published a hand-off key yet: they run `support-admin handoffs` once (it publishes it), then hand off again"
            ),
            Self::Inconsistent(to) => write!(
                f,
                "the control plane's answer for {to} is inconsistent (the hand-off key is not their enrolled key); nothing was sent"
            ),
            Self::UntrustedKey { to, error } => write!(
                f,
                "REFUSED: {to}'s hand-off key is not trustworthy ({error}); nothing was sent or wiped"
            ),
            Self::MyCertificate(e) => {
                write!(f, "your certificate cannot be used for hand-offs: {e}")
            }
            Self::Seal(e) => e.fmt(f),
            Self::Encode(e) => e.fmt(f),
            Self::NotSent(e) => write!(f, "{e}; nothing was wiped, the tunnel stays yours"),
            Self::Unopenable { id, error } => write!(
                f,
                "REFUSED the hand-off of tunnel {id}: {error}; nothing was stored"
            ),
            Self::DamagedRecord { id, from } => write!(
                f,
                "REFUSED the hand-off of tunnel {id}: the signed record from {from} is damaged"
            ),
            Self::AnotherTunnel { id, from } => write!(
                f,
                "REFUSED the hand-off of tunnel {id}: {from}'s record is about another tunnel"
            ),
            Self::Ended { id, state } => write!(
                f,
                "tunnel {id} has ended ({}); there is nothing to pick up",
                state.name()
            ),
            Self::NoneWaiting(id) => write!(
                f,
                "no hand-off of a tunnel {id} waits for you (support-admin handoffs lists them)"
            ),
            Self::Ambiguous(id) => write!(f, "{id} matches several hand-offs; give more digits"),
        }
    }
}

impl std::error::Error for HandoffError {}

/// What stays on the sender's machine after a hand-off: nothing secret, only
/// enough for `connect` and `list` to say where the tunnel went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandedOff {
    /// The tunnel.
    #[serde(with = "id_text")]
    pub id: TunnelId,
    /// The receiver's name.
    pub to: String,
    /// When (wall clock, Unix seconds).
    pub at: u64,
}

impl HandedOff {
    /// "handed off to NAME at TIME".
    pub fn describe(&self) -> String {
        format!(
            "tunnel {} was handed off to {} at {}; only {} can connect now (their `support-admin pickup {}`)",
            self.id,
            self.to,
            support_protocol::time_text::format(self.at),
            self.to,
            self.id
        )
    }
}

/// The certificate we sign with, if a receiver would accept it now: for our
/// approver key, from its issuer, approver role, inside its window.
fn my_certificate(me: &Identity) -> Result<ApproverCertificate, AdminError> {
    let cert = me.my_certificate()?;
    crate::identity::usable_now(&cert, now()).map_err(HandoffError::MyCertificate)?;
    Ok(cert)
}

/// Publishes our signed hand-off key, so others can hand tunnels to us.
pub fn publish_key(cp: &ControlPlane, me: &Identity) -> Result<(), AdminError> {
    let cert = my_certificate(me)?;
    let key = HandoffKey::sign(me.control_plane.public, &me.approver, &cert);
    match cp.call(AdminRequest::PublishHandoffKey(Box::new(key)))? {
        AdminResponse::HandoffKeyPublished => Ok(()),
        other => Err(ControlPlaneError::unexpected(other).into()),
    }
}

/// The receiver's hand-off key, verified as the sender must: a certificate
/// from the CA ours pins, approver role, valid now, naming `to`, signing the
/// receiver's enrolled key.
fn receiver_key(
    cp: &ControlPlane,
    pinned: &[[u8; 32]],
    to: &str,
) -> Result<HandoffKey, AdminError> {
    let name = BoundedString::<64>::new(to).map_err(|error| HandoffError::NotAName {
        to: to.to_string(),
        error,
    })?;
    let info: AdminInfo = match cp.call(AdminRequest::LookupAdmin(name)) {
        Ok(AdminResponse::AdminInfo(i)) => *i,
        Ok(other) => return Err(ControlPlaneError::unexpected(other).into()),
        Err(e) if e.is_refusal(ErrorCode::NotFound) => {
            return Err(HandoffError::NotEnrolled(to.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    if !info.approver {
        return Err(HandoffError::Viewer(to.to_string()).into());
    }
    let key = info
        .handoff_key
        .ok_or_else(|| HandoffError::NoKey(to.to_string()))?;
    if key.key.0 != info.key.0 {
        return Err(HandoffError::Inconsistent(to.to_string()).into());
    }
    key.verify(pinned, now(), to)
        .map_err(|error| HandoffError::UntrustedKey {
            to: to.to_string(),
            error,
        })?;
    Ok(key)
}

/// `handoff ID --to NAME`: seals the record to NAME, posts it, and then
/// (only then) wipes it here. Returns the note left behind.
pub fn handoff(
    cp: &ControlPlane,
    me: &Identity,
    records: &Records,
    rec: &AdminTunnel,
    to: &str,
) -> Result<HandedOff, AdminError> {
    let cert = my_certificate(me)?;
    let id = rec.id;
    let key = receiver_key(cp, &[cert.body.issuer.0], to)?;
    let secrets = Zeroizing::new(serde_json::to_vec(rec).map_err(HandoffError::Encode)?);
    let package = seal_handoff(
        id,
        &secrets,
        &key,
        &HandoffSender {
            key: &me.approver,
            certificate: &cert,
        },
        random(),
        random(),
        now(),
    )
    .map_err(HandoffError::Seal)?;
    let to_name = key.certificate.body.name.clone();
    match cp.call(AdminRequest::Handoff(Box::new(HandoffPost {
        to: to_name,
        package,
    }))) {
        Ok(AdminResponse::HandedOff) => {}
        Ok(other) => return Err(HandoffError::NotSent(ControlPlaneError::unexpected(other)).into()),
        Err(e) => return Err(HandoffError::NotSent(e).into()),
    }
    // Confirmed: from here on the tunnel is the receiver's.
    end_session(records, rec.id);
    let note = HandedOff {
        id: rec.id,
        to: to.to_string(),
        at: now(),
    };
    records.note_handed_off(&note)?;
    records.wipe(rec.id);
    Ok(note)
}

/// Ends the tunnel's session and waits (briefly) until it stopped listening,
/// so the receiver's peer does not take turns with ours at the relay.
fn end_session(records: &Records, id: TunnelId) {
    session::quit(records, id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while session::running(records, id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hand-offs waiting for us.
pub fn waiting(cp: &ControlPlane) -> Result<Vec<HandoffSummary>, ControlPlaneError> {
    match cp.call(AdminRequest::ListHandoffs)? {
        AdminResponse::Handoffs(l) => Ok(l.into_inner()),
        other => Err(ControlPlaneError::unexpected(other)),
    }
}

/// The waiting hand-off whose tunnel id starts with `prefix`.
pub fn find_waiting(cp: &ControlPlane, prefix: &str) -> Result<TunnelId, AdminError> {
    let waiting = waiting(cp)?;
    let found: Vec<_> = waiting
        .iter()
        .filter(|h| h.tunnel_id.to_string().starts_with(prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.tunnel_id),
        [] => Err(HandoffError::NoneWaiting(prefix.to_string()).into()),
        _ => Err(HandoffError::Ambiguous(prefix.to_string()).into()),
    }
}

/// `pickup ID`: fetch, verify, open, check, save; then delete the package.
pub fn pickup(
    cp: &ControlPlane,
    me: &Identity,
    records: &Records,
    id: TunnelId,
) -> Result<(AdminTunnel, String), AdminError> {
    let mine = my_certificate(me)?;
    let package: HandoffPackage = match cp.call(AdminRequest::FetchHandoff(id))? {
        AdminResponse::Handoff(p) => *p,
        other => return Err(ControlPlaneError::unexpected(other).into()),
    };
    let secrets = package
        .open(id, &[mine.body.issuer.0], now(), me.control_plane.secret())
        .map_err(|error| HandoffError::Unopenable { id, error })?;
    let from = package.header.from.body.name.as_str().to_string();
    let Ok(rec) = serde_json::from_slice::<AdminTunnel>(&secrets) else {
        return Err(HandoffError::DamagedRecord { id, from }.into());
    };
    let request = rec.request()?;
    if rec.id != id || request.body.tunnel_id != id {
        return Err(HandoffError::AnotherTunnel { id, from }.into());
    }
    let detail = cp.show(id)?;
    let state = detail.summary.state.kind();
    if state.is_terminal() {
        return Err(HandoffError::Ended { id, state }.into());
    }
    records.save(&rec)?;
    records.forget_handed_off(rec.id);
    match cp.call(AdminRequest::PickedUp(id))? {
        AdminResponse::PickedUp => {}
        other => return Err(ControlPlaneError::unexpected(other).into()),
    }
    Ok((rec, from))
}
