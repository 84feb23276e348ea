//! Resolution: which container, exec, volume, network or image a request
//! names, and whether the tenant owns it.
//!
//! cistern does not guess how dockerd resolves a name (full ID, unique ID
//! prefix, name; for execs the exact ID): it asks the daemon
//! (`GET /containers/{x}/json`, `/exec/{x}/json`, `/volumes/{x}`,
//! `/networks/{x}`, `/images/{x}/json`) and reads the labels of what comes
//! back. Then:
//!
//! * owned by this tenant (both [`TENANT`](super::labels::TENANT) and
//!   [`INSTANCE`](super::labels::INSTANCE) labels match; an exec through its
//!   container): the request is forwarded **with the full ID in the path** (or
//!   in the `container` query of `POST /commit`, or in the `Container` of a
//!   network connect body), so a rename or a new container matching the same
//!   prefix between the check and the use cannot redirect it;
//! * anything else, missing or someone else's: the answer dockerd gives for a
//!   missing one, with its own wording ([`not_found`]), so other tenants'
//!   resources are invisible.
//!
//! With a name namespace ([`super::names`]) a name is tried as the tenant's
//! first (`db` is `<tenant>-db` on the daemon), then as written (an ID, an ID
//! prefix, an anonymous volume, a name from before namespaces). A named
//! volume a create mounts is the tenant's, or is missing and created first
//! with the tenant's labels ([`VolumeMount`]).
//!
//! This file is the I/O-free half: what to look up ([`path_ref`],
//! [`query_ref`]), how to read the daemon's answer ([`Found::from_answer`]),
//! which inspects to ask for and in what order ([`Lookup`], [`VolumeMount`]),
//! the decision ([`decide`]) and the rewritten path ([`PathRef::rewrite`]).
//! [`super::lookup`] asks the daemon.

use std::collections::BTreeMap;

use http::StatusCode;

use crate::daemon::error::{DockerError, Side};
use crate::wire::query;
use crate::wire::route::{Endpoint, Route};

use super::labels::{self, Owner};

/// The kinds of resources a request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Exec,
    Volume,
    Network,
}

impl Kind {
    /// The daemon path that inspects one (the name percent-encoded).
    pub fn inspect_path(self, name: &str) -> String {
        let name = query::escape(name);
        match self {
            Kind::Container => format!("/containers/{name}/json"),
            Kind::Exec => format!("/exec/{name}/json"),
            Kind::Volume => format!("/volumes/{name}"),
            Kind::Network => format!("/networks/{name}"),
        }
    }
}

/// dockerd's answer for a missing resource, word for word (moby 20.10:
/// `errNoSuchContainer`, `errExecNotFound`, the volume service's
/// `get <name>: no such volume`, libnetwork's `ErrNoSuchNetwork`), status 404.
pub fn not_found(kind: Kind, name: &str) -> DockerError {
    let message = match kind {
        Kind::Container => format!("No such container: {name}"),
        Kind::Exec => format!("No such exec instance: {name}"),
        Kind::Volume => format!("get {name}: no such volume"),
        Kind::Network => format!("network {name} not found"),
    };
    hidden(StatusCode::NOT_FOUND, message)
}

/// An answer in the daemon's own words (no `cistern:` prefix).
pub fn hidden(status: StatusCode, message: String) -> DockerError {
    DockerError {
        status,
        side: Side::AsDaemon,
        message,
    }
}

/// What the daemon said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Not there (or not uniquely: an ambiguous prefix is "missing" too).
    Missing,
    /// There: its full ID (a volume's name) and labels. For an exec, the
    /// labels are its container's and `container` is set.
    Exists {
        id: String,
        labels: BTreeMap<String, String>,
        container: Option<String>,
    },
}

