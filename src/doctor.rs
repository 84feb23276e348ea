//! `cistern doctor`: checks that a configuration can run on this host, and
//! says what to fix when it cannot.
//!
//! Each check is a small function that returns a [`Check`]; the decisions
//! (what a daemon version, a bind error or a socket file means) are pure
//! functions of what was observed, and the I/O (the daemon calls, binds,
//! file probes, `/proc` reads) sits at the edges. Nothing is changed on the
//! host except a temporary file in each directory checked for writability,
//! removed at once; the CA store, which is opened as `cistern serve` opens
//! it (and so creates a CA when none is valid); and with
//! `--container-check`, a probe container, removed when it has run.
//!
//! Like [`crate::server`], this sees the whole [`Config`].

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ListenerKind, UnixListener, UpstreamEndpoint};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Runs, but something is likely to bite.
    Warn,
    /// `cistern serve` would not start, or would not work.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One check's result: what was checked, how it came out, what was found,
/// and (when not ok) what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    /// One line: `ok    name: detail`, or `FAIL  name: detail; fix: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {}: {}", self.status, self.name, self.detail)?;
        match &self.fix {
            Some(fix) if self.status != Status::Ok => write!(f, "; fix: {fix}"),
            _ => Ok(()),
        }
    }
}

/// The report: one line per check.
pub fn render(checks: &[Check]) -> String {
    checks.iter().map(|c| format!("{c}\n")).collect()
}

/// Whether any check failed (the exit code is 1 then).
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// What to check beyond the host itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// With `caching:`, start a container (of this image, which must be on
    /// the daemon) and check that it reaches the caching proxy as an injected
    /// container would. Needs cistern running.
    pub container_image: Option<String>,
}

/// Runs every check on the configuration file (or the embedded default).
pub async fn run(file: Option<&Path>, options: &Options) -> Vec<Check> {
    let config = match file {
        Some(file) => config::load(file).map_err(|err| err.to_string()),
        None => Ok(config::embedded_default()),
    };
    let name = file.map_or_else(
        || "<embedded default>".to_owned(),
        |f| f.display().to_string(),
    );
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            return vec![Check::fail(
                "config",
                err,
                "correct the file where the error points (`cistern check-config FILE`)",
            )]
        }
    };
    let mut checks = vec![Check::ok(
        "config",
        format!(
            "{name}: {} listener(s), upstream {}",
            config.listeners.len(),
            config.upstream.endpoint
        ),
    )];
    checks.extend(daemon_checks(&config).await);
    for listener in &config.listeners {
        let name = format!("listener {}", listener.name);
        checks.push(match &listener.kind {
            ListenerKind::Unix(unix) => unix_listener(&name, unix),
            ListenerKind::Tcp(tcp) => bind_check(&name, tcp.address),
        });
    }
    match &config.admin {
        Some(crate::admin::AdminConfig::Tcp(address)) => checks.push(bind_check("admin", *address)),
        Some(crate::admin::AdminConfig::Unix(unix)) => checks.push(unix_listener("admin", unix)),
        None => {}
    }
    checks.push(directory("state dir", &config.state_dir));
    match &config.caching {
        Some(caching) => checks.extend(caching_checks(&config, caching, options).await),
        None if options.container_image.is_some() => checks.push(Check::warn(
            CONTAINER_CHECK,
            "skipped: the configuration has no `caching:` section",
            "drop `--container-check`, or check a configuration with `caching:`",
        )),
        None => {}
    }
    checks
}

