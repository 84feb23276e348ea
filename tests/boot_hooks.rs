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
use std::time::{Duration, Instant};

use debian::Debian;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

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

#[test]
fn boot2docker_hooks_put_cistern_in_front_of_dockerd_with_its_state_on_the_persistent_partition() {
    let daemon = support::daemon();
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

    // A network of its own: the bridge's gateway address that the VM gets
    // on its loopback below must not be its own route to this host.
    let network = support::unique("cistern-b2d");
    support::run_ok(support::docker_direct().args([
        "network",
        "create",
        "--label",
        support::TEST_LABEL,
        &network,
    ]));
    let mut cleanup = support::Cleanup::default();
    cleanup.networks.push(network.clone());
    let vm = Debian::start_with(&[
        "--network",
        &network,
        "--cap-add",
        "NET_ADMIN",
        "-v",
        &format!("{}:/var/lib/boot2docker", p.display()),
        "-v",
        &format!("{}:/var/run/cistern", run.path().display()),
        "-v",
        &format!("{}:/var/run/docker.sock", daemon.display()),
        "-v",
        "/bin/busybox:/bin/busybox:ro",
    ]);
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

    // The VM: busybox's applets first on PATH, the `docker` group, a
    // stand-in for the real dockerd that records how it is started (the
    // daemon itself is the real one, mounted in), and docker0's address
    // (the default bridge's gateway), where the caching proxy listens.
    let stand_in = pki.path().join("dockerd");
    std::fs::write(
        &stand_in,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" >/tmp/dockerd.args\nexec sleep 100000\n",
    )
    .unwrap();
    vm.copy_in(&stand_in, "/usr/local/bin/dockerd");
    vm.sh(&format!(
        "mkdir /bb && /bin/busybox --install -s /bb
         groupadd docker
         chmod 0755 /usr/local/bin/dockerd
         /bb/ip addr add {}/32 dev lo",
        support::bridge_address()
    ));
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