impl Found {
    /// Reads an inspect answer. `Err` for answers that are neither found nor
    /// missing (the daemon failing: 5xx).
    pub fn from_answer(kind: Kind, status: StatusCode, body: &[u8]) -> Result<Found, DockerError> {
        if status.is_server_error() {
            return Err(DockerError::upstream(format!(
                "the Docker daemon failed to look up a {kind:?} ({status})"
            )));
        }
        if status != StatusCode::OK {
            return Ok(Found::Missing);
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
            DockerError::upstream(format!("unreadable {kind:?} inspect answer: {err}"))
        })?;
        let s = |key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let (id, labels, container) = match kind {
            Kind::Container => (
                s("Id"),
                labels::from_value(v.get("Config").and_then(|c| c.get("Labels"))),
                None,
            ),
            Kind::Exec => (s("ID"), BTreeMap::new(), s("ContainerID")),
            Kind::Volume => (s("Name"), labels::from_value(v.get("Labels")), None),
            Kind::Network => (s("Id"), labels::from_value(v.get("Labels")), None),
        };
        match id {
            Some(id) if !id.is_empty() => Ok(Found::Exists {
                id,
                labels,
                container,
            }),
            _ => Err(DockerError::upstream(format!(
                "the daemon's {kind:?} inspect answer has no ID"
            ))),
        }
    }
}

/// The decision: the full ID to use, or the daemon's "missing" answer.
pub fn decide(kind: Kind, name: &str, found: &Found, owner: &Owner) -> Result<String, DockerError> {
    match found {
        Found::Exists { id, labels, .. } if owner.owns(labels) => Ok(id.clone()),
        _ => Err(not_found(kind, name)),
    }
}

/// A volume name another tenant holds (dockerd would reuse it).
pub fn volume_taken(name: &str) -> DockerError {
    DockerError::client(
        StatusCode::CONFLICT,
        format!("cistern: the volume name {name} is in use by another tenant"),
    )
}

/// A name resolved to one of the tenant's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The full ID (a volume's name).
    pub id: String,
    /// The daemon's (prefixed) name when it was found through the tenant's
    /// namespace; `None` when found as written.
    pub namespaced: Option<String>,
}

/// What a [`Lookup`] needs next.
#[derive(Debug)]
pub enum Next {
    /// The daemon's inspect of this name, read with [`Found::from_answer`]
    /// and given to [`Lookup::answer`].
    Inspect(Kind, String),
    /// Decided: the tenant's resource, or the daemon's "missing" answer.
    Done(Result<Resolved, DockerError>),
}

/// Where a [`Lookup`] stands.
#[derive(Debug)]
enum Asked {
    /// The tenant's prefixed name.
    Namespaced(String),
    /// The name as written.
    AsWritten,
    /// The container of the exec found as written.
    ExecContainer { id: String, container: String },
}

/// One name being resolved, I/O-free: the caller asks the daemon for what
/// [`Next::Inspect`] names and gives back what it found, until
/// [`Next::Done`]. The order: with a namespace, the tenant's prefixed name
/// (containers, volumes, networks); then the name as written; for an exec,
/// then its container, whose labels decide.
#[derive(Debug)]
pub struct Lookup<'a> {
    owner: &'a Owner,
    kind: Kind,
    name: &'a str,
    asked: Asked,
}

impl<'a> Lookup<'a> {
    /// Starts resolving `name`: the lookup and the first inspect to ask for.
    pub fn start(owner: &'a Owner, kind: Kind, name: &'a str) -> (Lookup<'a>, Next) {
        let prefixed = match (&owner.namespace, kind) {
            (Some(ns), Kind::Container | Kind::Volume | Kind::Network) if !name.is_empty() => {
                Some(ns.to_daemon(name))
            }
            _ => None,
        };
        let (asked, first) = match prefixed {
            Some(p) => (Asked::Namespaced(p.clone()), p),
            None => (Asked::AsWritten, name.to_string()),
        };
        let lookup = Lookup {
            owner,
            kind,
            name,
            asked,
        };
        (lookup, Next::Inspect(kind, first))
    }