/// The daemon answers `/_ping` and `/version`, and its API version.
async fn daemon_checks(config: &Config) -> Vec<Check> {
    let endpoint = &config.upstream.endpoint;
    let client = crate::daemon::upstream::client(&config.upstream);
    let get = |path: &'static str| {
        crate::daemon::upstream::call(
            &client,
            http::Method::GET,
            path,
            http::HeaderMap::new(),
            bytes::Bytes::new(),
            1 << 20,
        )
    };
    let ping = match get("/_ping").await {
        Ok(answer) if answer.status.is_success() => Ok(()),
        Ok(answer) => Err(format!("/_ping answered {}", answer.message())),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = ping {
        // The pooled client's error hides the system's; a plain connect says it.
        let (err, kind) = match connect_upstream(&config.upstream) {
            Err(io) => (io.to_string(), Some(io.kind())),
            Ok(()) => (err, None),
        };
        return vec![daemon_unreachable(endpoint, &err, kind)];
    }
    let version = match get("/version").await {
        Ok(answer) if answer.status.is_success() => {
            serde_json::from_slice::<serde_json::Value>(&answer.body).ok()
        }
        _ => None,
    };
    let Some(version) = version else {
        return vec![Check::fail(
            "daemon",
            format!("{endpoint} answers /_ping but not /version"),
            "check that the upstream is a Docker daemon (`docker version` against it)",
        )];
    };
    let text = |key: &str| {
        version
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    vec![
        Check::ok(
            "daemon",
            format!("{endpoint} answers (Docker {})", text("Version")),
        ),
        api_version(&text("ApiVersion")),
    ]
}

/// Opens (and closes) one connection to the upstream.
fn connect_upstream(upstream: &crate::config::Upstream) -> std::io::Result<()> {
    match &upstream.endpoint {
        UpstreamEndpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop),
        UpstreamEndpoint::Tcp(address) => {
            use std::net::ToSocketAddrs;
            let mut last =
                std::io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
            for addr in address.to_socket_addrs()? {
                match std::net::TcpStream::connect_timeout(&addr, upstream.connect_timeout) {
                    Ok(_) => return Ok(()),
                    Err(err) => last = err,
                }
            }
            Err(last)
        }
    }
}

/// The daemon did not answer: why (the connect error's kind, when the
/// connect itself failed), and what to do.
fn daemon_unreachable(endpoint: &UpstreamEndpoint, err: &str, kind: Option<ErrorKind>) -> Check {
    let start = "start the Docker daemon (`systemctl start docker`)";
    let fix = match (endpoint, kind) {
        (UpstreamEndpoint::Unix(path), Some(ErrorKind::NotFound)) => format!(
            "no socket at {}: {start}, or set `upstream.unix` to where its socket is",
            path.display()
        ),
        (UpstreamEndpoint::Unix(path), Some(ErrorKind::PermissionDenied)) => format!(
            "run cistern as a user that may open {} (root, or a member of the socket's group)",
            path.display()
        ),
        (UpstreamEndpoint::Unix(_), Some(ErrorKind::ConnectionRefused)) => {
            format!("the socket file is there but nothing serves it: {start}")
        }
        (UpstreamEndpoint::Unix(_), _) => {
            format!("{start}, and check that `upstream.unix` is its socket")
        }
        (UpstreamEndpoint::Tcp(_), _) => {
            format!("{start} listening there, or set `upstream.tcp` to where it listens")
        }
    };
    Check::fail(
        "daemon",
        format!("the Docker daemon does not answer at {endpoint}: {err}"),
        fix,
    )
}

/// The API version cistern is developed against (Docker 20.10).
const WANTED_API: (u32, u32) = (1, 41);

/// The daemon's API version: below 1.41 (Docker 20.10) clients that ask for
/// newer calls are refused by the daemon.
fn api_version(version: &str) -> Check {
    let parsed = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if v >= WANTED_API => Check::ok("daemon API", format!("version {version}")),
        Some(_) => Check::warn(
            "daemon API",
            format!("version {version} is below 1.41 (Docker 20.10): the docker CLI and Compose negotiate down and work, but clients that pin API 1.41 or newer (DOCKER_API_VERSION, SDKs with a fixed version) get errors from the daemon"),
            "upgrade the daemon to Docker 20.10 or newer",
        ),
        None => Check::warn(
            "daemon API",
            format!("the daemon reports API version `{version}`, which is not MAJOR.MINOR"),
            "check that the upstream is a Docker daemon",
        ),
    }
}

/// What is at a unix listener's path now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SocketFile {
    Absent,
    /// A socket nobody answers on: `serve` replaces it.
    Stale,
    /// A socket a process answers on; who, when `/proc` says.
    Served(Option<Holder>),
    NotASocket,
    Unreadable(String),
}

