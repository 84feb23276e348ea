//! The admin listener as an operator sees it, against the real daemon:
//! health and readiness, Prometheus metrics after real requests and a
//! refusal, the JSON API (a tenant's container, a job socket), the OpenAPI
//! document against what is served, a unix socket of its owner's only, and
//! the status page rendered by headless Chromium after real traffic.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// An answer from the admin listener.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn exchange(mut stream: impl Read + Write, method: &str, path: &str) -> Answer {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn request(admin: SocketAddr, method: &str, path: &str) -> Answer {
    let stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    exchange(stream, method, path)
}

fn get(admin: SocketAddr, path: &str) -> Answer {
    request(admin, "GET", path)
}

/// A fresh admin address, and the YAML that puts the listener there with a
/// state directory of its own (the job and socket records are there).
fn admin_yaml(state: &tempfile::TempDir) -> (SocketAddr, String) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        "admin:\n  tcp: {admin}\nstate_dir: {}\n",
        state.path().display()
    );
    (admin, yaml)
}

/// Waits until the admin listener answers (it starts after the Docker
/// listeners).
fn wait_admin(admin: SocketAddr, cistern: &Cistern) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(admin).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the admin listener did not start:\n{}",
            cistern.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of one series (`name{labels}`) in a Prometheus text answer.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// A privileged container create, which the default policy refuses; the
/// query must never show in the admin API.
fn refused_privileged_create(socket: &Path) -> (u16, String) {
    let body = format!(
        r#"{{"Image":"{}","HostConfig":{{"Privileged":true}}}}"#,
        busybox()
    );
    let request = format!(
        "POST /v1.41/containers/create?name=query-stays-private HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(socket, &request).unwrap()
}

#[test]
fn health_readiness_and_every_documented_path_answer() {
    let state = tempfile::tempdir().unwrap();
    let (admin, yaml) = admin_yaml(&state);
    let cistern = Cistern::start(&yaml);
    wait_admin(admin, &cistern);

    let health = get(admin, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(admin, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["daemon"]["ok"], true);

    // Every path the OpenAPI document describes is served, and nothing
    // else is.
    let doc = get(admin, "/api/v1/openapi.json");
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{paths:?}");
    for path in paths.keys() {
        let got = get(admin, path);
        assert_eq!(got.status, 200, "{path}: {}", got.body);
    }
    let unknown = get(admin, "/api/v1/nothing-here");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("cistern: "));
    // Read-only.
    let post = request(admin, "POST", "/api/v1/tenants");
    assert_eq!(post.status, 405);
    // The status page is self-contained.
    let page = get(admin, "/");
    assert!(page
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    assert!(page
        .head
        .to_ascii_lowercase()
        .contains("content-security-policy: default-src 'none'"));
}

#[test]
fn readiness_fails_naming_the_daemon_when_its_socket_is_dead() {
    let state = tempfile::tempdir().unwrap();
    let (admin, yaml) = admin_yaml(&state);
    let dead = tempfile::tempdir().unwrap();
    let cistern = Cistern::start_upstream(&dead.path().join("docker.sock"), &yaml);
    wait_admin(admin, &cistern);

    assert_eq!(get(admin, "/healthz").status, 200);
    let ready = get(admin, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["failed"], serde_json::json!(["daemon"]));
    assert!(ready["checks"]["daemon"]["error"].is_string(), "{ready}");
}

#[test]
fn metrics_and_the_api_show_requests_refusals_and_a_tenants_container() {
    let state = tempfile::tempdir().unwrap();
    let (admin, yaml) = admin_yaml(&state);
    let instance = unique("admin");
    let _instance = InstanceCleanup(instance.clone());
    let cistern = Cistern::start(&format!("{yaml}instance: {instance}\n"));
    wait_admin(admin, &cistern);

    let name = unique("admin-listed");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["create", "--name", &name, busybox(), "true"]),
    );
    let (status, answer) = refused_privileged_create(&cistern.socket);
    assert_eq!(status, 403, "{answer}");

    let metrics = get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    let text = &metrics.body;
    let created = series(
        text,
        "cistern_docker_requests_total{group=\"containers\",status=\"201\"}",
    );
    assert!(created >= Some(1.0), "{text}");
    let refused = series(
        text,
        "cistern_docker_requests_total{group=\"containers\",status=\"403\"}",
    );
    assert!(refused >= Some(1.0), "{text}");
    assert_eq!(
        series(
            text,
            "cistern_policy_refusals_total{rule=\"privileged\",action=\"refused\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE cistern_policy_refusals_total counter"));
    assert_eq!(series(text, "cistern_tenants"), Some(1.0), "{text}");
    assert_eq!(series(text, "cistern_job_sockets"), Some(0.0), "{text}");
    assert!(!text.contains("cistern_cache_"), "caching is off: {text}");

    // The tenant that created the container sees it listed.
    let tenants = get(admin, "/api/v1/tenants").json();
    assert_eq!(tenants["instance"], instance.as_str());
    let tenant = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == name.as_str())
        })
        .unwrap_or_else(|| panic!("{name} not listed: {tenants}"))
        .clone();
    let tenant_name = tenant["name"].as_str().unwrap();

    // The refusal: its rule, the same tenant, the path without its query.
    let refusals = get(admin, "/api/v1/refusals");
    assert!(!refusals.body.contains("query-stays-private"));
    assert!(!refusals.body.contains("Privileged\":true"));
    let refusals = refusals.json();
    let latest = &refusals["refusals"][0];
    assert_eq!(latest["rule"], "privileged", "{refusals}");
    assert_eq!(latest["tenant"], tenant_name);
    assert_eq!(latest["method"], "POST");
    assert_eq!(latest["endpoint"], "/v1.41/containers/create");
    assert_eq!(latest["audit"], false);

    // Without caching, the cache and CA parts say so.
    assert_eq!(get(admin, "/api/v1/cache").json()["enabled"], false);
    assert_eq!(get(admin, "/api/v1/cas").json()["enabled"], false);
}

