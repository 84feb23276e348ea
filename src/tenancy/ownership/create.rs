//! Step 3, body ([`Owned::body`], after the policy judged the body): the
//! bodies of creates, and of network connects, as the daemon gets them.
//!
//! Creates (containers, volumes, networks) get the tenant's labels
//! ([`super::labels`]) and, with a name namespace, their names prefixed.
//! Every reference inside a body must be the tenant's and is written as the
//! daemon knows it ([`super::lookup`] resolves):
//! - network connect/disconnect `Container`: replaced by the full ID;
//! - container create `Image`: one the tenant may use ([`super::images`]);
//! - `HostConfig.NetworkMode` and the `NetworkingConfig.EndpointsConfig`
//!   keys: the tenant's networks, or the predefined `bridge`/`default`/`none`
//!   (`host` is the policy's to refuse);
//! - `container:` namespace modes (`NetworkMode`, `PidMode`, `IpcMode`,
//!   `Cgroup`), `VolumesFrom` and `Links`: the tenant's containers, by full
//!   ID (links by the daemon's name, keeping the alias);
//! - named volumes in `Binds` and `Mounts`: the tenant's, or missing and
//!   created first by cistern with the tenant's labels (the daemon would
//!   otherwise create them unlabelled).

use super::labels::{self, Owner};
use super::lookup;
use super::owned::Owned;
use super::resolve::{self, volume_taken, Found, Kind};
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::daemon::upstream::UpstreamClient;
use crate::wire::route::{Endpoint, Route};
use crate::wire::{query::Query, Body as RequestBody, Json};

impl Owned {
    /// Step 3: the body to forward, labelled, with its references resolved,
    /// edited in place.
    pub async fn body(
        &self,
        client: &UpstreamClient,
        route: &Route,
        body: &mut RequestBody,
    ) -> Result<(), DockerError> {
        let connect = matches!(
            route.endpoint,
            Endpoint::NetworkConnect { .. } | Endpoint::NetworkDisconnect { .. }
        );
        if !(labels::labels_create(&route.endpoint) || connect) {
            return Ok(());
        }
        let value = body
            .json_mut()
            .map_err(|r| DockerError::client(r.status, r.message))?;
        let create = Create {
            daemon: Daemon::new(client),
            owned: self,
            owner: &self.owner,
        };
        match route.endpoint {
            Endpoint::ContainerCreate => create.container(route, value).await?,
            Endpoint::VolumeCreate => create.volume(value).await?,
            Endpoint::NetworkCreate => create.network(value),
            Endpoint::NetworkConnect { .. } | Endpoint::NetworkDisconnect { .. } => {
                create.connect(value).await?
            }
            _ => {}
        }
        if labels::labels_create(&route.endpoint) {
            labels::label_body(value, &self.owner);
        }
        Ok(())
    }
}

/// One body's edits.
struct Create<'a> {
    daemon: Daemon<'a>,
    owned: &'a Owned,
    owner: &'a Owner,
}

