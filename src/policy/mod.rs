//! Policy: what a listener lets a CI job ask of the Docker daemon.
//!
//! The driver runs these synchronous, I/O-free stages for every request, after
//! [`route::classify`](crate::wire::route::classify):
//!
//! 1. [`Policy::inspect_headers`]: refuses form-encoded bodies, which Go's
//!    `Request.ParseForm` (called by most moby handlers) would read *ahead of* the
//!    query string (`r.Form` puts body values first), so `POST /build` with
//!    `Content-Type: application/x-www-form-urlencoded` and a body
//!    `networkmode=host` would override the query cistern checked.
//! 2. [`Policy::authorize`]: may this endpoint group be used on this listener, and
//!    must the driver read the body whole ([`BodyNeed::Inspect`] with a cap) or may
//!    it stream it ([`BodyNeed::None`]: build contexts, image tarballs, archives)?
//! 3. [`Policy::inspect_query`]: build, pull/import and commit parameters; may
//!    return a rewritten query (injected build limits).
//! 4. The driver reads the body (at most `cap` bytes; over the cap it answers 413)
//!    and calls [`Policy::judge_body`] (or [`Policy::inspect_body`]), which parses the
//!    body like Go ([`json`]), canonicalises it against the schema ([`schema`]), runs
//!    the rules, applies injections and returns the **only** bytes to forward, with
//!    `Content-Type: application/json` and a fresh `Content-Length`.
//!
//! Every refusal is a [`Refusal`] with the status, the rule name, the field and a
//! message such as `cistern: privileged containers are not allowed (policy
//! conservative, HostConfig.Privileged)`; [`Refusal::json_body`] is the Docker-style
//! `{"message": ...}` error.
//!
//! **Audit mode** (`audit: true`): policy refusals are logged by the driver and the
//! request is forwarded anyway. [`Refusal::kind`] tells which refusals are about
//! policy ([`RefusalKind::Policy`], forwardable in audit) and which about input
//! cistern cannot read unambiguously ([`RefusalKind::Malformed`], never forwarded).
//! For bodies, [`Policy::judge_body`] returns the canonical body to forward (unknown
//! fields dropped, no rewrites), never the client's raw bytes.
//!
//! One rule concern per file: [`privilege`], [`namespaces`], [`mounts`],
//! [`devices`], [`security_opt`], [`runtime`], [`limits`] (and the [`host`] they
//! are sized from), [`network`], [`build`],
//! [`inject`], and two rewrites that run before the rules they concern:
//! [`socket_bind`] (a bind of the Docker socket becomes a bind of the
//! connection's own cistern socket) and [`unprivileged`] (listed reaper images
//! run unprivileged instead of being refused). `container:` namespace modes and
//! `VolumesFrom` are checked for form only (rules [`RULE_NAMESPACE_CONTAINER`],
//! [`RULE_VOLUMES_FROM`]): the ownership stage that runs next resolves them to
//! the tenant's own containers.

pub mod build;
pub mod buildkit;
pub mod config;
pub mod devices;
pub mod grpc;
pub mod host;
pub mod inject;
pub mod limits;
pub mod mounts;
pub mod namespaces;
pub mod network;
pub mod privilege;
pub mod runtime;
pub mod security_opt;
pub mod socket_bind;
pub mod unprivileged;

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use http::StatusCode;

use crate::wire::route::{Endpoint, Group, Route};

pub use crate::wire::{json, query, schema, Body, Json, Refusal, RefusalKind, UnknownFields};
pub use config::{PolicyConfig, PolicyError};
pub use mounts::RULE_VOLUMES_FROM;
pub use namespaces::RULE_NAMESPACE_CONTAINER;

/// What a listener does with a refusal ([`Policy::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Audit mode and a policy decision: log it and forward the request.
    Audit(Refusal),
    /// Refuse the request.
    Refuse(Refusal),
}

/// Whether the driver must read the body before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyNeed {
    /// Forward the body as a stream (or there is none the daemon reads).
    None,
    /// Read the whole body, at most `cap` bytes (413 beyond), then call
    /// [`Policy::judge_body`] and forward only what it returns.
    Inspect { cap: usize },
}

/// An accepted body: what to forward and what cistern changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// The canonical JSON value (or the bytes as sent, or empty), to forward
    /// with `Content-Type: application/json` once the other stages edited it.
    pub body: Body,
    /// Human-readable notes for the access log: injections, clamps, dropped fields.
    pub notes: Vec<String>,
    /// Whether a bind of the Docker socket was mapped to [`Sockets::to`]:
    /// the caller must then serve a socket there.
    pub socket_mapped: bool,
}

