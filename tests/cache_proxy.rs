//! The caching proxy as a client sees it: the real cistern binary with a
//! `caching:` section on loopback ports, local origins (HTTP, and HTTPS with
//! a test CA passed as an extra root) pointed at by `upstream.overrides`,
//! and a host-side hyper/rustls client that trusts cistern's CA (read with
//! `cistern ca show`) and connects to the proxy with the right SNI and Host.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use origin::{random_bytes, Behaviour, File, Origin, TestCa};
use tokio::net::TcpStream;

const DEB: &str = "deb.example.test";
const PYPI: &str = "pypi.example.test";
const NPM: &str = "npm.example.test";
/// Served by the origins but not a cached domain.
const OTHER: &str = "other.example.test";

/// Origins, cistern, and the directories that outlive a cistern restart.
struct Setup {
    https_origin: Origin,
    http_origin: Origin,
    dirs: tempfile::TempDir,
    cistern: Option<support::Cistern>,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    /// The forward proxy's address (`FORWARD_ADDR` in the extra config).
    forward: SocketAddr,
    extra: String,
    ca_pem: String,
    /// Where the HTTP and HTTPS listeners bind instead of loopback ports
    /// (e.g. where containers reach the host).
    http_bind: Option<String>,
    https_bind: Option<String>,
    /// Points the PyPI domain's origin at cistern's own HTTP listener.
    pypi_loops: bool,
    /// More keys under `caching.proxy` (4-space indented lines).
    proxy_extra: String,
}

impl Setup {
    async fn start(extra: &str) -> Setup {
        Setup::start_in(extra, tempfile::tempdir().unwrap()).await
    }

    /// Starts with the cache in `dirs/cache` (which may be prepared, e.g.
    /// a small filesystem mounted there).
    async fn start_in(extra: &str, dirs: tempfile::TempDir) -> Setup {
        let test_ca = TestCa::new(&[DEB, NPM, OTHER]);
        let https_origin = Origin::start(Some(test_ca.server.clone())).await;
        let http_origin = Origin::start(None).await;
        std::fs::write(dirs.path().join("origin-ca.pem"), &test_ca.ca_pem).unwrap();
        let mut setup = Setup {
            https_origin,
            http_origin,
            dirs,
            cistern: None,
            http: "127.0.0.1:0".parse().unwrap(),
            https: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            forward: "127.0.0.1:0".parse().unwrap(),
            extra: extra.to_owned(),
            ca_pem: String::new(),
            http_bind: None,
            https_bind: None,
            pypi_loops: false,
            proxy_extra: String::new(),
        };
        setup.restart();
        setup
    }

    /// Starts with `proxy_extra` added under `caching.proxy`.
    async fn start_with_proxy(proxy_extra: &str) -> Setup {
        let mut setup = Setup::start("").await;
        setup.proxy_extra = proxy_extra.to_owned();
        setup.restart();
        setup
    }

    fn config_path(&self) -> PathBuf {
        self.dirs.path().join("cistern.yaml")
    }

    /// (Re)starts cistern on fresh ports with the same cache and state.
    fn restart(&mut self) {
        if let Some(mut old) = self.cistern.take() {
            old.signal(nix::sys::signal::Signal::SIGTERM);
            old.wait_exit(Duration::from_secs(20));
        }
        self.http = match &self.http_bind {
            Some(bind) => bind.parse().unwrap(),
            None => SocketAddr::from(([127, 0, 0, 1], support::free_port())),
        };
        self.https = match &self.https_bind {
            Some(bind) => bind.parse().unwrap(),
            None => SocketAddr::from(([127, 0, 0, 1], support::free_port())),
        };
        self.admin = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        self.forward = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let d = self.dirs.path();
        let config = format!(
            "admin:\n  tcp: {admin}\nupstream:\n  unix: {daemon}\nlisteners:\n  - unix:\n      path: {sock}\ncaching:\n  domains: [{DEB}, {PYPI}, {NPM}]\n  discover: {{host: false}}\n  state_dir: {state}\n  cache_dir: {cache}\n  proxy:\n    http: {http}\n    https: {https}\n{proxy_extra}  upstream:\n    extra_roots: [{root}]\n    overrides:\n      {DEB}: {o1}\n      {NPM}: {o1}\n      {PYPI}: {pypi}\n      \"{OTHER}:443\": {o1}\n      \"{OTHER}:80\": {o2}\n{extra}",
            daemon = support::daemon_socket().display(),
            sock = d.join("unused.sock").display(),
            state = d.join("state").display(),
            cache = d.join("cache").display(),
            http = self.http,
            https = self.https,
            admin = self.admin,
            root = d.join("origin-ca.pem").display(),
            o1 = self.https_origin.addr,
            o2 = self.http_origin.addr,
            pypi = if self.pypi_loops {
                self.http
            } else {
                self.http_origin.addr
            },
            extra = self.extra.replace("FORWARD_ADDR", &self.forward.to_string()),
            proxy_extra = self.proxy_extra,
        );
        std::fs::write(self.config_path(), &config).unwrap();
        let run = tempfile::tempdir().unwrap();
        let socket = run.path().join("docker.sock");
        let config = config.replace(
            &d.join("unused.sock").display().to_string(),
            &socket.display().to_string(),
        );
        let cistern = tokio::task::block_in_place(|| {
            support::Cistern::start_with_config(run, socket, &config)
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(self.admin).is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy did not listen:\n{}",
                cistern.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.cistern = Some(cistern);
        self.ca_pem = self.cistern_cmd(&["ca", "show"]);
    }

    fn cistern_cmd(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_cistern"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cistern {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A GET that must be answered within 20 seconds.
    async fn get_with_timeout(&self, url: &str) -> Got {
        tokio::time::timeout(Duration::from_secs(20), self.client().get(url))
            .await
            .unwrap_or_else(|_| panic!("no answer for {url}:\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        self.cistern.as_ref().map(|c| c.logs()).unwrap_or_default()
    }

    /// `n` concurrent GETs of `url`, each on its own connection.
    fn spawn_gets(&self, url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Got>> {
        let client = Arc::new(self.client());
        (0..n)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_owned());
                tokio::spawn(async move { client.get(&url).await })
            })
            .collect()
    }

    /// A client trusting only cistern's CA.
    fn client(&self) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Client::new(roots, self.http, self.https)
    }
}

struct Client {
    roots: Arc<rustls::RootCertStore>,
    http: SocketAddr,
    https: SocketAddr,
}

#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    /// Err when the transfer broke off.
    body: Result<Bytes, String>,
    /// The protocol agreed by ALPN, over TLS.
    alpn: Option<Vec<u8>>,
}

impl Got {
    fn bytes(&self) -> &Bytes {
        self.body.as_ref().expect("complete body")
    }
}

impl Client {
    fn new(roots: rustls::RootCertStore, http: SocketAddr, https: SocketAddr) -> Client {
        Client {
            roots: Arc::new(roots),
            http,
            https,
        }
    }

    /// A TLS client connection over `tcp`, trusting `roots`, for server
    /// name `sni`; `h2` offers only HTTP/2 by ALPN, else only HTTP/1.1.
    async fn tls(
        &self,
        tcp: TcpStream,
        sni: &str,
        h2: bool,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    }

    async fn get(&self, url: &str) -> Got {
        self.send("GET", url, &[], None, false).await.unwrap()
    }

    /// Sends one request on a new connection. `sni` overrides the TLS name
    /// (default: the URL's host); `h2` offers only HTTP/2 by ALPN.
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        sni: Option<&str>,
        h2: bool,
    ) -> Result<Got, String> {
        let uri: Uri = url.parse().unwrap();
        let host = uri.host().unwrap().to_owned();
        let https = uri.scheme_str() == Some("https");
        let tcp = TcpStream::connect(if https { self.https } else { self.http })
            .await
            .map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method);
        req = if h2 {
            req.uri(uri.clone())
        } else {
            req.uri(uri.path_and_query().unwrap().as_str())
                .header("host", &host)
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        if https {
            let tls = self.tls(tcp, sni.unwrap_or(&host), h2).await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let got = exchange(TokioIo::new(tls), req, h2).await?;
            Ok(Got { alpn, ..got })
        } else {
            exchange(TokioIo::new(tcp), req, h2).await
        }
    }
}

async fn exchange<IO>(io: IO, req: Request<Empty<Bytes>>, h2: bool) -> Result<Got, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let res = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Ok(Got {
        status,
        headers,
        body,
        alpn: None,
    })
}

/// Puts repository-shaped trees on the origins; returns (url, origin
/// path, is_index) for every file.
fn repositories(s: &Setup) -> Vec<(String, String, bool)> {
    let mut files = Vec::new();
    let mut put =
        |origin: &Origin, scheme: &str, host: &str, path: &str, file: File, index: bool| {
            origin.put(path, file);
            files.push((format!("{scheme}://{host}{path}"), path.to_owned(), index));
        };
    // apt over HTTPS.
    let deb = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    put(
        &s.https_origin,
        "https",
        DEB,
        "/debian/dists/stable/Release",
        File::new("Origin: Example\nSuite: stable\n"),
        true,
    );
    put(
        &s.https_origin,
        "https",
        DEB,
        "/debian/dists/stable/main/binary-amd64/Packages",
        File::new(format!("Package: hello\nFilename: {deb}\n")),
        true,
    );
    put(
        &s.https_origin,
        "https",
        DEB,
        deb,
        File::new(random_bytes(300_000, 1)),
        false,
    );
    // A Python simple index with a wheel, over plain HTTP.
    let whl = "/packages/ab/cd/demo-1.0-py3-none-any.whl";
    put(
        &s.http_origin,
        "http",
        PYPI,
        "/simple/demo/",
        File::new(format!("<a href=\"{whl}\">demo-1.0</a>")),
        true,
    );
    put(
        &s.http_origin,
        "http",
        PYPI,
        whl,
        File::new(random_bytes(200_000, 2)),
        false,
    );
    // An npm packument with a tarball, over HTTPS.
    put(
        &s.https_origin,
        "https",
        NPM,
        "/demo",
        File::new("{\"name\":\"demo\",\"versions\":{\"1.0.0\":{}}}"),
        true,
    );
    put(
        &s.https_origin,
        "https",
        NPM,
        "/demo/-/demo-1.0.0.tgz",
        File::new(random_bytes(150_000, 3)),
        false,
    );
    files
}