impl Create<'_> {
    /// Volume create: the name prefixed, and not another tenant's.
    async fn volume(&self, value: &mut Json) -> Result<(), DockerError> {
        if let Some(ns) = &self.owner.namespace {
            ns.create_body(value);
        }
        if let Some(name) = value.get("Name").and_then(Json::as_str) {
            let found = lookup::find(self.daemon, Kind::Volume, name).await?;
            if let Found::Exists { labels, .. } = found {
                if !self.owner.owns(&labels) {
                    return Err(volume_taken(name));
                }
            }
        }
        Ok(())
    }

    /// Network create: the name prefixed.
    fn network(&self, value: &mut Json) {
        if let Some(ns) = &self.owner.namespace {
            ns.create_body(value);
        }
    }

    /// Network connect and disconnect: the tenant's container, by full ID.
    async fn connect(&self, value: &mut Json) -> Result<(), DockerError> {
        if let Some(name) = value.get("Container").and_then(Json::as_str) {
            let name = name.to_string();
            let id = self.container_id(&name).await?;
            value.set("Container", Json::string(id));
        }
        Ok(())
    }

    /// Container create: the image may be used; every container, network and
    /// volume the body names is the tenant's (and, with a namespace, written
    /// as the daemon knows it); missing named volumes are created labelled.
    async fn container(&self, route: &Route, value: &mut Json) -> Result<(), DockerError> {
        self.image(value).await?;
        let user_networks = self.networks(value).await?;
        self.container_modes(value).await?;
        self.volumes_from(value).await?;
        self.links(value).await?;
        self.binds(value).await?;
        self.mounts(value).await?;
        // The name the client chose stays reachable on its networks.
        if let Some(ns) = &self.owner.namespace {
            let q =
                Query::parse(&route.query).map_err(|r| DockerError::client(r.status, r.message))?;
            let name = q.values("name").next().map(str::to_string);
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                ns.alias_networks(value, &name, &user_networks);
            }
        }
        Ok(())
    }

    /// `Image`: one the tenant may use, by its namespaced name if it is one.
    async fn image(&self, value: &mut Json) -> Result<(), DockerError> {
        let Some(image) = value.get("Image").and_then(Json::as_str) else {
            return Ok(());
        };
        let ns = self.owner.namespace.as_ref().filter(|n| n.images());
        let found = lookup::own_image(self.daemon, ns, image).await?;
        let state = self.owned.store.state().await?;
        super::images::Rules {
            state: &state,
            owner: self.owner,
        }
        .check_use(&found.name, found.id.as_deref())?;
        if found.namespaced {
            value.set("Image", Json::string(found.name));
        }
        Ok(())
    }

    /// `NetworkMode` and the `EndpointsConfig` keys: the user-defined
    /// networks, the tenant's, as the daemon knows them; returns them.
    async fn networks(&self, value: &mut Json) -> Result<Vec<String>, DockerError> {
        let mut user_networks: Vec<String> = Vec::new();
        if let Some(mode) = value
            .at(&["HostConfig", "NetworkMode"])
            .and_then(Json::as_str)
            .map(str::to_string)
        {
            if is_user_network(&mode) {
                let net = self.network_ref(&mode).await?;
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
                    *key = self.network_ref(key).await?;
                    if !user_networks.contains(key) {
                        user_networks.push(key.clone());
                    }
                }
            }
        }
        Ok(user_networks)
    }

    /// `container:<name>` namespace modes: the tenant's container, by full ID.
    async fn container_modes(&self, value: &mut Json) -> Result<(), DockerError> {
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
                let id = self.container_id(&target).await?;
                value
                    .object_mut("HostConfig")
                    .set(key, Json::string(format!("container:{id}")));
            }
        }
        Ok(())
    }

    /// `VolumesFrom`: the tenant's containers, by full ID, modes kept.
    async fn volumes_from(&self, value: &mut Json) -> Result<(), DockerError> {
        let from = host_strings(value, "VolumesFrom");
        if from.is_empty() {
            return Ok(());
        }
        let mut resolved = Vec::with_capacity(from.len());
        for entry in from {
            let (name, mode) = match entry.split_once(':') {
                Some((name, mode)) => (name, Some(mode)),
                None => (entry.as_str(), None),
            };
            let id = self.container_id(name).await?;
            resolved.push(match mode {
                Some(mode) => format!("{id}:{mode}"),
                None => id,
            });
        }
        value
            .object_mut("HostConfig")
            .set("VolumesFrom", Json::string_array(resolved));
        Ok(())
    }

    /// `Links`: the tenant's containers; one found through the namespace by
    /// the daemon's name, the alias staying the name the client gave.
    async fn links(&self, value: &mut Json) -> Result<(), DockerError> {
        let links = host_strings(value, "Links");
        if links.is_empty() {
            return Ok(());
        }
        let mut resolved = Vec::with_capacity(links.len());
        for link in links {
            let (name, alias) = match link.split_once(':') {
                Some((name, alias)) => (name, alias),
                None => (link.as_str(), link.as_str()),
            };
            let name = name.trim_start_matches('/');
            let found = lookup::resolve(self.daemon, self.owner, Kind::Container, name).await?;
            resolved.push(match found.namespaced {
                Some(daemon_name) => format!("{daemon_name}:{}", alias.trim_start_matches('/')),
                None => link.clone(),
            });
        }
        value
            .object_mut("HostConfig")
            .set("Links", Json::string_array(resolved));
        Ok(())
    }

    /// `Binds` whose source is a volume name (not a path).
    async fn binds(&self, value: &mut Json) -> Result<(), DockerError> {
        let binds = host_strings(value, "Binds");
        if binds.is_empty() {
            return Ok(());
        }
        let mut rewritten = Vec::with_capacity(binds.len());
        for bind in binds {
            let (source, rest) = bind.split_once(':').unwrap_or((bind.as_str(), ""));
            if source.is_empty() || source.starts_with('/') || !bind.contains(':') {
                rewritten.push(bind.clone());
                continue;
            }
            let name = lookup::volume_mount(self.daemon, self.owner, source, None).await?;
            rewritten.push(format!("{name}:{rest}"));
        }
        value
            .object_mut("HostConfig")
            .set("Binds", Json::string_array(rewritten));
        Ok(())
    }

    /// `Mounts` of type volume, with their `VolumeOptions` for a volume
    /// cistern creates.
    async fn mounts(&self, value: &mut Json) -> Result<(), DockerError> {
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
            let name =
                lookup::volume_mount(self.daemon, self.owner, &source, options.as_ref()).await?;
            if let Some(Json::Array(list)) = value
                .get_mut("HostConfig")
                .and_then(|h| h.get_mut("Mounts"))
            {
                if let Some(m) = list.get_mut(i) {
                    m.set("Source", Json::string(name));
                }
            }
        }
        Ok(())
    }

    /// The tenant's container `name`, by full ID.
    async fn container_id(&self, name: &str) -> Result<String, DockerError> {
        lookup::full_id(self.daemon, self.owner, Kind::Container, name).await
    }

    /// A user-defined network the body names: the tenant's, as the daemon
    /// knows it (the prefixed name when found through the namespace).
    async fn network_ref(&self, name: &str) -> Result<String, DockerError> {
        let found = lookup::resolve(self.daemon, self.owner, Kind::Network, name).await?;
        Ok(found.namespaced.unwrap_or_else(|| name.to_string()))
    }
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