/// The cistern sockets a create's Docker socket binds are judged against
/// ([`socket_bind`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sockets<'a> {
    /// The host path of the cistern unix socket the request came in on
    /// (`None` on TCP): a bind of it is a bind of the Docker socket too.
    pub own: Option<&'a Path>,
    /// Where the client sees that socket, when cistern mounted it there (a
    /// job's or a container's own socket, seen at `/run/cistern/docker.sock`
    /// through `DOCKER_HOST`): reapers bind the path `DOCKER_HOST` names.
    pub seen_at: Option<&'a Path>,
    /// Where a bind of the Docker socket is mapped: the socket cistern will
    /// serve for this container alone. `None`: such binds are refused.
    pub to: Option<&'a Path>,
}

/// The outcome of body inspection, with what audit mode forwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow(Inspected),
    Refuse {
        /// The first refusal (all of them in `all` when auditing).
        refusal: Refusal,
        all: Vec<Refusal>,
        /// In audit mode, for policy refusals: the canonical body to forward.
        audit_forward: Option<Body>,
    },
}

/// A listener's compiled policy. Built by [`PolicyConfig::validate`];
/// [`Policy::default`] is the built-in `conservative` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub allowed_groups: BTreeSet<Group>,
    pub unknown_fields: UnknownFields,
    pub max_body_size: usize,
    /// Allowed `CapAdd` values, canonical (`CAP_NET_ADMIN`).
    pub capabilities: BTreeSet<String>,
    pub bind_mounts: Vec<mounts::BindAllow>,
    pub sysctls: Vec<String>,
    pub limits: limits::Limits,
    pub publish_host_ip: Option<std::net::IpAddr>,
    pub inject: inject::Inject,
    /// Host paths a client may know the Docker socket by (cleaned, absolute);
    /// empty: no mapping ([`socket_bind`]).
    pub socket_binds: Vec<String>,
    /// Images whose `Privileged: true` is dropped instead of refused.
    pub unprivileged_images: Vec<unprivileged::ImageName>,
    /// What BuildKit's `/grpc` calls may do beyond the defaults.
    pub grpc: grpc::Allow,
    pub audit: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        // The default config validates by construction (tested).
        PolicyConfig::default()
            .validate()
            .unwrap_or_else(|_| unreachable_policy())
    }
}

#[cold]
fn unreachable_policy() -> Policy {
    Policy {
        name: "conservative".into(),
        allowed_groups: BTreeSet::new(),
        unknown_fields: UnknownFields::Refuse,
        max_body_size: 0,
        capabilities: BTreeSet::new(),
        bind_mounts: Vec::new(),
        sysctls: Vec::new(),
        limits: limits::Limits::default(),
        publish_host_ip: None,
        inject: inject::Inject::default(),
        socket_binds: Vec::new(),
        unprivileged_images: Vec::new(),
        grpc: grpc::Allow::default(),
        audit: false,
    }
}

/// Rule context: the policy, collected refusals (audit) and notes.
pub struct Ctx<'a> {
    pub policy: &'a Policy,
    pub refusals: Vec<Refusal>,
    pub notes: Vec<String>,
    /// True for `POST /containers/{id}/update`, where absent means "unchanged".
    pub update: bool,
    /// The cistern sockets Docker socket binds are judged against.
    pub sockets: Sockets<'a>,
    /// Docker socket binds [`socket_bind`] mapped to `sockets.to`: the mounts
    /// rule lets exactly these through.
    pub mapped: socket_bind::Mapped,
}

impl Ctx<'_> {
    /// Records a policy refusal: an error at once when enforcing, collected (and
    /// processing continues) when auditing.
    pub fn deny(
        &mut self,
        rule: &'static str,
        field: impl Into<String>,
        what: impl std::fmt::Display,
    ) -> Result<(), Refusal> {
        let field = field.into();
        let r = Refusal::policy(
            rule,
            field.clone(),
            format!("cistern: {what} (policy {}, {field})", self.policy.name),
        );
        if self.policy.audit {
            self.refusals.push(r);
            Ok(())
        } else {
            Err(r)
        }
    }
}

impl Policy {
    /// Stage 1: refuses form-encoded request bodies (see the module docs).
    pub fn inspect_headers(&self, headers: &http::HeaderMap) -> Result<(), Refusal> {
        for ct in headers.get_all(http::header::CONTENT_TYPE) {
            let media = ct
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if media == "application/x-www-form-urlencoded" || media == "multipart/form-data" {
                return Err(Refusal::malformed(
                    "form_body",
                    "Content-Type".into(),
                    format!("cistern: Content-Type {media} is not accepted: dockerd would read request parameters from the body"),
                ));
            }
        }
        Ok(())
    }

