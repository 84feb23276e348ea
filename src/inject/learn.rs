//! Repository hosts learned from what a container is created from: the
//! files of its image (its package managers' configuration, or the index
//! built into a tool it ships) and its environment (the image's and the
//! create's: `PIP_INDEX_URL`, `NPM_CONFIG_REGISTRY`, `GOPROXY`, ...).
//!
//! Runs on each container create that gets injection, before the cached
//! domains are put into it, so the first container of an image is already
//! routed and trusted for the hosts its image names. An image is read once,
//! the first time its id is seen, from the daemon's overlay2 layer
//! directories when the daemon is on this host ([`crate::discover::Layers`]);
//! its result is kept per image id. After that a create costs one image
//! inspect and a look-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::StatusCode;
use serde_json::Value as Json;

use crate::daemon::client::{json, Daemon};
use crate::discover::{self, Env, Found, Layers, NoFiles};

/// Images remembered at most; the table starts afresh beyond that.
const MAX_IMAGES: usize = 4096;

/// What was found per image id.
#[derive(Debug)]
pub struct ImageHosts {
    seen: Mutex<HashMap<String, Arc<Vec<Found>>>>,
    /// Whether the daemon's layer directories are on this host (the daemon
    /// is reached through a unix socket).
    local_layers: bool,
}

impl ImageHosts {
    pub fn new(local_layers: bool) -> ImageHosts {
        ImageHosts {
            seen: Mutex::new(HashMap::new()),
            local_layers,
        }
    }

    /// The hosts named by a create's `image` and by the environment `env`
    /// it sets. Failures (no such image yet, an unreadable layer) only mean
    /// less is found: the create goes on either way.
    pub async fn for_create(&self, daemon: Daemon<'_>, image: &str, env: &Env) -> Vec<Found> {
        let mut found = discover::find(&NoFiles, env);
        for f in &mut found {
            f.from = format!("container create: {}", f.from);
        }
        if let Some(image_found) = self.for_image(daemon, image).await {
            found.extend(image_found.iter().cloned());
        }
        found
    }

    async fn for_image(&self, daemon: Daemon<'_>, image: &str) -> Option<Arc<Vec<Found>>> {
        // A reference as the daemon parses it; anything else is not looked up.
        let plain = !image.is_empty()
            && !image.contains("..")
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if !plain {
            return None;
        }
        let answer = daemon.get(&format!("/images/{image}/json")).await.ok()?;
        if answer.status != StatusCode::OK {
            // Not pulled yet: the create fails, or the client pulls and
            // creates again, and that create reads it.
            return None;
        }
        let inspect = json(&answer).ok()?;
        let id = inspect.get("Id")?.as_str()?.to_owned();
        if let Some(found) = self.lock().get(&id) {
            return Some(found.clone());
        }
        let started = Instant::now();
        let env = env_of(inspect.pointer("/Config/Env"));
        let driver = inspect.pointer("/GraphDriver/Name").and_then(Json::as_str);
        let layers = match (self.local_layers, driver) {
            (true, Some("overlay2")) => Layers::overlay2(
                inspect
                    .pointer("/GraphDriver/Data/UpperDir")
                    .and_then(Json::as_str),
                inspect
                    .pointer("/GraphDriver/Data/LowerDir")
                    .and_then(Json::as_str),
            ),
            _ => None,
        };
        let read_files = layers.is_some();
        let short = id
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = match &layers {
                Some(layers) => discover::find(layers, &env),
                None => discover::find(&NoFiles, &env),
            };
            for f in &mut found {
                f.from = format!("image {short}: {}", f.from);
            }
            found
        })
        .await
        .ok()?;
        tracing::debug!(
            image,
            %id,
            read_files,
            hosts = found.len(),
            micros = started.elapsed().as_micros() as u64,
            "image read for repository hosts"
        );
        let found = Arc::new(found);
        let mut seen = self.lock();
        if seen.len() >= MAX_IMAGES {
            seen.clear();
        }
        seen.insert(id, found.clone());
        Some(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Found>>>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `["NAME=value", ...]` as a map (later entries win, as in Docker).
fn env_of(list: Option<&Json>) -> Env {
    env_from(
        list.and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str),
    )
}

/// `NAME=value` entries as a map (later entries win, as in Docker).
pub fn env_from<'a>(entries: impl IntoIterator<Item = &'a str>) -> Env {
    entries
        .into_iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_environment_names_hosts() {
        let env = env_of(Some(&serde_json::json!([
            "PATH=/usr/bin",
            "GOPROXY=https://goproxy.example.test,direct",
            "broken"
        ])));
        let found = discover::find(&NoFiles, &env);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].host, "goproxy.example.test");
        assert_eq!(found[0].from, "env GOPROXY");
    }
}
