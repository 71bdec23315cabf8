//! The warp filters: which paths, methods and bodies reach which handler,
//! and the plain-text answer to everything else.

use std::convert::Infallible;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response as WarpResponse;
use warp::{Filter, Rejection};

use super::call::{admin, device, forwarded_for};
use super::{plain, AppState, Peer, MAX_BODY};

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// The API and `/healthz`, and `/metrics` when it has no address of its own.
    Api {
        /// Whether `/metrics` is served here too.
        with_metrics: bool,
    },
    /// Only `/metrics` and `/healthz` (the `--metrics-listen` address).
    Metrics,
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Every `X-Forwarded-For` line, joined ([`forwarded_for`]); a request
/// with a line that is not text is refused.
fn forwarded_for_filter() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::headers_cloned().and_then(|headers: warp::http::HeaderMap| async move {
        forwarded_for(
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
        )
        .map_err(|()| warp::reject::custom(BadForwardedFor))
    })
}

/// An `X-Forwarded-For` line that is not text (answered 400).
#[derive(Debug)]
struct BadForwardedFor;

impl warp::reject::Reject for BadForwardedFor {}

/// The filter for `which` routes. Each request needs a [`Peer`] extension
/// (the accept loop adds it).
pub fn routes(state: Arc<AppState>, which: Routes) -> BoxedFilter<(WarpResponse,)> {
    let call = |path: &'static str| {
        warp::post()
            .and(warp::path("v1"))
            .and(warp::path(path))
            .and(warp::path::end())
            .and(warp::body::content_length_limit(MAX_BODY))
            .and(warp::body::bytes())
            .and(warp::ext::get::<Peer>())
            .and(forwarded_for_filter())
    };
    let device_route = with_state(state.clone()).and(call("device")).then(
        |st: Arc<AppState>, body, peer, xff| async move {
            let r = device(st.clone(), body, peer, xff).await;
            st.metrics.request("/v1/device", r.status().as_u16());
            r
        },
    );
    let admin_route = with_state(state.clone()).and(call("admin")).then(
        |st: Arc<AppState>, body, peer, xff| async move {
            let r = admin(st.clone(), body, peer, xff).await;
            st.metrics.request("/v1/admin", r.status().as_u16());
            r
        },
    );
    let health = warp::get()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .map(|| plain(StatusCode::OK, "ok"));
    let metrics = with_state(state.clone())
        .and(warp::get())
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .then(|st: Arc<AppState>| async move {
            let svc = st.service.clone();
            let counts = tokio::task::spawn_blocking(move || svc.store().count_by_state()).await;
            let refs: Vec<(&str, u64)> = match counts {
                Ok(Ok(c)) => c.into_iter().map(|(k, n)| (k.name(), n)).collect(),
                _ => Vec::new(),
            };
            let text = st.metrics.render(&refs, st.service.polls().waiting());
            let mut r = WarpResponse::new(text.into());
            r.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        });
    let metrics = metrics.or(health).unify();
    let filter = match which {
        Routes::Metrics => metrics.boxed(),
        Routes::Api { with_metrics: true } => device_route
            .or(admin_route)
            .unify()
            .or(metrics)
            .unify()
            .boxed(),
        Routes::Api {
            with_metrics: false,
        } => device_route
            .or(admin_route)
            .unify()
            .or(health)
            .unify()
            .boxed(),
    };
    filter.recover(rejection).unify().boxed()
}

async fn rejection(r: Rejection) -> Result<WarpResponse, Infallible> {
    let (status, text) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (StatusCode::LENGTH_REQUIRED, "a Content-Length is required")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(plain(status, text))
}
