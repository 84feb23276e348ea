//! Injection of cache routing and trust into containers: what makes a CI
//! job's package downloads go through cistern's caching proxy, and trust the
//! certificates it presents, without the job doing anything.
//!
//! Runs only when the configuration has a `caching:` section, and not for
//! listeners with `caching_inject: false` nor for images matching
//! `caching.inject.skip_images` ([`images`]). The driver
//! ([`crate::docker`]) calls it at three points:
//!
//! 1. **`POST /build` query** ([`Injector::build_target`]): `extrahosts`
//!    entries for the cached domains ([`hosts`]).
//! 2. **Container create, before forwarding** ([`prepare`]), on the body the
//!    policy produced: `HostConfig.ExtraHosts` ([`hosts`]), the configured
//!    environment ([`env`], default `NODE_EXTRA_CA_CERTS`) and the label
//!    `cistern.ca=<ids>` recording the CAs the container trusts. The CAs are
//!    fixed here: [`cistern_ca::CaStore::current_for_new_container`] first (so a
//!    CA that outlives `max_job_duration` exists), then **every CA valid now**
//!    ([`cistern_ca::CaStore::cas_valid_at`], newest first). The caching proxy
//!    signs a name with the oldest valid CA that permits it; for every name the
//!    container was given, that CA is its current one or older, still valid,
//!    so it was valid at creation and the container holds it, across rotations
//!    and changes of `caching.domains` alike (see the CA crate's rotation
//!    design).
//! 3. **After the daemon answered `201`, before the client hears of it**
//!    ([`Injector::finish_create`]): the CA PEMs go into the container's trust
//!    stores through the archive API ([`trust`] says where and what,
//!    [`archive`] does the calls), in the container's own layer, never the
//!    image. Only then is the `201` passed on.
//!
//! **Failure** (read-only root filesystem, a bundle on a mount, ...): the
//! container is removed, then `caching.inject.on_failure` decides: `skip`
//! (default) creates it again from the policy-checked body *without any*
//! caching injection and answers with that create's response (the client never
//! sees the first id); `refuse` answers `409` (or `502`/`500` when the daemon or
//! cistern failed) with `cistern: could not install the cache CA into the
//! container: ...`. Either way no half-injected container is left.
//!
//! Only certificates are handled here: CA private keys never leave the state
//! directory.

pub mod archive;
pub mod env;
pub mod error;
pub mod hosts;
pub mod images;
pub mod learn;
pub mod trust;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use time::OffsetDateTime;

use self::archive::Container;
use self::error::InjectError;
use self::trust::FileMeta;
use crate::daemon::error::{DockerError, Side};
use crate::daemon::upstream::UpstreamClient;
use crate::http::headers;
use crate::http::{BoxError, ProxyBody};
use crate::mitm::handout::{HandedCa, Handout, InjectFailure};
use crate::wire::route::{Endpoint, Route};
use crate::wire::{Body, Json};

pub use self::env::CA_LABEL;

/// The standalone PEM every injected container gets.
pub const CA_PATH: &str = crate::mitm::handout::CA_PATH;

/// Injection as configured: built once from the `caching:` section and the
/// listeners.
#[derive(Debug)]
pub struct Injector {
    caching: Handout,
    /// Listeners with `caching_inject: false`.
    off: Vec<String>,
    /// Repository hosts found per image.
    images: learn::ImageHosts,
}

/// A container create about to be forwarded with injection.
#[derive(Debug)]
pub struct Prepared {
    /// The policy-checked body without any injection (for `skip`),
    /// serialised only if it is needed.
    plain: Json,
    cas: Vec<HandedCa>,
    image: String,
    /// The request line and headers, to create again on `skip`.
    uri: Option<Uri>,
    headers: HeaderMap,
}

impl Prepared {
    /// Remembers the request as forwarded, to create again without injection.
    pub fn remember(&mut self, parts: &http::request::Parts) {
        self.uri = Some(parts.uri.clone());
        self.headers = parts.headers.clone();
    }
}

