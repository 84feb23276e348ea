//! Container sockets: a container that binds the Docker socket gets a cistern
//! socket of its own, on which every client is the tenant that created the
//! container.
//!
//! The policy maps a bind of the Docker socket to a planned path
//! ([`crate::policy::socket_bind`]); when it did, and the create does
//! not start a job (a job's socket is then the one mapped), cistern:
//!
//! 1. records the socket in `<state_dir>/sockets.json` (a [`crate::tenancy::ownership::state_file::StateFile`])
//!    with its creator's tenant, listener and job rule, before the container
//!    exists, so a crash at any point leaves a record to reconcile;
//! 2. binds `<socket_dir>/<id>/sock/docker.sock` (as job sockets are: the
//!    directory 0700, `sock` 0755, the socket 0666), served with the
//!    creating connection's policy, every client on it being the creator's
//!    tenant, whatever uid its processes run as or credentials they present;
//! 3. adds to the create body the read-only bind of the socket's directory
//!    at [`super::SOCKET_DIR_MOUNT`] with `DOCKER_HOST` pointing there (unless the
//!    client set it), and the label [`SOCKET_LABEL`]`=<id>`;
//! 4. forwards the create; if the daemon refuses it, the socket is closed at
//!    once.
//!
//! Unlike a job, a container socket has no tenant of its own, so nothing is
//! removed with it but the socket. It lives as long as its container: a
//! stopped container can be started again, so only its `destroy` event (or
//! reconciliation finding it gone) closes the socket and deletes its
//! directory and record. After a restart of cistern the sockets of existing
//! containers are bound again at the same path, and clients following
//! `DOCKER_HOST` carry on, as in jobs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    labelled_container, mount_socket, now, served, JobDirs, Jobs, Serve, SocketConn, Started,
    CREATE_GRACE,
};
use crate::daemon::error::DockerError;
use crate::daemon::upstream::UpstreamClient;
use crate::policy::{Json, Policy};
use crate::tenancy::ownership::identity::Tenant;
use crate::tenancy::ownership::labels::Owner;
use crate::tenancy::ownership::names::Namespace;

/// The label naming a container's socket.
pub const SOCKET_LABEL: &str = "io.cistern.socket";

/// A container socket as `sockets.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    /// The tenant the container's clients act as: its creator's.
    pub tenant: String,
    /// Whether that tenant has a name namespace.
    pub namespaced: bool,
    /// The listener the container was created through.
    pub listener: String,
    /// When the container was created inside a job: the job's rule (the
    /// socket then has the rule's policy, and starts no jobs).
    #[serde(default)]
    pub job_rule: Option<usize>,
    pub socket: PathBuf,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The container's ID, once the daemon created it.
    #[serde(default)]
    pub container: Option<String>,
}

/// `sockets.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SocketRegistry {
    #[serde(default)]
    pub sockets: BTreeMap<String, SocketRecord>,
}

impl Jobs {
    /// The container socket registry as written.
    pub fn socket_registry(&self) -> Result<SocketRegistry, DockerError> {
        Ok(self.sockets.load()?)
    }

    /// Makes the planned socket for a container whose Docker socket bind
    /// the policy mapped to it: records and binds it, fixed to `creator`,
    /// with `policy` (the creating connection's). The caller serves it and
    /// mounts its directory ([`Jobs::mount_container_socket`]).
    pub fn start_socket(
        &self,
        planned: &Started,
        listener: &str,
        creator: &Owner,
        job_rule: Option<usize>,
        policy: &Arc<Policy>,
        shutdown: &CancellationToken,
    ) -> Result<Serve, DockerError> {
        let record = SocketRecord {
            tenant: creator.tenant.to_string(),
            namespaced: creator.namespace.is_some(),
            listener: listener.to_string(),
            job_rule,
            socket: planned.socket.clone(),
            created: now(),
            container: None,
        };
        self.sockets.update(|r| {
            r.sockets.insert(planned.id.clone(), record.clone());
        })?;
        let conn = SocketConn {
            id: planned.id.clone(),
            owner: creator.clone(),
            job_rule,
        };
        match self.serve_at(&record.socket, conn, listener, policy.clone(), shutdown) {
            Ok(serve) => {
                tracing::info!(target: "cistern::tenancy::jobs", socket_id = %planned.id, tenant = %creator.tenant, socket = %planned.socket.display(), "container socket made");
                Ok(serve)
            }
            Err(err) => {
                let _ = self.sockets.update(|r| r.sockets.remove(&planned.id));
                remove_dirs(&record.socket);
                Err(err)
            }
        }
    }

    /// The create body with the container socket's directory mounted,
    /// `DOCKER_HOST` set (unless the client set it) and its label set. The
    /// client's own binds of the Docker socket already name the socket.
    pub fn mount_container_socket(value: &mut Json, planned: &Started) {
        mount_socket(value, planned, None, SOCKET_LABEL);
    }

