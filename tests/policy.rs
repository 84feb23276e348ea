//! The policy through the docker CLI, against the real daemon: every rule refuses
//! what a CI job could use to become root on the host, with the line the CLI prints
//! naming the rule's field, a logged refusal (rule, field, status), and nothing
//! created on the daemon. Allowlists, clamps, forced values and injections are
//! checked where the user sees them: in `docker inspect`, `docker port` and inside
//! the container.
//!
//! The adversarial encodings of the same attacks (raw HTTP) are in
//! `policy_adversarial.rs`.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{busybox, docker_direct, raw_request, run, run_ok, unique, Cistern, Cleanup};

/// Starts cistern with `policy` (flow-style YAML, empty for the built-in
/// `conservative` policy) on its listener, logging JSON so that refusal events can
/// be read back field by field.
fn start(policy: &str) -> Cistern {
    let mut yaml = String::new();
    if !policy.is_empty() {
        yaml.push_str(&format!("    policy: {policy}\n"));
    }
    yaml.push_str("log:\n  format: json\n");
    Cistern::start(&yaml)
}

/// The policy events cistern has logged: refusals, and would-be refusals in audit
/// mode.
fn policy_events(cistern: &Cistern) -> Vec<Value> {
    cistern
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["target"] == "cistern::policy")
        .collect()
}

/// The message of a refusal by the `conservative` policy.
fn msg(what: &str, field: &str) -> String {
    format!("cistern: {what} (policy conservative, {field})")
}

/// Runs a docker CLI command that cistern must refuse: the CLI fails and prints
/// `Error response from daemon: <message>`, and cistern logged exactly one refusal
/// for it, with `rule`, `field` and status 403.
fn assert_refused(cistern: &Cistern, cmd: &mut Command, message: &str, rule: &str, field: &str) {
    let before = policy_events(cistern).len();
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let want = format!("Error response from daemon: {message}");
    assert!(
        stderr
            .lines()
            .any(|l| l.strip_prefix("docker: ").unwrap_or(l) == want),
        "{cmd:?}\nwant: {want}\ngot:  {stderr}"
    );
    let events = policy_events(cistern);
    let new = &events[before..];
    assert_eq!(new.len(), 1, "{cmd:?}: one refusal event, got {new:#?}");
    let e = &new[0];
    assert_eq!(
        (
            e["rule"].as_str(),
            e["field"].as_str(),
            e["status"].as_u64(),
            e["audit"].as_bool()
        ),
        (Some(rule), Some(field), Some(403), Some(false)),
        "{cmd:?}: {e}"
    );
}

fn exists(kind: &str, name: &str) -> bool {
    run(docker_direct().args([kind, "inspect", name]))
        .status
        .success()
}

fn assert_no_container(name: &str) {
    assert!(
        !exists("container", name),
        "container {name} exists on the daemon"
    );
}

/// `docker create --name <unique> ARGS busybox true` is refused and creates nothing.
fn assert_create_refused(cistern: &Cistern, args: &[&str], what: &str, rule: &str, field: &str) {
    let name = unique("policy");
    let _cleanup = Cleanup::container(&name);
    assert_refused(
        cistern,
        cistern
            .docker()
            .args(["create", "--name", &name])
            .args(args)
            .args([busybox(), "true"]),
        &msg(what, field),
        rule,
        field,
    );
    assert_no_container(&name);
}

fn inspect(name: &str, format: &str) -> String {
    run_ok(docker_direct().args(["inspect", "--format", format, name]))
        .trim()
        .to_string()
}

#[test]
fn privileged_containers_and_execs_are_refused() {
    let cistern = start("");
    assert_create_refused(
        &cistern,
        &["--privileged"],
        "privileged containers are not allowed",
        "privileged",
        "HostConfig.Privileged",
    );

    let name = unique("policy-exec");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "-d", "--name", &name, busybox(), "sleep", "60"]),
    );
    assert_refused(
        &cistern,
        cistern
            .docker()
            .args(["exec", "--privileged", &name, "true"]),
        &msg("privileged exec is not allowed", "Privileged"),
        "privileged_exec",
        "Privileged",
    );
    assert_eq!(
        inspect(&name, "{{json .ExecIDs}}"),
        "null",
        "an exec was created"
    );
    assert_eq!(
        run_ok(cistern.docker().args(["exec", &name, "echo", "ok"])),
        "ok\n"
    );
}

