//! The daemon calls injection makes, on cistern's own pooled upstream client:
//! path stat, file read and write through the archive API, container inspect,
//! remove and (re-)create. Answers are small and read whole, with a cap.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::error::InjectError;
use super::trust::PathStat;
use crate::docker::upstream::{self, CallError, UpstreamClient};
use crate::wire::query::escape;

/// Largest answer read back from the daemon (bundles are capped lower).
const MAX_ANSWER: usize = 16 << 20;

pub use crate::docker::upstream::Answer;

/// A container on the daemon, reached with cistern's client.
pub struct Daemon<'a> {
    pub client: &'a UpstreamClient,
    /// Container id as the daemon returned it (checked: hex only).
    pub id: &'a str,
}

/// Sends one request and reads the whole answer.
pub async fn send(
    client: &UpstreamClient,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Answer, InjectError> {
    upstream::call(client, method, path_and_query, headers, body, MAX_ANSWER)
        .await
        .map_err(|err| match err {
            CallError::Request(_) => InjectError::Internal(err.to_string()),
            _ => InjectError::Daemon(err.to_string()),
        })
}

impl Daemon<'_> {
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, InjectError> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ct),
            );
        }
        if !body.is_empty() {
            headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        send(self.client, method, path_and_query, headers, body).await
    }

    fn archive(&self, path: &str) -> String {
        format!("/containers/{}/archive?path={}", self.id, escape(path))
    }

    /// `HEAD /containers/{id}/archive`: `None` when the path does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<PathStat>, InjectError> {
        let answer = self
            .call(Method::HEAD, &self.archive(path), None, Bytes::new())
            .await?;
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
        let answer = self
            .call(Method::GET, &self.archive(path), None, Bytes::new())
            .await?;
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
        let answer = self
            .call(
                Method::PUT,
                &path,
                Some("application/x-tar"),
                Bytes::from(tar),
            )
            .await?;
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
        let answer = self
            .call(
                Method::GET,
                &format!("/containers/{}/json", self.id),
                None,
                Bytes::new(),
            )
            .await?;
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
        let answer = self
            .call(
                Method::DELETE,
                &format!("/containers/{}?force=1&v=1", self.id),
                None,
                Bytes::new(),
            )
            .await?;
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
