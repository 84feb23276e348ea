//! Routing: classify a request exactly the way dockerd's router sees it.
//!
//! This is the first stage of the Docker request pipeline. It runs before anything
//! else looks at a request, and everything after it (authorization by endpoint group,
//! body and query inspection) trusts its answer, so it must never name one endpoint
//! while dockerd dispatches another. It does no I/O.
//!
//! # What dockerd does (moby `api/server/server.go`, gorilla/mux)
//!
//! * Every route is registered twice, in order: `"/v{version:[0-9.]+}" + path` and
//!   `path`, with the method fixed (`m.Path(..).Methods(..)`). The routers are
//!   registered in a fixed order (checkpoint first "or the DELETE gets masked", then
//!   container, image, system, volume, build, session, swarm, plugin, distribution,
//!   grpc, network), and mux takes the **first** route whose path and method match.
//!   Unmatched paths and methods answer `404 {"message":"page not found"}`.
//! * The router is `mux.NewRouter()`: no `SkipClean`, no `UseEncodedPath`. So mux
//!   matches against `req.URL.Path`, which Go's `net/url` has already
//!   **percent-decoded** (`%2F` becomes `/`, `%2e` becomes `.`), and before matching
//!   it runs `cleanPath` (`path.Clean`, keeping one trailing slash) on that decoded
//!   path: when the cleaned path differs (`//`, `/./`, `/../`, also when they appear
//!   only after decoding) it answers `301 Moved Permanently` instead of dispatching.
//! * Path variables are regular expressions over the decoded path: `{name:.*}` (used
//!   for container, exec, image, volume and network names) matches across `/`, and Go's
//!   leftmost-first semantics make `.*` greedy, so `/containers/a/b/json` is
//!   `GET /containers/{name}/json` with `name = "a/b"`. `{id}` means `[^/]+`.
//! * Neither Go's `net/http`, mux nor moby honours `X-HTTP-Method-Override` or any
//!   other method-override header, and method matching is exact and case-sensitive
//!   (`get` is not `GET`; `HEAD` is not `GET`).
//! * The version middleware accepts any `[0-9.]+` that compares within
//!   `[MinVersion, DefaultVersion]` component-wise (`1.41.0` == `1.41`), and since
//!   API 1.24 is the minimum of current moby while 20.10 still accepts 1.12, old
//!   versions change meaning (e.g. `POST /containers/{id}/start` takes a HostConfig
//!   body below 1.24).
//!
//! # What cistern does
//!
//! * Decode the path exactly like Go (`%XX` only; invalid escapes are a 400 as in
//!   `net/url`), then **refuse** (400) anything the daemon would redirect rather than
//!   dispatch: a decoded path that `cleanPath` would change. Refusing is safe because
//!   dockerd would not have acted on it either.
//! * Refuse (400) decoded control characters, invalid UTF-8, a `#` anywhere, raw
//!   non-ASCII and anything not starting with `/` (asterisk or absolute form).
//! * Match the route table below in moby's order with the same greedy semantics.
//! * Accept only versions of the exact form `MAJOR.MINOR` (decimal, no leading zeros)
//!   at or above 1.24 (400 otherwise): `/v1.41.0/`, `/v01.41/`, `/v./` are refused
//!   rather than normalised, because handlers compare the raw string.
//! * Refuse (400) container, exec, volume, network and checkpoint names that contain
//!   `/` or are empty: Docker names never contain `/`, but the daemon's name lookup
//!   resolves legacy link aliases (`/parent/alias`), so `POST /containers/web/db/start`
//!   would start the container linked as `db` from `web`. Image, plugin and
//!   distribution names keep their `/` (`library/busybox`).
//!
//! It is not a place for policy: denied groups are still classified here and refused
//! by `policy::Policy::authorize`.

use std::fmt;

/// A classified request: which endpoint dockerd will dispatch it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The API version from the `/vX.Y` prefix, if the path had one.
    pub version: Option<ApiVersion>,
    /// The endpoint, with its path parameters percent-decoded.
    pub endpoint: Endpoint,
    /// The raw (still percent-encoded) query string, without the `?`.
    pub query: String,
}

impl Route {
    /// The endpoint group that authorization decides on.
    pub fn group(&self) -> Group {
        self.endpoint.group()
    }

    /// The API version the daemon will apply: the prefix, or the daemon default.
    pub fn effective_version(&self) -> ApiVersion {
        self.version.unwrap_or(ApiVersion::DAEMON_DEFAULT)
    }
}

/// An API version of the form `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    /// The lowest version cistern lets through (moby's current minimum; 20.10 still
    /// accepted 1.12, where `start` took a HostConfig body).
    pub const MIN: ApiVersion = ApiVersion {
        major: 1,
        minor: 24,
    };
    /// The version Docker 20.10 applies when the path has no version prefix.
    pub const DAEMON_DEFAULT: ApiVersion = ApiVersion {
        major: 1,
        minor: 41,
    };
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Endpoint groups: the unit a listener allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// `_ping`, `version`, `info`, and CORS `OPTIONS`.
    System,
    Containers,
    Exec,
    /// Images, builds and registry login (`/auth`).
    Images,
    Volumes,
    Networks,
    Events,
    SystemDf,
    Swarm,
    Nodes,
    Services,
    Tasks,
    Secrets,
    Configs,
    Plugins,
    Distribution,
    /// BuildKit's `/session` and `/grpc` hijacked streams.
    Session,
    /// Experimental checkpoint/restore (CRIU).
    Checkpoints,
    /// The daemon's `/debug/` (pprof, expvar).
    Debug,
    Unknown,
}

impl Group {
    /// Every group, in a stable order.
    pub const ALL: [Group; 20] = [
        Group::System,
        Group::Containers,
        Group::Exec,
        Group::Images,
        Group::Volumes,
        Group::Networks,
        Group::Events,
        Group::SystemDf,
        Group::Swarm,
        Group::Nodes,
        Group::Services,
        Group::Tasks,
        Group::Secrets,
        Group::Configs,
        Group::Plugins,
        Group::Distribution,
        Group::Session,
        Group::Checkpoints,
        Group::Debug,
        Group::Unknown,
    ];