#[test]
fn capabilities_outside_the_allowlist_are_refused() {
    let cistern = start("");
    for (cap, shown) in [
        ("ALL", "ALL"),
        ("SYS_ADMIN", "CAP_SYS_ADMIN"),
        ("cap_sys_module", "CAP_SYS_MODULE"),
        ("net_admin", "CAP_NET_ADMIN"),
    ] {
        assert_create_refused(
            &cistern,
            &["--cap-add", cap],
            &format!("capability {shown} is not allowed"),
            "cap_add",
            "HostConfig.CapAdd",
        );
    }
}

#[test]
fn an_allowlisted_capability_passes_and_takes_effect() {
    let cistern = start("{capabilities: [NET_ADMIN]}");
    // NET_ADMIN is what lets `ip link set lo down` succeed in the container.
    let out =
        run(cistern
            .docker()
            .args(["run", "--rm", busybox(), "ip", "link", "set", "lo", "down"]));
    assert!(!out.status.success(), "without NET_ADMIN it must fail");
    run_ok(cistern.docker().args([
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        busybox(),
        "ip",
        "link",
        "set",
        "lo",
        "down",
    ]));
    let p = "policy conservative, HostConfig.CapAdd";
    let name = unique("policy");
    let _cleanup = Cleanup::container(&name);
    assert_refused(
        &cistern,
        cistern.docker().args([
            "create",
            "--name",
            &name,
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_ADMIN",
            busybox(),
        ]),
        &format!("cistern: capability CAP_SYS_ADMIN is not allowed ({p})"),
        "cap_add",
        "HostConfig.CapAdd",
    );
    assert_no_container(&name);
}

#[test]
fn host_and_container_namespaces_are_refused() {
    let cistern = start("");
    for (flag, what, key) in [
        ("--pid", "PID", "PidMode"),
        ("--ipc", "IPC", "IpcMode"),
        ("--uts", "UTS", "UTSMode"),
        ("--network", "network", "NetworkMode"),
        ("--userns", "user", "UsernsMode"),
        ("--cgroupns", "cgroup", "CgroupnsMode"),
    ] {
        assert_create_refused(
            &cistern,
            &[flag, "host"],
            &format!("the host {what} namespace is not allowed"),
            "namespace_host",
            &format!("HostConfig.{key}"),
        );
    }
    // `container:` modes and `--volumes-from` are for the tenant's own
    // containers: tests/policy_adversarial.rs and tests/namespaces.rs.
}

#[test]
fn devices_gpus_and_device_cgroup_rules_are_refused() {
    let cistern = start("");
    assert_create_refused(
        &cistern,
        &["--device", "/dev/mem"],
        "host devices are not allowed",
        "devices",
        "HostConfig.Devices",
    );
    assert_create_refused(
        &cistern,
        &["--gpus", "all"],
        "device requests are not allowed",
        "device_requests",
        "HostConfig.DeviceRequests",
    );
    assert_create_refused(
        &cistern,
        &["--device-cgroup-rule", "c *:* rwm"],
        "device cgroup rules are not allowed",
        "device_cgroup_rules",
        "HostConfig.DeviceCgroupRules",
    );
}

#[test]
fn host_paths_are_refused_through_every_mount_door() {
    let cistern = start("");
    assert_create_refused(
        &cistern,
        &["-v", "/etc:/x"],
        "bind mount of host path \"/etc\" is not allowed",
        "bind_mount",
        "HostConfig.Binds[0]",
    );
    assert_create_refused(
        &cistern,
        &["-v", "/:/host:ro"],
        "bind mount of host path \"/\" is not allowed",
        "bind_mount",
        "HostConfig.Binds[0]",
    );
    assert_create_refused(
        &cistern,
        &["--mount", "type=bind,src=/etc,dst=/x"],
        "bind mount of host path \"/etc\" is not allowed",
        "bind_mount",
        "HostConfig.Mounts[0].Source",
    );
    assert_create_refused(
        &cistern,
        &["--mount", "type=volume,src=v,dst=/x,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/etc"],
        "volume driver options that mount host paths or devices are not allowed",
        "volume_driver_opts",
        "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options",
    );
    assert_create_refused(
        &cistern,
        &["-v", "/etc:/x:rshared"],
        "rshared mount propagation is not allowed",
        "mount_propagation",
        "HostConfig.Binds[0]",
    );
    assert_create_refused(
        &cistern,
        &[
            "--mount",
            "type=bind,src=/etc,dst=/x,bind-propagation=rshared",
        ],
        "rshared mount propagation is not allowed",
        "mount_propagation",
        "HostConfig.Mounts[0].BindOptions.Propagation",
    );
    let volume = unique("policy-vol");
    assert_create_refused(
        &cistern,
        &["--volume-driver", "evil", "-v", &format!("{volume}:/x")],
        "volume driver \"evil\" is not allowed",
        "volume_driver",
        "HostConfig.VolumeDriver",
    );

    // A named volume that is really a bind of /etc, and one from another driver.
    let mut cleanup = Cleanup::default();
    cleanup.volumes.push(volume.clone());
    assert_refused(
        &cistern,
        cistern.docker().args([
            "volume",
            "create",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            "device=/etc",
            &volume,
        ]),
        &msg(
            "volume driver options that mount host paths or devices are not allowed",
            "DriverOpts",
        ),
        "volume_driver_opts",
        "DriverOpts",
    );
    assert!(!exists("volume", &volume), "volume {volume} was created");
    assert_refused(
        &cistern,
        cistern
            .docker()
            .args(["volume", "create", "--driver", "evil", &volume]),
        &msg("volume driver \"evil\" is not allowed", "Driver"),
        "volume_driver",
        "Driver",
    );
    assert!(!exists("volume", &volume), "volume {volume} was created");
    // A plain named volume is an ordinary workflow.
    run_ok(cistern.docker().args(["volume", "create", &volume]));
    assert!(exists("volume", &volume));
}