/// Driver hook for stage 2: injects into the body to forward, in place, and
/// says, when the injection applies, what to finish after the daemon
/// created the container.
pub fn prepare(
    injector: Option<&Injector>,
    listener: &str,
    route: &Route,
    body: &mut Body,
    now: OffsetDateTime,
) -> Result<Option<Prepared>, DockerError> {
    match (injector, body) {
        (Some(injector), Body::Json(value)) if route.endpoint == Endpoint::ContainerCreate => {
            injector.prepare_create(listener, value, now)
        }
        _ => Ok(None),
    }
}

impl Injector {
    /// Injection with `caching`, on every listener but those named in `off`
    /// (`caching_inject: false`). `local_layers`: the daemon's image layers
    /// are on this host (it is reached through a unix socket), so images
    /// are read for the repository hosts they name.
    pub fn new(caching: Handout, off: Vec<String>, local_layers: bool) -> Injector {
        Injector {
            caching,
            off,
            images: learn::ImageHosts::new(local_layers),
        }
    }

    /// Before a container create is injected: the repository hosts its
    /// image and environment name join the cached set (when
    /// `caching.discover` admits them), so this very container is routed
    /// and trusted for them.
    pub async fn learn_for_create(
        &self,
        daemon: crate::daemon::client::Daemon<'_>,
        listener: &str,
        route: &Route,
        body: &Body,
    ) {
        let Body::Json(value) = body else { return };
        if route.endpoint != Endpoint::ContainerCreate
            || !self.on_listener(listener)
            || !self.caching.learn_images
        {
            return;
        }
        let image = value.get("Image").and_then(Json::as_str).unwrap_or("");
        if images::skipped(&self.caching.skip_images, image) {
            return;
        }
        let env = learn::env_from(value.get("Env").into_iter().flat_map(Json::strings));
        let found = self.images.for_create(daemon, image, &env).await;
        if !found.is_empty() {
            self.caching.learn(&found, OffsetDateTime::now_utc());
        }
    }

    fn on_listener(&self, listener: &str) -> bool {
        !self.off.iter().any(|l| l == listener)
    }

    fn on_failure(&self) -> InjectFailure {
        self.caching.on_failure
    }

