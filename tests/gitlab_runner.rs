//! GitLab Runner's docker executor, as it drives Docker, through cistern with
//! per-job sockets (`packaging/runners/gitlab/cistern.yaml`); and the shipped
//! runner configurations parse and point where cistern expects.
//!
//! The call sequence of one job, read from gitlab-runner's
//! `executors/docker/` (`docker.go`, `docker_command.go`, `services.go`,
//! `internal/{volumes,networks,labels,exec,wait}`), API version negotiated
//! (`/v1.41/` on Debian's dockerd 20.10), every body a Go client's JSON
//! (zero values included):
//!
//! 1. `GET /_ping`, `GET /version`, `GET /info` (connect, OS type).
//! 2. Helper image: `GET /images/<helper>/json` (a prebuilt image is loaded
//!    or pulled only when missing); build image: `GET /images/<image>/json`
//!    (`pull_policy = if-not-present`).
//! 3. `FF_NETWORK_PER_BUILD`: `POST /networks/create` named
//!    `runner-<short token>-<project>-<concurrent>-<job>` with the job's
//!    labels, then `GET /networks/<id>`.
//! 4. Volumes: for `volumes = ["/cache"]` and the builds directory (git
//!    strategy `fetch`), reusable cache volumes `POST /volumes/create` named
//!    `runner-<sha256(token, system id, project, concurrent)[..16]>-cache-<md5(path)>`
//!    with the job's labels plus `destination`, `protected`, `reusable=true`,
//!    `type=cache` (`com.gitlab.gitlab-runner.*`); each gets a permission
//!    container from the helper image (`<volume>-set-permission-<uuid>`,
//!    `gitlab-runner-helper cache-init`, label `type=cache-init`): create,
//!    start, wait, remove (forced).
//! 5. Services: image inspect, `DELETE` of a stale container of the same name
//!    (404), `POST /containers/create?name=<unique>-<service slug>-<index>`
//!    (labels `type=service`, `service`, `service.version`; `NetworkMode` the
//!    build network; endpoint aliases from the image name and the job's
//!    `alias`), start, inspect (IP, exposed ports); then a health-check
//!    container from the helper image (`<service>-wait-for-service`, label
//!    `type=wait`, `WAIT_FOR_SERVICE_TCP_ADDR=<short id>`): create, start,
//!    wait, remove.
//! 6. Stages run in the predefined (helper) container (`get_sources`,
//!    `restore_cache`, `download_artifacts`, later `archive_cache`,
//!    `upload_artifacts`) or the build container (`step_script`, then
//!    `after_script`). Each container is created once (stale name removed
//!    first; `AttachStdin`/`OpenStdin`/`StdinOnce`, label `type=predefined` or
//!    `type=build`, aliases `build` and its name), inspected, and per stage:
//!    `POST /containers/<id>/attach?stream=1&stdin=1&stdout=1&stderr=1`
//!    (hijacked), `POST /containers/<id>/start`, the script on stdin then
//!    half-close, output until EOF, a SIGTERM exec into the build container
//!    (refused when it already exited), `POST /containers/<id>/wait?condition=not-running`
//!    with `POST /containers/<id>/stop`. So the build container stops and
//!    starts again between `script` and `after_script`.
//! 7. Cleanup: for every container the job made, disconnect from the networks
//!    that list it (`GET /networks`, `GET /networks/<id>`,
//!    `POST /networks/<id>/disconnect`), then
//!    `DELETE /containers/<id>?v=1&force=1`; temporary volumes removed
//!    (none with `fetch`: the cache volumes stay for the project's next job);
//!    `GET /networks/<id>`, `DELETE /networks/<id>`.
//!
//! Local images stand in for the helper image (a busybox with
//! `gitlab-runner-build` and `gitlab-runner-helper` scripts), the build image
//! (busybox with a docker CLI) and the service (busybox `httpd`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API: &str = "/v1.41";
const HELPER: &str = "cistern-test/gitlab-runner-helper:x86_64-test";
const SERVICE: &str = "cistern-test/web-service:latest";
const BUILDS_DIR: &str = "/builds/group/project";

