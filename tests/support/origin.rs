//! Local origins for the caching proxy tests: HTTP or HTTPS (with a test CA
//! made here with rcgen) on loopback, serving files from memory, counting
//! requests per path, answering conditionals with 304, and misbehaving on
//! demand (slow, failing, cut short).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How a file is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Normally.
    Normal,
    /// After waiting this long before the response head.
    Slow(Duration),
    /// With this status and no body.
    Fail(u16),
    /// Announcing the full length, then closing after half the body.
    CutShort,
    /// Chunked (no length announced), closing after half the body without
    /// the last chunk.
    CutShortChunked,
    /// The body in eight pieces, this long apart; with `cut`, closing after
    /// the fourth.
    Trickle { pause: Duration, cut: bool },
    /// Whole, chunked (no length announced).
    Chunked,
}

/// A file the origin serves.
#[derive(Debug, Clone)]
pub struct File {
    pub body: Bytes,
    pub etag: String,
    pub content_type: &'static str,
    pub behaviour: Behaviour,
    /// When set, the body depends on the request's `Accept` (`Vary: Accept`):
    /// the body paired with its value, else `body`.
    pub by_accept: Vec<(&'static str, Bytes)>,
    /// More headers sent with every `200` (`cache-control`, `set-cookie`...).
    pub headers: Vec<(&'static str, String)>,
    /// Whether `ETag` and `Last-Modified` are sent (and conditionals
    /// answered); without them the file is sent whole every time.
    pub validators: bool,
}

impl File {
    /// A file sent in eight pieces `pause` apart (see [`Behaviour::Trickle`]).
    pub fn trickling(body: impl Into<Bytes>, pause: Duration, cut: bool) -> File {
        let mut file = File::new(body);
        file.behaviour = Behaviour::Trickle { pause, cut };
        file
    }

    pub fn new(body: impl Into<Bytes>) -> File {
        let body = body.into();
        File {
            etag: format!("\"{:x}-{}\"", fnv(&body), body.len()),
            body,
            content_type: "application/octet-stream",
            behaviour: Behaviour::Normal,
            by_accept: Vec::new(),
            headers: Vec::new(),
            validators: true,
        }
    }

    /// A file sent with no `ETag` and no `Last-Modified`, as some mirrors
    /// send their index files.
    pub fn without_validators(body: impl Into<Bytes>) -> File {
        File {
            validators: false,
            ..File::new(body)
        }
    }

    /// The file as negotiated for a request with this `Accept` value.
    fn negotiated(self, accept: Option<&str>) -> File {
        match self.by_accept.iter().find(|(a, _)| Some(*a) == accept) {
            Some((_, body)) => File {
                content_type: self.content_type,
                behaviour: self.behaviour,
                by_accept: self.by_accept.clone(),
                headers: self.headers.clone(),
                validators: self.validators,
                ..File::new(body.clone())
            },
            None => self,
        }
    }
}

/// Requests seen for one path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// All requests.
    pub requests: u32,
    /// Requests with `If-None-Match` or `If-Modified-Since`.
    pub conditional: u32,
    /// 304 answers.
    pub not_modified: u32,
    /// Requests with `Range`.
    pub ranged: u32,
    /// Body bytes of the whole-file answers (`200` to a `GET`).
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    /// Set by [`Origin::stop`]: every request is answered by closing the
    /// connection.
    down: std::sync::atomic::AtomicBool,
    files: Mutex<HashMap<String, File>>,
    counts: Mutex<HashMap<String, Counts>>,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicU32,
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

pub const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

impl Origin {
    /// Starts an origin on a free loopback port; HTTPS when `tls` is given.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let state = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            if state.down.load(std::sync::atomic::Ordering::SeqCst) {
                                return Err(std::io::Error::other("origin is down"));
                            }
                            Ok(serve(&state, req).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Origin { addr, state, task }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Serves `file` at `path`.
    pub fn put(&self, path: &str, file: File) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(path.to_owned(), file);
    }

    /// Changes how `path` is served.
    pub fn set_behaviour(&self, path: &str, behaviour: Behaviour) {
        if let Some(f) = self.state.files.lock().unwrap().get_mut(path) {
            f.behaviour = behaviour;
        }
    }

    /// Takes the origin down: no new connections, and requests on open ones
    /// are answered by closing the connection.
    pub fn stop(&self) {
        self.state
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }

    /// Body bytes of every whole-file answer so far, all paths together.
    pub fn bytes_sent(&self) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap()
            .values()
            .map(|c| c.bytes)
            .sum()
    }

