//! Ownership: a CI job sees and touches only what it created.
//!
//! The `own` stage of the Docker request pipeline. It runs for every request,
//! in three steps the driver ([`crate::docker`]) calls:
//!
//! 1. **identify** ([`Ownership::identify`], first, before routing and the
//!    policy): the listener's [`identity::Identity`] names the tenant; a
//!    missing or wrong credential is a `401` with `WWW-Authenticate`.
//! 2. **resolve** ([`Ownership::resolve`], after the policy's query checks,
//!    before the body is read): every container, exec, volume or network the
//!    path (or `POST /commit`'s `container` query) names is looked up on the
//!    daemon and must carry the tenant's labels ([`resolve`]); the path is
//!    rewritten with the full ID; the predefined networks (`bridge`, `host`,
//!    `none`) may be inspected by name by all, without their containers.
//!    Listings, prunes and events get the tenant's
//!    label filter ([`filters`]). Image requests are checked against the state
//!    file ([`images`]).
//! 3. **body** ([`Owned::body`], after the policy judged the body): creates
//!    get the tenant's labels ([`labels`]); references inside bodies are
//!    resolved: network connect/disconnect `Container` (replaced by the full
//!    ID), container create `Image`, `HostConfig.NetworkMode`,
//!    `NetworkingConfig.EndpointsConfig` keys (the tenant's networks, or the
//!    predefined `bridge`/`default`/`none`), `HostConfig.Links`, and named
//!    volumes in `Binds`/`Mounts`, which must be the tenant's; one that does not
//!    exist yet is created first by cistern with the tenant's labels (the daemon
//!    would otherwise create it unlabelled). Then, after the daemon answered,
//!    [`Owned::finish`] filters `images/json` and `system/df` and records
//!    builds, commits, tags and image deletions in the state file.
//!
//! Anything another tenant owns is answered the way dockerd answers for a
//! missing resource. `container:` namespace modes, `VolumesFrom` and `Links`
//! in a create body must name the tenant's own containers, and are rewritten
//! to their full IDs.
//!
//! [`cleanup`] removes a tenant's resources: on shutdown for listeners marked
//! `cleanup: true`, and from `cistern cleanup --tenant NAME`. Name namespaces
//! (two tenants each with a volume `db`) are [`names`]; identities, from peer
//! credentials, tokens or TLS client certificates, are [`identity`]; per-job
//! sockets are [`crate::tenancy::jobs`].

pub mod build_context;
pub mod cleanup;
pub mod daemon;
pub mod filters;
pub mod identity;
pub mod image_load;
pub mod images;
pub mod labels;
pub mod names;
pub mod resolve;
pub mod state_file;
pub mod tar_stream;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};

use self::daemon::Daemon;
use self::identity::{AuthError, Identity, Tenant};
use self::images::{AuxScanner, Change, Rules, Store};
use self::labels::Owner;
use self::names::Namespace;
use self::resolve::{Found, Kind};
use self::state_file::StateFile;
use crate::config::Config;
use crate::docker::error::DockerError;
use crate::docker::upstream::UpstreamClient;
use crate::docker::{BoxError, ProxyBody};
use crate::listen::Peer;
use crate::wire::route::{Endpoint, Route};
use crate::wire::{query::Query, Body as RequestBody, Json};

/// A listener's ownership settings.
#[derive(Debug, Clone)]
struct ListenerOwnership {
    identity: Identity,
    cleanup: bool,
    namespaces: bool,
}