/// A request as the Go client sends it; the status and the JSON answer
/// (`null` when empty or not JSON).
async fn call(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{API}{path}"))
        .header("Host", "api.moby.localhost")
        .header(
            "User-Agent",
            "gitlab-runner 18.0.0 (main; go1.24; linux/amd64)",
        );
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A call that must succeed (2xx); its answer.
async fn ok(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, answer) = call(sock, method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

/// Splits Docker's multiplexed stream (8-byte frame headers) into text.
fn demux(mut raw: &[u8]) -> String {
    let mut out = Vec::new();
    while raw.len() >= 8 {
        let len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
        let end = (8 + len).min(raw.len());
        out.extend_from_slice(&raw[8..end]);
        raw = &raw[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One stage, as `exec.Docker.Exec` and `wait.StopKillWait` run it: attach
/// (hijacked), start, the script on stdin and half-close, the output until
/// EOF, the SIGTERM exec for the build container, wait with stop. The exit
/// code and the output.
async fn run_stage(sock: &Path, id: &str, script: &str, build: bool) -> (i64, String) {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::post(format!(
        "{API}/containers/{id}/attach?stderr=1&stdin=1&stdout=1&stream=1"
    ))
    .header("Host", "api.moby.localhost")
    .header("Connection", "Upgrade")
    .header("Upgrade", "tcp")
    .body(Full::new(Bytes::new()))
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101, "attach {id}");
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    ok(sock, "POST", &format!("/containers/{id}/start"), None).await;
    io.write_all(script.as_bytes()).await.unwrap();
    io.shutdown().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), io.read_to_end(&mut raw))
        .await
        .expect("stage output did not end")
        .unwrap();
    if build {
        // shells.ContainerSigTermScriptForLinux, usually too late: 409.
        let exec = json!({"User": "", "Privileged": false, "Tty": false, "ConsoleSize": null,
            "AttachStdin": false, "AttachStderr": true, "AttachStdout": true, "Detach": false,
            "DetachKeys": "", "Env": null, "WorkingDir": "",
            "Cmd": ["sh", "-c", "kill -TERM -1 2>/dev/null; true"]});
        let (status, _) = call(sock, "POST", &format!("/containers/{id}/exec"), Some(&exec)).await;
        assert!(status == 201 || status == 409, "exec create: {status}");
    }
    let (wait_path, stop_path) = (
        format!("/containers/{id}/wait?condition=not-running"),
        format!("/containers/{id}/stop"),
    );
    let wait = call(sock, "POST", &wait_path, None);
    let stop = call(sock, "POST", &stop_path, None);
    let ((status, waited), (stopped, _)) = tokio::join!(wait, stop);
    assert_eq!(status, 200, "wait {id}: {waited}");
    assert!(stopped == 204 || stopped == 304, "stop {id}: {stopped}");
    (waited["StatusCode"].as_i64().unwrap_or(-1), demux(&raw))
}

/// A GitLab job: what the runner knows of it.
struct Job {
    id: u64,
    project: u64,
    /// The runner's token, shortened (`ShortDescription`).
    short_token: String,
    /// `getProjectUniqRandomizedName`.
    unique: String,
}

impl Job {
    fn new(id: u64, project: u64, short_token: &str) -> Job {
        let unique = format!(
            "runner-{short_token}-project-{project}-concurrent-0-{:016x}",
            id * 7919
        );
        Job {
            id,
            project,
            short_token: short_token.to_string(),
            unique,
        }
    }

    /// `labels.Labeler.Labels`: the job's labels and `extra` under the prefix.
    fn labels(&self, extra: &[(&str, &str)]) -> Value {
        let mut labels = json!({
            "com.gitlab.gitlab-runner.job.id": self.id.to_string(),
            "com.gitlab.gitlab-runner.job.url": format!("https://gitlab.example/group/project/-/jobs/{}", self.id),
            "com.gitlab.gitlab-runner.job.sha": "0123456789abcdef0123456789abcdef01234567",
            "com.gitlab.gitlab-runner.job.before_sha": "0000000000000000000000000000000000000000",
            "com.gitlab.gitlab-runner.job.ref": "main",
            "com.gitlab.gitlab-runner.job.timeout": "1h0m0s",
            "com.gitlab.gitlab-runner.project.id": self.project.to_string(),
            "com.gitlab.gitlab-runner.project.runner_id": "0",
            "com.gitlab.gitlab-runner.pipeline.id": "4242",
            "com.gitlab.gitlab-runner.runner.id": self.short_token,
            "com.gitlab.gitlab-runner.runner.local_id": "0",
            "com.gitlab.gitlab-runner.runner.system_id": "s_0123456789ab",
            "com.gitlab.gitlab-runner.managed": "true",
        });
        for (k, v) in extra {
            labels[format!("com.gitlab.gitlab-runner.{k}")] = json!(v);
        }
        labels
    }

    /// `ProjectUniqueName`, the containers' hostname.
    fn hostname(&self) -> String {
        format!(
            "runner-{}-project-{}-concurrent-0",
            self.short_token, self.project
        )
    }

    /// `GetNetworkName`.
    fn network(&self) -> String {
        format!("runner-{}-{}-0-{}", self.short_token, self.project, self.id)
    }

    /// A reusable cache volume's name for `destination`: the project's, so the
    /// same in every job of the project.
    fn cache_volume(&self, destination: &str) -> String {
        use sha2::{Digest, Sha256};
        let unique = Sha256::digest(format!(
            "{}-s_0123456789ab-{}-0",
            self.short_token, self.project
        ));
        let unique: String = unique[..16].iter().map(|b| format!("{b:02x}")).collect();
        // md5 of the path in the runner; any stable digest stands in.
        let path: String = Sha256::digest(destination)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("runner-{unique}-cache-{path}")
    }

    fn env(&self) -> Value {
        json!([
            format!("CI_JOB_ID={}", self.id),
            format!("CI_PROJECT_ID={}", self.project),
            format!("CI_PROJECT_DIR={BUILDS_DIR}"),
            "CI_SERVER=yes",
            "GITLAB_CI=true",
            "DOCKER_BUILDKIT=0",
            format!("BASE={}", busybox()),
        ])
    }
}

/// `createHostConfig`/`createHostConfigForService` as the Go client sends
/// them (zero values included).
fn host_config(binds: &[String], network: &str) -> Value {
    let mut host: Value = serde_json::from_str(HOST_CONFIG).unwrap();
    host["Binds"] = json!(binds);
    host["NetworkMode"] = json!(network);
    host
}

/// A `HostConfig` of the runner's with the fields it leaves at their zero.
const HOST_CONFIG: &str = r#"{
    "Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": null},
    "NetworkMode": "", "PortBindings": null,
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": false,
    "VolumeDriver": "", "VolumesFrom": null, "ConsoleSize": [0, 0], "CapAdd": null,
    "CapDrop": null, "CgroupnsMode": "", "Dns": null, "DnsOptions": null, "DnsSearch": null,
    "ExtraHosts": null, "GroupAdd": null, "IpcMode": "", "Cgroup": "", "Links": null,
    "OomScoreAdj": 0, "PidMode": "", "Privileged": false, "PublishAllPorts": false,
    "ReadonlyRootfs": false, "SecurityOpt": null, "UTSMode": "", "UsernsMode": "",
    "ShmSize": 0, "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0,
    "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": null,
    "BlkioDeviceReadBps": null, "BlkioDeviceWriteBps": null, "BlkioDeviceReadIOps": null,
    "BlkioDeviceWriteIOps": null, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": null,
    "DeviceCgroupRules": null, "DeviceRequests": null, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": null, "OomKillDisable": false, "PidsLimit": null,
    "Ulimits": null, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0, "MaskedPaths": null, "ReadonlyPaths": null
}"#;

