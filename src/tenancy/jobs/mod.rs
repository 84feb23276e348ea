//! Per-job sockets: a CI job container gets a docker socket of its own, bound
//! to a tenant of its own, and everything that tenant creates goes when the
//! job ends.
//!
//! A rule in `jobs.rules` ([`config`]) says which container creates make a
//! job: a label (`com.gitlab.gitlab-runner.type=build`), optionally only on
//! some listeners. For a matching create (not itself made through a job
//! socket: jobs do not nest), cistern:
//!
//! 1. makes a job ID and its tenant `job-<id>` (always with a name
//!    namespace, so two jobs running the same compose file never collide);
//! 2. binds a fresh unix socket `<socket_dir>/<id>/sock/docker.sock`
//!    (`<id>` 0700, so only root on the host reaches it; `sock` 0755 and the
//!    socket 0666, so any user in the container does), served like any
//!    listener with the rule's policy (default: the listener's), every client
//!    on it being the job's tenant;
//! 3. records the job in `<state_dir>/jobs.json` (a
//!    [`StateFile`]) before the container exists, so a crash at any point
//!    leaves a record to reconcile;
//! 4. adds to the create body the policy accepted: the bind
//!    `<socket>:<mount>` (default `/var/run/docker.sock`), the read-only bind
//!    of the socket's directory at [`SOCKET_DIR_MOUNT`] with `DOCKER_HOST`
//!    pointing into it (unless the client set `DOCKER_HOST`), and the label
//!    [`JOB_LABEL`]`=<id>`;
//! 5. forwards the create; if the daemon refuses it, the job is closed at once.
//!
//! The job ends when its container dies or is removed (only when it is
//! removed, for a rule with `ends: remove`: GitLab Runner starts its build
//! container once per stage of a job): [`watch`] follows the
//! daemon's `die`/`destroy` events for containers with [`JOB_LABEL`], and on
//! every (re)connection to the daemon, and at start, [`reconcile`]s the
//! registry with the containers that exist. Ending a job closes its socket
//! (connections still open are asked to finish), removes everything its
//! tenant owns (containers forced, networks, volumes, built images and tags),
//! and deletes the socket directory and the record.
//!
//! After a restart of cistern, jobs whose containers still run get their
//! socket bound again at the same path. A bind mount of a file holds the
//! inode it was created with, so the socket at `<mount>` stays the old, dead
//! one; the directory mount sees the new socket, so clients that follow
//! `DOCKER_HOST` (the CLI, compose, testcontainers, docker-py) carry on.
//!
//! Container sockets ([`sockets`]) are the same machinery for a container
//! that binds the Docker socket: a socket of its own, fixed to the tenant
//! that created it, served while the container exists.

pub mod config;
pub mod sockets;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::StatusCode;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use self::config::{JobEnd, JobRule, JobsConfig, RawJobs};
use crate::daemon::client::Daemon;
use crate::daemon::error::DockerError;
use crate::daemon::upstream::UpstreamClient;
use crate::policy::Policy;
use crate::tenancy::ownership::identity::Tenant;
use crate::tenancy::ownership::labels::Owner;
use crate::tenancy::ownership::names::Namespace;
use crate::tenancy::ownership::state_file::StateFile;
use crate::tenancy::ownership::{cleanup, images};
use crate::wire::mounts::clean_components;
use crate::wire::{Body, Json};

/// The label naming a job container's job.
pub const JOB_LABEL: &str = "io.cistern.job";

/// Where a job container sees its socket's directory (read-only), and so the
/// socket as `DOCKER_HOST` names it: a directory mount, unlike the file
/// mount, sees the socket cistern binds again after a restart.
pub const SOCKET_DIR_MOUNT: &str = "/run/cistern";

/// Where a job's or a container's own socket is inside it, as `DOCKER_HOST`
/// names it.
pub const SOCKET_PATH_INSIDE: &str = "/run/cistern/docker.sock";

/// The name of the directory of a job's socket inside its job directory.
const SOCKET_DIR: &str = "sock";

/// How long a job may have no container before reconciliation ends it (its
/// create is still in flight until then).
const CREATE_GRACE: Duration = Duration::from_secs(60);