    /// The name used in policy files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::System => "system",
            Group::Containers => "containers",
            Group::Exec => "exec",
            Group::Images => "images",
            Group::Volumes => "volumes",
            Group::Networks => "networks",
            Group::Events => "events",
            Group::SystemDf => "system_df",
            Group::Swarm => "swarm",
            Group::Nodes => "nodes",
            Group::Services => "services",
            Group::Tasks => "tasks",
            Group::Secrets => "secrets",
            Group::Configs => "configs",
            Group::Plugins => "plugins",
            Group::Distribution => "distribution",
            Group::Session => "session",
            Group::Checkpoints => "checkpoints",
            Group::Debug => "debug",
            Group::Unknown => "unknown",
        }
    }

    /// Parses a name as written in a policy file.
    pub fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every endpoint in moby's route tables (20.10 and current). Path parameters are
/// percent-decoded, exactly as the daemon's handlers receive them in `vars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    // System
    Ping,
    PingHead,
    Version,
    Info,
    Events,
    SystemDf,
    /// `OPTIONS` on any path: moby answers 200 for CORS pre-flight, nothing else.
    Options,
    /// `POST /auth`: registry login check (the daemon contacts the registry).
    Auth,

    // Containers
    ContainerList,
    ContainerCreate,
    ContainerInspect {
        id: String,
    },
    ContainerTop {
        id: String,
    },
    ContainerLogs {
        id: String,
    },
    ContainerChanges {
        id: String,
    },
    ContainerExport {
        id: String,
    },
    ContainerStats {
        id: String,
    },
    ContainerAttachWs {
        id: String,
    },
    ContainerArchiveHead {
        id: String,
    },
    ContainerArchiveGet {
        id: String,
    },
    ContainerArchivePut {
        id: String,
    },
    ContainerKill {
        id: String,
    },
    ContainerPause {
        id: String,
    },
    ContainerUnpause {
        id: String,
    },
    ContainerRestart {
        id: String,
    },
    ContainerStart {
        id: String,
    },
    ContainerStop {
        id: String,
    },
    ContainerWait {
        id: String,
    },
    ContainerResize {
        id: String,
    },
    ContainerAttach {
        id: String,
    },
    /// Deprecated `POST /containers/{id}/copy` (20.10 only; errors since API 1.20).
    ContainerCopy {
        id: String,
    },
    ContainerRename {
        id: String,
    },
    ContainerUpdate {
        id: String,
    },
    ContainerPrune,
    ContainerDelete {
        id: String,
    },
    /// `POST /commit` (container named in the query).
    ContainerCommit,

    // Exec
    ExecCreate {
        container: String,
    },
    ExecInspect {
        id: String,
    },
    ExecStart {
        id: String,
    },
    ExecResize {
        id: String,
    },

    // Checkpoints (experimental)
    CheckpointList {
        container: String,
    },
    CheckpointCreate {
        container: String,
    },
    CheckpointDelete {
        container: String,
        checkpoint: String,
    },

    // Images and builds
    ImageList,
    ImageSearch,
    ImageGetAll,
    ImageGet {
        name: String,
    },
    ImageHistory {
        name: String,
    },
    ImageInspect {
        name: String,
    },
    ImageAttestations {
        name: String,
    },
    ImageLoad,
    /// `POST /images/create`: pull (`fromImage`) or import (`fromSrc`).
    ImageCreate,
    ImagePush {
        name: String,
    },
    ImageTag {
        name: String,
    },
    ImagePrune,
    ImageDelete {
        name: String,
    },
    Build,
    BuildPrune,
    BuildCancel,

    // Volumes
    VolumeList,
    VolumeInspect {
        name: String,
    },
    VolumeCreate,
    /// `PUT /volumes/{name}`: swarm cluster volumes only.
    VolumeUpdate {
        name: String,
    },
    VolumePrune,
    VolumeDelete {
        name: String,
    },

    // Networks
    NetworkList,
    NetworkInspect {
        id: String,
    },
    NetworkCreate,
    NetworkConnect {
        id: String,
    },
    NetworkDisconnect {
        id: String,
    },
    NetworkPrune,
    NetworkDelete {
        id: String,
    },

    // Swarm
    SwarmInit,
    SwarmJoin,
    SwarmLeave,
    SwarmInspect,
    SwarmUnlockKey,
    SwarmUpdate,
    SwarmUnlock,
    ServiceList,
    ServiceInspect {
        id: String,
    },
    ServiceCreate,
    ServiceUpdate {
        id: String,
    },
    ServiceDelete {
        id: String,
    },
    ServiceLogs {
        id: String,
    },
    NodeList,
    NodeInspect {
        id: String,
    },
    NodeDelete {
        id: String,
    },
    NodeUpdate {
        id: String,
    },
    TaskList,
    TaskInspect {
        id: String,
    },
    TaskLogs {
        id: String,
    },
    SecretList,
    SecretCreate,
    SecretDelete {
        id: String,
    },
    SecretInspect {
        id: String,
    },
    SecretUpdate {
        id: String,
    },
    ConfigList,
    ConfigCreate,
    ConfigDelete {
        id: String,
    },
    ConfigInspect {
        id: String,
    },
    ConfigUpdate {
        id: String,
    },

    // Plugins
    PluginList,
    PluginInspect {
        name: String,
    },
    PluginPrivileges,
    PluginDelete {
        name: String,
    },
    PluginEnable {
        name: String,
    },
    PluginDisable {
        name: String,
    },
    PluginPull,
    PluginPush {
        name: String,
    },
    PluginUpgrade {
        name: String,
    },
    PluginSet {
        name: String,
    },
    PluginCreate,

    // Distribution
    DistributionInspect {
        name: String,
    },

    // BuildKit
    Session,
    Grpc,

    /// `/debug/...` (pprof, expvar), with the rest of the path.
    Debug {
        path: String,
    },
}