    /// What the daemon found for the last [`Next::Inspect`]; what is next.
    pub fn answer(&mut self, found: Found) -> Next {
        match std::mem::replace(&mut self.asked, Asked::AsWritten) {
            Asked::Namespaced(prefixed) => match found {
                Found::Exists { id, labels, .. } if self.owner.owns(&labels) => {
                    Next::Done(Ok(Resolved {
                        id,
                        namespaced: Some(prefixed),
                    }))
                }
                _ => Next::Inspect(self.kind, self.name.to_string()),
            },
            Asked::AsWritten => match (self.kind, found) {
                // An exec is its container's: decide on the container's labels.
                (
                    Kind::Exec,
                    Found::Exists {
                        id,
                        container: Some(container),
                        ..
                    },
                ) => {
                    self.asked = Asked::ExecContainer {
                        id,
                        container: container.clone(),
                    };
                    Next::Inspect(Kind::Container, container)
                }
                (_, found) => self.decide(found),
            },
            Asked::ExecContainer { id, container } => self.decide(match found {
                Found::Exists { labels, .. } => Found::Exists {
                    id,
                    labels,
                    container: Some(container),
                },
                Found::Missing => Found::Missing,
            }),
        }
    }

    fn decide(&self, found: Found) -> Next {
        let decided = decide(self.kind, self.name, &found, self.owner);
        if decided.is_err() {
            tracing::info!(target: "cistern::ownership", tenant = %self.owner.tenant, kind = ?self.kind, exists = found != Found::Missing, "not the tenant's: answered as missing");
        }
        Next::Done(decided.map(|id| Resolved {
            id,
            namespaced: None,
        }))
    }
}

/// What a [`VolumeMount`] needs next.
#[derive(Debug)]
pub enum VolumeNext {
    /// The daemon's inspect of this volume name, given to
    /// [`VolumeMount::answer`].
    Inspect(String),
    /// Missing: create this volume with the tenant's labels (before the
    /// daemon would create it unlabelled), then mount it by this name.
    Create(String),
    /// Decided: the name to mount, or why not.
    Done(Result<String, DockerError>),
}

/// Where a [`VolumeMount`] stands.
#[derive(Debug)]
enum VolumeAsked {
    /// The tenant's prefixed name.
    Namespaced(String),
    /// The name as written, after the prefixed one was missing: the
    /// prefixed one is created unless this is the tenant's.
    AsWrittenOr(String),
    /// The name as written, without a namespace.
    AsWritten,
}

/// A named volume a create body mounts, I/O-free like [`Lookup`]: the
/// tenant's existing one, as the daemon names it, or a new one to create
/// with the tenant's labels and name prefix. A name another tenant holds is
/// refused ([`volume_taken`]).
#[derive(Debug)]
pub struct VolumeMount<'a> {
    owner: &'a Owner,
    name: &'a str,
    asked: VolumeAsked,
}

impl<'a> VolumeMount<'a> {
    /// Starts resolving `name`: the mount and the first inspect to ask for.
    pub fn start(owner: &'a Owner, name: &'a str) -> (VolumeMount<'a>, VolumeNext) {
        let (asked, first) = match &owner.namespace {
            Some(ns) => {
                let prefixed = ns.to_daemon(name);
                (VolumeAsked::Namespaced(prefixed.clone()), prefixed)
            }
            None => (VolumeAsked::AsWritten, name.to_string()),
        };
        let mount = VolumeMount { owner, name, asked };
        (mount, VolumeNext::Inspect(first))
    }

    /// What the daemon found for the last [`VolumeNext::Inspect`].
    pub fn answer(&mut self, found: Found) -> VolumeNext {
        let owned = matches!(&found, Found::Exists { labels, .. } if self.owner.owns(labels));
        let exists = found != Found::Missing;
        match std::mem::replace(&mut self.asked, VolumeAsked::AsWritten) {
            VolumeAsked::Namespaced(prefixed) if owned => VolumeNext::Done(Ok(prefixed)),
            VolumeAsked::Namespaced(_) if exists => VolumeNext::Done(Err(volume_taken(self.name))),
            VolumeAsked::Namespaced(prefixed) => {
                // An anonymous volume (or one from before namespaces) by its name.
                self.asked = VolumeAsked::AsWrittenOr(prefixed);
                VolumeNext::Inspect(self.name.to_string())
            }
            VolumeAsked::AsWrittenOr(_) | VolumeAsked::AsWritten if owned => {
                VolumeNext::Done(Ok(self.name.to_string()))
            }
            VolumeAsked::AsWrittenOr(prefixed) => VolumeNext::Create(prefixed),
            VolumeAsked::AsWritten if exists => VolumeNext::Done(Err(volume_taken(self.name))),
            VolumeAsked::AsWritten => VolumeNext::Create(self.name.to_string()),
        }
    }
}