#[test]
fn allowlisted_bind_prefixes_pass_and_read_only_entries_need_ro() {
    let rw = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    let (rw_path, ro_path) = (
        rw.path().display().to_string(),
        ro.path().display().to_string(),
    );
    std::fs::write(ro.path().join("seed"), "from the host\n").unwrap();
    let cistern = start(&format!(
        "{{bind_mounts: [{{path: '{rw_path}'}}, {{path: '{ro_path}', read_only: true}}]}}"
    ));

    // Writable entry: the container writes, the host reads.
    run_ok(cistern.docker().args([
        "run",
        "--rm",
        "-v",
        &format!("{rw_path}/:/data"),
        busybox(),
        "sh",
        "-c",
        "echo hello > /data/out",
    ]));
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "hello\n"
    );
    // Read-only entry: `:ro` (or `readonly`) required.
    let p = "policy conservative";
    let name = unique("policy");
    let _cleanup = Cleanup::container(&name);
    assert_refused(
        &cistern,
        cistern.docker().args([
            "create",
            "--name",
            &name,
            "-v",
            &format!("{ro_path}:/seed"),
            busybox(),
        ]),
        &format!("cistern: host path \"{ro_path}\" may only be mounted read-only (allowlist entry {ro_path}) ({p}, HostConfig.Binds[0])"),
        "bind_mount_read_only",
        "HostConfig.Binds[0]",
    );
    assert_refused(
        &cistern,
        cistern.docker().args([
            "create",
            "--name",
            &name,
            "--mount",
            &format!("type=bind,src={ro_path},dst=/seed"),
            busybox(),
        ]),
        &format!("cistern: host path \"{ro_path}\" may only be mounted read-only (allowlist entry {ro_path}) ({p}, HostConfig.Mounts[0].Source)"),
        "bind_mount_read_only",
        "HostConfig.Mounts[0].Source",
    );
    assert_no_container(&name);
    let out = run_ok(cistern.docker().args([
        "run",
        "--rm",
        "-v",
        &format!("{ro_path}:/seed:ro"),
        busybox(),
        "sh",
        "-c",
        "cat /seed/seed; touch /seed/x 2>/dev/null && echo writable || echo read-only",
    ]));
    assert_eq!(out, "from the host\nread-only\n");
    run_ok(cistern.docker().args([
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={ro_path},dst=/seed,readonly"),
        busybox(),
        "cat",
        "/seed/seed",
    ]));

    // Lookalikes of an allowlisted prefix are other host paths.
    for (source, shown) in [
        (format!("{rw_path}-evil"), format!("{rw_path}-evil")),
        (
            format!("{rw_path}/../../etc"),
            format!("{rw_path}/../../etc"),
        ),
    ] {
        assert_refused(
            &cistern,
            cistern.docker().args([
                "create",
                "--name",
                &name,
                "-v",
                &format!("{source}:/x"),
                busybox(),
            ]),
            &format!("cistern: bind mount of host path \"{shown}\" is not allowed ({p}, HostConfig.Binds[0])"),
            "bind_mount",
            "HostConfig.Binds[0]",
        );
    }
    assert_no_container(&name);
}

