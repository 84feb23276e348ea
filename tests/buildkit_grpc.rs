//! BuildKit's `/grpc` endpoint through cistern, against the real daemon's
//! embedded BuildKit: a gRPC client written here (hyper's HTTP/2 client over
//! the `POST /grpc` `Upgrade: h2c` hijack, as buildx's `docker` driver
//! dials it) sends `moby.buildkit.v1.Control` calls with hand-built LLB.
//!
//! What ran on the daemon is read back from the daemon directly (its own
//! `/grpc`, bypassing cistern): `DiskUsage` lists a cache record for each
//! RUN step it executed, described by the step's command line, which holds
//! a marker unique to the test.

mod support;

use std::path::Path;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;

use support::{busybox, daemon, sha256_hex, unique, Cistern, Cleanup};

// The BuildKit messages the client sends and reads, with the tags of
// control.proto / ops.proto / worker.proto at BuildKit eeb7b65ab7d6 (the
// version dockerd 20.10.24 vendors).

#[derive(Clone, PartialEq, Message)]
struct SolveRequest {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(message, optional, tag = "2")]
    definition: Option<Definition>,
    #[prost(string, tag = "3")]
    exporter: String,
    #[prost(map = "string, string", tag = "4")]
    exporter_attrs: std::collections::HashMap<String, String>,
    #[prost(string, tag = "5")]
    session: String,
    #[prost(string, repeated, tag = "9")]
    entitlements: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Definition {
    #[prost(bytes = "vec", repeated, tag = "1")]
    def: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Op {
    #[prost(message, repeated, tag = "1")]
    inputs: Vec<Input>,
    #[prost(message, optional, tag = "2")]
    exec: Option<ExecOp>,
    #[prost(message, optional, tag = "3")]
    source: Option<SourceOp>,
    #[prost(message, optional, tag = "10")]
    platform: Option<Platform>,
}

#[derive(Clone, PartialEq, Message)]
struct Input {
    #[prost(string, tag = "1")]
    digest: String,
    #[prost(int64, tag = "2")]
    index: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Platform {
    #[prost(string, tag = "1")]
    architecture: String,
    #[prost(string, tag = "2")]
    os: String,
}

#[derive(Clone, PartialEq, Message)]
struct ExecOp {
    #[prost(message, optional, tag = "1")]
    meta: Option<Meta>,
    #[prost(message, repeated, tag = "2")]
    mounts: Vec<Mount>,
    #[prost(int32, tag = "3")]
    network: i32,
    #[prost(int32, tag = "4")]
    security: i32,
}

#[derive(Clone, PartialEq, Message)]
struct Meta {
    #[prost(string, repeated, tag = "1")]
    args: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    env: Vec<String>,
    #[prost(string, tag = "3")]
    cwd: String,
}

#[derive(Clone, PartialEq, Message)]
struct Mount {
    #[prost(int64, tag = "1")]
    input: i64,
    #[prost(string, tag = "3")]
    dest: String,
    #[prost(int64, tag = "4")]
    output: i64,
    #[prost(int32, tag = "6")]
    mount_type: i32,
    #[prost(message, optional, tag = "20")]
    cache_opt: Option<CacheOpt>,
}

#[derive(Clone, PartialEq, Message)]
struct CacheOpt {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, Message)]
struct SourceOp {
    #[prost(string, tag = "1")]
    identifier: String,
}

#[derive(Clone, PartialEq, Message)]
struct StatusRequest {
    #[prost(string, tag = "1")]
    r#ref: String,
}

#[derive(Clone, PartialEq, Message)]
struct StatusResponse {
    #[prost(message, repeated, tag = "1")]
    vertexes: Vec<Vertex>,
    #[prost(message, repeated, tag = "3")]
    logs: Vec<VertexLog>,
}

#[derive(Clone, PartialEq, Message)]
struct Vertex {
    #[prost(string, tag = "3")]
    name: String,
    #[prost(bool, tag = "4")]
    cached: bool,
    #[prost(message, optional, tag = "6")]
    completed: Option<Timestamp>,
    #[prost(string, tag = "7")]
    error: String,
}

#[derive(Clone, PartialEq, Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
}