impl Endpoint {
    /// The group this endpoint belongs to.
    pub fn group(&self) -> Group {
        use Endpoint::*;
        match self {
            Ping | PingHead | Version | Info | Options => Group::System,
            Events => Group::Events,
            SystemDf => Group::SystemDf,
            Auth => Group::Images,
            ContainerList
            | ContainerCreate
            | ContainerInspect { .. }
            | ContainerTop { .. }
            | ContainerLogs { .. }
            | ContainerChanges { .. }
            | ContainerExport { .. }
            | ContainerStats { .. }
            | ContainerAttachWs { .. }
            | ContainerArchiveHead { .. }
            | ContainerArchiveGet { .. }
            | ContainerArchivePut { .. }
            | ContainerKill { .. }
            | ContainerPause { .. }
            | ContainerUnpause { .. }
            | ContainerRestart { .. }
            | ContainerStart { .. }
            | ContainerStop { .. }
            | ContainerWait { .. }
            | ContainerResize { .. }
            | ContainerAttach { .. }
            | ContainerCopy { .. }
            | ContainerRename { .. }
            | ContainerUpdate { .. }
            | ContainerPrune
            | ContainerDelete { .. }
            | ContainerCommit => Group::Containers,
            ExecCreate { .. } | ExecInspect { .. } | ExecStart { .. } | ExecResize { .. } => {
                Group::Exec
            }
            CheckpointList { .. } | CheckpointCreate { .. } | CheckpointDelete { .. } => {
                Group::Checkpoints
            }
            ImageList
            | ImageSearch
            | ImageGetAll
            | ImageGet { .. }
            | ImageHistory { .. }
            | ImageInspect { .. }
            | ImageAttestations { .. }
            | ImageLoad
            | ImageCreate
            | ImagePush { .. }
            | ImageTag { .. }
            | ImagePrune
            | ImageDelete { .. }
            | Build
            | BuildPrune
            | BuildCancel => Group::Images,
            VolumeList
            | VolumeInspect { .. }
            | VolumeCreate
            | VolumePrune
            | VolumeDelete { .. } => Group::Volumes,
            // Cluster volumes exist only with swarm.
            VolumeUpdate { .. } => Group::Swarm,
            NetworkList
            | NetworkInspect { .. }
            | NetworkCreate
            | NetworkConnect { .. }
            | NetworkDisconnect { .. }
            | NetworkPrune
            | NetworkDelete { .. } => Group::Networks,
            SwarmInit | SwarmJoin | SwarmLeave | SwarmInspect | SwarmUnlockKey | SwarmUpdate
            | SwarmUnlock => Group::Swarm,
            ServiceList
            | ServiceInspect { .. }
            | ServiceCreate
            | ServiceUpdate { .. }
            | ServiceDelete { .. }
            | ServiceLogs { .. } => Group::Services,
            NodeList | NodeInspect { .. } | NodeDelete { .. } | NodeUpdate { .. } => Group::Nodes,
            TaskList | TaskInspect { .. } | TaskLogs { .. } => Group::Tasks,
            SecretList
            | SecretCreate
            | SecretDelete { .. }
            | SecretInspect { .. }
            | SecretUpdate { .. } => Group::Secrets,
            ConfigList
            | ConfigCreate
            | ConfigDelete { .. }
            | ConfigInspect { .. }
            | ConfigUpdate { .. } => Group::Configs,
            PluginList
            | PluginInspect { .. }
            | PluginPrivileges
            | PluginDelete { .. }
            | PluginEnable { .. }
            | PluginDisable { .. }
            | PluginPull
            | PluginPush { .. }
            | PluginUpgrade { .. }
            | PluginSet { .. }
            | PluginCreate => Group::Plugins,
            DistributionInspect { .. } => Group::Distribution,
            Session | Grpc => Group::Session,
            Debug { .. } => Group::Debug,
        }
    }
}

/// Why a request was refused before it could be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not an origin-form path (`*`, absolute form, empty, raw non-ASCII, `#`).
    #[error("cistern: request target must be an absolute path")]
    BadTarget,
    /// An invalid `%` escape: Go's `net/url` refuses it too.
    #[error("cistern: invalid URL escape in path")]
    BadEscape,
    /// Control characters or invalid UTF-8 after percent-decoding.
    #[error("cistern: path contains control characters or invalid UTF-8")]
    BadDecodedPath,
    /// The decoded path is not clean; dockerd would answer a 301 redirect.
    #[error("cistern: path is not in canonical form (dot segments or repeated slashes)")]
    NotCanonical,
    /// A `/v...` prefix that is not `/vMAJOR.MINOR` or is below the minimum.
    #[error("cistern: unsupported API version {0:?} (cistern accepts 1.24 and above, written MAJOR.MINOR)")]
    BadVersion(String),
    /// A container, exec, volume or network name with `/` or empty.
    #[error("cistern: invalid name {0:?} in path")]
    BadName(String),
    /// No route: dockerd answers 404 "page not found" (also for a wrong method).
    #[error("page not found")]
    NotFound,
}

impl RouteError {
    /// The status a Docker client gets, as dockerd would use it.
    pub fn status(&self) -> http::StatusCode {
        match self {
            RouteError::NotFound => http::StatusCode::NOT_FOUND,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The Docker-style JSON error body, `{"message": "..."}`.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "message": self.to_string() }).to_string()
    }
}

/// Classifies a request the way dockerd's router would dispatch it.
///
/// `path_and_query` is the request target as received (origin form, still
/// percent-encoded), e.g. `/v1.41/containers/abc/json?size=1`.
pub fn classify(method: &http::Method, path_and_query: &str) -> Result<Route, RouteError> {
    // Go's ParseRequestURI does not strip a fragment: `#` stays part of the path, while
    // other HTTP stacks drop it. Refuse rather than guess. (Behind hyper this never
    // fires: the `http` crate already dropped the fragment from the target, and the
    // driver forwards that same fragment-less target, so the daemon still reads the
    // path classified here. `tests/policy_adversarial.rs` checks this end to end.)
    if !path_and_query.starts_with('/')
        || path_and_query.contains('#')
        || !path_and_query.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RouteError::BadTarget);
    }
    let (raw_path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let path = percent_decode(raw_path)?;
    // mux: `if p := cleanPath(path); p != path { 301 }`.
    if clean_path(&path) != path {
        return Err(RouteError::NotCanonical);
    }
    let (version, endpoint) = match_routes(method.as_str(), &path)?;
    Ok(Route {
        version,
        endpoint,
        query: query.to_string(),
    })
}

/// Percent-decodes a path like Go's `url.PathUnescape` (mode `encodePath`): `%XX`
/// with two hex digits only, `+` stays `+`. Refuses control characters and invalid
/// UTF-8 in the result.
fn percent_decode(raw: &str) -> Result<String, RouteError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(RouteError::BadEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| RouteError::BadDecodedPath)?;
    if s.chars().any(char::is_control) {
        return Err(RouteError::BadDecodedPath);
    }
    Ok(s)
}