/// Ownership as configured: built once from the config.
#[derive(Debug)]
pub struct Ownership {
    instance: String,
    listeners: HashMap<String, ListenerOwnership>,
    store: Store,
    /// Tenants seen on `cleanup: true` listeners, in this run or in one that
    /// ended without its cleanup (a crash): their resources go at shutdown.
    seen: Mutex<BTreeSet<Tenant>>,
    /// `seen`, kept in `<state_dir>/cleanup.json` so a crash does not forget.
    pending: StateFile<BTreeSet<String>>,
    /// One push per image name at a time (pushes of namespaced tags tag the
    /// name they push for the duration).
    push_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ownership {
    pub fn new(config: &Config) -> Ownership {
        Ownership {
            instance: config.instance.clone(),
            listeners: config
                .listeners
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        ListenerOwnership {
                            identity: l.identity.clone(),
                            cleanup: l.cleanup,
                            namespaces: l.namespaces,
                        },
                    )
                })
                .collect(),
            store: Store::new(&config.state_dir),
            seen: Mutex::new(BTreeSet::new()),
            pending: StateFile::open(&config.state_dir, "cleanup"),
            push_locks: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Tenants of `cleanup: true` listeners left by an earlier run that did
    /// not clean up (a crash): adopted, so this run's shutdown removes their
    /// resources; or returned, to be reaped now.
    pub fn orphans(&self) -> Vec<Owner> {
        let left = match self.pending.load() {
            Ok(left) => left,
            Err(err) => {
                tracing::error!(target: "cistern::ownership", error = %err, "cannot read the cleanup state");
                return Vec::new();
            }
        };
        let tenants: Vec<Tenant> = left
            .into_iter()
            .filter_map(|t| Tenant::new(t).ok())
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(tenants.iter().cloned());
        }
        tenants
            .into_iter()
            .map(|t| Owner::new(t, self.instance.clone()))
            .collect()
    }

    /// Forgets tenants whose resources were removed.
    pub fn cleaned(&self, tenants: &[Tenant]) {
        if let Ok(mut seen) = self.seen.lock() {
            for t in tenants {
                seen.remove(t);
            }
        }
        let done: BTreeSet<String> = tenants.iter().map(|t| t.to_string()).collect();
        if let Err(err) = self.pending.update(|p| p.retain(|t| !done.contains(t))) {
            tracing::error!(target: "cistern::ownership", error = %err, "cannot update the cleanup state");
        }
    }

    /// The state file.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Step 1: who is asking. Errors are `401`s.
    pub fn identify(
        &self,
        listener: &str,
        peer: &Peer,
        headers: &HeaderMap,
    ) -> Result<Owner, DockerError> {
        let Some(l) = self.listeners.get(listener) else {
            return Err(DockerError::internal(format!(
                "cistern: no ownership settings for listener {listener}"
            )));
        };
        let tenant = l
            .identity
            .identify(peer, headers)
            .map_err(|err: AuthError| {
                DockerError::client(StatusCode::UNAUTHORIZED, err.to_string())
            })?;
        if l.cleanup {
            let new = self
                .seen
                .lock()
                .map(|mut seen| seen.insert(tenant.clone()))
                .unwrap_or(false);
            if new {
                // Remembered across a crash (rare: once per tenant and run).
                let pending = self.pending.clone();
                let name = tenant.to_string();
                tokio::task::spawn_blocking(move || {
                    if let Err(err) = pending.update(|p| p.insert(name)) {
                        tracing::error!(target: "cistern::ownership", error = %err, "cannot record a tenant for cleanup");
                    }
                });
            }
        }
        Ok(Owner {
            namespace: l.namespaces.then(|| Namespace::of(tenant.as_str())),
            tenant,
            instance: self.instance.clone(),
        })
    }

    /// The `WWW-Authenticate` value for a `401` on this listener.
    pub fn challenge(&self, listener: &str) -> &'static str {
        self.listeners
            .get(listener)
            .map_or("Bearer realm=\"cistern\"", |l| l.identity.challenge())
    }

    /// Tenants whose resources go when cistern shuts down: those of listeners
    /// marked `cleanup: true` (fixed and token tenants, and peer tenants seen).
    pub fn cleanup_tenants(&self) -> Vec<Owner> {
        let mut tenants: BTreeSet<Tenant> = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for l in self.listeners.values().filter(|l| l.cleanup) {
            match &l.identity {
                Identity::Fixed(t) => {
                    tenants.insert(t.clone());
                }
                Identity::Tokens(tokens) => tenants.extend(tokens.iter().map(|t| t.tenant.clone())),
                Identity::Certificate(c) => tenants.extend(c.map.values().cloned()),
                Identity::Peer => {}
            }
        }
        tenants
            .into_iter()
            .map(|tenant| Owner::new(tenant, self.instance.clone()))
            .collect()
    }

    /// Step 2: resolves what the path and query name; the target to forward.
    pub async fn resolve(
        &self,
        client: &UpstreamClient,
        owner: &Owner,
        route: &Route,
        target: String,
    ) -> Result<Owned, DockerError> {
        let daemon = Daemon { client };
        let mut owned = Owned {
            target,
            owner: owner.clone(),
            store: self.store.clone(),
            after: After::Nothing,
            client: client.clone(),
            names: None,
            load: None,
            dockerfile: None,
        };
        if resolve::shared_network_inspect(&route.endpoint) {
            owned.after = After::SharedNetwork;
        } else if let Some(p) = resolve::path_ref(&route.endpoint) {
            let id = lookup(daemon, owner, p.kind, &p.name).await?;
            owned.target = p.rewrite(route, &owned.target, &id);
        }
        if let Some(name) = resolve::query_ref(route)? {
            let id = lookup(daemon, owner, Kind::Container, &name).await?;
            owned.target = resolve::rewrite_query(&owned.target, "container", &id)?;
        }
        if filters::label_filtered(&route.endpoint) {
            owned.target = filters::merge_label_filter(&owned.target, owner)?;
        }
        if let Some(ns) = &owner.namespace {
            if matches!(
                route.endpoint,
                Endpoint::ContainerCreate | Endpoint::ContainerRename { .. }
            ) {
                let q = Query::parse(&route.query)
                    .map_err(|r| DockerError::client(r.status, r.message))?;
                let name = q.values("name").next().map(str::to_string);
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    owned.target =
                        resolve::rewrite_query(&owned.target, "name", &ns.to_daemon(&name))?;
                }
            }
            owned.names = Some((ns.clone(), route.endpoint.clone()));
        }
        // The image rules read the state file once per request.
        let state = if uses_image_rules(&route.endpoint) {
            load_state(&self.store).await?
        } else {
            images::State::default()
        };
        let rules = Rules {
            state: &state,
            owner,
        };
        let q = || Query::parse(&route.query).map_err(|r| DockerError::client(r.status, r.message));
        let ns = owner.namespace.as_ref().filter(|n| n.images());
        match &route.endpoint {
            Endpoint::ImageList => owned.after = After::ImageList,
            Endpoint::SystemDf => owned.after = After::SystemDf,
            Endpoint::Info => owned.after = After::Info,
            Endpoint::ImagePrune => {
                return Err(DockerError::client(
                    StatusCode::FORBIDDEN,
                    "cistern: image prune is not available through cistern: images are shared; remove your own images by name",
                ))
            }
            Endpoint::ImageInspect { name }
            | Endpoint::ImageHistory { name }
            | Endpoint::ImageGet { name } => {
                let found = own_image(daemon, ns, name).await?;
                rules.check_use(&found.name, found.id.as_deref())?;
                if found.namespaced {
                    owned.target = resolve::rewrite_image_path(route, &owned.target, &found.name);
                }
                if matches!(route.endpoint, Endpoint::ImageInspect { .. }) {
                    owned.after = After::ImageInspect;
                }
            }
            Endpoint::ImageGetAll => {
                let q = q()?;
                let mut names = Vec::new();
                for name in q.values("names") {
                    let found = own_image(daemon, ns, name).await?;
                    rules.check_use(&found.name, found.id.as_deref())?;
                    names.push(if found.namespaced {
                        found.name
                    } else {
                        name.to_string()
                    });
                }
                let path = owned.target.split('?').next().unwrap_or("").to_string();
                owned.target = format!("{path}?{}", q.with_all("names", &names).encode());
            }
            Endpoint::ImageDelete { name } => {
                let found = own_image(daemon, ns, name).await?;
                rules.check_delete(&found.name, found.id.as_deref())?;
                if found.namespaced {
                    owned.target = resolve::rewrite_image_path(route, &owned.target, &found.name);
                }
                owned.after = After::ImageDelete;
            }
            Endpoint::ImageTag { name } => {
                let q = q()?;
                let repo = q.values("repo").next().unwrap_or("").to_string();
                let tag = q.values("tag").next().unwrap_or("").to_string();
                let source = own_image(daemon, ns, name).await?;
                rules.check_use(&source.name, source.id.as_deref())?;
                if source.namespaced {
                    owned.target = resolve::rewrite_image_path(route, &owned.target, &source.name);
                }
                if let (Some(image), false) = (source.id, repo.is_empty()) {
                    let repo = new_repo(ns, &repo);
                    owned.target = resolve::rewrite_query(&owned.target, "repo", &repo)?;
                    let (current, reference) =
                        image_ref(daemon, &images::join(&repo, &tag)).await?;
                    rules.check_new_tag(&reference, current.as_deref())?;
                    owned.after = After::Tag { reference, image };
                }
            }
            Endpoint::ImagePush { name } => {
                let q = q()?;
                let tag = q.values("tag").next().unwrap_or("");
                if tag.is_empty() {
                    return Err(DockerError::client(
                        StatusCode::FORBIDDEN,
                        "cistern: push one tag at a time (name:tag)",
                    ));
                }
                let reference = images::join(name, tag);
                let found = own_image(daemon, ns, &reference).await?;
                rules.check_use(&found.name, found.id.as_deref())?;
                if found.namespaced {
                    owned.after = self
                        .push_as_named(daemon, &reference, &found)
                        .await?;
                }
            }
            Endpoint::Build => {
                let q = q()?;
                let tags: Vec<String> = q.values("t").map(|t| new_repo(ns, t)).collect();
                let quiet = q.values("q").next().is_some_and(AuxScanner::quiet_value);
                for t in &tags {
                    let (current, t) = image_ref(daemon, t).await?;
                    rules.check_new_tag(&t, current.as_deref())?;
                }
                if ns.is_some() && !tags.is_empty() {
                    let path = owned.target.split('?').next().unwrap_or("").to_string();
                    owned.target = format!("{path}?{}", q.with_all("t", &tags).encode());
                }
                if let Some(ns) = ns {
                    // `FROM` lines naming the tenant's own images.
                    let own: HashMap<String, String> = state
                        .tags
                        .iter()
                        .filter(|(_, r)| {
                            r.tenant == owner.tenant.as_str() && r.instance == owner.instance
                        })
                        .filter_map(|(tag, _)| {
                            let client = ns.image_to_client(tag);
                            (client != *tag).then(|| (image_load::key(&client), tag.clone()))
                        })
                        .collect();
                    if !own.is_empty() {
                        let dockerfile = q.values("dockerfile").next().unwrap_or("Dockerfile");
                        owned.dockerfile = Some((dockerfile.to_string(), own));
                    }
                }
                owned.after = After::Build { tags, quiet };
            }
            Endpoint::ImageLoad => {
                let protected = Arc::new(protected(daemon, &rules, ns).await?);
                owned.load = Some((protected.clone(), Arc::new(Mutex::new(None))));
                owned.after = After::Load(protected);
            }
            Endpoint::ImageCreate => {
                let q = q()?;
                let protected = protected(daemon, &rules, ns).await?;
                let refuse = |m: String| DockerError::client(StatusCode::FORBIDDEN, m);
                if q.values("fromSrc").next().is_some() {
                    // `docker import`: content from the client, a new image.
                    let repo = q.values("repo").next().unwrap_or("").to_string();
                    let tag = q.values("tag").next().unwrap_or("");
                    let mut reference = None;
                    if !repo.is_empty() {
                        let repo = new_repo(ns, &repo);
                        owned.target = resolve::rewrite_query(&owned.target, "repo", &repo)?;
                        let r = images::join(&repo, tag);
                        protected.check(&r, None).map_err(refuse)?;
                        reference = Some(r);
                    }
                    owned.after = After::Import { reference };
                } else if let Some(image) = q.values("fromImage").next() {
                    let tag = q.values("tag").next().unwrap_or("");
                    if !(image.contains('@') || tag.contains(':')) {
                        protected
                            .check_pull(&images::join(image, tag))
                            .map_err(refuse)?;
                    }
                }
            }
            Endpoint::ContainerCommit => {
                let q = q()?;
                let repo = q.values("repo").next().unwrap_or("").to_string();
                let tag = q.values("tag").next().unwrap_or("");
                let mut tags = Vec::new();
                if !repo.is_empty() {
                    let repo = new_repo(ns, &repo);
                    owned.target = resolve::rewrite_query(&owned.target, "repo", &repo)?;
                    let (current, reference) = image_ref(daemon, &images::join(&repo, tag)).await?;
                    rules.check_new_tag(&reference, current.as_deref())?;
                    tags.push(reference);
                }
                owned.after = After::Image {
                    how: "commit",
                    tags,
                };
            }
            _ => {}
        }
        Ok(owned)
    }
}

