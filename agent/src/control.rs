//! The control-plane client: one Noise IK call per HTTP POST to the pinned
//! keys, plain HTTP underneath (the channel is already encrypted and
//! authenticated; DESIGN section 3).

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use support_protocol::control_channel::{Api, ClientCall, StaticKeypair};
use support_protocol::failover::Failover;
use support_protocol::messages::{
    ApiError, DeviceCall, DeviceReply, DeviceRequest, DeviceResponse,
};
use support_protocol::RequestId;

use crate::util::{random, random_below};

/// The largest answer read from the control plane. The largest real one
/// (a poll answer with the approval box) is about 1.5 KiB.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// No answer (connection refused, timeout, DNS).
    Unreachable(String),
    /// An answer that is not a valid reply from a pinned key.
    Garbage(String),
    /// The control plane refused the call.
    Refused(ApiError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "the control plane is unreachable: {e}"),
            Self::Garbage(e) => write!(f, "the control plane sent an invalid answer: {e}"),
            Self::Refused(e) => write!(f, "the control plane refused: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A control plane at one URL or several (replicas over one store), with
/// pinned keys.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    urls: Vec<String>,
    keys: Vec<[u8; 32]>,
    /// Which URL answered last (shared by clones): calls start there.
    replicas: Arc<Failover>,
}

impl ControlPlane {
    /// `urls` are bases (`http://host:port`), `keys` the pinned public keys.
    pub fn new(urls: &[String], keys: Vec<[u8; 32]>) -> ControlPlane {
        ControlPlane {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            keys,
            replicas: Arc::default(),
        }
    }

    /// Makes one call as `credential`, waiting at most `timeout` for each
    /// URL. A URL that does not answer passes the call to the next one.
    pub fn call(
        &self,
        credential: &StaticKeypair,
        request: DeviceRequest,
        timeout: Duration,
    ) -> Result<DeviceResponse, CallError> {
        let call = DeviceCall {
            request_id: RequestId(u64::from_le_bytes(random())),
            request,
        };
        let bytes = support_protocol::encode(&call)
            .map_err(|e| CallError::Garbage(format!("cannot encode the call: {e}")))?;
        self.replicas.call(
            self.urls.len(),
            CallError::Unreachable("no control_plane URL is set".into()),
            |e| matches!(e, CallError::Unreachable(_)),
            |at| self.call_at(&self.urls[at], credential, &call, &bytes, timeout),
        )
    }

    /// The call at `url`. Tries each pinned key in turn when the server does
    /// not know the first (rotation).
    fn call_at(
        &self,
        url: &str,
        credential: &StaticKeypair,
        call: &DeviceCall,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<DeviceResponse, CallError> {
        let mut last = CallError::Garbage("no control-plane key is pinned".into());
        for key in &self.keys {
            match self.call_with(url, key, credential, bytes, timeout) {
                Ok(reply) if reply.request_id == call.request_id => {
                    return reply.result.map_err(CallError::Refused)
                }
                Ok(_) => return Err(CallError::Garbage("the answer is for another call".into())),
                Err(e @ CallError::Garbage(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn call_with(
        &self,
        url: &str,
        server: &[u8; 32],
        credential: &StaticKeypair,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<DeviceReply, CallError> {
        let (pending, body) =
            ClientCall::start(Api::Device, credential, server, random(), bytes)
                .map_err(|e| CallError::Garbage(format!("cannot start the channel: {e}")))?;
        let response = minreq::post(format!("{url}/v1/device"))
            .with_header("content-type", "application/octet-stream")
            .with_body(body)
            .with_timeout(timeout.as_secs().max(1))
            // Plain HTTP: anyone on the path may answer. Bound what we read
            // and go nowhere else.
            .with_max_headers_size(16 * 1024)
            .with_max_status_line_length(1024)
            .with_max_redirects(0)
            .send_lazy()
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = response.status_code;
        let mut answer = Vec::new();
        Read::take(response, MAX_RESPONSE + 1)
            .read_to_end(&mut answer)
            .map_err(|e| CallError::Unreachable(format!("reading the answer: {e}")))?;
        if answer.len() as u64 > MAX_RESPONSE {
            return Err(CallError::Garbage(format!(
                "the answer is larger than {MAX_RESPONSE} bytes"
            )));
        }
        let plain = pending.finish(&answer).map_err(|e| {
            let text: String = String::from_utf8_lossy(&answer)
                .chars()
                .filter(|c| !c.is_control())
                .take(120)
                .collect();
            CallError::Garbage(format!("HTTP {status}: {e} ({text:?})"))
        })?;
        support_protocol::decode::<DeviceReply>(&plain)
            .map_err(|e| CallError::Garbage(format!("the reply does not decode: {e}")))
    }
}

/// Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    /// Backoff that never waits longer than `cap`.
    pub fn new(cap: Duration) -> Backoff {
        Backoff { attempt: 0, cap }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Duration::from_secs(1u64 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        // Half fixed, half random: spreads devices out without waiting zero.
        Duration::from_millis(ms / 2 + random_below(ms / 2 + 1))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[9] >= Duration::from_secs(15) && delays[9] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
