//! Cleanup: removing everything a tenant owns, and listing who owns what.
//!
//! Because ownership lives on the daemon (labels) and in the state file
//! (images), both are queries: containers, volumes and networks carrying the
//! tenant's [`TENANT`] and [`INSTANCE`] labels, and the images and tags the
//! state file records for it. Removal order: containers (forced, with their
//! anonymous volumes), networks, volumes, images it built or committed
//! (forced), then the tags it put on other images (untag only).
//!
//! Used on shutdown for the tenants of listeners marked `cleanup: true`, by
//! `cistern cleanup --tenant NAME` and (listing) by `cistern tenants`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::StatusCode;

use super::images::{State, Store};
use super::labels::{self, Owner, INSTANCE, TENANT};
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::wire::query::escape;

/// What a tenant owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// `(id, name)` of each container.
    pub containers: Vec<(String, String)>,
    pub volumes: Vec<String>,
    /// `(id, name)` of each network.
    pub networks: Vec<(String, String)>,
    pub images: Vec<String>,
    pub tags: Vec<String>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
            && self.volumes.is_empty()
            && self.networks.is_empty()
            && self.images.is_empty()
            && self.tags.is_empty()
    }
}

/// What a removal did.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub containers: usize,
    pub volumes: usize,
    pub networks: usize,
    pub images: usize,
    pub tags: usize,
    /// Removals that failed, with the daemon's reason.
    pub errors: Vec<String>,
}

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} container(s), {} volume(s), {} network(s), {} image(s), {} tag(s) removed",
            self.containers, self.volumes, self.networks, self.images, self.tags
        )?;
        if !self.errors.is_empty() {
            write!(f, "; {} failed", self.errors.len())?;
        }
        Ok(())
    }
}

fn filters(values: &[String]) -> String {
    let label: Vec<&String> = values.iter().collect();
    escape(&serde_json::json!({ "label": label }).to_string())
}

/// Every labelled resource of this cistern instance, by tenant, plus the
/// state file's images and tags.
pub async fn inventory(
    daemon: Daemon<'_>,
    state: &State,
    instance: &str,
    tenant: Option<&str>,
) -> Result<BTreeMap<String, Inventory>, DockerError> {
    let mut values = vec![format!("{INSTANCE}={instance}")];
    match tenant {
        Some(t) => values.push(format!("{TENANT}={t}")),
        None => values.push(TENANT.to_string()),
    }
    let f = filters(&values);
    let mut out: BTreeMap<String, Inventory> = BTreeMap::new();
    let tenant_of =
        |labels: Option<&serde_json::Value>| labels::from_value(labels).get(TENANT).cloned();

    let containers = daemon
        .get_json(&format!("/containers/json?all=1&filters={f}"), LISTING)
        .await?;
    for c in containers.as_array().into_iter().flatten() {
        if let (Some(t), Some(id)) = (
            tenant_of(c.get("Labels")),
            c.get("Id").and_then(|v| v.as_str()),
        ) {
            let name = c
                .get("Names")
                .and_then(|n| n.get(0))
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string();
            out.entry(t)
                .or_default()
                .containers
                .push((id.to_string(), name));
        }
    }
    let volumes = daemon
        .get_json(&format!("/volumes?filters={f}"), LISTING)
        .await?;
    for v in volumes
        .get("Volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(t), Some(name)) = (
            tenant_of(v.get("Labels")),
            v.get("Name").and_then(|v| v.as_str()),
        ) {
            out.entry(t).or_default().volumes.push(name.to_string());
        }
    }
    let networks = daemon
        .get_json(&format!("/networks?filters={f}"), LISTING)
        .await?;
    for n in networks.as_array().into_iter().flatten() {
        if let (Some(t), Some(id)) = (
            tenant_of(n.get("Labels")),
            n.get("Id").and_then(|v| v.as_str()),
        ) {
            let name = n
                .get("Name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            out.entry(t)
                .or_default()
                .networks
                .push((id.to_string(), name));
        }
    }
    let wanted = |t: &str, i: &str| i == instance && tenant.map_or(true, |w| w == t);
    for (id, r) in &state.images {
        if wanted(&r.tenant, &r.instance) {
            out.entry(r.tenant.clone())
                .or_default()
                .images
                .push(id.clone());
        }
    }
    for (reference, r) in &state.tags {
        if wanted(&r.tenant, &r.instance) {
            out.entry(r.tenant.clone())
                .or_default()
                .tags
                .push(reference.clone());
        }
    }
    Ok(out)
}

/// How a refused listing is reported.
const LISTING: &str = "the Docker daemon refused a listing";

