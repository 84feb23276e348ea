//! Injection of cache routing and trust into containers, against the real
//! daemon: extra hosts, environment, the CA in the trust stores of Debian-,
//! RHEL-layout and bundle-less images, the image left untouched, failures
//! (read-only root filesystem) under `skip` and `refuse`, the switches, builds,
//! no key material in containers, and a TLS-verifying curl inside a container
//! across CA rotations and a cistern restart.
//!
//! The TLS origin here stands in for the caching proxy: it listens on the
//! docker bridge gateway and signs, for every handshake, a leaf for the SNI
//! name with the **oldest CA still valid** in cistern's state directory (what
//! the caching proxy does while the cached domains stay the same), so these
//! tests do not depend on the proxy. The tests of `caching.domains` changing
//! between restarts (last section) go through the real caching proxy to a
//! local HTTPS origin.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use support::*;

/// Cached domains (placeholders only).
const PKGS: &str = "pkgs.example";
const REPO: &str = "repo.example.test";
const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const RHEL_LINK: &str = "/etc/pki/tls/certs/ca-bundle.crt";
const RHEL_BUNDLE: &str = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem";
const CA_PEM: &str = "/etc/cistern/ca.pem";

const DEBIAN_IMAGE: &str = "cistern-test/inject-debian:latest";
const RHEL_IMAGE: &str = "cistern-test/inject-rhel:latest";
const CURL_IMAGE: &str = "cistern-test/inject-curl:latest";

// ---------------------------------------------------------------------------
// cistern with a `caching:` section

/// A cistern with caching configured; the state directory outlives restarts.
struct Caching {
    cistern: Option<Cistern>,
    /// Holds the state dir, the socket and the config.
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: String,
    /// `NAME=VALUE` entries of cistern's environment.
    env: Vec<String>,
}

impl Caching {
    /// `inject` and `ca` are YAML flow mappings for `caching.inject` and
    /// `caching.ca`; `listeners` are extra listener entries (YAML lines).
    fn start(inject: &str, ca: &str, extra_listeners: &str) -> Caching {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let state = dir.path().join("state");
        let config = format!(
            "upstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix:\n      path: {sock}\n      mode: \"0600\"\n{extra_listeners}\
             caching:\n  domains: [{PKGS}, {REPO}]\n  discover: {{host: false}}\n  state_dir: {state}\n  cache_dir: {cache}\n  \
             proxy: {{http: \"127.0.0.1:{http}\", https: \"127.0.0.1:{https}\"}}\n  inject: {inject}\n  ca: {ca}\n",
            daemon = daemon().display(),
            sock = socket.display(),
            state = state.display(),
            cache = dir.path().join("cache").display(),
            http = free_port(),
            https = free_port(),
        );
        let mut caching = Caching {
            cistern: None,
            dir,
            socket,
            config,
            env: Vec::new(),
        };
        caching.restart();
        caching
    }

    /// Starts cistern (again) on the same configuration and state directory.
    fn restart(&mut self) {
        self.cistern = None; // kills the previous process
        let run_dir = tempfile::tempdir().unwrap();
        let mut wrapper = vec!["env"];
        wrapper.extend(self.env.iter().map(String::as_str));
        self.cistern = Some(Cistern::start_under(
            &wrapper,
            run_dir,
            self.socket.clone(),
            &self.config,
        ));
    }

    fn cistern(&self) -> &Cistern {
        self.cistern.as_ref().unwrap()
    }

    fn docker(&self) -> Command {
        self.cistern().docker()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state").join("ca")
    }

    fn logs(&self) -> String {
        self.cistern().logs()
    }
}

/// The `Config.Labels`, `Config.Env` and `HostConfig.ExtraHosts` of a
/// container, through `docker inspect`.
fn inspect(docker: Command, name: &str) -> serde_json::Value {
    let mut docker = docker;
    let out = run_ok(docker.args(["inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The CA PEMs of the ids in a container's `cistern.ca` label, from the state dir.
fn label_pems(state: &Path, container: &serde_json::Value) -> Vec<String> {
    let label = container["Config"]["Labels"]["cistern.ca"]
        .as_str()
        .expect("cistern.ca label")
        .to_string();
    label
        .split(',')
        .map(|id| std::fs::read_to_string(state.join(format!("{id}.crt.pem"))).unwrap())
        .collect()
}

/// The default bridge's gateway: from its IPAM config, else (Debian's
/// dockerd 20.10 reports none there) the IPv4 address of its interface.
fn gateway() -> IpAddr {
    IpAddr::V4(bridge_address())
}

// ---------------------------------------------------------------------------
// Test images, built locally on the daemon

/// A self-signed certificate standing for the image's own trust content.
fn original_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["original.example".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    })
}

fn build_image(tag: &str, dockerfile: &str, files: &[(&str, &[u8])]) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = ctx.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    support::build_tagged(tag, ctx.path());
}

/// Debian layout: `/etc/ssl/certs/ca-certificates.crt` holding one PEM.
fn debian_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        build_image(
            DEBIAN_IMAGE,
            &format!(
                "FROM {}\nCOPY bundle.crt {DEBIAN_BUNDLE}\nRUN chmod 0644 {DEBIAN_BUNDLE}\n",
                busybox()
            ),
            &[("bundle.crt", original_pem().as_bytes())],
        );
    });
    DEBIAN_IMAGE
}