/// A create body: `container.Config` with `HostConfig` and the legacy
/// (API < 1.44) `NetworkingConfig` for a user-defined network.
fn create_body(config: Value, host: Value, network: &str, aliases: &[&str]) -> Value {
    let mut body = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    for (k, v) in config.as_object().unwrap() {
        body[k] = v.clone();
    }
    body["HostConfig"] = host;
    body["NetworkingConfig"] = json!({"EndpointsConfig": {network: {
        "IPAMConfig": null, "Links": null, "Aliases": aliases, "NetworkID": "",
        "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "MacAddress": "", "DriverOpts": null
    }}});
    body
}

/// `removeContainer`: disconnect from every network that lists it, then
/// remove with its anonymous volumes, forced. A missing one is fine.
async fn remove_container(sock: &Path, id: &str) {
    let networks = ok(sock, "GET", "/networks", None).await;
    for net in networks.as_array().into_iter().flatten() {
        let net_id = net["Id"].as_str().unwrap_or_default();
        let (_, inspected) = call(sock, "GET", &format!("/networks/{net_id}"), None).await;
        let listed = inspected["Containers"]
            .as_object()
            .is_some_and(|c| c.contains_key(id));
        if listed {
            let body = json!({"Container": id, "Force": true});
            ok(
                sock,
                "POST",
                &format!("/networks/{net_id}/disconnect"),
                Some(&body),
            )
            .await;
        }
    }
    let (status, answer) = call(
        sock,
        "DELETE",
        &format!("/containers/{id}?force=1&v=1"),
        None,
    )
    .await;
    assert!(
        status == 204 || status == 404,
        "remove {id}: {status} {answer}"
    );
}