    /// Audit or refuse: in audit mode a policy decision is only logged and
    /// the request goes on; input cistern cannot read is refused even then.
    pub fn decide(&self, refusal: Refusal) -> Decision {
        if self.audit && refusal.kind == RefusalKind::Policy {
            Decision::Audit(refusal)
        } else {
            Decision::Refuse(refusal)
        }
    }

    /// Stage 2: may this endpoint be used on this listener, and must its body be read?
    pub fn authorize(&self, route: &Route) -> Result<BodyNeed, Refusal> {
        let group = route.group();
        if group == Group::Session && !self.allowed_groups.contains(&group) {
            let what = match route.endpoint {
                Endpoint::Grpc => "the /grpc control API",
                _ => "the /session hijack",
            };
            return Err(buildkit::off(self, what));
        }
        if !self.allowed_groups.contains(&group) {
            if let Endpoint::PluginInspect { name } = &route.endpoint {
                // The docker CLI's untyped `docker inspect x` asks for a
                // plugin last and stops at any error but "not found": without
                // the plugins group there are none, said the daemon's way.
                let mut refusal = Refusal::policy(
                    "endpoint_group",
                    group.as_str().into(),
                    format!("plugin {name:?} not found"),
                );
                refusal.status = StatusCode::NOT_FOUND;
                return Err(refusal);
            }
            return Err(Refusal::policy(
                "endpoint_group",
                group.as_str().into(),
                format!(
                    "cistern: the {group} endpoints are not allowed (policy {})",
                    self.name
                ),
            ));
        }
        if let Endpoint::ContainerCopy { .. } = route.endpoint {
            return Err(Refusal::policy(
                "deprecated_endpoint",
                "copy".into(),
                format!(
                    "cistern: POST /containers/{{id}}/copy is deprecated, use the archive endpoint (policy {})",
                    self.name
                ),
            ));
        }
        Ok(match body_schema(&route.endpoint) {
            Some(_) => BodyNeed::Inspect {
                cap: self.max_body_size,
            },
            None => BodyNeed::None,
        })
    }

    /// Stage 3: query checks; `Ok(Some(q))` means "forward with query `q` instead".
    pub fn inspect_query(&self, route: &Route) -> Result<Option<String>, Refusal> {
        let q = query::Query::parse(&route.query)?;
        let mut ctx = self.ctx(false, Sockets::default());
        let rewritten = match route.endpoint {
            Endpoint::Build => build::build_query(&mut ctx, &q)?,
            Endpoint::ImageCreate => {
                build::image_create_query(&mut ctx, &q)?;
                None
            }
            _ => None,
        };
        match ctx.refusals.into_iter().next() {
            Some(r) => Err(r),
            None => Ok(rewritten),
        }
    }

    /// Stage 4 (enforcing): the body to forward, or why not. In audit mode this
    /// still returns the refusal; use [`Policy::judge_body`] to get the audit body.
    pub fn inspect_body(&self, route: &Route, body: &[u8]) -> Result<Inspected, Refusal> {
        match self.judge_body(route, body) {
            Verdict::Allow(i) => Ok(i),
            Verdict::Refuse { refusal, .. } => Err(refusal),
        }
    }

    /// Stage 4 with audit support, where no socket can be given to a
    /// container (see [`Policy::judge_body_on`]).
    pub fn judge_body(&self, route: &Route, body: &[u8]) -> Verdict {
        self.judge_body_on(route, body, Sockets::default())
    }