#[test]
fn security_options_and_sysctls_outside_the_allowlist_are_refused() {
    let cistern = start("");
    for opt in ["seccomp=unconfined", "apparmor=unconfined", "label=disable"] {
        assert_create_refused(
            &cistern,
            &["--security-opt", opt],
            &format!("security option \"{opt}\" is not allowed"),
            "security_opt",
            "HostConfig.SecurityOpt[0]",
        );
    }
    // The CLI reads a custom profile and sends its (compacted) JSON.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("allow-all.json");
    std::fs::write(&profile, "{ \"defaultAction\": \"SCMP_ACT_ALLOW\" }\n").unwrap();
    assert_create_refused(
        &cistern,
        &["--security-opt", &format!("seccomp={}", profile.display())],
        r#"security option "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}" is not allowed"#,
        "security_opt",
        "HostConfig.SecurityOpt[0]",
    );
    // `systempaths=unconfined` is sent as empty MaskedPaths/ReadonlyPaths.
    assert_create_refused(
        &cistern,
        &["--security-opt", "systempaths=unconfined"],
        "setting MaskedPaths is not allowed (the daemon's defaults apply)",
        "masked_paths",
        "HostConfig.MaskedPaths",
    );
    assert_create_refused(
        &cistern,
        &["--sysctl", "net.ipv4.ip_forward=1"],
        "sysctl net.ipv4.ip_forward is not allowed",
        "sysctls",
        "HostConfig.Sysctls.net.ipv4.ip_forward",
    );
    assert_create_refused(
        &cistern,
        &["--sysctl", "kernel.shm_rmid_forced=1"],
        "sysctl kernel.shm_rmid_forced is not allowed",
        "sysctls",
        "HostConfig.Sysctls.kernel.shm_rmid_forced",
    );
}

#[test]
fn an_allowlisted_sysctl_passes_and_takes_effect() {
    let cistern = start("{sysctls: [net.ipv4.ip_unprivileged_port_start]}");
    let out = run_ok(cistern.docker().args([
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=77",
        busybox(),
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]));
    assert_eq!(out, "77\n");
    assert_create_refused(
        &cistern,
        &["--sysctl", "net.ipv4.ip_forward=1"],
        "sysctl net.ipv4.ip_forward is not allowed",
        "sysctls",
        "HostConfig.Sysctls.net.ipv4.ip_forward",
    );
}

#[test]
fn runtime_cgroup_parent_oom_killer_and_log_driver_are_refused() {
    let cistern = start("");
    assert_create_refused(
        &cistern,
        &["--runtime", "evil"],
        "runtime \"evil\" is not allowed",
        "runtime",
        "HostConfig.Runtime",
    );
    assert_create_refused(
        &cistern,
        &["--cgroup-parent", "/"],
        "choosing the cgroup parent is not allowed",
        "cgroup_parent",
        "HostConfig.CgroupParent",
    );
    assert_create_refused(
        &cistern,
        &["--oom-kill-disable"],
        "disabling the OOM killer is not allowed",
        "oom_kill_disable",
        "HostConfig.OomKillDisable",
    );
    assert_create_refused(
        &cistern,
        &["--oom-score-adj", "-1000"],
        "a negative OOM score adjustment is not allowed",
        "oom_score_adj",
        "HostConfig.OomScoreAdj",
    );
    for driver in ["syslog", "journald", "gelf"] {
        assert_create_refused(
            &cistern,
            &["--log-driver", driver],
            &format!("log driver \"{driver}\" is not allowed"),
            "log_driver",
            "HostConfig.LogConfig.Type",
        );
    }
}

#[test]
fn host_network_builds_remote_contexts_and_url_imports_are_refused() {
    let cistern = start("");
    let tag = format!("cistern-test/{}:latest", unique("policy-build"));
    let mut cleanup = Cleanup::image(&tag);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nRUN true\n", busybox()),
    )
    .unwrap();
    assert_refused(
        &cistern,
        cistern
            .docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--network", "host", "-t", &tag])
            .arg(dir.path()),
        &msg("build network mode \"host\" is not allowed", "networkmode"),
        "build_network_mode",
        "networkmode",
    );
    assert!(!exists("image", &tag), "image {tag} was built");

    // The CLI downloads http contexts itself; the daemon fetches `remote` itself,
    // from the host's network.
    let (status, text) = raw_request(
        &cistern.socket,
        &format!("POST /v1.41/build?remote=http%3A%2F%2F127.0.0.1%3A9%2Fctx.tar&t={tag} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(
        text.trim_end().ends_with(&format!(
            "{{\"message\":\"{}\"}}",
            msg(
                "remote build contexts fetched by the daemon are not allowed",
                "remote"
            )
        )),
        "{text}"
    );
    assert!(!exists("image", &tag), "image {tag} was built");

    let imported = format!("cistern-test/{}:latest", unique("policy-import"));
    cleanup.images.push(imported.clone());
    assert_refused(
        &cistern,
        cistern
            .docker()
            .args(["import", "http://127.0.0.1:9/rootfs.tar", &imported]),
        &msg("importing an image from a URL is not allowed", "fromSrc"),
        "image_import_url",
        "fromSrc",
    );
    assert!(!exists("image", &imported), "image {imported} was imported");
}

