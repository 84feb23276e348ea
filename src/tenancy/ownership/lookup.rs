//! Lookups: the daemon calls resolution makes, on cistern's daemon client.
//!
//! Each asks the daemon what an I/O-free step in [`super::resolve`] or
//! [`super::images`] wants to know (an inspect, the image list) and hands the
//! answer back for the decision; nothing is decided here.

use http::StatusCode;

use super::image_load::Protected;
use super::images::{self, ImageRef, OwnImage, Rules};
use super::labels::Owner;
use super::names::Namespace;
use super::resolve::{Found, Kind, Lookup, Next, Resolved, VolumeMount, VolumeNext};
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::wire::query::escape;

/// The daemon's inspect of `name` (an empty name is missing, unasked).
pub async fn find(daemon: Daemon<'_>, kind: Kind, name: &str) -> Result<Found, DockerError> {
    if name.is_empty() {
        return Ok(Found::Missing);
    }
    let answer = daemon.get(&kind.inspect_path(name)).await?;
    Found::from_answer(kind, answer.status, &answer.body)
}

/// Resolves `name` to one of the tenant's resources ([`Lookup`]); the
/// daemon's "missing" answer if it is not the tenant's.
pub async fn resolve(
    daemon: Daemon<'_>,
    owner: &Owner,
    kind: Kind,
    name: &str,
) -> Result<Resolved, DockerError> {
    let (mut lookup, mut next) = Lookup::start(owner, kind, name);
    loop {
        match next {
            Next::Inspect(kind, name) => next = lookup.answer(find(daemon, kind, &name).await?),
            Next::Done(resolved) => return resolved,
        }
    }
}

/// [`resolve`], for the full ID alone.
pub async fn full_id(
    daemon: Daemon<'_>,
    owner: &Owner,
    kind: Kind,
    name: &str,
) -> Result<String, DockerError> {
    Ok(resolve(daemon, owner, kind, name).await?.id)
}

/// A named volume a create mounts ([`VolumeMount`]), created with the
/// tenant's labels when missing: the name to mount.
pub async fn volume_mount(
    daemon: Daemon<'_>,
    owner: &Owner,
    name: &str,
    options: Option<&serde_json::Value>,
) -> Result<String, DockerError> {
    let (mut mount, mut next) = VolumeMount::start(owner, name);
    loop {
        match next {
            VolumeNext::Inspect(name) => {
                next = mount.answer(find(daemon, Kind::Volume, &name).await?)
            }
            VolumeNext::Create(name) => {
                create_volume(daemon, owner, &name, options).await?;
                return Ok(name);
            }
            VolumeNext::Done(mounted) => return mounted,
        }
    }
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
    let answer = daemon
        .post_json("/volumes/create", &volume_body(owner, name, options))
        .await?;
    if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
        return Err(DockerError {
            status: answer.status,
            side: crate::daemon::error::Side::Upstream,
            message: format!("cistern: cannot create volume {name}: {}", answer.message()),
        });
    }
    // The name may have been taken by someone else in the meantime.
    match find(daemon, Kind::Volume, name).await? {
        Found::Exists { labels, .. } if owner.owns(&labels) => Ok(()),
        _ => Err(super::resolve::volume_taken(name)),
    }
}

/// The `POST /volumes/create` body for a mount's volume: its options'
/// labels plus the owner's, its driver (default `local`) and options.
fn volume_body(
    owner: &Owner,
    name: &str,
    options: Option<&serde_json::Value>,
) -> serde_json::Value {
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
    serde_json::json!({
        "Name": name,
        "Driver": driver.and_then(|d| d.get("Name")).and_then(|n| n.as_str()).filter(|n| !n.is_empty()).unwrap_or("local"),
        "DriverOpts": driver.and_then(|d| d.get("Options")).cloned().unwrap_or(serde_json::Value::Null),
        "Labels": labels,
    })
}

/// An image as the daemon resolves `name` ([`ImageRef`]).
pub async fn image_ref(daemon: Daemon<'_>, name: &str) -> Result<ImageRef, DockerError> {
    if name.is_empty() {
        return Ok(ImageRef::nothing());
    }
    let answer = daemon
        .get(&format!("/images/{}/json", escape(name)))
        .await?;
    ImageRef::from_answer(name, &answer)
}

/// An image reference a tenant gives: its namespaced tag first, then as
/// written ([`images::namespaced_image`]).
pub async fn own_image(
    daemon: Daemon<'_>,
    ns: Option<&Namespace>,
    name: &str,
) -> Result<OwnImage, DockerError> {
    if let Some(mapped) = images::namespaced_image(ns, name) {
        let found = image_ref(daemon, &mapped).await?;
        if found.id.is_some() {
            return Ok(OwnImage::new(found, true));
        }
    }
    Ok(OwnImage::new(image_ref(daemon, name).await?, false))
}

/// What a load, import or pull may not replace (see [`super::image_load`]).
pub async fn protected(
    daemon: Daemon<'_>,
    rules: &Rules<'_>,
    ns: Option<&Namespace>,
) -> Result<Protected, DockerError> {
    let answer = daemon.get("/images/json").await?;
    if answer.status != StatusCode::OK {
        return Err(DockerError::upstream(format!(
            "the Docker daemon failed to list images: {}",
            answer.message()
        )));
    }
    Ok(Protected::new(&answer.body, rules, ns))
}