    /// Stage 1: the request target of a `POST /build` with `extrahosts` for the
    /// cached domains added (other requests and switched-off listeners: as is).
    pub fn build_target(&self, listener: &str, route: &Route, target: String) -> String {
        if route.endpoint != Endpoint::Build || !self.caching.builds || !self.on_listener(listener)
        {
            return target;
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let cfg = &self.caching;
        match hosts::build_query(query, &cfg.domains(), &cfg.address) {
            Some(query) => format!("{path}?{query}"),
            None => target,
        }
    }

    /// Stage 2 on a canonical create body; `Ok(None)`: forward it unchanged.
    pub fn prepare_create(
        &self,
        listener: &str,
        value: &mut Json,
        now: OffsetDateTime,
    ) -> Result<Option<Prepared>, DockerError> {
        if !self.on_listener(listener) {
            return Ok(None);
        }
        let plain = value.clone();
        let image = value
            .get("Image")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let cfg = &self.caching;
        if images::skipped(&cfg.skip_images, &image) {
            tracing::debug!(%image, "caching injection skipped for this image");
            return Ok(None);
        }
        let cas = match self
            .caching
            .cas_for_new_container(now)
            .map_err(InjectError::Internal)
        {
            Ok(cas) => cas,
            Err(err) => {
                return match self.on_failure() {
                    InjectFailure::Skip => {
                        tracing::error!(%image, error = %err, "no CA to give the container: created without caching injection");
                        Ok(None)
                    }
                    InjectFailure::Refuse => Err(refusal(err)),
                }
            }
        };
        hosts::container_create(value, &cfg.domains(), &cfg.address);
        env::container_create(value, &cfg.env);
        let ids: Vec<String> = cas.iter().map(|c| c.id.clone()).collect();
        env::label(value, &ids);
        Ok(Some(Prepared {
            plain,
            cas,
            image,
            uri: None,
            headers: HeaderMap::new(),
        }))
    }

    /// Stage 3: the daemon answered the injected create. On `201`, installs the
    /// CAs and passes the answer on; on failure removes the container and
    /// applies `on_failure`. Other answers pass through.
    pub async fn finish_create(
        &self,
        client: &UpstreamClient,
        prepared: Prepared,
        response: Response<Incoming>,
    ) -> Result<Response<ProxyBody>, DockerError> {
        if response.status() != StatusCode::CREATED {
            return Ok(pass_through(response));
        }
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, false);
        let body = Limited::new(body, 1 << 20)
            .collect()
            .await
            .map_err(|err: BoxError| {
                DockerError::upstream(format!("reading the daemon's create answer: {err}"))
            })?
            .to_bytes();
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("Id").and_then(|id| id.as_str()).map(str::to_string))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                DockerError::upstream("the daemon's create answer has no container id")
            })?;
        let container = Container::new(client, &id);
        let short = &id[..id.len().min(12)];
        match install(&container, &prepared.cas).await {
            Ok(bundles) => {
                tracing::info!(
                    container = short,
                    image = %prepared.image,
                    ca = %prepared.cas.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(","),
                    bundles = ?bundles,
                    "cache CA installed in container"
                );
                Ok(Response::from_parts(
                    parts,
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                ))
            }
            Err(err) => {
                if let Err(rm) = container.remove().await {
                    tracing::error!(container = short, error = %rm, "cannot remove a container whose CA installation failed");
                    return Err(DockerError::internal(format!(
                        "could not install the cache CA into the container ({err}) nor remove it ({rm})"
                    )));
                }
                match self.on_failure() {
                    InjectFailure::Skip => {
                        tracing::warn!(
                            container = short,
                            image = %prepared.image,
                            error = %err,
                            "could not install the cache CA: container removed and created again without caching injection"
                        );
                        self.create_plain(client, prepared).await
                    }
                    InjectFailure::Refuse => {
                        tracing::warn!(container = short, image = %prepared.image, error = %err, "could not install the cache CA: container removed, create refused");
                        Err(refusal(err))
                    }
                }
            }
        }
    }

    /// Creates the container again from the policy-checked body alone.
    async fn create_plain(
        &self,
        client: &UpstreamClient,
        prepared: Prepared,
    ) -> Result<Response<ProxyBody>, DockerError> {
        let uri = prepared
            .uri
            .ok_or_else(|| DockerError::internal("create request not remembered"))?;
        let plain = Bytes::from(prepared.plain.to_vec());
        let mut headers = prepared.headers;
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(http::header::CONTENT_LENGTH, plain.len().into());
        let mut req = http::Request::builder().method(Method::POST).uri(uri);
        if let Some(h) = req.headers_mut() {
            *h = headers;
        }
        let req = req
            .body(
                Full::new(plain)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|err| DockerError::internal(format!("bad create request: {err}")))?;
        let response = client.request(req).await.map_err(|err| {
            DockerError::upstream(format!("the Docker daemon did not answer: {err}"))
        })?;
        Ok(pass_through(response))
    }
}

fn pass_through(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
}

fn refusal(err: InjectError) -> DockerError {
    let side = match err {
        InjectError::Container { .. } | InjectError::Layout(_) => Side::Client,
        InjectError::Daemon(_) => Side::Upstream,
        InjectError::Internal(_) => Side::Internal,
    };
    DockerError {
        status: err.status(),
        side,
        message: format!("cistern: could not install the cache CA into the container: {err}"),
    }
}

/// A bundle path as it exists in the container: itself, or for a link its
/// target (resolved by the daemon within the container's root); `None` when
/// absent or dangling.
async fn resolve_bundle(
    container: &Container<'_>,
    path: &'static str,
) -> Result<Option<(String, trust::PathStat)>, InjectError> {
    let Some(stat) = container.stat(path).await? else {
        return Ok(None);
    };
    if !stat.is_symlink() {
        return Ok(Some((path.to_string(), stat)));
    }
    if !stat.link_target.starts_with('/') {
        tracing::debug!(path, "bundle link does not resolve in the container");
        return Ok(None);
    }
    match container.stat(&stat.link_target).await? {
        Some(target_stat) => Ok(Some((stat.link_target, target_stat))),
        None => {
            tracing::debug!(path, target = %stat.link_target, "bundle link is dangling");
            Ok(None)
        }
    }
}