/// A process holding a socket or port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: u32,
    command: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

/// Whether a directory can hold what cistern puts there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dir {
    /// Exists and a file could be created in it.
    Writable,
    /// Exists, but creating a file failed.
    NotWritable(String),
    /// Missing; the nearest existing ancestor, and whether it is writable.
    Missing { ancestor: PathBuf, writable: bool },
}

/// A unix listener: its directory, what is at its path, and the mode and
/// owner the socket will get.
fn unix_listener(name: &str, cfg: &UnixListener) -> Check {
    let dir = cfg.path.parent().map(probe_dir_exists);
    let file = socket_file(&cfg.path);
    unix_decision(name, cfg, dir.as_ref(), &file, &ownership_text(cfg))
}

fn unix_decision(
    name: &str,
    cfg: &UnixListener,
    dir: Option<&Dir>,
    file: &SocketFile,
    ownership: &str,
) -> Check {
    let path = cfg.path.display();
    if let Some(Dir::Missing {
        ancestor,
        writable: false,
    }) = dir
    {
        return Check::fail(
            name,
            format!(
                "{path}: its directory does not exist and {} is not writable",
                ancestor.display()
            ),
            "create the directory, or run cistern as a user that may (root)",
        );
    }
    if let Some(Dir::NotWritable(err)) = dir {
        if !matches!(file, SocketFile::Served(_)) {
            return Check::fail(
                name,
                format!("{path}: cistern cannot create the socket in its directory: {err}"),
                "run cistern as a user that may write there (root), or set another `unix.path`",
            );
        }
    }
    match file {
        SocketFile::Served(holder) => {
            let who = holder
                .as_ref()
                .map_or_else(|| "a process".to_owned(), |h| h.to_string());
            let detail = format!("{path} is served by {who}");
            match holder {
                Some(h) if h.command == "cistern" => Check::warn(
                    name,
                    format!("{detail}: cistern is already running there"),
                    "nothing, if that is the cistern you mean; a second `cistern serve` with this config would refuse to start",
                ),
                _ => Check::fail(
                    name,
                    format!("{detail} (cistern, or something else, is already running there)"),
                    "stop the process that serves it, or set another `unix.path`",
                ),
            }
        }
        SocketFile::NotASocket => Check::fail(
            name,
            format!("{path} exists and is not a socket; cistern refuses to replace it"),
            "remove the file, or set another `unix.path`",
        ),
        SocketFile::Unreadable(err) => Check::fail(
            name,
            format!("{path}: cannot inspect: {err}"),
            "run cistern as a user that may (root)",
        ),
        SocketFile::Absent | SocketFile::Stale => {
            let state = match (file, dir) {
                (SocketFile::Stale, _) => "a stale socket file is there (replaced at start)",
                (_, Some(Dir::Missing { .. })) => "its directory is created at start",
                _ => "free",
            };
            Check::ok(name, format!("{path}: {state}; socket {ownership}"))
        }
    }
}

/// `mode 0660, owner root (uid 0), group docker (gid 998, cistern's)`: an
/// owner or group not configured is cistern's own.
fn ownership_text(cfg: &UnixListener) -> String {
    let user = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| "?".to_owned(), |u| u.name)
    };
    let group = |gid: u32| {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| "?".to_owned(), |g| g.name)
    };
    let (uid, gid) = (
        cfg.owner.unwrap_or(nix::unistd::geteuid().as_raw()),
        cfg.group.unwrap_or(nix::unistd::getegid().as_raw()),
    );
    let own = |configured: Option<u32>| match configured {
        Some(_) => "",
        None => ", cistern's",
    };
    format!(
        "mode {:04o}, owner {} (uid {uid}{}), group {} (gid {gid}{})",
        cfg.mode,
        user(uid),
        own(cfg.owner),
        group(gid),
        own(cfg.group),
    )
}

fn socket_file(path: &Path) -> SocketFile {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => SocketFile::Served(unix_holder(path)),
                Err(_) => SocketFile::Stale,
            }
        }
        Ok(_) => SocketFile::NotASocket,
        Err(err) if err.kind() == ErrorKind::NotFound => SocketFile::Absent,
        Err(err) => SocketFile::Unreadable(err.to_string()),
    }
}