/// A job as `jobs.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's tenant, `job-<id>`.
    pub tenant: String,
    /// The tenant that created the job container.
    pub parent: String,
    /// The listener the job container was created through.
    pub listener: String,
    /// Index of the rule in `jobs.rules` (for its policy after a restart).
    pub rule: usize,
    pub socket: PathBuf,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The job container's ID, once the daemon created it.
    #[serde(default)]
    pub container: Option<String>,
}

/// `jobs.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub jobs: BTreeMap<String, JobRecord>,
}

/// What a connection on a socket cistern made for a container (a job's, or
/// a [`sockets`] one) acts as: the tenant fixed when the socket was made,
/// whatever uid or credentials its clients present.
#[derive(Debug)]
pub struct SocketConn {
    /// The job's or the container socket's ID.
    pub id: String,
    pub owner: Owner,
    /// Set when the socket belongs to a job (the job's own socket, or a
    /// container socket made inside the job): the job's rule. Jobs do not
    /// nest.
    pub job_rule: Option<usize>,
}

/// The socket a container create may get: planned before the create is
/// judged (so the policy can map Docker socket binds to it), then made for
/// a job ([`Jobs::start`]) or for the container alone
/// ([`Jobs::start_socket`]), or not at all.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// Its socket on the host.
    pub socket: PathBuf,
}

/// What a container create opened, to settle once the daemon answered.
#[derive(Debug)]
pub enum Opened {
    Job(Started),
    Socket(Started),
}

/// Who opens a socket for a container create ([`Jobs::open`]).
pub struct Opener<'a> {
    /// The listener the create came through.
    pub listener: &'a str,
    /// The creating client's tenant.
    pub owner: &'a Owner,
    /// Set when the create came through a job's or a container's socket.
    pub fixed: Option<&'a SocketConn>,
    /// The creating connection's policy.
    pub policy: &'a Arc<Policy>,
    /// Whether the policy mapped a Docker socket bind to the planned socket.
    pub socket_mapped: bool,
}

/// What [`Jobs::open`] opened (to settle once the daemon answered) and the
/// socket to serve.
pub struct Open {
    pub opened: Option<Opened>,
    pub serve: Option<Serve>,
}

/// A socket to serve for a job or a container: handed to the server's
/// accept loop.
pub struct Serve {
    pub socket: crate::listen::UnixSocket,
    pub conn: Arc<SocketConn>,
    pub listener: String,
    pub policy: Arc<Policy>,
    pub token: CancellationToken,
}

/// The jobs of this cistern.
#[derive(Debug)]
pub struct Jobs {
    pub config: JobsConfig,
    instance: String,
    registry: StateFile<Registry>,
    images: images::Store,
    /// Container sockets ([`sockets`]), in `sockets.json`.
    sockets: StateFile<sockets::SocketRegistry>,
    /// Live job and container sockets: cancelling closes one.
    live: Mutex<HashMap<String, CancellationToken>>,
}