#[test]
fn network_drivers_and_host_interface_options_are_refused() {
    let cistern = start("");
    let name = unique("policy-net");
    let mut cleanup = Cleanup::default();
    cleanup.networks.push(name.clone());
    for (args, what, rule, field) in [
        (
            vec!["-d", "macvlan", "-o", "parent=eth0"],
            "network driver \"macvlan\" is not allowed",
            "network_driver",
            "Driver",
        ),
        (
            vec!["-d", "ipvlan"],
            "network driver \"ipvlan\" is not allowed",
            "network_driver",
            "Driver",
        ),
        (
            vec!["-o", "com.docker.network.bridge.name=docker0"],
            "network option com.docker.network.bridge.name is not allowed",
            "network_options",
            "Options.com.docker.network.bridge.name",
        ),
        (
            vec!["-o", "parent=eth0"],
            "network option parent is not allowed",
            "network_options",
            "Options.parent",
        ),
        (
            vec!["-o", "com.docker.network.bridge.host_binding_ipv4=0.0.0.0"],
            "network option com.docker.network.bridge.host_binding_ipv4 is not allowed",
            "network_options",
            "Options.com.docker.network.bridge.host_binding_ipv4",
        ),
        (
            vec!["--subnet", "10.199.0.0/24"],
            "choosing network addressing (IPAM driver, options or subnets) is not allowed",
            "network_ipam",
            "IPAM",
        ),
    ] {
        assert_refused(
            &cistern,
            cistern
                .docker()
                .args(["network", "create"])
                .args(&args)
                .arg(&name),
            &msg(what, field),
            rule,
            field,
        );
        assert!(!exists("network", &name), "{args:?}: network was created");
    }
    run_ok(cistern.docker().args(["network", "create", &name]));
    assert_eq!(
        run_ok(docker_direct().args(["network", "inspect", "--format", "{{.Driver}}", &name])),
        "bridge\n"
    );
}

#[test]
fn limits_refuse_over_the_cap_and_set_the_cap_on_a_plain_run() {
    let cistern = start("{limits: {memory: {max: 64MiB}, pids: {max: 100}}}");
    assert_create_refused(
        &cistern,
        &["-m", "1g"],
        "memory 1073741824 is over the cap of 67108864",
        "limit_memory",
        "HostConfig.Memory",
    );
    assert_create_refused(
        &cistern,
        &["--pids-limit", "500"],
        "PIDs limit 500 is over the cap of 100",
        "limit_pids",
        "HostConfig.PidsLimit",
    );
    assert_create_refused(
        &cistern,
        &["--pids-limit", "-1"],
        "PIDs limit unlimited is over the cap of 100",
        "limit_pids",
        "HostConfig.PidsLimit",
    );
    // A plain `docker run` (the CLI sends `Memory: 0`, `PidsLimit: 0`) gets the caps.
    let name = unique("policy-limits");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "--name", &name, busybox(), "true"]),
    );
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"),
        "67108864 100"
    );
}

#[test]
fn clamped_memory_and_forced_pids_show_in_inspect() {
    let cistern = start("{limits: {memory: {max: 64MiB, on_exceed: clamp}, pids: {force: 42}}}");
    let name = unique("policy-clamp");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "--name",
        &name,
        "-m",
        "1g",
        "--pids-limit",
        "5000",
        busybox(),
        "true",
    ]));
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"),
        "67108864 42"
    );
}

/// The memory cap the built-in policy sizes from this host (cistern runs on the
/// daemon's host in these tests): half its RAM, between 1 GiB and 64 GiB.
fn default_memory_cap() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    (kib * 1024 / 2).clamp(1 << 30, 64 << 30)
}

/// Whether the daemon enforces memory+swap limits. Without kernel support it
/// warns and stores `MemorySwap: -1` ("Memory limited without swap").
fn daemon_limits_swap() -> bool {
    run_ok(docker_direct().args(["info", "--format", "{{.SwapLimit}}"])).trim() == "true"
}