impl Ownership {
    /// A push of a tenant's namespaced tag: the daemon pushes the name the
    /// client gave, so that name is tagged on the image for the push and
    /// untagged after it ([`TempTag`]); one push per name at a time. A name
    /// taken on the daemon by another image is refused.
    async fn push_as_named(
        &self,
        daemon: Daemon<'_>,
        reference: &str,
        found: &OwnImage,
    ) -> Result<After, DockerError> {
        let lock = {
            let mut locks = self.push_locks.lock().await;
            locks
                .entry(reference.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        let guard = lock.lock_owned().await;
        let (existing, _) = image_ref(daemon, reference).await?;
        let mut temp = TempTag {
            client: daemon.client.clone(),
            reference: None,
            guard: Some(guard),
        };
        match existing {
            Some(id) if Some(&id) == found.id.as_ref() => {}
            Some(_) => {
                return Err(DockerError::client(
                    StatusCode::CONFLICT,
                    format!(
                    "cistern: cannot push {reference}: another image has that name on this daemon"
                ),
                ))
            }
            None => {
                let (repo, tag) = images::split(reference);
                let path = format!(
                    "/images/{}/tag?repo={}&tag={}",
                    crate::wire::query::escape(&found.name),
                    crate::wire::query::escape(repo),
                    crate::wire::query::escape(tag)
                );
                let answer = daemon.send(Method::POST, &path, None).await?;
                if !answer.status.is_success() {
                    return Err(DockerError::upstream(format!(
                        "cannot tag {reference} for the push: {}",
                        answer.message()
                    )));
                }
                temp.reference = Some(reference.to_string());
            }
        }
        Ok(After::Push(Box::new(temp)))
    }
}

/// The name a push needed, removed again (and the push lock released) when
/// the push's answer is over or the request is dropped.
#[derive(Debug)]
struct TempTag {
    client: UpstreamClient,
    reference: Option<String>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for TempTag {
    fn drop(&mut self) {
        let reference = self.reference.take();
        let guard = self.guard.take();
        let client = self.client.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            if let Some(reference) = reference {
                let path = format!(
                    "/images/{}?noprune=1",
                    crate::wire::query::escape(&reference)
                );
                if let Err(err) = (Daemon { client: &client })
                    .send(Method::DELETE, &path, None)
                    .await
                {
                    tracing::warn!(target: "cistern::ownership", reference, error = %err.message, "cannot remove the tag made for a push");
                }
            }
            drop(guard);
        });
    }
}

/// A body that keeps something alive until the body is dropped.
struct Holding<T> {
    inner: ProxyBody,
    _held: T,
}

impl<T: Unpin> Body for Holding<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

async fn load_state(store: &Store) -> Result<images::State, DockerError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.load())
        .await
        .map_err(|err| DockerError::internal(format!("state file task: {err}")))?
        .map_err(DockerError::from)
}