#[test]
fn a_job_socket_is_listed_and_counted_while_its_job_exists() {
    let state = tempfile::tempdir().unwrap();
    let (admin, yaml) = admin_yaml(&state);
    let instance = unique("admin-job");
    let _instance = InstanceCleanup(instance.clone());
    let extra =
        format!("{yaml}instance: {instance}\njobs:\n  rules:\n    - label: ci.job.type=build\n");
    let cistern = Cistern::start(&extra);
    wait_admin(admin, &cistern);

    let name = unique("admin-job");
    let _cleanup = Cleanup::container(&name);
    let id = run_ok(cistern.docker().args([
        "create",
        "--name",
        &name,
        "--label",
        "ci.job.type=build",
        busybox(),
        "true",
    ]))
    .trim()
    .to_owned();

    let sockets = get(admin, "/api/v1/sockets").json();
    let jobs = sockets["jobs"].as_array().unwrap();
    let job = jobs
        .iter()
        .find(|j| j["container"] == id.as_str())
        .unwrap_or_else(|| panic!("job of {id} not listed: {sockets}"));
    assert!(job["tenant"].as_str().unwrap().starts_with("job-"), "{job}");
    assert!(job["socket"].as_str().unwrap().ends_with("/docker.sock"));
    let metrics = get(admin, "/metrics").body;
    assert_eq!(
        series(&metrics, "cistern_job_sockets"),
        Some(1.0),
        "{metrics}"
    );
}

