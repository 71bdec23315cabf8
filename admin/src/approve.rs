//! `support-admin approve CODE`: check the code and the device's request,
//! launch the hub, seal and sign the approval, post it, wait for the device.
//!
//! The order is the security argument: the request's tag is verified with
//! the code's secret before anything is launched, so a control plane that
//! altered the facts, keys, ports or duration gets no hub and no approval.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support_protocol::approval_box::{
    seal_approval, ApprovalContents, Approver, RelayEndpoint, TunnelAddresses,
};
use support_protocol::bounded::{BoundedVec, FixedBytes};
use support_protocol::duration_text;
use support_protocol::messages::admin::ApproveRequest;
use support_protocol::messages::{AdminRequest, AdminResponse};
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::state::TunnelState;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::ApprovalSeq;

use crate::ca::now;
use crate::control::{ControlPlane, ControlPlaneError};
use crate::error::{AdminError, ApproveError, Refusal};
use crate::hub::{HubSpec, Provider};
use crate::identity::Identity;
use crate::progress::Step;
use crate::records::{encode_hex, AdminTunnel, HubRecord, Records};
use crate::secret_file::random;

/// The tunnel's virtual addresses: fixed, since neither peer has a kernel interface.
pub const ADDRESSES: TunnelAddresses = TunnelAddresses {
    device: [10, 77, 0, 2],
    admin: [10, 77, 0, 3],
    prefix_len: 28,
};

/// What the engineer asked for.
pub struct Options<'a> {
    /// Where the hub runs.
    pub provider: &'a dyn Provider,
    /// A shorter duration than requested.
    pub duration_secs: Option<u32>,
    /// Fewer ports than requested.
    pub ports: Option<Vec<u16>>,
    /// How long to wait for the device (0: do not wait).
    pub wait: Duration,
    /// Do not ask for confirmation on a terminal.
    pub yes: bool,
}