    /// What the origin saw for `path`.
    pub fn counts(&self, path: &str) -> Counts {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or_default()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let conditional = req.headers().contains_key("if-none-match")
        || req.headers().contains_key("if-modified-since");
    let file = state.files.lock().unwrap().get(&path).cloned();
    {
        let mut counts = state.counts.lock().unwrap();
        let c = counts.entry(path.clone()).or_default();
        c.requests += 1;
        c.conditional += u32::from(conditional);
        c.ranged += u32::from(req.headers().contains_key("range"));
    }
    let Some(file) = file else {
        return status(StatusCode::NOT_FOUND);
    };
    let vary = !file.by_accept.is_empty();
    let file = file.negotiated(req.headers().get("accept").and_then(|v| v.to_str().ok()));
    match file.behaviour {
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Fail(code) => return status(StatusCode::from_u16(code).unwrap()),
        _ => {}
    }
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if file.validators
        && inm.is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == file.etag)
        })
    {
        state
            .counts
            .lock()
            .unwrap()
            .entry(path)
            .or_default()
            .not_modified += 1;
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header("etag", &file.etag)
            .header("last-modified", LAST_MODIFIED)
            .body(
                Full::new(Bytes::new())
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
    }
    let mut builder = Response::builder().header("content-type", file.content_type);
    if file.validators {
        builder = builder
            .header("etag", &file.etag)
            .header("last-modified", LAST_MODIFIED);
    }
    if vary {
        builder = builder.header("vary", "Accept");
    }
    for (name, value) in &file.headers {
        builder = builder.header(*name, value);
    }
    if req.method() == hyper::Method::HEAD {
        return builder
            .body(
                Full::new(Bytes::new())
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
    }
    if let Some((start, end)) = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
    {
        let len = file.body.len();
        let start: usize = start.parse().unwrap_or(0);
        let end: usize = end.parse().map_or(len - 1, |e: usize| e.min(len - 1));
        return builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", format!("bytes {start}-{end}/{len}"))
            .header("content-length", end - start + 1)
            .body(
                Full::new(file.body.slice(start..=end))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
    }
    state
        .counts
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .bytes += file.body.len() as u64;
    let builder = if matches!(
        file.behaviour,
        Behaviour::CutShortChunked | Behaviour::Chunked
    ) {
        builder
    } else {
        builder.header("content-length", file.body.len())
    };
    let body = match file.behaviour {
        Behaviour::CutShort | Behaviour::CutShortChunked => {
            let half = file.body.slice(..file.body.len() / 2);
            let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("origin cut the response short")),
            ];
            StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
        }
        Behaviour::Trickle { pause, cut } => {
            let body = file.body.clone();
            let piece = body.len().div_ceil(8).max(1);
            let pieces = if cut { 4 } else { 8 };
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let body = body.clone();
                async move {
                    if i > pieces || i * piece >= body.len() {
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    if i == pieces {
                        let cut = std::io::Error::other("origin cut the response short");
                        return Some((Err(cut), usize::MAX));
                    }
                    let end = ((i + 1) * piece).min(body.len());
                    Some((Ok(Frame::data(body.slice(i * piece..end))), i + 1))
                }
            });
            StreamBody::new(stream).boxed_unsync()
        }
        Behaviour::Chunked => {
            let body = file.body.clone();
            let pieces: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..body.len())
                .step_by(64 * 1024)
                .map(|at| {
                    Ok(Frame::data(
                        body.slice(at..(at + 64 * 1024).min(body.len())),
                    ))
                })
                .collect();
            StreamBody::new(futures_util::stream::iter(pieces)).boxed_unsync()
        }
        _ => Full::new(file.body.clone())
            .map_err(|e| match e {})
            .boxed_unsync(),
    };
    builder.body(body).unwrap()
}

fn status(code: StatusCode) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(
            Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Deterministic pseudo-random bytes (xorshift), so files differ by seed.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A test CA and a server config for origins answering to `names`.
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new(names: &[&str]) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cistern test origin CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&leaf_key, &ca, &ca_key)
                .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TestCa {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

impl Origin {
    /// The file served at `path`, if any (e.g. for the digest a client's
    /// download must have).
    pub fn file(&self, path: &str) -> Option<File> {
        self.state.files.lock().unwrap().get(path).cloned()
    }
}