/// Whether a directory exists and cistern may create files in it (a
/// socket), or can be created (its nearest existing ancestor is writable).
/// Creates nothing.
fn probe_dir_exists(dir: &Path) -> Dir {
    let access = |path: &Path| {
        nix::unistd::access(
            path,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
    };
    if dir.is_dir() {
        return match access(dir) {
            Ok(()) => Dir::Writable,
            Err(err) => Dir::NotWritable(err.desc().to_owned()),
        };
    }
    let ancestor = dir
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let writable = access(&ancestor).is_ok();
    Dir::Missing { ancestor, writable }
}

/// Whether cistern can write in a directory: a temporary file is created
/// and removed; a missing directory must be creatable.
fn probe_dir_writable(dir: &Path) -> Dir {
    if !dir.is_dir() {
        return probe_dir_exists(dir);
    }
    let probe = dir.join(format!(".cistern-doctor-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Dir::Writable
        }
        Err(err) => Dir::NotWritable(err.to_string()),
    }
}

/// A directory cistern writes in (state, cache).
fn directory(name: &str, dir: &Path) -> Check {
    dir_decision(name, dir, &probe_dir_writable(dir))
}

fn dir_decision(name: &str, dir: &Path, found: &Dir) -> Check {
    let shown = dir.display();
    match found {
        Dir::Writable => Check::ok(name, format!("{shown} is writable")),
        Dir::NotWritable(err) => Check::fail(
            name,
            format!("{shown} is not writable: {err}"),
            format!("run cistern as a user that may write there (root), or `chown` {shown}"),
        ),
        Dir::Missing {
            writable: true,
            ancestor,
        } => Check::ok(
            name,
            format!(
                "{shown} does not exist yet; created at start ({} is writable)",
                ancestor.display()
            ),
        ),
        Dir::Missing {
            writable: false,
            ancestor,
        } => Check::fail(
            name,
            format!(
                "{shown} does not exist and {} is not writable",
                ancestor.display()
            ),
            format!("create {shown} writable by cistern's user, or run cistern as root"),
        ),
    }
}

/// A TCP address can be bound now (bound, then released at once).
fn bind_check(name: &str, address: SocketAddr) -> Check {
    match std::net::TcpListener::bind(address) {
        Ok(listener) => {
            drop(listener);
            bind_decision(name, address, None, None)
        }
        Err(err) => {
            let holder = match err.kind() {
                ErrorKind::AddrInUse => tcp_holder(address.port()),
                _ => None,
            };
            bind_decision(name, address, Some(&err), holder.as_ref())
        }
    }
}

fn bind_decision(
    name: &str,
    address: SocketAddr,
    err: Option<&std::io::Error>,
    holder: Option<&Holder>,
) -> Check {
    let Some(err) = err else {
        return Check::ok(name, format!("{address} can be bound"));
    };
    match err.kind() {
        ErrorKind::AddrInUse => {
            let who = holder.map_or_else(|| "another process".to_owned(), |h| h.to_string());
            let detail = format!("{address}: port {} is in use by {who}", address.port());
            match holder {
                Some(h) if h.command == "cistern" => Check::warn(
                    name,
                    format!("{detail}: cistern is already running"),
                    "nothing, if that is the cistern you mean; a second `cistern serve` with this config would refuse to start",
                ),
                _ => Check::fail(
                    name,
                    detail,
                    format!("stop what holds port {} (`ss -ltnp`), or configure another port", address.port()),
                ),
            }
        }
        ErrorKind::PermissionDenied => Check::fail(
            name,
            format!("{address}: {err}"),
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; run cistern so, or configure a port above 1023",
        ),
        ErrorKind::AddrNotAvailable => Check::fail(
            name,
            format!("{address} is not an address of this host"),
            "configure an address of one of this host's interfaces (`ip addr`)",
        ),
        _ => Check::fail(
            name,
            format!("{address} cannot be bound: {err}"),
            "configure another address",
        ),
    }
}

/// Caching: the proxy's addresses, the cache dir, the CA, the domains.
async fn caching_checks(
    config: &Config,
    caching: &crate::mitm::CachingConfig,
    options: &Options,
) -> Vec<Check> {
    use crate::mitm::address::{listen_addresses, needs_bridge};
    let mut checks = vec![Check::ok(
        "caching domains",
        format!(
            "{} domain(s): {}",
            caching.domains.len(),
            caching.domains.join(", ")
        ),
    )];
    let bridge = match needs_bridge(caching) {
        true => Some(crate::server::bridge_network(&config.upstream).await),
        false => None,
    };
    match listen_addresses(caching, bridge) {
        Ok((http, https)) => {
            checks.push(bind_check("caching proxy http", http));
            checks.push(bind_check("caching proxy https", https));
            if let Some(image) = &options.container_image {
                checks.push(container_check(config, caching, http, image).await);
            }
        }
        Err(err) => checks.push(Check::fail(
            "caching proxy addresses",
            err.to_string(),
            "set `caching.proxy.http` and `caching.proxy.https`, or `caching.inject.address`",
        )),
    }
    if let Some(forward) = &caching.forward_proxy {
        checks.push(bind_check("caching forward proxy", forward.listen));
    }
    checks.push(directory("cache dir", &caching.cache_dir));
    checks.push(ca_check(caching));
    checks
}

/// The name of the `--container-check` check.
const CONTAINER_CHECK: &str = "container reaches the caching proxy";

/// The host name a probe container asks the proxy for: not a cached domain,
/// so the proxy answers it itself (403) without reaching any origin.
const PROBE_HOST: &str = "cistern-doctor.invalid";

/// A container reaches the caching proxy's HTTP address the way injected
/// containers do (an extra host pointing at `inject.address`). Skipped
/// (a warning) when the proxy does not answer on this host: cistern is not
/// running.
async fn container_check(
    config: &Config,
    caching: &crate::mitm::CachingConfig,
    http: SocketAddr,
    image: &str,
) -> Check {
    let timeout = std::time::Duration::from_secs(2);
    if std::net::TcpStream::connect_timeout(&http, timeout).is_err() {
        return Check::warn(
            CONTAINER_CHECK,
            format!(
                "skipped: the caching proxy does not answer at {http} (cistern is not running)"
            ),
            "run `cistern doctor --container-check` again while cistern serves this configuration",
        );
    }
    let client = crate::daemon::upstream::client(&config.upstream);
    let daemon = crate::daemon::client::Daemon::new(&client).capped(1 << 20);
    let name = format!("cistern-doctor-{}", std::process::id());
    let body = serde_json::json!({
        "Image": image,
        // Bounded by `timeout`: `wget -T` crashes in some busybox-static builds.
        "Cmd": ["timeout", "10", "wget", "-O", "/dev/null", format!("http://{PROBE_HOST}:{}/", http.port())],
        "Labels": {"io.cistern.doctor": "probe"},
        "HostConfig": {"ExtraHosts": [format!("{PROBE_HOST}:{}", caching.inject_address)]},
    });
    let created = match daemon
        .post_json(&format!("/containers/create?name={name}"), &body)
        .await
    {
        Ok(answer) if answer.status.is_success() => answer,
        Ok(answer) => return Check::warn(
            CONTAINER_CHECK,
            format!(
                "cannot create a probe container of {image}: {}",
                answer.message()
            ),
            "pass `--container-image` an image the daemon has with `timeout` and `wget` (busybox)",
        ),
        Err(err) => {
            return Check::fail(
                CONTAINER_CHECK,
                format!("creating the probe container: {err}"),
                "check the daemon",
            )
        }
    };
    let Some(id) = serde_json::from_slice::<serde_json::Value>(&created.body)
        .ok()
        .and_then(|v| v.get("Id")?.as_str().map(str::to_owned))
    else {
        return Check::fail(
            CONTAINER_CHECK,
            "the daemon's create answer has no Id",
            "check the daemon",
        );
    };
    let result = async {
        let started = daemon
            .post(&format!("/containers/{id}/start"))
            .await
            .map_err(|e| e.to_string())?;
        if !started.status.is_success() {
            return Err(started.message());
        }
        let waited = daemon
            .post(&format!("/containers/{id}/wait"))
            .await
            .map_err(|e| e.to_string())?;
        let code = serde_json::from_slice::<serde_json::Value>(&waited.body)
            .ok()
            .and_then(|v| v.get("StatusCode")?.as_i64())
            .unwrap_or(-1);
        let logs = daemon
            .get(&format!("/containers/{id}/logs?stdout=1&stderr=1"))
            .await
            .map(|a| printable(&a.body))
            .unwrap_or_default();
        Ok((code, logs))
    }
    .await;
    let _ = daemon.delete(&format!("/containers/{id}?force=1")).await;
    match result {
        Ok((code, logs)) => {
            probe_decision(CONTAINER_CHECK, http, &caching.inject_address, code, &logs)
        }
        Err(err) => Check::fail(
            CONTAINER_CHECK,
            format!("running the probe container: {err}"),
            "check the daemon",
        ),
    }
}

/// The text of a container's log stream (without a TTY, frames of an
/// 8-byte header, stream and length, then the payload), on one line.
fn printable(mut bytes: &[u8]) -> String {
    let mut text = Vec::new();
    while let [0..=2, _, _, _, a, b, c, d, rest @ ..] = bytes {
        let len = (u32::from_be_bytes([*a, *b, *c, *d]) as usize).min(rest.len());
        text.extend_from_slice(&rest[..len]);
        bytes = &rest[len..];
    }
    text.extend_from_slice(bytes);
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the probe's `wget` says: any HTTP answer (busybox's "server returned
/// error" included: the proxy refuses the probe host with 403) means the
/// proxy was reached.
fn probe_decision(name: &str, http: SocketAddr, inject: &str, code: i64, logs: &str) -> Check {
    if code == 0 || logs.contains("server returned error") {
        return Check::ok(
            name,
            format!(
                "a container reached the caching proxy on port {} through {inject}",
                http.port()
            ),
        );
    }
    Check::fail(
        name,
        format!("a container could not reach the caching proxy on port {} through {inject}: {logs}", http.port()),
        "containers must reach the proxy's address: check `caching.proxy.http`, `caching.inject.address` and the host's firewall (INPUT from the bridge)",
    )
}

/// The CA store opens (as `cistern serve` opens it) and has a CA valid now.
fn ca_check(caching: &crate::mitm::CachingConfig) -> Check {
    let store = caching.state_dir.join("ca");
    let fix = format!(
        "check that {} is readable and writable by cistern's user; `cistern ca rotate` creates a new CA",
        store.display()
    );
    let opened = match crate::mitm::Caching::open(caching.clone()) {
        Ok(opened) => opened,
        Err(err) => return Check::fail("CA", format!("{}: {err}", store.display()), fix),
    };
    let now = time::OffsetDateTime::now_utc();
    match opened.ca.current_for_new_container(now) {
        Ok(cert) => Check::ok(
            "CA",
            format!(
                "{}: CA {} valid until {} ({} generation(s) valid now)",
                store.display(),
                cert.id,
                cert.not_after,
                opened.ca.cas_valid_at(now).len()
            ),
        ),
        Err(err) => Check::fail("CA", format!("{}: {err}", store.display()), fix),
    }
}

/// Socket inodes listening on `port` in `/proc/net/tcp` or `tcp6` text.
fn listening_tcp_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let found = u16::from_str_radix(hex_port, 16).ok()?;
            (found == port && *fields.get(3)? == LISTEN).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// Socket inodes of listening sockets at `path` in `/proc/net/unix` text.
fn listening_unix_inodes(table: &str, path: &Path) -> Vec<u64> {
    // __SO_ACCEPTCON: the socket listens.
    const ACCEPTCON: u32 = 1 << 16;
    let wanted = path.to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let listening = flags & ACCEPTCON != 0;
            (listening && *fields.get(7)? == wanted).then(|| fields.get(6)?.parse().ok())?
        })
        .collect()
}

