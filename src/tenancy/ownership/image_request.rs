//! Image requests in step 2 ([`super::request`]): what each image endpoint
//! may do for a tenant, checked against the state file's rules
//! ([`super::images`]) before the daemon sees it, and what to record once it
//! answered (`After`, done by [`super::response`]).
//!
//! Shared base images are used by all; another tenant's image or tag is
//! missing. With an image namespace, the tenant's names are looked up in it
//! first and new tags go to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;

use super::image_load;
use super::images::{self, new_repo, AuxScanner, Rules};
use super::lookup;
use super::names::Namespace;
use super::owned::{After, Owned};
use super::push::PushLocks;
use super::resolve;
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::wire::query::Query;
use crate::wire::route::{Endpoint, Route};

/// One request's image checks.
pub(super) struct ImageRequest<'a> {
    pub daemon: Daemon<'a>,
    pub route: &'a Route,
    /// The rules over the state as read for this request.
    pub rules: Rules<'a>,
    /// The tenant's namespace, when it covers images.
    pub ns: Option<&'a Namespace>,
    pub pushes: &'a PushLocks,
}

impl ImageRequest<'_> {
    /// Checks and rewrites an image endpoint's request; other endpoints pass.
    pub async fn resolve(&self, owned: &mut Owned) -> Result<(), DockerError> {
        match &self.route.endpoint {
            Endpoint::ImageList => owned.after = After::ImageList,
            Endpoint::SystemDf => owned.after = After::SystemDf,
            Endpoint::Info => owned.after = After::Info,
            Endpoint::ImagePrune => return Err(prune_refused()),
            Endpoint::BuildPrune => return Err(build_prune_refused()),
            Endpoint::ImageInspect { name }
            | Endpoint::ImageHistory { name }
            | Endpoint::ImageGet { name } => self.read(name, owned).await?,
            Endpoint::ImageGetAll => self.save_all(owned).await?,
            Endpoint::ImageDelete { name } => self.delete(name, owned).await?,
            Endpoint::ImageTag { name } => self.tag(name, owned).await?,
            Endpoint::ImagePush { name } => self.push(name, owned).await?,
            Endpoint::Build => self.build(owned).await?,
            Endpoint::ImageLoad => self.load(owned).await?,
            Endpoint::ImageCreate => self.create(owned).await?,
            Endpoint::ContainerCommit => self.commit(owned).await?,
            _ => {}
        }
        Ok(())
    }

    fn query(&self) -> Result<Query, DockerError> {
        Query::parse(&self.route.query).map_err(|r| DockerError::client(r.status, r.message))
    }

    /// Inspect, history, save: an image the tenant may use.
    async fn read(&self, name: &str, owned: &mut Owned) -> Result<(), DockerError> {
        let found = lookup::own_image(self.daemon, self.ns, name).await?;
        self.rules.check_use(&found.name, found.id.as_deref())?;
        if found.namespaced {
            owned.target = resolve::rewrite_image_path(self.route, &owned.target, &found.name);
        }
        if matches!(self.route.endpoint, Endpoint::ImageInspect { .. }) {
            owned.after = After::ImageInspect;
        }
        Ok(())
    }

    /// `docker save` of several images: each one the tenant may use.
    async fn save_all(&self, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let mut names = Vec::new();
        for name in q.values("names") {
            let found = lookup::own_image(self.daemon, self.ns, name).await?;
            self.rules.check_use(&found.name, found.id.as_deref())?;
            names.push(if found.namespaced {
                found.name
            } else {
                name.to_string()
            });
        }
        let path = owned.target.split('?').next().unwrap_or("").to_string();
        owned.target = format!("{path}?{}", q.with_all("names", &names).encode());
        Ok(())
    }

    /// `rmi`: the tenant's own image or tag.
    async fn delete(&self, name: &str, owned: &mut Owned) -> Result<(), DockerError> {
        let found = lookup::own_image(self.daemon, self.ns, name).await?;
        self.rules.check_delete(&found.name, found.id.as_deref())?;
        if found.namespaced {
            owned.target = resolve::rewrite_image_path(self.route, &owned.target, &found.name);
        }
        owned.after = After::ImageDelete;
        Ok(())
    }

    /// `docker tag`: from an image the tenant may use, to a name it may
    /// (re)point.
    async fn tag(&self, name: &str, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let repo = q.values("repo").next().unwrap_or("").to_string();
        let tag = q.values("tag").next().unwrap_or("").to_string();
        let source = lookup::own_image(self.daemon, self.ns, name).await?;
        self.rules.check_use(&source.name, source.id.as_deref())?;
        if source.namespaced {
            owned.target = resolve::rewrite_image_path(self.route, &owned.target, &source.name);
        }
        if let (Some(image), false) = (source.id, repo.is_empty()) {
            let repo = new_repo(self.ns, &repo);
            owned.target = resolve::rewrite_query(&owned.target, "repo", &repo)?;
            let reference = self.new_tag(&images::join(&repo, &tag)).await?;
            owned.after = After::Tag { reference, image };
        }
        Ok(())
    }

    /// `docker push`: one tag at a time, of an image the tenant may use; a
    /// namespaced one under the name the client gave ([`super::push`]).
    async fn push(&self, name: &str, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let tag = q.values("tag").next().unwrap_or("");
        if tag.is_empty() {
            return Err(DockerError::client(
                StatusCode::FORBIDDEN,
                "cistern: push one tag at a time (name:tag)",
            ));
        }
        let reference = images::join(name, tag);
        let found = lookup::own_image(self.daemon, self.ns, &reference).await?;
        self.rules.check_use(&found.name, found.id.as_deref())?;
        if found.namespaced {
            let temp = self
                .pushes
                .push_as_named(self.daemon, &reference, &found)
                .await?;
            owned.after = After::Push(Box::new(temp));
        }
        Ok(())
    }

    /// `docker build`: tags the tenant may point; with a namespace, the tags
    /// and the Dockerfile's `FROM` lines naming its own images map to it.
    /// A BuildKit build (`version=2`) reads its Dockerfile over the client's
    /// session, which cistern passes untouched: its `FROM` lines are resolved
    /// by the daemon as written (the README says so).
    async fn build(&self, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let buildkit = q.values("version").next() == Some("2");
        let tags: Vec<String> = q.values("t").map(|t| new_repo(self.ns, t)).collect();
        let quiet = q.values("q").next().is_some_and(AuxScanner::quiet_value);
        for t in &tags {
            self.new_tag(t).await?;
        }
        // Rewritten from the query as it will be forwarded (the policy's
        // caps and the cache routing are in it already), not the client's.
        let (path, forwarded) = owned.target.split_once('?').unwrap_or((&owned.target, ""));
        let path = path.to_string();
        let mut out =
            Query::parse(forwarded).map_err(|r| DockerError::client(r.status, r.message))?;
        let mut changed = false;
        if self.ns.is_some() && !tags.is_empty() {
            out = out.with_all("t", &tags);
            changed = true;
        }
        if buildkit {
            let namespace = self.rules.owner.cache_mount_namespace();
            out = out.with("buildargs", &cache_mount_namespace(&out, &namespace)?);
            changed = true;
        }
        if changed {
            owned.target = format!("{path}?{}", out.encode());
        }
        if let Some(ns) = self.ns {
            let own = self.own_images(ns);
            if !own.is_empty() && !buildkit {
                let dockerfile = q.values("dockerfile").next().unwrap_or("Dockerfile");
                owned.dockerfile = Some((dockerfile.to_string(), own));
            }
        }
        owned.after = After::Build { tags, quiet };
        Ok(())
    }

    /// The tenant's namespaced tags, by the key a Dockerfile's `FROM` names
    /// them with ([`image_load::key`]).
    fn own_images(&self, ns: &Namespace) -> HashMap<String, String> {
        let owner = self.rules.owner;
        self.rules
            .state
            .tags
            .iter()
            .filter(|(_, r)| r.tenant == owner.tenant.as_str() && r.instance == owner.instance)
            .filter_map(|(tag, _)| {
                let client = ns.image_to_client(tag);
                (client != *tag).then(|| (image_load::key(&client), tag.clone()))
            })
            .collect()
    }

    /// `docker load`: the archive's tags are checked as it streams.
    async fn load(&self, owned: &mut Owned) -> Result<(), DockerError> {
        let protected = Arc::new(lookup::protected(self.daemon, &self.rules, self.ns).await?);
        owned.load = Some((protected.clone(), Arc::new(Mutex::new(None))));
        owned.after = After::Load(protected);
        Ok(())
    }

    /// `docker import` (a new image from the client) and `docker pull`: the
    /// tags they create may not replace what the tenant may not point.
    async fn create(&self, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let protected = lookup::protected(self.daemon, &self.rules, self.ns).await?;
        let refuse = |m: String| DockerError::client(StatusCode::FORBIDDEN, m);
        if q.values("fromSrc").next().is_some() {
            let repo = q.values("repo").next().unwrap_or("").to_string();
            let tag = q.values("tag").next().unwrap_or("");
            let mut reference = None;
            if !repo.is_empty() {
                let repo = new_repo(self.ns, &repo);
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
        Ok(())
    }

    /// `docker commit`: a new image, with a tag the tenant may point.
    async fn commit(&self, owned: &mut Owned) -> Result<(), DockerError> {
        let q = self.query()?;
        let repo = q.values("repo").next().unwrap_or("").to_string();
        let tag = q.values("tag").next().unwrap_or("");
        let mut tags = Vec::new();
        if !repo.is_empty() {
            let repo = new_repo(self.ns, &repo);
            owned.target = resolve::rewrite_query(&owned.target, "repo", &repo)?;
            tags.push(self.new_tag(&images::join(&repo, tag)).await?);
        }
        owned.after = After::Image {
            how: "commit",
            tags,
        };
        Ok(())
    }

    /// A tag the request creates or moves: one the tenant may point; the
    /// reference as the state file records it.
    async fn new_tag(&self, reference: &str) -> Result<String, DockerError> {
        let current = lookup::image_ref(self.daemon, reference).await?;
        self.rules
            .check_new_tag(&current.name, current.id.as_deref())?;
        Ok(current.name)
    }
}

/// Refused for everyone: the build cache (BuildKit's and the classic
/// builder's) is shared by every tenant and carries no owner, so pruning it
/// would drop other tenants' cache mounts and layers mid-build.
fn build_prune_refused() -> DockerError {
    DockerError::client(
        StatusCode::FORBIDDEN,
        "cistern: build cache prune is not available through cistern: the build cache is shared by all tenants",
    )
}

/// The build-arg that namespaces a BuildKit build's cache mounts
/// (`RUN --mount=type=cache`), which the daemon's one BuildKit otherwise
/// shares, writable, between every build that names the same cache id.
pub const CACHE_MOUNT_NS: &str = "BUILDKIT_CACHE_MOUNT_NS";

/// The `buildargs` of a BuildKit build (a JSON object; moby reads the first
/// `buildargs`, and the query keeps only this one)
/// with [`CACHE_MOUNT_NS`] set to the tenant's own namespace, whatever the
/// client set it to: its cache mounts are its own.
fn cache_mount_namespace(q: &Query, namespace: &str) -> Result<String, DockerError> {
    let bad = |why: String| {
        DockerError::client(
            StatusCode::BAD_REQUEST,
            format!("cistern: buildargs: {why}"),
        )
    };
    let mut args: serde_json::Map<String, serde_json::Value> = match q.values("buildargs").next() {
        Some(raw) if !raw.is_empty() => {
            serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?
        }
        _ => serde_json::Map::new(),
    };
    args.insert(
        CACHE_MOUNT_NS.to_string(),
        serde_json::Value::String(namespace.to_string()),
    );
    serde_json::to_string(&args).map_err(|e| bad(e.to_string()))
}

/// Refused for everyone: images are shared.
fn prune_refused() -> DockerError {
    DockerError::client(
        StatusCode::FORBIDDEN,
        "cistern: image prune is not available through cistern: images are shared; remove your own images by name",
    )
}