/// `createContainer`: the image inspected, a stale container of the same
/// name removed, create, inspect. Its ID.
async fn create_container(sock: &Path, name: &str, image: &str, body: Value) -> String {
    ok(sock, "GET", &format!("/images/{image}/json"), None).await;
    let (status, _) = call(
        sock,
        "DELETE",
        &format!("/containers/{name}?force=1&v=1"),
        None,
    )
    .await;
    assert_eq!(status, 404, "a stale {name}");
    let created = ok(
        sock,
        "POST",
        &format!("/containers/create?name={name}"),
        Some(&body),
    )
    .await;
    let id = created["Id"].as_str().unwrap().to_string();
    ok(sock, "GET", &format!("/containers/{id}/json"), None).await;
    id
}

/// The image's ID (`imageReferenceForCreate` of a local image, which has no
/// repo digest).
async fn image_id(sock: &Path, image: &str) -> String {
    let inspected = ok(sock, "GET", &format!("/images/{image}/json"), None).await;
    inspected["Id"].as_str().unwrap().to_string()
}

/// What one job left for the test to check.
struct Ran {
    outputs: Vec<String>,
    /// The job tenant cistern gave the build container.
    tenant: String,
}

/// A reusable cache volume (`createCacheVolume`) and its permission
/// container (`dockerLinuxSetter.Set`); its bind.
async fn cache_volume(sock: &Path, job: &Job, destination: &str, helper_id: &str) -> String {
    let name = job.cache_volume(destination);
    let labels = job.labels(&[
        ("destination", destination),
        ("protected", "false"),
        ("reusable", "true"),
        ("type", "cache"),
    ]);
    let body = json!({"Name": name, "Driver": "", "DriverOpts": null, "Labels": labels});
    let volume = ok(sock, "POST", "/volumes/create", Some(&body)).await;
    assert_eq!(volume["Name"], json!(name));
    let init = format!("{name}-set-permission-{:016x}", job.id);
    let body = json!({
        "Image": helper_id,
        "Cmd": ["gitlab-runner-helper", "cache-init", "/gitlab-runner-cache-init"],
        "Labels": job.labels(&[("type", "cache-init")]),
        "HostConfig": {"LogConfig": {"Type": "json-file", "Config": null},
            "Binds": [format!("{name}:/gitlab-runner-cache-init")]},
    });
    let created = ok(
        sock,
        "POST",
        &format!("/containers/create?name={init}"),
        Some(&body),
    )
    .await;
    let id = created["Id"].as_str().unwrap().to_string();
    ok(sock, "POST", &format!("/containers/{id}/start"), None).await;
    let waited = ok(sock, "POST", &format!("/containers/{id}/wait"), None).await;
    assert_eq!(waited["StatusCode"], 0, "cache-init");
    ok(sock, "DELETE", &format!("/containers/{id}?force=1"), None).await;
    format!("{name}:{destination}")
}