async fn update_state(store: &Store, owner: &Owner, change: Change) {
    let store = store.clone();
    let owner = owner.clone();
    let done = tokio::task::spawn_blocking(move || store.update(|s| change.apply(s, &owner))).await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::error!(target: "cistern::ownership", error = %err, "cannot record image ownership")
        }
        Err(err) => {
            tracing::error!(target: "cistern::ownership", error = %err, "cannot record image ownership")
        }
    }
}

/// Looks a name up on the daemon and decides; the full ID if owned.
async fn lookup(
    daemon: Daemon<'_>,
    owner: &Owner,
    kind: Kind,
    name: &str,
) -> Result<String, DockerError> {
    Ok(lookup_ref(daemon, owner, kind, name).await?.id)
}

/// A name resolved to one of the tenant's resources.
struct Resolved {
    /// The full ID (a volume's name).
    id: String,
    /// The daemon's (prefixed) name when it was found through the tenant's
    /// namespace; `None` when found as written (an ID, an ID prefix, an
    /// anonymous volume, a name from before namespaces).
    namespaced: Option<String>,
}

/// [`lookup`], trying the tenant's namespace first: `db` is `<tenant>-db`
/// on the daemon, then as written.
async fn lookup_ref(
    daemon: Daemon<'_>,
    owner: &Owner,
    kind: Kind,
    name: &str,
) -> Result<Resolved, DockerError> {
    if let (Some(ns), Kind::Container | Kind::Volume | Kind::Network) = (&owner.namespace, kind) {
        if !name.is_empty() {
            let prefixed = ns.to_daemon(name);
            if let Found::Exists { id, labels, .. } = find(daemon, kind, &prefixed).await? {
                if owner.owns(&labels) {
                    return Ok(Resolved {
                        id,
                        namespaced: Some(prefixed),
                    });
                }
            }
        }
    }
    let found = find(daemon, kind, name).await?;
    let found = match (kind, found) {
        // An exec is its container's: decide on the container's labels.
        (
            Kind::Exec,
            Found::Exists {
                id,
                container: Some(container),
                ..
            },
        ) => match find(daemon, Kind::Container, &container).await? {
            Found::Exists { labels, .. } => Found::Exists {
                id,
                labels,
                container: Some(container),
            },
            Found::Missing => Found::Missing,
        },
        (_, found) => found,
    };
    let decided = resolve::decide(kind, name, &found, owner);
    if decided.is_err() {
        tracing::info!(target: "cistern::ownership", tenant = %owner.tenant, kind = ?kind, exists = found != Found::Missing, "not the tenant's: answered as missing");
    }
    decided.map(|id| Resolved {
        id,
        namespaced: None,
    })
}