/// Writes the standalone PEM and appends the CAs to every system bundle the
/// container has; returns the bundle files written (link targets resolved).
async fn install(container: &Container<'_>, cas: &[HandedCa]) -> Result<Vec<String>, InjectError> {
    // One round trip's worth of latency: the inspect and every bundle's stat
    // run concurrently (the container is not started, nothing changes).
    let (mounts, found) = tokio::try_join!(
        container.mount_points(),
        futures_util::future::try_join_all(
            trust::BUNDLES
                .iter()
                .map(|path| resolve_bundle(container, path))
        ),
    )?;
    let on_mount = |path: &str| mounts.iter().find(|m| trust::is_under(path, m)).cloned();

    let mut targets: Vec<String> = Vec::new();
    for (target, stat) in found.into_iter().flatten() {
        if !stat.is_regular() || targets.contains(&target) {
            continue;
        }
        if let Some(mount) = on_mount(&target) {
            // A write there would land in a volume or on the host, not in the
            // container's own layer.
            tracing::warn!(path = %target, %mount, "trust bundle is on a mount: left alone");
            continue;
        }
        targets.push(target);
    }

    if let Some(mount) = on_mount(CA_PATH) {
        return Err(InjectError::Layout(format!(
            "{CA_PATH} is on the container's mount {mount}"
        )));
    }
    let mtime = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let (dir, _) = trust::split(CA_PATH)
        .ok_or_else(|| InjectError::Internal(format!("bad CA path {CA_PATH}")))?;
    let rel_dir = dir.trim_start_matches('/');
    let rel_file = CA_PATH.trim_start_matches('/');
    let tar = trust::file_tar(
        &[rel_dir],
        rel_file,
        FileMeta::default(),
        &trust::standalone(cas),
        mtime,
    )
    .map_err(InjectError::Internal)?;
    container.put("/", tar).await?;

    for target in &targets {
        let tar = container.get(target).await?;
        let (meta, content) = trust::read_single_file(&tar, trust::MAX_BUNDLE)
            .map_err(|err| InjectError::Daemon(format!("{target}: {err}")))?;
        let Some(content) = trust::appended(&content, cas) else {
            continue;
        };
        let (dir, name) = trust::split(target)
            .ok_or_else(|| InjectError::Daemon(format!("bad bundle path {target}")))?;
        let tar =
            trust::file_tar(&[], name, meta, &content, mtime).map_err(InjectError::Internal)?;
        container.put(dir, tar).await?;
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::mitm::handout::InjectFailure;

    const BASE: &str = "listeners:\n  - name: on\n    unix: {path: /run/a.sock}\n  - name: off\n    caching_inject: false\n    unix: {path: /run/b.sock}\ncaching:\n  domains: [pkgs.example]\n";

    #[test]
    fn inject_keys_default_and_parse() {
        let cfg = parse("f.yaml", BASE).unwrap();
        assert!(cfg.listeners[0].caching_inject);
        assert!(!cfg.listeners[1].caching_inject);
        let caching = cfg.caching.unwrap();
        assert_eq!(caching.inject_address, "host-gateway");
        assert_eq!(
            caching.inject_env,
            ["NODE_EXTRA_CA_CERTS=/etc/cistern/ca.pem"]
        );
        assert!(caching.inject_skip_images.is_empty());
        assert_eq!(caching.inject_on_failure, InjectFailure::Skip);

        let text = format!(
            "{BASE}  inject: {{address: 10.0.0.1, env: [A=1, B=], skip_images: ['x/*'], on_failure: refuse}}\n"
        );
        let caching = parse("f.yaml", &text).unwrap().caching.unwrap();
        assert_eq!(caching.inject_address, "10.0.0.1");
        assert_eq!(caching.inject_env, ["A=1", "B="]);
        assert_eq!(caching.inject_skip_images, ["x/*"]);
        assert_eq!(caching.inject_on_failure, InjectFailure::Refuse);
    }

    #[test]
    fn bad_inject_values_are_refused_with_their_key() {
        for (inject, wanted) in [
            ("{env: [NOEQUALS]}", "inject.env[0]"),
            ("{env: ['=x']}", "inject.env[0]"),
            ("{skip_images: ['']}", "inject.skip_images[0]"),
            ("{on_failure: maybe}", "on_failure"),
            ("{address: somewhere}", "inject.address"),
        ] {
            let err = parse("f.yaml", &format!("{BASE}  inject: {inject}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{inject}: {err}");
        }
    }
}