/// Removes everything `owner` owns.
pub async fn remove_tenant(
    daemon: Daemon<'_>,
    store: &Store,
    owner: &Owner,
) -> Result<Removed, DockerError> {
    let state = store.load()?;
    let all = inventory(daemon, &state, &owner.instance, Some(owner.tenant.as_str())).await?;
    let inv = all.get(owner.tenant.as_str()).cloned().unwrap_or_default();
    let mut removed = Removed::default();
    let gone = |status: StatusCode| status.is_success() || status == StatusCode::NOT_FOUND;

    for (id, name) in &inv.containers {
        let a = daemon
            .delete(&format!("/containers/{id}?force=1&v=1"))
            .await?;
        if gone(a.status) {
            removed.containers += 1;
        } else {
            removed
                .errors
                .push(format!("container {name}: {}", a.message()));
        }
    }
    for (id, name) in &inv.networks {
        let a = daemon.delete(&format!("/networks/{id}")).await?;
        if gone(a.status) {
            removed.networks += 1;
        } else {
            removed
                .errors
                .push(format!("network {name}: {}", a.message()));
        }
    }
    for name in &inv.volumes {
        let a = daemon
            .delete(&format!("/volumes/{}?force=1", escape(name)))
            .await?;
        if gone(a.status) {
            removed.volumes += 1;
        } else {
            removed
                .errors
                .push(format!("volume {name}: {}", a.message()));
        }
    }
    let mut done_images = Vec::new();
    for id in &inv.images {
        let a = daemon
            .delete(&format!("/images/{}?force=1", escape(id)))
            .await?;
        if gone(a.status) {
            removed.images += 1;
            done_images.push(id.clone());
        } else {
            removed.errors.push(format!("image {id}: {}", a.message()));
        }
    }
    let mut done_tags = Vec::new();
    for reference in &inv.tags {
        // Tags on its own images went with them.
        let on_own = state
            .tags
            .get(reference)
            .is_some_and(|t| done_images.contains(&t.image));
        if !on_own {
            let a = daemon
                .delete(&format!("/images/{}", escape(reference)))
                .await?;
            if !gone(a.status) {
                removed
                    .errors
                    .push(format!("tag {reference}: {}", a.message()));
                continue;
            }
        }
        removed.tags += 1;
        done_tags.push(reference.clone());
    }
    if !done_images.is_empty() || !done_tags.is_empty() {
        store.update(|s| {
            for id in &done_images {
                s.images.remove(id);
            }
            for t in &done_tags {
                s.tags.remove(t);
            }
        })?;
    }
    tracing::info!(target: "cistern::ownership", tenant = %owner.tenant, instance = %owner.instance, %removed, "tenant cleaned up");
    for err in &removed.errors {
        tracing::warn!(target: "cistern::ownership", tenant = %owner.tenant, error = %err, "cleanup left something behind");
    }
    Ok(removed)
}

/// `cistern tenants`: one block per tenant.
pub fn format_inventory(all: &BTreeMap<String, Inventory>) -> String {
    let mut out = String::new();
    if all.is_empty() {
        out.push_str("no tenant owns anything\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>8} {:>9} {:>7} {:>5}",
        "TENANT", "CONTAINERS", "VOLUMES", "NETWORKS", "IMAGES", "TAGS"
    );
    for (t, inv) in all {
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>8} {:>9} {:>7} {:>5}",
            t,
            inv.containers.len(),
            inv.volumes.len(),
            inv.networks.len(),
            inv.images.len(),
            inv.tags.len()
        );
    }
    for (t, inv) in all {
        let _ = writeln!(out, "\n{t}:");
        for (id, name) in &inv.containers {
            let _ = writeln!(out, "  container {name} {}", &id[..id.len().min(12)]);
        }
        for name in &inv.volumes {
            let _ = writeln!(out, "  volume {name}");
        }
        for (id, name) in &inv.networks {
            let _ = writeln!(out, "  network {name} {}", &id[..id.len().min(12)]);
        }
        for id in &inv.images {
            let _ = writeln!(out, "  image {id}");
        }
        for reference in &inv.tags {
            let _ = writeln!(out, "  tag {reference}");
        }
    }
    out
}

/// `cistern tenants`: what each tenant of `instance` owns on the daemon.
pub async fn tenants_command(
    upstream: &crate::daemon::upstream::Upstream,
    instance: &str,
    state_dir: &std::path::Path,
) -> Result<String, String> {
    let client = crate::daemon::upstream::client(upstream);
    let daemon = Daemon::new(&client);
    let store = Store::new(state_dir);
    let state = store.load().map_err(|e| e.to_string())?;
    let all = inventory(daemon, &state, instance, None)
        .await
        .map_err(|e| e.message)?;
    Ok(format_inventory(&all))
}

/// `cistern cleanup --tenant NAME`: removes what the tenant of `instance`
/// owns.
pub async fn cleanup_command(
    upstream: &crate::daemon::upstream::Upstream,
    instance: &str,
    state_dir: &std::path::Path,
    tenant: &str,
) -> Result<String, String> {
    let tenant = super::identity::Tenant::new(tenant)?;
    let client = crate::daemon::upstream::client(upstream);
    let daemon = Daemon::new(&client);
    let store = Store::new(state_dir);
    let owner = Owner::new(tenant, instance.to_string());
    let removed = remove_tenant(daemon, &store, &owner)
        .await
        .map_err(|e| e.message)?;
    if removed.errors.is_empty() {
        Ok(format!("tenant {}: {removed}\n", owner.tenant))
    } else {
        Err(format!(
            "tenant {}: {removed}:\n  {}",
            owner.tenant,
            removed.errors.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_prints_a_table_and_details() {
        let mut all = BTreeMap::new();
        all.insert(
            "alice".to_string(),
            Inventory {
                containers: vec![("0123456789abcdef".into(), "web".into())],
                volumes: vec!["data".into()],
                ..Inventory::default()
            },
        );
        let text = format_inventory(&all);
        assert!(text.starts_with("TENANT"));
        assert!(text.contains("alice"));
        assert!(text.contains("  container web 0123456789ab"));
        assert!(text.contains("  volume data"));
        assert_eq!(
            format_inventory(&BTreeMap::new()),
            "no tenant owns anything\n"
        );
    }

    #[test]
    fn filters_are_label_lists() {
        assert_eq!(filters(&["a=b".into()]), escape(r#"{"label":["a=b"]}"#));
    }
}