/// One job of the docker executor, start to cleanup (see the module
/// header), with `script` as the job's `script` and `after_script`.
async fn run_job(sock: &Path, job: &Job, script: &str, after_script: &str) -> Ran {
    let build_image = docker_cli_image();
    // 1. Connect.
    ok(sock, "GET", "/_ping", None).await;
    ok(sock, "GET", "/version", None).await;
    let info = ok(sock, "GET", "/info", None).await;
    assert_eq!(info["OSType"], "linux");
    // 2. Images.
    let helper_id = image_id(sock, HELPER).await;
    let build_id = image_id(sock, build_image).await;
    // 3. The build network.
    let net = job.network();
    let body = json!({"Name": net, "CheckDuplicate": true, "Driver": "", "Scope": "",
        "EnableIPv6": false, "IPAM": null, "Internal": false, "Attachable": false,
        "Ingress": false, "ConfigOnly": false, "ConfigFrom": null, "Options": {},
        "Labels": job.labels(&[])});
    let created = ok(sock, "POST", "/networks/create", Some(&body)).await;
    let net_id = created["Id"].as_str().unwrap().to_string();
    ok(sock, "GET", &format!("/networks/{net_id}"), None).await;
    // 4. Cache volumes: `volumes = ["/cache"]` and the builds directory.
    let binds = vec![
        cache_volume(sock, job, "/cache", &helper_id).await,
        cache_volume(sock, job, BUILDS_DIR, &helper_id).await,
    ];
    let mut temporary = Vec::new();
    // 5. The service, `cistern-test/web-service:latest` with `alias: web`.
    let service_id_ref = image_id(sock, SERVICE).await;
    let service_name = format!("{}-cistern-test__web-service-0", job.unique);
    let config = json!({
        "Image": service_id_ref,
        "Labels": job.labels(&[("type", "service"), ("service", "cistern-test/web-service"),
            ("service.version", "latest")]),
        "Env": job.env(),
    });
    let body = create_body(
        config,
        host_config(&binds, &net),
        &net,
        &[
            "cistern-test__web-service",
            "cistern-test-web-service",
            "web",
        ],
    );
    let (status, _) = call(
        sock,
        "DELETE",
        &format!("/containers/{service_name}?force=1&v=1"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let created = ok(
        sock,
        "POST",
        &format!("/containers/create?name={service_name}"),
        Some(&body),
    )
    .await;
    let service_id = created["Id"].as_str().unwrap().to_string();
    temporary.push(service_id.clone());
    ok(
        sock,
        "POST",
        &format!("/containers/{service_id}/start"),
        None,
    )
    .await;
    let inspected = ok(sock, "GET", &format!("/containers/{service_id}/json"), None).await;
    assert!(
        inspected["Config"]["ExposedPorts"]
            .as_object()
            .is_some_and(|p| p.contains_key("80/tcp")),
        "{inspected}"
    );
    // The health check, on the build network.
    let wait_name = format!("{service_name}-wait-for-service");
    let body = json!({
        "Image": helper_id, "Cmd": ["gitlab-runner-helper", "health-check"],
        "Labels": job.labels(&[("type", "wait"), ("wait", &service_id)]),
        "Env": [format!("WAIT_FOR_SERVICE_TCP_ADDR={}", &service_id[..12]),
            "WAIT_FOR_SERVICE_80_TCP_PORT=80"],
        "HostConfig": {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "ExtraHosts": null, "NetworkMode": net,
            "LogConfig": {"Type": "", "Config": null}},
    });
    let created = ok(
        sock,
        "POST",
        &format!("/containers/create?name={wait_name}"),
        Some(&body),
    )
    .await;
    let wait_id = created["Id"].as_str().unwrap().to_string();
    ok(sock, "POST", &format!("/containers/{wait_id}/start"), None).await;
    let waited = ok(
        sock,
        "POST",
        &format!("/containers/{wait_id}/wait?condition=not-running"),
        None,
    )
    .await;
    assert_eq!(waited["StatusCode"], 0, "the service's health check failed");
    remove_container(sock, &wait_id).await;

    // 6. The predefined container and its stages.
    let stage_config = |image: &str, kind: &str, cmd: Value, name: &str| {
        let config = json!({
            "Image": image, "Hostname": job.hostname(), "Cmd": cmd,
            "Labels": job.labels(&[("type", kind)]), "Tty": false,
            "AttachStdin": true, "AttachStdout": true, "AttachStderr": true,
            "OpenStdin": true, "StdinOnce": true, "Env": job.env(),
        });
        create_body(config, host_config(&binds, &net), &net, &["build", name])
    };
    let mut outputs = Vec::new();
    let helper_name = format!("{}-predefined", job.unique);
    let helper = create_container(
        sock,
        &helper_name,
        &helper_id,
        stage_config(
            &helper_id,
            "predefined",
            json!(["gitlab-runner-build"]),
            &helper_name,
        ),
    )
    .await;
    temporary.push(helper.clone());
    let predefined = |script: &'static str| {
        let helper = helper.clone();
        async move {
            let (code, out) = run_stage(sock, &helper, script, false).await;
            assert_eq!(code, 0, "predefined stage failed:\n{out}");
            out
        }
    };
    // get_sources: the "repository", a Dockerfile.
    outputs.push(
        predefined(
            "set -e; mkdir -p $CI_PROJECT_DIR; cd $CI_PROJECT_DIR\n\
             printf 'FROM %s\\nRUN echo built-in-job > /built\\n' $BASE > Dockerfile\n\
             echo fetched\n",
        )
        .await,
    );
    // restore_cache: the project's cache archive, from the cache volume.
    outputs.push(
        predefined(
            "cd $CI_PROJECT_DIR; if [ -f /cache/group/project/default/cache.tar ]; then\n\
             tar -xf /cache/group/project/default/cache.tar && echo restored; else echo no-cache; fi\n",
        )
        .await,
    );
    // download_artifacts: none.
    outputs.push(predefined("echo no-artifacts\n").await);

    // The build container: `script`, then `after_script`, each a start.
    let build_name = format!("{}-build", job.unique);
    let detect = "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash \nelif [ -x /bin/sh ]; then\n\texec /bin/sh \nelse\n\techo shell not found\n\texit 1\nfi\n\n";
    let build = create_container(
        sock,
        &build_name,
        build_image,
        stage_config(&build_id, "build", json!(["sh", "-c", detect]), &build_name),
    )
    .await;
    temporary.push(build.clone());
    let direct = docker_direct()
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.cistern.job\"}}",
            &build,
        ])
        .output()
        .unwrap();
    let job_id = String::from_utf8_lossy(&direct.stdout).trim().to_string();
    assert_eq!(job_id.len(), 12, "the build container is no job");
    let (code, out) = run_stage(sock, &build, script, true).await;
    assert_eq!(code, 0, "script failed:\n{out}");
    outputs.push(out);
    let (code, out) = run_stage(sock, &build, after_script, true).await;
    assert_eq!(code, 0, "after_script failed:\n{out}");
    outputs.push(out);

    // archive_cache and upload_artifacts, in the helper container again.
    outputs.push(
        predefined(
            "set -e; cd $CI_PROJECT_DIR; mkdir -p /cache/group/project/default\n\
             tar -cf /cache/group/project/default/cache.tar cached && echo archived\n",
        )
        .await,
    );
    outputs.push(predefined("cat $CI_PROJECT_DIR/artifact.txt\n").await);

    // 7. Cleanup.
    for id in &temporary {
        remove_container(sock, id).await;
    }
    ok(sock, "GET", &format!("/networks/{net_id}"), None).await;
    ok(sock, "DELETE", &format!("/networks/{net_id}"), None).await;
    Ran {
        outputs,
        tenant: format!("job-{job_id}"),
    }
}

