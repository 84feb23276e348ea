//! Step 4, response ([`Owned::finish`], after the daemon answered): the
//! answer as the tenant sees it, and what the request changed in the state
//! file.
//!
//! - listings of images (`images/json`, `system/df`) and image inspects keep
//!   what the tenant may see; `info` counts its containers and images; a
//!   predefined network read by name lists none of its containers
//!   ([`super::filters`]);
//! - builds (as the stream passes, `BuildWatch`), commits, tags, loads,
//!   imports and image deletions are recorded in the state file
//!   ([`super::images`]);
//! - with a name namespace, names in answers are mapped back to the
//!   tenant's: JSON errors for every endpoint, listings and inspects whole,
//!   event and progress streams line by line, `docker save` archives entry by
//!   entry ([`super::names`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};

use super::build_context;
use super::filters;
use super::image_load::Protected;
use super::images::{AuxScanner, Change, Rules, Store};
use super::labels::Owner;
use super::lookup;
use super::names::{self, Namespace};
use super::owned::{After, Owned};
use crate::daemon::client::{self as daemon, Daemon};
use crate::daemon::error::DockerError;
use crate::http::body::Holding;
use crate::http::{BoxError, ProxyBody};
use crate::wire::route::Endpoint;

impl Owned {
    /// After the daemon answered: filter listings, record image changes,
    /// map names back to the tenant's.
    pub async fn finish(
        mut self,
        response: Response<ProxyBody>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let names = self.names.take();
        let response = self.finish_owned(response).await?;
        match names {
            Some((ns, endpoint)) => map_names(&ns, &endpoint, response).await,
            None => Ok(response),
        }
    }

    /// What [`After`] asks for, on the answer it applies to.
    async fn finish_owned(
        mut self,
        response: Response<ProxyBody>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let after = std::mem::replace(&mut self.after, After::Nothing);
        if !applies(&after, response.status()) {
            return Ok(response);
        }
        match after {
            After::Build { tags, quiet } => {
                let (parts, body) = response.into_parts();
                let watched = BuildWatch {
                    inner: body,
                    scanner: AuxScanner::new(quiet),
                    record: Some((self.store, self.owner, tags)),
                    pending: None,
                };
                Ok(Response::from_parts(parts, watched.boxed_unsync()))
            }
            After::Push(temp) => {
                let (parts, body) = response.into_parts();
                let held = Holding {
                    inner: body,
                    _held: temp,
                };
                Ok(Response::from_parts(parts, held.boxed_unsync()))
            }
            After::Tag { reference, image } => {
                // The tag exists now: record it as the daemon names it.
                let reference = match lookup::image_ref(self.daemon(), &reference).await {
                    Ok(found) => found.name,
                    Err(_) => super::images::normalize(&reference),
                };
                self.record(Change::Tag { reference, image }).await;
                Ok(response)
            }
            after => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let edited = self.edit(after, body).await?;
                Ok(replace_body(&mut parts, edited))
            }
        }
    }

    /// An answer read whole: filtered for the tenant, or recorded and passed
    /// on unchanged.
    async fn edit(&self, after: After, body: Bytes) -> Result<Vec<u8>, DockerError> {
        match after {
            After::ImageList => {
                let state = self.store.state().await?;
                let rules = self.rules(&state);
                filters::filter_images(&body, |id| rules.visible(id), |t| rules.tag_visible(t))
            }
            After::SystemDf => {
                let state = self.store.state().await?;
                let rules = self.rules(&state);
                filters::filter_df(
                    &body,
                    &self.owner,
                    |id| rules.visible(id),
                    |t| rules.tag_visible(t),
                )
            }
            After::ImageInspect => {
                let state = self.store.state().await?;
                let rules = self.rules(&state);
                filters::filter_image_inspect(&body, |t| rules.tag_visible(t))
            }
            After::Info => filters::filter_info(&body, &self.counts().await?),
            After::SharedNetwork => filters::filter_shared_network(&body),
            After::Load(protected) => {
                self.record_load(&protected, &body).await;
                Ok(body.to_vec())
            }
            After::Import { reference } => {
                if let Some(id) = imported_id(&body) {
                    let tags = reference.into_iter().collect();
                    self.record(Change::Image {
                        id,
                        how: "import",
                        tags,
                    })
                    .await;
                }
                Ok(body.to_vec())
            }
            After::Image { how, tags } => {
                if let Some(id) = created_id(&body) {
                    self.record(Change::Image { id, how, tags }).await;
                }
                Ok(body.to_vec())
            }
            After::ImageDelete => {
                if let Some(change) = Change::from_delete_answer(&body) {
                    self.record(change).await;
                }
                Ok(body.to_vec())
            }
            After::Nothing | After::Build { .. } | After::Tag { .. } | After::Push(_) => {
                Ok(body.to_vec())
            }
        }
    }

    fn daemon(&self) -> Daemon<'_> {
        Daemon::new(&self.client)
    }

    fn rules<'a>(&'a self, state: &'a super::images::State) -> Rules<'a> {
        Rules {
            state,
            owner: &self.owner,
        }
    }

    async fn record(&self, change: Change) {
        self.store.record(&self.owner, change).await;
    }

    /// The tags (and new images) a `docker load` brought, from its answer.
    async fn record_load(&self, protected: &Protected, body: &[u8]) {
        let (tags, ids) = super::image_load::loaded(body);
        let mut new_images = ids;
        for tag in tags {
            if let Ok(super::images::ImageRef { id: Some(id), name }) =
                lookup::image_ref(self.daemon(), &tag).await
            {
                if !protected.existed(&id) {
                    new_images.push(id.clone());
                }
                self.record(Change::Tag {
                    reference: name,
                    image: id,
                })
                .await;
            }
        }
        for id in new_images.into_iter().filter(|id| !protected.existed(id)) {
            self.record(Change::Image {
                id,
                how: "load",
                tags: Vec::new(),
            })
            .await;
        }
    }

    /// The tenant's containers by state, and the images it may see.
    async fn counts(&self) -> Result<filters::Counts, DockerError> {
        let daemon = self.daemon();
        let containers = filters::merge_label_filter("/containers/json?all=1", &self.owner)?;
        let answer = daemon.get(&containers).await?;
        let containers = daemon::json(&answer)?;
        let images = daemon.get("/images/json").await?;
        let state = self.store.state().await?;
        let rules = self.rules(&state);
        let images = filters::filter_images(
            &images.body,
            |id| rules.visible(id),
            |t| rules.tag_visible(t),
        )?;
        Ok(filters::Counts::new(&containers, &images))
    }
}