/// RHEL layout: the bundle under `/etc/pki/ca-trust/extracted`, reached by
/// the `/etc/pki/tls/certs/ca-bundle.crt` link (relative here, to make the
/// daemon resolve it) and a `/etc/ssl/certs` directory link.
fn rhel_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        build_image(
            RHEL_IMAGE,
            &format!(
                "FROM {}\nCOPY bundle.crt {RHEL_BUNDLE}\n\
                 RUN chmod 0444 {RHEL_BUNDLE} && mkdir -p /etc/pki/tls/certs /etc/ssl \
                 && ln -s ../../ca-trust/extracted/pem/tls-ca-bundle.pem {RHEL_LINK} \
                 && ln -s ../pki/tls/certs /etc/ssl/certs\n",
                busybox()
            ),
            &[("bundle.crt", original_pem().as_bytes())],
        );
    });
    RHEL_IMAGE
}

/// The Debian-layout image plus the host's curl, its libraries and the
/// dynamic loader at their paths, and `hosts: files dns`.
fn curl_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let ldd = run_ok(Command::new("ldd").arg("/usr/bin/curl"));
        let mut paths = vec!["/usr/bin/curl".to_string()];
        for line in ldd.lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
                None => line.split_whitespace().next().unwrap_or(""),
            };
            if path.starts_with('/') {
                paths.push(path.to_string());
            }
        }
        let contents: Vec<(String, Vec<u8>)> = paths
            .iter()
            .map(|p| (format!("root{p}"), std::fs::read(p).unwrap()))
            .collect();
        let mut files: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        files.push(("root/etc/nsswitch.conf", b"hosts: files dns\n"));
        build_image(
            CURL_IMAGE,
            &format!("FROM {}\nCOPY root/ /\n", debian_image()),
            &files,
        );
    });
    CURL_IMAGE
}

// ---------------------------------------------------------------------------
// A TLS origin signing with the oldest valid CA of cistern's state directory

/// A CA generation read from the state directory.
struct StoredCa {
    id: String,
    cert_pem: String,
    key_pem: String,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

fn stored_cas(state: &Path) -> Vec<StoredCa> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(state) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".crt.pem") else {
            continue;
        };
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(entry.path()),
            std::fs::read_to_string(state.join(format!("{id}.key.pem"))),
        ) else {
            continue; // being rotated or removed right now
        };
        let Ok(params) = CertificateParams::from_ca_cert_pem(&cert_pem) else {
            continue;
        };
        out.push(StoredCa {
            id: id.to_string(),
            not_before: params.not_before,
            not_after: params.not_after,
            cert_pem,
            key_pem,
        });
    }
    out.sort_by_key(|c| c.not_after);
    out
}

/// The oldest CA valid now and for at least another second (so it does not
/// expire between this handshake and the client's check); else the oldest
/// valid one.
fn oldest_valid(state: &Path) -> Option<StoredCa> {
    let now = time::OffsetDateTime::now_utc();
    let valid: Vec<StoredCa> = stored_cas(state)
        .into_iter()
        .filter(|c| c.not_before <= now && now < c.not_after)
        .collect();
    let margin = now + time::Duration::seconds(1);
    let pick = valid.iter().position(|c| c.not_after > margin).unwrap_or(0);
    valid.into_iter().nth(pick)
}

/// A leaf for `host` signed by hand with the CA's key (as `ca/tests/verify.rs`
/// does), so names outside the constraints can be signed too.
fn hand_made_leaf(ca: &StoredCa, host: &str) -> CertifiedKey {
    let ca_key = KeyPair::from_pem(&ca.key_pem).unwrap();
    let issuer = CertificateParams::from_ca_cert_pem(&ca.cert_pem)
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.not_before = ca.not_before;
    params.not_after = ca.not_after;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer, &ca_key).unwrap();
    let ca_der: CertificateDer<'static> = rustls_pemfile::certs(&mut ca.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
    ))
    .unwrap();
    CertifiedKey::new(vec![leaf.der().clone(), ca_der], key)
}

#[derive(Debug)]
struct OldestValidCa {
    state: PathBuf,
    /// CA ids signed with, in order.
    used: Arc<Mutex<Vec<String>>>,
}

impl ResolvesServerCert for OldestValidCa {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name()?.to_string();
        let ca = oldest_valid(&self.state)?;
        self.used.lock().unwrap().push(ca.id.clone());
        Some(Arc::new(hand_made_leaf(&ca, &host)))
    }
}