/// `Memory MemorySwap` of a container as the daemon reports it, with the
/// swap the daemon would store when it cannot limit swap.
fn memory_and_swap(name: &str) -> (String, String) {
    let got = inspect(name, "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}");
    let (memory, swap) = got.split_once(' ').unwrap();
    (memory.to_string(), swap.to_string())
}

fn expected_swap(memory_swap: i64) -> String {
    if daemon_limits_swap() {
        memory_swap.to_string()
    } else {
        "-1".into()
    }
}

/// The PIDs and memory limits a container's processes see in their cgroup
/// (v1 or v2).
const CGROUP_LIMITS: &str = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";

#[test]
fn the_default_policy_caps_pids_memory_and_swap_of_a_plain_run() {
    let cistern = start("");
    let cap = default_memory_cap();
    let name = unique("policy-default-caps");
    let _cleanup = Cleanup::container(&name);
    let out = run_ok(cistern.docker().args([
        "run",
        "--name",
        &name,
        busybox(),
        "sh",
        "-c",
        CGROUP_LIMITS,
    ]));
    assert_eq!(out, format!("4096\n{cap}\n"));
    assert_eq!(inspect(&name, "{{.HostConfig.PidsLimit}}"), "4096");
    assert_eq!(
        memory_and_swap(&name),
        (cap.to_string(), expected_swap(cap))
    );
    // `--memory 0` is what the CLI sends anyway: it gets the cap too.
    let zero = unique("policy-default-zero");
    let _cleanup_zero = Cleanup::container(&zero);
    run_ok(cistern.docker().args([
        "create",
        "--name",
        &zero,
        "--memory",
        "0",
        "--memory-swap",
        "0",
        "--pids-limit",
        "0",
        busybox(),
        "true",
    ]));
    assert_eq!(
        inspect(&zero, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"),
        format!("{cap} 4096")
    );
    // Less memory: no swap unless asked for; swap within the cap passes.
    let less = unique("policy-default-less");
    let _cleanup_less = Cleanup::container(&less);
    run_ok(
        cistern
            .docker()
            .args(["create", "--name", &less, "-m", "64m", busybox(), "true"]),
    );
    assert_eq!(
        memory_and_swap(&less),
        ((64i64 << 20).to_string(), expected_swap(64 << 20))
    );
    let swap = unique("policy-default-swap");
    let _cleanup_swap = Cleanup::container(&swap);
    run_ok(cistern.docker().args([
        "create",
        "--name",
        &swap,
        "-m",
        "64m",
        "--memory-swap",
        "128m",
        "--pids-limit",
        "64",
        busybox(),
        "true",
    ]));
    assert_eq!(
        memory_and_swap(&swap),
        ((64i64 << 20).to_string(), expected_swap(128 << 20))
    );
    assert_eq!(inspect(&swap, "{{.HostConfig.PidsLimit}}"), "64");
}

#[test]
fn the_default_policy_refuses_unlimited_pids_memory_and_swap() {
    let cistern = start("");
    let cap = default_memory_cap();
    assert_create_refused(
        &cistern,
        &["--pids-limit", "-1"],
        "PIDs limit unlimited is over the cap of 4096",
        "limit_pids",
        "HostConfig.PidsLimit",
    );
    assert_create_refused(
        &cistern,
        &["--pids-limit", "5000"],
        "PIDs limit 5000 is over the cap of 4096",
        "limit_pids",
        "HostConfig.PidsLimit",
    );
    assert_create_refused(
        &cistern,
        &["-m", "64m", "--memory-swap", "-1"],
        &format!("memory+swap unlimited is over the cap of {cap}"),
        "limit_memory_swap",
        "HostConfig.MemorySwap",
    );
    let over = (cap + (1 << 20)).to_string();
    assert_create_refused(
        &cistern,
        &["-m", &over, "--memory-swap", &over],
        &format!("memory {over} is over the cap of {cap}"),
        "limit_memory",
        "HostConfig.Memory",
    );
}

#[test]
fn docker_update_to_unlimited_or_above_the_caps_is_refused() {
    let cistern = start("");
    let cap = default_memory_cap();
    let name = unique("policy-update");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["create", "--name", &name, busybox(), "true"]),
    );
    let over = (cap * 2).to_string();
    for (args, what, rule, field) in [
        (
            vec!["--pids-limit", "-1"],
            "PIDs limit unlimited is over the cap of 4096".to_string(),
            "limit_pids",
            "PidsLimit",
        ),
        (
            vec!["--pids-limit", "100000"],
            "PIDs limit 100000 is over the cap of 4096".to_string(),
            "limit_pids",
            "PidsLimit",
        ),
        (
            vec!["--memory-swap", "-1"],
            format!("memory+swap unlimited is over the cap of {cap}"),
            "limit_memory_swap",
            "MemorySwap",
        ),
        (
            vec!["-m", &over, "--memory-swap", &over],
            format!("memory {over} is over the cap of {cap}"),
            "limit_memory",
            "Memory",
        ),
    ] {
        assert_refused(
            &cistern,
            cistern.docker().arg("update").args(&args).arg(&name),
            &msg(&what, field),
            rule,
            field,
        );
    }
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"),
        format!("{cap} 4096")
    );
    // Within the caps, an update goes through.
    run_ok(
        cistern
            .docker()
            .args(["update", "--pids-limit", "100", &name]),
    );
    assert_eq!(inspect(&name, "{{.HostConfig.PidsLimit}}"), "100");
}

