//! Pushes of a namespaced tenant's tags.
//!
//! A namespaced tenant's `app:1` is `cistern-ns/<tenant>/app:1` on the
//! daemon, but the daemon pushes the name the client gave. So that name is
//! tagged on the image for the push and untagged after it ([`TempTag`]), one
//! push per name at a time. A name taken on the daemon by another image is
//! refused.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;

use super::images::{self, OwnImage};
use super::lookup;
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::daemon::upstream::UpstreamClient;
use crate::wire::query::escape;

/// One push per image name at a time.
#[derive(Debug, Default)]
pub struct PushLocks(tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PushLocks {
    /// Prepares the push of `reference`, the tenant's image `found` in its
    /// namespace: the temporary tag, to hold until the push's answer is over.
    pub async fn push_as_named(
        &self,
        daemon: Daemon<'_>,
        reference: &str,
        found: &OwnImage,
    ) -> Result<TempTag, DockerError> {
        let lock = {
            let mut locks = self.0.lock().await;
            locks
                .entry(reference.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        let guard = lock.lock_owned().await;
        let existing = lookup::image_ref(daemon, reference).await?.id;
        let mut temp = TempTag {
            client: daemon.client().clone(),
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
                tag(daemon, &found.name, reference).await?;
                temp.reference = Some(reference.to_string());
            }
        }
        Ok(temp)
    }
}

/// Tags `image` as `reference` for a push.
async fn tag(daemon: Daemon<'_>, image: &str, reference: &str) -> Result<(), DockerError> {
    let (repo, tag) = images::split(reference);
    let path = format!(
        "/images/{}/tag?repo={}&tag={}",
        escape(image),
        escape(repo),
        escape(tag)
    );
    let answer = daemon.post(&path).await?;
    if !answer.status.is_success() {
        return Err(DockerError::upstream(format!(
            "cannot tag {reference} for the push: {}",
            answer.message()
        )));
    }
    Ok(())
}

/// The name a push needed, removed again (and the push lock released) when
/// the push's answer is over or the request is dropped.
#[derive(Debug)]
pub struct TempTag {
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
                let path = format!("/images/{}?noprune=1", escape(&reference));
                if let Err(err) = Daemon::new(&client).delete(&path).await {
                    tracing::warn!(target: "cistern::ownership", reference, error = %err.message, "cannot remove the tag made for a push");
                }
            }
            drop(guard);
        });
    }
}