/// An HTTPS origin answering `ok <sni>` to any request.
struct Origin {
    addr: SocketAddr,
    used: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    fn start(ip: IpAddr, state: PathBuf) -> Origin {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let used = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(OldestValidCa {
                    state,
                    used: used.clone(),
                })),
        );
        let stop_flag = stop.clone();
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let config = config.clone();
                        std::thread::spawn(move || serve_one(config, stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Origin { addr, used, stop }
    }

    fn used(&self) -> Vec<String> {
        self.used.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(config: Arc<rustls::ServerConfig>, stream: std::net::TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let sni = tls.conn.server_name().unwrap_or("").to_string();
    let body = format!("ok {sni}\n");
    let _ = write!(
        tls,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn debian_layout_gets_hosts_env_label_and_the_ca_appended_to_its_bundle() {
    let image = debian_image();
    let c = Caching::start("{}", "{}", "");
    let name = unique("inject-debian");
    let _cleanup = Cleanup::container(&name);
    run_ok(c.docker().args([
        "create",
        "--name",
        &name,
        "--add-host",
        &format!("{PKGS}:10.9.9.9"),
        "--add-host",
        "other.example:10.8.8.8",
        image,
        "sleep",
        "60",
    ]));

    let v = inspect(c.docker(), &name);
    let hosts = strings(&v["HostConfig"]["ExtraHosts"]);
    assert!(hosts.contains(&format!("{PKGS}:10.9.9.9")), "{hosts:?}");
    assert!(
        hosts.contains(&"other.example:10.8.8.8".to_string()),
        "{hosts:?}"
    );
    assert!(hosts.contains(&format!("{REPO}:host-gateway")), "{hosts:?}");
    assert!(
        !hosts.contains(&format!("{PKGS}:host-gateway")),
        "the client's entry for a cached name wins: {hosts:?}"
    );
    let env = strings(&v["Config"]["Env"]);
    assert!(
        env.contains(&format!("NODE_EXTRA_CA_CERTS={CA_PEM}")),
        "{env:?}"
    );
    let pems = label_pems(&c.state(), &v);
    assert!(!pems.is_empty());

    run_ok(c.docker().args(["start", &name]));
    let exec = |cmd: &[&str]| run_ok(c.docker().args(["exec", &name]).args(cmd));
    let bundle = exec(&["cat", DEBIAN_BUNDLE]);
    assert!(
        bundle.starts_with(original_pem()),
        "original content first:\n{bundle}"
    );
    assert!(
        bundle.trim_end().ends_with(pems.last().unwrap().trim_end()),
        "ends with the CA PEMs:\n{bundle}"
    );
    for pem in &pems {
        assert!(bundle.contains(pem.trim()), "{bundle}");
    }
    let standalone = exec(&["cat", CA_PEM]);
    for pem in &pems {
        assert!(standalone.contains(pem.trim()), "{standalone}");
    }
    let etc_hosts = exec(&["cat", "/etc/hosts"]);
    let gw = gateway().to_string();
    assert!(
        etc_hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [gw.as_str(), REPO]),
        "host-gateway resolved to {gw}:\n{etc_hosts}"
    );
    assert!(
        etc_hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["10.9.9.9", PKGS]),
        "{etc_hosts}"
    );
    assert!(exec(&["env"]).contains(&format!("NODE_EXTRA_CA_CERTS={CA_PEM}")));

    // The image itself is unchanged: a container made on the daemon directly
    // sees the original bundle and no standalone PEM.
    let direct = run_ok(docker_direct().args([
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        &format!("cat {DEBIAN_BUNDLE}; test -e {CA_PEM} && echo PRESENT; true"),
    ]));
    assert_eq!(direct, original_pem());
    assert!(c.logs().contains("cache CA installed in container"));
}

#[test]
fn rhel_layout_gets_the_ca_appended_to_the_link_target_and_the_link_kept() {
    let image = rhel_image();
    let c = Caching::start("{}", "{}", "");
    let name = unique("inject-rhel");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        c.docker()
            .args(["create", "--name", &name, image, "sleep", "60"]),
    );
    let v = inspect(c.docker(), &name);
    let pems = label_pems(&c.state(), &v);
    run_ok(c.docker().args(["start", &name]));
    let exec = |cmd: &str| run_ok(c.docker().args(["exec", &name, "sh", "-c", cmd]));

    assert_eq!(
        exec(&format!("readlink {RHEL_LINK}")).trim(),
        "../../ca-trust/extracted/pem/tls-ca-bundle.pem",
        "the link is still a link"
    );
    let bundle = exec(&format!("cat {RHEL_BUNDLE}"));
    assert!(bundle.starts_with(original_pem()), "{bundle}");
    assert!(bundle.trim_end().ends_with(pems.last().unwrap().trim_end()));
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        1 + pems.len(),
        "appended once, though two bundle paths lead to it:\n{bundle}"
    );
    assert_eq!(exec(&format!("cat {RHEL_LINK}")), bundle);
    // Permissions of the bundle are kept.
    assert!(exec(&format!("ls -l {RHEL_BUNDLE}")).starts_with("-r--r--r--"));
    assert!(exec(&format!("cat {CA_PEM}")).contains(pems[0].trim()));
    // No Debian bundle appeared through the /etc/ssl/certs link.
    assert_eq!(
        exec(&format!("test -e {DEBIAN_BUNDLE} && echo yes || echo no")).trim(),
        "no"
    );
    let direct = run_ok(docker_direct().args(["run", "--rm", image, "cat", RHEL_LINK]));
    assert_eq!(direct, original_pem(), "the image is unchanged");
}

