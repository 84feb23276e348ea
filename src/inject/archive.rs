//! The daemon calls injection makes into one container, on cistern's typed
//! daemon client ([`crate::daemon::client`]): path stat, file read and write
//! through the archive API, container inspect and remove.

use bytes::Bytes;
use http::StatusCode;

use super::error::InjectError;
use super::trust::PathStat;
use crate::daemon::client::{Answer, Daemon};
use crate::daemon::upstream::UpstreamClient;
use crate::wire::query::escape;

/// Largest answer read back from the daemon (bundles are capped lower).
const MAX_ANSWER: usize = 16 << 20;

/// A container on the daemon, reached with cistern's client.
pub struct Container<'a> {
    daemon: Daemon<'a>,
    /// Container id as the daemon returned it (checked: hex only).
    id: &'a str,
}

impl<'a> Container<'a> {
    pub fn new(client: &'a UpstreamClient, id: &'a str) -> Container<'a> {
        Container {
            daemon: Daemon::new(client).capped(MAX_ANSWER),
            id,
        }
    }

    fn archive(&self, path: &str) -> String {
        format!("/containers/{}/archive?path={}", self.id, escape(path))
    }

    /// `HEAD /containers/{id}/archive`: `None` when the path does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<PathStat>, InjectError> {
        let answer = called(self.daemon.head(&self.archive(path)).await)?;
        match answer.status {
            StatusCode::OK => {
                let header = answer
                    .headers
                    .get("x-docker-container-path-stat")
                    .ok_or_else(|| {
                        InjectError::Daemon(format!(
                            "no path stat for {path} in the daemon's answer"
                        ))
                    })?;
                PathStat::from_header(header.as_bytes())
                    .map(Some)
                    .map_err(InjectError::Daemon)
            }
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(InjectError::refused(
                status,
                format!("stat {path}"),
                answer.message(),
            )),
        }
    }

    /// `GET /containers/{id}/archive`: the tar of one path.
    pub async fn get(&self, path: &str) -> Result<Bytes, InjectError> {
        let answer = called(self.daemon.get(&self.archive(path)).await)?;
        if answer.status != StatusCode::OK {
            return Err(InjectError::refused(
                answer.status,
                format!("read {path}"),
                answer.message(),
            ));
        }
        Ok(answer.body)
    }

    /// `PUT /containers/{id}/archive`: extracts `tar` into directory `dir`.
    pub async fn put(&self, dir: &str, tar: Vec<u8>) -> Result<(), InjectError> {
        let path = format!("{}&noOverwriteDirNonDir=true", self.archive(dir));
        let answer = called(
            self.daemon
                .put(&path, "application/x-tar", Bytes::from(tar))
                .await,
        )?;
        if answer.status != StatusCode::OK {
            return Err(InjectError::refused(
                answer.status,
                format!("write into {dir}"),
                answer.message(),
            ));
        }
        Ok(())
    }

    /// Where volumes, binds and tmpfs are mounted in the container: writes
    /// there would not land in the container's own layer.
    pub async fn mount_points(&self) -> Result<Vec<String>, InjectError> {
        let answer = called(
            self.daemon
                .get(&format!("/containers/{}/json", self.id))
                .await,
        )?;
        if answer.status != StatusCode::OK {
            return Err(InjectError::refused(
                answer.status,
                "inspect".into(),
                answer.message(),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|err| InjectError::Daemon(format!("container inspect: {err}")))?;
        let mut out: Vec<String> = v
            .get("Mounts")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("Destination").and_then(|d| d.as_str()))
            .map(str::to_string)
            .collect();
        if let Some(tmpfs) = v.pointer("/HostConfig/Tmpfs").and_then(|t| t.as_object()) {
            out.extend(tmpfs.keys().cloned());
        }
        if let Some(mounts) = v.pointer("/HostConfig/Mounts").and_then(|t| t.as_array()) {
            out.extend(
                mounts
                    .iter()
                    .filter_map(|m| m.get("Target").and_then(|d| d.as_str()))
                    .map(str::to_string),
            );
        }
        Ok(out)
    }

    /// `DELETE /containers/{id}?force=1&v=1`.
    pub async fn remove(&self) -> Result<(), InjectError> {
        let answer = called(
            self.daemon
                .delete(&format!("/containers/{}?force=1&v=1", self.id))
                .await,
        )?;
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            status => Err(InjectError::refused(
                status,
                "remove".into(),
                answer.message(),
            )),
        }
    }
}

/// A call's answer, its failure as injection words it.
fn called(
    answer: Result<Answer, crate::daemon::error::DockerError>,
) -> Result<Answer, InjectError> {
    answer.map_err(InjectError::from_call)
}