impl Jobs {
    /// The jobs of instance `instance`, recorded in `state_dir`.
    pub fn new(config: JobsConfig, instance: &str, state_dir: &std::path::Path) -> Jobs {
        Jobs {
            config,
            instance: instance.to_string(),
            registry: StateFile::open(state_dir, "jobs"),
            sockets: StateFile::open(state_dir, "sockets"),
            images: images::Store::new(state_dir),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The registry as written.
    pub fn registry(&self) -> Result<Registry, DockerError> {
        Ok(self.registry.load()?)
    }

    fn owner(&self, tenant: Tenant) -> Owner {
        Owner {
            namespace: Some(Namespace::of(tenant.as_str())),
            tenant,
            instance: self.instance.clone(),
        }
    }

    /// For a container create: a job rule matches (not inside a job: jobs
    /// do not nest), and the job starts at the planned socket; or the policy
    /// mapped a Docker socket bind to the planned socket, and a socket is
    /// made for this container alone; or nothing is opened.
    pub fn open(
        &self,
        planned: Started,
        by: Opener<'_>,
        body: &mut Body,
        shutdown: &CancellationToken,
    ) -> Result<Open, DockerError> {
        let in_job = by.fixed.and_then(|f| f.job_rule);
        let none = Open {
            opened: None,
            serve: None,
        };
        // A body the policy did not read (audit of an unreadable one) gets
        // no socket.
        let Body::Json(value) = body else {
            return Ok(none);
        };
        if in_job.is_none() {
            if let Some((index, rule)) = self.config.rule_for(by.listener, value) {
                let (job, serve) =
                    self.start(planned, index, by.listener, by.owner, by.policy, shutdown)?;
                Jobs::mount(value, &job, rule);
                return Ok(Open {
                    opened: Some(Opened::Job(job)),
                    serve: Some(serve),
                });
            }
        }
        if !by.socket_mapped {
            return Ok(none);
        }
        let serve =
            self.start_socket(&planned, by.listener, by.owner, in_job, by.policy, shutdown)?;
        Jobs::mount_container_socket(value, &planned);
        Ok(Open {
            opened: Some(Opened::Socket(planned)),
            serve: Some(serve),
        })
    }

    /// Plans the socket a container create may get: a fresh ID and its
    /// path, `<socket_dir>/<id>/sock/docker.sock`. Nothing is made yet.
    pub fn plan(&self) -> Result<Started, DockerError> {
        let id = new_id().map_err(|err| DockerError::internal(format!("socket ID: {err}")))?;
        let socket = self
            .config
            .socket_dir
            .join(&id)
            .join(SOCKET_DIR)
            .join("docker.sock");
        Ok(Started { id, socket })
    }

    /// Starts a job for a create matching rule `rule` on `listener`, at the
    /// planned socket: binds the socket and records the job. The caller
    /// serves the socket and adds the mount ([`Jobs::mount`]).
    pub fn start(
        &self,
        planned: Started,
        rule: usize,
        listener: &str,
        parent: &Owner,
        listener_policy: &Arc<Policy>,
        shutdown: &CancellationToken,
    ) -> Result<(Started, Serve), DockerError> {
        let Started { id, socket } = planned;
        let tenant = Tenant::new(format!("job-{id}")).map_err(DockerError::internal)?;
        let record = JobRecord {
            tenant: tenant.to_string(),
            parent: parent.tenant.to_string(),
            listener: listener.to_string(),
            rule,
            socket: socket.clone(),
            created: now(),
            container: None,
        };
        self.registry.update(|r| {
            r.jobs.insert(id.clone(), record.clone());
        })?;
        let serve = match self.bind(&id, &record, listener_policy, shutdown) {
            Ok(serve) => serve,
            Err(err) => {
                let _ = self.registry.update(|r| r.jobs.remove(&id));
                return Err(err);
            }
        };
        tracing::info!(target: "cistern::tenancy::jobs", job = %id, tenant = %tenant, parent = %parent.tenant, socket = %socket.display(), "job started");
        Ok((Started { id, socket }, serve))
    }

    /// Binds a job's socket (fresh, or again after a restart).
    fn bind(
        &self,
        id: &str,
        record: &JobRecord,
        listener_policy: &Arc<Policy>,
        shutdown: &CancellationToken,
    ) -> Result<Serve, DockerError> {
        let tenant = Tenant::new(record.tenant.clone()).map_err(DockerError::internal)?;
        let policy = self.rule_policy(Some(record.rule), listener_policy);
        let conn = SocketConn {
            id: id.to_string(),
            owner: self.owner(tenant),
            job_rule: Some(record.rule),
        };
        self.serve_at(&record.socket, conn, &record.listener, policy, shutdown)
    }

    /// The policy of a socket made in a job of rule `rule`: the rule's, or
    /// the listener's.
    fn rule_policy(&self, rule: Option<usize>, listener_policy: &Arc<Policy>) -> Arc<Policy> {
        rule.and_then(|r| self.config.rules.get(r))
            .and_then(|r| r.policy.clone())
            .unwrap_or_else(|| listener_policy.clone())
    }

    /// Binds a socket for a container (its directories made first), served
    /// as `conn` until its token is cancelled.
    fn serve_at(
        &self,
        path: &std::path::Path,
        conn: SocketConn,
        listener: &str,
        policy: Arc<Policy>,
        shutdown: &CancellationToken,
    ) -> Result<Serve, DockerError> {
        let dirs =
            JobDirs::of(path).ok_or_else(|| DockerError::internal("socket without a directory"))?;
        dirs.create().map_err(|err| {
            DockerError::internal(format!("cannot create {}: {err}", dirs.job.display()))
        })?;
        let socket = crate::listen::bind_unix(
            &format!("socket-{}", conn.id),
            &crate::listen::UnixListener {
                path: path.to_path_buf(),
                mode: 0o666,
                owner: None,
                group: None,
            },
        )
        .map_err(|err| DockerError::internal(format!("container socket: {err}")))?;
        let token = shutdown.child_token();
        if let Ok(mut live) = self.live.lock() {
            live.insert(conn.id.clone(), token.clone());
        }
        Ok(Serve {
            socket,
            conn: Arc::new(conn),
            listener: listener.to_string(),
            policy,
            token,
        })
    }

    /// Closes a socket this process serves, if it does.
    fn close(&self, id: &str) {
        if let Some(token) = self.live.lock().ok().and_then(|mut l| l.remove(id)) {
            token.cancel();
        }
    }

    /// The create body with the job's socket and its directory mounted,
    /// `DOCKER_HOST` set (unless the client set it) and its label set.
    pub fn mount(value: &mut Json, job: &Started, rule: &JobRule) {
        let file = rule.mount.to_string_lossy();
        mount_socket(value, job, Some(&file), JOB_LABEL);
    }

    /// Records the job's container once the daemon created it: from then on,
    /// a missing container means the job is over.
    pub async fn created(&self, client: &UpstreamClient, id: &str) {
        let container = match labelled_container(client, JOB_LABEL, id).await {
            Ok(Some((container, _))) => container,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(target: "cistern::tenancy::jobs", job = %id, error = %err.message, "cannot find the job's container");
                return;
            }
        };
        let recorded = self.registry.update(|r| {
            if let Some(job) = r.jobs.get_mut(id) {
                job.container = Some(container);
            }
        });
        if let Err(err) = recorded {
            tracing::error!(target: "cistern::tenancy::jobs", job = %id, error = %err, "cannot update the job registry");
        }
    }

    /// Once the daemon answered a create that opened a socket: records the
    /// container, or (the create failed) ends the job or closes the socket.
    pub async fn settle(&self, client: &UpstreamClient, opened: Opened, created: bool) {
        match (opened, created) {
            (Opened::Job(job), true) => self.created(client, &job.id).await,
            (Opened::Job(job), false) => {
                self.finish(client, &job.id, "its container create failed")
                    .await
            }
            (Opened::Socket(s), true) => self.socket_created(client, &s.id).await,
            (Opened::Socket(s), false) => self.finish_socket(&s.id, "its container create failed"),
        }
    }

    /// Ends a job: closes its socket, removes what its tenant owns, deletes
    /// its directory and record. Idempotent.
    pub async fn finish(&self, client: &UpstreamClient, id: &str, why: &str) {
        self.close(id);
        let record = match self.registry() {
            Ok(r) => r.jobs.get(id).cloned(),
            Err(err) => {
                tracing::error!(target: "cistern::tenancy::jobs", job = %id, error = %err.message, "cannot read the job registry");
                return;
            }
        };
        let Some(record) = record else { return };
        let Ok(tenant) = Tenant::new(record.tenant.clone()) else {
            return;
        };
        let owner = self.owner(tenant);
        match cleanup::remove_tenant(Daemon::new(client), &self.images, &owner).await {
            Ok(removed) if removed.errors.is_empty() => {
                tracing::info!(target: "cistern::tenancy::jobs", job = %id, tenant = %owner.tenant, why, removed = %removed, "job ended: its resources are removed")
            }
            Ok(removed) => {
                // Keep the record: the next reconciliation tries again.
                tracing::error!(target: "cistern::tenancy::jobs", job = %id, tenant = %owner.tenant, why, removed = %removed, errors = ?removed.errors, "job ended but some of its resources could not be removed");
                return;
            }
            Err(err) => {
                // Keep the record: the next reconciliation tries again.
                tracing::error!(target: "cistern::tenancy::jobs", job = %id, error = %err.message, "job ended but its resources could not all be removed");
                return;
            }
        }
        if let Some(dirs) = JobDirs::of(&record.socket) {
            let _ = std::fs::remove_file(&record.socket);
            if let Some(socket) = &dirs.socket {
                let _ = std::fs::remove_dir(socket);
            }
            let _ = std::fs::remove_dir(&dirs.job);
        }
        if let Err(err) = self.registry.update(|r| r.jobs.remove(id)) {
            tracing::error!(target: "cistern::tenancy::jobs", job = %id, error = %err, "cannot update the job registry");
        }
    }

    /// Whether `container` is the job's own container (as recorded when the
    /// daemon created it): another container carrying the label never ends
    /// a job. Before the record is written, the label is trusted: cistern
    /// drops `io.cistern.*` labels from clients' creates.
    fn is_job_container(&self, id: &str, container: &str) -> bool {
        match self.registry().ok().and_then(|r| r.jobs.get(id).cloned()) {
            Some(record) => record.container.as_deref().map_or(true, |c| c == container),
            None => false,
        }
    }

    /// Whether the job `id` ends when its container stops (its rule's
    /// `ends`; a job whose rule is no longer configured does).
    fn ends_on_stop(&self, id: &str) -> bool {
        self.registry()
            .ok()
            .and_then(|r| r.jobs.get(id).map(|record| record.rule))
            .and_then(|rule| self.config.rules.get(rule))
            .map_or(true, |rule| rule.ends == JobEnd::Stop)
    }

    /// Whether a job's socket is served by this process.
    fn is_live(&self, id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(id))
    }
}