/// A resource named in the path, and how to write the path with its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRef {
    pub kind: Kind,
    /// The name as the client wrote it (percent-decoded).
    pub name: String,
    /// The unversioned path before the name, e.g. `/containers/`.
    prefix: &'static str,
    /// The unversioned path after the name, e.g. `/json` (already encoded).
    suffix: String,
}

impl PathRef {
    fn new(kind: Kind, name: &str, prefix: &'static str, suffix: &str) -> PathRef {
        PathRef {
            kind,
            name: name.to_string(),
            prefix,
            suffix: suffix.to_string(),
        }
    }

    /// The request target with `id` in place of the name: version prefix as
    /// the client sent it, the query of `target` unchanged.
    pub fn rewrite(&self, route: &Route, target: &str, id: &str) -> String {
        rewrite_path(route, target, self.prefix, id, &self.suffix)
    }
}

fn rewrite_path(route: &Route, target: &str, prefix: &str, name: &str, suffix: &str) -> String {
    let version = route.version.map(|v| format!("/v{v}")).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q);
    let mut out = format!("{version}{prefix}{}{suffix}", query::escape(name));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// An image endpoint's target with the daemon's name for the image in the
/// path (a namespaced tag); other targets unchanged.
pub fn rewrite_image_path(route: &Route, target: &str, name: &str) -> String {
    let suffix = match &route.endpoint {
        Endpoint::ImageInspect { .. } => "/json",
        Endpoint::ImageHistory { .. } => "/history",
        Endpoint::ImageGet { .. } => "/get",
        Endpoint::ImageTag { .. } => "/tag",
        Endpoint::ImagePush { .. } => "/push",
        Endpoint::ImageDelete { .. } => "",
        _ => return target.to_string(),
    };
    rewrite_path(route, target, "/images/", name, suffix)
}

/// The daemon's predefined networks, which belong to nobody.
pub const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// `GET /networks/{bridge|host|none}`: every tenant may read a predefined
/// network (clients such as testcontainers-node read the bridge gateway to
/// find the Docker host); the answer lists none of its containers
/// ([`super::filters::filter_shared_network`]).
pub fn shared_network_inspect(endpoint: &Endpoint) -> bool {
    matches!(endpoint, Endpoint::NetworkInspect { id } if PREDEFINED_NETWORKS.contains(&id.as_str()))
}