#[test]
fn on_a_unix_socket_the_admin_listener_is_its_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let cistern = Cistern::start(&format!("admin:\n  unix: {}\n", path.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", cistern.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let health = exchange(stream, "GET", "/healthz");
    assert_eq!(health.status, 200);
}

/// Runs headless Chromium on `url` with `args`; its standard output.
fn chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args([
            "90",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg("--disable-dev-shm-usage")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1280,1700", "--virtual-time-budget=10000"])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (Debian's `chromium`; scripts/test installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id}:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cache_paying_off_tenants_and_refusals() {
    const DOMAIN: &str = "deb.example.test";
    const FILE: &str = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let origin = origin::Origin::start(None).await;
    origin.put(FILE, origin::File::new(origin::random_bytes(256 << 10, 7)));

    let state = tempfile::tempdir().unwrap();
    let (admin, yaml) = admin_yaml(&state);
    let instance = unique("admin-page");
    let _instance = InstanceCleanup(instance.clone());
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "{yaml}instance: {instance}\ncaching:\n  domains: [{DOMAIN}]\n  discover: {{host: false}}\n  state_dir: {s}/ca\n  cache_dir: {s}/cache\n  proxy:\n    http: {http}\n    https: 127.0.0.1:{https}\n  upstream:\n    overrides:\n      {DOMAIN}: {o}\n",
        s = state.path().display(),
        https = free_port(),
        o = origin.addr,
    );
    let cistern = tokio::task::block_in_place(|| Cistern::start(&extra));
    tokio::task::block_in_place(|| wait_admin(admin, &cistern));

    // A download through the caching proxy, twice: a miss, then a hit.
    for _ in 0..2 {
        let got = tokio::task::block_in_place(|| {
            let mut s = std::net::TcpStream::connect(http)
                .unwrap_or_else(|e| panic!("{http}: {e}\n{}", cistern.logs()));
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(
                s,
                "GET {FILE} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            raw
        });
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got[..200.min(got.len())])
        );
    }
    assert_eq!(
        origin.counts(FILE).requests,
        1,
        "the second came from the cache"
    );

    // A tenant with a container, and a refused privileged create.
    let name = unique("admin-page");
    let _cleanup = Cleanup::container(&name);
    tokio::task::block_in_place(|| {
        run_ok(
            cistern
                .docker()
                .args(["create", "--name", &name, busybox(), "true"]),
        );
        let (status, answer) = refused_privileged_create(&cistern.socket);
        assert_eq!(status, 403, "{answer}");
    });
    let refusals = get(admin, "/api/v1/refusals").json();
    let tenant = refusals["refusals"][0]["tenant"]
        .as_str()
        .unwrap()
        .to_owned();
    let cas = get(admin, "/api/v1/cas").json();
    assert_eq!(
        cas["cas"][0]["name_constraints"],
        serde_json::json!([DOMAIN])
    );
    let metrics = get(admin, "/metrics").body;
    let hits = series(
        &metrics,
        &format!("cistern_cache_hits_total{{domain=\"{DOMAIN}\"}}"),
    );
    assert_eq!(hits, Some(1.0), "{metrics}");
    assert!(
        series(
            &metrics,
            &format!("cistern_origin_latency_seconds_count{{domain=\"{DOMAIN}\"}}")
        ) >= Some(1.0),
        "{metrics}"
    );
    let expiry = metrics
        .lines()
        .find(|l| l.starts_with("cistern_ca_expiry_seconds{generation="))
        .unwrap_or_else(|| panic!("{metrics}"));
    let left: f64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(left > 3600.0, "{expiry}");

    // The page, as a browser renders it.
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::block_in_place(|| chromium(profile.path(), &url, &["--dump-dom"]));
    assert!(dom.contains("privileged"), "the refusal's rule:\n{dom}");
    assert!(dom.contains(&tenant), "the tenant {tenant}:\n{dom}");
    assert!(dom.contains(DOMAIN), "the domain:\n{dom}");
    let ratio = element_text(&dom, "hit-ratio");
    let percent: f64 = ratio
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("hit ratio `{ratio}`:\n{dom}"));
    assert!(percent > 0.0, "{ratio}");
    assert!(element_text(&dom, "verdict").starts_with("Yes"), "{dom}");

    let shot = cistern.dir.path().join("status-page.png");
    tokio::task::block_in_place(|| {
        chromium(
            profile.path(),
            &url,
            &[&format!("--screenshot={}", shot.display())],
        )
    });
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "{} bytes: an empty page?", png.len());
    println!("status page screenshot: {}", shot.display());
    if let Some(keep) = std::env::var_os("CISTERN_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
