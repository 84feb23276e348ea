//! Shared helpers for integration tests: the real Docker daemon, a local test
//! image, and a cistern process started in front of the daemon.
//!
//! The daemon is found at `$CISTERN_TEST_DOCKER_SOCK` (default
//! `/var/run/docker.sock`); `scripts/test` starts one when none answers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The local image every test uses: busybox-static imported as a rootfs.
pub const BUSYBOX: &str = "cistern-test/busybox:latest";

/// Label put on everything tests create, so leftovers can be found.
pub const TEST_LABEL: &str = "cistern-test";

/// Path of the real daemon's socket.
pub fn daemon_socket() -> PathBuf {
    std::env::var_os("CISTERN_TEST_DOCKER_SOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Panics with instructions when no daemon answers; returns its socket.
pub fn daemon() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let sock = daemon_socket();
            let (status, _) = raw_request(
                &sock,
                "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
            )
            .unwrap_or_else(|e| {
                panic!(
                    "no Docker daemon answers at {}: {e}; run scripts/test, which starts one",
                    sock.display()
                )
            });
            assert_eq!(status, 200, "daemon at {} is not healthy", sock.display());
            sock
        })
        .clone()
}

/// A `docker` CLI command talking to the daemon directly (not through cistern).
pub fn docker_direct() -> Command {
    docker_at(&daemon())
}

/// A `docker` CLI command talking to the given unix socket.
pub fn docker_at(sock: &Path) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY");
    cmd
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its whole output, success or not.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Makes sure the busybox test image exists on the daemon.
pub fn busybox() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let sock = daemon();
        if run(docker_at(&sock).args(["image", "inspect", BUSYBOX]))
            .status
            .success()
        {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is not installed (apt-get install busybox-static)");
        let root = tempfile::tempdir().unwrap();
        for dir in ["bin", "tmp", "etc", "root"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
        let list = run_ok(Command::new(busybox).arg("--list"));
        for applet in list.lines().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet));
        }
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\n",
        )
        .unwrap();
        let mut tar = Command::new("tar")
            .args(["-C"])
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = docker_at(&sock)
            .args(["import", "-c", "ENV PATH=/bin", "-", BUSYBOX])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            tar.wait().unwrap().success(),
            "tar of the busybox rootfs failed"
        );
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    BUSYBOX
}

/// A Debian base image of the host's suite on the test daemon, made by
/// `scripts/debian-image` (debootstrap and `docker import`, no registry), also
/// tagged with each of `tags`. Returns its `cistern-test/debian:<suite>` name.
pub fn debian_image(tags: &[&str]) -> String {
    debian_image_with(&[], tags)
}

/// [`debian_image`] with the Debian packages `include` installed by
/// debootstrap on the host (no container downloads anything); its name is
/// `cistern-test/debian:<suite>-<package>...`.
pub fn debian_image_with(include: &[&str], tags: &[&str]) -> String {
    let sock = daemon();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-image");
    let mut cmd = Command::new(script);
    if !include.is_empty() {
        cmd.arg("--include").arg(include.join(","));
    }
    let out = run_ok(
        cmd.args(tags)
            .env("DOCKER_HOST", format!("unix://{}", sock.display())),
    );
    out.trim().to_string()
}

/// The name of the test image with a docker CLI inside.
pub const DOCKER_CLI: &str = "cistern-test/docker-cli";

/// A local image (busybox plus a statically linked docker CLI at
/// `/bin/docker`) for jobs that talk to a docker socket from inside a
/// container. Built once per daemon from the static CLI on the host
/// (`$CISTERN_TEST_STATIC_DOCKER`, else `/usr/local/bin/docker`).
#[allow(dead_code)]
pub fn docker_cli_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let sock = daemon();
        let base = busybox();
        if run(docker_at(&sock).args(["image", "inspect", DOCKER_CLI]))
            .status
            .success()
        {
            return;
        }
        let cli = std::env::var_os("CISTERN_TEST_STATIC_DOCKER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/docker"));
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy(&cli, ctx.path().join("docker")).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {base}\nCOPY docker /bin/docker\n"),
        )
        .unwrap();
        build_tagged(DOCKER_CLI, ctx.path());
    });
    DOCKER_CLI
}

/// `docker build` (classic builder) of `ctx` as `tag` on the test daemon. The
/// image the tag named before, if any and now unused, is removed, so runs that
/// rebuild a fixture with new content do not pile up dangling images.
pub fn build_tagged(tag: &str, ctx: &Path) {
    let old = run(docker_direct().args(["image", "inspect", "--format", "{{.Id}}", tag]));
    run_ok(
        docker_direct()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(ctx),
    );
    let old = String::from_utf8_lossy(&old.stdout).trim().to_string();
    let new = run_ok(docker_direct().args(["image", "inspect", "--format", "{{.Id}}", tag]));
    if !old.is_empty() && old != new.trim() {
        // Still tagged elsewhere or used by a container: the daemon refuses, and
        // that is fine.
        let _ = run(docker_direct().args(["image", "rm", &old]));
    }
}

