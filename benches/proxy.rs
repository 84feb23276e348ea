//! Benchmark: the Docker daemon's own socket and cistern in front of it, side
//! by side, interleaved, printed as ratios (cistern / direct).
//!
//! Run with `cargo bench --bench proxy` (or `scripts/bench`) on a host whose
//! daemon answers at `$CISTERN_TEST_DOCKER_SOCK` (default
//! `/var/run/docker.sock`) and has the `cistern-test/busybox` image (the test
//! suite creates it). Sizes can be scaled down with `CISTERN_BENCH_SCALE=0.1`.
//!
//! With `CISTERN_BENCH_BASELINE=<another cistern binary>` (for example one
//! built from an earlier commit), it compares that binary and this one
//! instead, both in front of the same daemon: `/_ping` latency and
//! throughput and container create latency, interleaved, five rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const IMAGE: &str = "cistern-test/busybox:latest";

type Sender = SendRequest<Full<Bytes>>;

async fn connect(sock: &Path) -> Sender {
    let stream = UnixStream::connect(sock).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

async fn call(sender: &mut Sender, method: Method, path: &str, body: Bytes) -> (StatusCode, Bytes) {
    sender.ready().await.expect("ready");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker")
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// Reads a whole response body, counting bytes without keeping them.
async fn drain(sender: &mut Sender, path: &str) -> u64 {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "docker")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len() as u64;
        }
    }
    n
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Side {
    sock: PathBuf,
}

struct Cistern {
    child: Child,
    _dir: tempfile::TempDir,
    sock: PathBuf,
}

impl Cistern {
    fn start(daemon: &Path) -> Cistern {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_cistern")), daemon)
    }

    fn start_binary(bin: &Path, daemon: &Path) -> Cistern {
        Self::start_with(bin, daemon, "")
    }

    /// With `extra` YAML appended to the configuration (paths: `{dir}`).
    fn start_with(bin: &Path, daemon: &Path, extra: &str) -> Cistern {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let config = dir.path().join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "log:\n  level: warn\nadmin: none\nupstream:\n  unix: {}\nlisteners:\n  - unix:\n      path: {}\n{}",
                daemon.display(),
                sock.display(),
                extra.replace("{dir}", &dir.path().display().to_string())
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Cistern {
            child,
            _dir: dir,
            sock,
        }
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cistern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(what: &str, direct: f64, cistern: f64, unit: &str, higher_is_better: bool) {
    let ratio = cistern / direct;
    let note = if higher_is_better {
        "x of direct (higher is better)"
    } else {
        "x of direct (lower is better)"
    };
    println!("{what:<44} direct {direct:>10.2} {unit:<6} cistern {cistern:>10.2} {unit:<6} ratio {ratio:.3}{note:>0}", note = format!(" {note}"));
}

async fn ping_latency(side: &Side, n: usize) -> (Duration, Duration, f64) {
    let mut sender = connect(&side.sock).await;
    let mut times = Vec::with_capacity(n);
    for _ in 0..100 {
        call(&mut sender, Method::GET, "/_ping", Bytes::new()).await;
    }
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = call(&mut sender, Method::GET, "/_ping", Bytes::new()).await;
        assert_eq!(status, 200);
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), 0.0)
}