/// gorilla/mux `cleanPath`: Go's `path.Clean` on a rooted path, with the trailing
/// slash put back.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_string();
    }
    let rooted = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    };
    let mut stack: Vec<&str> = Vec::new();
    for seg in rooted.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    let mut np = format!("/{}", stack.join("/"));
    if rooted.ends_with('/') && np != "/" {
        np.push('/');
    }
    np
}

/// One part of a mux path template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Lit(&'static str),
    /// `{x:.*}`
    Any,
    /// `{x:.+}`
    Some,
    /// `{x}`, i.e. `[^/]+`
    Seg,
}

/// How a constructor turns matched variables into an endpoint.
type Make = fn(&mut Vars) -> Result<Endpoint, RouteError>;

/// Matched path variables, handed out in template order.
struct Vars(std::vec::IntoIter<String>);

impl Vars {
    /// Next variable as an image-like name (may contain `/`, must not be empty).
    fn name(&mut self) -> Result<String, RouteError> {
        let v = self.0.next().unwrap_or_default();
        if v.is_empty() {
            return Err(RouteError::NotFound);
        }
        Ok(v)
    }

    /// Next variable as a container/exec/volume/network name: no `/`, not empty.
    fn id(&mut self) -> Result<String, RouteError> {
        let v = self.name()?;
        if v.contains('/') {
            return Err(RouteError::BadName(v));
        }
        Ok(v)
    }
}

use Part::{Any, Lit, Seg, Some as Plus};

/// Shorthand for table rows.
macro_rules! r {
    ($m:literal, [$($p:expr),*], $make:expr) => {
        ($m, &[$($p),*], $make as Make)
    };
}

