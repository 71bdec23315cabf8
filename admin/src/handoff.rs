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

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use support_protocol::bounded::BoundedString;
use support_protocol::certificate::{ApproverCertificate, Role};
use support_protocol::handoff::{seal_handoff, HandoffKey, HandoffPackage, HandoffSender};
use support_protocol::messages::admin::{AdminInfo, HandoffPost, HandoffSummary};
use support_protocol::messages::{AdminRequest, AdminResponse};
use support_protocol::TunnelId;
use zeroize::Zeroizing;

use crate::ca::now;
use crate::control::ControlPlane;
use crate::identity::Identity;
use crate::records::{AdminTunnel, Records};
use crate::secret_file::random;
use crate::session;

/// What stays on the sender's machine after a hand-off: nothing secret, only
/// enough for `connect` and `list` to say where the tunnel went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandedOff {
    /// The tunnel.
    pub id: String,
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
fn my_certificate(me: &Identity) -> Result<ApproverCertificate, String> {
    let cert = me.certificate.clone().ok_or(
        "you have no approver certificate: install the one the support CA gave you with `support-admin init --certificate FILE`",
    )?;
    if cert.body.key.0 != me.approver.public() {
        return Err("the installed certificate is for another key than your approver key".into());
    }
    let t = now();
    cert.verify(&[cert.body.issuer.0], t, Role::Approver)
        .and_then(|()| cert.check_issued_at(t))
        .map_err(|e| format!("your certificate cannot be used for hand-offs: {e}"))?;
    Ok(cert)
}

/// Publishes our signed hand-off key, so others can hand tunnels to us.
pub fn publish_key(cp: &ControlPlane, me: &Identity) -> Result<(), String> {
    let cert = my_certificate(me)?;
    let key = HandoffKey::sign(me.control_plane.public, &me.approver, &cert);
    match cp.call(AdminRequest::PublishHandoffKey(Box::new(key)))? {
        AdminResponse::HandoffKeyPublished => Ok(()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The receiver's hand-off key, verified as the sender must: a certificate
/// from the CA ours pins, approver role, valid now, naming `to`, signing the
/// receiver's enrolled key.
fn receiver_key(cp: &ControlPlane, pinned: &[[u8; 32]], to: &str) -> Result<HandoffKey, String> {
    let name = BoundedString::<64>::new(to).map_err(|e| format!("'{to}' is not a name: {e}"))?;
    let info: AdminInfo = match cp.call(AdminRequest::LookupAdmin(name)) {
        Ok(AdminResponse::AdminInfo(i)) => *i,
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(e) if e.contains("NotFound") => {
            return Err(format!(
                "nobody named '{to}' is enrolled at the control plane; `support-admin audit` lists who was enrolled (admin_added)"
            ))
        }
        Err(e) => return Err(e),
    };
    if !info.approver {
        return Err(format!(
            "{to} is enrolled as a viewer and cannot take a tunnel"
        ));
    }
    let key = info.handoff_key.ok_or_else(|| {
        format!(
            "{to} is enrolled but has not published a hand-off key yet: they run `support-admin handoffs` once (it publishes it), then hand off again"
        )
    })?;
    if key.key.0 != info.key.0 {
        return Err(format!(
            "the control plane's answer for {to} is inconsistent (the hand-off key is not their enrolled key); nothing was sent"
        ));
    }
    key.verify(pinned, now(), to).map_err(|e| {
        format!("REFUSED: {to}'s hand-off key is not trustworthy ({e}); nothing was sent or wiped")
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
) -> Result<HandedOff, String> {
    let cert = my_certificate(me)?;
    let id = rec.tunnel_id()?;
    let key = receiver_key(cp, &[cert.body.issuer.0], to)?;
    let secrets = Zeroizing::new(serde_json::to_vec(rec).map_err(|e| e.to_string())?);
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
    .map_err(|e| e.to_string())?;
    let to_name = key.certificate.body.name.clone();
    match cp.call(AdminRequest::Handoff(Box::new(HandoffPost {
        to: to_name,
        package,
    }))) {
        Ok(AdminResponse::HandedOff) => {}
        Ok(other) => return Err(format!("unexpected answer {other:?}; nothing was wiped")),
        Err(e) => return Err(format!("{e}; nothing was wiped, the tunnel stays yours")),
    }
    // Confirmed: from here on the tunnel is the receiver's.
    end_session(records, &rec.id);
    let note = HandedOff {
        id: rec.id.clone(),
        to: to.to_string(),
        at: now(),
    };
    records.note_handed_off(&note)?;
    records.wipe(&rec.id);
    Ok(note)
}

/// Ends the tunnel's session and waits (briefly) until it stopped listening,
/// so the receiver's peer does not take turns with ours at the relay.
fn end_session(records: &Records, id: &str) {
    session::quit(records, id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while session::running(records, id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hand-offs waiting for us.
pub fn waiting(cp: &ControlPlane) -> Result<Vec<HandoffSummary>, String> {
    match cp.call(AdminRequest::ListHandoffs)? {
        AdminResponse::Handoffs(l) => Ok(l.into_inner()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `pickup ID`: fetch, verify, open, check, save; then delete the package.
pub fn pickup(
    cp: &ControlPlane,
    me: &Identity,
    records: &Records,
    id: TunnelId,
) -> Result<(AdminTunnel, String), String> {
    let mine = my_certificate(me)?;
    let package: HandoffPackage = match cp.call(AdminRequest::FetchHandoff(id))? {
        AdminResponse::Handoff(p) => *p,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let secrets = package
        .open(id, &[mine.body.issuer.0], now(), me.control_plane.secret())
        .map_err(|e| format!("REFUSED the hand-off of tunnel {id}: {e}; nothing was stored"))?;
    let from = package.header.from.body.name.as_str().to_string();
    let rec: AdminTunnel = serde_json::from_slice(&secrets).map_err(|_| {
        format!("REFUSED the hand-off of tunnel {id}: the signed record from {from} is damaged")
    })?;
    let request = rec.request()?;
    if rec.tunnel_id()? != id || request.body.tunnel_id != id {
        return Err(format!(
            "REFUSED the hand-off of tunnel {id}: {from}'s record is about another tunnel"
        ));
    }
    let detail = cp.show(id)?;
    if detail.summary.state.kind().is_terminal() {
        return Err(format!(
            "tunnel {id} has ended ({:?}); there is nothing to pick up",
            detail.summary.state.kind()
        ));
    }
    records.save(&rec)?;
    records.forget_handed_off(&rec.id);
    match cp.call(AdminRequest::PickedUp(id))? {
        AdminResponse::PickedUp => {}
        other => return Err(format!("unexpected answer {other:?}")),
    }
    Ok((rec, from))
}
