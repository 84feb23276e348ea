//! bollard, a Rust Docker client, works through cistern: version negotiation,
//! create/start/wait, logs, exec with its own socket hijacking, archives,
//! listings, and create on a network with a published port, a named volume, a
//! healthcheck, no devices and a restart policy (then updated).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, EndpointSettings, ExecConfig, HealthConfig,
    HealthStatusEnum, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{busybox, unique, Cistern, Cleanup};

async fn client(cistern: &Cistern) -> bollard::Docker {
    cistern.bollard().negotiate_version().await.unwrap()
}

#[tokio::test]
async fn bollard_negotiates_the_daemon_version() {
    let cistern = Cistern::start("");
    let docker = client(&cistern).await;
    let version = docker.version().await.unwrap();
    assert_eq!(
        version.api_version.as_deref(),
        Some(docker.client_version().to_string().as_str())
    );
    docker.ping().await.unwrap();
}

#[tokio::test]
async fn bollard_runs_a_container_and_reads_its_logs_and_exit_code() {
    let cistern = Cistern::start("");
    let docker = client(&cistern).await;
    let name = unique("bollard-run");
    let _cleanup = Cleanup::container(&name);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(busybox().into()),
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; exit 5".into(),
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let mut wait = docker.wait_container(&created.id, None);
    // bollard reports a non-zero exit as an error carrying the code.
    let code = match wait.next().await.unwrap() {
        Ok(r) => r.status_code,
        Err(bollard::errors::Error::DockerContainerWaitError { code, .. }) => code,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(code, 5);

    let logs: Vec<LogOutput> = docker
        .logs(
            &created.id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
    let mut out = String::new();
    let mut err = String::new();
    for item in logs {
        match item {
            LogOutput::StdOut { message } => out.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
            _ => {}
        }
    }
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");

    let listed = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default().all(true).build(),
        ))
        .await
        .unwrap();
    assert!(listed
        .iter()
        .any(|c| c.id.as_deref() == Some(created.id.as_str())));
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn bollard_exec_hijack_carries_stdin_and_stdout() {
    let cistern = Cistern::start("");
    let docker = client(&cistern).await;
    let name = unique("bollard-exec");
    let _cleanup = Cleanup::container(&name);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(busybox().into()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let exec = docker
        .create_exec(
            &created.id,
            ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "read line; echo got:$line".into(),
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
    else {
        panic!("exec did not attach");
    };
    input.write_all(b"hello\n").await.unwrap();
    input.flush().await.unwrap();
    let mut seen = String::new();
    while let Some(item) = output.next().await {
        seen.push_str(&item.unwrap().to_string());
        if seen.contains('\n') {
            break;
        }
    }
    assert_eq!(seen, "got:hello\n");
}

#[tokio::test]
async fn bollard_archives_go_in_and_come_back() {
    let cistern = Cistern::start("");
    let docker = client(&cistern).await;
    let name = unique("bollard-archive");
    let _cleanup = Cleanup::container(&name);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(busybox().into()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();

    // A one-file tar archive, built by hand (512-byte header, data, padding).
    let content = b"archive payload\n";
    let mut header = [0u8; 512];
    header[..8].copy_from_slice(b"note.txt");
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(512 + 512 + 1024, 0);

    docker
        .upload_to_container(
            &created.id,
            Some(
                UploadToContainerOptionsBuilder::default()
                    .path("/tmp")
                    .build(),
            ),
            bollard::body_full(tar.into()),
        )
        .await
        .unwrap();
    let back: Vec<u8> = docker
        .download_from_container(
            &created.id,
            Some(
                DownloadFromContainerOptionsBuilder::default()
                    .path("/tmp/note.txt")
                    .build(),
            ),
        )
        .map(|chunk| chunk.unwrap().to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(&back[..8], b"note.txt");
    assert_eq!(&back[512..512 + content.len()], content);
}

/// bollard keeps connections in a pool; when cistern closes the idle ones
/// (`clients.idle_timeout`), its next requests open new ones and succeed.
#[tokio::test]
async fn bollard_carries_on_when_idle_pooled_connections_are_closed() {
    let cistern = Cistern::start("clients:\n  idle_timeout: 1s\n");
    let docker = client(&cistern).await;
    for _ in 0..3 {
        docker.ping().await.unwrap();
        // Other tests' containers may be listed too (same tenant): the call
        // must succeed, whatever it lists.
        docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).build(),
            ))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
}

/// Everything a container wrote to stdout and stderr.
async fn output(docker: &bollard::Docker, id: &str) -> String {
    docker
        .logs(
            id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .map(|r| r.unwrap().to_string())
        .collect::<Vec<_>>()
        .await
        .concat()
}

/// bollard's typed create body with a network endpoint (an alias), a port
/// published on a free host port, a named volume, a healthcheck, an empty
/// device list and an on-failure restart policy: the container becomes
/// healthy, serves its page through the published port and, by its alias, to
/// another container on the network; the restart policy is then updated.
#[tokio::test]
async fn bollard_runs_on_a_network_with_a_port_volume_healthcheck_and_restart_policy() {
    let cistern = Cistern::start("");
    let docker = client(&cistern).await;
    let name = unique("bollard-opts");
    let (net, vol, probe) = (
        format!("{name}-net"),
        format!("{name}-data"),
        format!("{name}-probe"),
    );
    let mut cleanup = Cleanup::container(&name);
    cleanup.containers.push(probe.clone());
    cleanup.networks.push(net.clone());
    cleanup.volumes.push(vol.clone());
    docker
        .create_network(NetworkCreateRequest {
            name: net.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let page = "hello-from-bollard\n";
    let on_failure = RestartPolicy {
        name: Some(RestartPolicyNameEnum::ON_FAILURE),
        maximum_retry_count: Some(3),
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(busybox().into()),
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "echo {} > /www/index.html && exec httpd -f -p 8080 -h /www",
                        page.trim()
                    ),
                ]),
                exposed_ports: Some(vec!["8080/tcp".into()]),
                healthcheck: Some(HealthConfig {
                    test: Some(
                        [
                            "CMD",
                            "wget",
                            "-q",
                            "-O",
                            "/dev/null",
                            "http://127.0.0.1:8080/",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ),
                    interval: Some(200_000_000),
                    timeout: Some(2_000_000_000),
                    retries: Some(50),
                    ..Default::default()
                }),
                host_config: Some(HostConfig {
                    network_mode: Some(net.clone()),
                    port_bindings: Some(HashMap::from([(
                        "8080/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(String::new()),
                        }]),
                    )])),
                    binds: Some(vec![format!("{vol}:/www")]),
                    devices: Some(Vec::new()),
                    restart_policy: Some(on_failure.clone()),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        net.clone(),
                        EndpointSettings {
                            aliases: Some(vec!["web".into()]),
                            ..Default::default()
                        },
                    )])),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = docker.inspect_container(&created.id, None).await.unwrap();
        let health = info
            .state
            .as_ref()
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.status);
        if health == Some(HealthStatusEnum::HEALTHY) {
            break info;
        }
        assert!(Instant::now() < deadline, "not healthy in time: {health:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let host = info.host_config.as_ref().unwrap();
    assert_eq!(host.restart_policy, Some(on_failure));
    assert_eq!(host.devices.as_deref().unwrap_or_default(), []);
    let settings = info.network_settings.as_ref().unwrap();
    assert!(settings.networks.as_ref().unwrap().contains_key(&net));
    let port: u16 = settings.ports.as_ref().unwrap()["8080/tcp"]
        .as_ref()
        .unwrap()[0]
        .host_port
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut fetched = String::new();
    conn.read_to_string(&mut fetched).await.unwrap();
    assert!(fetched.ends_with(page), "{fetched}");

    // Another container on the network reaches it by its alias.
    let other = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&probe)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(busybox().into()),
                cmd: Some(
                    ["wget", "-q", "-O-", "http://web:8080/"]
                        .map(String::from)
                        .to_vec(),
                ),
                host_config: Some(HostConfig {
                    network_mode: Some(net.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&other.id, None).await.unwrap();
    let exit = docker.wait_container(&other.id, None).next().await.unwrap();
    assert_eq!(exit.map(|r| r.status_code).ok(), Some(0));
    assert_eq!(output(&docker, &other.id).await, page);

    docker
        .update_container(
            &created.id,
            ContainerUpdateBody {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ALWAYS),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let info = docker.inspect_container(&created.id, None).await.unwrap();
    assert_eq!(
        info.host_config
            .and_then(|h| h.restart_policy)
            .and_then(|r| r.name),
        Some(RestartPolicyNameEnum::ALWAYS)
    );

    for id in [&other.id, &created.id] {
        docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .unwrap();
    }
    docker.remove_network(&net).await.unwrap();
    docker
        .remove_volume(&vol, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .unwrap();
}
