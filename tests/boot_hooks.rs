//! The boot hooks in `packaging/`: boot2docker's `bootsync.sh` and
//! `bootlocal.sh` run by busybox's sh as boot2docker runs them, in a Debian
//! container standing in for the VM, with a host directory as the
//! persistent partition and the real daemon's socket mounted in; and the
//! cloud-init user data of `packaging/cloud-init` and
//! `packaging/docker-machine`.
//!
//! Needs `/bin/busybox` (busybox-static) and the docker CLI.

#[path = "support/debian.rs"]
mod debian;
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use debian::Debian;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap()
}

/// The TLS files of a Docker host as docker-machine makes them: a CA, a
/// server certificate for `address`, a client certificate with no name
/// (boot2docker's and docker-machine's name none), all in `dir`.
struct MachineTls {
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
    client: PathBuf,
    client_key: PathBuf,
}

impl MachineTls {
    fn new(dir: &Path, address: &str) -> MachineTls {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::OrganizationName, "machine CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let issue = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::OrganizationName, "machine");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            let (c, k) = (
                dir.join(format!("{file}.pem")),
                dir.join(format!("{file}-key.pem")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let (server, server_key) = issue(
            vec![address.to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        let (client, client_key) = issue(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        MachineTls {
            ca: ca_path,
            server,
            server_key,
            client,
            client_key,
        }
    }

    /// The docker CLI as docker-machine's client runs it against `address`.
    fn docker(&self, address: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("docker");
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CLI_HINTS", "false")
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(&self.ca)
            .arg("--tlscert")
            .arg(&self.client)
            .arg("--tlskey")
            .arg(&self.client_key)
            .args(["-H", &format!("tcp://{address}:2376")]);
        cmd
    }
}

fn ping(socket: &Path) -> bool {
    matches!(
        support::raw_request(
            socket,
            "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
        ),
        Ok((200, _))
    )
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: timed out\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A container standing in for a VM, with the real daemon's socket at
/// /var/run/docker.sock, busybox at /bin/busybox and these bind mounts. It has docker0's address (the
/// default bridge's gateway, where the caching proxy listens by default) on
/// its loopback, and so a network of its own, where that address is not its
/// route to this host. The container and then the network go when the
/// returned cleanup drops (whichever of the two drops first).
fn vm(image: &str, mounts: &[String]) -> (Debian, support::Cleanup) {
    let network = support::unique("cistern-vm");
    support::run_ok(support::docker_direct().args([
        "network",
        "create",
        "--label",
        support::TEST_LABEL,
        &network,
    ]));
    let mut cleanup = support::Cleanup::default();
    cleanup.networks.push(network.clone());
    let daemon = format!("{}:/var/run/docker.sock", support::daemon().display());
    let mut args = vec![
        "--network",
        &network,
        "--cap-add",
        "NET_ADMIN",
        "-v",
        &daemon,
        "-v",
        "/bin/busybox:/bin/busybox:ro",
    ];
    for m in mounts {
        args.extend(["-v", m.as_str()]);
    }
    let vm = Debian::start_image(image, &args);
    // A network with a container on it cannot be removed: the cleanup
    // removes the container first.
    cleanup.containers.push(vm.name.clone());
    vm.sh(&format!(
        "/bin/busybox ip addr add {}/32 dev lo",
        support::bridge_address()
    ));
    (vm, cleanup)
}

#[test]
fn boot2docker_hooks_put_cistern_in_front_of_dockerd_with_its_state_on_the_persistent_partition() {
    // The persistent partition (/var/lib/boot2docker on /mnt/sda1), and the
    // directory of cistern's local socket, both seen from here.
    let persistent = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let p = persistent.path();
    std::fs::create_dir_all(p.join("cistern")).unwrap();
    for (from, to) in [
        ("packaging/boot2docker/bootsync.sh", "bootsync.sh"),
        ("packaging/boot2docker/bootlocal.sh", "bootlocal.sh"),
        ("packaging/boot2docker/dockerd", "cistern/dockerd"),
        ("packaging/boot2docker/cistern.yaml", "cistern/cistern.yaml"),
    ] {
        std::fs::copy(Path::new(REPO).join(from), p.join(to)).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_cistern"), p.join("cistern/cistern")).unwrap();

    let mounts = [
        format!("{}:/var/lib/boot2docker", p.display()),
        format!("{}:/var/run/cistern", run.path().display()),
    ];
    let (vm, _network) = vm(&support::debian_image(&[]), &mounts);
    let address = vm.address();

    // What docker-machine leaves on the partition: its TLS files and a
    // profile that asks for the daemon on TCP port 2376.
    let pki = tempfile::tempdir().unwrap();
    let tls = MachineTls::new(pki.path(), &address);
    for (file, name) in [
        (&tls.ca, "ca.pem"),
        (&tls.server, "server.pem"),
        (&tls.server_key, "server-key.pem"),
    ] {
        std::fs::copy(file, p.join(name)).unwrap();
    }
    std::fs::write(
        p.join("profile"),
        "EXTRA_ARGS='\n--label provider=virtualbox\n'\nCACERT=/var/lib/boot2docker/ca.pem\n\
         DOCKER_HOST='-H tcp://0.0.0.0:2376'\nDOCKER_STORAGE=overlay2\nDOCKER_TLS=auto\n\
         SERVERKEY=/var/lib/boot2docker/server-key.pem\nSERVERCERT=/var/lib/boot2docker/server.pem\n",
    )
    .unwrap();

    // The VM: busybox's applets first on PATH, the `docker` group, and a
    // stand-in for the real dockerd that records how it is started (the
    // daemon itself is the real one, mounted in).
    let stand_in = pki.path().join("dockerd");
    std::fs::write(
        &stand_in,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" >/tmp/dockerd.args\nexec sleep 100000\n",
    )
    .unwrap();
    vm.copy_in(&stand_in, "/usr/local/bin/dockerd");
    vm.sh("mkdir /bb && /bin/busybox --install -s /bb
         groupadd docker
         chmod 0755 /usr/local/bin/dockerd");
    let boot = |script: &str| {
        vm.sh(&format!(
            "PATH=/bb:/usr/local/bin:/usr/bin:/bin; export PATH; {script}"
        ))
    };

    // boot2docker's boot: bootsync.sh, the daemon's start as its init script
    // does it with that profile, bootlocal.sh in the background.
    boot("busybox sh /var/lib/boot2docker/bootsync.sh");
    boot(
        "dockerd --data-root /var/lib/docker -H unix:// -H tcp://0.0.0.0:2376 --tlsverify \
         --tlscacert=/var/lib/boot2docker/ca.pem --tlskey=/var/lib/boot2docker/server-key.pem \
         --tlscert=/var/lib/boot2docker/server.pem --label provider=virtualbox \
         --pidfile /var/run/docker.pid >/dev/null 2>&1 &
         busybox sh /var/lib/boot2docker/bootlocal.sh",
    );
    let log = || std::fs::read_to_string(p.join("log/cistern.log")).unwrap_or_default();

    // The daemon serves only its unix socket, root's alone.
    wait_for(
        "dockerd's start",
        Duration::from_secs(10),
        || vm.exists("/tmp/dockerd.args"),
        log,
    );
    assert_eq!(
        vm.sh("cat /tmp/dockerd.args"),
        "--data-root\n/var/lib/docker\n-H\nunix://\n--label\nprovider=virtualbox\n\
         --pidfile\n/var/run/docker.pid\n--group\nroot"
    );
    assert!(vm.exists("/usr/local/bin/dockerd.real"));
    // The TLS files cistern serves are docker-machine's.
    assert_eq!(
        std::fs::read_link(p.join("cistern/tls/server.pem")).unwrap(),
        Path::new("/var/lib/boot2docker/server.pem")
    );

    // cistern answers on its local socket (group docker) ...
    let socket = run.path().join("docker.sock");
    wait_for(
        "cistern's socket",
        Duration::from_secs(30),
        || ping(&socket),
        log,
    );
    assert_eq!(vm.stat("/var/run/cistern/docker.sock"), "660 root:docker");
    // ... and on port 2376 to docker-machine's client certificate.
    let version =
        support::run_ok(
            tls.docker(&address)
                .args(["version", "--format", "{{.Server.Version}}"]),
        );
    assert!(!version.trim().is_empty());
    support::run_ok(tls.docker(&address).args(["ps", "-q"]));
    // The state and the cache are on the persistent partition.
    assert!(p.join("cistern/cache").is_dir());
    assert!(log().contains("caching proxy listening"), "{}", log());
    assert!(
        std::fs::read_dir(p.join("cistern/state")).unwrap().count() > 0,
        "nothing in the state directory:\n{}",
        log()
    );

    // docker-machine regenerates the TLS files (a new CA) and restarts the
    // daemon: the wrapper has cistern read them again, and the new client
    // certificate is let in.
    let pki2 = tempfile::tempdir().unwrap();
    let renewed = MachineTls::new(pki2.path(), &address);
    for (file, name) in [
        (&renewed.ca, "ca.pem"),
        (&renewed.server, "server.pem"),
        (&renewed.server_key, "server-key.pem"),
    ] {
        std::fs::copy(file, p.join(name)).unwrap();
    }
    assert!(!support::run(renewed.docker(&address).arg("version"))
        .status
        .success());
    boot("dockerd -H unix:// -H tcp://0.0.0.0:2376 --tlsverify >/dev/null 2>&1 &");
    wait_for(
        "the renewed TLS files",
        Duration::from_secs(15),
        || {
            support::run(renewed.docker(&address).arg("version"))
                .status
                .success()
        },
        log,
    );
    assert!(log().contains("TLS files reloaded"), "{}", log());

    // bootlocal.sh starts cistern again when it exits.
    let first = vm.sh("cat /var/run/cistern.pid");
    vm.sh(&format!("kill {first}"));
    wait_for(
        "cistern's restart",
        Duration::from_secs(30),
        || {
            let pid = vm.sh("cat /var/run/cistern.pid");
            pid != first && ping(&socket)
        },
        log,
    );
}

/// The .deb of the binary under test (`packaging/deb/build`), in `dir`.
fn deb(dir: &Path) -> PathBuf {
    let out = support::run_ok(
        std::process::Command::new(Path::new(REPO).join("packaging/deb/build"))
            .args(["--binary", env!("CARGO_BIN_EXE_cistern"), "--out"])
            .arg(dir),
    );
    PathBuf::from(out.trim())
}

/// The Debian image with Debian's cloud-init added (for `cloud-init
/// schema`), made by debootstrap on the host like the base image.
fn cloud_init_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| support::debian_image_with(&["cloud-init"], &[]))
        .clone()
}

/// A cloud-init user data file of the repository, parsed.
struct UserData {
    path: &'static str,
    yaml: serde_yaml::Value,
}

impl UserData {
    fn load(path: &'static str) -> UserData {
        let text = repo_file(path);
        assert!(text.starts_with("#cloud-config\n"), "{path}");
        UserData {
            path,
            yaml: serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }

    /// `write_files`: (path, content, permissions).
    fn files(&self) -> Vec<(String, String, String)> {
        self.yaml["write_files"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{}: no write_files", self.path))
            .iter()
            .map(|f| {
                let s = |k: &str| {
                    f[k].as_str()
                        .unwrap_or_else(|| panic!("{}: write_files: no {k} in {f:?}", self.path))
                        .to_string()
                };
                assert_eq!(s("owner"), "root:root");
                (s("path"), s("content"), s("permissions"))
            })
            .collect()
    }

    /// The one `runcmd` entry: cistern-setup and the .deb's URL.
    fn setup_command(&self) -> Vec<String> {
        let runcmd = self.yaml["runcmd"].as_sequence().unwrap();
        assert_eq!(runcmd.len(), 1, "{}", self.path);
        let cmd: Vec<String> = runcmd[0]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cmd[0], "/usr/local/sbin/cistern-setup");
        assert!(
            cmd[1].starts_with("https://") && cmd[1].ends_with(".deb"),
            "{cmd:?}"
        );
        cmd
    }

    /// Does on `vm` what cloud-init does with this user data, up to runcmd,
    /// which installs `deb` (the .deb the URL names) instead of downloading it.
    fn provision(&self, vm: &Debian, deb: &Path, scratch: &Path) {
        for (i, (path, content, mode)) in self.files().into_iter().enumerate() {
            let local = scratch.join(format!("file{i}"));
            std::fs::write(&local, content).unwrap();
            let dir = Path::new(&path).parent().unwrap().display().to_string();
            vm.sh(&format!("mkdir -p {dir}"));
            vm.copy_in(&local, &path);
            vm.sh(&format!("chown root:root {path} && chmod {mode} {path}"));
        }
        vm.copy_in(deb, "/tmp/cistern.deb");
        let cmd = self.setup_command();
        vm.sh(&format!("{} /tmp/cistern.deb", cmd[0]));
    }
}

#[test]
fn the_user_data_passes_cloud_init_schema_and_embeds_the_repository_files() {
    for (user_data, files) in [
        (
            "packaging/cloud-init/user-data.yaml",
            &[
                (
                    "/etc/cistern/cistern.yaml",
                    "packaging/cloud-init/cistern.yaml",
                ),
                (
                    "/usr/local/sbin/cistern-setup",
                    "packaging/cloud-init/cistern-setup",
                ),
            ][..],
        ),
        (
            "packaging/docker-machine/user-data.yaml",
            &[
                (
                    "/etc/cistern/cistern.yaml",
                    "packaging/docker-machine/cistern.yaml",
                ),
                (
                    "/etc/systemd/system/docker.service.d/90-cistern.conf",
                    "packaging/docker-machine/90-cistern.conf",
                ),
                (
                    "/etc/systemd/system/cistern.service.d/docker-machine.conf",
                    "packaging/docker-machine/cistern-service.conf",
                ),
                (
                    "/usr/local/sbin/cistern-setup",
                    "packaging/cloud-init/cistern-setup",
                ),
            ][..],
        ),
    ] {
        let parsed = UserData::load(user_data);
        let embedded = parsed.files();
        assert_eq!(
            embedded
                .iter()
                .map(|(p, _, _)| p.as_str())
                .collect::<Vec<_>>(),
            files.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        );
        for ((path, content, _), (_, repo)) in embedded.iter().zip(files) {
            assert_eq!(
                content,
                &repo_file(repo),
                "{user_data}: {path} is not {repo}: copy it in again"
            );
        }
        parsed.setup_command();

        let checker = Debian::start_image(&cloud_init_image(), &[]);
        checker.copy_in(&Path::new(REPO).join(user_data), "/tmp/user-data.yaml");
        let out = checker.sh("cloud-init schema --config-file /tmp/user-data.yaml 2>&1");
        assert!(out.contains("Valid cloud-config"), "{user_data}: {out}");
    }
}

#[test]
fn cloud_init_user_data_installs_cistern_and_keeps_its_configuration() {
    let scratch = tempfile::tempdir().unwrap();
    let deb = deb(scratch.path());
    let user_data = UserData::load("packaging/cloud-init/user-data.yaml");
    let vm = Debian::start();
    user_data.provision(&vm, &deb, scratch.path());
    assert!(vm
        .sh("dpkg-query -W -f='${db:Status-Status}' cistern")
        .starts_with("installed"));
    // The user data's configuration, not the package's, and valid here.
    assert_eq!(
        vm.sh("cat /etc/cistern/cistern.yaml"),
        repo_file("packaging/cloud-init/cistern.yaml").trim()
    );
    assert_eq!(vm.stat("/etc/cistern/cistern.yaml"), "600 root:root");
    vm.sh("cistern check-config /etc/cistern/cistern.yaml");
    assert!(vm.exists("/etc/systemd/system/multi-user.target.wants/cistern.service"));
}

#[test]
fn docker_machine_user_data_puts_cistern_on_port_2376_before_a_daemon_on_its_unix_socket_alone() {
    let scratch = tempfile::tempdir().unwrap();
    let deb = deb(scratch.path());
    let user_data = UserData::load("packaging/docker-machine/user-data.yaml");
    let (vm, _network) = vm(&support::debian_image(&[]), &[]);
    let address = vm.address();
    user_data.provision(&vm, &deb, scratch.path());

    // dockerd as the drop-ins start it: on its unix socket only, root's.
    let dropin = vm.sh("cat /etc/systemd/system/docker.service.d/90-cistern.conf");
    let exec: Vec<&str> = dropin
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [
            "ExecStart=",
            "ExecStart=/usr/bin/dockerd -H unix:///var/run/docker.sock --group root"
        ]
    );

    // docker-machine installs its TLS files, then (re)starts the daemon, and
    // so cistern; here cistern starts as its unit starts it.
    let pki = tempfile::tempdir().unwrap();
    let tls = MachineTls::new(pki.path(), &address);
    vm.sh("mkdir -p /etc/docker");
    for (file, name) in [
        (&tls.ca, "ca.pem"),
        (&tls.server, "server.pem"),
        (&tls.server_key, "server-key.pem"),
    ] {
        vm.copy_in(file, &format!("/etc/docker/{name}"));
    }
    vm.sh("cistern check-config /etc/cistern/cistern.yaml");
    vm.sh("cistern serve --config /etc/cistern/cistern.yaml >/var/log/cistern.log 2>&1 &");
    let log = || vm.sh("cat /var/log/cistern.log");
    wait_for(
        "cistern on port 2376",
        Duration::from_secs(30),
        || {
            support::run(
                tls.docker(&address)
                    .args(["version", "--format", "{{.Server.Version}}"]),
            )
            .status
            .success()
        },
        log,
    );
    support::run_ok(tls.docker(&address).args(["ps", "-q"]));
    assert!(log().contains("caching proxy listening"), "{}", log());
    assert!(vm.exists("/var/cache/cistern"));
}

/// Runs `systemd-analyze verify` on `unit` in `dir` (with its drop-ins in
/// `<unit>.d/`); what it printed.
fn verify(dir: &Path, unit: &str) -> String {
    let out = support::run(
        std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.join(unit)),
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_analyze_verify_accepts_the_docker_machine_drop_ins() {
    // The drop-ins beside the units they change: cistern's (its ExecStart
    // pointed at the binary under test) and a docker.service as Docker's
    // packages have it, whose dockerd (not on every host) is /bin/true.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cistern.service.d")).unwrap();
    std::fs::create_dir_all(d.join("docker.service.d")).unwrap();
    std::fs::write(
        d.join("cistern.service"),
        repo_file("packaging/systemd/cistern.service").replace(
            "ExecStart=/usr/bin/cistern ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_cistern")),
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("cistern.service.d/docker-machine.conf"),
        repo_file("packaging/docker-machine/cistern-service.conf"),
    )
    .unwrap();
    std::fs::write(
        d.join("docker.service"),
        "[Unit]\nDescription=Docker\n\n[Service]\nType=notify\nExecStart=/bin/true -H fd://\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let dropin = repo_file("packaging/docker-machine/90-cistern.conf");
    assert!(dropin.contains("ExecStart=/usr/bin/dockerd "));
    std::fs::write(
        d.join("docker.service.d/90-cistern.conf"),
        dropin.replace("ExecStart=/usr/bin/dockerd ", "ExecStart=/bin/true "),
    )
    .unwrap();
    for unit in ["cistern.service", "docker.service"] {
        let printed = verify(d, unit);
        assert!(printed.is_empty(), "{unit}:\n{printed}");
    }
    // So that the silence means something: a misspelt key is reported.
    std::fs::write(
        d.join("cistern.service.d/docker-machine.conf"),
        repo_file("packaging/docker-machine/cistern-service.conf")
            .replace("RestartSec=", "RestartSecs="),
    )
    .unwrap();
    assert!(verify(d, "cistern.service").contains("RestartSecs"));
}