/// A create body with a container's socket mounted: the socket file at
/// `file` (for a job; a container socket's binds were mapped by the policy),
/// the socket's directory read-only at [`SOCKET_DIR_MOUNT`] with
/// `DOCKER_HOST` pointing into it (unless the client set `DOCKER_HOST`), and
/// `label` naming the socket's ID.
fn mount_socket(value: &mut Json, opened: &Started, file: Option<&str>, label: &str) {
    let socket = &opened.socket;
    let mut ours: Vec<(String, String, &str)> = file
        .map(|file| (socket.display().to_string(), file.to_string(), ""))
        .into_iter()
        .collect();
    // Jobs started before the socket had a directory of its own have no
    // directory to share.
    let dir = JobDirs::of(socket).and_then(|d| d.socket);
    if let Some(dir) = &dir {
        ours.push((dir.display().to_string(), SOCKET_DIR_MOUNT.into(), ":ro"));
    }
    let host = value.object_mut("HostConfig");
    // Whatever the client mounted at the same places gives way.
    let ours_at = |t: &str| {
        ours.iter()
            .any(|(_, target, _)| clean_components(t) == clean_components(target))
    };
    let mut binds: Vec<String> = host
        .get("Binds")
        .map(|b| {
            b.strings()
                .filter(|bind| !bind.split(':').nth(1).is_some_and(ours_at))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    binds.extend(
        ours.iter()
            .map(|(source, target, options)| format!("{source}:{target}{options}")),
    );
    host.set("Binds", Json::string_array(binds));
    if let Some(Json::Array(mounts)) = host.get_mut("Mounts") {
        mounts.retain(|m| !m.get("Target").and_then(Json::as_str).is_some_and(ours_at));
    }
    if dir.is_some() {
        let docker_host = format!("DOCKER_HOST=unix://{SOCKET_PATH_INSIDE}");
        crate::inject::env::container_create(value, &[docker_host]);
    }
    value
        .object_mut("Labels")
        .set(label, Json::string(opened.id.clone()));
}

/// What reconciliation found for one job.
enum JobState {
    /// Its container exists and has not stopped (or, for a rule that ends
    /// jobs on removal, has not been removed).
    Alive,
    /// Its container stopped or is gone.
    Over(&'static str),
    /// No container yet, created recently: its create may be in flight.
    Pending,
}

/// The container of a job or container socket, found by its label
/// (`label=id`): ID and state.
async fn labelled_container(
    client: &UpstreamClient,
    label: &str,
    id: &str,
) -> Result<Option<(String, String)>, DockerError> {
    let filters = serde_json::json!({ "label": [format!("{label}={id}")] }).to_string();
    let path = format!(
        "/containers/json?all=1&filters={}",
        crate::wire::query::escape(&filters)
    );
    let list = Daemon::new(client)
        .get_json(&path, "listing job containers")
        .await?;
    let first = list.as_array().and_then(|a| a.first());
    Ok(first.map(|c| {
        let s = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        (s("Id"), s("State"))
    }))
}

/// Where a job stands, from its container.
async fn job_state(
    client: &UpstreamClient,
    id: &str,
    record: &JobRecord,
    ends_on_stop: bool,
) -> Result<JobState, DockerError> {
    Ok(match labelled_container(client, JOB_LABEL, id).await? {
        None if record.container.is_none()
            && now().saturating_sub(record.created) < CREATE_GRACE.as_secs() =>
        {
            JobState::Pending
        }
        None => JobState::Over("its container is gone"),
        Some((_, state)) if ends_on_stop && (state == "exited" || state == "dead") => {
            JobState::Over("its container stopped")
        }
        Some(_) => JobState::Alive,
    })
}

/// Ends the jobs whose containers stopped or are gone and closes the
/// container sockets whose containers are gone; serves again the sockets of
/// live jobs and containers not served by this process (after a restart).
pub async fn reconcile(
    jobs: &Jobs,
    client: &UpstreamClient,
    listener_policy: impl Fn(&str) -> Option<Arc<Policy>>,
    shutdown: &CancellationToken,
) -> Vec<Serve> {
    let registry = match jobs.registry() {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(target: "cistern::tenancy::jobs", error = %err.message, "cannot read the job registry");
            Registry::default()
        }
    };
    let mut serve = Vec::new();
    for (id, record) in registry.jobs {
        match job_state(client, &id, &record, jobs.ends_on_stop(&id)).await {
            Ok(JobState::Over(why)) => jobs.finish(client, &id, why).await,
            Ok(JobState::Alive) if !jobs.is_live(&id) && !served(&record.socket).await => {
                let Some(policy) = listener_policy(&record.listener) else {
                    tracing::warn!(target: "cistern::tenancy::jobs", job = %id, listener = %record.listener, "the job's listener is no longer configured: job ended");
                    jobs.finish(client, &id, "its listener is gone").await;
                    continue;
                };
                let _ = std::fs::remove_file(&record.socket);
                match jobs.bind(&id, &record, &policy, shutdown) {
                    Ok(s) => {
                        tracing::info!(target: "cistern::tenancy::jobs", job = %id, socket = %record.socket.display(), "job adopted after a restart");
                        serve.push(s);
                    }
                    Err(err) => {
                        tracing::error!(target: "cistern::tenancy::jobs", job = %id, error = %err.message, "cannot serve the job's socket again")
                    }
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(target: "cistern::tenancy::jobs", job = %id, error = %err.message, "cannot check the job's container")
            }
        }
    }
    sockets::reconcile(jobs, client, &listener_policy, shutdown, &mut serve).await;
    serve
}

/// Follows the daemon's events for job containers and ends jobs whose
/// container died or was removed; reconnects (and reconciles) after any
/// error, backing off up to 30 s while the daemon is away. `serve` hands
/// sockets to serve again to the server. Returns at once when there are
/// neither rules nor recorded jobs.
pub async fn watch(
    jobs: Arc<Jobs>,
    client: UpstreamClient,
    maps_sockets: bool,
    listener_policy: impl Fn(&str) -> Option<Arc<Policy>>,
    serve: impl Fn(Serve),
    shutdown: CancellationToken,
) {
    // Every container's: the daemon ANDs label filters, and both the job
    // label and the socket label are wanted.
    let filters = serde_json::json!({
        "type": ["container"],
        "event": ["die", "destroy"],
    })
    .to_string();
    let path = format!("/events?filters={}", crate::wire::query::escape(&filters));
    // Without rules, without policies that map Docker socket binds and
    // without recorded sockets there is nothing to follow.
    if jobs.config.rules.is_empty()
        && !maps_sockets
        && jobs.registry().is_ok_and(|r| r.jobs.is_empty())
        && jobs.socket_registry().is_ok_and(|r| r.sockets.is_empty())
    {
        return;
    }
    let daemon = Daemon::new(&client);
    let mut backoff = Duration::from_secs(1);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = daemon.stream(&path) => s,
        };
        match stream {
            Ok((StatusCode::OK, body)) => {
                backoff = Duration::from_secs(1);
                // Subscribed: whatever ended before now is found here.
                for s in reconcile(&jobs, &client, &listener_policy, &shutdown).await {
                    serve(s);
                }
                let ended = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = follow(&jobs, &client, body) => e,
                };
                tracing::warn!(target: "cistern::tenancy::jobs", reason = %ended, "the daemon's event stream ended: reconnecting");
            }
            Ok((status, _)) => {
                tracing::warn!(target: "cistern::tenancy::jobs", %status, "the daemon refused the event stream")
            }
            Err(err) => {
                tracing::warn!(target: "cistern::tenancy::jobs", error = %err, "cannot reach the daemon for events")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Reads events until the stream ends; the reason it ended.
async fn follow(jobs: &Jobs, client: &UpstreamClient, mut body: hyper::body::Incoming) -> String {
    let mut pending = BytesMut::new();
    loop {
        match body.frame().await {
            None => return "closed".into(),
            Some(Err(err)) => return err.to_string(),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    pending.extend_from_slice(data);
                }
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line = pending.split_to(end + 1);
                    let Some(event) = container_event(&line) else {
                        continue;
                    };
                    if let Some(job) = &event.job {
                        if !jobs.is_job_container(job, &event.container)
                            || (event.action == "die" && !jobs.ends_on_stop(job))
                        {
                            continue;
                        }
                        let why = if event.action == "die" {
                            "its container stopped"
                        } else {
                            "its container was removed"
                        };
                        jobs.finish(client, job, why).await;
                    }
                    // A container socket lives as long as its container: a
                    // stopped container may be started again.
                    if let Some(socket) = &event.socket {
                        if event.action == "destroy"
                            && jobs.is_socket_container(socket, &event.container)
                        {
                            jobs.finish_socket(socket, "its container was removed");
                        }
                    }
                }
                if pending.len() > 1 << 20 {
                    pending.clear();
                }
            }
        }
    }
}

/// A `die`/`destroy` event of a container with a job or a socket of its own.
#[derive(Debug, PartialEq, Eq)]
struct ContainerEvent {
    container: String,
    action: String,
    /// Its [`JOB_LABEL`].
    job: Option<String>,
    /// Its [`sockets::SOCKET_LABEL`].
    socket: Option<String>,
}

fn container_event(line: &[u8]) -> Option<ContainerEvent> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let s = |p: &str| v.pointer(p).and_then(|a| a.as_str()).map(str::to_string);
    let attributes = v.pointer("/Actor/Attributes");
    let label = |key: &str| {
        attributes
            .and_then(|a| a.get(key))
            .and_then(|l| l.as_str())
            .map(str::to_string)
    };
    let event = ContainerEvent {
        action: s("/Action")?,
        container: s("/Actor/ID")?,
        job: label(JOB_LABEL),
        socket: label(sockets::SOCKET_LABEL),
    };
    (event.job.is_some() || event.socket.is_some()).then_some(event)
}

