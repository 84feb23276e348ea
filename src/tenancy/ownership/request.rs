//! Step 2, resolve ([`Ownership::resolve`], after the policy's query checks,
//! before the body is read): what the request's path and query name must be
//! the tenant's, and the target to forward.
//!
//! In order:
//! 1. **references**: the container, exec, volume or network the path names
//!    (or `POST /commit`'s `container` query) is looked up and must be the
//!    tenant's ([`super::resolve`]); the target gets its full ID. The
//!    predefined networks may be read by name by all, without their
//!    containers.
//! 2. **filters**: listings, prunes and events get the tenant's label filter
//!    ([`super::filters`]).
//! 3. **names**: with a name namespace, a create's or rename's `name` is
//!    written as the daemon knows it, and the answer is mapped back
//!    ([`super::names`]).
//! 4. **images**: image endpoints are checked against the state file
//!    ([`super::image_request`]).

use super::filters;
use super::image_request::ImageRequest;
use super::images::{Rules, State};
use super::labels::Owner;
use super::lookup;
use super::names::Namespace;
use super::owned::{After, Owned};
use super::resolve::{self, Kind};
use super::Ownership;
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::daemon::upstream::UpstreamClient;
use crate::wire::query::Query;
use crate::wire::route::{Endpoint, Route};

impl Ownership {
    /// Step 2: resolves what the path and query name; the target to forward.
    pub async fn resolve(
        &self,
        client: &UpstreamClient,
        owner: &Owner,
        route: &Route,
        target: String,
    ) -> Result<Owned, DockerError> {
        let daemon = Daemon::new(client);
        let mut owned = Owned::new(target, owner, &self.store, client);
        resolve_references(daemon, owner, route, &mut owned).await?;
        if filters::label_filtered(&route.endpoint) {
            owned.target = filters::merge_label_filter(&owned.target, owner)?;
        }
        if let Some(ns) = &owner.namespace {
            name_in_namespace(ns, route, &mut owned)?;
        }
        // The image rules read the state file once per request.
        let state = if uses_image_rules(&route.endpoint) {
            self.store.state().await?
        } else {
            State::default()
        };
        let images = ImageRequest {
            daemon,
            route,
            rules: Rules {
                state: &state,
                owner,
            },
            ns: owner.namespace.as_ref().filter(|n| n.images()),
            pushes: &self.pushes,
        };
        images.resolve(&mut owned).await?;
        Ok(owned)
    }
}

/// The resource the path names, and the container `POST /commit` names in
/// its query: the tenant's, by full ID in the target.
async fn resolve_references(
    daemon: Daemon<'_>,
    owner: &Owner,
    route: &Route,
    owned: &mut Owned,
) -> Result<(), DockerError> {
    if resolve::shared_network_inspect(&route.endpoint) {
        owned.after = After::SharedNetwork;
    } else if let Some(p) = resolve::path_ref(&route.endpoint) {
        let id = lookup::full_id(daemon, owner, p.kind, &p.name).await?;
        owned.target = p.rewrite(route, &owned.target, &id);
    }
    if let Some(name) = resolve::query_ref(route)? {
        let id = lookup::full_id(daemon, owner, Kind::Container, &name).await?;
        owned.target = resolve::rewrite_query(&owned.target, "container", &id)?;
    }
    Ok(())
}

/// A container create's or rename's `name` as the daemon knows it; every
/// answer is mapped back to the tenant's names.
fn name_in_namespace(ns: &Namespace, route: &Route, owned: &mut Owned) -> Result<(), DockerError> {
    if matches!(
        route.endpoint,
        Endpoint::ContainerCreate | Endpoint::ContainerRename { .. }
    ) {
        let q = Query::parse(&route.query).map_err(|r| DockerError::client(r.status, r.message))?;
        let name = q.values("name").next().map(str::to_string);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            owned.target = resolve::rewrite_query(&owned.target, "name", &ns.to_daemon(&name))?;
        }
    }
    owned.names = Some((ns.clone(), route.endpoint.clone()));
    Ok(())
}

/// Endpoints whose checks read the image ownership state.
fn uses_image_rules(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ImageInspect { .. }
            | Endpoint::ImageHistory { .. }
            | Endpoint::ImageGet { .. }
            | Endpoint::ImageGetAll
            | Endpoint::ImageDelete { .. }
            | Endpoint::ImageTag { .. }
            | Endpoint::ImagePush { .. }
            | Endpoint::Build
            | Endpoint::ContainerCommit
            | Endpoint::ImageLoad
            | Endpoint::ImageCreate
    )
}

/// The driver spawns the futures of all three steps: they must stay `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn send_check(
    o: &Ownership,
    c: &UpstreamClient,
    owner: &Owner,
    r: &Route,
    owned: Owned,
    resp: http::Response<crate::http::ProxyBody>,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(o.resolve(c, owner, r, String::new()));
    let mut body = crate::wire::Body::empty();
    is_send(owned.body(c, r, &mut body));
    is_send(owned.finish(resp));
}
