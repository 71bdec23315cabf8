//! The decoders of the request, certificate, boxes, report and audit record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::approval_box::{ApprovalContents, SealedApproval};
use support_protocol::audit::AuditRecord;
use support_protocol::certificate::ApproverCertificate;
use support_protocol::connected_report::{ConnectedReport, SealedReport};
use support_protocol::messages::TunnelRequest;

fuzz_target!(|data: &[u8]| {
    let _ = support_protocol::decode::<TunnelRequest>(data);
    let _ = support_protocol::decode::<ApproverCertificate>(data);
    let _ = support_protocol::decode::<ApprovalContents>(data);
    let _ = support_protocol::decode::<SealedApproval>(data);
    let _ = support_protocol::decode::<ConnectedReport>(data);
    let _ = support_protocol::decode::<SealedReport>(data);
    let _ = support_protocol::decode::<AuditRecord>(data);
});