    /// Stage 4 with audit support; binds of the Docker socket are mapped to
    /// `sockets.to` (without one they are refused).
    pub fn judge_body_on(&self, route: &Route, body: &[u8], sockets: Sockets<'_>) -> Verdict {
        let refuse = |r: Refusal| Verdict::Refuse {
            all: vec![r.clone()],
            refusal: r,
            audit_forward: None,
        };
        let Some(obj) = body_schema(&route.endpoint) else {
            // Nothing to inspect: forward as is.
            return Verdict::Allow(Inspected {
                body: Body::Raw(Bytes::copy_from_slice(body)),
                notes: Vec::new(),
                socket_mapped: false,
            });
        };
        if body.len() > self.max_body_size {
            return refuse(Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                rule: "body_size",
                field: String::new(),
                message: format!(
                    "cistern: request body is larger than {} bytes (policy {})",
                    self.max_body_size, self.name
                ),
                kind: RefusalKind::Malformed,
            });
        }
        // An empty body is forwarded empty: the daemon then reads no fields at all
        // (and refuses the endpoints that need one).
        if body.iter().all(u8::is_ascii_whitespace) {
            return Verdict::Allow(Inspected {
                body: Body::empty(),
                notes: Vec::new(),
                socket_mapped: false,
            });
        }
        let mut ctx = self.ctx(
            matches!(route.endpoint, Endpoint::ContainerUpdate { .. }),
            sockets,
        );
        let value = match json::parse(body) {
            Ok(v) => v,
            Err(r) => return refuse(r),
        };
        // In audit mode unknown fields are dropped from the forwarded body and the
        // would-be refusal is recorded; only then is a second pass (and the copy
        // it reads) needed.
        let (value, audit_copy) = if self.audit {
            (value.clone(), Some(value))
        } else {
            (value, None)
        };
        let mut canonical = match json::canonicalise(
            value,
            obj,
            json::Canon {
                unknown: self.unknown_fields,
            },
            &mut ctx.notes,
        ) {
            Ok(v) => v,
            Err(r) => match audit_copy {
                Some(value) if r.kind == RefusalKind::Policy => {
                    ctx.refusals.push(r);
                    match json::canonicalise(
                        value,
                        obj,
                        json::Canon {
                            unknown: UnknownFields::Drop,
                        },
                        &mut Vec::new(),
                    ) {
                        Ok(v) => v,
                        Err(r) => return refuse(r),
                    }
                }
                _ => return refuse(r),
            },
        };
        // A body that must be empty (`start`): `{}` is fine and forwarded empty.
        if std::ptr::eq(obj, &schema::EMPTY) {
            return Verdict::Allow(Inspected {
                body: Body::empty(),
                notes: ctx.notes,
                socket_mapped: false,
            });
        }
        // What audit mode forwards: the body before the rules edited it.
        let audit_body = self.audit.then(|| Body::Json(canonical.clone()));
        if let Err(r) = self.apply_rules(&mut ctx, &route.endpoint, &mut canonical) {
            return match r.kind {
                RefusalKind::Malformed => refuse(r),
                RefusalKind::Policy => Verdict::Refuse {
                    all: vec![r.clone()],
                    refusal: r,
                    audit_forward: None,
                },
            };
        }
        if let Some(first) = ctx.refusals.first().cloned() {
            return Verdict::Refuse {
                refusal: first,
                all: ctx.refusals,
                audit_forward: audit_body,
            };
        }
        Verdict::Allow(Inspected {
            body: Body::Json(canonical),
            notes: ctx.notes,
            socket_mapped: !ctx.mapped.is_empty(),
        })
    }

    fn ctx<'a>(&'a self, update: bool, sockets: Sockets<'a>) -> Ctx<'a> {
        Ctx {
            policy: self,
            refusals: Vec::new(),
            notes: Vec::new(),
            update,
            sockets,
            mapped: socket_bind::Mapped::default(),
        }
    }

    fn apply_rules(
        &self,
        ctx: &mut Ctx<'_>,
        endpoint: &Endpoint,
        body: &mut Json,
    ) -> Result<(), Refusal> {
        match endpoint {
            Endpoint::ContainerCreate => {
                unprivileged::container_create(ctx, body);
                let hc = body.object_mut("HostConfig");
                socket_bind::host_config(ctx, hc)?;
                privilege::host_config(ctx, hc)?;
                namespaces::host_config(ctx, hc)?;
                mounts::host_config(ctx, hc)?;
                devices::resources(ctx, hc, "HostConfig")?;
                security_opt::host_config(ctx, hc)?;
                runtime::host_config(ctx, hc)?;
                runtime::resources(ctx, hc, "HostConfig")?;
                network::host_config(ctx, hc)?;
                limits::host_config(ctx, hc)?;
                network::networking_config(ctx, body)?;
                inject::container_create(ctx, body)?;
                // Do not forward an empty HostConfig that cistern created.
                if body.get("HostConfig") == Some(&Json::Object(Vec::new())) {
                    body.remove("HostConfig");
                }
            }
            Endpoint::ContainerUpdate { .. } => {
                devices::resources(ctx, body, "")?;
                runtime::resources(ctx, body, "")?;
                limits::resources(ctx, body, "")?;
            }
            Endpoint::ExecCreate { .. } => privilege::exec_create(ctx, body)?,
            Endpoint::VolumeCreate => mounts::volume_create(ctx, body)?,
            Endpoint::NetworkCreate => network::network_create(ctx, body)?,
            Endpoint::NetworkConnect { .. } => network::network_connect(ctx, body)?,
            _ => {}
        }
        Ok(())
    }
}