async fn find(daemon: Daemon<'_>, kind: Kind, name: &str) -> Result<Found, DockerError> {
    if name.is_empty() {
        return Ok(Found::Missing);
    }
    let answer = daemon.get(&kind.inspect_path(name)).await?;
    Found::from_answer(kind, answer.status, &answer.body)
}

/// An image as the daemon resolves `name`: its ID (`None` when missing) and
/// the name in the daemon's familiar form (one of its `RepoTags`), which is
/// how the state file records tags: clients send `docker tag` targets fully
/// qualified and `rmi` names as typed.
async fn image_ref(
    daemon: Daemon<'_>,
    name: &str,
) -> Result<(Option<String>, String), DockerError> {
    if name.is_empty() {
        return Ok((None, String::new()));
    }
    let answer = daemon
        .get(&format!(
            "/images/{}/json",
            crate::wire::query::escape(name)
        ))
        .await?;
    if answer.status.is_server_error() {
        return Err(DockerError::upstream(format!(
            "the Docker daemon failed to look up an image: {}",
            answer.message()
        )));
    }
    if answer.status != StatusCode::OK {
        return Ok((None, images::normalize(name)));
    }
    let v = daemon::json(&answer)?;
    let tags: Vec<&str> = v
        .get("RepoTags")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    let id = v.get("Id").and_then(|v| v.as_str()).map(str::to_string);
    Ok((id, images::familiar(name, &tags)))
}

/// An image a tenant names, as found on the daemon.
struct OwnImage {
    /// Its ID; `None` when missing.
    id: Option<String>,
    /// The daemon's familiar name for it (see [`image_ref`]).
    name: String,
    /// Found in the tenant's image namespace.
    namespaced: bool,
}

/// An image reference: the tenant's namespaced tag first, then as written
/// (base images, IDs, digests).
async fn own_image(
    daemon: Daemon<'_>,
    ns: Option<&Namespace>,
    name: &str,
) -> Result<OwnImage, DockerError> {
    if let Some(ns) = ns {
        let mapped = ns.image_to_daemon(name);
        if mapped != name {
            let (id, familiar) = image_ref(daemon, &mapped).await?;
            if id.is_some() {
                return Ok(OwnImage {
                    id,
                    name: familiar,
                    namespaced: true,
                });
            }
        }
    }
    let (id, familiar) = image_ref(daemon, name).await?;
    Ok(OwnImage {
        id,
        name: familiar,
        namespaced: false,
    })
}

/// What a load, import or pull may not replace (see [`image_load`]).
async fn protected(
    daemon: Daemon<'_>,
    rules: &Rules<'_>,
    ns: Option<&Namespace>,
) -> Result<image_load::Protected, DockerError> {
    let answer = daemon.get("/images/json").await?;
    if answer.status != StatusCode::OK {
        return Err(DockerError::upstream(format!(
            "the Docker daemon failed to list images: {}",
            answer.message()
        )));
    }
    Ok(image_load::Protected::new(&answer.body, rules, ns))
}

/// The repository a tenant's new tag goes to (namespaced when on).
fn new_repo(ns: Option<&Namespace>, repo: &str) -> String {
    ns.map_or_else(|| repo.to_string(), |ns| ns.image_to_daemon(repo))
}

