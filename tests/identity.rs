//! Identities over TLS, as the docker CLI sees them: a client certificate
//! names the tenant (mutual TLS), certificates from another CA or none at all
//! are refused at the handshake, bearer and basic credentials work over TLS,
//! and a non-root user's peer credentials make its own tenant. Against the
//! real daemon; every certificate is made here with rcgen.
//!
//! The root peer-credential tenant (`uid-0`) and bearer/basic on a unix
//! socket are in `tests/ownership.rs`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use support::{
    busybox, daemon, docker_cli_image, docker_direct, free_port, run, run_ok, unique, Cistern,
    Cleanup,
};

/// A CA made for one test run.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A leaf with this CN (or none) and these subject alternative names,
    /// written as `<file>.pem` and `<file>-key.pem` into `dir`.
    fn issue(
        &self,
        dir: &Path,
        file: &str,
        cn: Option<&str>,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(format!("{file}.pem"));
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const BEARER: &str = "tls-bearer-token";
const BASIC_USER: &str = "runner";
const BASIC_PASSWORD: &str = "tls-basic-password";

/// One cistern with two TLS listeners: `mtls` (client certificates from the
/// clients' CA name the tenant; `runner-1-<id>.example` is mapped to
/// `ci-runners-<id>`) and `tokens` (TLS without client certificates, bearer
/// and basic credentials).
struct Tls {
    cistern: Cistern,
    pki: tempfile::TempDir,
    id: String,
    server_ca: PathBuf,
    mtls_port: u16,
    tokens_port: u16,
    clients: Ca,
}

impl Tls {
    fn start() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let pki = tempfile::tempdir().unwrap();
        let id = unique("tls").replace("tls-", "");
        let server_ca = Ca::new("cistern test server CA");
        let clients = Ca::new("cistern test clients CA");
        let (cert, key) = server_ca.issue(
            pki.path(),
            "server",
            Some("cistern"),
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_ca = clients.write(pki.path(), "clients-ca");
        let (mtls_port, tokens_port) = (free_port(), free_port());
        let socket = dir.path().join("peer.sock");
        let config = format!(
            "instance: it-{id}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: peer\n    unix: {{path: {socket}, mode: \"0600\"}}\n  - name: mtls\n    tcp:\n      address: 127.0.0.1:{mtls_port}\n      tls: {{cert: {cert}, key: {key}, client_ca: {client_ca}}}\n    identity:\n      certificate:\n        map: {{runner-1-{id}.example: ci-runners-{id}}}\n  - name: tokens\n    tcp:\n      address: 127.0.0.1:{tokens_port}\n      tls: {{cert: {cert}, key: {key}}}\n    identity:\n      tokens:\n        - {{tenant: bearer-{id}, bearer_sha256: {bearer}}}\n        - {{tenant: basic-{id}, user: {BASIC_USER}, password_sha256: {password}}}\n",
            state = dir.path().join("state").display(),
            daemon = daemon().display(),
            socket = socket.display(),
            cert = cert.display(),
            key = key.display(),
            client_ca = client_ca.display(),
            bearer = sha256_hex(BEARER),
            password = sha256_hex(BASIC_PASSWORD),
        );
        let server_ca = server_ca.write(pki.path(), "server-ca");
        Tls {
            cistern: Cistern::start_with_config(dir, socket, &config),
            pki,
            id,
            server_ca,
            mtls_port,
            tokens_port,
            clients,
        }
    }

    /// The docker CLI over TLS to `port`, verifying cistern's certificate,
    /// with this client certificate (or none) and `Authorization` header
    /// (or none).
    fn docker(
        &self,
        port: u16,
        cert: Option<&(PathBuf, PathBuf)>,
        authorization: Option<&str>,
    ) -> Command {
        let config_dir = self.pki.path().join(unique("docker-config"));
        std::fs::create_dir(&config_dir).unwrap();
        let config = match authorization {
            Some(h) => serde_json::json!({ "HttpHeaders": { "Authorization": h } }),
            None => serde_json::json!({}),
        };
        std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &config_dir)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(&self.server_ca);
        if let Some((cert, key)) = cert {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        cmd.args(["-H", &format!("tcp://127.0.0.1:{port}")]);
        cmd
    }

    /// A client certificate from the clients' CA.
    fn client(&self, file: &str, cn: Option<&str>, sans: &[&str]) -> (PathBuf, PathBuf) {
        self.clients.issue(
            self.pki.path(),
            file,
            cn,
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

fn failure(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn label_on_daemon(kind: &str, name: &str) -> String {
    run_ok(docker_direct().args([
        kind,
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.cistern.tenant\"}}",
        name,
    ]))
    .trim()
    .to_string()
}

fn volume_label_on_daemon(name: &str) -> String {
    run_ok(docker_direct().args([
        "volume",
        "inspect",
        "--format",
        "{{index .Labels \"io.cistern.tenant\"}}",
        name,
    ]))
    .trim()
    .to_string()
}

/// Waits until cistern has logged `needle`: a refused handshake is logged
/// after the alert went out, so the client may see it first.
fn logged(cistern: &Cistern, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cistern.logs().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "cistern never logged {needle:?}:\n{}",
            cistern.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn exists_on_daemon(name: &str) -> bool {
    run(docker_direct().args(["container", "inspect", name]))
        .status
        .success()
}

#[test]
fn a_client_certificate_names_the_tenant_of_what_the_cli_runs() {
    let t = Tls::start();
    let alice = format!("alice-{}", t.id);
    let cert = t.client("alice", Some(&alice), &[]);
    let name = unique("tls-run");
    let _c = Cleanup::container(&name);
    let out = run_ok(t.docker(t.mtls_port, Some(&cert), None).args([
        "run",
        "--name",
        &name,
        busybox(),
        "echo",
        "hello over mTLS",
    ]));
    assert_eq!(out, "hello over mTLS\n");
    assert_eq!(label_on_daemon("container", &name), alice);
    // The access log names the certificate.
    logged(&t.cistern, &format!("tls client=\"{alice}\""));
}

#[test]
fn stdin_attach_works_over_tls() {
    let t = Tls::start();
    let cert = t.client("attach", Some(&format!("attach-{}", t.id)), &[]);
    let mut child = t
        .docker(t.mtls_port, Some(&cert), None)
        .args(["run", "-i", "--rm", busybox(), "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

/// Sends a container create over TLS with `rustls`, which (unlike Go's
/// client) presents its certificate whichever CAs the server names; returns
/// what came back, or the error.
fn create_with_rustls(t: &Tls, cert: &(PathBuf, PathBuf), name: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::Read;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&t.server_ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(&cert.0).unwrap()],
            PrivateKeyDer::from_pem_file(&cert.1).unwrap(),
        )
        .unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", t.mtls_port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = format!("{{\"Image\":\"{}\",\"Cmd\":[\"true\"]}}", busybox());
    let request = format!(
        "POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

#[test]
fn a_certificate_from_another_ca_or_none_is_refused_at_the_handshake() {
    let t = Tls::start();
    let rogue_ca = Ca::new("some other CA");
    let rogue = rogue_ca.issue(
        t.pki.path(),
        "rogue",
        Some(&format!("alice-{}", t.id)),
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let name = unique("tls-rogue");
    let _c = Cleanup::container(&name);

    // A client that presents the foreign certificate anyway.
    let answer = create_with_rustls(&t, &rogue, &name);
    assert!(
        answer
            .as_ref()
            .is_err_and(|e| e.contains("received fatal alert: UnknownCA")),
        "{answer:?}"
    );
    logged(&t.cistern, "invalid peer certificate: UnknownIssuer");
    assert!(!exists_on_daemon(&name), "a refused client created {name}");

    // The docker CLI only sends a certificate from a CA the server names
    // (the handshake lists the accepted CAs), so with the foreign one it
    // sends none: refused the same way as a client that has none.
    for cert in [Some(&rogue), None] {
        let err = failure(t.docker(t.mtls_port, cert, None).args([
            "create",
            "--name",
            &name,
            busybox(),
            "true",
        ]));
        assert!(
            err.contains("remote error: tls: certificate required"),
            "{err}"
        );
        assert!(!err.contains("Error response from daemon"), "{err}");
        assert!(!exists_on_daemon(&name), "a refused client created {name}");
    }
    logged(&t.cistern, "TLS handshake failed listener=mtls");

    // The right certificate over the same path creates it.
    let alice = t.client("alice", Some(&format!("alice-{}", t.id)), &[]);
    let answer = create_with_rustls(&t, &alice, &name).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(
        label_on_daemon("container", &name),
        format!("alice-{}", t.id)
    );
}

#[test]
fn two_certificates_are_two_tenants_that_cannot_see_each_other() {
    let t = Tls::start();
    let alice = t.client("alice", Some(&format!("alice-{}", t.id)), &[]);
    let bob = t.client("bob", Some(&format!("bob-{}", t.id)), &[]);
    let name = unique("tls-alice");
    let _c = Cleanup::container(&name);
    let id = run_ok(t.docker(t.mtls_port, Some(&alice), None).args([
        "create",
        "--name",
        &name,
        busybox(),
        "true",
    ]))
    .trim()
    .to_string();

    let listed =
        run_ok(
            t.docker(t.mtls_port, Some(&bob), None)
                .args(["ps", "-a", "-q", "--no-trunc"]),
        );
    assert!(!listed.contains(&id), "{listed}");
    for target in [name.as_str(), id.as_str(), &id[..12]] {
        let err =
            failure(
                t.docker(t.mtls_port, Some(&bob), None)
                    .args(["container", "inspect", target]),
            );
        assert!(
            err.contains(&format!("No such container: {target}")),
            "{err}"
        );
        let err = failure(t.docker(t.mtls_port, Some(&bob), None).args(["rm", target]));
        assert!(err.contains("No such container"), "{err}");
    }
    assert!(exists_on_daemon(&name));
    let listed =
        run_ok(
            t.docker(t.mtls_port, Some(&alice), None)
                .args(["ps", "-a", "-q", "--no-trunc"]),
        );
    assert!(listed.contains(&id), "{listed}");
}

/// A container created over mTLS that binds the Docker socket gets a socket
/// of its own as the certificate's tenant: inside, with no certificate at
/// all, it sees that tenant's containers and not another certificate's.
#[test]
fn a_docker_socket_bind_over_mtls_acts_as_the_certificates_tenant() {
    let t = Tls::start();
    let alice = t.client("alice", Some(&format!("alice-{}", t.id)), &[]);
    let bob = t.client("bob", Some(&format!("bob-{}", t.id)), &[]);
    let (bobs, job) = (unique("tls-bob-db"), unique("tls-sock-job"));
    let mut cleanup = Cleanup::default();
    cleanup.containers = vec![bobs.clone(), job.clone()];
    run_ok(t.docker(t.mtls_port, Some(&bob), None).args([
        "create",
        "--name",
        &bobs,
        busybox(),
        "true",
    ]));
    let out = run_ok(t.docker(t.mtls_port, Some(&alice), None).args([
        "run",
        "--rm",
        "--name",
        &job,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        docker_cli_image(),
        "docker",
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(out.trim(), job, "{}", t.cistern.logs());
}

#[test]
fn certificate_names_are_mapped_and_names_that_cannot_be_tenants_get_401() {
    let t = Tls::start();
    // No CN: the first DNS name, which the listener's map turns into a tenant.
    let runner = t.client(
        "runner",
        None,
        &[&format!("Runner-1-{}.Example", t.id), "other.example"],
    );
    let volume = unique("tls-mapped");
    let _v = Cleanup::volume_named(&volume);
    run_ok(
        t.docker(t.mtls_port, Some(&runner), None)
            .args(["volume", "create", &volume]),
    );
    assert_eq!(
        volume_label_on_daemon(&volume),
        format!("ci-runners-{}", t.id)
    );

    let jane = t.client("jane", Some("Jane Doe"), &[]);
    let err = failure(t.docker(t.mtls_port, Some(&jane), None).args(["ps"]));
    assert!(
        err.contains(
            "cistern: the client certificate's name \"Jane Doe\" is not a valid tenant name"
        ),
        "{err}"
    );
}

#[test]
fn bearer_and_basic_credentials_work_over_tls_and_wrong_ones_get_401() {
    let t = Tls::start();
    let basic = |password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{password}"))
        )
    };
    for (header, tenant) in [
        (format!("Bearer {BEARER}"), format!("bearer-{}", t.id)),
        (basic(BASIC_PASSWORD), format!("basic-{}", t.id)),
    ] {
        let volume = unique("tls-token");
        let _v = Cleanup::volume_named(&volume);
        run_ok(
            t.docker(t.tokens_port, None, Some(&header))
                .args(["volume", "create", &volume]),
        );
        assert_eq!(volume_label_on_daemon(&volume), tenant);
    }
    for header in ["Bearer wrong".to_string(), basic("wrong")] {
        let err = failure(t.docker(t.tokens_port, None, Some(&header)).args(["ps"]));
        assert!(
            err.contains("Error response from daemon: cistern: the credentials were not accepted"),
            "{err}"
        );
    }
    let err = failure(t.docker(t.tokens_port, None, None).args(["ps"]));
    assert!(
        err.contains("Error response from daemon: cistern: this listener needs credentials"),
        "{err}"
    );
    assert!(!t.cistern.logs().contains(BEARER));
}

/// Renewed certificate files are read on SIGHUP: new connections get the
/// new certificate. Files that are wrong are refused with a log line, and
/// the listener goes on with the ones it had.
#[test]
fn renewed_tls_files_are_read_on_sighup_and_bad_ones_keep_the_last_good() {
    let t = Tls::start();
    let bearer = format!("Bearer {BEARER}");
    let version = |t: &Tls| {
        t.docker(t.tokens_port, None, Some(&bearer))
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .unwrap()
    };
    assert!(version(&t).status.success());

    // The files are renewed under a new CA; until SIGHUP the old ones serve.
    let renewed = Ca::new("cistern renewed server CA");
    renewed.issue(
        t.pki.path(),
        "server",
        Some("cistern"),
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    assert!(version(&t).status.success(), "before SIGHUP");
    t.cistern.signal(nix::sys::signal::Signal::SIGHUP);
    logged(&t.cistern, "TLS files reloaded listener=tokens");
    let old_ca = String::from_utf8_lossy(&version(&t).stderr).into_owned();
    assert!(
        old_ca.contains("certificate signed by unknown authority"),
        "{old_ca}"
    );
    renewed.write(t.pki.path(), "server-ca");
    assert!(version(&t).status.success(), "the renewed certificate");

    // A broken key: logged, and the renewed certificate still serves.
    std::fs::write(t.pki.path().join("server-key.pem"), "not a key\n").unwrap();
    t.cistern.signal(nix::sys::signal::Signal::SIGHUP);
    logged(&t.cistern, "still serving the previous ones");
    assert!(
        t.cistern.logs().contains("holds no usable PEM private key"),
        "{}",
        t.cistern.logs()
    );
    let out = version(&t);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_non_root_users_peer_credentials_make_its_own_tenant() {
    // The socket must be reachable by `nobody`: its own directory, mode 0666.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let socket = dir.path().join("shared.sock");
    let config = format!(
        "state_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: shared\n    unix: {{path: {socket}, mode: \"0666\"}}\n",
        state = dir.path().join("state").display(),
        daemon = daemon().display(),
        socket = socket.display(),
    );
    let cistern = Cistern::start_with_config(dir, socket.clone(), &config);
    let nobody_config = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        nobody_config.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let name = unique("peer-nobody");
    let _c = Cleanup::container(&name);
    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "docker"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", nobody_config.path())
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT");
    run_ok(as_nobody.args(["create", "--name", &name, busybox(), "true"]));
    assert_eq!(label_on_daemon("container", &name), "uid-65534");
    // Root on the same socket is another tenant.
    let err = failure(cistern.docker().args(["container", "inspect", &name]));
    assert!(err.contains(&format!("No such container: {name}")), "{err}");
}

#[test]
fn check_config_reports_tls_files_it_cannot_use() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("check-config CA");
    let (cert, _) = ca.issue(
        pki.path(),
        "server",
        None,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (_, other_key) = ca.issue(
        pki.path(),
        "other",
        None,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let missing = pki.path().join("missing.pem");
    let file = pki.path().join("cistern.yaml");
    let check = |key: &Path| {
        std::fs::write(
            &file,
            format!(
                "listeners:\n  - tcp:\n      address: 127.0.0.1:2376\n      tls: {{cert: {}, key: {}}}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(
        check(&other_key),
        format!(
            "error: {}: listeners[0].tcp.tls.key: the key in {} does not belong to the certificate in {}\n",
            file.display(),
            other_key.display(),
            cert.display()
        )
    );
    assert!(
        check(&missing).starts_with(&format!(
            "error: {}: listeners[0].tcp.tls.key: cannot read {}: No such file or directory",
            file.display(),
            missing.display()
        )),
        "{}",
        check(&missing)
    );
}
