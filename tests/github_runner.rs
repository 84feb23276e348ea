//! A GitHub Actions self-hosted runner's container job, as the runner drives
//! Docker (it runs the docker CLI), through cistern on the shipped
//! `packaging/runners/github/cistern.yaml`.
//!
//! The sequence, read from actions/runner's `ContainerOperationProvider.cs`,
//! `DockerCommandManager.cs` and `StepHost.cs` (every container and network
//! labelled with the runner's instance label, the first six hex digits of the
//! SHA-256 of its lower-cased `.runner` file):
//!
//! 1. `docker version --format '{{.Server.APIVersion}}'`;
//! 2. stale containers: `docker ps --all --quiet --no-trunc --filter
//!    label=<label>`, each `docker rm --force`; `docker network prune --force
//!    --filter label=<label>`;
//! 3. `docker network create --label <label> github_network_<guid>`;
//! 4. per container (the job's, then each service; `docker pull` first, left
//!    out here: no registry): `docker create --name ... --label <label>
//!    --workdir ... --network <net> [--network-alias <service>] -e ...
//!    -e GITHUB_ACTIONS=true -e CI=true -v ... --entrypoint tail <image> -f
//!    /dev/null` (the job container binds `/var/run/docker.sock` and the
//!    runner's directories), `docker start`, `docker ps --all --filter id=...
//!    --filter status=running`; a service's `docker port` and health status,
//!    the job container's environment (`docker inspect`);
//! 5. steps: `docker exec` of the OS check, then `docker exec -i --workdir
//!    ... -e ... <id> sh -e /__w/_temp/<guid>.sh` per step (the script file
//!    written into the runner's `_work/_temp` on the host);
//! 6. after the job: a service's `docker logs --details`, `docker rm --force`
//!    of every container, `docker network rm`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::*;

const SERVICE: &str = "cistern-test/gh-web-service:latest";

/// The service image: an HTTP server on its exposed port 80.
fn service_image() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN mkdir /www && echo service-ok > /www/index.html\nEXPOSE 80\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
            busybox()
        ),
    )
    .unwrap();
    build_tagged(SERVICE, ctx.path());
}

/// Runs the docker CLI as the runner does; its stdout.
fn docker(cistern: &Cistern, args: &[&str]) -> String {
    let out = run(cistern.docker().args(args));
    assert!(
        out.status.success(),
        "docker {args:?}: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cistern.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    all
}

/// cistern on the shipped GitHub configuration: paths in `dir`, the runner's
/// directories under `root`, the rule's label `label`.
fn start_cistern(dir: tempfile::TempDir, root: &Path, label: &str, instance: &str) -> Cistern {
    let d = dir.path().to_path_buf();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/runners/github/cistern.yaml"),
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
            .replace("/opt/actions-runner", &root.to_string_lossy())
            .replace("\"0a1b2c\"", &format!("\"{label}\""))
    );
    Cistern::start_with_config(dir, d.join("docker.sock"), &config)
}