#[derive(Clone, PartialEq, Message)]
struct VertexLog {
    #[prost(bytes = "vec", tag = "4")]
    msg: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ListWorkersResponse {
    #[prost(message, repeated, tag = "1")]
    record: Vec<WorkerRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct WorkerRecord {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, Message)]
struct DiskUsageResponse {
    #[prost(message, repeated, tag = "1")]
    record: Vec<UsageRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct UsageRecord {
    #[prost(string, tag = "9")]
    description: String,
}

#[derive(Clone, PartialEq, Message)]
struct PruneRequest {
    #[prost(bool, tag = "2")]
    all: bool,
}

#[derive(Clone, PartialEq, Message)]
struct SolveResponse {
    #[prost(map = "string, string", tag = "1")]
    exporter_response: std::collections::HashMap<String, String>,
}

/// A gRPC call's outcome: `grpc-status`, `grpc-message` and the messages.
#[derive(Debug)]
struct Answer {
    code: u32,
    message: String,
    messages: Vec<Bytes>,
}

impl Answer {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "gRPC error: {}", self.message);
        self
    }

    fn refused(&self, rule: &str) {
        assert_eq!(self.code, 7, "expected PERMISSION_DENIED, got: {self:?}");
        assert!(
            self.message.starts_with("cistern: ")
                && self.message.ends_with(&format!("rule {rule})")),
            "{}",
            self.message
        );
    }
}

/// A BuildKit client on one `/grpc` connection.
#[derive(Clone)]
struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    /// `POST /grpc` with `Upgrade: h2c` on `sock`, then HTTP/2.
    async fn connect(sock: &Path) -> Client {
        Client {
            sender: h2(sock).await,
        }
    }

    /// One call; the answer's messages once the stream ended.
    async fn call(&self, method: &str, msg: impl Message, headers: &[(&str, &str)]) -> Answer {
        let body = msg.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        let mut req =
            hyper::Request::post(format!("http://docker/moby.buildkit.v1.Control/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(framed))).unwrap();
        let mut sender = self.sender.clone();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let mut data = collected.to_bytes();
        let header = |name: &str| {
            trailers
                .get(name)
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let code = header("grpc-status").parse().unwrap_or(u32::MAX);
        let message = percent_decode(&header("grpc-message"));
        let mut messages = Vec::new();
        while data.len() >= 5 {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            data.advance(5);
            messages.push(data.split_to(len));
        }
        Answer {
            code,
            message,
            messages,
        }
    }
}

/// An HTTP/2 connection over a `POST /grpc` hijack of `sock`.
async fn h2<B>(sock: &Path) -> SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::post("/grpc")
        .header("Host", "docker")
        .header("Connection", "Upgrade")
        .header("Upgrade", "h2c")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101, "POST /grpc: {resp:?}");
    let io = hyper::upgrade::on(resp).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

type Frames = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;

/// A `Session` call with session ID `id`, held open (its request body never
/// ends) until the returned sender is dropped.
async fn hold_session(sock: &Path, id: &str) -> tokio::sync::mpsc::Sender<Frames> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frames>(1);
    let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let body = http_body_util::StreamBody::new(frames);
    let mut sender = h2(sock).await;
    let req = hyper::Request::post("http://docker/moby.buildkit.v1.Control/Session")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-docker-expose-session-uuid", id)
        .header("x-docker-expose-session-name", "test")
        .body(body)
        .unwrap();
    sender.ready().await.unwrap();
    tokio::spawn(async move {
        let _answer = sender.send_request(req).await;
        std::future::pending::<()>().await;
    });
    tx
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
    }
}

/// LLB: `cistern-test/busybox`, then `sh -c <script>` on it, with the
/// given network and security modes; `marker` makes the step unique.
fn definition(script: &str, network: i32, security: i32) -> Definition {
    definition_with(script, network, security, None)
}