/// The resource a request names in its path, if any.
pub fn path_ref(endpoint: &Endpoint) -> Option<PathRef> {
    use Endpoint::*;
    use Kind::*;
    let c = |id: &str, suffix: &str| Some(PathRef::new(Container, id, "/containers/", suffix));
    match endpoint {
        ContainerInspect { id } => c(id, "/json"),
        ContainerTop { id } => c(id, "/top"),
        ContainerLogs { id } => c(id, "/logs"),
        ContainerChanges { id } => c(id, "/changes"),
        ContainerExport { id } => c(id, "/export"),
        ContainerStats { id } => c(id, "/stats"),
        ContainerAttachWs { id } => c(id, "/attach/ws"),
        ContainerArchiveHead { id } | ContainerArchiveGet { id } | ContainerArchivePut { id } => {
            c(id, "/archive")
        }
        ContainerKill { id } => c(id, "/kill"),
        ContainerPause { id } => c(id, "/pause"),
        ContainerUnpause { id } => c(id, "/unpause"),
        ContainerRestart { id } => c(id, "/restart"),
        ContainerStart { id } => c(id, "/start"),
        ContainerStop { id } => c(id, "/stop"),
        ContainerWait { id } => c(id, "/wait"),
        ContainerResize { id } => c(id, "/resize"),
        ContainerAttach { id } => c(id, "/attach"),
        ContainerCopy { id } => c(id, "/copy"),
        ContainerRename { id } => c(id, "/rename"),
        ContainerUpdate { id } => c(id, "/update"),
        ContainerDelete { id } => c(id, ""),
        ExecCreate { container } => c(container, "/exec"),
        CheckpointList { container } | CheckpointCreate { container } => {
            c(container, "/checkpoints")
        }
        CheckpointDelete {
            container,
            checkpoint,
        } => c(
            container,
            &format!("/checkpoints/{}", query::escape(checkpoint)),
        ),
        ExecInspect { id } => Some(PathRef::new(Exec, id, "/exec/", "/json")),
        ExecStart { id } => Some(PathRef::new(Exec, id, "/exec/", "/start")),
        ExecResize { id } => Some(PathRef::new(Exec, id, "/exec/", "/resize")),
        VolumeInspect { name } | VolumeDelete { name } => {
            Some(PathRef::new(Volume, name, "/volumes/", ""))
        }
        NetworkInspect { id } | NetworkDelete { id } => {
            Some(PathRef::new(Network, id, "/networks/", ""))
        }
        NetworkConnect { id } => Some(PathRef::new(Network, id, "/networks/", "/connect")),
        NetworkDisconnect { id } => Some(PathRef::new(Network, id, "/networks/", "/disconnect")),
        _ => None,
    }
}

/// A container named in the query (`POST /commit?container=`): its name, or
/// `Err` for a query cistern cannot read unambiguously.
pub fn query_ref(route: &Route) -> Result<Option<String>, DockerError> {
    if route.endpoint != Endpoint::ContainerCommit {
        return Ok(None);
    }
    let q =
        query::Query::parse(&route.query).map_err(|r| DockerError::client(r.status, r.message))?;
    // An absent container makes the daemon answer its own error; cistern
    // resolves the empty name, which is never found.
    Ok(Some(
        q.get("container")
            .map_err(|r| DockerError::client(r.status, r.message))?
            .unwrap_or("")
            .to_string(),
    ))
}