/// Approves; returns the record of the tunnel.
pub fn approve(
    cp: &ControlPlane,
    me: &Identity,
    records: &Records,
    code_text: &str,
    o: &Options<'_>,
) -> Result<AdminTunnel, AdminError> {
    let code = OneTimeCode::parse(code_text).map_err(ApproveError::Code)?;
    // Pre-flight, before anything is spent: a certificate the device would
    // refuse would launch a hub, post an approval and end the owner's request.
    let cert = certificate_for_approving(me)?;
    let id = code.tunnel_id;
    let detail = cp.show(id)?;
    let request = detail.request;
    if request.body.tunnel_id != id {
        return Err(Refusal::Untrustworthy("it answered with another tunnel's request").into());
    }
    // From here on only the verified request has a name; the hub launch
    // below requires it (HubSpec::new takes a VerifiedRequest).
    let request = support_protocol::request_tag::verify(&code.secret, &request)
        .map_err(|_| Refusal::Untrustworthy("the request's tag does not verify with the code: its facts, keys, ports or duration were altered"))?;
    let body = request.body();
    let current = detail.summary.state;
    let seq = next_approval(current, records, o.provider, id)?;
    eprintln!(
        "Device {} ({}, {}, agent {}) asks for {} on ports {:?}{}",
        body.facts.hostname.as_str(),
        body.facts.model.as_str(),
        body.facts.firmware.as_str(),
        body.facts.agent_version.as_str(),
        duration_text::format(u64::from(body.duration_secs)),
        body.ports.to_vec(),
        if body.note.as_str().is_empty() {
            String::new()
        } else {
            format!(": \"{}\"", body.note.as_str())
        }
    );
    eprintln!("  verified: the code's secret authenticates this request (the control plane cannot have changed it)");
    let duration = match o.duration_secs {
        Some(d) if d == 0 || d > body.duration_secs => {
            return Err(ApproveError::Lengthened {
                requested_secs: body.duration_secs,
            }
            .into())
        }
        Some(d) => d,
        None => body.duration_secs,
    };
    let ports = match &o.ports {
        Some(p) => {
            if let Some(x) = p.iter().find(|x| !body.ports.contains(x)) {
                return Err(ApproveError::PortNotRequested {
                    port: *x,
                    requested: body.ports.to_vec(),
                }
                .into());
            }
            p.clone()
        }
        None => body.ports.to_vec(),
    };
    let hub_place = o.provider.preflight().map_err(Refusal::Hub)?;
    eprintln!(
        "  pre-flight: your certificate ({}, serial {}) is valid until {}; hub: {hub_place}",
        cert.body.name.as_str(),
        cert.body.serial,
        support_protocol::time_text::format(cert.body.not_after)
    );
    if !o.yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        confirm(
            &format!(
                "Grant {} on ports {ports:?} and launch the hub? [y/N] ",
                duration_text::format(u64::from(duration))
            ),
            "not approved; nothing was launched or posted",
        )?;
    }
    let admin = AdminTunnelKeys::from_seed(random());
    let lifetime = u64::from(duration) + o.wait.as_secs() + 600;
    let step = Step::start(&format!("launching the hub ({})", o.provider.name()));
    let hub = o.provider.launch(
        &HubSpec::new(&request, admin.wireguard().public, lifetime),
        &mut |s| step.set(s),
    );
    let hub = match hub {
        Ok(h) => {
            step.finish(&format!("hub up at {}", h.endpoint));
            h
        }
        Err(e) => {
            step.finish("hub launch failed");
            return Err(e.into());
        }
    };
    let approved_at = Instant::now();
    let (ct, _) = support_protocol::kem::encapsulate(&body.kem.0, &admin.kem_randomness())
        .map_err(|_| Refusal::Untrustworthy("the device's ML-KEM key is invalid"))?;
    let contents = ApprovalContents {
        relay: endpoint(hub.endpoint),
        admin_wireguard: FixedBytes(admin.wireguard().public),
        admin_ssh: FixedBytes(admin.ssh_public()),
        addresses: ADDRESSES,
        kem_ciphertext: FixedBytes(ct),
        duration_secs: duration,
        ports: BoundedVec::try_from(&ports[..]).map_err(|e| AdminError::Usage(e.to_string()))?,
        issued_at: now(),
    };
    let sealed = seal_approval(
        &contents,
        id,
        &request.device_public_keys(),
        seq,
        &code.secret,
        admin.box_salt(),
        &Approver {
            key: &me.approver,
            certificate: &cert,
        },
    );
    let mut record = AdminTunnel {
        id,
        seed: hex::encode(admin.seed()),
        secret: hex::encode(code.secret.as_bytes()),
        request: encode_hex(request.request()),
        contents: encode_hex(&contents),
        approval: encode_hex(&sealed),
        hub: HubRecord {
            provider: o.provider.kind(),
            handle: hub.handle.clone(),
            endpoint: hub.endpoint,
        },
        host_keys: Vec::new(),
        approved_at: now(),
    };
    // Saved before posting: whatever happens next, stop and gc can find the hub.
    records.save(&record)?;
    let posted = cp.call(AdminRequest::Approve(Box::new(ApproveRequest {
        tunnel_id: id,
        expected: current.approval(),
        approval: sealed.clone(),
    })));
    match posted {
        Ok(AdminResponse::Approved(_)) => {}
        other => {
            let _ = o.provider.delete(&hub.handle);
            records.wipe(record.id);
            return Err(ApproveError::NotPosted(match other {
                Err(e) => e,
                Ok(r) => ControlPlaneError::unexpected(r),
            })
            .into());
        }
    }
    eprintln!("approval {seq} posted: sealed to the code's secret, signed by you as certified by the support CA");
    if o.wait.is_zero() {
        return Ok(record);
    }
    wait_for_device(cp, records, &mut record, o.wait, approved_at)?;
    Ok(record)
}

/// `support-admin wait ID`: waits for the device to connect under the
/// approval this machine posted.
pub fn wait(
    cp: &ControlPlane,
    records: &Records,
    record: &mut AdminTunnel,
    wait: Duration,
) -> Result<(), AdminError> {
    wait_for_device(cp, records, record, wait, Instant::now())
}