/// What to do with the daemon's answer.
#[derive(Debug)]
enum After {
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

/// A request resolved for its tenant.
#[derive(Debug)]
pub struct Owned {
    /// The target to forward (full IDs, merged filters).
    pub target: String,
    owner: Owner,
    store: Store,
    after: After,
    client: UpstreamClient,
    /// The tenant's namespace and the endpoint: answers are mapped back
    /// (names in listings, inspects and events; error messages always).
    names: Option<(Namespace, Endpoint)>,
    /// `docker load`: what the archive's tags may not replace, and why the
    /// body was cut off, if it was.
    load: Option<(Arc<image_load::Protected>, image_load::Refusal)>,
    /// A namespaced tenant's build: the Dockerfile's name in the context and
    /// its own images, for [`build_context::ContextRewrite`].
    dockerfile: Option<(String, HashMap<String, String>)>,
}

/// The strings at `HostConfig.<key>` of a canonical create body.
fn host_strings(value: &Json, key: &str) -> Vec<String> {
    value
        .at(&["HostConfig", key])
        .map(|v| v.strings().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A network reference that names a user-defined network: not `default`, a
/// predefined one (`host` is the policy's to refuse) or `container:`.
fn is_user_network(name: &str) -> bool {
    !(name.is_empty()
        || name == "default"
        || resolve::PREDEFINED_NETWORKS.contains(&name)
        || name
            .split_once(':')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("container")))
}

impl Owned {
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

    /// Step 3: the body to forward, labelled, with its references resolved,
    /// edited in place.
    pub async fn body(
        &self,
        client: &UpstreamClient,
        route: &Route,
        body: &mut RequestBody,
    ) -> Result<(), DockerError> {
        let daemon = Daemon { client };
        let owner = &self.owner;
        let needs = labels::labels_create(&route.endpoint)
            || matches!(
                route.endpoint,
                Endpoint::NetworkConnect { .. } | Endpoint::NetworkDisconnect { .. }
            );
        if !needs {
            return Ok(());
        }
        let value = body
            .json_mut()
            .map_err(|r| DockerError::client(r.status, r.message))?;
        match route.endpoint {
            Endpoint::ContainerCreate => self.container_create(daemon, route, value).await?,
            Endpoint::VolumeCreate => {
                if let Some(ns) = &owner.namespace {
                    ns.create_body(value);
                }
                if let Some(name) = value.get("Name").and_then(Json::as_str) {
                    if let Found::Exists { labels, .. } = find(daemon, Kind::Volume, name).await? {
                        if !owner.owns(&labels) {
                            return Err(volume_taken(name));
                        }
                    }
                }
            }
            Endpoint::NetworkCreate => {
                if let Some(ns) = &owner.namespace {
                    ns.create_body(value);
                }
            }
            Endpoint::NetworkConnect { .. } | Endpoint::NetworkDisconnect { .. } => {
                if let Some(name) = value.get("Container").and_then(Json::as_str) {
                    let name = name.to_string();
                    let id = lookup(daemon, owner, Kind::Container, &name).await?;
                    value.set("Container", Json::string(id));
                }
            }
            _ => {}
        }
        if labels::labels_create(&route.endpoint) {
            labels::label_body(value, owner);
        }
        Ok(())
    }

    /// Container create: the image may be used; every container, network and
    /// volume the body names is the tenant's (and, with a namespace, written
    /// as the daemon knows it); missing named volumes are created labelled.
    async fn container_create(
        &self,
        daemon: Daemon<'_>,
        route: &Route,
        value: &mut Json,
    ) -> Result<(), DockerError> {
        let owner = &self.owner;
        if let Some(image) = value.get("Image").and_then(Json::as_str) {
            let ns = owner.namespace.as_ref().filter(|n| n.images());
            let found = own_image(daemon, ns, image).await?;
            let state = load_state(&self.store).await?;
            Rules {
                state: &state,
                owner,
            }
            .check_use(&found.name, found.id.as_deref())?;
            if found.namespaced {
                value.set("Image", Json::string(found.name));
            }
        }
        // Networks: `NetworkMode` and the `EndpointsConfig` keys.
        let mut user_networks: Vec<String> = Vec::new();
        if let Some(mode) = value
            .at(&["HostConfig", "NetworkMode"])
            .and_then(Json::as_str)
            .map(str::to_string)
        {
            if is_user_network(&mode) {
                let net = self.network_ref(daemon, &mode).await?;
                value
                    .object_mut("HostConfig")
                    .set("NetworkMode", Json::string(net.clone()));
                user_networks.push(net);
            }
        }
        if let Some(Json::Object(eps)) = value
            .get_mut("NetworkingConfig")
            .and_then(|n| n.get_mut("EndpointsConfig"))
        {
            for (key, _) in eps.iter_mut() {
                if is_user_network(key) {
                    *key = self.network_ref(daemon, key).await?;
                    if !user_networks.contains(key) {
                        user_networks.push(key.clone());
                    }
                }
            }
        }
        // Other containers: `container:` modes, `VolumesFrom`, `Links`.
        for key in ["NetworkMode", "PidMode", "IpcMode", "Cgroup"] {
            let target = value
                .at(&["HostConfig", key])
                .and_then(Json::as_str)
                .and_then(|m| {
                    let (k, rest) = m.split_once(':')?;
                    k.eq_ignore_ascii_case("container")
                        .then(|| rest.to_string())
                });
            if let Some(target) = target {
                let id = lookup(daemon, owner, Kind::Container, &target).await?;
                value
                    .object_mut("HostConfig")
                    .set(key, Json::string(format!("container:{id}")));
            }
        }
        let from = host_strings(value, "VolumesFrom");
        if !from.is_empty() {
            let mut resolved = Vec::with_capacity(from.len());
            for entry in from {
                let (name, mode) = match entry.split_once(':') {
                    Some((name, mode)) => (name, Some(mode)),
                    None => (entry.as_str(), None),
                };
                let id = lookup(daemon, owner, Kind::Container, name).await?;
                resolved.push(match mode {
                    Some(mode) => format!("{id}:{mode}"),
                    None => id,
                });
            }
            value
                .object_mut("HostConfig")
                .set("VolumesFrom", Json::string_array(resolved));
        }
        let links = host_strings(value, "Links");
        if !links.is_empty() {
            let mut resolved = Vec::with_capacity(links.len());
            for link in links {
                let (name, alias) = match link.split_once(':') {
                    Some((name, alias)) => (name, alias),
                    None => (link.as_str(), link.as_str()),
                };
                let name = name.trim_start_matches('/');
                let found = lookup_ref(daemon, owner, Kind::Container, name).await?;
                resolved.push(match found.namespaced {
                    // The alias stays the name the client gave.
                    Some(daemon_name) => format!("{daemon_name}:{}", alias.trim_start_matches('/')),
                    None => link.clone(),
                });
            }
            value
                .object_mut("HostConfig")
                .set("Links", Json::string_array(resolved));
        }
        // Named volumes: `Binds` sources that are not paths, `Mounts` of type volume.
        let binds = host_strings(value, "Binds");
        if !binds.is_empty() {
            let mut rewritten = Vec::with_capacity(binds.len());
            for bind in binds {
                let (source, rest) = bind.split_once(':').unwrap_or((bind.as_str(), ""));
                if source.is_empty() || source.starts_with('/') || !bind.contains(':') {
                    rewritten.push(bind.clone());
                    continue;
                }
                let name = self.volume_ref(daemon, source, None).await?;
                rewritten.push(format!("{name}:{rest}"));
            }
            value
                .object_mut("HostConfig")
                .set("Binds", Json::string_array(rewritten));
        }
        let mut mounts: Vec<(usize, String, Option<serde_json::Value>)> = Vec::new();
        if let Some(list) = value.at(&["HostConfig", "Mounts"]).and_then(Json::as_array) {
            for (i, m) in list.iter().enumerate() {
                let ty = m.get("Type").and_then(Json::as_str).unwrap_or("");
                let source = m.get("Source").and_then(Json::as_str).unwrap_or("");
                if ty == "volume" && !source.is_empty() {
                    let options = m
                        .get("VolumeOptions")
                        .and_then(|o| serde_json::to_value(o).ok());
                    mounts.push((i, source.to_string(), options));
                }
            }
        }
        for (i, source, options) in mounts {
            let name = self.volume_ref(daemon, &source, options.as_ref()).await?;
            if let Some(Json::Array(list)) = value
                .get_mut("HostConfig")
                .and_then(|h| h.get_mut("Mounts"))
            {
                if let Some(m) = list.get_mut(i) {
                    m.set("Source", Json::string(name));
                }
            }
        }
        // The name the client chose stays reachable on its networks.
        if let Some(ns) = &owner.namespace {
            let q =
                Query::parse(&route.query).map_err(|r| DockerError::client(r.status, r.message))?;
            let name = q.values("name").next().map(str::to_string);
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                ns.alias_networks(value, &name, &user_networks);
            }
        }
        Ok(())
    }

    /// A user-defined network the body names: the tenant's, as the daemon
    /// knows it (the prefixed name when found through the namespace).
    async fn network_ref(&self, daemon: Daemon<'_>, name: &str) -> Result<String, DockerError> {
        let found = lookup_ref(daemon, &self.owner, Kind::Network, name).await?;
        Ok(found.namespaced.unwrap_or_else(|| name.to_string()))
    }

    /// A named volume the body mounts: the tenant's existing one (as the
    /// daemon names it), or a new one created with the tenant's labels (and
    /// name prefix) before the daemon would create it unlabelled.
    async fn volume_ref(
        &self,
        daemon: Daemon<'_>,
        name: &str,
        options: Option<&serde_json::Value>,
    ) -> Result<String, DockerError> {
        let owner = &self.owner;
        if let Some(ns) = &owner.namespace {
            let prefixed = ns.to_daemon(name);
            match find(daemon, Kind::Volume, &prefixed).await? {
                Found::Exists { labels, .. } if owner.owns(&labels) => return Ok(prefixed),
                Found::Exists { .. } => return Err(volume_taken(name)),
                Found::Missing => {}
            }
            // An anonymous volume (or one from before namespaces) by its name.
            if let Found::Exists { labels, .. } = find(daemon, Kind::Volume, name).await? {
                if owner.owns(&labels) {
                    return Ok(name.to_string());
                }
            }
            create_volume(daemon, owner, &prefixed, options).await?;
            return Ok(prefixed);
        }
        match find(daemon, Kind::Volume, name).await? {
            Found::Exists { labels, .. } if owner.owns(&labels) => Ok(name.to_string()),
            Found::Exists { .. } => Err(volume_taken(name)),
            Found::Missing => {
                create_volume(daemon, owner, name, options).await?;
                Ok(name.to_string())
            }
        }
    }

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

    async fn finish_owned(
        self,
        response: Response<ProxyBody>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let status = response.status();
        match self.after {
            After::Nothing => Ok(response),
            After::ImageList | After::SystemDf if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let state = load_state(&self.store).await?;
                let rules = Rules {
                    state: &state,
                    owner: &self.owner,
                };
                let filtered = match self.after {
                    After::ImageList => filters::filter_images(
                        &body,
                        |id| rules.visible(id),
                        |t| rules.tag_visible(t),
                    )?,
                    _ => filters::filter_df(
                        &body,
                        &self.owner,
                        |id| rules.visible(id),
                        |t| rules.tag_visible(t),
                    )?,
                };
                Ok(replace_body(&mut parts, filtered))
            }
            After::Load(protected) if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let (tags, ids) = image_load::loaded(&body);
                let daemon = Daemon {
                    client: &self.client,
                };
                let mut new_images = ids;
                for tag in tags {
                    if let Ok((Some(id), familiar)) = image_ref(daemon, &tag).await {
                        if !protected.existed(&id) {
                            new_images.push(id.clone());
                        }
                        update_state(
                            &self.store,
                            &self.owner,
                            Change::Tag {
                                reference: familiar,
                                image: id,
                            },
                        )
                        .await;
                    }
                }
                for id in new_images.into_iter().filter(|id| !protected.existed(id)) {
                    update_state(
                        &self.store,
                        &self.owner,
                        Change::Image {
                            id,
                            how: "load",
                            tags: Vec::new(),
                        },
                    )
                    .await;
                }
                Ok(replace_body(&mut parts, body.to_vec()))
            }
            After::Import { reference } if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let id = body
                    .split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                    .filter_map(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
                    .find(|s| s.starts_with("sha256:"));
                if let Some(id) = id {
                    update_state(
                        &self.store,
                        &self.owner,
                        Change::Image {
                            id,
                            how: "import",
                            tags: reference.into_iter().collect(),
                        },
                    )
                    .await;
                }
                Ok(replace_body(&mut parts, body.to_vec()))
            }
            After::ImageInspect if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let state = load_state(&self.store).await?;
                let rules = Rules {
                    state: &state,
                    owner: &self.owner,
                };
                let filtered = filters::filter_image_inspect(&body, |t| rules.tag_visible(t))?;
                Ok(replace_body(&mut parts, filtered))
            }
            After::Info if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let counts = self.counts().await?;
                Ok(replace_body(
                    &mut parts,
                    filters::filter_info(&body, &counts)?,
                ))
            }
            After::SharedNetwork if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                Ok(replace_body(
                    &mut parts,
                    filters::filter_shared_network(&body)?,
                ))
            }
            After::Build { tags, quiet } if status == StatusCode::OK => {
                let (parts, body) = response.into_parts();
                let watched = BuildWatch {
                    inner: body,
                    scanner: AuxScanner::new(quiet),
                    record: Some((self.store, self.owner, tags)),
                    pending: None,
                };
                Ok(Response::from_parts(parts, watched.boxed_unsync()))
            }
            After::Image { how, tags } if status == StatusCode::CREATED => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("Id").and_then(|i| i.as_str()).map(str::to_string));
                if let Some(id) = id {
                    update_state(&self.store, &self.owner, Change::Image { id, how, tags }).await;
                }
                Ok(replace_body(&mut parts, body.to_vec()))
            }
            After::Tag { reference, image } if status == StatusCode::CREATED => {
                // The tag exists now: record it as the daemon names it.
                let daemon = Daemon {
                    client: &self.client,
                };
                let reference = match image_ref(daemon, &reference).await {
                    Ok((_, familiar)) => familiar,
                    Err(_) => images::normalize(&reference),
                };
                update_state(&self.store, &self.owner, Change::Tag { reference, image }).await;
                Ok(response)
            }
            After::Push(temp) => {
                let (parts, body) = response.into_parts();
                let held = Holding {
                    inner: body,
                    _held: temp,
                };
                Ok(Response::from_parts(parts, held.boxed_unsync()))
            }
            After::ImageDelete if status == StatusCode::OK => {
                let (mut parts, body) = response.into_parts();
                let body = read_whole(body).await?;
                if let Some(change) = Change::from_delete_answer(&body) {
                    update_state(&self.store, &self.owner, change).await;
                }
                Ok(replace_body(&mut parts, body.to_vec()))
            }
            _ => Ok(response),
        }
    }
}