/// The process holding TCP `port` in the listening state, when `/proc`
/// shows it (another user's descriptors need root).
fn tcp_holder(port: u16) -> Option<Holder> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|t| listening_tcp_inodes(&t, port))
        .collect();
    holder_of(&inodes)
}

fn unix_holder(path: &Path) -> Option<Holder> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    holder_of(&listening_unix_inodes(&table, path))
}

/// The first process with a descriptor on one of the socket inodes.
fn holder_of(inodes: &[u64]) -> Option<Holder> {
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let command = std::fs::read_to_string(entry.path().join("comm"))
                .map_or_else(|_| "?".to_owned(), |c| c.trim().to_owned());
            return Some(Holder { pid, command });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_cfg(path: &str) -> UnixListener {
        UnixListener {
            path: path.into(),
            mode: 0o660,
            owner: None,
            group: None,
        }
    }

    #[test]
    fn a_line_shows_status_name_detail_and_the_fix_when_not_ok() {
        let ok = Check::ok("daemon", "answers");
        assert_eq!(ok.to_string(), "ok    daemon: answers");
        let fail = Check::fail("listener a", "port 80 in use", "stop it");
        assert_eq!(
            fail.to_string(),
            "FAIL  listener a: port 80 in use; fix: stop it"
        );
        let warn = Check::warn("daemon API", "old", "upgrade");
        assert_eq!(warn.to_string(), "warn  daemon API: old; fix: upgrade");
        assert_eq!(
            render(&[ok, warn]),
            "ok    daemon: answers\nwarn  daemon API: old; fix: upgrade\n"
        );
    }

    #[test]
    fn only_a_failure_fails_the_run() {
        let ok = Check::ok("a", "x");
        let warn = Check::warn("b", "y", "z");
        assert!(!failed(&[ok.clone(), warn.clone()]));
        assert!(failed(&[ok, warn, Check::fail("c", "d", "e")]));
        assert!(!failed(&[]));
    }

    #[test]
    fn api_versions_below_1_41_warn_and_say_which_clients() {
        assert_eq!(api_version("1.41").status, Status::Ok);
        assert_eq!(api_version("1.43").status, Status::Ok);
        assert_eq!(api_version("2.0").status, Status::Ok);
        let old = api_version("1.40");
        assert_eq!(old.status, Status::Warn);
        assert!(old.detail.contains("pin API 1.41"), "{}", old.detail);
        assert!(old.fix.unwrap().contains("Docker 20.10"));
        assert_eq!(api_version("garbage").status, Status::Warn);
    }

    #[test]
    fn a_missing_daemon_socket_says_to_start_the_daemon_or_fix_the_path() {
        let endpoint = UpstreamEndpoint::Unix("/nonexistent/docker.sock".into());
        let check = daemon_unreachable(&endpoint, "No such file", Some(ErrorKind::NotFound));
        assert_eq!(check.status, Status::Fail);
        assert!(check
            .detail
            .contains("Docker daemon does not answer at unix:///nonexistent/docker.sock"));
        let fix = check.fix.unwrap();
        assert!(
            fix.contains("no socket at /nonexistent/docker.sock"),
            "{fix}"
        );
        assert!(fix.contains("upstream.unix"), "{fix}");
        let tcp = daemon_unreachable(
            &UpstreamEndpoint::Tcp("127.0.0.1:1".into()),
            "refused",
            None,
        );
        assert!(tcp.fix.unwrap().contains("upstream.tcp"));
        let denied = daemon_unreachable(&endpoint, "denied", Some(ErrorKind::PermissionDenied));
        assert!(denied.fix.unwrap().contains("socket's group"));
    }

    #[test]
    fn unix_listener_decisions() {
        let cfg = unix_cfg("/run/x/docker.sock");
        let own = "mode 0660";
        let free = unix_decision("l", &cfg, Some(&Dir::Writable), &SocketFile::Absent, own);
        assert_eq!(free.status, Status::Ok);
        assert!(
            free.detail.contains("free; socket mode 0660"),
            "{}",
            free.detail
        );
        let stale = unix_decision("l", &cfg, Some(&Dir::Writable), &SocketFile::Stale, own);
        assert_eq!(stale.status, Status::Ok);
        assert!(stale.detail.contains("stale"));
        let created = Dir::Missing {
            ancestor: "/run".into(),
            writable: true,
        };
        let check = unix_decision("l", &cfg, Some(&created), &SocketFile::Absent, own);
        assert!(check.detail.contains("created at start"));
        let denied = Dir::Missing {
            ancestor: "/run".into(),
            writable: false,
        };
        assert_eq!(
            unix_decision("l", &cfg, Some(&denied), &SocketFile::Absent, own).status,
            Status::Fail
        );
        let served = SocketFile::Served(Some(Holder {
            pid: 7,
            command: "socat".into(),
        }));
        let check = unix_decision("l", &cfg, Some(&Dir::Writable), &served, own);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("socat (pid 7)"), "{}", check.detail);
        let ours = SocketFile::Served(Some(Holder {
            pid: 8,
            command: "cistern".into(),
        }));
        let check = unix_decision("l", &cfg, Some(&Dir::Writable), &ours, own);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("already running"));
        assert_eq!(
            unix_decision("l", &cfg, None, &SocketFile::NotASocket, own).status,
            Status::Fail
        );
        let read_only = Dir::NotWritable("Permission denied".into());
        let check = unix_decision("l", &cfg, Some(&read_only), &SocketFile::Absent, own);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("cannot create the socket"));
    }

    #[test]
    fn bind_decisions_name_the_port_and_what_holds_it() {
        let addr: SocketAddr = "127.0.0.1:2375".parse().unwrap();
        assert_eq!(bind_decision("t", addr, None, None).status, Status::Ok);
        let in_use = std::io::Error::from(ErrorKind::AddrInUse);
        let holder = Holder {
            pid: 42,
            command: "nginx".into(),
        };
        let check = bind_decision("t", addr, Some(&in_use), Some(&holder));
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("port 2375"), "{}", check.detail);
        assert!(check.detail.contains("nginx (pid 42)"), "{}", check.detail);
        let denied = std::io::Error::from(ErrorKind::PermissionDenied);
        let check = bind_decision("t", addr, Some(&denied), None);
        assert!(check.fix.unwrap().contains("CAP_NET_BIND_SERVICE"));
    }

    #[test]
    fn a_probe_that_got_any_http_answer_reached_the_proxy() {
        let http: SocketAddr = "172.17.0.1:80".parse().unwrap();
        let refused = "wget: server returned error: HTTP/1.1 403 Forbidden";
        let check = probe_decision("c", http, "host-gateway", 1, refused);
        assert_eq!(check.status, Status::Ok);
        let down = "wget: can't connect to remote host (172.17.0.1): Connection refused";
        let check = probe_decision("c", http, "host-gateway", 1, down);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("Connection refused"));
        assert!(check.fix.unwrap().contains("firewall"));
        assert_eq!(printable(b"\x02\0\0\0\0\0\0\x08wget: x\n"), "wget: x");
        assert_eq!(
            printable(b"\x01\0\0\0\0\0\0\x02a\n\x02\0\0\0\0\0\0\x41b"),
            "a b"
        );
    }

    #[test]
    fn directory_decisions() {
        let dir = Path::new("/var/lib/cistern");
        assert_eq!(dir_decision("d", dir, &Dir::Writable).status, Status::Ok);
        assert_eq!(
            dir_decision("d", dir, &Dir::NotWritable("denied".into())).status,
            Status::Fail
        );
        let missing = Dir::Missing {
            ancestor: "/var/lib".into(),
            writable: false,
        };
        assert_eq!(dir_decision("d", dir, &missing).status, Status::Fail);
    }

    #[test]
    fn proc_tables_give_the_listening_sockets_inodes() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0CEB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0CEB 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_tcp_inodes(tcp, 3307), vec![12345]);
        assert!(listening_tcp_inodes(tcp, 80).is_empty());
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/cistern/docker.sock\n0000000000000000: 00000003 00000000 00000000 0001 03 4343 /run/cistern/docker.sock\n";
        assert_eq!(
            listening_unix_inodes(unix, Path::new("/run/cistern/docker.sock")),
            vec![4242]
        );
    }
}