/// moby's route table, in registration order (routers: checkpoint, container, image,
/// system, volume, build, session, swarm, plugin, distribution, grpc, network). Each
/// row is matched first with and then without the version prefix, as `CreateMux`
/// registers them.
#[rustfmt::skip]
static ROUTES: &[(&str, &[Part], Make)] = &[
    // checkpoint (experimental; registered first "or the DELETE gets masked")
    r!("GET", [Lit("/containers/"), Any, Lit("/checkpoints")], |v| Ok(Endpoint::CheckpointList { container: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/checkpoints")], |v| Ok(Endpoint::CheckpointCreate { container: v.id()? })),
    r!("DELETE", [Lit("/containers/"), Seg, Lit("/checkpoints/"), Seg], |v| Ok(Endpoint::CheckpointDelete { container: v.id()?, checkpoint: v.id()? })),
    // container
    r!("HEAD", [Lit("/containers/"), Any, Lit("/archive")], |v| Ok(Endpoint::ContainerArchiveHead { id: v.id()? })),
    r!("GET", [Lit("/containers/json")], |_| Ok(Endpoint::ContainerList)),
    r!("GET", [Lit("/containers/"), Any, Lit("/export")], |v| Ok(Endpoint::ContainerExport { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/changes")], |v| Ok(Endpoint::ContainerChanges { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/json")], |v| Ok(Endpoint::ContainerInspect { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/top")], |v| Ok(Endpoint::ContainerTop { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/logs")], |v| Ok(Endpoint::ContainerLogs { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/stats")], |v| Ok(Endpoint::ContainerStats { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/attach/ws")], |v| Ok(Endpoint::ContainerAttachWs { id: v.id()? })),
    r!("GET", [Lit("/exec/"), Any, Lit("/json")], |v| Ok(Endpoint::ExecInspect { id: v.id()? })),
    r!("GET", [Lit("/containers/"), Any, Lit("/archive")], |v| Ok(Endpoint::ContainerArchiveGet { id: v.id()? })),
    r!("POST", [Lit("/containers/create")], |_| Ok(Endpoint::ContainerCreate)),
    r!("POST", [Lit("/containers/"), Any, Lit("/kill")], |v| Ok(Endpoint::ContainerKill { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/pause")], |v| Ok(Endpoint::ContainerPause { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/unpause")], |v| Ok(Endpoint::ContainerUnpause { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/restart")], |v| Ok(Endpoint::ContainerRestart { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/start")], |v| Ok(Endpoint::ContainerStart { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/stop")], |v| Ok(Endpoint::ContainerStop { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/wait")], |v| Ok(Endpoint::ContainerWait { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/resize")], |v| Ok(Endpoint::ContainerResize { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/attach")], |v| Ok(Endpoint::ContainerAttach { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/copy")], |v| Ok(Endpoint::ContainerCopy { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/exec")], |v| Ok(Endpoint::ExecCreate { container: v.id()? })),
    r!("POST", [Lit("/exec/"), Any, Lit("/start")], |v| Ok(Endpoint::ExecStart { id: v.id()? })),
    r!("POST", [Lit("/exec/"), Any, Lit("/resize")], |v| Ok(Endpoint::ExecResize { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/rename")], |v| Ok(Endpoint::ContainerRename { id: v.id()? })),
    r!("POST", [Lit("/containers/"), Any, Lit("/update")], |v| Ok(Endpoint::ContainerUpdate { id: v.id()? })),
    r!("POST", [Lit("/containers/prune")], |_| Ok(Endpoint::ContainerPrune)),
    r!("POST", [Lit("/commit")], |_| Ok(Endpoint::ContainerCommit)),
    r!("PUT", [Lit("/containers/"), Any, Lit("/archive")], |v| Ok(Endpoint::ContainerArchivePut { id: v.id()? })),
    r!("DELETE", [Lit("/containers/"), Any], |v| Ok(Endpoint::ContainerDelete { id: v.id()? })),
    // image
    r!("GET", [Lit("/images/json")], |_| Ok(Endpoint::ImageList)),
    r!("GET", [Lit("/images/search")], |_| Ok(Endpoint::ImageSearch)),
    r!("GET", [Lit("/images/get")], |_| Ok(Endpoint::ImageGetAll)),
    r!("GET", [Lit("/images/"), Any, Lit("/get")], |v| Ok(Endpoint::ImageGet { name: v.name()? })),
    r!("GET", [Lit("/images/"), Any, Lit("/history")], |v| Ok(Endpoint::ImageHistory { name: v.name()? })),
    r!("GET", [Lit("/images/"), Any, Lit("/json")], |v| Ok(Endpoint::ImageInspect { name: v.name()? })),
    r!("GET", [Lit("/images/"), Any, Lit("/attestations")], |v| Ok(Endpoint::ImageAttestations { name: v.name()? })),
    r!("POST", [Lit("/images/load")], |_| Ok(Endpoint::ImageLoad)),
    r!("POST", [Lit("/images/create")], |_| Ok(Endpoint::ImageCreate)),
    r!("POST", [Lit("/images/"), Any, Lit("/push")], |v| Ok(Endpoint::ImagePush { name: v.name()? })),
    r!("POST", [Lit("/images/"), Any, Lit("/tag")], |v| Ok(Endpoint::ImageTag { name: v.name()? })),
    r!("POST", [Lit("/images/prune")], |_| Ok(Endpoint::ImagePrune)),
    r!("DELETE", [Lit("/images/"), Any], |v| Ok(Endpoint::ImageDelete { name: v.name()? })),
    // system
    r!("OPTIONS", [Lit("/"), Any], |_| Ok(Endpoint::Options)),
    r!("GET", [Lit("/_ping")], |_| Ok(Endpoint::Ping)),
    r!("HEAD", [Lit("/_ping")], |_| Ok(Endpoint::PingHead)),
    r!("GET", [Lit("/events")], |_| Ok(Endpoint::Events)),
    r!("GET", [Lit("/info")], |_| Ok(Endpoint::Info)),
    r!("GET", [Lit("/version")], |_| Ok(Endpoint::Version)),
    r!("GET", [Lit("/system/df")], |_| Ok(Endpoint::SystemDf)),
    r!("POST", [Lit("/auth")], |_| Ok(Endpoint::Auth)),
    // volume
    r!("GET", [Lit("/volumes")], |_| Ok(Endpoint::VolumeList)),
    r!("GET", [Lit("/volumes/"), Any], |v| Ok(Endpoint::VolumeInspect { name: v.id()? })),
    r!("POST", [Lit("/volumes/create")], |_| Ok(Endpoint::VolumeCreate)),
    r!("POST", [Lit("/volumes/prune")], |_| Ok(Endpoint::VolumePrune)),
    r!("PUT", [Lit("/volumes/"), Any], |v| Ok(Endpoint::VolumeUpdate { name: v.id()? })),
    r!("DELETE", [Lit("/volumes/"), Any], |v| Ok(Endpoint::VolumeDelete { name: v.id()? })),
    // build
    r!("POST", [Lit("/build")], |_| Ok(Endpoint::Build)),
    r!("POST", [Lit("/build/prune")], |_| Ok(Endpoint::BuildPrune)),
    r!("POST", [Lit("/build/cancel")], |_| Ok(Endpoint::BuildCancel)),
    // session
    r!("POST", [Lit("/session")], |_| Ok(Endpoint::Session)),
    // swarm
    r!("POST", [Lit("/swarm/init")], |_| Ok(Endpoint::SwarmInit)),
    r!("POST", [Lit("/swarm/join")], |_| Ok(Endpoint::SwarmJoin)),
    r!("POST", [Lit("/swarm/leave")], |_| Ok(Endpoint::SwarmLeave)),
    r!("GET", [Lit("/swarm")], |_| Ok(Endpoint::SwarmInspect)),
    r!("GET", [Lit("/swarm/unlockkey")], |_| Ok(Endpoint::SwarmUnlockKey)),
    r!("POST", [Lit("/swarm/update")], |_| Ok(Endpoint::SwarmUpdate)),
    r!("POST", [Lit("/swarm/unlock")], |_| Ok(Endpoint::SwarmUnlock)),
    r!("GET", [Lit("/services")], |_| Ok(Endpoint::ServiceList)),
    r!("GET", [Lit("/services/"), Seg], |v| Ok(Endpoint::ServiceInspect { id: v.id()? })),
    r!("POST", [Lit("/services/create")], |_| Ok(Endpoint::ServiceCreate)),
    r!("POST", [Lit("/services/"), Seg, Lit("/update")], |v| Ok(Endpoint::ServiceUpdate { id: v.id()? })),
    r!("DELETE", [Lit("/services/"), Seg], |v| Ok(Endpoint::ServiceDelete { id: v.id()? })),
    r!("GET", [Lit("/services/"), Seg, Lit("/logs")], |v| Ok(Endpoint::ServiceLogs { id: v.id()? })),
    r!("GET", [Lit("/nodes")], |_| Ok(Endpoint::NodeList)),
    r!("GET", [Lit("/nodes/"), Seg], |v| Ok(Endpoint::NodeInspect { id: v.id()? })),
    r!("DELETE", [Lit("/nodes/"), Seg], |v| Ok(Endpoint::NodeDelete { id: v.id()? })),
    r!("POST", [Lit("/nodes/"), Seg, Lit("/update")], |v| Ok(Endpoint::NodeUpdate { id: v.id()? })),
    r!("GET", [Lit("/tasks")], |_| Ok(Endpoint::TaskList)),
    r!("GET", [Lit("/tasks/"), Seg], |v| Ok(Endpoint::TaskInspect { id: v.id()? })),
    r!("GET", [Lit("/tasks/"), Seg, Lit("/logs")], |v| Ok(Endpoint::TaskLogs { id: v.id()? })),
    r!("GET", [Lit("/secrets")], |_| Ok(Endpoint::SecretList)),
    r!("POST", [Lit("/secrets/create")], |_| Ok(Endpoint::SecretCreate)),
    r!("DELETE", [Lit("/secrets/"), Seg], |v| Ok(Endpoint::SecretDelete { id: v.id()? })),
    r!("GET", [Lit("/secrets/"), Seg], |v| Ok(Endpoint::SecretInspect { id: v.id()? })),
    r!("POST", [Lit("/secrets/"), Seg, Lit("/update")], |v| Ok(Endpoint::SecretUpdate { id: v.id()? })),
    r!("GET", [Lit("/configs")], |_| Ok(Endpoint::ConfigList)),
    r!("POST", [Lit("/configs/create")], |_| Ok(Endpoint::ConfigCreate)),
    r!("DELETE", [Lit("/configs/"), Seg], |v| Ok(Endpoint::ConfigDelete { id: v.id()? })),
    r!("GET", [Lit("/configs/"), Seg], |v| Ok(Endpoint::ConfigInspect { id: v.id()? })),
    r!("POST", [Lit("/configs/"), Seg, Lit("/update")], |v| Ok(Endpoint::ConfigUpdate { id: v.id()? })),
    // plugin
    r!("GET", [Lit("/plugins")], |_| Ok(Endpoint::PluginList)),
    r!("GET", [Lit("/plugins/"), Any, Lit("/json")], |v| Ok(Endpoint::PluginInspect { name: v.name()? })),
    r!("GET", [Lit("/plugins/privileges")], |_| Ok(Endpoint::PluginPrivileges)),
    r!("DELETE", [Lit("/plugins/"), Any], |v| Ok(Endpoint::PluginDelete { name: v.name()? })),
    r!("POST", [Lit("/plugins/"), Any, Lit("/enable")], |v| Ok(Endpoint::PluginEnable { name: v.name()? })),
    r!("POST", [Lit("/plugins/"), Any, Lit("/disable")], |v| Ok(Endpoint::PluginDisable { name: v.name()? })),
    r!("POST", [Lit("/plugins/pull")], |_| Ok(Endpoint::PluginPull)),
    r!("POST", [Lit("/plugins/"), Any, Lit("/push")], |v| Ok(Endpoint::PluginPush { name: v.name()? })),
    r!("POST", [Lit("/plugins/"), Any, Lit("/upgrade")], |v| Ok(Endpoint::PluginUpgrade { name: v.name()? })),
    r!("POST", [Lit("/plugins/"), Any, Lit("/set")], |v| Ok(Endpoint::PluginSet { name: v.name()? })),
    r!("POST", [Lit("/plugins/create")], |_| Ok(Endpoint::PluginCreate)),
    // distribution
    r!("GET", [Lit("/distribution/"), Any, Lit("/json")], |v| Ok(Endpoint::DistributionInspect { name: v.name()? })),
    // grpc
    r!("POST", [Lit("/grpc")], |_| Ok(Endpoint::Grpc)),
    // network
    r!("GET", [Lit("/networks")], |_| Ok(Endpoint::NetworkList)),
    r!("GET", [Lit("/networks/")], |_| Ok(Endpoint::NetworkList)),
    r!("GET", [Lit("/networks/"), Plus], |v| Ok(Endpoint::NetworkInspect { id: v.id()? })),
    r!("POST", [Lit("/networks/create")], |_| Ok(Endpoint::NetworkCreate)),
    r!("POST", [Lit("/networks/"), Any, Lit("/connect")], |v| Ok(Endpoint::NetworkConnect { id: v.id()? })),
    r!("POST", [Lit("/networks/"), Any, Lit("/disconnect")], |v| Ok(Endpoint::NetworkDisconnect { id: v.id()? })),
    r!("POST", [Lit("/networks/prune")], |_| Ok(Endpoint::NetworkPrune)),
    r!("DELETE", [Lit("/networks/"), Any], |v| Ok(Endpoint::NetworkDelete { id: v.id()? })),
];

/// Runs the table like mux: first full match wins; a versioned path that matches no
/// route falls into moby's `/v{version}/{path:.*}` 404 handler.
fn match_routes(method: &str, path: &str) -> Result<(Option<ApiVersion>, Endpoint), RouteError> {
    // `/v{version:[0-9.]+}` followed by the route path. The version cannot contain
    // `/`, so it is the maximal run of [0-9.] after `/v`, followed by `/`.
    let versioned = path.strip_prefix("/v").and_then(|rest| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        (end > 0 && rest[end..].starts_with('/')).then(|| (&rest[..end], &rest[end..]))
    });
    // `/debug/` is registered without version in 20.10 and with it in current moby
    // (any method in 20.10): classify it so that it is denied, never forwarded.
    for p in [Some(path), versioned.map(|v| v.1)].into_iter().flatten() {
        if let Some(rest) = p.strip_prefix("/debug/") {
            let version = match versioned {
                Some((v, tail)) if tail == p => Some(parse_version(v)?),
                _ => None,
            };
            return Ok((
                version,
                Endpoint::Debug {
                    path: rest.to_string(),
                },
            ));
        }
    }
    for (m, parts, make) in ROUTES {
        if let Some((v, tail)) = versioned {
            if let Some(vars) = match_template(parts, tail) {
                if *m == method {
                    let version = parse_version(v)?;
                    return Ok((Some(version), make(&mut Vars(vars.into_iter()))?));
                }
            }
        }
        if let Some(vars) = match_template(parts, path) {
            if *m == method {
                return Ok((None, make(&mut Vars(vars.into_iter()))?));
            }
        }
    }
    if let Some((v, _)) = versioned {
        // Still a 404, but an odd version is reported as such.
        parse_version(v)?;
    }
    Err(RouteError::NotFound)
}

/// Accepts `MAJOR.MINOR` in plain decimal at or above [`ApiVersion::MIN`].
fn parse_version(v: &str) -> Result<ApiVersion, RouteError> {
    let bad = || RouteError::BadVersion(v.to_string());
    let (maj, min) = v.split_once('.').ok_or_else(bad)?;
    let num = |s: &str| -> Option<u16> {
        if s.is_empty() || s.len() > 4 || (s.len() > 1 && s.starts_with('0')) {
            return None;
        }
        s.parse().ok()
    };
    let version = ApiVersion {
        major: num(maj).ok_or_else(bad)?,
        minor: num(min).ok_or_else(bad)?,
    };
    if version < ApiVersion::MIN {
        return Err(bad());
    }
    Ok(version)
}

/// Matches a template against a decoded path with Go regexp leftmost-first
/// semantics: variables are greedy and give back characters only as needed.
fn match_template(parts: &[Part], s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    match_parts(parts, s, &mut out).then_some(out)
}

fn match_parts(parts: &[Part], s: &str, out: &mut Vec<String>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return s.is_empty();
    };
    match first {
        Lit(l) => s
            .strip_prefix(l)
            .is_some_and(|tail| match_parts(rest, tail, out)),
        var => {
            let (min, max) = match var {
                Any => (0, s.len()),
                Plus => (1, s.len()),
                _ => (1, s.find('/').unwrap_or(s.len())),
            };
            if max < min {
                return false;
            }
            for end in (min..=max).rev() {
                if !s.is_char_boundary(end) {
                    continue;
                }
                out.push(s[..end].to_string());
                if match_parts(rest, &s[end..], out) {
                    return true;
                }
                out.pop();
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn ok(method: Method, path: &str) -> Endpoint {
        match classify(&method, path) {
            Ok(r) => r.endpoint,
            Err(e) => panic!("{method} {path}: {e:?}"),
        }
    }

    fn err(method: Method, path: &str) -> RouteError {
        match classify(&method, path) {
            Ok(r) => panic!("{method} {path}: unexpectedly routed to {r:?}"),
            Err(e) => e,
        }
    }

    fn id(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn classifies_the_common_endpoints() {
        use Endpoint::*;
        let table: &[(Method, &str, Endpoint)] = &[
            (Method::GET, "/_ping", Ping),
            (Method::HEAD, "/_ping", PingHead),
            (Method::GET, "/v1.41/version", Version),
            (Method::GET, "/v1.41/info", Info),
            (Method::GET, "/v1.41/events?filters=%7B%7D", Events),
            (Method::GET, "/v1.41/system/df", SystemDf),
            (Method::GET, "/v1.41/containers/json?all=1", ContainerList),
            (
                Method::POST,
                "/v1.41/containers/create?name=x",
                ContainerCreate,
            ),
            (
                Method::GET,
                "/v1.41/containers/abc/json",
                ContainerInspect { id: id("abc") },
            ),
            (
                Method::POST,
                "/v1.41/containers/abc/start",
                ContainerStart { id: id("abc") },
            ),
            (
                Method::POST,
                "/v1.41/containers/abc/exec",
                ExecCreate {
                    container: id("abc"),
                },
            ),
            (
                Method::POST,
                "/v1.41/exec/e1/start",
                ExecStart { id: id("e1") },
            ),
            (
                Method::GET,
                "/v1.41/exec/e1/json",
                ExecInspect { id: id("e1") },
            ),
            (
                Method::PUT,
                "/v1.41/containers/abc/archive?path=/",
                ContainerArchivePut { id: id("abc") },
            ),
            (
                Method::HEAD,
                "/v1.41/containers/abc/archive",
                ContainerArchiveHead { id: id("abc") },
            ),
            (
                Method::DELETE,
                "/v1.41/containers/abc?force=1",
                ContainerDelete { id: id("abc") },
            ),
            (Method::POST, "/v1.41/commit?container=abc", ContainerCommit),
            (
                Method::POST,
                "/v1.41/images/create?fromImage=busybox",
                ImageCreate,
            ),
            (
                Method::GET,
                "/v1.41/images/library/busybox:latest/json",
                ImageInspect {
                    name: id("library/busybox:latest"),
                },
            ),
            (
                Method::GET,
                "/v1.41/images/registry:5000/a/b/json",
                ImageInspect {
                    name: id("registry:5000/a/b"),
                },
            ),
            (
                Method::POST,
                "/v1.41/images/a/b/tag?repo=c",
                ImageTag { name: id("a/b") },
            ),
            (
                Method::DELETE,
                "/v1.41/images/a/b:1",
                ImageDelete { name: id("a/b:1") },
            ),
            (Method::POST, "/v1.41/build?t=x", Build),
            (Method::POST, "/v1.41/volumes/create", VolumeCreate),
            (
                Method::GET,
                "/v1.41/volumes/data",
                VolumeInspect { name: id("data") },
            ),
            (Method::GET, "/v1.41/networks", NetworkList),
            (Method::GET, "/v1.41/networks/", NetworkList),
            (
                Method::GET,
                "/v1.41/networks/n1",
                NetworkInspect { id: id("n1") },
            ),
            (
                Method::POST,
                "/v1.41/networks/n1/connect",
                NetworkConnect { id: id("n1") },
            ),
            (Method::POST, "/v1.41/networks/create", NetworkCreate),
            (Method::POST, "/v1.41/swarm/init", SwarmInit),
            (
                Method::GET,
                "/v1.41/services/s1/logs",
                ServiceLogs { id: id("s1") },
            ),
            (
                Method::POST,
                "/v1.41/plugins/vieux/sshfs:latest/enable",
                PluginEnable {
                    name: id("vieux/sshfs:latest"),
                },
            ),
            (Method::POST, "/session", Session),
            (Method::POST, "/v1.41/grpc", Grpc),
            (
                Method::GET,
                "/v1.41/distribution/busybox/json",
                DistributionInspect {
                    name: id("busybox"),
                },
            ),
            (Method::OPTIONS, "/v1.41/containers/json", Options),
            (
                Method::GET,
                "/debug/pprof/heap",
                Debug {
                    path: id("pprof/heap"),
                },
            ),
            (Method::GET, "/v1.45/debug/vars", Debug { path: id("vars") }),
            (
                Method::DELETE,
                "/v1.41/containers/c1/checkpoints/cp1",
                CheckpointDelete {
                    container: id("c1"),
                    checkpoint: id("cp1"),
                },
            ),
        ];
        for (m, p, want) in table {
            assert_eq!(&ok(m.clone(), p), want, "{m} {p}");
        }
    }

    #[test]
    fn keeps_version_and_raw_query() {
        let r = classify(
            &Method::GET,
            "/v1.41/containers/json?filters=%7B%22a%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(
            r.version,
            Some(ApiVersion {
                major: 1,
                minor: 41
            })
        );
        assert_eq!(r.query, "filters=%7B%22a%22%3A1%7D");
        assert_eq!(r.group(), Group::Containers);
        let r = classify(&Method::GET, "/containers/json").unwrap();
        assert_eq!(r.version, None);
        assert_eq!(r.effective_version(), ApiVersion::DAEMON_DEFAULT);
    }

    /// The adversarial table. Each row says which moby/mux behaviour it matches.
    #[test]
    fn adversarial_paths_are_refused_or_normalised_like_dockerd() {
        use Endpoint::*;
        // Normalised exactly as dockerd: Go decodes the path before mux matches.
        // `%63` is `c`: the daemon sees `/containers/abc/json`.
        assert_eq!(
            ok(Method::GET, "/v1.41/%63ontainers/abc/json"),
            ContainerInspect { id: id("abc") }
        );
        // A percent-encoded container name is decoded into `vars["name"]`.
        assert_eq!(
            ok(Method::POST, "/v1.41/containers/my%2Dapp/start"),
            ContainerStart { id: id("my-app") }
        );
        // `+` is not a space in a path (Go's encodePath mode).
        assert_eq!(
            ok(Method::POST, "/v1.41/containers/a+b/start"),
            ContainerStart { id: id("a+b") }
        );
        // Image names legitimately contain `/`, also when encoded (`%2F` decodes to `/`).
        assert_eq!(
            ok(Method::GET, "/v1.41/images/library%2Fbusybox/json"),
            ImageInspect {
                name: id("library/busybox")
            }
        );
        // Trailing slash is kept by cleanPath; no route matches it: 404.
        assert_eq!(
            err(Method::GET, "/v1.41/containers/json/"),
            RouteError::NotFound
        );
        assert_eq!(err(Method::GET, "/v1.41/_ping/"), RouteError::NotFound);

        // Refused: mux would answer 301 to the cleaned path instead of dispatching.
        for p in [
            "/v1.41//containers/json",
            "//containers/json",
            "/v1.41/containers/./json",
            "/v1.41/containers/x/../json",
            "/v1.41/images/../containers/json",
            // dot segments that only appear after decoding (`%2e`, `%2f`)
            "/v1.41/containers/%2e%2e/json",
            "/v1.41/containers/x%2f..%2fjson",
            "/v1.41/containers/x%2F%2Fjson",
            "/v1.41/containers/%2E/json",
        ] {
            assert_eq!(err(Method::GET, p), RouteError::NotCanonical, "{p}");
        }

        // Refused: Docker names never contain `/`; the daemon's lookup would resolve a
        // legacy link alias `/web/db`.
        assert_eq!(
            err(Method::POST, "/v1.41/containers/web/db/start"),
            RouteError::BadName(id("web/db"))
        );
        assert_eq!(
            err(Method::POST, "/v1.41/containers/web%2Fdb/start"),
            RouteError::BadName(id("web/db"))
        );
        // `{name:.*}` is greedy: `/containers/a/json/json` is name "a/json".
        assert_eq!(
            err(Method::GET, "/v1.41/containers/a/json/json"),
            RouteError::BadName(id("a/json"))
        );
        // DELETE /containers/{name:.*} with a trailing slash: name "abc/".
        assert_eq!(
            err(Method::DELETE, "/v1.41/containers/abc/"),
            RouteError::BadName(id("abc/"))
        );
        // Empty name (`{name:.*}` matches the empty string).
        assert_eq!(
            err(Method::DELETE, "/v1.41/containers/"),
            RouteError::NotFound
        );
        assert_eq!(err(Method::DELETE, "/v1.41/volumes/"), RouteError::NotFound);

        // Versions: `[0-9.]+` in mux, but cistern takes MAJOR.MINOR only.
        for (p, v) in [
            ("/v1.41.0/containers/json", "1.41.0"),
            ("/v01.41/containers/json", "01.41"),
            ("/v./containers/json", "."),
            ("/v1/containers/json", "1"),
            ("/v1.12/containers/json", "1.12"),
            ("/v1.23/containers/abc/start", "1.23"),
            ("/v1.41./containers/json", "1.41."),
        ] {
            assert_eq!(err(Method::GET, p), RouteError::BadVersion(id(v)), "{p}");
        }
        // No version digits: `/v/...` and `/V1.41/...` match neither the versioned nor
        // an unversioned route: 404.
        assert_eq!(err(Method::GET, "/v/containers/json"), RouteError::NotFound);
        assert_eq!(
            err(Method::GET, "/V1.41/containers/json"),
            RouteError::NotFound
        );
        // An unknown path under a version is moby's `/v{version}/{path:.*}` 404.
        assert_eq!(err(Method::GET, "/v1.41/nope"), RouteError::NotFound);

        // Methods are exact and case-sensitive; HEAD is not GET.
        let lower = Method::from_bytes(b"get").unwrap();
        assert_eq!(err(lower, "/v1.41/containers/json"), RouteError::NotFound);
        assert_eq!(
            err(Method::HEAD, "/v1.41/containers/json"),
            RouteError::NotFound
        );
        assert_eq!(
            err(Method::POST, "/v1.41/containers/json"),
            RouteError::NotFound
        );

        // Malformed targets.
        assert_eq!(
            err(Method::GET, "/v1.41/containers/%zz/json"),
            RouteError::BadEscape
        );
        assert_eq!(
            err(Method::GET, "/v1.41/containers/%4/json"),
            RouteError::BadEscape
        );
        assert_eq!(
            err(Method::GET, "/v1.41/containers/a%00b/json"),
            RouteError::BadDecodedPath
        );
        assert_eq!(
            err(Method::GET, "/v1.41/containers/a%0Ab/json"),
            RouteError::BadDecodedPath
        );
        assert_eq!(
            err(Method::GET, "/v1.41/containers/%ff/json"),
            RouteError::BadDecodedPath
        );
        assert_eq!(
            err(Method::GET, "/v1.41/containers/json#/../x"),
            RouteError::BadTarget
        );
        assert_eq!(err(Method::GET, "*"), RouteError::BadTarget);
        assert_eq!(
            err(Method::GET, "http://docker/v1.41/info"),
            RouteError::BadTarget
        );
        assert_eq!(err(Method::GET, ""), RouteError::BadTarget);
        assert_eq!(
            err(Method::GET, "/v1.41/containers/a b/json"),
            RouteError::BadTarget
        );
    }

    #[test]
    fn statuses_and_bodies_read_like_dockerd() {
        let e = err(Method::GET, "/nope");
        assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
        assert_eq!(e.json_body(), r#"{"message":"page not found"}"#);
        let e = err(Method::GET, "/v1.41//info");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(e
            .json_body()
            .contains("cistern: path is not in canonical form"));
    }

    #[test]
    fn clean_path_matches_go() {
        for (i, o) in [
            ("/", "/"),
            ("", "/"),
            ("a", "/a"),
            ("/a/", "/a/"),
            ("/a//b", "/a/b"),
            ("/a/./b/", "/a/b/"),
            ("/a/../../b", "/b"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/a/../", "/"),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn every_group_name_round_trips() {
        for g in Group::ALL {
            assert_eq!(Group::from_name(g.as_str()), Some(g));
        }
    }
}