/// Waits until the device reports connected under `record`'s approval
/// (pinning the host keys of its sealed report), or the tunnel ends (then
/// the device's reason, from the audit, is the error), or `wait` passes.
fn wait_for_device(
    cp: &ControlPlane,
    records: &Records,
    record: &mut AdminTunnel,
    wait: Duration,
    approved_at: Instant,
) -> Result<(), AdminError> {
    let id = record.id;
    let sealed = record.sealed_approval()?;
    let seq = sealed.approval_seq;
    let secret = record.secret()?;
    let step = Step::start("waiting for the device to verify the approval and connect");
    let deadline = Instant::now() + wait;
    loop {
        let d = cp.show(id)?;
        match d.summary.state {
            TunnelState::Connected(s) if s == seq => {
                let report = d.report.ok_or(ApproveError::NoReport)?;
                let opened = report
                    .open(id, seq, &secret, &sealed.hash())
                    .map_err(ApproveError::Report)?;
                record.host_keys = opened
                    .host_keys
                    .iter()
                    .map(|k| k.as_str().to_string())
                    .collect();
                records.save(record)?;
                let took = step.finish("device connected");
                eprintln!(
                    "approval to connected: {:.1}s; host keys pinned from the device's sealed report: {}",
                    approved_at.elapsed().as_secs_f64().max(took.as_secs_f64()),
                    record.host_keys.len()
                );
                return Ok(());
            }
            s if s.kind().is_terminal() => {
                step.finish("the tunnel ended");
                return Err(ApproveError::Ended {
                    state: s.kind(),
                    reason: device_reason(cp, id),
                }
                .into());
            }
            _ if Instant::now() > deadline => {
                step.finish("gave up waiting");
                return Err(ApproveError::NotConnected { id, waited: wait }.into());
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Why the tunnel ended, as the device told the control plane (the audit's
/// last stop record), in words.
fn device_reason(cp: &ControlPlane, id: support_protocol::TunnelId) -> Option<String> {
    use support_protocol::audit::AuditAction;
    use support_protocol::messages::admin::AuditQuery;
    use support_protocol::messages::StopReason;
    let rows = match cp
        .call(AdminRequest::Audit(AuditQuery {
            tunnel_id: Some(id),
            after_seq: 0,
            limit: 100,
        }))
        .ok()?
    {
        AdminResponse::Audit(r) => r.into_inner(),
        _ => return None,
    };
    rows.iter().rev().find_map(|r| match &r.entry.action {
        AuditAction::Stopped(reason) => Some(match reason {
            StopReason::Refused(why) => format!("refused the approval: {}", why.as_str()),
            StopReason::Failed(why) => format!("failed to open the tunnel: {}", why.as_str()),
            StopReason::Owner => "was stopped by its owner".to_string(),
            StopReason::Admin => "was stopped by support".to_string(),
            StopReason::Expired => "let it expire".to_string(),
        }),
        AuditAction::Expired => Some("request expired".to_string()),
        _ => None,
    })
}

/// Which approval this one is, or why there must be none: a tunnel gets a
/// second hub only when the first one, launched from this machine, is gone.
fn next_approval(
    current: TunnelState,
    records: &Records,
    provider: &dyn Provider,
    id: support_protocol::TunnelId,
) -> Result<ApprovalSeq, AdminError> {
    match current {
        TunnelState::Pending => Ok(ApprovalSeq::FIRST),
        TunnelState::Approved(seq) => {
            let Ok(mine) = records.get(id) else {
                return Err(ApproveError::ApprovedByAnother { id, seq }.into());
            };
            if mine.hub.provider != provider.kind() {
                return Err(ApproveError::OtherProvider {
                    id,
                    provider: mine.hub.provider,
                }
                .into());
            }
            if provider.list()?.iter().any(|(t, _)| *t == id) {
                return Err(ApproveError::HasHub {
                    id,
                    endpoint: mine.hub.endpoint,
                    seq,
                }
                .into());
            }
            // The hub of our approval is gone before the device connected: relaunch.
            Ok(seq.next().ok_or(ApproveError::TooManyApprovals)?)
        }
        other => Err(ApproveError::NotApprovable {
            id,
            state: other.kind(),
        }
        .into()),
    }
}

/// Asks `prompt` on the terminal; anything but y/yes refuses with `refused`.
pub(crate) fn confirm(prompt: &str, refused: &'static str) -> Result<(), AdminError> {
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| AdminError::Input {
            what: "the answer",
            source,
        })?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(AdminError::Declined(refused)),
    }
}

/// The installed certificate, if the device would accept approvals under it
/// now: signed by its issuer, for this approver key, in its validity window,
/// with the approver role. (Whether the issuer is the CA the device pins
/// only the device knows.)
fn certificate_for_approving(
    me: &Identity,
) -> Result<support_protocol::certificate::ApproverCertificate, AdminError> {
    let cert = me.my_certificate()?;
    let t = now();
    crate::identity::usable_now(&cert, t).map_err(|error| Refusal::Certificate {
        error,
        valid: (cert.body.not_before, cert.body.not_after),
    })?;
    if crate::ca::expires_soon(&cert, t) {
        eprintln!(
            "warning: your certificate expires at {}; ask the support CA for a new one soon",
            support_protocol::time_text::format(cert.body.not_after)
        );
    }
    Ok(cert)
}

fn endpoint(a: SocketAddr) -> RelayEndpoint {
    match a {
        SocketAddr::V4(v) => RelayEndpoint::V4(v.ip().octets(), v.port()),
        SocketAddr::V6(v) => RelayEndpoint::V6(FixedBytes(v.ip().octets()), v.port()),
    }
}