/// Names of what the daemon holds with `label` (containers, networks,
/// volumes), asked directly.
fn on_daemon(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut all = Vec::new();
    for args in [
        vec!["ps", "-a", "--format", "container {{.Names}}"],
        vec!["network", "ls", "--format", "network {{.Name}}"],
        vec!["volume", "ls", "--format", "volume {{.Name}}"],
    ] {
        let out = run_ok(docker_direct().args(&args).args(["--filter", &filter]));
        all.extend(out.lines().map(str::to_string));
    }
    all.sort();
    all
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stand-in images: the helper (`gitlab-runner-build` runs the stage's
/// shell; `gitlab-runner-helper` does `cache-init` and `health-check`) and
/// the service (an HTTP server on its exposed port 80).
fn images() {
    let base = busybox();
    docker_cli_image();
    let ctx = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = ctx.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "gitlab-runner-build",
        "#!/bin/sh\numask 0000\nexec /bin/sh \"$@\"\n",
    );
    script(
        "gitlab-runner-helper",
        "#!/bin/sh\ncase \"$1\" in\n\
         cache-init) chmod 0777 \"$2\" ;;\n\
         health-check) for i in $(seq 1 100); do\n\
           ip=$(nslookup $WAIT_FOR_SERVICE_TCP_ADDR 2>/dev/null | sed -n 's/^Address: *//p' | tail -n 1)\n\
           [ -n \"$ip\" ] && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 $ip $WAIT_FOR_SERVICE_80_TCP_PORT | grep -q '200 OK' && exit 0\n\
           sleep 0.1; done; exit 1 ;;\n\
         *) exit 2 ;;\nesac\n",
    );
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY gitlab-runner-build gitlab-runner-helper /usr/bin/\nENV PATH=/usr/bin:/bin\n"
        ),
    )
    .unwrap();
    build_tagged(HELPER, ctx.path());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nRUN mkdir /www && echo service-ok > /www/index.html\nEXPOSE 80\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    build_tagged(SERVICE, ctx.path());
}