    /// Records the socket's container once the daemon created it.
    pub async fn socket_created(&self, client: &UpstreamClient, id: &str) {
        let container = match labelled_container(client, SOCKET_LABEL, id).await {
            Ok(Some((container, _))) => container,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err.message, "cannot find the container of a container socket");
                return;
            }
        };
        let recorded = self.sockets.update(|r| {
            if let Some(socket) = r.sockets.get_mut(id) {
                socket.container = Some(container);
            }
        });
        if let Err(err) = recorded {
            tracing::error!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err, "cannot update the socket registry");
        }
    }

    /// Closes a container socket and deletes its directory and record.
    /// Idempotent.
    pub fn finish_socket(&self, id: &str, why: &str) {
        self.close(id);
        let removed = self.sockets.update(|r| r.sockets.remove(id));
        match removed {
            Ok(Some(record)) => {
                remove_dirs(&record.socket);
                tracing::info!(target: "cistern::tenancy::jobs", socket_id = %id, tenant = %record.tenant, why, "container socket closed");
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err, "cannot update the socket registry")
            }
        }
    }

    /// Whether `container` is the socket's own container (as recorded when
    /// the daemon created it). Before the record is written, the label is
    /// trusted: cistern drops `io.cistern.*` labels from clients' creates.
    pub(super) fn is_socket_container(&self, id: &str, container: &str) -> bool {
        match self
            .socket_registry()
            .ok()
            .and_then(|r| r.sockets.get(id).cloned())
        {
            Some(record) => record.container.as_deref().map_or(true, |c| c == container),
            None => false,
        }
    }

    fn socket_owner(&self, record: &SocketRecord) -> Result<Owner, String> {
        let tenant = Tenant::new(record.tenant.clone())?;
        Ok(Owner {
            namespace: record.namespaced.then(|| Namespace::of(tenant.as_str())),
            tenant,
            instance: self.instance.clone(),
        })
    }
}

/// Closes the sockets whose containers are gone; serves again those of
/// existing containers not served by this process (after a restart).
pub(super) async fn reconcile(
    jobs: &Jobs,
    client: &UpstreamClient,
    listener_policy: &impl Fn(&str) -> Option<Arc<Policy>>,
    shutdown: &CancellationToken,
    serve: &mut Vec<Serve>,
) {
    let registry = match jobs.socket_registry() {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(target: "cistern::tenancy::jobs", error = %err.message, "cannot read the socket registry");
            return;
        }
    };
    for (id, record) in registry.sockets {
        let found = match labelled_container(client, SOCKET_LABEL, &id).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err.message, "cannot check the container of a container socket");
                continue;
            }
        };
        if found.is_none() {
            let pending = record.container.is_none()
                && now().saturating_sub(record.created) < CREATE_GRACE.as_secs();
            if !pending {
                jobs.finish_socket(&id, "its container is gone");
            }
            continue;
        }
        if jobs.is_live(&id) || served(&record.socket).await {
            continue;
        }
        let Some(listener_policy) = listener_policy(&record.listener) else {
            tracing::warn!(target: "cistern::tenancy::jobs", socket_id = %id, listener = %record.listener, "the listener of a container socket is no longer configured: socket closed");
            jobs.finish_socket(&id, "its listener is gone");
            continue;
        };
        let owner = match jobs.socket_owner(&record) {
            Ok(owner) => owner,
            Err(err) => {
                tracing::error!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err, "unreadable container socket record: socket closed");
                jobs.finish_socket(&id, "its record is unreadable");
                continue;
            }
        };
        let policy = jobs.rule_policy(record.job_rule, &listener_policy);
        let conn = SocketConn {
            id: id.clone(),
            owner,
            job_rule: record.job_rule,
        };
        let _ = std::fs::remove_file(&record.socket);
        match jobs.serve_at(&record.socket, conn, &record.listener, policy, shutdown) {
            Ok(s) => {
                tracing::info!(target: "cistern::tenancy::jobs", socket_id = %id, socket = %record.socket.display(), "container socket served again after a restart");
                serve.push(s);
            }
            Err(err) => {
                tracing::error!(target: "cistern::tenancy::jobs", socket_id = %id, error = %err.message, "cannot serve a container socket again")
            }
        }
    }
}

/// Deletes a socket and its directories.
fn remove_dirs(socket: &std::path::Path) {
    if let Some(dirs) = JobDirs::of(socket) {
        let _ = std::fs::remove_file(socket);
        if let Some(dir) = &dirs.socket {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(&dirs.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_socket_mounts_its_directory_and_docker_host_and_keeps_the_clients_binds() {
        let planned = Started {
            id: "0a1b2c3d4e5f".into(),
            socket: PathBuf::from("/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock"),
        };
        let mut value = crate::wire::json::parse(
            br#"{"Image":"x","HostConfig":{"Binds":["/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock:/var/run/docker.sock:ro","/data:/data"]}}"#,
        )
        .unwrap();
        Jobs::mount_container_socket(&mut value, &planned);
        let body: serde_json::Value = serde_json::from_slice(&value.to_vec()).unwrap();
        assert_eq!(
            body["HostConfig"]["Binds"],
            serde_json::json!([
                "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock:/var/run/docker.sock:ro",
                "/data:/data",
                "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock:/run/cistern:ro"
            ])
        );
        assert_eq!(
            body["Env"],
            serde_json::json!(["DOCKER_HOST=unix:///run/cistern/docker.sock"])
        );
        assert_eq!(body["Labels"][SOCKET_LABEL], "0a1b2c3d4e5f");
        assert!(body["Labels"].get(super::super::JOB_LABEL).is_none());
    }
}