#[test]
fn image_without_a_bundle_gets_only_the_standalone_pem_and_env() {
    let image = busybox();
    let c = Caching::start("{}", "{}", "");
    let out = run_ok(c.docker().args([
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        &format!(
            "echo env=$NODE_EXTRA_CA_CERTS; grep -c 'BEGIN CERTIFICATE' {CA_PEM}; \
             for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem /etc/ssl/ca-bundle.pem; do test -e $f && echo UNEXPECTED $f; done; true"
        ),
    ]));
    assert!(out.contains(&format!("env={CA_PEM}")), "{out}");
    assert!(out.lines().any(|l| l.trim() == "1"), "one CA: {out}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
}

#[test]
fn read_only_rootfs_under_skip_is_created_again_without_any_injection() {
    let image = debian_image();
    let c = Caching::start("{on_failure: skip}", "{}", "");
    let name = unique("inject-ro-skip");
    let tag = unique("ro-skip");
    let _cleanup = Cleanup::container(&name);
    let out = run_ok(c.docker().args([
        "run",
        "--name",
        &name,
        "--label",
        &format!("{TEST_LABEL}={tag}"),
        "--read-only",
        image,
        "sh",
        "-c",
        &format!("env; cat /etc/hosts; test -e {CA_PEM} && echo PEM-PRESENT; cat {DEBIAN_BUNDLE}"),
    ]));
    assert!(!out.contains("NODE_EXTRA_CA_CERTS"), "{out}");
    assert!(!out.contains(REPO) && !out.contains(PKGS), "{out}");
    assert!(!out.contains("PEM-PRESENT"), "{out}");
    assert!(out.trim_end().ends_with(original_pem().trim_end()), "{out}");
    let v = inspect(c.docker(), &name);
    assert!(v["Config"]["Labels"]["cistern.ca"].is_null(), "{v}");
    assert!(strings(&v["HostConfig"]["ExtraHosts"]).is_empty());
    // Exactly one container: the first, injected one was removed.
    let ids = run_ok(docker_direct().args([
        "ps",
        "-aq",
        "--filter",
        &format!("label={TEST_LABEL}={tag}"),
    ]));
    assert_eq!(ids.lines().count(), 1, "{ids}");
    assert!(
        c.logs().contains("created again without caching injection"),
        "{}",
        c.logs()
    );
}

#[test]
fn read_only_rootfs_under_refuse_is_refused_and_leaves_nothing() {
    let image = debian_image();
    let c = Caching::start("{on_failure: refuse}", "{}", "");
    let name = unique("inject-ro-refuse");
    let tag = unique("ro-refuse");
    let _cleanup = Cleanup::container(&name);
    let out = run(c.docker().args([
        "create",
        "--name",
        &name,
        "--label",
        &format!("{TEST_LABEL}={tag}"),
        "--read-only",
        image,
        "true",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cistern: could not install the cache CA into the container"),
        "{stderr}"
    );
    let ids = run_ok(docker_direct().args([
        "ps",
        "-aq",
        "--filter",
        &format!("label={TEST_LABEL}={tag}"),
    ]));
    assert_eq!(ids.trim(), "", "nothing left on the daemon");
    // The name is free again.
    run_ok(c.docker().args(["create", "--name", &name, image, "true"]));
}

#[test]
fn listener_and_image_switches_turn_injection_off() {
    let debian = debian_image();
    let plain = busybox();
    let dir = tempfile::tempdir().unwrap();
    let off_socket = dir.path().join("off.sock");
    let c = Caching::start(
        "{skip_images: [\"cistern-test/busy*\"]}",
        "{}",
        &format!(
            "  - name: off\n    caching_inject: false\n    unix:\n      path: {}\n      mode: \"0600\"\n",
            off_socket.display()
        ),
    );
    let probe = format!("echo env=$NODE_EXTRA_CA_CERTS; test -e {CA_PEM} && echo PEM; true");
    let on = run_ok(c.docker().args(["run", "--rm", debian, "sh", "-c", &probe]));
    assert!(
        on.contains(&format!("env={CA_PEM}")) && on.contains("PEM"),
        "{on}"
    );
    let skipped = run_ok(c.docker().args(["run", "--rm", plain, "sh", "-c", &probe]));
    assert_eq!(skipped.trim(), "env=", "image pattern: {skipped}");
    let off = run_ok(docker_at(&off_socket).args(["run", "--rm", debian, "sh", "-c", &probe]));
    assert_eq!(off.trim(), "env=", "listener switch: {off}");
}

#[test]
fn build_containers_get_extra_hosts_and_the_client_entry_wins() {
    let c = Caching::start("{builds: true}", "{}", "");
    let tag = format!("cistern-test/{}:latest", unique("inject-build"));
    let _cleanup = Cleanup::image(&tag);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN cat /etc/hosts > /hosts.txt\n", busybox()),
    )
    .unwrap();
    run_ok(
        c.docker()
            .env("DOCKER_BUILDKIT", "0")
            .args([
                "build",
                "-q",
                "--add-host",
                &format!("{PKGS}:10.9.9.9"),
                "-t",
                &tag,
            ])
            .arg(ctx.path()),
    );
    let hosts = run_ok(docker_direct().args(["run", "--rm", &tag, "cat", "/hosts.txt"]));
    let gw = gateway().to_string();
    let lines: Vec<Vec<&str>> = hosts
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.contains(&vec!["10.9.9.9", PKGS]), "{hosts}");
    assert!(lines.contains(&vec![gw.as_str(), REPO]), "{hosts}");
    assert!(!lines.contains(&vec![gw.as_str(), PKGS]), "{hosts}");
}

#[test]
fn builds_get_no_cache_routing_unless_switched_on() {
    // Build containers cannot be given the CA: routing them to the proxy by
    // default would break HTTPS downloads in Dockerfiles.
    let c = Caching::start("{}", "{}", "");
    let tag = format!("cistern-test/{}:latest", unique("inject-nobuild"));
    let _cleanup = Cleanup::image(&tag);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN cat /etc/hosts > /hosts.txt\n", busybox()),
    )
    .unwrap();
    run_ok(
        c.docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag])
            .arg(ctx.path()),
    );
    let hosts = run_ok(docker_direct().args(["run", "--rm", &tag, "cat", "/hosts.txt"]));
    assert!(!hosts.contains(REPO), "{hosts}");
    assert!(!hosts.contains(PKGS), "{hosts}");
}