/// cistern on the shipped GitLab configuration, its paths in `dir`.
fn start_cistern(dir: tempfile::TempDir, instance: &str) -> Cistern {
    let d = dir.path().to_path_buf();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/runners/gitlab/cistern.yaml"),
    )
    .unwrap();
    let config = format!(
        "instance: {instance}\n{}",
        shipped
            .replace(
                "/run/cistern/docker.sock",
                &d.join("docker.sock").to_string_lossy()
            )
            .replace("/var/lib/cistern", &d.join("state").to_string_lossy())
            .replace(
                "unix: /var/run/docker.sock",
                &format!("unix: {}", daemon().display())
            )
    );
    Cistern::start_with_config(dir, d.join("docker.sock"), &config)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitlab_docker_executor_job_runs_through_cistern_and_leaves_nothing_but_its_cache() {
    images();
    let id = unique("gl");
    let instance = format!("test-{id}");
    let _cleanup = InstanceCleanup(instance.clone());
    let cistern = start_cistern(tempfile::tempdir().unwrap(), &instance);
    let sock = cistern.socket.clone();
    let state = cistern.dir.path().join("state");
    // Two jobs of one project, one after the other on the same runner slot.
    let token: String = format!("t{:07x}", std::process::id());
    let project = 1000 + u64::from(std::process::id() % 1000);
    // The test images' static busybox wget crashes (the static C library's
    // resolver): names are asked of the daemon's DNS with nslookup, and HTTP
    // spoken with nc.
    let script = "set -e\ncd $CI_PROJECT_DIR\n\
        web=$(nslookup web 2>/dev/null | sed -n 's/^Address: *//p' | tail -n 1)\n\
        echo \"service: $(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $web 80 | tail -n 1)\"\n\
        docker build -q -t app:$CI_JOB_ID . >/dev/null\n\
        echo \"run: $(docker run --rm app:$CI_JOB_ID cat /built)\"\n\
        docker run -d --name sidecar $BASE sleep 600 >/dev/null\n\
        mkdir -p cached && echo job-$CI_JOB_ID >> cached/marker\n\
        echo \"cache: $(cat cached/marker | tr '\\n' ' ')\"\n\
        echo artifact-$CI_JOB_ID > artifact.txt\n";
    let after_script = "echo \"after: $(docker ps --format '{{.Names}}')\"\n";
    let mut tenants = Vec::new();
    for job_id in [1, 2] {
        let job = Job::new(job_id, project, &token);
        let ran = run_job(&sock, &job, script, after_script).await;
        let out = ran.outputs.join("");
        let cistern_logs = cistern.logs();
        let expect = |line: &str| {
            assert!(
                out.contains(line),
                "job {job_id}: no {line:?} in:\n{out}\n{cistern_logs}"
            )
        };
        // The service by its alias, the job's own build and run, the
        // sidecar still there for after_script (the build container's
        // second start), the cache of the earlier job, the artifact.
        expect("service: service-ok");
        expect("run: built-in-job");
        expect("after: sidecar");
        expect(if job_id == 1 { "no-cache" } else { "restored" });
        expect(if job_id == 1 {
            "cache: job-1 \n"
        } else {
            "cache: job-1 job-2 \n"
        });
        expect(&format!("artifact-{job_id}"));
        // After the cleanup: nothing of the job's on the daemon, its
        // tenant's things (sidecar, image) and socket gone within seconds.
        let tenant = ran.tenant.clone();
        wait_until("the job's resources to go", Duration::from_secs(10), || {
            on_daemon(&format!("io.cistern.tenant={tenant}")).is_empty()
                && !run(docker_direct().args([
                    "image",
                    "inspect",
                    &format!("cistern-ns/{tenant}/app:{job_id}"),
                ]))
                .status
                .success()
                && !state.join("jobs").join(&tenant["job-".len()..]).exists()
        });
        let left: Vec<String> = on_daemon(&format!("com.gitlab.gitlab-runner.job.id={job_id}"))
            .into_iter()
            .filter(|r| !r.starts_with("volume "))
            .collect();
        assert!(left.is_empty(), "left after job {job_id}: {left:?}");
        tenants.push(tenant);
    }
    assert_ne!(tenants[0], tenants[1]);
    // The project's cache volumes are all the runner kept; its
    // clear-docker-cache removes them by label.
    let job = Job::new(0, project, &token);
    let mut kept = on_daemon(&format!("io.cistern.instance={instance}"));
    let mut expected = vec![
        format!("volume {}", job.cache_volume("/cache")),
        format!("volume {}", job.cache_volume(BUILDS_DIR)),
    ];
    kept.sort();
    expected.sort();
    assert_eq!(kept, expected);
    let filters = r#"{"label":["com.gitlab.gitlab-runner.managed=true"]}"#;
    let volumes = ok(
        &sock,
        "GET",
        &format!("/volumes?filters={}", urlencode(filters)),
        None,
    )
    .await;
    for volume in volumes["Volumes"].as_array().unwrap() {
        let name = volume["Name"].as_str().unwrap();
        ok(&sock, "DELETE", &format!("/volumes/{name}"), None).await;
    }
    assert_eq!(
        on_daemon(&format!("io.cistern.instance={instance}")),
        Vec::<String>::new()
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
