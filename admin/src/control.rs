//! The admin API client: one Noise IK call per POST, as the engineer's
//! enrolled key, to the control plane's pinned keys.

use std::io::Read;
use std::time::Duration;

use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::messages::admin::{ListQuery, StopRequest, TunnelDetail, TunnelSummary};
use support_protocol::messages::{AdminCall, AdminReply, AdminRequest, AdminResponse};
use support_protocol::{RequestId, TunnelId};

use crate::secret_file::random;

const MAX_RESPONSE: u64 = 256 * 1024;

/// A control plane.
pub struct ControlPlane {
    url: String,
    keys: Vec<[u8; 32]>,
    me: StaticKeypair,
}

impl ControlPlane {
    /// `url` with pinned `keys`, calling as `me`.
    pub fn new(url: &str, keys: Vec<[u8; 32]>, me: StaticKeypair) -> Result<ControlPlane, String> {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!(
                "the control plane URL must start with http:// or https://, got '{url}'"
            ));
        }
        if keys.is_empty() {
            return Err("no control-plane key is pinned: set control_plane_keys in admin.toml or pass --control-plane-key".into());
        }
        Ok(ControlPlane {
            url: url.trim_end_matches('/').to_string(),
            keys,
            me,
        })
    }

    /// One call. Errors are sentences for the engineer.
    pub fn call(&self, request: AdminRequest) -> Result<AdminResponse, String> {
        let call = AdminCall {
            request_id: RequestId(u64::from_le_bytes(random())),
            request,
        };
        let bytes = support_protocol::encode(&call).map_err(|e| e.to_string())?;
        let mut last = String::new();
        for server in &self.keys {
            let (pending, body) = ClientCall::start(Api::Admin, &self.me, server, random(), &bytes)
                .map_err(|e| e.to_string())?;
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut resp = agent
                .post(format!("{}/v1/admin", self.url))
                .header("content-type", "application/octet-stream")
                .send(&body[..])
                .map_err(|e| format!("the control plane at {} is unreachable: {e}", self.url))?;
            let status = resp.status().as_u16();
            let mut answer = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(MAX_RESPONSE)
                .read_to_end(&mut answer)
                .map_err(|e| format!("reading the control plane's answer: {e}"))?;
            match pending.finish(&answer) {
                Ok(plain) => {
                    let reply: AdminReply = support_protocol::decode(&plain)
                        .map_err(|e| format!("the control plane's answer does not decode: {e}"))?;
                    if reply.request_id != call.request_id {
                        return Err("the control plane answered another call".into());
                    }
                    return reply
                        .result
                        .map_err(|e| format!("the control plane refused: {e}"));
                }
                Err(e) => {
                    let text: String = String::from_utf8_lossy(&answer)
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(160)
                        .collect();
                    last = format!("the control plane answered HTTP {status}: {e} ({text})");
                }
            }
        }
        Err(last)
    }

    /// A tunnel's detail.
    pub fn show(&self, id: TunnelId) -> Result<TunnelDetail, String> {
        match self.call(AdminRequest::Show(id))? {
            AdminResponse::Show(d) => Ok(*d),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Every tunnel (all pages).
    pub fn list_all(
        &self,
        state: Option<support_protocol::messages::TunnelStateKind>,
    ) -> Result<Vec<TunnelSummary>, String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            match self.call(AdminRequest::List(ListQuery {
                state,
                after,
                limit: 100,
            }))? {
                AdminResponse::List { tunnels, next } => {
                    out.extend(tunnels.iter().cloned());
                    match next {
                        Some(n) if Some(n) != after => after = Some(n),
                        _ => return Ok(out),
                    }
                }
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
    }

    /// Stops a tunnel.
    pub fn stop(&self, id: TunnelId, note: &str) -> Result<(), String> {
        let note = support_protocol::bounded::BoundedString::new(note)
            .map_err(|e| format!("the note cannot be used: {e}"))?;
        match self.call(AdminRequest::Stop(StopRequest {
            tunnel_id: id,
            note,
        }))? {
            AdminResponse::Stopped => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}