/// The schema of the JSON body an endpoint reads, if the daemon reads one.
pub fn body_schema(endpoint: &Endpoint) -> Option<&'static schema::Obj> {
    Some(match endpoint {
        Endpoint::ContainerCreate => &schema::CONTAINER_CREATE,
        Endpoint::ContainerUpdate { .. } => &schema::CONTAINER_UPDATE,
        Endpoint::ContainerCommit => &schema::CONFIG,
        Endpoint::ExecCreate { .. } => &schema::EXEC_CREATE,
        Endpoint::ExecStart { .. } => &schema::EXEC_START,
        Endpoint::VolumeCreate => &schema::VOLUME_CREATE,
        Endpoint::NetworkCreate => &schema::NETWORK_CREATE,
        Endpoint::NetworkConnect { .. } => &schema::NETWORK_CONNECT,
        Endpoint::NetworkDisconnect { .. } => &schema::NETWORK_DISCONNECT,
        // Below API 1.24 `start` read a HostConfig body; cistern refuses those
        // versions in routing, and still insists that the body is empty.
        Endpoint::ContainerStart { .. } => &schema::EMPTY,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::wire::route::classify;

    pub fn route(method: &str, path: &str) -> Route {
        let m = http::Method::from_bytes(method.as_bytes()).expect("method");
        classify(&m, path).expect("route")
    }

    pub fn create(policy: &Policy, body: &str) -> Result<Json, Refusal> {
        let i = policy.inspect_body(&route("POST", "/v1.41/containers/create"), body.as_bytes())?;
        json::parse(&i.body.to_bytes())
    }

    pub fn refused(policy: &Policy, body: &str) -> Refusal {
        match create(policy, body) {
            Ok(v) => panic!(
                "allowed: {body}\n-> {}",
                String::from_utf8_lossy(&v.to_vec())
            ),
            Err(r) => r,
        }
    }

    pub fn policy_yaml(yaml: &str) -> Policy {
        let c: PolicyConfig = serde_yaml::from_str(yaml).expect("yaml");
        c.validate().expect("valid")
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    /// docker-py and the docker CLI send explicit defaults; values decide, not keys.
    #[test]
    fn docker_py_style_explicit_defaults_pass() {
        let p = Policy::default();
        let body = r#"{"Image":"x","Cmd":null,"Env":null,"Labels":{},"HostConfig":{"Privileged":false,"CapAdd":null,"CapDrop":null,"Binds":[],"Devices":[],"DeviceRequests":null,"DeviceCgroupRules":null,"SecurityOpt":null,"NetworkMode":"default","PidMode":"","IpcMode":"","UTSMode":"","UsernsMode":"","Cgroup":"","CgroupnsMode":"","Mounts":null,"Sysctls":{},"Runtime":"","Isolation":"","CgroupParent":"","OomKillDisable":false,"PidsLimit":null,"VolumeDriver":"","VolumesFrom":null,"MaskedPaths":null,"ReadonlyPaths":null,"PublishAllPorts":false,"PortBindings":{},"LogConfig":{"Type":"","Config":{}},"RestartPolicy":{"Name":"","MaximumRetryCount":0},"Memory":0,"NanoCpus":0,"ShmSize":0,"Init":null},"NetworkingConfig":{"EndpointsConfig":{}}}"#;
        let v = create(&p, body).unwrap();
        assert_eq!(
            v.at(&["HostConfig", "Privileged"]),
            Some(&Json::Bool(false))
        );
        let body = r#"{"Image":"x","HostConfig":{"Privileged":false,"CapAdd":null,"Binds":[],"Devices":[],"SecurityOpt":null}}"#;
        create(&p, body).unwrap();
    }

    /// docker-py's `exec_create` (and so docker-compose v1's `exec`) sends the
    /// container in the body too; dockerd ignores it, so cistern drops it.
    #[test]
    fn docker_py_exec_create_body_passes_without_its_container_field() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/containers/c/exec");
        let body = br#"{"Container":"other","User":"","Privileged":false,"Tty":false,"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["cat"],"Env":null}"#;
        let i = p.inspect_body(&r, body).unwrap();
        assert_eq!(
            String::from_utf8(i.body.to_bytes().to_vec()).unwrap(),
            r#"{"User":"","Privileged":false,"Tty":false,"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["cat"]}"#
        );
        // Any value is dropped, never judged or forwarded; the rest still is.
        p.inspect_body(&r, br#"{"Cmd":["sh"],"container":{"Privileged":true}}"#)
            .unwrap();
        let e = p
            .inspect_body(&r, br#"{"Container":"c","Privileged":true}"#)
            .unwrap_err();
        assert_eq!(e.rule, "privileged_exec");
    }

    /// dockerode repeats the create's query parameters in the body.
    #[test]
    fn dockerode_create_body_passes_without_its_name_and_platform() {
        let p = policy_yaml("limits: none"); // whole bodies compared
        let v = create(
            &p,
            r#"{"Image":"x","name":"web","platform":"linux/amd64","HostConfig":{"AutoRemove":false}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"AutoRemove":false}}"#
        );
    }

    #[test]
    fn bollard_exec_start_body_passes_without_its_output_capacity() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/exec/e/start");
        let i = p
            .inspect_body(&r, br#"{"Detach":false,"Tty":false,"OutputCapacity":8192}"#)
            .unwrap();
        assert_eq!(&i.body.to_bytes()[..], br#"{"Detach":false,"Tty":false}"#);
        // dockerode's client-side `stdin` and `hijack` options too.
        let i = p
            .inspect_body(
                &r,
                br#"{"stdin":true,"hijack":true,"Detach":false,"Tty":false}"#,
            )
            .unwrap();
        assert_eq!(&i.body.to_bytes()[..], br#"{"Detach":false,"Tty":false}"#);
        // Other unknown fields follow the policy like everywhere else.
        let e = p
            .inspect_body(&r, br#"{"Detach":false,"Bogus":1}"#)
            .unwrap_err();
        assert_eq!(e.rule, "unknown_field");
    }

    /// docker-py 7.1.0's `containers.run(image, network="mynet", ports=...,
    /// volumes=..., healthcheck=..., restart_policy=..., devices=[])`, byte for
    /// byte: the network's `null` entry is dropped, everything else is kept.
    #[test]
    fn docker_py_run_with_a_network_passes_without_its_null_endpoint() {
        let p = Policy::default();
        let body = r#"{"ExposedPorts": {"8080/tcp": {}}, "Tty": false, "OpenStdin": false, "StdinOnce": false, "AttachStdin": false, "AttachStdout": false, "AttachStderr": false, "Cmd": ["sleep", "60"], "Image": "busybox", "Volumes": {"/data": {}}, "NetworkDisabled": false, "HostConfig": {"NetworkMode": "mynet", "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}, "Binds": ["data:/data:rw"], "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": ""}]}}, "NetworkingConfig": {"mynet": null}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000, "Timeout": null, "Retries": 3, "StartPeriod": null}}"#;
        let i = p
            .inspect_body(&route("POST", "/v1.41/containers/create"), body.as_bytes())
            .unwrap();
        assert!(
            i.notes
                .contains(&"dropped NetworkingConfig.mynet (null)".to_string()),
            "{:?}",
            i.notes
        );
        let v = json::parse(&i.body.to_bytes()).unwrap();
        let s = |path: &[&str]| String::from_utf8(v.at(path).unwrap().to_vec()).unwrap();
        assert_eq!(s(&["NetworkingConfig"]), "{}");
        assert_eq!(s(&["HostConfig", "NetworkMode"]), r#""mynet""#);
        assert_eq!(
            s(&["HostConfig", "RestartPolicy"]),
            r#"{"Name":"on-failure","MaximumRetryCount":3}"#
        );
        assert_eq!(
            s(&["HostConfig", "PortBindings"]),
            r#"{"8080/tcp":[{"HostIp":"","HostPort":""}]}"#
        );
        assert_eq!(s(&["HostConfig", "Binds"]), r#"["data:/data:rw"]"#);
        assert_eq!(
            s(&["Healthcheck"]),
            r#"{"Test":["CMD","true"],"Interval":1000000000,"Retries":3}"#
        );
    }

    /// dockerode's `docker.run(image, cmd, stream)` create body, byte for byte.
    #[test]
    fn dockerode_run_passes_without_its_empty_top_level_volumes_from() {
        let p = Policy::default();
        let body = r#"{"Hostname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":true,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["true"],"Image":"busybox","Volumes":{},"VolumesFrom":[]}"#;
        let v = create(&p, body).unwrap();
        assert_eq!(v.get("VolumesFrom"), None);
        assert_eq!(v.get("Cmd"), Some(&Json::string_array(["true"])));
        // Naming a container to take volumes from belongs in HostConfig, where
        // the ownership stage checks it; 20.10 would read it at the top level.
        let r = refused(&p, r#"{"Image":"busybox","VolumesFrom":["db"]}"#);
        assert_eq!((r.rule, r.field.as_str()), ("unknown_field", "VolumesFrom"));
    }

    /// dockerode's `container.commit(opts)` (testcontainers-node's `commit()`)
    /// repeats its query options in the body.
    #[test]
    fn dockerode_commit_body_passes_without_its_query_options() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/commit?container=c&repo=r&tag=t");
        let i = p
            .inspect_body(
                &r,
                br#"{"repo":"r","tag":"t","changes":"LABEL a=b","container":"c"}"#,
            )
            .unwrap();
        assert_eq!(&i.body.to_bytes()[..], b"{}");
        assert_eq!(i.notes.len(), 4, "{:?}", i.notes);
    }

    #[test]
    fn default_policy_allows_the_ci_groups_and_denies_the_rest() {
        let p = Policy::default();
        for path in [
            "/v1.41/_ping",
            "/v1.41/containers/json",
            "/v1.41/images/json",
            "/v1.41/events",
            "/v1.41/system/df",
            "/v1.41/volumes",
            "/v1.41/networks",
        ] {
            assert_eq!(
                p.authorize(&route("GET", path)),
                Ok(BodyNeed::None),
                "{path}"
            );
        }
        for (m, path, group) in [
            ("POST", "/v1.41/swarm/init", "swarm"),
            ("GET", "/v1.41/nodes", "nodes"),
            ("GET", "/v1.41/services", "services"),
            ("GET", "/v1.41/tasks", "tasks"),
            ("GET", "/v1.41/secrets", "secrets"),
            ("GET", "/v1.41/configs", "configs"),
            ("POST", "/v1.41/plugins/pull", "plugins"),
            ("GET", "/v1.41/distribution/x/json", "distribution"),
            ("GET", "/debug/vars", "debug"),
            ("POST", "/v1.41/containers/c/checkpoints", "checkpoints"),
            ("PUT", "/v1.41/volumes/v", "swarm"),
        ] {
            let r = p.authorize(&route(m, path)).unwrap_err();
            assert_eq!(
                (r.rule, r.field.as_str(), r.status),
                ("endpoint_group", group, StatusCode::FORBIDDEN),
                "{path}"
            );
        }
        let r = p
            .authorize(&route("POST", "/v1.41/containers/x/copy"))
            .unwrap_err();
        assert_eq!(r.rule, "deprecated_endpoint");
    }

    #[test]
    fn body_need_follows_the_endpoint() {
        let p = Policy::default();
        let cap = BodyNeed::Inspect { cap: 1 << 20 };
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/containers/create")),
            Ok(cap)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/containers/c/update")),
            Ok(cap)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/containers/c/exec")),
            Ok(cap)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/containers/c/start")),
            Ok(cap)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/commit?container=c")),
            Ok(cap)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/build")),
            Ok(BodyNeed::None)
        );
        assert_eq!(
            p.authorize(&route("POST", "/v1.41/images/load")),
            Ok(BodyNeed::None)
        );
        assert_eq!(
            p.authorize(&route("PUT", "/v1.41/containers/c/archive?path=/")),
            Ok(BodyNeed::None)
        );
    }

    #[test]
    fn start_body_must_be_empty() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/containers/c/start");
        assert_eq!(p.inspect_body(&r, b"").unwrap().body, Body::empty());
        assert_eq!(p.inspect_body(&r, b"{}").unwrap().body, Body::empty());
        assert_eq!(
            p.inspect_body(&r, br#"{"Privileged":true}"#)
                .unwrap_err()
                .rule,
            "unknown_field"
        );
    }

    #[test]
    fn form_bodies_are_refused() {
        let p = Policy::default();
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            "application/x-tar".parse().unwrap(),
        );
        assert!(p.inspect_headers(&h).is_ok());
        h.insert(
            http::header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(p.inspect_headers(&h).unwrap_err().rule, "form_body");
    }

    #[test]
    fn oversized_bodies_are_413() {
        let p = policy_yaml("max_body_size: 16");
        let r = p
            .inspect_body(
                &route("POST", "/v1.41/containers/create"),
                br#"{"Image":"0123456789abcdef"}"#,
            )
            .unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn refusal_message_names_policy_and_field() {
        let p = Policy::default();
        let r = refused(&p, r#"{"Image":"x","HostConfig":{"Privileged":true}}"#);
        assert_eq!(r.message, "cistern: privileged containers are not allowed (policy conservative, HostConfig.Privileged)");
        assert_eq!(
            r.json_body(),
            r#"{"message":"cistern: privileged containers are not allowed (policy conservative, HostConfig.Privileged)"}"#
        );
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn audit_mode_forwards_the_canonical_body_and_lists_every_refusal() {
        let p = policy_yaml("audit: true");
        let body =
            br#"{"image":"x","Bogus":1,"hostconfig":{"privileged":true,"CapAdd":["SYS_ADMIN"]}}"#;
        match p.judge_body(&route("POST", "/v1.41/containers/create"), body) {
            Verdict::Refuse {
                refusal,
                all,
                audit_forward,
            } => {
                assert_eq!(refusal.rule, "unknown_field");
                let rules: Vec<_> = all.iter().map(|r| r.rule).collect();
                assert_eq!(rules, ["unknown_field", "privileged", "cap_add"]);
                assert_eq!(
                    audit_forward.unwrap().to_bytes(),
                    Bytes::from_static(
                        br#"{"Image":"x","HostConfig":{"Privileged":true,"CapAdd":["SYS_ADMIN"]}}"#
                    )
                );
            }
            v => panic!("{v:?}"),
        }
        // Malformed input is never forwarded, audit or not.
        match p.judge_body(
            &route("POST", "/v1.41/containers/create"),
            br#"{"Image":"x","image":"y"}"#,
        ) {
            Verdict::Refuse {
                audit_forward,
                refusal,
                ..
            } => {
                assert_eq!(refusal.kind, RefusalKind::Malformed);
                assert!(audit_forward.is_none());
            }
            v => panic!("{v:?}"),
        }
    }

    /// What cistern forwards, inspected again, is forwarded unchanged: injections and
    /// clamps are idempotent (the fuzz target checks this on random input too).
    #[test]
    fn accepted_bodies_are_fixed_points() {
        let p = policy_yaml("publish_host_ip: 127.0.0.1\nlimits: {memory: {max: 1GiB, on_exceed: clamp}, cpus: {max: 1, on_exceed: clamp}, pids: {max: 64}, log_max_size: {max: 10MiB}, ulimits: {nofile: {max: 1024}}}\ninject: {labels: {ci: '1'}, env: [CI=true], extra_hosts: ['cache:10.0.0.2'], cgroup_parent: /ci, no_new_privileges: true, init: true}");
        let r = route("POST", "/v1.41/containers/create");
        for body in [
            r#"{"Image":"x"}"#,
            r#"{"image":"x","Env":["CI=false"],"hostconfig":{"Memory":4294967296,"CpuQuota":400000,"PortBindings":{"80/tcp":[{"HostPort":"80"}]},"SecurityOpt":["no-new-privileges=false"]}}"#,
        ] {
            let once = p.inspect_body(&r, body.as_bytes()).unwrap();
            json::check_canonical(
                &json::parse(&once.body.to_bytes()).unwrap(),
                &schema::CONTAINER_CREATE,
            )
            .unwrap();
            let twice = p.inspect_body(&r, &once.body.to_bytes()).unwrap();
            assert_eq!(once.body, twice.body, "{body}");
        }
    }

    /// Case variants, Kelvin-sign keys, duplicates, nesting: the adversarial table.
    #[test]
    fn adversarial_bodies() {
        let p = Policy::default();
        let cases: &[(&str, &str)] = &[
            (r#"{"Image":"x","hostconfig":{"privileged":true}}"#, "privileged"),
            (r#"{"Image":"x","HOSTCONFIG":{"PRIVILEGED":true}}"#, "privileged"),
            ("{\"Image\":\"x\",\"HostConfig\":{\"CapAdd\":[\"SYS_ADMIN\"],\"\u{212A}ernelMemory\":0}}", "cap_add"),
            ("{\"Image\":\"x\",\"HostConfig\":{\"\u{017F}ecurityOpt\":[\"seccomp=unconfined\"]}}", "security_opt"),
            (r#"{"Image":"x","HostConfig":{"Privileged":false,"privileged":true}}"#, "json_duplicate_key"),
            (r#"{"Image":"x","Privileged":true}"#, "unknown_field"),
            (r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"Evil":1}}]}}"#, "unknown_field"),
            (r#"{"Image":"x"} {"HostConfig":{"Privileged":true}}"#, "json_malformed"),
            (r#"{"Image":"x","HostConfig":{"Memory":123456789012345678901234567890}}"#, "json_type"),
            (r#"{"Image":"x","HostConfig":{"Binds":["/:/host"]}}"#, "bind_mount"),
            (r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}}"#, "bind_mount"),
            (r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"volume","Source":"v","Target":"/h","VolumeOptions":{"DriverConfig":{"Options":{"type":"none","o":"bind","device":"/"}}}}]}}"#, "volume_driver_opts"),
            (r#"{"Image":"x","HostConfig":{"PidMode":"container:we b"}}"#, "namespace_container"),
            (r#"{"Image":"x","HostConfig":{"NetworkMode":"container:"}}"#, "namespace_container"),
        ];
        for (body, rule) in cases {
            assert_eq!(refused(&p, body).rule, *rule, "{body}");
        }
        let mut deep = String::from(r#"{"Image":"x","Labels":"#);
        deep.push_str(&"[".repeat(1 << 19));
        assert_eq!(refused(&p, &deep).rule, "json_malformed");
    }
}