#[test]
fn an_operator_config_lifting_the_limits_lets_unlimited_through() {
    let cistern = start("{limits: none}");
    let name = unique("policy-lifted");
    let _cleanup = Cleanup::container(&name);
    let out = run_ok(cistern.docker().args([
        "run",
        "--name",
        &name,
        "--pids-limit",
        "-1",
        busybox(),
        "sh",
        "-c",
        CGROUP_LIMITS,
    ]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("max"), "{out}");
    assert_eq!(inspect(&name, "{{.HostConfig.Memory}}"), "0");
    run_ok(
        cistern
            .docker()
            .args(["update", "--pids-limit", "-1", "--memory-swap", "-1", &name]),
    );

    // Lifting one limit keeps the others.
    let cistern = start("{limits: {pids: null}}");
    let name = unique("policy-lifted-pids");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "create",
        "--name",
        &name,
        "--pids-limit",
        "-1",
        busybox(),
        "true",
    ]));
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}}"),
        default_memory_cap().to_string()
    );
    assert_create_refused(
        &cistern,
        &["-m", "64m", "--memory-swap", "-1"],
        &format!(
            "memory+swap unlimited is over the cap of {}",
            default_memory_cap()
        ),
        "limit_memory_swap",
        "HostConfig.MemorySwap",
    );
}

#[test]
fn published_ports_are_forced_onto_the_configured_address() {
    let cistern = start("{publish_host_ip: 127.0.0.1}");
    let name = unique("policy-ports");
    let _cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        "8080",
        "-p",
        "0.0.0.0::8081",
        busybox(),
        "sleep",
        "60",
    ]));
    for port in ["8080", "8081"] {
        let out = run_ok(cistern.docker().args(["port", &name, port]));
        assert!(
            !out.is_empty() && out.lines().all(|l| l.starts_with("127.0.0.1:")),
            "{port}: {out}"
        );
    }
    assert_eq!(
        inspect(
            &name,
            "{{range $p, $b := .HostConfig.PortBindings}}{{$p}}={{(index $b 0).HostIp}} {{end}}"
        ),
        "8080/tcp=127.0.0.1 8081/tcp=127.0.0.1"
    );
    assert_create_refused(
        &cistern,
        &["-P"],
        "publishing all ports is not allowed (ports are published on a fixed address)",
        "publish_all_ports",
        "HostConfig.PublishAllPorts",
    );
}

/// Cgroup parent injection needs a cgroup the daemon can create: with the cgroupfs
/// driver (this test host) any absolute path is created under each hierarchy.
const INJECTED_CGROUP: &str = "/cistern-test-policy";

#[test]
fn injected_labels_env_no_new_privileges_init_and_cgroup_parent_show_in_inspect() {
    let cistern = start(&format!("{{inject: {{labels: {{ci.cistern: job-1}}, env: [CISTERN_CI=1], no_new_privileges: true, init: true, cgroup_parent: {INJECTED_CGROUP}}}}}"));
    let name = unique("policy-inject");
    let cleanup = Cleanup::container(&name);
    run_ok(cistern.docker().args([
        "run",
        "-d",
        "--name",
        &name,
        "-e",
        "CISTERN_CI=0",
        "--security-opt",
        "no-new-privileges=false",
        busybox(),
        "sleep",
        "60",
    ]));
    assert_eq!(
        inspect(
            &name,
            "{{index .Config.Labels \"ci.cistern\"}}|{{json .Config.Env}}|{{json .HostConfig.SecurityOpt}}|{{.HostConfig.Init}}|{{.HostConfig.CgroupParent}}"
        ),
        format!("job-1|[\"CISTERN_CI=1\",\"PATH=/bin\"]|[\"no-new-privileges\"]|true|{INJECTED_CGROUP}")
    );
    // And they take effect: the process cannot gain privileges, runs under the
    // init, and sits in the injected cgroup.
    assert_eq!(
        run_ok(
            cistern
                .docker()
                .args(["exec", &name, "grep", "NoNewPrivs", "/proc/self/status"])
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    let init = run_ok(
        cistern
            .docker()
            .args(["exec", &name, "cat", "/proc/1/comm"]),
    );
    assert_eq!(init.trim(), "docker-init");
    let pid = inspect(&name, "{{.State.Pid}}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(&format!(":{INJECTED_CGROUP}/"))),
        "{cgroups}"
    );
    drop(cleanup);
    // The daemon leaves the parent cgroup behind: remove it (best effort).
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let _ = std::fs::remove_dir(d.path().join(INJECTED_CGROUP.trim_start_matches('/')));
        }
    }
}