/// Whether `after` applies to an answer of `status`: the success the
/// request's endpoint answers with (a push's temporary tag goes whatever
/// the answer).
fn applies(after: &After, status: StatusCode) -> bool {
    match after {
        After::Nothing => false,
        After::Push(_) => true,
        After::Image { .. } | After::Tag { .. } => status == StatusCode::CREATED,
        _ => status == StatusCode::OK,
    }
}

/// The image ID in an import's progress stream (the `status` line that is
/// one).
fn imported_id(body: &[u8]) -> Option<String> {
    body.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
        .find(|s| s.starts_with("sha256:"))
}

/// The `Id` of a create's (commit's) answer.
fn created_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Id").and_then(|i| i.as_str()).map(str::to_string))
}

/// Maps the names in an answer back to the tenant's: JSON errors for every
/// endpoint, listings and inspects whole, event streams line by line.
async fn map_names(
    ns: &Namespace,
    endpoint: &Endpoint,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, DockerError> {
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        return map_error(ns, response).await;
    }
    if !status.is_success() {
        return Ok(response);
    }
    let lines = match endpoint {
        Endpoint::Events => Some(names::Lines::Events),
        Endpoint::Build
        | Endpoint::ImageCreate
        | Endpoint::ImagePush { .. }
        | Endpoint::ImageLoad => Some(names::Lines::Progress),
        _ => None,
    };
    if let Some(lines) = lines {
        // Mapped lines change the body's length.
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let mapped = names::MappedLines::new(body, ns.clone(), lines);
        return Ok(Response::from_parts(parts, mapped.boxed_unsync()));
    }
    if matches!(endpoint, Endpoint::ImageGet { .. } | Endpoint::ImageGetAll) {
        // `docker save`: the archive names the tenant's tags as it does
        // (its length changes).
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let mapped =
            build_context::ContextRewrite::new(body, build_context::Entry::SaveTags(ns.clone()));
        return Ok(Response::from_parts(parts, mapped.boxed_unsync()));
    }
    if !Namespace::maps_answer(endpoint) {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let body = read_whole(body).await?;
    let mut v: serde_json::Value = serde_json::from_slice(&body).map_err(|err| {
        DockerError::upstream(format!("unreadable answer from the daemon: {err}"))
    })?;
    ns.answer(endpoint, &mut v);
    let mut mapped =
        serde_json::to_vec(&v).map_err(|err| DockerError::internal(err.to_string()))?;
    mapped.push(b'\n');
    Ok(replace_body(&mut parts, mapped))
}

/// A JSON error's `message` in the tenant's names.
async fn map_error(
    ns: &Namespace,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, DockerError> {
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let body = read_whole(body).await?;
    let mapped = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut v) => {
            if let Some(serde_json::Value::String(m)) = v.get_mut("message") {
                *m = ns.message(m);
            }
            serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
        }
        Err(_) => body.to_vec(),
    };
    Ok(replace_body(&mut parts, mapped))
}

async fn read_whole(mut body: ProxyBody) -> Result<Bytes, DockerError> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|err| DockerError::upstream(format!("reading the daemon's answer: {err}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > daemon::MAX_ANSWER {
                return Err(DockerError::upstream("the daemon's answer is too large"));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

fn replace_body(parts: &mut http::response::Parts, body: Vec<u8>) -> Response<ProxyBody> {
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    Response::from_parts(
        parts.clone(),
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// A build response passed through frame by frame, recording the built image
/// when its `aux` message goes by. The end of the stream waits for the record
/// to be written, so a client that saw its build finish can use the image.
struct BuildWatch {
    inner: ProxyBody,
    scanner: AuxScanner,
    record: Option<(Store, Owner, Vec<String>)>,
    pending: Option<tokio::task::JoinHandle<()>>,
}

impl BuildWatch {
    fn found(&mut self, id: String) {
        if let Some((store, owner, tags)) = self.record.take() {
            tracing::info!(target: "cistern::ownership", tenant = %owner.tenant, image = %id, "image built");
            let change = Change::Image {
                id,
                how: "build",
                tags,
            };
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                self.pending =
                    Some(handle.spawn(async move { store.record(&owner, change).await }));
            }
        }
    }
}

impl Body for BuildWatch {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.inner.is_end_stream() && self.record.is_none() {
            if let Some(pending) = self.pending.as_mut() {
                if Pin::new(pending).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pending = None;
            }
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    for id in self.scanner.feed(&data) {
                        self.found(id);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(id) = self.scanner.finish() {
                    self.found(id);
                }
                if let Some(pending) = self.pending.as_mut() {
                    if Pin::new(pending).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.pending = None;
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.pending.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