#[test]
fn a_github_container_job_with_a_service_runs_through_cistern_and_leaves_nothing() {
    service_image();
    let image = docker_cli_image();
    let id = unique("gh");
    let instance = format!("test-{id}");
    let _cleanup = InstanceCleanup(instance.clone());
    // The runner's directory and its instance label.
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path().join("actions-runner");
    let runner_file = format!("{{\"agentId\": 7, \"agentName\": \"{id}\", \"gitHubUrl\": \"https://github.example/org/repo\"}}");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(".runner"), &runner_file).unwrap();
    let label: String = Sha256::digest(runner_file.to_lowercase())[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let work = root.join("_work");
    for dir in [
        "_temp/_github_home",
        "_temp/_github_workflow",
        "_actions",
        "_tool",
        "repo/repo",
    ] {
        std::fs::create_dir_all(work.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.join("externals")).unwrap();
    // The checked-out repository.
    std::fs::write(
        work.join("repo/repo/Dockerfile"),
        format!("FROM {}\nRUN echo built-in-job > /built\n", busybox()),
    )
    .unwrap();
    let cistern = start_cistern(tempfile::tempdir().unwrap(), &root, &label, &instance);
    let label_filter = format!("label={label}");
    let p = |path: &Path| path.to_string_lossy().into_owned();

    // 1-3.
    docker(&cistern, &["version", "--format", "{{.Server.APIVersion}}"]);
    let stale = docker(
        &cistern,
        &[
            "ps",
            "--all",
            "--quiet",
            "--no-trunc",
            "--filter",
            &label_filter,
        ],
    );
    assert_eq!(stale.trim(), "");
    docker(
        &cistern,
        &["network", "prune", "--force", "--filter", &label_filter],
    );
    let network = format!("github_network_{}", id.replace('-', ""));
    docker(
        &cistern,
        &["network", "create", "--label", &label, &network],
    );

    // 4. The job container, then the service.
    let job_name = format!("{label}_cistern-testdocker-cli_{}", id.replace('-', ""));
    let volumes = [
        "/var/run/docker.sock:/var/run/docker.sock".to_string(),
        format!("{}:/__w", p(&work)),
        format!("{}:/__e:ro", p(&root.join("externals"))),
        format!("{}:/__w/_temp", p(&work.join("_temp"))),
        format!("{}:/__w/_actions", p(&work.join("_actions"))),
        format!("{}:/__w/_tool", p(&work.join("_tool"))),
        format!("{}:/github/home", p(&work.join("_temp/_github_home"))),
        format!(
            "{}:/github/workflow",
            p(&work.join("_temp/_github_workflow"))
        ),
    ];
    let mut args: Vec<String> = [
        "create",
        "--name",
        &job_name,
        "--label",
        &label,
        "--workdir",
        "/__w/repo/repo",
        "--network",
        &network,
        "-e",
        "HOME=/github/home",
        "-e",
        "GITHUB_ACTIONS=true",
        "-e",
        "CI=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for v in &volumes {
        args.extend(["-v".to_string(), v.clone()]);
    }
    args.extend(
        ["--entrypoint", "tail", image, "-f", "/dev/null"]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = docker(&cistern, &args).trim().to_string();
    docker(&cistern, &["start", &job]);
    let service_name = format!(
        "{}_cistern-testgh-web-servicelatest_{}",
        &label,
        id.replace('-', "")
    );
    let service = docker(
        &cistern,
        &[
            "create",
            "--name",
            &service_name,
            "--label",
            &label,
            "--network",
            &network,
            "--network-alias",
            "web",
            "-e",
            "GITHUB_ACTIONS=true",
            "-e",
            "CI=true",
            SERVICE,
        ],
    )
    .trim()
    .to_string();
    docker(&cistern, &["start", &service]);
    for c in [&job, &service] {
        let running = docker(
            &cistern,
            &[
                "ps",
                "--all",
                "--filter",
                &format!("id={c}"),
                "--filter",
                "status=running",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Status}}",
            ],
        );
        assert!(running.starts_with(c.as_str()), "{running}");
    }
    docker(&cistern, &["port", &service]);
    docker(
        &cistern,
        &[
            "inspect",
            "--format",
            "{{if .Config.Healthcheck}}{{print .State.Health.Status}}{{end}}",
            &service,
        ],
    );
    let env = docker(
        &cistern,
        &[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &job,
        ],
    );
    assert!(
        env.lines()
            .any(|l| l == "DOCKER_HOST=unix:///run/cistern/docker.sock"),
        "{env}"
    );

    // 5. Steps.
    docker(
        &cistern,
        &[
            "exec",
            &job,
            "sh",
            "-c",
            "cat /etc/*release | grep ^ID; true",
        ],
    );
    let step = |name: &str, script: &str| -> String {
        std::fs::write(work.join(format!("_temp/{name}.sh")), script).unwrap();
        let script = format!("/__w/_temp/{name}.sh");
        docker(
            &cistern,
            &[
                "exec",
                "-i",
                "--workdir",
                "/__w/repo/repo",
                "-e",
                "HOME",
                "-e",
                "GITHUB_ACTIONS=true",
                "-e",
                "CI=true",
                "-e",
                "DOCKER_BUILDKIT=0",
                &job,
                "sh",
                "-e",
                &script,
            ],
        )
    };
    // The static busybox wget of the test images crashes in its resolver:
    // the name is asked of the daemon's DNS, HTTP spoken with nc.
    let out = step(
        "service",
        "ip=$(nslookup web 2>/dev/null | sed -n 's/^Address: *//p' | tail -n 1)\n\
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $ip 80 | tail -n 1\n",
    );
    assert_eq!(out.trim(), "service-ok");
    let out = step(
        "docker",
        &format!(
            "docker build -q -t app . >/dev/null\n\
             docker run --rm app cat /built\n\
             docker run -d --name sidecar {} sleep 600 >/dev/null\n\
             docker ps --format '{{{{.Names}}}}'\n",
            busybox()
        ),
    );
    assert_eq!(out, "built-in-job\nsidecar\n", "{}", cistern.logs());
    let tenant = format!(
        "job-{}",
        run_ok(docker_direct().args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.cistern.job\"}}",
            &job
        ]))
        .trim()
    );
    assert_eq!(
        on_daemon(&format!("io.cistern.tenant={tenant}")),
        [format!("container {tenant}-sidecar")]
    );

    // 6. After the job.
    docker(&cistern, &["logs", "--details", &service]);
    docker(&cistern, &["rm", "--force", &service]);
    docker(&cistern, &["rm", "--force", &job]);
    docker(&cistern, &["network", "rm", &network]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = on_daemon(&format!("io.cistern.instance={instance}"));
        let image_left =
            run(docker_direct().args(["image", "inspect", &format!("cistern-ns/{tenant}/app")]))
                .status
                .success();
        if left.is_empty() && !image_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after the job: {left:?}, image: {image_left}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(on_daemon(&label).is_empty());
}