#[test]
fn denied_endpoint_groups_are_refused_with_the_group_named() {
    let cistern = start("");
    for (args, group) in [
        (&["swarm", "init"][..], "swarm"),
        (&["plugin", "ls"][..], "plugins"),
        (&["secret", "ls"][..], "secrets"),
        (&["config", "ls"][..], "configs"),
        (&["service", "ls"][..], "services"),
        (&["node", "ls"][..], "nodes"),
    ] {
        assert_refused(
            &cistern,
            cistern.docker().args(args),
            &format!("cistern: the {group} endpoints are not allowed (policy conservative)"),
            "endpoint_group",
            group,
        );
    }
    assert_eq!(
        run_ok(docker_direct().args(["info", "--format", "{{.Swarm.LocalNodeState}}"])).trim(),
        "inactive",
        "the daemon joined a swarm"
    );
}

#[test]
fn an_endpoint_group_switched_on_in_config_works() {
    let cistern = start("{name: plugins-on, groups: {plugins: true}}");
    let out = run_ok(
        cistern
            .docker()
            .args(["plugin", "ls", "--format", "{{.Name}}"]),
    );
    assert_eq!(
        out,
        run_ok(docker_direct().args(["plugin", "ls", "--format", "{{.Name}}"]))
    );
    // Only that group: the others stay off.
    assert_refused(
        &cistern,
        cistern.docker().args(["secret", "ls"]),
        "cistern: the secrets endpoints are not allowed (policy plugins-on)",
        "endpoint_group",
        "secrets",
    );
}

#[test]
fn audit_mode_forwards_and_logs_one_structured_event() {
    let cistern = start("{audit: true}");
    // Refused when enforcing; here the daemon gets it and NET_ADMIN takes effect.
    run_ok(cistern.docker().args([
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        busybox(),
        "ip",
        "link",
        "set",
        "lo",
        "down",
    ]));
    let events = policy_events(&cistern);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["message"], "would refuse (audit mode: forwarded)", "{e}");
    assert_eq!(e["rule"], "cap_add", "{e}");
    assert_eq!(e["field"], "HostConfig.CapAdd", "{e}");
    assert_eq!(e["policy"], "conservative", "{e}");
    assert_eq!(e["path"], "/v1.41/containers/create", "{e}");
    assert_eq!(e["audit"], true, "{e}");

    // Input cistern cannot read unambiguously is refused even in audit mode.
    let name = unique("policy-audit");
    let _cleanup = Cleanup::container(&name);
    let body = format!(
        r#"{{"Image":"{}","HostConfig":{{"Privileged":false,"privileged":true}}}}"#,
        busybox()
    );
    let (status, text) = raw_request(
        &cistern.socket,
        &format!("POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    )
    .unwrap();
    assert_eq!(status, 400, "{text}");
    assert_no_container(&name);
}

/// docker-py (and other SDKs) send every field with its default value; values
/// decide, not the presence of keys.
#[test]
fn docker_py_style_explicit_defaults_create_a_container() {
    let cistern = start("");
    let name = unique("policy-defaults");
    let _cleanup = Cleanup::container(&name);
    let body = format!(
        r#"{{"Image":"{}","Cmd":["true"],"HostConfig":{{"Privileged":false,"CapAdd":null,"Binds":[],"Devices":[],"SecurityOpt":null}}}}"#,
        busybox()
    );
    let (status, text) = raw_request(
        &cistern.socket,
        &format!("POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    )
    .unwrap();
    assert_eq!(status, 201, "{text}");
    assert_eq!(inspect(&name, "{{.HostConfig.Privileged}}"), "false");
    run_ok(cistern.docker().args(["start", "-a", &name]));
    assert!(policy_events(&cistern).is_empty());
}