/// The target with `container=<id>` in place of the client's.
pub fn rewrite_query(target: &str, key: &str, value: &str) -> Result<String, DockerError> {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let q = query::Query::parse(q).map_err(|r| DockerError::client(r.status, r.message))?;
    Ok(format!("{path}?{}", q.with(key, value).encode()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testutil::route;
    use crate::tenancy::ownership::identity::Tenant;

    fn owner(t: &str) -> Owner {
        Owner::new(Tenant::new(t).unwrap(), "default")
    }

    const ALICE_CONTAINER: &str = r#"{"Id":"4f3c2a1b00000000000000000000000000000000000000000000000000000000","Name":"/web","Config":{"Labels":{"io.cistern.tenant":"alice","io.cistern.instance":"default"}}}"#;

    #[test]
    fn owner_gets_the_full_id_others_get_dockerds_missing_answer() {
        let found = Found::from_answer(Kind::Container, StatusCode::OK, ALICE_CONTAINER.as_bytes())
            .unwrap();
        let id = decide(Kind::Container, "web", &found, &owner("alice")).unwrap();
        assert!(id.starts_with("4f3c2a1b"));
        let err = decide(Kind::Container, "4f3c", &found, &owner("bob")).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (StatusCode::NOT_FOUND, "No such container: 4f3c")
        );
        assert_eq!(err.side, Side::AsDaemon);
        let missing = Found::from_answer(
            Kind::Container,
            StatusCode::NOT_FOUND,
            br#"{"message":"No such container: x"}"#,
        )
        .unwrap();
        assert_eq!(missing, Found::Missing);
        // An ambiguous prefix (the daemon's 4xx) hides as missing, too.
        assert_eq!(
            Found::from_answer(Kind::Container, StatusCode::BAD_REQUEST, b"{}").unwrap(),
            Found::Missing
        );
        assert!(Found::from_answer(Kind::Container, StatusCode::BAD_GATEWAY, b"").is_err());
    }

    #[test]
    fn unlabelled_resources_belong_to_nobody() {
        let v = br#"{"Name":"data","Driver":"local","Labels":null}"#;
        let found = Found::from_answer(Kind::Volume, StatusCode::OK, v).unwrap();
        let err = decide(Kind::Volume, "data", &found, &owner("alice")).unwrap_err();
        assert_eq!(err.message, "get data: no such volume");
        let n = br#"{"Name":"bridge","Id":"abc","Labels":{}}"#;
        let found = Found::from_answer(Kind::Network, StatusCode::OK, n).unwrap();
        assert_eq!(
            decide(Kind::Network, "bridge", &found, &owner("alice"))
                .unwrap_err()
                .message,
            "network bridge not found"
        );
    }

    #[test]
    fn execs_carry_their_container() {
        let v = br#"{"ID":"e1","ContainerID":"c1","Running":false}"#;
        match Found::from_answer(Kind::Exec, StatusCode::OK, v).unwrap() {
            Found::Exists { id, container, .. } => {
                assert_eq!((id.as_str(), container.as_deref()), ("e1", Some("c1")))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            not_found(Kind::Exec, "e1").message,
            "No such exec instance: e1"
        );
    }

    #[test]
    fn paths_are_rewritten_with_the_full_id() {
        let id = "4f3c2a1b";
        for (method, path, want) in [
            (
                "GET",
                "/v1.41/containers/web/json?size=1",
                "/v1.41/containers/4f3c2a1b/json?size=1",
            ),
            (
                "GET",
                "/containers/we%62/logs?follow=1",
                "/containers/4f3c2a1b/logs?follow=1",
            ),
            (
                "POST",
                "/v1.41/containers/web/attach?stream=1",
                "/v1.41/containers/4f3c2a1b/attach?stream=1",
            ),
            (
                "DELETE",
                "/v1.41/containers/web?force=1",
                "/v1.41/containers/4f3c2a1b?force=1",
            ),
            (
                "PUT",
                "/v1.41/containers/web/archive?path=/",
                "/v1.41/containers/4f3c2a1b/archive?path=/",
            ),
            (
                "POST",
                "/v1.41/containers/web/exec",
                "/v1.41/containers/4f3c2a1b/exec",
            ),
            ("POST", "/v1.41/exec/e/start", "/v1.41/exec/4f3c2a1b/start"),
            ("GET", "/v1.41/volumes/data", "/v1.41/volumes/4f3c2a1b"),
            (
                "POST",
                "/v1.41/networks/n/connect",
                "/v1.41/networks/4f3c2a1b/connect",
            ),
            (
                "DELETE",
                "/v1.41/containers/c/checkpoints/a%20b",
                "/v1.41/containers/4f3c2a1b/checkpoints/a%20b",
            ),
        ] {
            let r = route(method, path);
            let p = path_ref(&r.endpoint).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(p.rewrite(&r, path, id), want, "{path}");
        }
        assert_eq!(
            path_ref(&route("GET", "/v1.41/containers/json").endpoint),
            None
        );
        assert_eq!(path_ref(&route("POST", "/v1.41/build").endpoint), None);
    }

    /// The daemon's answers to inspects, as fixtures: `(kind, name, JSON)`;
    /// every other name is missing (404).
    type Fixtures<'a> = &'a [(Kind, &'a str, &'a str)];

    fn answer(fixtures: Fixtures<'_>, kind: Kind, name: &str) -> Found {
        let (status, body) = match fixtures.iter().find(|(k, n, _)| *k == kind && *n == name) {
            Some((_, _, json)) => (StatusCode::OK, json.as_bytes()),
            None => (StatusCode::NOT_FOUND, &br#"{"message":"missing"}"#[..]),
        };
        Found::from_answer(kind, status, body).unwrap()
    }

    /// Resolves `name` against the fixtures; also the names asked about.
    fn resolve(
        owner: &Owner,
        kind: Kind,
        name: &str,
        fixtures: Fixtures<'_>,
    ) -> (Result<Resolved, DockerError>, Vec<String>) {
        let (mut lookup, mut next) = Lookup::start(owner, kind, name);
        let mut asked = Vec::new();
        loop {
            match next {
                Next::Inspect(kind, name) => {
                    next = lookup.answer(answer(fixtures, kind, &name));
                    asked.push(name);
                }
                Next::Done(resolved) => return (resolved, asked),
            }
        }
    }

    /// Resolves a mounted volume against the fixtures.
    fn mount(owner: &Owner, name: &str, fixtures: Fixtures<'_>) -> VolumeNext {
        let (mut mount, mut next) = VolumeMount::start(owner, name);
        while let VolumeNext::Inspect(name) = &next {
            next = mount.answer(answer(fixtures, Kind::Volume, name));
        }
        next
    }

    fn namespaced(t: &str) -> Owner {
        Owner {
            namespace: Some(crate::tenancy::ownership::names::Namespace::of(t)),
            ..owner(t)
        }
    }

    const ALICE_ID: &str = "4f3c2a1b00000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_tenants_own_container_resolves_by_name_and_by_id_prefix() {
        // The daemon resolves names and unique ID prefixes alike.
        let fixtures: Fixtures = &[
            (Kind::Container, "web", ALICE_CONTAINER),
            (Kind::Container, "4f3c", ALICE_CONTAINER),
        ];
        for name in ["web", "4f3c"] {
            let (resolved, asked) = resolve(&owner("alice"), Kind::Container, name, fixtures);
            assert_eq!(
                resolved.unwrap(),
                Resolved {
                    id: ALICE_ID.into(),
                    namespaced: None
                }
            );
            assert_eq!(asked, [name]);
        }
    }

    #[test]
    fn another_tenants_container_is_no_such_container() {
        let fixtures: Fixtures = &[(Kind::Container, "web", ALICE_CONTAINER)];
        for (name, message) in [
            ("web", "No such container: web"),
            ("gone", "No such container: gone"),
        ] {
            let err = resolve(&owner("bob"), Kind::Container, name, fixtures)
                .0
                .unwrap_err();
            assert_eq!(
                (err.status, err.side, err.message.as_str()),
                (StatusCode::NOT_FOUND, Side::AsDaemon, message)
            );
        }
        // The empty name of a `POST /commit` without `container` is never
        // anyone's.
        assert!(resolve(&owner("alice"), Kind::Container, "", fixtures)
            .0
            .is_err());
    }

    #[test]
    fn namespaced_names_are_the_tenants_first_then_as_written() {
        let alice = namespaced("alice");
        let vol = |name: &str, tenant: &str| {
            format!(
                r#"{{"Name":"{name}","Labels":{{"io.cistern.tenant":"{tenant}","io.cistern.instance":"default"}}}}"#
            )
        };
        let (own, bobs, old) = (
            vol("alice-db", "alice"),
            vol("alice-db", "bob"),
            vol("db", "alice"),
        );
        // `db` is `alice-db` on the daemon.
        let (resolved, asked) = resolve(
            &alice,
            Kind::Volume,
            "db",
            &[(Kind::Volume, "alice-db", &own)],
        );
        assert_eq!(
            resolved.unwrap(),
            Resolved {
                id: "alice-db".into(),
                namespaced: Some("alice-db".into())
            }
        );
        assert_eq!(asked, ["alice-db"]);
        // Not there, or not hers: the name as written (a volume from before
        // namespaces), which must be hers as well.
        for fixtures in [
            &[(Kind::Volume, "db", old.as_str())][..],
            &[
                (Kind::Volume, "alice-db", bobs.as_str()),
                (Kind::Volume, "db", old.as_str()),
            ][..],
        ] {
            let (resolved, asked) = resolve(&alice, Kind::Volume, "db", fixtures);
            assert_eq!(resolved.unwrap().namespaced, None);
            assert_eq!(asked, ["alice-db", "db"]);
        }
        let err = resolve(
            &alice,
            Kind::Volume,
            "db",
            &[(Kind::Volume, "alice-db", &bobs)],
        )
        .0
        .unwrap_err();
        assert_eq!(err.message, "get db: no such volume");
        // Execs have no names: their ID as written.
        let (_, asked) = resolve(&alice, Kind::Exec, "e1", &[]);
        assert_eq!(asked, ["e1"]);
    }

    #[test]
    fn an_exec_is_the_tenant_s_when_its_container_is() {
        let fixtures: Fixtures = &[
            (
                Kind::Exec,
                "e1",
                r#"{"ID":"e1","ContainerID":"4f3c","Running":false}"#,
            ),
            (Kind::Container, "4f3c", ALICE_CONTAINER),
        ];
        let (resolved, asked) = resolve(&owner("alice"), Kind::Exec, "e1", fixtures);
        assert_eq!(resolved.unwrap().id, "e1");
        assert_eq!(asked, ["e1", "4f3c"]);
        let err = resolve(&owner("bob"), Kind::Exec, "e1", fixtures)
            .0
            .unwrap_err();
        assert_eq!(err.message, "No such exec instance: e1");
        // An exec whose container is gone belongs to nobody.
        let err = resolve(&owner("alice"), Kind::Exec, "e1", &fixtures[..1])
            .0
            .unwrap_err();
        assert_eq!(err.message, "No such exec instance: e1");
    }

    #[test]
    fn mounted_volumes_are_the_tenants_or_created_for_it() {
        let vol = |name: &str, tenant: &str| {
            format!(
                r#"{{"Name":"{name}","Labels":{{"io.cistern.tenant":"{tenant}","io.cistern.instance":"default"}}}}"#
            )
        };
        let done = |next: VolumeNext| match next {
            VolumeNext::Done(Ok(name)) => format!("mount {name}"),
            VolumeNext::Done(Err(err)) => format!("{} {}", err.status.as_u16(), err.message),
            VolumeNext::Create(name) => format!("create {name}"),
            VolumeNext::Inspect(name) => format!("inspect {name}"),
        };
        let taken = "409 cistern: the volume name data is in use by another tenant";
        let alice = owner("alice");
        let (hers, bobs) = (vol("data", "alice"), vol("data", "bob"));
        assert_eq!(
            done(mount(&alice, "data", &[(Kind::Volume, "data", &hers)])),
            "mount data"
        );
        assert_eq!(
            done(mount(&alice, "data", &[(Kind::Volume, "data", &bobs)])),
            taken
        );
        assert_eq!(done(mount(&alice, "data", &[])), "create data");

        let alice = namespaced("alice");
        let (prefixed, prefixed_bobs) = (vol("alice-data", "alice"), vol("alice-data", "bob"));
        assert_eq!(
            done(mount(
                &alice,
                "data",
                &[(Kind::Volume, "alice-data", &prefixed)]
            )),
            "mount alice-data"
        );
        assert_eq!(
            done(mount(
                &alice,
                "data",
                &[(Kind::Volume, "alice-data", &prefixed_bobs)]
            )),
            taken
        );
        // An anonymous volume (or one from before namespaces) by its name.
        assert_eq!(
            done(mount(&alice, "data", &[(Kind::Volume, "data", &hers)])),
            "mount data"
        );
        // Missing, or someone else's unprefixed name: hers is created.
        assert_eq!(done(mount(&alice, "data", &[])), "create alice-data");
        assert_eq!(
            done(mount(&alice, "data", &[(Kind::Volume, "data", &bobs)])),
            "create alice-data"
        );
    }

    #[test]
    fn commit_names_its_container_in_the_query() {
        let r = route("POST", "/v1.41/commit?container=web&repo=x");
        assert_eq!(query_ref(&r).unwrap().as_deref(), Some("web"));
        assert_eq!(
            rewrite_query("/v1.41/commit?container=web&repo=x", "container", "abc").unwrap(),
            "/v1.41/commit?repo=x&container=abc"
        );
        let twice = route("POST", "/v1.41/commit?container=a&container=b");
        assert!(query_ref(&twice).is_err());
        assert_eq!(
            query_ref(&route("GET", "/v1.41/containers/json")).unwrap(),
            None
        );
    }
}