fn origin_of<'a>(s: &'a Setup, url: &str) -> &'a Origin {
    if url.starts_with("http://") {
        &s.http_origin
    } else {
        &s.https_origin
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_downloads_come_from_the_cache_and_index_files_are_revalidated() {
    let s = Setup::start("").await;
    let client = s.client();
    let files = repositories(&s);
    for (url, path, index) in files.clone() {
        let origin = origin_of(&s, &url);
        let first = client.get(&url).await;
        assert_eq!(first.status, 200, "{url}: {first:?}\n{}", s.logs());
        assert_eq!(origin.counts(&path).requests, 1, "{url}");
        let second = client.get(&url).await;
        assert_eq!(second.status, 200, "{url}");
        assert_eq!(second.bytes(), first.bytes(), "{url}: same bytes");
        let counts = origin.counts(&path);
        if index {
            // Asked again, conditionally, and the origin said 304.
            assert_eq!(counts.requests, 2, "{url}");
            assert_eq!(counts.conditional, 1, "{url}");
            assert_eq!(counts.not_modified, 1, "{url}");
            assert_eq!(second.headers["x-cistern-cache"], "revalidated", "{url}");
        } else {
            assert_eq!(counts.requests, 1, "{url}: served from cache");
            assert_eq!(second.headers["x-cistern-cache"], "hit", "{url}");
        }
    }
    // Origin connections are kept alive and reused.
    for origin in [&s.https_origin, &s.http_origin] {
        let requests: u32 = files
            .iter()
            .filter(|(url, _, _)| std::ptr::eq(origin_of(&s, url), origin))
            .map(|(_, path, _)| origin.counts(path).requests)
            .sum();
        assert!(
            origin.connections() * 2 <= requests,
            "{requests} requests took {} connections",
            origin.connections()
        );
    }
    // The npm tarball again over HTTP/2, negotiated by ALPN.
    let got = client
        .send(
            "GET",
            &format!("https://{NPM}/demo/-/demo-1.0.0.tgz"),
            &[],
            None,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        got.alpn.as_deref(),
        Some(&b"h2"[..]),
        "cistern agreed on h2"
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes(), &random_bytes(150_000, 3));
    assert_eq!(s.https_origin.counts("/demo/-/demo-1.0.0.tgz").requests, 1);
    // A client offering only HTTP/1.1 gets HTTP/1.1.
    let url = format!("https://{NPM}/demo/-/demo-1.0.0.tgz");
    let got = client.send("GET", &url, &[], None, false).await.unwrap();
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // HEAD and client conditionals are answered from the cache.
    let url = format!("https://{DEB}/debian/pool/main/h/hello/hello_2.10-3_amd64.deb");
    let head = client.send("HEAD", &url, &[], None, false).await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "300000");
    let etag = head.headers["etag"].to_str().unwrap().to_owned();
    let cond = client
        .send("GET", &url, &[("if-none-match", &etag)], None, false)
        .await
        .unwrap();
    assert_eq!(cond.status, 304);
    assert_eq!(
        s.https_origin
            .counts("/debian/pool/main/h/hello/hello_2.10-3_amd64.deb")
            .requests,
        1
    );

    // Counters per domain on the admin listener.
    let metrics = Client::new(rustls::RootCertStore::empty(), s.admin, s.admin)
        .send("GET", "http://localhost/metrics", &[], None, false)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(metrics.bytes()).into_owned();
    let metric = |name: &str, domain: &str| -> u64 {
        let prefix = format!("{name}{{domain=\"{domain}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    // deb: the .deb twice, then HEAD; the two index files revalidated.
    assert_eq!(metric("cistern_cache_hits_total", DEB), 3);
    assert_eq!(metric("cistern_cache_revalidations_total", DEB), 2);
    assert_eq!(metric("cistern_cache_misses_total", PYPI), 2);
    assert_eq!(metric("cistern_cache_origin_errors_total", NPM), 0);
    // Two tarball hits (HTTP/1.1 and HTTP/2) plus the revalidated packument.
    assert!(metric("cistern_cache_bytes_from_cache_total", NPM) >= 300_000);
    assert!(metric("cistern_cache_bytes_from_origin_total", NPM) >= 150_000);
    // One log event per request with the cache state.
    assert!(s.logs().contains("state=\"revalidated\""), "{}", s.logs());
}

/// Puts a tree shaped like each other ecosystem's repository on the HTTPS
/// origin, under one mirror host by path prefix (as Artifactory or Nexus
/// serve many repositories: the rules go by path shape, never by host
/// name); returns (url, origin path, is_index) for every file.
fn ecosystems(s: &Setup) -> Vec<(String, String, bool)> {
    let hex = "3b5ac6b2e8a4c9d7f0e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
    let primary = format!("/fedora/39/x86_64/os/repodata/{hex}-primary.xml.gz");
    let maven = "/maven2/org/apache/commons/commons-lang3";
    let text = "/goproxy/modules.example.test/x/text";
    let files: Vec<(String, bool)> = [
        // apk
        ("/alpine/v3.19/main/x86_64/APKINDEX.tar.gz", true),
        (
            "/alpine/v3.19/main/x86_64/musl-1.2.4_git20230717-r4.apk",
            false,
        ),
        // dnf/yum
        ("/fedora/39/x86_64/os/repodata/repomd.xml", true),
        (&primary, false),
        (
            "/fedora/39/x86_64/os/Packages/h/hello-2.12.1-2.fc39.x86_64.rpm",
            false,
        ),
        // cargo sparse index and downloads
        ("/cargo/index/config.json", true),
        ("/cargo/index/3/s/syn", true),
        ("/cargo/index/se/rd/serde", true),
        ("/cargo/api/v1/crates/serde/1.0.197/download", false),
        ("/cargo/crates/syn/syn-2.0.48.crate", false),
        // Go module proxy
        (&format!("{text}/@v/list"), true),
        (&format!("{text}/@latest"), true),
        (&format!("{text}/@v/v0.14.0.info"), false),
        (&format!("{text}/@v/v0.14.0.mod"), false),
        (&format!("{text}/@v/v0.14.0.zip"), false),
        // Maven/Gradle: a SNAPSHOT jar is rebuilt in place.
        (&format!("{maven}/maven-metadata.xml"), true),
        (&format!("{maven}/3.14.0/commons-lang3-3.14.0.pom"), false),
        (&format!("{maven}/3.14.0/commons-lang3-3.14.0.jar"), false),
        (
            &format!("{maven}/3.14.0/commons-lang3-3.14.0.jar.sha1"),
            false,
        ),
        (
            "/maven2/com/example/app/1.1-SNAPSHOT/app-1.1-SNAPSHOT.jar",
            true,
        ),
        // RubyGems compact index, gems and gemspecs
        ("/rubygems/versions", true),
        ("/rubygems/info/rails", true),
        ("/rubygems/gems/rails-7.1.3.gem", false),
        ("/rubygems/quick/Marshal.4.8/rails-7.1.3.gemspec.rz", false),
        // conda
        ("/conda-forge/linux-64/repodata.json", true),
        ("/conda-forge/linux-64/repodata.json.zst", true),
        (
            "/conda-forge/linux-64/numpy-1.26.4-py312heda63a1_0.conda",
            false,
        ),
        (
            "/conda-forge/noarch/requests-2.31.0-pyhd8ed1ab_0.tar.bz2",
            false,
        ),
    ]
    .iter()
    .map(|(path, index)| (path.to_string(), *index))
    .collect();
    files
        .into_iter()
        .enumerate()
        .map(|(i, (path, index))| {
            let body = if index {
                Bytes::from(format!("index {path} v1\n"))
            } else {
                random_bytes(40_000 + i * 1000, 100 + i as u64)
            };
            s.https_origin.put(&path, File::new(body));
            (format!("https://{DEB}{path}"), path, index)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ecosystem_second_downloads_come_from_the_cache_and_its_indexes_cost_a_304() {
    let s = Setup::start("").await;
    let client = s.client();
    for (url, path, index) in ecosystems(&s) {
        let first = client.get(&url).await;
        assert_eq!(first.status, 200, "{url}: {first:?}\n{}", s.logs());
        assert_eq!(first.headers["x-cistern-cache"], "miss", "{url}");
        let second = client.get(&url).await;
        assert_eq!(second.status, 200, "{url}");
        assert_eq!(second.bytes(), first.bytes(), "{url}: same bytes");
        let counts = s.https_origin.counts(&path);
        if index {
            // Asked again, conditionally, and the origin said 304.
            assert_eq!(
                (counts.requests, counts.conditional, counts.not_modified),
                (2, 1, 1),
                "{url}"
            );
            assert_eq!(second.headers["x-cistern-cache"], "revalidated", "{url}");
        } else {
            assert_eq!(counts.requests, 1, "{url}: served from the cache");
            assert_eq!(second.headers["x-cistern-cache"], "hit", "{url}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_for_one_uncached_file_make_one_origin_request() {
    let s = Setup::start("").await;
    let path = "/debian/pool/main/b/big/big_1.0_amd64.deb";
    let mut file = File::new(random_bytes(2_000_000, 7));
    file.behaviour = Behaviour::Slow(Duration::from_millis(700));
    s.https_origin.put(path, file);
    let tasks = s.spawn_gets(&format!("https://{DEB}{path}"), 50);
    let expected = random_bytes(2_000_000, 7);
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.bytes(), &expected);
    }
    assert_eq!(s.https_origin.counts(path).requests, 1, "{}", s.logs());
}

/// A client that started the plain-HTTP download of a PyPI `path` (a miss)
/// and has read its first bytes; it hangs up when dropped.
struct FirstClient {
    /// Held, unread: the client neither reads on nor hangs up (until
    /// [`FirstClient::read_rest`]).
    body: hyper::body::Incoming,
    first: Bytes,
    _send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    conn: tokio::task::JoinHandle<hyper::Result<()>>,
}

impl FirstClient {
    async fn start(s: &Setup, path: &str) -> FirstClient {
        let tcp = TcpStream::connect(s.http).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", PYPI)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cistern-cache"], "miss");
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        FirstClient {
            body,
            first,
            _send: send,
            conn,
        }
    }
}

impl FirstClient {
    /// Reads the rest of the body at last: everything it got.
    async fn read_rest(&mut self) -> Vec<u8> {
        let mut got = self.first.to_vec();
        while let Some(frame) = self.body.frame().await {
            if let Ok(data) = frame.expect("the rest of the body").into_data() {
                got.extend_from_slice(&data);
            }
        }
        got
    }
}

impl Drop for FirstClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Twenty requests for one file that the origin sends over about two
/// seconds, far longer than followers wait for a download to start.
async fn twenty_at_once(s: &Setup, path: &str, body: &Bytes, cut: bool) -> Vec<Got> {
    let file = File::trickling(body.clone(), Duration::from_millis(250), cut);
    s.https_origin.put(path, file);
    let mut got = Vec::new();
    for task in s.spawn_gets(&format!("https://{DEB}{path}"), 20) {
        got.push(task.await.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_read_along_with_a_long_download() {
    // Followers wait at most 1s for the download to start; it then takes 2s.
    let s = Setup::start("  cache:\n    lock_timeout: 1s\n").await;
    let path = "/debian/pool/main/t/toolchain/toolchain_1.0_amd64.deb";
    let body = random_bytes(3 * 1024 * 1024 + 5, 61);
    let got = twenty_at_once(&s, path, &body, false).await;
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for got in &got {
        assert_eq!(got.status, 200);
        assert_eq!(got.bytes(), &body);
        let state = got.headers["x-cistern-cache"].to_str().unwrap().to_owned();
        *states.entry(state).or_default() += 1;
    }
    // One download, which the other nineteen read as it arrived.
    assert_eq!(s.https_origin.counts(path).requests, 1, "{}", s.logs());
    let want = std::collections::BTreeMap::from([("hit".to_owned(), 19), ("miss".to_owned(), 1)]);
    assert_eq!(states, want);
    assert!(s.logs().contains("read along with the download in flight"));
    // And it was stored.
    let again = s.client().get(&format!("https://{DEB}{path}")).await;
    assert_eq!(again.headers["x-cistern-cache"], "hit");
    assert_eq!(again.bytes(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_reading_along_finish_when_the_first_client_hangs_up() {
    let s = Setup::start("").await;
    let path = "/simple/pkg/pkg-2.0-py3-none-any.whl";
    let body = random_bytes(4 * 1024 * 1024 + 3, 63);
    let file = File::trickling(body.clone(), Duration::from_millis(150), false);
    s.http_origin.put(path, file);
    // The first client gets the head and its first bytes...
    let first = FirstClient::start(&s, path).await;
    // ... three more join the download in flight ...
    let followers = s.spawn_gets(&format!("http://{PYPI}{path}"), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and the first one hangs up: the download goes on for them.
    drop(first);
    for follower in followers {
        let got = follower.await.unwrap();
        assert_eq!(got.headers["x-cistern-cache"], "hit");
        assert!(got.body.as_ref().is_ok_and(|b| b == &body), "{}", s.logs());
    }
    assert_eq!(s.http_origin.counts(path).requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_client_that_stops_reading_does_not_hold_back_requests_reading_along() {
    // Followers would give up on a download without progress only after
    // 30s; they must not need to.
    let s = Setup::start("  cache:\n    lock_timeout: 30s\n").await;
    // Far more than the socket buffers hold: without a hand-over, the
    // download would stop when the first client stops reading.
    let path = "/simple/pkg/pkg-3.0-py3-none-any.whl";
    let body = random_bytes(48 * 1024 * 1024, 64);
    s.http_origin.put(path, File::new(body.clone()));
    let mut stuck = FirstClient::start(&s, path).await;
    // It holds the connection open and reads no more. Others asking for
    // the file read along with the download, which goes on at the origin's
    // pace without it.
    let followers = s.spawn_gets(&format!("http://{PYPI}{path}"), 2);
    for follower in followers {
        let got = tokio::time::timeout(Duration::from_secs(20), follower)
            .await
            .expect("a follower was held back by the first client")
            .unwrap();
        assert_eq!(got.headers["x-cistern-cache"], "hit");
        let whole = got.body.as_ref().is_ok_and(|b| b == &body);
        assert!(whole, "{}", s.logs());
    }
    let counts = s.http_origin.counts(path);
    assert_eq!((counts.requests, counts.ranged), (1, 0), "{counts:?}");
    assert!(!s.logs().contains("download in flight stalled"));
    // The first client reads the rest at last, from the stored download.
    let got = tokio::time::timeout(Duration::from_secs(20), stuck.read_rest())
        .await
        .expect("the first client's rest");
    assert!(got == body, "the first client got {} bytes", got.len());
    // And the download was stored (files under /simple/ revalidate).
    let again = s.client().get(&format!("http://{PYPI}{path}")).await;
    assert_eq!(again.headers["x-cistern-cache"], "revalidated");
    assert_eq!(again.bytes(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_reading_along_go_on_from_the_origin_when_the_download_stalls() {
    let s = Setup::start("  cache:\n    lock_timeout: 1s\n").await;
    let path = "/debian/pool/main/s/stall/stall_1.0_amd64.deb";
    let body = random_bytes(2 * 1024 * 1024 + 3, 66);
    // A piece every 1.5s: longer than readers wait for progress.
    let file = File::trickling(body.clone(), Duration::from_millis(1500), false);
    s.https_origin.put(path, file);
    for get in s.spawn_gets(&format!("https://{DEB}{path}"), 3) {
        let got = tokio::time::timeout(Duration::from_secs(8), get)
            .await
            .expect("a request hung with the stalled download")
            .unwrap();
        let whole = got.body.as_ref().is_ok_and(|b| b == &body);
        assert!(whole, "{}", s.logs());
    }
    // One download; the two requests reading along, and the first one
    // (reading along too once the download was handed over), went on
    // from the origin with range requests.
    let counts = s.https_origin.counts(path);
    assert_eq!((counts.requests, counts.ranged), (4, 3), "{counts:?}");
    assert!(s.logs().contains("download in flight stalled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_download_cut_short_breaks_every_transfer_reading_along() {
    let s = Setup::start("  cache:\n    lock_timeout: 1s\n").await;
    let path = "/debian/pool/main/t/toolchain/toolchain_2.0_amd64.deb";
    let body = random_bytes(3 * 1024 * 1024 + 5, 62);
    for got in twenty_at_once(&s, path, &body, true).await {
        assert_eq!(got.status, 200);
        assert!(
            got.body.is_err(),
            "a cut-short download must not arrive whole anywhere ({} bytes)",
            got.body.as_ref().map_or(0, Bytes::len)
        );
    }
    assert_eq!(s.https_origin.counts(path).requests, 1);
    // Nothing was stored: the next request goes to the origin.
    s.https_origin.set_behaviour(path, Behaviour::Normal);
    let got = s.client().get(&format!("https://{DEB}{path}")).await;
    assert_eq!(got.headers["x-cistern-cache"], "miss");
    assert_eq!(got.bytes(), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_the_client_leaves_early_is_still_stored() {
    let s = Setup::start("").await;
    let path = "/simple/pkg/pkg-1.0-py3-none-any.whl";
    let body = random_bytes(48 * 1024 * 1024, 41);
    s.http_origin.put(path, File::new(body.clone()));
    // Read the head and the first bytes, then hang up.
    let first = FirstClient::start(&s, path).await;
    assert!(first.first.len() < body.len());
    drop(first);

    // The rest of the body still went into the cache.
    let url = format!("http://{PYPI}{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = s.client().get(&url).await;
        if got.headers["x-cistern-cache"] == "hit" || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.headers["x-cistern-cache"], "hit", "{}", s.logs());
    assert_eq!(got.bytes(), &body);
    assert_eq!(s.http_origin.counts(path).requests, 1, "{}", s.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_short_origin_response_is_not_cached_and_the_client_sees_an_error() {
    let s = Setup::start("").await;
    let path = "/debian/pool/main/c/cut/cut_1.0_amd64.deb";
    let mut file = File::new(random_bytes(1_000_000, 9));
    file.behaviour = Behaviour::CutShort;
    s.https_origin.put(path, file);
    let client = s.client();
    let url = format!("https://{DEB}{path}");
    let got = client.get(&url).await;
    assert!(
        got.body.is_err(),
        "the client must see a broken transfer: {got:?}"
    );
    // Not cached: the next request goes to the origin again, and once the
    // origin behaves, the file is whole.
    s.https_origin.set_behaviour(path, Behaviour::Normal);
    let got = client.get(&url).await;
    assert_eq!(got.bytes(), &random_bytes(1_000_000, 9));
    assert_eq!(s.https_origin.counts(path).requests, 2);
    let got = client.get(&url).await;
    assert_eq!(got.bytes(), &random_bytes(1_000_000, 9));
    assert_eq!(s.https_origin.counts(path).requests, 2);
    // Without a length (chunked), over HTTP/1.1 and HTTP/2 alike: the
    // missing end breaks the client's transfer, and nothing is stored.
    let chunked = "/debian/pool/main/c/cut/cut_2.0_amd64.deb";
    let mut file = File::new(random_bytes(1_000_000, 19));
    file.behaviour = Behaviour::CutShortChunked;
    s.https_origin.put(chunked, file);
    let url = format!("https://{DEB}{chunked}");
    for h2 in [false, true] {
        let got = client.send("GET", &url, &[], None, h2).await.unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body.is_err(), "h2 {h2}: a broken transfer: {got:?}");
    }
    s.https_origin.set_behaviour(chunked, Behaviour::Normal);
    let got = client.get(&url).await;
    assert_eq!(got.headers["x-cistern-cache"], "miss");
    assert_eq!(got.bytes(), &random_bytes(1_000_000, 19));
    assert_eq!(s.https_origin.counts(chunked).requests, 3);
    // A failing origin is a 5xx for the client, never a cached body.
    let failing = "/debian/pool/main/f/fail/fail_1.0_amd64.deb";
    let mut file = File::new(random_bytes(1000, 10));
    file.behaviour = Behaviour::Fail(503);
    s.https_origin.put(failing, file);
    let errors = format!("cistern_cache_origin_errors_total{{domain=\"{DEB}\"}}");
    let before = metric(&s, &errors).await;
    assert_eq!(
        client.get(&format!("https://{DEB}{failing}")).await.status,
        503
    );
    assert_eq!(
        metric(&s, &errors).await,
        before + 1,
        "a 5xx is an origin error"
    );
    s.https_origin.set_behaviour(failing, Behaviour::Normal);
    assert_eq!(
        client.get(&format!("https://{DEB}{failing}")).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_20mb_ranged_download_resumes_from_the_cache() {
    let s = Setup::start("").await;
    let path = "/debian/pool/main/l/large/large_1.0_amd64.deb";
    let body = random_bytes(20 * 1024 * 1024, 11);
    s.https_origin.put(path, File::new(body.clone()));
    let client = s.client();
    let url = format!("https://{DEB}{path}");
    // A first download that stopped half-way (forwarded, not stored) ...
    let half = 10 * 1024 * 1024;
    let first = client
        .send(
            "GET",
            &url,
            &[("range", &format!("bytes=0-{}", half - 1))],
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(first.status, 206);
    assert_eq!(first.bytes(), &body.slice(..half));
    // ... a full download, then the resume is served from the cache.
    assert_eq!(client.get(&url).await.bytes(), &body);
    let rest = client
        .send(
            "GET",
            &url,
            &[("range", &format!("bytes={half}-"))],
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.headers["content-range"],
        format!("bytes {half}-{}/{}", body.len() - 1, body.len()).as_str()
    );
    assert_eq!(rest.bytes(), &body.slice(half..));
    assert_eq!(s.https_origin.counts(path).requests, 2);
    assert_eq!(s.https_origin.counts(path).ranged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_keeps_the_cache_under_its_size_limit() {
    let s = Setup::start("  cache:\n    max_size: 3MB\n    max_object: 1MB\n").await;
    let client = s.client();
    for i in 0..8u64 {
        let path = format!("/debian/pool/main/e/evict/evict_{i}_amd64.deb");
        s.https_origin
            .put(&path, File::new(random_bytes(1_000_000, 100 + i)));
        let got = client.get(&format!("https://{DEB}{path}")).await;
        assert_eq!(got.bytes(), &random_bytes(1_000_000, 100 + i));
    }
    let stats = s.cistern_cmd(&["cache", "stats"]);
    let bytes: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("bytes: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes <= 3_000_000, "{stats}");
    assert!(bytes >= 1_000_000, "the newest files stay: {stats}");
    let on_disk = dir_size(&s.dirs.path().join("cache/content-v2"));
    assert!(on_disk <= 3_000_000, "{on_disk} bytes of content on disk");
    // The most recent file is still a hit.
    let path = "/debian/pool/main/e/evict/evict_7_amd64.deb";
    client.get(&format!("https://{DEB}{path}")).await;
    assert_eq!(s.https_origin.counts(path).requests, 1);
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hits_still_hit_after_a_restart() {
    let mut s = Setup::start("").await;
    let files = repositories(&s);
    let client = s.client();
    for (url, _, _) in &files {
        assert_eq!(client.get(url).await.status, 200);
    }
    let pem_before = s.ca_pem.clone();
    s.restart();
    assert_eq!(s.ca_pem, pem_before, "the CA survives the restart");
    let client = s.client();
    for (url, path, index) in &files {
        let got = client.get(url).await;
        assert_eq!(got.status, 200);
        let counts = origin_of(&s, url).counts(path);
        if *index {
            assert_eq!(counts.not_modified, 1, "{url} revalidated after restart");
        } else {
            assert_eq!(counts.requests, 1, "{url} still a hit after restart");
        }
    }
}

/// Flips one byte in the middle of every stored body, keeping its length.
fn corrupt_stored_bodies(cache: &Path) -> usize {
    let mut flipped = 0;
    let mut dirs = vec![cache.join("content-v2")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // In place, as bit rot would: a running reader may have the
            // file mapped.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let middle = file.metadata().unwrap().len() / 2;
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, middle).unwrap();
            file.write_all_at(&[byte[0] ^ 0x55], middle).unwrap();
            flipped += 1;
        }
    }
    flipped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_cache_entry_is_never_served_and_is_fetched_again() {
    // Every hit reads the disk: nothing is held in memory.
    let s = Setup::start("  cache:\n    memory: 0\n").await;
    // Up to `verify_before_serve` (256 KiB): checked before it is sent.
    let small_path = "/debian/pool/main/s/small/small_1.0_amd64.deb";
    let small = random_bytes(100 * 1024, 31);
    // Larger: streamed while it is checked.
    let big_path = "/debian/pool/main/b/big/big_1.0_amd64.deb";
    let big = random_bytes(3 * 1024 * 1024 + 17, 32);
    // The same over plain HTTP, where checked blocks are sent from the page
    // cache with `sendfile` (two mapped windows).
    let wheel_path = "/packages/de/mo/demo-1.0-py3-none-any.whl";
    let wheel = random_bytes(5 * 1024 * 1024 + 3, 33);
    s.https_origin.put(small_path, File::new(small.clone()));
    s.https_origin.put(big_path, File::new(big.clone()));
    s.http_origin.put(wheel_path, File::new(wheel.clone()));
    let small_url = format!("https://{DEB}{small_path}");
    let big_url = format!("https://{DEB}{big_path}");
    let wheel_url = format!("http://{PYPI}{wheel_path}");
    let client = s.client();
    for url in [&small_url, &big_url, &wheel_url] {
        let got = client.get(url).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-cistern-cache"], "miss", "{url}");
    }
    for (url, body) in [(&big_url, &big), (&wheel_url, &wheel)] {
        let got = client.get(url).await;
        assert_eq!(got.headers["x-cistern-cache"], "hit");
        assert!(got.bytes() == body, "{url}: the hit is the stored body");
    }

    assert_eq!(corrupt_stored_bodies(&s.dirs.path().join("cache")), 3);

    // The small body fails its check before anything is sent: the client
    // gets the right file, fetched again.
    let got = client.get(&small_url).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes(), &small, "the corrupt bytes are never served");
    assert_eq!(got.headers["x-cistern-cache"], "miss");
    assert_eq!(s.https_origin.counts(small_path).requests, 2);

    // The big ones fail the check of their corrupt block: the client's
    // transfer breaks short of its length instead of completing with wrong
    // bytes...
    for (url, body, origin, path) in [
        (&big_url, &big, &s.https_origin, big_path),
        (&wheel_url, &wheel, &s.http_origin, wheel_path),
    ] {
        let got = client.get(url).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-cistern-cache"], "hit");
        assert!(
            got.body.is_err(),
            "{url}: a corrupt body must not arrive whole ({} bytes arrived)",
            got.body.as_ref().map_or(0, Bytes::len)
        );
        assert_eq!(origin.counts(path).requests, 1);
        // ... and the entry is gone: the next request fetches it again.
        let got = client.get(url).await;
        assert_eq!(got.status, 200);
        assert!(got.bytes() == body, "{url}: fetched again whole");
        assert_eq!(got.headers["x-cistern-cache"], "miss");
        assert_eq!(origin.counts(path).requests, 2);
        let got = client.get(url).await;
        assert!(got.bytes() == body, "{url}: a hit again");
        assert_eq!(got.headers["x-cistern-cache"], "hit");
    }
    assert!(
        s.logs().contains("failed its integrity check"),
        "the corruption is logged:\n{}",
        s.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_larger_than_max_object_is_served_whole_and_never_stored() {
    let s = Setup::start("  cache:\n    max_size: 64MiB\n    max_object: 1MiB\n").await;
    let small_path = "/debian/pool/main/s/small/small_1.0_amd64.deb";
    let small = random_bytes(512 * 1024, 41);
    s.https_origin.put(small_path, File::new(small.clone()));
    // One announces its length, the other is chunked: its write stops
    // once it grows past the limit.
    let big_path = "/debian/pool/main/b/big/big_1.0_amd64.deb";
    let big = random_bytes(3 * 1024 * 1024 + 5, 42);
    s.https_origin.put(big_path, File::new(big.clone()));
    let chunked_path = "/debian/pool/main/c/chunked/chunked_1.0_amd64.deb";
    let chunked = random_bytes(3 * 1024 * 1024 + 7, 43);
    let mut file = File::new(chunked.clone());
    file.behaviour = Behaviour::Chunked;
    s.https_origin.put(chunked_path, file);
    let client = s.client();
    for round in 1..=2 {
        for (path, body) in [(big_path, &big), (chunked_path, &chunked)] {
            let got = client.get(&format!("https://{DEB}{path}")).await;
            assert_eq!(got.status, 200);
            assert!(got.bytes() == body, "{path}, round {round}: whole");
            assert_eq!(
                got.headers["x-cistern-cache"], "miss",
                "{path}, round {round}"
            );
            assert_eq!(s.https_origin.counts(path).requests, round, "{path}");
        }
        let got = client.get(&format!("https://{DEB}{small_path}")).await;
        assert!(got.bytes() == &small);
        let state = if round == 1 { "miss" } else { "hit" };
        assert_eq!(got.headers["x-cistern-cache"], state, "the small file");
    }
    let logs = s.logs();
    assert!(logs.contains("larger than max_object"), "{logs}");
    assert!(logs.contains("grew past the largest object"), "{logs}");
    let stats = s.cistern_cmd(&["cache", "stats"]);
    assert!(stats.contains("entries: 1\n"), "{stats}");
}

/// A response that sets a cookie was made for the job whose request reached
/// the origin (a page naming its session): with HTTP's own rules it is not
/// stored, so the next job's request goes to the origin too. A path a rule
/// says is an immutable artifact (built-in for package files, or
/// configured) is stored and served to other jobs, without the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_that_sets_a_cookie_is_shared_only_for_immutable_artifacts() {
    let s =
        Setup::start("  cache:\n    rules:\n      - path: /artifacts/\n        mode: immutable\n")
            .await;
    let page = "/account/welcome.html";
    let deb = "/debian/pool/main/c/cdn/cdn_1.0_amd64.deb";
    let artifact = "/artifacts/tool-1.0.tar.gz";
    for (path, body) in [
        (
            page,
            Bytes::from_static(b"<p>Welcome back, first-client</p>"),
        ),
        (deb, random_bytes(100_000, 51)),
        (artifact, random_bytes(100_000, 52)),
    ] {
        let mut file = File::new(body);
        file.headers = vec![
            ("cache-control", "max-age=300".to_owned()),
            ("set-cookie", "session=first-client; Path=/".to_owned()),
        ];
        s.https_origin.put(path, file);
    }
    let client = s.client();
    let url = format!("https://{DEB}{page}");
    for round in 1..=2 {
        let got = client.get(&url).await;
        assert_eq!(got.status, 200, "{}", s.logs());
        assert_eq!(got.headers["x-cistern-cache"], "miss", "round {round}");
        // Each answer comes from the origin, with the cookie it set.
        assert_eq!(got.headers["set-cookie"], "session=first-client; Path=/");
        assert_eq!(s.https_origin.counts(page).requests, round, "{}", s.logs());
    }
    assert!(
        s.logs().contains("not stored: response sets a cookie"),
        "{}",
        s.logs()
    );
    for path in [deb, artifact] {
        let url = format!("https://{DEB}{path}");
        let first = client.get(&url).await;
        assert_eq!(first.status, 200, "{path}");
        assert!(first.headers.contains_key("set-cookie"), "{path}");
        let second = client.get(&url).await;
        assert_eq!(second.headers["x-cistern-cache"], "hit", "{path}");
        assert_eq!(second.bytes(), first.bytes(), "{path}");
        assert!(!second.headers.contains_key("set-cookie"), "{path}");
        assert_eq!(s.https_origin.counts(path).requests, 1, "{path}");
    }
}

/// Twenty jobs running `apt-get update` at once make one conditional
/// request per index file, not twenty: the first revalidates, the others
/// wait for it and are served the refreshed entry; when the origin has a
/// new version, they read along with its one download.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_a_stale_index_make_one_conditional_request() {
    let s = Setup::start("").await;
    let path = "/debian/dists/stable/main/binary-amd64/Packages";
    let url = format!("https://{DEB}{path}");
    let v1 = random_bytes(300_000, 61);
    s.https_origin.put(path, File::new(v1.clone()));
    assert_eq!(s.client().get(&url).await.bytes(), &v1);
    // Slow enough that all twenty arrive while the first is at the origin.
    s.https_origin
        .set_behaviour(path, Behaviour::Slow(Duration::from_millis(700)));
    let mut states = Vec::new();
    for got in s.spawn_gets(&url, 20) {
        let got = got.await.unwrap();
        assert_eq!(got.status, 200);
        assert!(got.bytes() == &v1, "the refreshed entry");
        states.push(got.headers["x-cistern-cache"].to_str().unwrap().to_owned());
    }
    let counts = s.https_origin.counts(path);
    assert_eq!(
        (counts.requests, counts.not_modified),
        (2, 1),
        "{counts:?}, {states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "revalidated").count(),
        1,
        "{states:?}"
    );

    // A new version: one download, read along by the others.
    let v2 = random_bytes(2_000_000, 62);
    let mut file = File::new(v2.clone());
    file.behaviour = Behaviour::Slow(Duration::from_millis(700));
    s.https_origin.put(path, file);
    for got in s.spawn_gets(&url, 20) {
        let got = got.await.unwrap();
        assert!(got.bytes() == &v2, "the new version, whole");
    }
    assert_eq!(s.https_origin.counts(path).requests, 3);
}

/// Twenty GETs of `url` one after another; the time they took.
async fn twenty_in_a_row(s: &Setup, url: &str, body: &Bytes) -> Duration {
    let client = s.client();
    let start = Instant::now();
    for _ in 0..20 {
        let got = client.get(url).await;
        assert_eq!(got.status, 200);
        assert!(got.bytes() == body, "the index, whole");
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_without_validators_is_downloaded_once_per_unvalidated_window() {
    let s = Setup::start("  cache:\n    unvalidated_window: 5s\n").await;
    let path = "/alpine/v3.19/main/x86_64/APKINDEX.tar.gz";
    let url = format!("https://{DEB}{path}");
    let index = random_bytes(2_000_000, 71);
    s.https_origin
        .put(path, File::without_validators(index.clone()));
    let first = s.client().get(&url).await;
    let stored = Instant::now();
    assert_eq!(first.bytes(), &index);
    assert!(!first.headers.contains_key("etag"));

    // Twenty jobs at once, then twenty more one after another, within the
    // window: no origin request.
    for got in s.spawn_gets(&url, 20) {
        let got = got.await.unwrap();
        assert!(got.bytes() == &index, "the stored index, whole");
        assert_eq!(got.headers["x-cistern-cache"], "hit");
    }
    let took = twenty_in_a_row(&s, &url, &index).await;
    assert!(
        stored.elapsed() < Duration::from_secs(5),
        "the machine is too slow for this test's window"
    );
    assert_eq!(s.https_origin.counts(path).requests, 1);
    println!(
        "unvalidated_window 5s: 41 requests of a 2 MB index without validators, \
         1 origin download; 20 in a row took {took:?}"
    );
    assert!(
        s.logs().contains("within the unvalidated window"),
        "{}",
        s.logs()
    );

    // After the window: one more download, unconditional (nothing to send).
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(stored.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = s.client().get(&url).await;
    assert!(got.bytes() == &index);
    let counts = s.https_origin.counts(path);
    assert_eq!((counts.requests, counts.conditional), (2, 0), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_zero_unvalidated_window_an_index_without_validators_is_downloaded_every_time() {
    let s = Setup::start("  cache:\n    unvalidated_window: 0s\n").await;
    let path = "/alpine/v3.19/main/x86_64/APKINDEX.tar.gz";
    let url = format!("https://{DEB}{path}");
    let index = random_bytes(2_000_000, 72);
    s.https_origin
        .put(path, File::without_validators(index.clone()));
    assert_eq!(s.client().get(&url).await.bytes(), &index);
    let took = twenty_in_a_row(&s, &url, &index).await;
    assert_eq!(s.https_origin.counts(path).requests, 21);
    println!(
        "unvalidated_window 0s: 21 requests of a 2 MB index without validators, \
         21 origin downloads; 20 in a row took {took:?}"
    );
    // Concurrent revalidations still share one origin request: slow enough
    // that all twenty arrive while the first is at the origin.
    s.https_origin
        .set_behaviour(path, Behaviour::Slow(Duration::from_millis(700)));
    for got in s.spawn_gets(&url, 20) {
        let got = got.await.unwrap();
        assert!(got.bytes() == &index, "the index, whole");
    }
    assert_eq!(s.https_origin.counts(path).requests, 22);
}

/// One client address holds at most `max_connections_per_client`
/// connections: more are closed as they arrive, and a closed one frees its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::start_with_proxy("    max_connections_per_client: 3\n").await;
    let path = "/packages/li/mi/limit-1.0-py3-none-any.whl";
    s.http_origin.put(path, File::new(random_bytes(1000, 71)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {PYPI}\r\nConnection: close\r\n\r\n");
    async fn answer(conn: &mut TcpStream, request: &str) -> String {
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out));
        match read.await {
            Ok(Ok(_)) | Ok(Err(_)) => String::from_utf8_lossy(&out).into_owned(),
            Err(_) => panic!("no answer and not closed"),
        }
    }
    // Each held connection is answered once and kept alive, so the proxy has
    // accepted and counted all three before the fourth arrives on the other
    // listener.
    let get = || {
        Request::get(path)
            .header("host", PYPI)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(s.http).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let res = send.send_request(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
        held.push((send, conn));
    }
    // The HTTPS listener counts the same address.
    let mut fourth = TcpStream::connect(s.https).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a fourth connection is closed: {closed:?}"
    );
    let mut fifth = TcpStream::connect(s.http).await.unwrap();
    assert_eq!(
        answer(&mut fifth, &request).await,
        "",
        "refused, unanswered"
    );

    // The held ones are still served; closing one frees a place.
    let (mut send, conn) = held.remove(0);
    let res = send.send_request(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    drop(send);
    conn.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(s.http).await.unwrap();
    assert!(answer(&mut again, &request)
        .await
        .starts_with("HTTP/1.1 200"));
}

/// A CONNECT tunnel through the forward proxy keeps its client connection's
/// place under `max_connections_per_client` for as long as it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_connect_tunnel_keeps_its_place_under_the_connection_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s =
        Setup::start("  forward_proxy:\n    listen: FORWARD_ADDR\n    others: tunnel\n").await;
    s.proxy_extra = "    max_connections_per_client: 2\n".into();
    s.restart();
    let path = "/packages/tu/nn/tunnel-1.0-py3-none-any.whl";
    s.http_origin.put(path, File::new(random_bytes(1000, 72)));
    let mut tunnel = TcpStream::connect(s.forward).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {OTHER}:443 HTTP/1.1\r\nHost: {OTHER}:443\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tunnel.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The tunnel and one more connection are this client's two.
    let get = || {
        Request::get(path)
            .header("host", PYPI)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let tcp = TcpStream::connect(s.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    // Read whole, so the connection stays open for another request.
    res.into_body().collect().await.unwrap();
    let served = |addr| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let asked = send.send_request(get());
        let res = tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .expect("answered or closed")
            .ok()?;
        Some(res.status())
    };
    assert_eq!(served(s.http).await, None, "a third connection is closed");
    // Closing the tunnel frees its place.
    drop(tunnel);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(s.http).await, Some(http::StatusCode::OK));
}

/// A client cannot hold a connection open for ever: one that sends part of a
/// request head and stops, or that sits idle after a request, is closed
/// after `caching.proxy.idle_timeout`, while one that keeps asking is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_or_idle_client_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::start_with_proxy("    idle_timeout: 1s\n").await;
    let path = "/packages/id/le/idle-1.0-py3-none-any.whl";
    s.http_origin.put(path, File::new(random_bytes(1000, 51)));
    // Closed when the peer reads end of file (0) or the connection resets.
    async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {PYPI}\r\n\r\n");

    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(s.http).await.unwrap();
    slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: ").as_bytes())
        .await
        .unwrap();
    // One request, then idle.
    let mut idle = TcpStream::connect(s.http).await.unwrap();
    idle.write_all(request.as_bytes()).await.unwrap();
    // Requests every 400 ms, each within the timeout of the last.
    let mut busy = TcpStream::connect(s.http).await.unwrap();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        busy.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                busy.read(&mut byte).await.unwrap(),
                1,
                "busy connection closed"
            );
            head.push(byte[0]);
        }
        let mut body = [0u8; 1000];
        busy.read_exact(&mut body).await.unwrap();
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(answered >= 5, "{answered} requests answered");
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "a connection stuck in its request head stays open"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "an idle keep-alive connection stays open"
    );

    // A response that takes longer than the timeout is not idleness.
    let slow_path = "/packages/sl/ow/slow-1.0-py3-none-any.whl";
    let slow_body = random_bytes(800_000, 52);
    s.http_origin.put(
        slow_path,
        File::trickling(slow_body.clone(), Duration::from_millis(300), false),
    );
    let got = s.client().get(&format!("http://{PYPI}{slow_path}")).await;
    assert!(got.bytes() == &slow_body, "a 2.4 s download arrives whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_asking_for_different_variants_each_get_theirs_from_the_cache() {
    let s = Setup::start("").await;
    // An npm-style packument in two representations, chosen by `Accept`
    // (`Vary: Accept`): the full document and the abbreviated one.
    let path = "/vary-demo";
    let full = Bytes::from_static(b"{\"name\":\"vary-demo\",\"readme\":\"long\"}");
    let abbreviated = Bytes::from_static(b"{\"name\":\"vary-demo\"}");
    let short = "application/vnd.npm.install-v1+json";
    let mut file = File::new(full.clone());
    file.by_accept = vec![
        ("application/json", full.clone()),
        (short, abbreviated.clone()),
    ];
    s.https_origin.put(path, file);
    let url = format!("https://{NPM}{path}");
    let client = s.client();
    // Packuments always revalidate: the second round asks the origin with
    // each stored variant's own validator, and a 304 serves it.
    for (round, state) in ["miss", "revalidated"].into_iter().enumerate() {
        for (accept, body) in [("application/json", &full), (short, &abbreviated)] {
            let got = client
                .send("GET", &url, &[("accept", accept)], None, false)
                .await
                .unwrap();
            assert_eq!(got.status, 200);
            assert_eq!(got.bytes(), body, "{accept}, round {round}");
            assert_eq!(
                got.headers["x-cistern-cache"], state,
                "{accept}, round {round}"
            );
        }
    }
    // One download per representation, each then served from the cache.
    let counts = s.https_origin.counts(path);
    assert_eq!((counts.requests, counts.not_modified), (4, 2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_proxy_accounts_for_a_purge_made_by_the_cache_command() {
    let s = Setup::start("").await;
    let client = s.client();
    let mut urls = Vec::new();
    for i in 0..2u64 {
        let path = format!("/debian/pool/main/p/purge/purge_{i}_amd64.deb");
        s.https_origin
            .put(&path, File::new(random_bytes(500_000, 70 + i)));
        let url = format!("https://{DEB}{path}");
        assert_eq!(client.get(&url).await.headers["x-cistern-cache"], "miss");
        urls.push(url);
    }
    assert_eq!(metric(&s, "cistern_cache_entries").await, 2);
    assert_eq!(metric(&s, "cistern_cache_size_bytes").await, 1_000_000);

    let out = s.cistern_cmd(&["cache", "purge", &urls[0]]);
    assert!(out.contains("purged 1 entries"), "{out}");
    // The server sees it within seconds, without a restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&s, "cistern_cache_entries").await != 1 {
        assert!(Instant::now() < deadline, "not reloaded:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&s, "cistern_cache_size_bytes").await, 500_000);
    assert_eq!(
        client.get(&urls[0]).await.headers["x-cistern-cache"],
        "miss"
    );
    assert_eq!(client.get(&urls[1]).await.headers["x-cistern-cache"], "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_that_resolves_to_cistern_itself_is_a_loop_not_a_flood() {
    let mut s = Setup::start("").await;
    s.pypi_loops = true;
    s.restart();
    let got = s
        .get_with_timeout(&format!("http://{PYPI}/simple/demo/"))
        .await;
    // cistern asked itself once, recognised its own Via entry and stopped.
    assert_eq!(got.status, 508, "{}", s.logs());
    assert_eq!(s.logs().matches("request loop").count(), 1, "{}", s.logs());
    assert_eq!(s.http_origin.counts("/simple/demo/").requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_for_another_variant_does_not_read_along_with_the_download() {
    let s = Setup::start("").await;
    let path = "/vary-slow";
    let full = random_bytes(600_000, 81);
    let short = random_bytes(300_000, 82);
    let mut file = File::new(full.clone());
    file.by_accept = vec![
        ("application/json", full.clone()),
        ("text/x-short", short.clone()),
    ];
    file.behaviour = Behaviour::Trickle {
        pause: Duration::from_millis(100),
        cut: false,
    };
    s.https_origin.put(path, file);
    let url = format!("https://{DEB}{path}");
    let client = Arc::new(s.client());
    let get = |accept: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            client
                .send("GET", &url, &[("accept", accept)], None, false)
                .await
                .unwrap()
        })
    };
    // The second asks while the first one's representation is on its way.
    let first = get("application/json");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = get("text/x-short");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.bytes(), &full);
    assert_eq!(
        second.bytes(),
        &short,
        "its own representation, not the other"
    );
}

/// One series (its name, with its labels if any) from the admin listener.
async fn metric(s: &Setup, name: &str) -> u64 {
    let metrics = Client::new(rustls::RootCertStore::empty(), s.admin, s.admin)
        .send("GET", "http://localhost/metrics", &[], None, false)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(metrics.bytes()).into_owned();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_served_again_and_again_comes_from_memory_once_verified() {
    let s = Setup::start("  cache:\n    memory_max_object: 2MiB\n").await;
    let path = "/debian/pool/main/h/hot/hot_1.0_amd64.deb";
    let body = random_bytes(1024 * 1024 + 7, 41);
    s.https_origin.put(path, File::new(body.clone()));
    let big_path = "/debian/pool/main/c/cold/cold_1.0_amd64.deb";
    let big = random_bytes(2 * 1024 * 1024 + 1, 42);
    s.https_origin.put(big_path, File::new(big.clone()));
    let url = format!("https://{DEB}{path}");
    let big_url = format!("https://{DEB}{big_path}");
    let client = s.client();
    // A miss, then hits read from disk and checked: the one within
    // `memory_max_object` is kept.
    for (round, state) in ["miss", "hit"].into_iter().enumerate() {
        for (url, body) in [(&url, &body), (&big_url, &big)] {
            let got = client.get(url).await;
            assert_eq!(got.headers["x-cistern-cache"], state, "{url} round {round}");
            assert_eq!(got.bytes(), body);
        }
    }
    assert_eq!(
        metric(&s, "cistern_cache_memory_bytes").await,
        body.len() as u64
    );
    assert_eq!(metric(&s, "cistern_cache_memory_hits_total").await, 0);

    // Its repeats are sent from memory: even a rotted disk copy is not read.
    assert_eq!(corrupt_stored_bodies(&s.dirs.path().join("cache")), 2);
    let got = client.get(&url).await;
    assert_eq!(got.headers["x-cistern-cache"], "hit");
    assert_eq!(got.bytes(), &body);
    let range = client
        .send("GET", &url, &[("range", "bytes=100-199")], None, false)
        .await
        .unwrap();
    assert_eq!(range.status, 206);
    assert_eq!(range.bytes(), &body[100..200]);
    assert_eq!(metric(&s, "cistern_cache_memory_hits_total").await, 2);
    assert_eq!(s.https_origin.counts(path).requests, 1);
    // The larger file is read from disk, its corruption found.
    let got = client.get(&big_url).await;
    assert!(got.body.is_err(), "the corrupt file must not arrive whole");
    assert_eq!(metric(&s, "cistern_cache_corrupt_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_configured_domains_are_served_and_sni_must_match_host() {
    let s = Setup::start("").await;
    repositories(&s);
    let client = s.client();
    // Plain HTTP with a foreign Host: refused, never proxied.
    let got = client.get("http://evil.test/anything").await;
    assert_eq!(got.status, 403);
    let got = client.get("http://example.test.evil.test/").await;
    assert_eq!(got.status, 403);
    // TLS to a foreign SNI: no certificate, handshake fails.
    let err = client
        .send("GET", "https://evil.test/", &[], None, false)
        .await
        .unwrap_err();
    assert!(err.starts_with("TLS"), "{err}");
    // SNI for one cached domain, Host of another: 421.
    let got = client
        .send("GET", &format!("https://{NPM}/demo"), &[], Some(DEB), false)
        .await
        .unwrap();
    assert_eq!(got.status, 421);
    // Same over HTTP/2 (:authority instead of Host).
    let got = client
        .send("GET", &format!("https://{NPM}/demo"), &[], Some(DEB), true)
        .await
        .unwrap();
    assert_eq!(got.status, 421);
    // A subdomain of a cached domain is served (the origin has no such file).
    let got = client.get(&format!("https://mirror.{DEB}/nothing")).await;
    assert_eq!(
        got.status, 502,
        "forwarded to an origin that does not resolve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaf_verifies_against_cisterns_ca_and_not_against_the_system_store() {
    let s = Setup::start("").await;
    repositories(&s);
    assert!(s.ca_pem.contains("# sha256: "), "{}", s.ca_pem);
    assert!(s.ca_pem.contains("# expires: "), "{}", s.ca_pem);
    assert!(!s.ca_pem.contains("PRIVATE KEY"));
    // Trusting only cistern's CA: verified (webpki checks chain and name).
    let got = s
        .client()
        .get(&format!("https://{DEB}/debian/dists/stable/Release"))
        .await;
    assert_eq!(got.status, 200);
    // Trusting only the system store: refused.
    let mut system = rustls::RootCertStore::empty();
    system.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let err = Client::new(system, s.http, s.https)
        .send(
            "GET",
            &format!("https://{DEB}/debian/dists/stable/Release"),
            &[],
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_entry_is_served_when_the_origin_fails_or_is_down_with_stale_if_error() {
    let s = Setup::start("  cache:\n    stale_if_error: 1h\n").await;
    let path = "/debian/dists/stable/InRelease";
    let release = File::new("Origin: Example\nSuite: stable\nDate: today\n");
    s.https_origin.put(path, release.clone());
    let client = s.client();
    let url = format!("https://{DEB}{path}");
    let first = client.get(&url).await;
    assert_eq!(first.status, 200);
    // An index file is revalidated on every request; the origin answers 503.
    s.https_origin.set_behaviour(path, Behaviour::Fail(503));
    let got = client.get(&url).await;
    assert_eq!(got.status, 200, "{got:?}\n{}", s.logs());
    assert_eq!(got.bytes(), &release.body);
    assert_eq!(got.headers["x-cistern-cache"], "stale-if-error");
    assert_eq!(
        s.https_origin.counts(path).requests,
        2,
        "the origin was asked"
    );
    // The origin recovers: revalidated as usual.
    s.https_origin.set_behaviour(path, Behaviour::Normal);
    let got = client.get(&url).await;
    assert_eq!(got.headers["x-cistern-cache"], "revalidated");
    // The origin goes down entirely: still served, from the cache.
    s.https_origin.stop();
    let got = client.get(&url).await;
    assert_eq!(got.status, 200, "{got:?}\n{}", s.logs());
    assert_eq!(got.bytes(), &release.body);
    assert_eq!(got.headers["x-cistern-cache"], "stale-if-error");
    assert!(s.logs().contains("serving stale"), "{}", s.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_stale_if_error_a_failing_origin_fails_the_revalidation() {
    let s = Setup::start("").await;
    let path = "/debian/dists/stable/InRelease";
    s.https_origin.put(path, File::new("Suite: stable\n"));
    let client = s.client();
    let url = format!("https://{DEB}{path}");
    assert_eq!(client.get(&url).await.status, 200);
    s.https_origin.set_behaviour(path, Behaviour::Fail(503));
    assert_eq!(client.get(&url).await.status, 503);
    s.https_origin.stop();
    assert_eq!(client.get(&url).await.status, 502);
}

/// A 4 MiB tmpfs mounted on a directory, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a small tmpfs for the cache (run it as root with \
             mount permitted): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cache_disk_serves_whole_files_from_the_origin_and_logs_it() {
    let dirs = tempfile::tempdir().unwrap();
    let small_fs = SmallFs::mount(&dirs.path().join("cache"));
    let s = Setup::start_in("", dirs).await;
    let client = s.client();
    // Larger than the whole cache filesystem: the write fails half-way.
    let big = "/debian/pool/main/b/big/big_1.0_amd64.deb";
    let body = random_bytes(6 * 1024 * 1024, 31);
    s.https_origin.put(big, File::new(body.clone()));
    let url = format!("https://{DEB}{big}");
    for round in 1..=2 {
        let got = client.get(&url).await;
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.bytes().len(), body.len(), "round {round}: whole file");
        assert!(got.bytes() == &body, "round {round}: correct bytes");
        assert_eq!(s.https_origin.counts(big).requests, round, "from origin");
    }
    let logs = s.logs();
    // The write fails when the disk fills up, or at the latest at commit.
    assert!(
        logs.contains("cache disk is full") && logs.contains("served from origin"),
        "{logs}"
    );
    // Requests reading along with a download whose write fails get the
    // rest from the origin: whole files for all.
    let shared = "/debian/pool/main/b/big/big_2.0_amd64.deb";
    let body = random_bytes(6 * 1024 * 1024, 33);
    let file = File::trickling(body.clone(), Duration::from_millis(100), false);
    s.https_origin.put(shared, file);
    for task in s.spawn_gets(&format!("https://{DEB}{shared}"), 5) {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200, "{got:?}");
        let whole = got.body.as_ref().is_ok_and(|b| b == &body);
        assert!(
            whole,
            "a whole, correct file for every request\n{}",
            s.logs()
        );
    }
    // One download; the others went on from where the disk stopped, each
    // with a range request.
    let counts = s.https_origin.counts(shared);
    assert_eq!(counts.requests, 1 + counts.ranged, "{counts:?}");
    assert!(counts.ranged >= 1, "{counts:?}\n{}", s.logs());
    assert!(s.logs().contains("the rest from the origin"));
    // A request that joins once the write has failed reads along as far as
    // the disk got and goes on from the origin, while the first client
    // goes on reading the origin itself: whole files for both.
    let late = "/debian/pool/main/b/big/big_3.0_amd64.deb";
    let body = random_bytes(6 * 1024 * 1024, 34);
    let file = File::trickling(body.clone(), Duration::from_millis(300), false);
    s.https_origin.put(late, file);
    let failed_writes = || s.logs().matches("cache write failed").count();
    let before = failed_writes();
    let url = format!("https://{DEB}{late}");
    let first = s.spawn_gets(&url, 1).pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed_writes() == before {
        assert!(
            Instant::now() < deadline,
            "the write never failed\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let follower = client.get(&url).await;
    assert!(
        follower.body.as_ref().is_ok_and(|b| b == &body),
        "the follower's file"
    );
    let first = first.await.unwrap();
    assert!(
        first.body.as_ref().is_ok_and(|b| b == &body),
        "the first client's file\n{}",
        s.logs()
    );
    // The failed writes left their space free: a file that fits is cached.
    let small = "/debian/pool/main/s/small/small_1.0_amd64.deb";
    s.https_origin
        .put(small, File::new(random_bytes(200_000, 32)));
    let url = format!("https://{DEB}{small}");
    assert_eq!(client.get(&url).await.status, 200);
    let again = client.get(&url).await;
    assert_eq!(again.bytes(), &random_bytes(200_000, 32));
    assert_eq!(again.headers["x-cistern-cache"], "hit");
    assert_eq!(s.https_origin.counts(small).requests, 1);
    drop(s);
    drop(small_fs);
}

/// What the host's curl saw through the forward proxy.
#[derive(Debug)]
struct Curled {
    /// curl's exit code (0: transfer complete).
    exit: i32,
    /// The response status (`000` when there was none, e.g. a refused
    /// CONNECT).
    status: String,
    /// `x-cistern-cache` of the final response, if any.
    cache: Option<String>,
    body: Vec<u8>,
    stderr: String,
}

impl Setup {
    /// The host's curl with `--proxy` set to the forward proxy, trusting only
    /// `cacert` for HTTPS.
    fn curl_via_proxy(&self, url: &str, cacert: &Path) -> Curled {
        let out_dir = tempfile::tempdir().unwrap();
        let body = out_dir.path().join("body");
        let headers = out_dir.path().join("headers");
        let out = tokio::task::block_in_place(|| {
            Command::new("curl")
                .args(["-sS", "--max-time", "30", "--noproxy", ""])
                .arg("--proxy")
                .arg(format!("http://{}", self.forward))
                .arg("--cacert")
                .arg(cacert)
                .arg("-o")
                .arg(&body)
                .arg("-D")
                .arg(&headers)
                .args(["-w", "%{http_code}", url])
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .env_remove("HTTPS_PROXY")
                .env_remove("ALL_PROXY")
                .output()
                .expect("curl runs")
        });
        let headers = std::fs::read_to_string(&headers).unwrap_or_default();
        // The last response's headers (after a CONNECT's own 200).
        let cache = headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-cistern-cache"))
            .map(|(_, v)| v.trim().to_owned())
            .next_back();
        Curled {
            exit: out.status.code().unwrap_or(-1),
            status: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            cache,
            body: std::fs::read(&body).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn cistern_ca_file(&self) -> PathBuf {
        let path = self.dirs.path().join("cistern-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn origin_ca_file(&self) -> PathBuf {
        self.dirs.path().join("origin-ca.pem")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_forward_proxy_caches_cached_domains_and_refuses_other_hosts() {
    let s = Setup::start("  forward_proxy:\n    listen: FORWARD_ADDR\n").await;
    repositories(&s);
    let other = File::new(random_bytes(50_000, 21));
    s.https_origin.put("/other.bin", other.clone());
    s.http_origin.put("/other.bin", other.clone());
    let ca = s.cistern_ca_file();

    // CONNECT to a cached domain: TLS from cistern's CA, then the cache.
    let deb = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let url = format!("https://{DEB}{deb}");
    let first = s.curl_via_proxy(&url, &ca);
    assert_eq!(
        (first.exit, first.status.as_str()),
        (0, "200"),
        "{first:?}\n{}",
        s.logs()
    );
    assert_eq!(first.body, random_bytes(300_000, 1));
    assert_eq!(first.cache.as_deref(), Some("miss"));
    let second = s.curl_via_proxy(&url, &ca);
    assert_eq!(
        (second.exit, second.status.as_str()),
        (0, "200"),
        "{second:?}"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.cache.as_deref(), Some("hit"));
    assert_eq!(
        s.https_origin.counts(deb).requests,
        1,
        "second one from cache"
    );

    // An absolute-form `https://` URL sent without CONNECT is still an
    // HTTPS download (the entry just stored), never fetched in plain HTTP.
    let (status, head) = tokio::task::block_in_place(|| {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(s.forward).unwrap();
        write!(
            conn,
            "GET {url} HTTP/1.1\r\nHost: {DEB}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        (head.get(9..12).unwrap_or("").to_owned(), head)
    });
    assert_eq!(status, "200", "{head}");
    assert!(head.contains("x-cistern-cache: hit"), "{head}");
    assert!(head.contains("content-length: 300000"), "{head}");
    assert_eq!(s.https_origin.counts(deb).requests, 1);

    // An absolute-form plain-HTTP request to a cached domain: the cache too.
    let whl = "/packages/ab/cd/demo-1.0-py3-none-any.whl";
    for _ in 0..2 {
        let got = s.curl_via_proxy(&format!("http://{PYPI}{whl}"), &ca);
        assert_eq!((got.exit, got.status.as_str()), (0, "200"), "{got:?}");
        assert_eq!(got.body, random_bytes(200_000, 2));
    }
    assert_eq!(s.http_origin.counts(whl).requests, 1);

    // Anything else is refused: never an open proxy.
    let refused = s.curl_via_proxy(&format!("https://{OTHER}/other.bin"), &s.origin_ca_file());
    assert_ne!(refused.exit, 0, "{refused:?}");
    assert!(refused.stderr.contains("403"), "{refused:?}");
    let refused = s.curl_via_proxy(&format!("http://{OTHER}/other.bin"), &ca);
    assert_eq!(refused.status, "403", "{refused:?}");
    assert_eq!(s.https_origin.counts("/other.bin").requests, 0);
    assert_eq!(s.http_origin.counts("/other.bin").requests, 0);
    assert!(s.logs().contains("listener=\"forward\""), "{}", s.logs());
}

/// Through the forward proxy: CONNECT to `connect`, TLS with server name
/// `sni`, then a GET of `path` with Host `host`.
async fn via_connect(
    s: &Setup,
    connect: &str,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<Got, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(s.forward).await.unwrap();
    let hello = format!("CONNECT {connect}:443 HTTP/1.1\r\nHost: {connect}:443\r\n\r\n");
    tcp.write_all(hello.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    let tls = s.client().tls(tcp, sni, false).await?;
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    exchange(TokioIo::new(tls), req, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_tunnel_serves_only_the_host_it_was_opened_for() {
    let s = Setup::start("  forward_proxy:\n    listen: FORWARD_ADDR\n").await;
    repositories(&s);
    let deb = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let tgz = "/demo/-/demo-1.0.0.tgz";
    // As it should be: CONNECT, SNI and Host agree.
    let got = via_connect(&s, DEB, DEB, DEB, deb).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes(), &random_bytes(300_000, 1));
    // Another cached domain's name in the TLS handshake: the tunnel closes.
    let err = via_connect(&s, DEB, NPM, NPM, tgz).await.unwrap_err();
    assert!(!err.is_empty());
    assert!(
        s.logs()
            .contains("TLS server name differs from the CONNECT host"),
        "{}",
        s.logs()
    );
    // Another cached domain's name as Host: 421, nothing fetched.
    let got = via_connect(&s, DEB, DEB, NPM, tgz).await.unwrap();
    assert_eq!(got.status, 421);
    assert_eq!(s.https_origin.counts(tgz).requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_others_tunnel_the_forward_proxy_relays_other_hosts_uncached() {
    let s = Setup::start("  forward_proxy:\n    listen: FORWARD_ADDR\n    others: tunnel\n").await;
    repositories(&s);
    let other = File::new(random_bytes(50_000, 22));
    s.https_origin.put("/other.bin", other.clone());
    s.http_origin.put("/other.bin", other.clone());

    // CONNECT to another host is a byte tunnel: the client verifies the
    // origin's own certificate (cistern's CA could not sign for it).
    for _ in 0..2 {
        let got = s.curl_via_proxy(&format!("https://{OTHER}/other.bin"), &s.origin_ca_file());
        assert_eq!(
            (got.exit, got.status.as_str()),
            (0, "200"),
            "{got:?}\n{}",
            s.logs()
        );
        assert_eq!(got.body, other.body);
        assert_eq!(got.cache, None, "not through the cache");
    }
    assert_eq!(s.https_origin.counts("/other.bin").requests, 2);
    // Plain HTTP to another host is forwarded, not stored.
    for _ in 0..2 {
        let got = s.curl_via_proxy(&format!("http://{OTHER}/other.bin"), &s.origin_ca_file());
        assert_eq!((got.exit, got.status.as_str()), (0, "200"), "{got:?}");
        assert_eq!(got.body, other.body);
    }
    assert_eq!(s.http_origin.counts("/other.bin").requests, 2);

    // Cached domains are still intercepted and cached.
    let ca = s.cistern_ca_file();
    let tgz = "/demo/-/demo-1.0.0.tgz";
    for _ in 0..2 {
        let got = s.curl_via_proxy(&format!("https://{NPM}{tgz}"), &ca);
        assert_eq!((got.exit, got.status.as_str()), (0, "200"), "{got:?}");
    }
    assert_eq!(s.https_origin.counts(tgz).requests, 1);
    // ... so a client trusting only the origin's CA cannot use them.
    let got = s.curl_via_proxy(&format!("https://{NPM}{tgz}"), &s.origin_ca_file());
    assert_ne!(got.exit, 0, "{got:?}");
}

fn bridge_gateway() -> String {
    support::bridge_address().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_downloads_through_the_injected_hosts_and_ca_and_hits_the_second_time() {
    let image = tokio::task::block_in_place(support::curl_image);
    let gateway = bridge_gateway();
    // The proxy listens where containers reach the host; the extra hosts
    // cistern injects point the cached domains there.
    let port = support::free_port();
    let mut s = Setup::start("").await;
    s.https_bind = Some(format!("{gateway}:{port}"));
    s.restart();
    let path = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
    let body = random_bytes(500_000, 21);
    s.https_origin.put(path, File::new(body.clone()));
    let sock = s.cistern.as_ref().unwrap().socket.clone();
    let url = format!("https://{DEB}:{port}{path}");
    let digest = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&body))
    };
    for round in 1..=2 {
        let out = tokio::task::block_in_place(|| {
            support::run(support::docker_at(&sock).args([
                "run",
                "--rm",
                image,
                "/bin/sh",
                "-c",
                &format!(
                    "/usr/bin/curl -sS --fail --max-time 30 -o /tmp/f {url} && sha256sum /tmp/f"
                ),
            ]))
        });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "round {round}: {text}\n{}", s.logs());
        assert!(text.starts_with(&digest), "round {round}: {text}");
        assert_eq!(s.https_origin.counts(path).requests, 1, "round {round}");
    }
}

// Through real containers: created through cistern's Docker socket, so the
// injected extra hosts send the cached domains to the bridge gateway and
// curl inside verifies TLS against the CA cistern installed.

/// Cistern with both proxy listeners reachable from containers on the
/// bridge network, and the curl image to run there.
struct Containers {
    s: Setup,
    image: &'static str,
}

/// One curl download in a container, as its `get` shell function reported
/// it.
#[derive(Debug, Clone)]
struct Fetched {
    /// curl's exit code (0: transfer complete).
    exit: i32,
    /// The HTTP status (`000` when there was none).
    status: String,
    /// `x-cistern-cache` of the response (`-` when absent).
    cache: String,
    /// sha256 of the output file (`-` when there is none).
    sha256: String,
    /// Size of the output file.
    size: u64,
}

/// Everything one container run printed, and its downloads by label.
struct Downloads {
    output: String,
    by_label: std::collections::HashMap<String, Fetched>,
}

impl Downloads {
    fn get(&self, label: &str) -> &Fetched {
        self.by_label
            .get(label)
            .unwrap_or_else(|| panic!("no download {label}:\n{}", self.output))
    }

    /// Asserts a `curl -C -` that completed the file (expected digest) with
    /// a 206 from the cache.
    fn assert_resumed_from_cache(&self, label: &str, sha256: &str) {
        let got = self.get(label);
        assert_eq!(
            (
                got.exit,
                got.status.as_str(),
                got.cache.as_str(),
                got.sha256.as_str()
            ),
            (0, "206", "hit", sha256),
            "{label}: {got:?}\n{}",
            self.output
        );
    }

    /// Asserts a complete 200 download with the expected digest.
    fn assert_whole(&self, label: &str, sha256: &str) -> &Fetched {
        let got = self.get(label);
        assert_eq!(
            (got.exit, got.status.as_str(), got.sha256.as_str()),
            (0, "200", sha256),
            "{label}: {got:?}\n{}",
            self.output
        );
        got
    }
}

/// A shell function for the container: `get LABEL FILE URL [CURL ARGS]`
/// downloads URL into FILE and prints one `got` line for [`Downloads`].
const GET_SH: &str = r#"export PATH=/bin:/usr/bin
get() {
  label=$1; file=$2; url=$3; shift 3
  code=$(curl -sS --max-time 60 -o "$file" -D "/tmp/$label.h" -w '%{http_code}' "$@" "$url" 2>"/tmp/$label.err")
  rc=$?
  cache=$(cat "/tmp/$label.h" 2>/dev/null | tr -d '\r' | grep -i '^x-cistern-cache:' | tail -n 1 | cut -d: -f2 | tr -d ' ')
  sum=$(sha256sum "$file" 2>/dev/null | cut -d' ' -f1)
  size=$(cat "$file" 2>/dev/null | wc -c)
  echo "got $label $rc ${code:-000} ${cache:--} ${sum:--} $size"
  if [ "$rc" != 0 ]; then echo "curl $label: $(cat "/tmp/$label.err")"; fi
}
"#;

impl Containers {
    async fn start(extra: &str) -> Containers {
        let image = tokio::task::block_in_place(support::curl_image);
        let gateway = bridge_gateway();
        let mut s = Setup::start(extra).await;
        s.http_bind = Some(format!("{gateway}:{}", support::free_port()));
        s.https_bind = Some(format!("{gateway}:{}", support::free_port()));
        s.restart();
        Containers { s, image }
    }

    /// Restarts cistern with the same cache, state and container-facing
    /// ports.
    fn restart(&mut self) {
        self.s.restart();
    }

    /// `url` as a container asks for it: the port is where cistern listens
    /// for containers (the injected hosts only change the address).
    fn url(&self, url: &str) -> String {
        let uri: Uri = url.parse().unwrap();
        let (scheme, port) = match uri.scheme_str() {
            Some("https") => ("https", self.s.https.port()),
            _ => ("http", self.s.http.port()),
        };
        format!(
            "{scheme}://{}:{port}{}",
            uri.host().unwrap(),
            uri.path_and_query().unwrap()
        )
    }

    /// The origin's file at `url`'s path, and its sha256.
    fn expected(&self, url: &str) -> (Bytes, String) {
        let path = url.parse::<Uri>().unwrap().path().to_owned();
        let body = origin_of(&self.s, url).file(&path).unwrap().body;
        let sha = support::sha256_hex(&body);
        (body, sha)
    }

    /// Runs `script` (after [`GET_SH`]) with sh in one new container
    /// created through cistern.
    fn run(&self, script: &str) -> Downloads {
        let sock = self.s.cistern.as_ref().unwrap().socket.clone();
        let script = format!("{GET_SH}{script}");
        let out = tokio::task::block_in_place(|| {
            support::run(
                support::docker_at(&sock)
                    .args(["run", "--rm", self.image, "/bin/sh", "-c", &script]),
            )
        });
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "container: {output}\n{}",
            self.s.logs()
        );
        let mut by_label = std::collections::HashMap::new();
        for line in output.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let ["got", label, exit, status, cache, sha256, size] = f[..] {
                let fetched = Fetched {
                    exit: exit.parse().unwrap(),
                    status: status.to_owned(),
                    cache: cache.to_owned(),
                    sha256: sha256.to_owned(),
                    size: size.parse().unwrap(),
                };
                by_label.insert(label.to_owned(), fetched);
            }
        }
        Downloads { output, by_label }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_container_second_downloads_hit_index_files_revalidate_and_hits_survive_a_restart() {
    let mut c = Containers::start("").await;
    let files = repositories(&c.s);
    assert!(
        files.iter().any(|(url, _, _)| url.starts_with("http://"))
            && files.iter().any(|(url, _, _)| url.starts_with("https://")),
        "both schemes are covered"
    );
    // One container downloads every file twice.
    let mut script = String::new();
    for (i, (url, _, _)) in files.iter().enumerate() {
        let url = c.url(url);
        script += &format!("get a{i} /tmp/a{i} {url}\nget b{i} /tmp/b{i} {url}\n");
    }
    let got = c.run(&script);
    for (i, (url, path, index)) in files.iter().enumerate() {
        let (_, sha) = c.expected(url);
        let first = got.assert_whole(&format!("a{i}"), &sha);
        assert_eq!(first.cache, "miss", "{url}: {first:?}");
        let second = got.assert_whole(&format!("b{i}"), &sha);
        let counts = origin_of(&c.s, url).counts(path);
        if *index {
            // Asked again, conditionally, and the origin said 304.
            assert_eq!(second.cache, "revalidated", "{url}: {second:?}");
            assert_eq!(
                (counts.requests, counts.conditional, counts.not_modified),
                (2, 1, 1),
                "{url}: {counts:?}"
            );
        } else {
            assert_eq!(second.cache, "hit", "{url}: {second:?}");
            assert_eq!(counts.requests, 1, "{url}: served from cache");
        }
    }

    // After a restart, another container: immutable files still hit, index
    // files are revalidated against what was stored before the restart.
    c.restart();
    let mut script = String::new();
    for (i, (url, _, _)) in files.iter().enumerate() {
        script += &format!("get r{i} /tmp/r{i} {}\n", c.url(url));
    }
    let got = c.run(&script);
    for (i, (url, path, index)) in files.iter().enumerate() {
        let (_, sha) = c.expected(url);
        let again = got.assert_whole(&format!("r{i}"), &sha);
        let counts = origin_of(&c.s, url).counts(path);
        if *index {
            assert_eq!(again.cache, "revalidated", "{url}: {again:?}");
            assert_eq!(
                (counts.requests, counts.not_modified),
                (3, 2),
                "{url}: {counts:?}"
            );
        } else {
            assert_eq!(again.cache, "hit", "{url} after restart: {again:?}");
            assert_eq!(counts.requests, 1, "{url}: still a hit after restart");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_downloads_in_a_container_make_one_origin_request() {
    let c = Containers::start("").await;
    let path = "/debian/pool/main/b/big/big_1.0_amd64.deb";
    let mut file = File::new(random_bytes(2_000_000, 51));
    // Slow enough for all 50 curls to be waiting before the origin answers.
    file.behaviour = Behaviour::Slow(Duration::from_millis(1500));
    c.s.https_origin.put(path, file);
    let url = format!("https://{DEB}{path}");
    let (_, sha) = c.expected(&url);
    let got = c.run(&format!(
        "i=0\nwhile [ $i -lt 50 ]; do get c$i /tmp/c$i {} & i=$((i+1)); done\nwait\n",
        c.url(&url)
    ));
    assert_eq!(got.by_label.len(), 50, "{}", got.output);
    for i in 0..50 {
        got.assert_whole(&format!("c{i}"), &sha);
    }
    assert_eq!(
        c.s.https_origin.counts(path).requests,
        1,
        "{}\n{}",
        got.output,
        c.s.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_container_a_cut_short_origin_response_fails_curl_and_is_not_cached() {
    let c = Containers::start("").await;
    let path = "/debian/pool/main/c/cut/cut_1.0_amd64.deb";
    let mut file = File::new(random_bytes(1_000_000, 52));
    file.behaviour = Behaviour::CutShort;
    c.s.https_origin.put(path, file);
    let url = format!("https://{DEB}{path}");
    let (body, sha) = c.expected(&url);
    let container_url = c.url(&url);
    // curl sees the broken transfer, and trying again goes to the origin
    // again rather than to a truncated cache entry.
    let got = c.run(&format!(
        "get cut1 /tmp/cut1 {container_url}\nget cut2 /tmp/cut2 {container_url}\n"
    ));
    for label in ["cut1", "cut2"] {
        let cut = got.get(label);
        assert_ne!(cut.exit, 0, "{label}: curl must fail: {}", got.output);
        assert!(
            cut.size < body.len() as u64,
            "{label}: {cut:?}\n{}",
            got.output
        );
        assert_ne!(cut.cache, "hit", "{label}: {cut:?}");
    }
    assert_eq!(c.s.https_origin.counts(path).requests, 2, "not cached");
    // Once the origin behaves, the next container gets the whole file from
    // it, and then from the cache.
    c.s.https_origin.set_behaviour(path, Behaviour::Normal);
    let got = c.run(&format!(
        "get whole1 /tmp/whole1 {container_url}\nget whole2 /tmp/whole2 {container_url}\n"
    ));
    assert_eq!(got.assert_whole("whole1", &sha).cache, "miss");
    assert_eq!(got.assert_whole("whole2", &sha).cache, "hit");
    assert_eq!(c.s.https_origin.counts(path).requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_container_an_interrupted_20mb_download_resumes_from_the_cache() {
    let c = Containers::start("").await;
    let size = 20 * 1024 * 1024;
    let half = 10 * 1024 * 1024;
    // Broken off by the client (curl's time limit), then resumed with
    // `curl -C -`: the download cistern went on storing serves the rest.
    let broken = "/debian/pool/main/l/large/large_1.0_amd64.deb";
    c.s.https_origin
        .put(broken, File::new(random_bytes(size, 53)));
    // The first half with an explicit range (forwarded, not stored), a whole
    // download by someone else, then the resume from the cache.
    let ranged = "/debian/pool/main/l/large/large_2.0_amd64.deb";
    c.s.https_origin
        .put(ranged, File::new(random_bytes(size, 54)));
    let broken_url = format!("https://{DEB}{broken}");
    let ranged_url = format!("https://{DEB}{ranged}");
    let (_, broken_sha) = c.expected(&broken_url);
    let (_, ranged_sha) = c.expected(&ranged_url);
    let got = c.run(&format!(
        "get cut /tmp/broken {b} --limit-rate 4M --max-time 1\n\
         get resumed /tmp/broken {b} -C -\n\
         get part /tmp/ranged {r} -r 0-{last}\n\
         get full /tmp/full {r}\n\
         get rest /tmp/ranged {r} -C -\n",
        b = c.url(&broken_url),
        r = c.url(&ranged_url),
        last = half - 1,
    ));
    let cut = got.get("cut");
    assert_eq!(cut.exit, 28, "stopped by --max-time: {}", got.output);
    assert!(
        cut.size > 0 && cut.size < size as u64,
        "{cut:?}\n{}",
        got.output
    );
    got.assert_resumed_from_cache("resumed", &broken_sha);
    let counts = c.s.https_origin.counts(broken);
    assert_eq!(
        (counts.requests, counts.ranged),
        (1, 0),
        "the resume came from the cache"
    );

    let part = got.get("part");
    assert_eq!((part.exit, part.status.as_str()), (0, "206"), "{part:?}");
    assert_eq!(part.size, half as u64);
    got.assert_whole("full", &ranged_sha);
    got.assert_resumed_from_cache("rest", &ranged_sha);
    let counts = c.s.https_origin.counts(ranged);
    assert_eq!(
        (counts.requests, counts.ranged),
        (2, 1),
        "the first half forwarded, the rest from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_container_eviction_keeps_the_cache_under_its_size_limit() {
    let c = Containers::start("  cache:\n    max_size: 3MB\n    max_object: 1MB\n").await;
    let mut script = String::new();
    let mut urls = Vec::new();
    for i in 0..8u64 {
        let path = format!("/debian/pool/main/e/evict/evict_{i}_amd64.deb");
        c.s.https_origin
            .put(&path, File::new(random_bytes(1_000_000, 200 + i)));
        let url = format!("https://{DEB}{path}");
        script += &format!("get e{i} /tmp/e{i} {}\n", c.url(&url));
        urls.push((url, path));
    }
    // The most recent file again.
    script += &format!("get last /tmp/last {}\n", c.url(&urls[7].0));
    let got = c.run(&script);
    for (i, (url, _)) in urls.iter().enumerate() {
        got.assert_whole(&format!("e{i}"), &c.expected(url).1);
    }
    let last = got.assert_whole("last", &c.expected(&urls[7].0).1);
    assert_eq!(last.cache, "hit", "{last:?}");
    assert_eq!(c.s.https_origin.counts(&urls[7].1).requests, 1);
    let stats = c.s.cistern_cmd(&["cache", "stats"]);
    let bytes: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("bytes: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1_000_000..=3_000_000).contains(&bytes), "{stats}");
    let on_disk = dir_size(&c.s.dirs.path().join("cache/content-v2"));
    assert!(on_disk <= 3_000_000, "{on_disk} bytes of content on disk");
}