/// [`definition`], the step with a cache mount of id `cache` at `/cache`.
fn definition_with(script: &str, network: i32, security: i32, cache: Option<&str>) -> Definition {
    let image = match busybox().contains(':') {
        true => format!("docker-image://docker.io/{}", busybox()),
        false => format!("docker-image://docker.io/{}:latest", busybox()),
    };
    let source = Op {
        source: Some(SourceOp { identifier: image }),
        platform: Some(platform()),
        ..Op::default()
    }
    .encode_to_vec();
    let digest = |b: &[u8]| format!("sha256:{}", sha256_hex(b));
    let exec = Op {
        inputs: vec![Input {
            digest: digest(&source),
            index: 0,
        }],
        exec: Some(ExecOp {
            meta: Some(Meta {
                args: vec!["sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
                cwd: "/".into(),
            }),
            mounts: std::iter::once(Mount {
                input: 0,
                dest: "/".into(),
                output: 0,
                ..Mount::default()
            })
            .chain(cache.map(|id| Mount {
                input: -1,
                dest: "/cache".into(),
                output: -1,
                mount_type: 3,
                cache_opt: Some(CacheOpt { id: id.into() }),
            }))
            .collect(),
            network,
            security,
        }),
        platform: Some(platform()),
        ..Op::default()
    }
    .encode_to_vec();
    let terminal = Op {
        inputs: vec![Input {
            digest: digest(&exec),
            index: 0,
        }],
        ..Op::default()
    }
    .encode_to_vec();
    Definition {
        def: vec![source, exec, terminal],
    }
}

fn solve(r#ref: &str, def: Definition) -> SolveRequest {
    SolveRequest {
        r#ref: r#ref.into(),
        definition: Some(def),
        ..SolveRequest::default()
    }
}

/// The descriptions of the daemon's build cache records, asked of the
/// daemon directly.
async fn daemon_cache() -> Vec<String> {
    let direct = Client::connect(&daemon()).await;
    let answer = direct.call("DiskUsage", PruneRequest::default(), &[]).await;
    answer.ok();
    answer
        .messages
        .iter()
        .flat_map(|m| DiskUsageResponse::decode(m.clone()).unwrap().record)
        .map(|r| r.description)
        .collect()
}

/// Two tenants, `alice` and `bob`, on their own listeners with the default
/// policy.
fn two_tenants() -> (Cistern, String, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let id = unique("bkgrpc");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let config = format!(
        "instance: test-{id}\nadmin:\n  tcp: {admin}\nstate_dir: {state}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: alice\n    unix: {{path: {d}/alice.sock, mode: \"0600\"}}\n    identity: {{fixed: alice-{id}}}\n  - name: bob\n    unix: {{path: {d}/bob.sock, mode: \"0600\"}}\n    identity: {{fixed: bob-{id}}}\n",
        state = d.join("state").display(),
        daemon = daemon().display(),
        d = d.display(),
    );
    let cistern = Cistern::start_with_config(dir, d.join("bob.sock"), &config);
    (cistern, id, admin)
}

/// The admin listener's `/metrics` text.
fn metrics(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_calls_through_cistern_run_on_the_daemon_under_policy() {
    busybox();
    let (cistern, id, admin) = two_tenants();
    let sock = |l: &str| cistern.dir.path().join(format!("{l}.sock"));
    let alice = Client::connect(&sock("alice")).await;
    let bob = Client::connect(&sock("bob")).await;

    // ListWorkers: the daemon's answer, through cistern.
    let workers = alice
        .call("ListWorkers", PruneRequest::default(), &[])
        .await;
    workers.ok();
    let workers = ListWorkersResponse::decode(workers.messages[0].clone()).unwrap();
    assert!(
        workers.record.iter().any(|w| !w.id.is_empty()),
        "{workers:?}"
    );

    // A Solve of hand-built LLB, its Status streamed alongside: the daemon
    // runs the step.
    let marker = format!("ok-{id}");
    let ran = format!("echo {marker} > /x && cat /x");
    let image = format!("cistern-test/bkgrpc-{id}:1");
    let _cleanup = Cleanup::image(&image);
    let mut req = solve(&format!("ref-ok-{id}"), definition(&ran, 0, 0));
    req.exporter = "moby".into();
    req.exporter_attrs = [("name".to_string(), image.clone())].into();
    let solving = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.call("Solve", req, &[]).await })
    };
    let status = alice
        .call(
            "Status",
            StatusRequest {
                r#ref: format!("ref-ok-{id}"),
            },
            &[],
        )
        .await;
    status.ok();
    let solved = solving.await.unwrap();
    solved.ok();
    let updates: Vec<StatusResponse> = status
        .messages
        .iter()
        .map(|m| StatusResponse::decode(m.clone()).unwrap())
        .collect();
    let step = updates
        .iter()
        .flat_map(|u| &u.vertexes)
        .find(|v| v.name.contains(&marker) && v.completed.is_some())
        .unwrap_or_else(|| panic!("no completed step in {updates:?}"));
    assert!(step.error.is_empty() && !step.cached, "{step:?}");
    let logs: Vec<u8> = updates
        .iter()
        .flat_map(|u| &u.logs)
        .flat_map(|l| l.msg.clone())
        .collect();
    assert!(
        String::from_utf8_lossy(&logs).contains(&marker),
        "{}",
        String::from_utf8_lossy(&logs)
    );
    assert!(daemon_cache().await.iter().any(|d| d.contains(&marker)));
    let built = support::run_ok(
        support::docker_direct().args(["image", "inspect", "-f", "{{.Id}}", &image]),
    );
    let digest = SolveResponse::decode(solved.messages[0].clone())
        .unwrap()
        .exporter_response
        .remove("containerimage.digest")
        .unwrap();
    assert_eq!(built.trim(), digest);

    // Refused, the rule named, and nothing reaches the daemon.
    let never = format!("never-{id}");
    let script = format!("echo {never}");
    let mut entitled = solve(&format!("ref-e-{id}"), definition(&script, 0, 0));
    entitled.entitlements = vec!["network.host".into()];
    alice
        .call("Solve", entitled, &[])
        .await
        .refused("buildkit_entitlement");
    let host_net = solve(&format!("ref-n-{id}"), definition(&script, 1, 0));
    alice
        .call("Solve", host_net, &[])
        .await
        .refused("buildkit_network_host");
    let insecure = solve(&format!("ref-i-{id}"), definition(&script, 0, 1));
    alice
        .call("Solve", insecure, &[])
        .await
        .refused("buildkit_insecure");
    // A cache mount outside alice's namespace (bob's, or the default one
    // every Dockerfile build without cistern shares).
    for cache in [
        format!("cistern/test-{id}/bob-{id}/cache"),
        "/cache".to_string(),
    ] {
        let shared = solve(
            &format!("ref-c-{id}"),
            definition_with(&script, 0, 0, Some(&cache)),
        );
        alice
            .call("Solve", shared, &[])
            .await
            .refused("buildkit_cache_mount");
    }
    let mut others = solve(&format!("ref-o-{id}"), definition(&script, 0, 0));
    others.exporter = "moby".into();
    others.exporter_attrs = [("name".to_string(), format!("x-{id},{image}"))].into();
    bob.call("Solve", others, &[])
        .await
        .refused("buildkit_image_name");
    let mut borrowed = solve(&format!("ref-s-{id}"), definition(&script, 0, 0));
    borrowed.session = format!("session-of-nobody-{id}");
    // (cistern waits a while for the session to be opened first.)
    bob.call("Solve", borrowed, &[])
        .await
        .refused("buildkit_session");
    // A session is its opener's: another tenant can neither take its ID nor
    // build with it; its opener can.
    let held = format!("session-of-alice-{id}");
    let _session = hold_session(&sock("alice"), &held).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    bob.call(
        "Session",
        PruneRequest::default(),
        &[("x-docker-expose-session-uuid", held.as_str())],
    )
    .await
    .refused("buildkit_session");
    let mut stolen = solve(&format!("ref-t-{id}"), definition(&script, 0, 0));
    stolen.session = held.clone();
    bob.call("Solve", stolen, &[])
        .await
        .refused("buildkit_session");
    let mut own = solve(
        &format!("ref-own-{id}"),
        definition(&format!("echo own-{id}"), 0, 0),
    );
    own.session = held.clone();
    alice.call("Solve", own, &[]).await.ok();
    assert!(
        !daemon_cache().await.iter().any(|d| d.contains(&never)),
        "a refused step ran"
    );

    // Another tenant's build status, a prune of all the shared cache, the
    // cache's disk usage and unknown calls are refused.
    bob.call(
        "Status",
        StatusRequest {
            r#ref: format!("ref-ok-{id}"),
        },
        &[],
    )
    .await
    .refused("buildkit_status");
    bob.call("Prune", PruneRequest { all: true }, &[])
        .await
        .refused("buildkit_prune_all");
    bob.call("DiskUsage", PruneRequest::default(), &[])
        .await
        .refused("buildkit_disk_usage");
    bob.call("ListenBuildHistory", PruneRequest::default(), &[])
        .await
        .refused("buildkit_method");

    // The refusals are counted for the admin listener, by rule.
    let text = metrics(admin);
    for rule in [
        "buildkit_entitlement",
        "buildkit_status",
        "buildkit_prune_all",
        "buildkit_method",
    ] {
        let line = format!("cistern_policy_refusals_total{{rule=\"{rule}\",action=\"refused\"}}");
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}