/// Whether a socket accepts connections: another cistern process sharing the
/// state directory serves it, and it is not for this one to bind again.
async fn served(socket: &std::path::Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 12 random hex digits.
fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The directories of a job's socket.
struct JobDirs {
    /// `<socket_dir>/<id>`, 0700.
    job: PathBuf,
    /// `<socket_dir>/<id>/sock`, 0755, mounted into the job container;
    /// `None` for a job recorded before sockets had it (the socket directly
    /// in the job directory).
    socket: Option<PathBuf>,
}

impl JobDirs {
    fn of(socket: &std::path::Path) -> Option<JobDirs> {
        let parent = socket.parent()?;
        if parent.file_name() == Some(std::ffi::OsStr::new(SOCKET_DIR)) {
            Some(JobDirs {
                job: parent.parent()?.to_path_buf(),
                socket: Some(parent.to_path_buf()),
            })
        } else {
            Some(JobDirs {
                job: parent.to_path_buf(),
                socket: None,
            })
        }
    }

    fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        create_private_dir(&self.job)?;
        if let Some(socket) = &self.socket {
            match std::fs::DirBuilder::new().mode(0o755).create(socket) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
            // Whatever the umask, users in the container can reach the socket.
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_events_name_their_job_or_socket() {
        let line = br#"{"status":"die","id":"abc","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"io.cistern.job":"0a1b2c3d4e5f","name":"job"}}}"#;
        assert_eq!(
            container_event(line),
            Some(ContainerEvent {
                job: Some("0a1b2c3d4e5f".into()),
                socket: None,
                container: "abc".into(),
                action: "die".into()
            })
        );
        let line = br#"{"Action":"destroy","Actor":{"ID":"def","Attributes":{"io.cistern.socket":"0a1b2c3d4e5f"}}}"#;
        assert_eq!(
            container_event(line),
            Some(ContainerEvent {
                job: None,
                socket: Some("0a1b2c3d4e5f".into()),
                container: "def".into(),
                action: "destroy".into()
            })
        );
        assert_eq!(
            container_event(br#"{"Action":"die","Actor":{"ID":"x","Attributes":{"name":"web"}}}"#),
            None
        );
        assert_eq!(container_event(b"not json"), None);
    }

    fn mounted(body: &str, socket: &str) -> serde_json::Value {
        let rule = JobRule {
            label_key: "ci".into(),
            label_value: None,
            listeners: Vec::new(),
            mount: PathBuf::from("/var/run/docker.sock"),
            policy: None,
            ends: JobEnd::Stop,
        };
        let job = Started {
            id: "0a1b2c3d4e5f".into(),
            socket: PathBuf::from(socket),
        };
        let mut value = crate::wire::json::parse(body.as_bytes()).unwrap();
        Jobs::mount(&mut value, &job, &rule);
        serde_json::from_slice(&value.to_vec()).unwrap()
    }

    #[test]
    fn a_job_gets_its_socket_its_directory_and_docker_host_in_place_of_the_clients() {
        let body = mounted(
            r#"{"Image":"x","Env":["A=1"],"HostConfig":{"Binds":["/host/sock:/var/run/docker.sock","/h/dir:/run/cistern/","/data:/data"],"Mounts":[{"Type":"volume","Source":"v","Target":"/run/cistern"},{"Type":"volume","Source":"w","Target":"/w"}]}}"#,
            "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock",
        );
        assert_eq!(
            body["HostConfig"]["Binds"],
            serde_json::json!([
                "/data:/data",
                "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock:/var/run/docker.sock",
                "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock:/run/cistern:ro"
            ])
        );
        assert_eq!(
            body["HostConfig"]["Mounts"],
            serde_json::json!([{"Type":"volume","Source":"w","Target":"/w"}])
        );
        assert_eq!(
            body["Env"],
            serde_json::json!(["A=1", "DOCKER_HOST=unix:///run/cistern/docker.sock"])
        );
        assert_eq!(body["Labels"]["io.cistern.job"], "0a1b2c3d4e5f");

        // A DOCKER_HOST the client set is its own choice.
        let body = mounted(
            r#"{"Image":"x","Env":["DOCKER_HOST=tcp://docker:2375"]}"#,
            "/var/lib/cistern/jobs/0a1b2c3d4e5f/sock/docker.sock",
        );
        assert_eq!(
            body["Env"],
            serde_json::json!(["DOCKER_HOST=tcp://docker:2375"])
        );

        // A job recorded before sockets had a directory of their own.
        let body = mounted(
            r#"{"Image":"x"}"#,
            "/var/lib/cistern/jobs/0a1b2c3d4e5f/docker.sock",
        );
        assert_eq!(
            body["HostConfig"]["Binds"],
            serde_json::json!([
                "/var/lib/cistern/jobs/0a1b2c3d4e5f/docker.sock:/var/run/docker.sock"
            ])
        );
        assert!(body.get("Env").is_none());
    }

    #[test]
    fn ids_are_twelve_hex_digits() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id().unwrap());
    }
}