async fn ping_throughput(side: &Side, conns: usize, per_conn: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let sock = side.sock.clone();
            tokio::spawn(async move {
                let mut sender = connect(&sock).await;
                for _ in 0..per_conn {
                    call(&mut sender, Method::GET, "/_ping", Bytes::new()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (conns * per_conn) as f64 / start.elapsed().as_secs_f64()
}

async fn create(sender: &mut Sender, cmd: &[&str], extra: serde_json::Value) -> String {
    let mut body =
        serde_json::json!({ "Image": IMAGE, "Cmd": cmd, "Labels": {"cistern-bench": "1"} });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (status, out) = call(
        sender,
        Method::POST,
        "/containers/create",
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&out));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["Id"].as_str().unwrap().to_string()
}

async fn remove(sender: &mut Sender, id: &str) {
    call(
        sender,
        Method::DELETE,
        &format!("/containers/{id}?force=1&v=1"),
        Bytes::new(),
    )
    .await;
}

async fn lifecycle(side: &Side, n: usize) -> f64 {
    let mut sender = connect(&side.sock).await;
    let start = Instant::now();
    for _ in 0..n {
        let id = create(&mut sender, &["true"], serde_json::json!({})).await;
        call(
            &mut sender,
            Method::POST,
            &format!("/containers/{id}/start"),
            Bytes::new(),
        )
        .await;
        call(
            &mut sender,
            Method::POST,
            &format!("/containers/{id}/wait"),
            Bytes::new(),
        )
        .await;
        remove(&mut sender, &id).await;
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

/// Median time of `POST /containers/create` alone (removal not timed).
async fn create_only(side: &Side, n: usize) -> f64 {
    let mut sender = connect(&side.sock).await;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = create(
            &mut sender,
            &["true"],
            serde_json::json!({"HostConfig": {"Privileged": false, "CapAdd": null, "Binds": []}}),
        )
        .await;
        times.push(t.elapsed());
        remove(&mut sender, &id).await;
    }
    times.sort();
    percentile(&times, 0.5).as_secs_f64() * 1000.0
}

async fn list_latency(side: &Side, n: usize) -> f64 {
    let mut sender = connect(&side.sock).await;
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        call(
            &mut sender,
            Method::GET,
            "/containers/json?all=1",
            Bytes::new(),
        )
        .await;
        times.push(t.elapsed());
    }
    times.sort();
    percentile(&times, 0.5).as_secs_f64() * 1000.0
}

async fn logs_throughput(side: &Side, id: &str) -> f64 {
    let mut sender = connect(&side.sock).await;
    let start = Instant::now();
    let n = drain(
        &mut sender,
        &format!("/containers/{id}/logs?stdout=1&stderr=1"),
    )
    .await;
    n as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn tar_of(name: &str, size: usize) -> Bytes {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend((0..size).map(|i| (i % 251) as u8));
    let padded = tar.len().div_ceil(512) * 512 + 1024;
    tar.resize(padded, 0);
    Bytes::from(tar)
}

async fn cp_in_out(side: &Side, id: &str, tar: &Bytes) -> (f64, f64) {
    let mut sender = connect(&side.sock).await;
    let start = Instant::now();
    let (status, out) = call(
        &mut sender,
        Method::PUT,
        &format!("/containers/{id}/archive?path=/tmp"),
        tar.clone(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let up = tar.len() as f64 / 1e6 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let n = drain(
        &mut sender,
        &format!("/containers/{id}/archive?path=/tmp/big.bin"),
    )
    .await;
    let down = n as f64 / 1e6 / start.elapsed().as_secs_f64();
    (up, down)
}

async fn exec_cat(side: &Side, id: &str, size: usize) -> f64 {
    let mut sender = connect(&side.sock).await;
    let body = serde_json::json!({"AttachStdin": true, "AttachStdout": true, "Cmd": ["cat"]});
    let (_, out) = call(
        &mut sender,
        Method::POST,
        &format!("/containers/{id}/exec"),
        Bytes::from(body.to_string()),
    )
    .await;
    let exec: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let exec_id = exec["Id"].as_str().unwrap().to_string();
    let mut sender = connect(&side.sock).await;
    let req = Request::post(format!("/exec/{exec_id}/start"))
        .header("host", "docker")
        .header("content-type", "application/json")
        .header("connection", "Upgrade")
        .header("upgrade", "tcp")
        .body(Full::new(Bytes::from_static(
            b"{\"Detach\":false,\"Tty\":false}",
        )))
        .unwrap();
    let start = Instant::now();
    let mut resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    let (mut rd, mut wr) = tokio::io::split(upgraded);
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        wr.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    loop {
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.await.unwrap();
    // Output is framed: 8-byte headers per frame; the payload is what came in.
    assert!(got >= size, "exec returned {got} of {size} bytes");
    size as f64 / 1e6 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::var("CISTERN_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let daemon = std::env::var_os("CISTERN_TEST_DOCKER_SOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    if let Some(baseline) = std::env::var_os("CISTERN_BENCH_BASELINE") {
        return against_baseline(Path::new(&baseline), &daemon, scale).await;
    }
    if std::env::var_os("CISTERN_BENCH_LEARNING").is_some() {
        return learning_cost(&daemon, scale).await;
    }
    let cistern = Cistern::start(&daemon);
    let sides = [
        Side {
            sock: daemon.clone(),
        },
        Side {
            sock: cistern.sock.clone(),
        },
    ];
    let rounds = 3;
    if std::env::var_os("CISTERN_BENCH_PING_ONLY").is_some() {
        let n_ping = 5000;
        let med3 = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (mut d, mut c, mut d99, mut c99, mut dr, mut cr) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..5 {
            let a = ping_latency(&sides[0], n_ping).await;
            d.push(a.0.as_secs_f64() * 1e6);
            d99.push(a.1.as_secs_f64() * 1e6);
            let b = ping_latency(&sides[1], n_ping).await;
            c.push(b.0.as_secs_f64() * 1e6);
            c99.push(b.1.as_secs_f64() * 1e6);
            dr.push(ping_throughput(&sides[0], 16, 500).await);
            cr.push(ping_throughput(&sides[1], 16, 500).await);
        }
        report("/_ping p50", med3(d), med3(c), "us", false);
        report("/_ping p99", med3(d99), med3(c99), "us", false);
        report("/_ping req/s", med3(dr), med3(cr), "req/s", true);
        return;
    }
    println!(
        "cistern proxy benchmark: daemon {}, {rounds} interleaved rounds, scale {scale}",
        daemon.display()
    );

    // Every figure: median over rounds, alternating direct and cistern.
    let med = |f: &mut dyn FnMut(usize) -> f64| -> (f64, f64) {
        let mut d = Vec::new();
        let mut c = Vec::new();
        for _ in 0..rounds {
            d.push(f(0));
            c.push(f(1));
        }
        d.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        (d[rounds / 2], c[rounds / 2])
    };
    let rt = tokio::runtime::Handle::current();
    let block = |fut: std::pin::Pin<Box<dyn std::future::Future<Output = f64> + '_>>| {
        tokio::task::block_in_place(|| rt.block_on(fut))
    };

    let n_ping = (5000.0 * scale).max(200.0) as usize;
    let (d50, c50) = med(&mut |i| {
        block(Box::pin(async {
            ping_latency(&sides[i], n_ping).await.0.as_secs_f64() * 1e6
        }))
    });
    report("/_ping p50 latency (keep-alive)", d50, c50, "us", false);
    let (d99, c99) = med(&mut |i| {
        block(Box::pin(async {
            ping_latency(&sides[i], n_ping).await.1.as_secs_f64() * 1e6
        }))
    });
    report("/_ping p99 latency (keep-alive)", d99, c99, "us", false);
    let (dr, cr) = med(&mut |i| block(Box::pin(ping_throughput(&sides[i], 16, n_ping / 8))));
    report(
        "/_ping requests/s (16 keep-alive conns)",
        dr,
        cr,
        "req/s",
        true,
    );

    // 50 containers for the listing.
    // Created through cistern so that both sides may use them: cistern shows
    // a client only what its tenant created, the daemon shows everything.
    let mut admin = connect(&cistern.sock).await;
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed.push(create(&mut admin, &["sleep", "600"], serde_json::json!({})).await);
    }
    let (dl, cl) = med(&mut |i| block(Box::pin(list_latency(&sides[i], 50))));
    report(
        "GET /containers/json (50 containers) p50",
        dl,
        cl,
        "ms",
        false,
    );
    for id in &listed {
        remove(&mut admin, id).await;
    }

    let creates = (50.0 * scale).max(10.0) as usize;
    let (dcr, ccr) = med(&mut |i| block(Box::pin(create_only(&sides[i], creates))));
    report(
        "container create (conservative policy) p50",
        dcr,
        ccr,
        "ms",
        false,
    );

    let cycles = (20.0 * scale).max(3.0) as usize;
    let (dc, cc) = med(&mut |i| block(Box::pin(lifecycle(&sides[i], cycles))));
    report("create+start+wait+remove per cycle", dc, cc, "ms", false);

    // ~500 MB of logs in 1000-byte lines.
    let log_mb = (500.0 * scale).max(10.0) as usize;
    let lines = log_mb * 1000;
    let logger = create(
        &mut admin,
        &["sh", "-c", &format!("l=$(head -c 999 /dev/zero | tr '\\0' a); i=0; while [ $i -lt {lines} ]; do echo $l; i=$((i+1)); done")],
        serde_json::json!({"HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": "4g"}}}}),
    )
    .await;
    call(
        &mut admin,
        Method::POST,
        &format!("/containers/{logger}/start"),
        Bytes::new(),
    )
    .await;
    call(
        &mut admin,
        Method::POST,
        &format!("/containers/{logger}/wait"),
        Bytes::new(),
    )
    .await;
    let (dt, ct) = med(&mut |i| block(Box::pin(logs_throughput(&sides[i], &logger))));
    report(
        &format!("logs throughput ({log_mb} MB)"),
        dt,
        ct,
        "MB/s",
        true,
    );
    remove(&mut admin, &logger).await;

    let box_id = create(&mut admin, &["sleep", "3600"], serde_json::json!({})).await;
    call(
        &mut admin,
        Method::POST,
        &format!("/containers/{box_id}/start"),
        Bytes::new(),
    )
    .await;
    let cp_mb = (200.0 * scale).max(10.0) as usize;
    let tar = tar_of("big.bin", cp_mb * 1_000_000);
    let (du, cu) = med(&mut |i| {
        block(Box::pin(async {
            cp_in_out(&sides[i], &box_id, &tar).await.0
        }))
    });
    report(
        &format!("cp in ({cp_mb} MB, PUT archive)"),
        du,
        cu,
        "MB/s",
        true,
    );
    let (dd, cd) = med(&mut |i| {
        block(Box::pin(async {
            cp_in_out(&sides[i], &box_id, &tar).await.1
        }))
    });
    report(
        &format!("cp out ({cp_mb} MB, GET archive)"),
        dd,
        cd,
        "MB/s",
        true,
    );

    let exec_mb = (100.0 * scale).max(10.0) as usize;
    let (de, ce) = med(&mut |i| block(Box::pin(exec_cat(&sides[i], &box_id, exec_mb * 1_000_000))));
    report(
        &format!("exec -i cat ({exec_mb} MB through)"),
        de,
        ce,
        "MB/s",
        true,
    );

    // 50 concurrent follow streams through cistern: resident memory.
    let mut streams = Vec::new();
    for _ in 0..50 {
        let sock = cistern.sock.clone();
        let id = box_id.clone();
        streams.push(tokio::spawn(async move {
            let mut sender = connect(&sock).await;
            drain(
                &mut sender,
                &format!("/containers/{id}/logs?stdout=1&follow=1"),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_streams = cistern.rss_kib("VmRSS:");
    for s in &streams {
        s.abort();
    }
    remove(&mut admin, &box_id).await;
    println!(
        "cistern RSS with 50 open streams            {:>8.1} MB",
        rss_streams as f64 / 1024.0
    );
    println!(
        "cistern peak RSS over the whole run          {:>8.1} MB",
        cistern.rss_kib("VmHWM:") as f64 / 1024.0
    );
}

/// What reading images for repository hosts costs a container create:
/// cistern with caching and `discover.images` on against the same with it
/// off, interleaved, five rounds (the image is read once; each create after
/// that is one image inspect and a look-up).
async fn learning_cost(daemon: &Path, scale: f64) {
    let bin = Path::new(env!("CARGO_BIN_EXE_cistern"));
    let caching = |images: bool| {
        format!(
            "caching:\n  domains: [bench.example.test]\n  discover: {{host: false, images: {images}}}\n  state_dir: {{dir}}/state\n  cache_dir: {{dir}}/cache\n  proxy: {{http: \"127.0.0.1:0\", https: \"127.0.0.1:0\"}}\n"
        )
    };
    let off = Cistern::start_with(bin, daemon, &caching(false));
    let on = Cistern::start_with(bin, daemon, &caching(true));
    let sides = [
        Side {
            sock: off.sock.clone(),
        },
        Side {
            sock: on.sock.clone(),
        },
    ];
    let creates = (50.0 * scale).max(10.0) as usize;
    let mut rows: [Vec<f64>; 2] = Default::default();
    for _ in 0..5 {
        for (i, side) in sides.iter().enumerate() {
            rows[i].push(create_only(side, creates).await);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [off_ms, on_ms] = rows.map(median);
    println!(
        "container create with caching p50: discover.images off {off_ms:.2} ms, on {on_ms:.2} ms: {:+.2} ms per create ({:.3}x)",
        on_ms - off_ms,
        on_ms / off_ms
    );
}

/// This cistern against another binary of it, both in front of `daemon`:
/// ping and create, interleaved (baseline, this, baseline, ...), median of
/// five rounds, printed as this/baseline.
async fn against_baseline(baseline: &Path, daemon: &Path, scale: f64) {
    let before = Cistern::start_binary(baseline, daemon);
    let after = Cistern::start(daemon);
    let sides = [
        Side {
            sock: before.sock.clone(),
        },
        Side {
            sock: after.sock.clone(),
        },
    ];
    println!(
        "cistern against {} (baseline), daemon {}, five interleaved rounds, scale {scale}",
        baseline.display(),
        daemon.display()
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let n_ping = (5000.0 * scale).max(200.0) as usize;
    let creates = (50.0 * scale).max(10.0) as usize;
    let mut rows: Vec<[Vec<f64>; 2]> = vec![Default::default(); 4];
    for _ in 0..5 {
        for (i, side) in sides.iter().enumerate() {
            let (p50, p99, _) = ping_latency(side, n_ping).await;
            rows[0][i].push(p50.as_secs_f64() * 1e6);
            rows[1][i].push(p99.as_secs_f64() * 1e6);
            rows[2][i].push(ping_throughput(side, 16, n_ping / 8).await);
            rows[3][i].push(create_only(side, creates).await);
        }
    }
    let names = [
        ("/_ping p50 latency (keep-alive)", "us", false),
        ("/_ping p99 latency (keep-alive)", "us", false),
        ("/_ping requests/s (16 keep-alive conns)", "req/s", true),
        ("container create (conservative policy) p50", "ms", false),
    ];
    for ((what, unit, higher), [b, a]) in names.into_iter().zip(rows) {
        let (b, a) = (median(b), median(a));
        let better = if higher { "higher" } else { "lower" };
        println!(
            "{what:<44} baseline {b:>10.2} {unit:<6} this {a:>10.2} {unit:<6} ratio {:.3}x of baseline ({better} is better)",
            a / b
        );
    }
}