#[test]
fn no_private_key_enters_a_container_and_key_files_are_0600() {
    let image = rhel_image();
    let c = Caching::start("{}", "{}", "");
    let name = unique("inject-keys");
    let _cleanup = Cleanup::container(&name);
    run_ok(c.docker().args(["create", "--name", &name, image, "true"]));
    // The whole filesystem of the container, as `docker export` streams it.
    let mut export = docker_direct()
        .args(["export", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut archive = tar::Archive::new(export.stdout.take().unwrap());
    let mut files = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files += 1;
        assert!(
            !content.windows(11).any(|w| w == b"PRIVATE KEY"),
            "key material in the container at {path}"
        );
    }
    assert!(export.wait().unwrap().success());
    assert!(files > 10, "exported {files} entries");

    let state = c.state();
    let mut keys = 0;
    for entry in std::fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        if entry.file_name().to_string_lossy().ends_with(".key.pem") {
            keys += 1;
            assert_eq!(mode, 0o600, "{:?}", entry.path());
        }
    }
    assert!(keys >= 1);
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

/// `curl` in a container, exit code and output.
fn curl_in(docker: &mut Command, image: &str, args: &[&str], url: &str) -> (bool, String) {
    let out = run(docker.args(["run", "--rm"]).args(args).args([
        image,
        "/usr/bin/curl",
        "-sS",
        "--max-time",
        "10",
        url,
    ]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn curl_in_a_container_verifies_the_cached_domain_and_refuses_names_outside_the_constraints() {
    let image = curl_image();
    let c = Caching::start("{}", "{}", "");
    let gw = gateway();
    let origin = Origin::start(gw, c.state());
    let port = origin.addr.port();

    // Through cistern: the extra host routes the name, the injected CA verifies.
    let url = format!("https://{REPO}:{port}/");
    let (ok, out) = curl_in(&mut c.docker(), image, &[], &url);
    assert!(ok, "verified fetch failed: {out}");
    assert_eq!(out.trim(), format!("ok {REPO}"));

    // A leaf for a name outside the CA's name constraints, signed by the same
    // CA key: the same client refuses it.
    let evil = format!("evil.test:{gw}");
    let (ok, out) = curl_in(
        &mut c.docker(),
        image,
        &["--add-host", &evil],
        &format!("https://evil.test:{port}/"),
    );
    assert!(!ok, "a leaf outside the constraints was accepted: {out}");
    assert!(out.contains("permitted subtree violation"), "{out}");

    // Control: without cistern the same image does not trust the origin.
    let direct_host = format!("{REPO}:{gw}");
    let (ok, out) = curl_in(
        &mut docker_direct(),
        image,
        &["--add-host", &direct_host],
        &url,
    );
    assert!(!ok, "trusted without injection: {out}");
    assert!(out.contains("certificate"), "{out}");
}

#[test]
fn a_container_keeps_fetching_across_rotations_and_a_cistern_restart() {
    // Each CA lives 12 s, jobs at most 8 s (margin 1.2 s): a new CA every
    // ~2.8 s, the oldest valid one changing as often.
    let image = curl_image();
    let mut c = Caching::start("{}", "{lifetime: 12s, max_job_duration: 8s}", "");
    let state = c.state();
    let first: BTreeSet<String> = stored_cas(&state).into_iter().map(|ca| ca.id).collect();
    let gw = gateway();
    let origin = Origin::start(gw, state.clone());
    let port = origin.addr.port();

    // Let the first CA expire, so the container is handed several.
    std::thread::sleep(Duration::from_secs(13));
    let name = unique("inject-rotation");
    let _cleanup = Cleanup::container(&name);
    let url = format!("https://{REPO}:{port}/");
    let script = format!(
        "i=0; while [ $i -lt 12 ]; do /usr/bin/curl -sS --max-time 3 {url} >/dev/null && echo FETCH-OK || echo FETCH-FAIL; i=$((i+1)); sleep 0.5; done"
    );
    run_ok(
        c.docker()
            .args(["run", "-d", "--name", &name, image, "sh", "-c", &script]),
    );
    let v = inspect(c.docker(), &name);
    let given = v["Config"]["Labels"]["cistern.ca"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        given.split(',').count() >= 2,
        "several CAs handed out: {given}"
    );

    // Expired keys are gone from disk.
    let now: BTreeSet<String> = stored_cas(&state).into_iter().map(|ca| ca.id).collect();
    for id in &first {
        assert!(!now.contains(id), "expired CA {id} still on disk");
        assert!(!state.join(format!("{id}.key.pem")).exists());
    }

    // Restart cistern mid-job.
    std::thread::sleep(Duration::from_secs(2));
    c.restart();
    let code = run_ok(c.docker().args(["wait", &name]));
    assert_eq!(code.trim(), "0");
    let logs = run_ok(c.docker().args(["logs", &name]));
    assert_eq!(logs.matches("FETCH-OK").count(), 12, "{logs}");
    assert!(!logs.contains("FETCH-FAIL"), "{logs}");

    // The origin signed with more than one CA during the job, each one the
    // container was given.
    let used: BTreeSet<String> = origin.used().into_iter().collect();
    assert!(used.len() >= 2, "signers: {used:?}");
    for id in &used {
        assert!(given.split(',').any(|g| g == id), "{id} not in {given}");
    }

    // A container created after the restart works too.
    let (ok, out) = curl_in(&mut c.docker(), image, &[], &url);
    assert!(ok, "{out}");
}

#[test]
fn a_bundle_on_a_volume_is_left_alone() {
    let image = debian_image();
    let c = Caching::start("{}", "{}", "");
    let volume = unique("inject-vol");
    let mut cleanup = Cleanup::default();
    cleanup.volumes.push(volume.clone());
    // A new named volume is filled from the image, so the bundle is there, but
    // on the volume: a write would not land in the container's own layer.
    let out = run_ok(c.docker().args([
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/etc/ssl/certs"),
        image,
        "sh",
        "-c",
        &format!("cat {DEBIAN_BUNDLE}; test -e {CA_PEM} && echo PEM-PRESENT; true"),
    ]));
    assert_eq!(
        out,
        format!("{}PEM-PRESENT\n", original_pem()),
        "volume bundle untouched, standalone PEM written"
    );
    assert!(
        c.logs().contains("trust bundle is on a mount: left alone"),
        "{}",
        c.logs()
    );
}

/// The caching section of a config without `proxy:` addresses and with
/// `inject.address` left at host-gateway; `extra` adds keys under it.
fn default_address_config(dir: &Path, socket: &Path, extra: &str) -> String {
    format!(
        "admin: none\nupstream:\n  unix: {daemon}\nlisteners:\n  - unix: {{path: {sock}}}\n\
         caching:\n  domains: [{PKGS}]\n  state_dir: {state}\n  cache_dir: {cache}\n{extra}",
        daemon = daemon().display(),
        sock = socket.display(),
        state = dir.join("state").display(),
        cache = dir.join("cache").display(),
    )
}

/// With no `proxy:` addresses, the proxy listens on ports 80 and 443 of the
/// address `host-gateway` stands for (the bridge interface's, when the
/// daemon reports no gateway, as Debian's dockerd 20.10 does), not on
/// loopback nor any other host address; a container created through
/// cistern reaches it there by the injected extra hosts.
#[test]
fn by_default_the_caching_proxy_listens_on_the_address_containers_reach_only() {
    let image = curl_image();
    let bridge = bridge_address();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let origin = runtime.block_on(origin::Origin::start(None));
    origin.put(
        "/hello.txt",
        origin::File::new("hello through the bridge\n"),
    );
    let loopback_80_taken = std::net::TcpStream::connect(("127.0.0.1", 80)).is_ok();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let extra = format!(
        "  upstream:\n    overrides: {{\"{PKGS}:80\": \"{}\"}}\n",
        origin.addr
    );
    let config = default_address_config(dir.path(), &socket, &extra);
    let cistern = Cistern::start_with_config(tempfile::tempdir().unwrap(), socket, &config);
    // The log says where, once the proxy is up.
    let said = |logs: &str| {
        logs.contains(&format!("http={bridge}:80")) && logs.contains(&format!("https={bridge}:443"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !said(&cistern.logs()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(said(&cistern.logs()), "{}", cistern.logs());
    assert!(
        !cistern.logs().contains("listens on all addresses"),
        "{}",
        cistern.logs()
    );
    for port in [80, 443] {
        let reached = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((bridge, port)),
            Duration::from_secs(5),
        );
        assert!(
            reached.is_ok(),
            "nothing on {bridge}:{port}: {reached:?}\n{}",
            cistern.logs()
        );
    }
    if !loopback_80_taken {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", 80)).is_err(),
            "the proxy listens on loopback too"
        );
    }
    // A job's container: the cached domain resolves to host-gateway there,
    // and the proxy answers on it.
    let name = unique("bridge-proxy");
    let _cleanup = Cleanup::container(&name);
    let out = run(cistern.docker().args([
        "run",
        "--name",
        &name,
        image,
        "/usr/bin/curl",
        "-sS",
        "--fail",
        "--max-time",
        "20",
        "-D",
        "-",
        &format!("http://{PKGS}/hello.txt"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cistern.logs()
    );
    assert!(text.ends_with("hello through the bridge\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-cistern-cache:"),
        "{text}"
    );
    assert_eq!(origin.counts("/hello.txt").requests, 1);
}

/// Where the address containers reach cannot be found (here: cistern in a
/// network namespace of its own, without the daemon's bridge interface),
/// cistern refuses to start the caching proxy, and says what to set,
/// rather than listening on every address.
#[test]
fn without_the_bridge_address_cistern_refuses_to_start_and_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let config = default_address_config(dir.path(), &socket, "");
    let config_path = dir.path().join("cistern.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg(env!("CARGO_BIN_EXE_cistern"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cistern in a network namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = child.wait();
    let status = status.unwrap_or_else(|| panic!("cistern kept running:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("error: caching proxy: cannot find the address containers reach"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set caching.proxy.http and caching.proxy.https"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Changing `caching.domains` between restarts, through the real caching proxy

/// Names of the domain-change tests (placeholders only).
const KEPT: &str = "kept.domains.example";
const ADDED: &str = "added.domains.example";
const REMOVED: &str = "removed.domains.example";

/// cistern with its caching proxy where containers reach it (the bridge
/// gateway), in front of one local HTTPS origin for every name above (its
/// test CA an extra root of cistern's), and a cached domain list that can
/// change between restarts of cistern on the same state directory.
struct DomainChanges {
    caching: Caching,
    gateway: IpAddr,
    https: u16,
    /// The configuration with `DOMAINS` where the domain list goes.
    template: String,
    _origin: origin::Origin,
    _runtime: tokio::runtime::Runtime,
}

impl DomainChanges {
    fn start(domains: &[&str]) -> DomainChanges {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let test_ca = origin::TestCa::new(&[KEPT, ADDED, REMOVED]);
        let origin = runtime.block_on(origin::Origin::start(Some(test_ca.server.clone())));
        origin.put("/ok", origin::File::new("ok\n"));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("origin-ca.pem");
        std::fs::write(&root, &test_ca.ca_pem).unwrap();
        let socket = dir.path().join("docker.sock");
        let gateway = gateway();
        let https = free_port();
        let template = format!(
            "upstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix:\n      path: {sock}\n      mode: \"0600\"\n\
             caching:\n  domains: [DOMAINS]\n  discover: {{host: HOST}}\n  state_dir: {state}\n  cache_dir: {cache}\n  \
             proxy: {{http: \"{gateway}:{http}\", https: \"{gateway}:{https}\"}}\n  \
             upstream:\n    extra_roots: [{root}]\n    overrides: {{{KEPT}: \"{o}\", {ADDED}: \"{o}\", {REMOVED}: \"{o}\"}}\n",
            daemon = daemon().display(),
            sock = socket.display(),
            state = dir.path().join("state").display(),
            cache = dir.path().join("cache").display(),
            http = free_port(),
            root = root.display(),
            o = origin.addr,
        );
        let mut changes = DomainChanges {
            caching: Caching {
                cistern: None,
                dir,
                socket,
                config: String::new(),
                env: Vec::new(),
            },
            gateway,
            https,
            template,
            _origin: origin,
            _runtime: runtime,
        };
        changes.restart_with(domains);
        changes
    }

    /// (Re)starts cistern with `domains` cached (and no host discovery),
    /// and waits for its proxy.
    fn restart_with(&mut self, domains: &[&str]) {
        self.restart_learning(domains, &[]);
    }

    /// (Re)starts cistern with `domains` cached and host discovery on,
    /// `env` (`NAME=VALUE`) added to its environment, and waits for its proxy.
    fn restart_learning(&mut self, domains: &[&str], env: &[&str]) {
        let host = if env.is_empty() { "false" } else { "true" };
        self.caching.config = self
            .template
            .replace("DOMAINS", &domains.join(", "))
            .replace("HOST", host);
        self.caching.env = env.iter().map(|e| e.to_string()).collect();
        self.caching.restart();
        let proxy = SocketAddr::from((self.gateway, self.https));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(proxy).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the caching proxy did not listen on {proxy}:\n{}",
                self.caching.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates a long-running container through cistern, removed at the
    /// end of the test.
    fn container(&self, name: &str) -> Cleanup {
        let cleanup = Cleanup::container(name);
        run_ok(self.caching.docker().args([
            "run",
            "-d",
            "--name",
            name,
            curl_image(),
            "sleep",
            "600",
        ]));
        cleanup
    }

    /// A long-running container, created through cistern, of a new image
    /// whose pip configuration names `host`; its name, and the cleanups of
    /// it and its image.
    fn pip_image_container(&self, host: &str) -> (String, [Cleanup; 2]) {
        let image = unique("cistern-test/learned-pip").to_lowercase();
        let image_cleanup = Cleanup::image(&image);
        build_image(
            &image,
            &format!("FROM {}\nCOPY pip.conf /etc/pip.conf\n", curl_image()),
            &[(
                "pip.conf",
                format!("[global]\nindex-url = https://{host}/simple\n").as_bytes(),
            )],
        );
        let name = unique("learned-image");
        let container_cleanup = Cleanup::container(&name);
        run_ok(
            self.caching
                .docker()
                .args(["run", "-d", "--name", &name, &image, "sleep", "600"]),
        );
        (name, [container_cleanup, image_cleanup])
    }

    /// `curl` (verifying TLS with the container's trust store) of `host`'s
    /// `/ok` through the caching proxy, from inside `container`.
    fn fetch(&self, container: &str, host: &str) -> (bool, String) {
        let url = format!("https://{host}:{}/ok", self.https);
        let out = run(self.caching.docker().args([
            "exec",
            container,
            "/usr/bin/curl",
            "-sS",
            "--max-time",
            "10",
            &url,
        ]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && text.trim() == "ok", text)
    }

    fn assert_reaches(&self, container: &str, host: &str) {
        let (ok, out) = self.fetch(container, host);
        assert!(
            ok,
            "{container} could not fetch from {host}: {out}\n{}",
            self.caching.logs()
        );
    }

    /// The CA ids in a container's `cistern.ca` label, newest first.
    fn cas_of(&self, container: &str) -> Vec<String> {
        let v = inspect(self.caching.docker(), container);
        v["Config"]["Labels"]["cistern.ca"]
            .as_str()
            .expect("cistern.ca label")
            .split(',')
            .map(str::to_string)
            .collect()
    }

    /// The DNS name constraints of a stored CA generation.
    fn permitted(&self, id: &str) -> Vec<String> {
        let pem =
            std::fs::read_to_string(self.caching.state().join(format!("{id}.crt.pem"))).unwrap();
        let params = CertificateParams::from_ca_cert_pem(&pem).unwrap();
        params
            .name_constraints
            .unwrap()
            .permitted_subtrees
            .into_iter()
            .map(|s| match s {
                rcgen::GeneralSubtree::DnsName(d) => d,
                other => panic!("unexpected constraint {other:?}"),
            })
            .collect()
    }
}

#[test]
fn a_repository_host_learned_from_the_hosts_package_managers_is_cached_with_no_domain_configured() {
    // No domain configured: the only cached host is the pip index this
    // host's environment names (as a CI host's profile would).
    let mut c = DomainChanges::start(&[KEPT]);
    c.restart_learning(&[], &[&format!("PIP_INDEX_URL=https://{ADDED}/simple")]);
    let line = c.caching.cistern().cache_domains_line(
        ADDED,
        &[("PIP_INDEX_URL", format!("https://{ADDED}/simple"))],
    );
    assert!(line.contains("learned: pip (env PIP_INDEX_URL)"), "{line}");
    assert!(
        c.caching
            .logs()
            .contains("caching a learned repository host"),
        "{}",
        c.caching.logs()
    );

    let name = unique("learned");
    let _container = c.container(&name);
    let v = inspect(c.caching.docker(), &name);
    let hosts = strings(&v["HostConfig"]["ExtraHosts"]);
    assert!(
        hosts.iter().any(|h| h.starts_with(&format!("{ADDED}:"))),
        "{hosts:?}"
    );
    assert!(
        !hosts.iter().any(|h| h.starts_with(&format!("{KEPT}:"))),
        "{hosts:?}"
    );
    // The container trusts the proxy for the learned host, over HTTPS.
    c.assert_reaches(&name, ADDED);
    assert!(c
        .permitted(&c.cas_of(&name)[0])
        .contains(&ADDED.to_string()));
    let (ok, _) = c.fetch(&name, KEPT);
    assert!(!ok, "{KEPT} is not cached and must not be served");
}

#[test]
fn repository_hosts_an_image_or_a_create_names_are_cached_for_that_very_container_and_kept() {
    // Host discovery off: only images and creates name hosts here.
    let mut c = DomainChanges::start(&[KEPT]);
    let (name, _cleanup) = c.pip_image_container(ADDED);
    // The first container of the image is routed and trusted for the host
    // its pip configuration names.
    c.assert_reaches(&name, ADDED);
    let hosts = strings(&inspect(c.caching.docker(), &name)["HostConfig"]["ExtraHosts"]);
    assert!(
        hosts.iter().any(|h| h.starts_with(&format!("{ADDED}:"))),
        "{hosts:?}"
    );
    assert!(
        c.caching
            .logs()
            .contains("caching a learned repository host"),
        "{}",
        c.caching.logs()
    );

    // A create's own environment names a registry: cached for it too.
    let env_name = unique("learned-env");
    let _env_container = Cleanup::container(&env_name);
    run_ok(c.caching.docker().args([
        "run",
        "-d",
        "--name",
        &env_name,
        "-e",
        &format!("NPM_CONFIG_REGISTRY=https://{REMOVED}/"),
        curl_image(),
        "sleep",
        "600",
    ]));
    c.assert_reaches(&env_name, REMOVED);
    // The container created before the host was learned was never given it.
    let (ok, _) = c.fetch(&name, REMOVED);
    assert!(!ok, "{name} was created before {REMOVED} was learned");

    // Kept across a restart: a plain container created after it is routed
    // and trusted for both, and `cistern cache domains` says where they
    // came from.
    c.restart_with(&[KEPT]);
    let after = unique("learned-after");
    let _after = c.container(&after);
    c.assert_reaches(&after, ADDED);
    c.assert_reaches(&after, REMOVED);
    let added = c.caching.cistern().cache_domains_line(ADDED, &[]);
    assert!(added.contains("/etc/pip.conf"), "{added}");
    let removed = c.caching.cistern().cache_domains_line(REMOVED, &[]);
    assert!(
        removed.contains("container create: env NPM_CONFIG_REGISTRY"),
        "{removed}"
    );
}

#[test]
fn a_host_an_image_names_under_a_configured_domain_is_routed_by_name_with_no_new_ca() {
    // The configured domain is the parent: extra hosts map exact names, so
    // the image's host must be routed by its own name.
    let parent = "domains.example";
    let c = DomainChanges::start(&[parent]);
    let (name, _cleanup) = c.pip_image_container(ADDED);
    c.assert_reaches(&name, ADDED);
    let hosts = strings(&inspect(c.caching.docker(), &name)["HostConfig"]["ExtraHosts"]);
    assert!(
        hosts.iter().any(|h| h.starts_with(&format!("{ADDED}:"))),
        "{hosts:?}"
    );
    // The parent's name constraint covers it: no generation for it.
    assert_eq!(c.permitted(&c.cas_of(&name)[0]), [parent]);
    let line = c.caching.cistern().cache_domains_line(ADDED, &[]);
    assert!(line.contains("routed (under a cached domain)"), "{line}");
    assert!(line.contains("/etc/pip.conf"), "{line}");
    // A sibling nobody named stays unrouted.
    assert!(!hosts.iter().any(|h| h.contains(KEPT)), "{hosts:?}");
}

#[test]
fn a_domain_added_at_a_restart_is_reached_at_once_by_new_containers_and_old_ones_keep_theirs() {
    let mut c = DomainChanges::start(&[KEPT]);
    let old = unique("domains-old");
    let _old = c.container(&old);
    c.assert_reaches(&old, KEPT);

    c.restart_with(&[KEPT, ADDED]);
    let new = unique("domains-new");
    let _new = c.container(&new);
    // The new domain works in a container created after the change, at once.
    c.assert_reaches(&new, ADDED);
    c.assert_reaches(&new, KEPT);
    // The container created before keeps the domain it was given.
    c.assert_reaches(&old, KEPT);

    // The new container holds a CA made for the new list, and the old one.
    let old_cas = c.cas_of(&old);
    let new_cas = c.cas_of(&new);
    assert_eq!(c.permitted(&new_cas[0]), [ADDED, KEPT]);
    assert!(!old_cas.contains(&new_cas[0]), "{old_cas:?} {new_cas:?}");
    for id in &old_cas {
        assert!(new_cas.contains(id), "{old_cas:?} {new_cas:?}");
    }
}

#[test]
fn a_restart_with_a_domain_removed_and_one_added_keeps_the_others_working_in_every_container() {
    let mut c = DomainChanges::start(&[KEPT, REMOVED]);
    let old = unique("domains-old");
    let _old = c.container(&old);
    c.assert_reaches(&old, KEPT);
    c.assert_reaches(&old, REMOVED);

    c.restart_with(&[KEPT, ADDED]);
    let new = unique("domains-new");
    let _new = c.container(&new);
    c.assert_reaches(&new, ADDED);
    c.assert_reaches(&new, KEPT);
    c.assert_reaches(&old, KEPT);

    // New containers are neither routed to cistern for the removed domain
    // nor given a current CA that permits it.
    let v = inspect(c.caching.docker(), &new);
    let hosts = strings(&v["HostConfig"]["ExtraHosts"]);
    assert!(!hosts.iter().any(|h| h.contains(REMOVED)), "{hosts:?}");
    assert!(hosts.iter().any(|h| h.contains(ADDED)), "{hosts:?}");
    assert_eq!(c.permitted(&c.cas_of(&new)[0]), [ADDED, KEPT]);
    // cistern no longer intercepts the removed domain, not even for the
    // containers still routed to it (see the README on domain changes).
    let (ok, out) = c.fetch(&old, REMOVED);
    assert!(!ok, "the removed domain is still served: {out}");
}