/// A busybox-based image with the host's curl, its libraries (found with
/// `ldd`) and a Debian-layout CA bundle for the injection to append to.
pub fn curl_image() -> &'static str {
    const TAG: &str = "cistern-test/cache-curl:latest";
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path().join("root");
        let ldd = run_ok(Command::new("ldd").arg("/usr/bin/curl"));
        let mut paths = vec!["/usr/bin/curl".to_owned()];
        for line in ldd.lines() {
            let field = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = field.filter(|p| p.starts_with('/')) {
                paths.push(path.to_owned());
            }
        }
        for path in &paths {
            let target = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(path, &target).unwrap();
        }
        let bundle = root.join("etc/ssl/certs/ca-certificates.crt");
        std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
        std::fs::write(&bundle, "").unwrap();
        std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {}\nCOPY root/ /\n", busybox()),
        )
        .unwrap();
        build_tagged(TAG, ctx.path());
    });
    TAG
}

/// The IPv4 address containers on the default bridge reach the host at
/// (what `host-gateway` resolves to): the bridge network's gateway when the
/// daemon reports one, else the address of the bridge's interface
/// (`docker0`), which Debian's dockerd 20.10 leaves out of the inspect.
pub fn bridge_address() -> std::net::Ipv4Addr {
    let out = run_ok(docker_direct().args([
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}|{{index .Options \"com.docker.network.bridge.name\"}}",
    ]));
    let (gateways, name) = out.trim().split_once('|').unwrap_or((out.trim(), ""));
    if let Some(gateway) = gateways.split_whitespace().find_map(|g| g.parse().ok()) {
        return gateway;
    }
    let name = if name.is_empty() { "docker0" } else { name };
    let addresses = run_ok(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", name]));
    addresses
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address on the bridge interface {name}: {addresses}"))
}

/// A unique name for resources a test creates.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback TCP port nothing listens on right now (for a config that must
/// name one).
/// A loopback TCP port nothing listens on, for a server a test starts later.
///
/// Taken below the kernel's ephemeral range (32768 and up): a port from
/// `bind(0)`, once released, can be handed to any outgoing connection the
/// tests open meanwhile, and the server then fails to bind. Each test process
/// walks its own stretch of ports, so parallel tests do not pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free loopback port left");
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Sends raw bytes to a unix socket and reads the whole answer (the request
/// should say `Connection: close`). Returns the status code and the text.
pub fn raw_request(sock: &Path, request: &str) -> std::io::Result<(u16, String)> {
    raw_request_bytes(sock, request.as_bytes())
}

pub fn raw_request_bytes(sock: &Path, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A configuration shipped in the repository (`rel`, e.g.
/// `packaging/runners/gitlab/cistern.yaml`) made to run in a test: its
/// socket and state under `dir`, the test daemon upstream, and `instance`.
pub fn shipped_config(rel: &str, dir: &Path, instance: &str) -> String {
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
    format!(
        "instance: {instance}\n{}",
        shipped
            .replace(
                "/run/cistern/docker.sock",
                &dir.join("docker.sock").to_string_lossy()
            )
            .replace("/var/lib/cistern", &dir.join("state").to_string_lossy())
            .replace(
                "unix: /var/run/docker.sock",
                &format!("unix: {}", daemon().display())
            )
    )
}

/// A cistern process serving one unix listener in front of a daemon.
pub struct Cistern {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Cistern {
    /// Starts cistern in front of the test daemon with extra top-level YAML.
    pub fn start(extra_yaml: &str) -> Cistern {
        Self::start_upstream(&daemon(), extra_yaml)
    }

    /// Starts cistern in front of the daemon at `upstream`.
    pub fn start_upstream(upstream: &Path, extra_yaml: &str) -> Cistern {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let config = format!(
            "upstream:\n  unix: {}\nlisteners:\n  - name: test\n    unix:\n      path: {}\n      mode: \"0600\"\n{extra_yaml}",
            upstream.display(),
            socket.display()
        );
        Self::start_with_config(dir, socket, &config)
    }

    /// Starts cistern on a full configuration; `socket` is where it listens.
    pub fn start_with_config(dir: tempfile::TempDir, socket: PathBuf, config: &str) -> Cistern {
        Self::start_under(&[], dir, socket, config)
    }

    /// Starts cistern as [`Cistern::start_with_config`], run by the command
    /// `wrapper` (which must exec it, e.g. `prlimit ...`).
    pub fn start_under(
        wrapper: &[&str],
        dir: tempfile::TempDir,
        socket: PathBuf,
        config: &str,
    ) -> Cistern {
        let config_path = dir.path().join("cistern.yaml");
        // Tests run side by side: no admin listener on the default port
        // unless the test configures one.
        let config = match config.lines().any(|l| l.starts_with("admin:")) {
            true => config.to_owned(),
            false => format!("{}\nadmin: none\n", config.trim_end()),
        };
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("cistern.log");
        let bin = env!("CARGO_BIN_EXE_cistern");
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cistern");
        let mut cistern = Cistern {
            child,
            dir,
            socket,
            log,
        };
        cistern.wait_ready();
        cistern
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cistern exited early ({status}):\n{}", self.logs());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cistern did not start listening:\n{}", self.logs());
    }

    /// Runs `script` with `sh -ec` in a fresh container of `image` created
    /// through this cistern, removed afterwards; returns its output, and
    /// panics with it and cistern's log when the script fails.
    pub fn job(&self, image: &str, script: &str) -> String {
        let name = unique("job");
        let _cleanup = Cleanup::container(&name);
        let out = run(self
            .docker()
            .args(["run", "--name", &name, image, "sh", "-ec", script]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the job failed:\n{text}\ncistern:\n{}",
            self.logs()
        );
        text
    }

    /// The line `cistern cache domains` prints for `host` on this cistern's
    /// configuration, run with `env` added to its environment (panics with
    /// the whole listing when the host is not in it).
    pub fn cache_domains_line(&self, host: &str, env: &[(&str, String)]) -> String {
        let out = self.cache_domains(env);
        out.lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("{host} is not listed:\n{out}"))
            .to_string()
    }

    /// What `cistern cache domains` prints on this cistern's configuration,
    /// run with `env` added to its environment.
    pub fn cache_domains(&self, env: &[(&str, String)]) -> String {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_cistern"))
                .args(["cache", "domains", "--config"])
                .arg(self.dir.path().join("cistern.yaml"))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        )
    }

    /// A docker CLI command pointed at this cistern.
    pub fn docker(&self) -> Command {
        docker_at(&self.socket)
    }

    /// A bollard client pointed at this cistern.
    pub fn bollard(&self) -> bollard::Docker {
        bollard::Docker::connect_with_unix(
            self.socket.to_str().unwrap(),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
    }

    /// What cistern has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the cistern process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Cistern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the named containers on the daemon directly, ignoring errors.
pub fn remove_containers(names: &[&str]) {
    let mut cmd = docker_direct();
    cmd.args(["rm", "-f", "-v"])
        .args(names)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = cmd.status();
}

/// Removes containers, volumes, networks and images by name when dropped, on
/// the daemon directly, so a failing test leaves nothing behind.
#[derive(Default)]
pub struct Cleanup {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    pub images: Vec<String>,
}

impl Cleanup {
    pub fn container(name: &str) -> Self {
        let mut c = Self::default();
        c.containers.push(name.to_string());
        c
    }

    pub fn image(name: &str) -> Self {
        let mut c = Self::default();
        c.images.push(name.to_string());
        c
    }

    pub fn volume_named(name: &str) -> Self {
        let mut c = Self::default();
        c.volumes.push(name.to_string());
        c
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        if !self.containers.is_empty() {
            quiet(
                docker_direct()
                    .args(["rm", "-f", "-v"])
                    .args(&self.containers),
            );
        }
        if !self.networks.is_empty() {
            quiet(docker_direct().args(["network", "rm"]).args(&self.networks));
        }
        if !self.volumes.is_empty() {
            quiet(
                docker_direct()
                    .args(["volume", "rm", "-f"])
                    .args(&self.volumes),
            );
        }
        if !self.images.is_empty() {
            quiet(docker_direct().args(["rmi", "-f"]).args(&self.images));
        }
    }
}

/// A second, private Docker daemon in its own network namespace (so it never
/// touches the host's bridge), for tests that stop a daemon under cistern.
pub struct PrivateDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl PrivateDaemon {
    pub fn start() -> PrivateDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let mut daemon = PrivateDaemon {
            dir,
            socket,
            child: None,
        };
        daemon.restart();
        daemon
    }

    /// Starts the daemon (again) on the same socket and data directory.
    pub fn restart(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("unshare")
            .arg("--net")
            .arg("dockerd")
            .arg(format!("--host=unix://{}", self.socket.display()))
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .args(["--iptables=false", "--ip6tables=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = raw_request(
                &self.socket,
                "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
            ) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "private dockerd did not start:\n{}",
            std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Stops the daemon (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // unshare execs dockerd, so the child pid is dockerd's.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes, on the daemon directly, every container, network and volume
/// labelled with this cistern instance, when dropped: for tests whose
/// resources are named by cistern (namespaces, jobs).
#[allow(dead_code)]
pub struct InstanceCleanup(pub String);

impl Drop for InstanceCleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.cistern.instance={}", self.0);
        let list = |args: &[&str]| -> Vec<String> {
            let out = run(docker_direct().args(args).args(["--filter", &filter]));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect()
        };
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        let containers = list(&["ps", "-aq"]);
        if !containers.is_empty() {
            quiet(docker_direct().args(["rm", "-f", "-v"]).args(&containers));
        }
        let networks = list(&["network", "ls", "-q"]);
        if !networks.is_empty() {
            quiet(docker_direct().args(["network", "rm"]).args(&networks));
        }
        let volumes = list(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            quiet(docker_direct().args(["volume", "rm", "-f"]).args(&volumes));
        }
    }
}