/// Maps the names in an answer back to the tenant's: JSON errors for every
/// endpoint, listings and inspects whole, event streams line by line.
async fn map_names(
    ns: &Namespace,
    endpoint: &Endpoint,
    response: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, DockerError> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_client_error() || status.is_server_error() {
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
        return Ok(replace_body(&mut parts, mapped));
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

impl Owned {
    /// The tenant's containers by state, and the images it may see.
    async fn counts(&self) -> Result<filters::Counts, DockerError> {
        let daemon = Daemon {
            client: &self.client,
        };
        let containers = filters::merge_label_filter("/containers/json?all=1", &self.owner)?;
        let answer = daemon.get(&containers).await?;
        let containers = daemon::json(&answer)?;
        let images = daemon.get("/images/json").await?;
        let state = load_state(&self.store).await?;
        let rules = Rules {
            state: &state,
            owner: &self.owner,
        };
        let images = filters::filter_images(
            &images.body,
            |id| rules.visible(id),
            |t| rules.tag_visible(t),
        )?;
        Ok(filters::Counts::new(&containers, &images))
    }
}

fn volume_taken(name: &str) -> DockerError {
    DockerError::client(
        StatusCode::CONFLICT,
        format!("cistern: the volume name {name} is in use by another tenant"),
    )
}

/// Creates a named volume with the owner's labels before a container create
/// would make it unlabelled; the mount's `VolumeOptions` (labels, driver) go
/// along, as the daemon would have used them.
async fn create_volume(
    daemon: Daemon<'_>,
    owner: &Owner,
    name: &str,
    options: Option<&serde_json::Value>,
) -> Result<(), DockerError> {
    let mut labels = options
        .and_then(|o| o.get("Labels"))
        .and_then(|l| l.as_object())
        .cloned()
        .unwrap_or_default();
    for v in owner.filter_values() {
        if let Some((k, v)) = v.split_once('=') {
            labels.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
    }
    let driver = options.and_then(|o| o.get("DriverConfig"));
    let body = serde_json::json!({
        "Name": name,
        "Driver": driver.and_then(|d| d.get("Name")).and_then(|n| n.as_str()).filter(|n| !n.is_empty()).unwrap_or("local"),
        "DriverOpts": driver.and_then(|d| d.get("Options")).cloned().unwrap_or(serde_json::Value::Null),
        "Labels": labels,
    });
    let answer = daemon
        .send(
            Method::POST,
            "/volumes/create",
            Some(body.to_string().into_bytes()),
        )
        .await?;
    if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
        return Err(DockerError {
            status: answer.status,
            side: crate::docker::error::Side::Upstream,
            message: format!("cistern: cannot create volume {name}: {}", answer.message()),
        });
    }
    // The name may have been taken by someone else in the meantime.
    match find(daemon, Kind::Volume, name).await? {
        Found::Exists { labels, .. } if owner.owns(&labels) => Ok(()),
        _ => Err(volume_taken(name)),
    }
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
                    Some(handle.spawn(async move { update_state(&store, &owner, change).await }));
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

/// Shared between the proxy and shutdown.
pub type SharedOwnership = Arc<Ownership>;

/// The driver spawns these futures: they must stay `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn send_check(
    o: &Ownership,
    c: &UpstreamClient,
    owner: &Owner,
    r: &Route,
    owned: Owned,
    resp: Response<ProxyBody>,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(o.resolve(c, owner, r, String::new()));
    let mut body = RequestBody::empty();
    is_send(owned.body(c, r, &mut body));
    is_send(owned.finish(resp));
}
