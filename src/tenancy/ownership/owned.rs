//! A request resolved for its tenant ([`Owned`]): what step 2
//! ([`super::request`]) found, carried through the body ([`super::create`])
//! to the daemon's answer ([`super::response`]).
//!
//! Also the request body's guards, for bodies that stream past without being
//! read whole: a `docker load` archive is checked as it streams
//! ([`image_load::LoadGuard`]); a namespaced tenant's build context gets its
//! Dockerfile's `FROM` lines mapped ([`build_context::ContextRewrite`]).

use std::collections::HashMap;
use std::sync::Arc;

use http_body_util::BodyExt;

use super::build_context;
use super::image_load;
use super::images::Store;
use super::labels::Owner;
use super::names::Namespace;
use super::push::TempTag;
use crate::daemon::upstream::UpstreamClient;
use crate::http::ProxyBody;
use crate::wire::route::Endpoint;

/// A request resolved for its tenant.
#[derive(Debug)]
pub struct Owned {
    /// The target to forward (full IDs, merged filters).
    pub target: String,
    pub(super) owner: Owner,
    pub(super) store: Store,
    pub(super) after: After,
    pub(super) client: UpstreamClient,
    /// The tenant's namespace and the endpoint: answers are mapped back
    /// (names in listings, inspects and events; error messages always).
    pub(super) names: Option<(Namespace, Endpoint)>,
    /// `docker load`: what the archive's tags may not replace, and why the
    /// body was cut off, if it was.
    pub(super) load: Option<(Arc<image_load::Protected>, image_load::Refusal)>,
    /// A namespaced tenant's build: the Dockerfile's name in the context and
    /// its own images, for [`build_context::ContextRewrite`].
    pub(super) dockerfile: Option<(String, HashMap<String, String>)>,
}

/// What to do with the daemon's answer ([`super::response`]).
#[derive(Debug)]
pub(super) enum After {
    Nothing,
    ImageList,
    /// Hide other tenants' tags of a shared image.
    ImageInspect,
    SystemDf,
    /// Record the built image and its tags.
    Build {
        tags: Vec<String>,
        quiet: bool,
    },
    /// Record the committed image and its tags.
    Image {
        how: &'static str,
        tags: Vec<String>,
    },
    Tag {
        reference: String,
        image: String,
    },
    ImageDelete,
    /// `GET /info`: the tenant's container and image counts.
    Info,
    /// Record the tags (and new images) a load brought.
    Load(Arc<image_load::Protected>),
    /// Record an imported image and its tag.
    Import {
        reference: Option<String>,
    },
    /// A push under a temporary name.
    Push(Box<TempTag>),
    /// A predefined network read by name: hide its containers.
    SharedNetwork,
}

impl Owned {
    /// Nothing resolved yet: `target` as the client sent it.
    pub(super) fn new(
        target: String,
        owner: &Owner,
        store: &Store,
        client: &UpstreamClient,
    ) -> Owned {
        Owned {
            target,
            owner: owner.clone(),
            store: store.clone(),
            after: After::Nothing,
            client: client.clone(),
            names: None,
            load: None,
            dockerfile: None,
        }
    }

    /// The request body to forward: a load's archive is checked as it
    /// streams ([`image_load::LoadGuard`]); a namespaced tenant's build
    /// context gets its Dockerfile's `FROM` lines mapped
    /// ([`build_context::ContextRewrite`]).
    pub fn guard_body(&self, body: ProxyBody) -> ProxyBody {
        if let Some((dockerfile, images)) = &self.dockerfile {
            return build_context::ContextRewrite::build(body, dockerfile, images.clone())
                .boxed_unsync();
        }
        match &self.load {
            Some((protected, refused)) => {
                // A namespaced tenant's loaded tags go to its namespace, and
                // are checked as the daemon will see them.
                let body = match self.owner.namespace.as_ref().filter(|n| n.images()) {
                    Some(ns) => build_context::ContextRewrite::new(
                        body,
                        build_context::Entry::LoadTags(ns.clone()),
                    )
                    .boxed_unsync(),
                    None => body,
                };
                image_load::LoadGuard::new(body, protected.clone(), refused.clone()).boxed_unsync()
            }
            None => body,
        }
    }

    /// Whether [`Owned::guard_body`] may change the body's length (its
    /// `Content-Length` must then go).
    pub fn rewrites_body(&self) -> bool {
        self.dockerfile.is_some()
            || (self.load.is_some() && self.owner.namespace.as_ref().is_some_and(|n| n.images()))
    }

    /// Why the request body was cut off, if cistern cut it.
    pub fn refused(&self) -> Option<String> {
        self.load
            .as_ref()
            .and_then(|(_, r)| r.lock().ok().and_then(|r| r.clone()))
    }
}
