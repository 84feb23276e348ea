//! Each ecosystem's real client, as Debian ships it, run twice through
//! cistern in fresh containers against a local origin shaped like its
//! repository, with TLS verification on: the second run is served from the
//! cache (packages: no byte from the origin; indexes: revalidated).
//!
//! As in `tests/zero_config.rs`, nothing names the repository to cistern but
//! the image: its package-manager configuration (`.npmrc`, `GOPROXY`,
//! `gemrc`, cargo's `config.toml`, a yum repo file, maven's `settings.xml`)
//! names a placeholder host that only cistern's
//! `caching.upstream.overrides` resolves, served over HTTPS with a test CA
//! that cistern trusts (`caching.upstream.extra_roots`). The client trusts
//! cistern's CA through the trust store cistern injects into the container,
//! plus what the tool needs to read it (`NODE_EXTRA_CA_CERTS` for npm,
//! injected by default; Java's keystore for maven). Every request the client
//! made is checked against the built-in cache rules.
//!
//! The job images are built from a Debian image with the clients installed
//! on the host by debootstrap and apt-get in a chroot
//! (`support::debian_image_with`): no container downloads anything but from
//! the local origins. The repositories' files are made by the ecosystem's
//! own tools where that matters (RubyGems' `gem build` and
//! `generate_index`, `rpmbuild` and `createrepo_c`, in a container of that
//! image with no network), else by Python on the host (npm tarballs, Go
//! module zips, jars). The proxy listens on the bridge address, ports 80
//! and 443, where learned names are routed: the tests in this file take
//! turns.
//!
//! cargo: Debian bookworm's cargo (0.66) has the sparse protocol as an
//! unstable feature (`-Z sparse-registry`, taken by a stable cargo with
//! `RUSTC_BOOTSTRAP=1`). Its image (cargo, rustc, LLVM, gcc) and Maven's
//! (Java) are the heavy ones: a few minutes each on their first build, then
//! reused; both clients run in CI. The sparse layout is also fetched with
//! curl, in the light image, for the download host learned from the index.
//! Debian bookworm packages no apk-tools, so apk has no client test.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::ffi::OsStr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cistern_cache::rules::{Mode, Rules};
use origin::{File, Origin, TestCa};

use support::{
    bridge_address, daemon, debian_image_with, run_ok, sha256_hex, unique, Cistern, Cleanup,
};

/// The Debian packages of the clients tested here (and the tools that make
/// their repositories), in one image for all the tests: one debootstrap and
/// one apt-get, on the host, the first time (then the daemon keeps it).
/// Maven's is apart (see its test).
const CLIENTS: &[&str] = &[
    "npm",
    "golang-go",
    "ruby",
    "curl",
    "dnf",
    "rpm",
    "createrepo-c",
];

/// The proxy's ports on the bridge address are one for all the tests here.
static PROXY_PORTS: Mutex<()> = Mutex::new(());

/// Runs a Python script on the host with `args`; its standard output.
fn python(script: &str, args: &[&OsStr]) -> String {
    run_ok(Command::new("python3").args(["-c", script]).args(args))
}

/// Waits (up to three minutes) until ports 80 and 443 of `gateway` are free:
/// another test binary on this host may be using them.
fn wait_free(gateway: std::net::Ipv4Addr) {
    let deadline = Instant::now() + std::time::Duration::from_secs(180);
    while [80, 443]
        .iter()
        .any(|port| std::net::TcpListener::bind((gateway, *port)).is_err())
        && Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A request in cistern's access log.
struct Logged {
    method: String,
    path: String,
    status: u16,
    state: String,
    reason: String,
    mode: Mode,
}

/// A digest (`md5`, `sha1`) of `bytes` in hex, by Python's hashlib.
fn hex_digest(algorithm: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, bytes).unwrap();
    python(
        "import hashlib, sys; print(hashlib.new(sys.argv[1], open(sys.argv[2], 'rb').read()).hexdigest())",
        &[OsStr::new(algorithm), file.as_os_str()],
    )
    .trim()
    .to_string()
}

fn md5_hex(bytes: &[u8]) -> String {
    hex_digest("md5", bytes)
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex_digest("sha1", bytes)
}

/// A local HTTPS origin for one host, with the test CA its certificate is
/// signed by and the tokio runtime it runs on.
struct Repository {
    runtime: tokio::runtime::Runtime,
    origin: Origin,
    ca: TestCa,
    /// The host names it answers for.
    hosts: Vec<String>,
}

impl Repository {
    fn new(host: &str) -> Repository {
        Repository::for_hosts(&[host])
    }

    /// One origin answering for several host names (a registry whose
    /// downloads are on another host than its index).
    fn for_hosts(hosts: &[&str]) -> Repository {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ca = TestCa::new(hosts);
        let origin = runtime.block_on(Origin::start(Some(ca.server.clone())));
        Repository {
            runtime,
            origin,
            ca,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }
}

/// A local HTTPS origin for `host`, cistern started in front of the daemon
/// with no `domains` (the host is learned from the job's image), and the
/// tokio runtime the origin runs on.
struct Ecosystem {
    name: &'static str,
    origin: Origin,
    cistern: Cistern,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
    _ports: MutexGuard<'static, ()>,
}

impl Ecosystem {
    /// Starts cistern in front of the daemon for `repository`, once its
    /// files are in place.
    fn start(name: &'static str, repository: Repository) -> Ecosystem {
        let Repository {
            runtime,
            origin,
            ca,
            hosts,
        } = repository;
        let ports = PROXY_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let origin_ca = dir.path().join("origin-ca.pem");
        std::fs::write(&origin_ca, &ca.ca_pem).unwrap();
        let run_dir = tempfile::tempdir().unwrap();
        let socket = run_dir.path().join("docker.sock");
        let gateway = bridge_address();
        wait_free(gateway);
        let config = format!(
            "upstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix:\n      path: {sock}\n      mode: \"0600\"\n\
             caching:\n  state_dir: {state}\n  cache_dir: {cache}\n  proxy: {{http: \"{gateway}:80\", https: \"{gateway}:443\"}}\n  \
             upstream:\n    extra_roots: [{root}]\n    overrides: {{{overrides}}}\n",
            daemon = daemon().display(),
            sock = socket.display(),
            state = dir.path().join("state").display(),
            cache = dir.path().join("cache").display(),
            root = origin_ca.display(),
            overrides = hosts
                .iter()
                .map(|h| format!("{h}: \"{}\"", origin.addr))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let cistern = Cistern::start_with_config(run_dir, socket, &config);
        Ecosystem {
            name,
            origin,
            cistern,
            _dir: dir,
            _runtime: runtime,
            _ports: ports,
        }
    }

    /// Runs the job twice, checking each run's output with `check`: the
    /// first run downloads from the origin, the second takes no byte from
    /// it (files from the cache, indexes revalidated with a 304).
    fn twice(&self, image: &str, script: &str, check: impl Fn(&str)) {
        let started = Instant::now();
        check(&self.cistern.job(image, script));
        let first = self.origin.bytes_sent();
        let first_time = started.elapsed();
        let started = Instant::now();
        check(&self.cistern.job(image, script));
        let second = self.origin.bytes_sent() - first;
        println!(
            "{}: first run {first} B from the origin in {:.1?}, second run {second} B in {:.1?}",
            self.name,
            first_time,
            started.elapsed()
        );
        println!("{}", self.requests());
        assert!(first > 0, "{}", self.requests());
        assert_eq!(
            second,
            0,
            "second run bytes from the origin\n{}",
            self.requests()
        );
    }

    /// The requests cistern served, from its access log: method, path,
    /// status, cache state and reason, and the built-in rules' mode for the
    /// path.
    fn logged_requests(&self) -> Vec<Logged> {
        let rules = Rules::default();
        self.cistern
            .logs()
            .lines()
            .filter(|l| l.contains("cache request"))
            .map(|l| {
                let field = |name: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{name}=")))
                        .unwrap_or("")
                        .trim_matches('"')
                        .to_string()
                };
                let reason = l
                    .split_once("reason=")
                    .map(|(_, r)| r.split(" status=").next().unwrap_or(r))
                    .unwrap_or("")
                    .to_string();
                let path = field("path");
                Logged {
                    mode: rules.mode_for(&field("host"), &path),
                    method: field("method"),
                    status: field("status").parse().unwrap_or(0),
                    state: field("state"),
                    path,
                    reason,
                }
            })
            .collect()
    }

    fn requests(&self) -> String {
        self.logged_requests()
            .iter()
            .map(|r| {
                format!(
                    "  {} {} {} {} ({}) [{}]",
                    r.method, r.path, r.status, r.state, r.reason, r.mode
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asserts the built-in rules classify every file the client fetched:
    /// `immutable` for those `immutable` says, `revalidate` for the others
    /// (none left to the origin's headers).
    fn assert_classified(&self, immutable: impl Fn(&str) -> bool) {
        let requests = self.logged_requests();
        assert!(!requests.is_empty(), "{}", self.cistern.logs());
        for r in requests
            .iter()
            .filter(|r| r.status == 200 || r.status == 304)
        {
            let want = if immutable(&r.path) {
                Mode::Immutable
            } else {
                Mode::Revalidate
            };
            assert_eq!(r.mode, want, "{}: {}", r.path, self.requests());
        }
    }

    /// Asserts the second run took nothing from the origin for `paths` (all
    /// from the cache: one whole download each, in the first run).
    fn assert_cached(&self, paths: &[String]) {
        for path in paths {
            let counts = self.origin.counts(path);
            assert_eq!(
                counts.requests,
                1,
                "{path}: {counts:?}\n{}",
                self.requests()
            );
        }
    }

    /// Asserts the index at `path` was revalidated (answered 304) in the
    /// second run.
    fn assert_revalidated(&self, path: &str) {
        let counts = self.origin.counts(path);
        assert!(
            counts.not_modified >= 1,
            "{path}: {counts:?}\n{}",
            self.requests()
        );
    }

    /// Asserts cistern learned `host` from `from` in the job's image.
    fn assert_learned(&self, host: &str, from: &str) {
        let line = self.cistern.cache_domains_line(host, &[]);
        assert!(line.contains(from), "{line}");
    }
}

/// A job image: `FROM` the Debian image with `packages`, the files written
/// at their paths, and the extra Dockerfile lines; built and tagged `tag`.
fn job_image(tag: &str, packages: &[&str], files: &[(&str, String)], extra: &str) -> String {
    let started = Instant::now();
    let base = debian_image_with(packages, &[]);
    println!(
        "{tag}: Debian image with {packages:?} ready in {:.1?}",
        started.elapsed()
    );
    let ctx = tempfile::tempdir().unwrap();
    let mut dockerfile = format!("FROM {base}\n");
    for (i, (path, text)) in files.iter().enumerate() {
        std::fs::write(ctx.path().join(format!("f{i}")), text).unwrap();
        dockerfile.push_str(&format!("COPY f{i} {path}\n"));
    }
    dockerfile.push_str(extra);
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    support::build_tagged(tag, ctx.path());
    tag.to_string()
}

// ---------------------------------------------------------------- npm

const NPM: &str = "npm.eco.example.test";
const NPM_PACKAGES: [(&str, usize); 2] = [("zc-alpha", 500_000), ("zc-beta", 300_000)];

/// An npm tarball (`package/package.json`, `package/data.bin`) and its
/// `sha512-…` integrity, made with Python's tarfile.
fn npm_tarball(name: &str, size: usize, seed: u64) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, origin::random_bytes(size, seed)).unwrap();
    let out = dir.path().join("out.tgz");
    let script = r#"
import base64, hashlib, io, json, sys, tarfile
name, data, out = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
manifest = json.dumps({"name": name, "version": "1.0.0", "main": "index.js"}).encode()
files = {"package/package.json": manifest, "package/index.js": b"module.exports = 1;\n", "package/data.bin": data}
with tarfile.open(out, "w:gz") as t:
    for path, body in files.items():
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(body), 0o644, 1700000000
        t.addfile(info, io.BytesIO(body))
print("sha512-" + base64.b64encode(hashlib.sha512(open(out, "rb").read()).digest()).decode())
"#;
    let integrity = python(
        script,
        &[OsStr::new(name), data.as_os_str(), out.as_os_str()],
    );
    (std::fs::read(out).unwrap(), integrity.trim().to_string())
}

#[test]
fn npm_installs_from_a_learned_registry_and_its_second_run_comes_from_the_cache() {
    let image = job_image(
        "cistern-test/eco-npm",
        CLIENTS,
        &[(
            "/root/.npmrc",
            format!("registry=https://{NPM}/\naudit=false\nfund=false\nupdate-notifier=false\n"),
        )],
        "",
    );
    let repository = Repository::new(NPM);
    let mut tarballs = Vec::new();
    for (i, (name, size)) in NPM_PACKAGES.iter().enumerate() {
        let (bytes, integrity) = npm_tarball(name, *size, 200 + i as u64);
        let path = format!("/{name}/-/{name}-1.0.0.tgz");
        let packument = serde_json::json!({
            "name": name,
            "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": {
                "name": name,
                "version": "1.0.0",
                "dist": {"tarball": format!("https://{NPM}{path}"), "integrity": integrity},
            }},
        });
        let mut packument = File::new(packument.to_string());
        packument.content_type = "application/json";
        repository.origin.put(&format!("/{name}"), packument);
        repository.origin.put(&path, File::new(bytes));
        tarballs.push(path);
    }
    let eco = Ecosystem::start("npm", repository);
    let script = "mkdir /tmp/app && cd /tmp/app && npm install --no-save --loglevel=error zc-alpha zc-beta && \
                  stat -c %s node_modules/zc-alpha/data.bin node_modules/zc-beta/data.bin";
    eco.twice(&image, script, |out| {
        assert!(out.contains("500000") && out.contains("300000"), "{out}")
    });
    eco.assert_classified(|p| p.ends_with(".tgz"));
    eco.assert_cached(&tarballs);
    eco.assert_revalidated("/zc-alpha");
    eco.assert_learned(NPM, "/root/.npmrc");
}

// ---------------------------------------------------------------- go

const GO: &str = "go.eco.example.test";
const GO_MODULES: [(&str, usize); 2] = [("alpha", 400_000), ("beta", 200_000)];

/// A module zip of `module@v1.0.0` (go.mod, one Go file, a data file), made
/// with Python's zipfile.
fn go_module_zip(module: &str, package: &str, go_mod: &str, size: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("go.mod"), go_mod).unwrap();
    std::fs::write(
        dir.path().join("pkg.go"),
        format!(
            "package {package}\n\n// Name is the package's name.\nconst Name = \"{package}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("data.bin"),
        origin::random_bytes(size, seed),
    )
    .unwrap();
    let out = dir.path().join("out.zip");
    let script = r#"
import os, sys, zipfile
src, module, out = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in ("go.mod", "pkg.go", "data.bin"):
        z.write(os.path.join(src, name), module + "@v1.0.0/" + name)
"#;
    python(
        script,
        &[dir.path().as_os_str(), OsStr::new(module), out.as_os_str()],
    );
    std::fs::read(out).unwrap()
}

#[test]
fn go_gets_modules_from_a_learned_goproxy_and_its_second_run_comes_from_the_cache() {
    let image = job_image(
        "cistern-test/eco-go",
        CLIENTS,
        &[],
        &format!("ENV GOPROXY=https://{GO} GOSUMDB=off GOFLAGS=-mod=mod\n"),
    );
    let repository = Repository::new(GO);
    let mut zips = Vec::new();
    for (i, (package, size)) in GO_MODULES.iter().enumerate() {
        let module = format!("{GO}/zc/{package}");
        let go_mod = format!("module {module}\n\ngo 1.19\n");
        let zip = go_module_zip(&module, package, &go_mod, *size, 300 + i as u64);
        let base = format!("/{module}/@v");
        repository
            .origin
            .put(&format!("{base}/list"), File::new("v1.0.0\n"));
        repository.origin.put(
            &format!("{base}/v1.0.0.info"),
            File::new(r#"{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}"#),
        );
        repository
            .origin
            .put(&format!("{base}/v1.0.0.mod"), File::new(go_mod.clone()));
        repository
            .origin
            .put(&format!("{base}/v1.0.0.zip"), File::new(zip));
        zips.push(format!("{base}/v1.0.0.zip"));
        zips.push(format!("{base}/v1.0.0.mod"));
    }
    let eco = Ecosystem::start("go", repository);
    let script = format!(
        "mkdir /tmp/app && cd /tmp/app && printf 'module app\\n\\ngo 1.19\\n' > go.mod && \
         printf 'package main\\n\\nimport (\\n\\t\"fmt\"\\n\\t\"{GO}/zc/alpha\"\\n\\t\"{GO}/zc/beta\"\\n)\\n\\nfunc main() {{ fmt.Println(alpha.Name, beta.Name) }}\\n' > main.go && \
         go get {GO}/zc/alpha {GO}/zc/beta && go build -o app . && ./app && \
         stat -c %s $(go env GOMODCACHE)/{GO}/zc/alpha@v1.0.0/data.bin"
    );
    eco.twice(&image, &script, |out| {
        assert!(
            out.contains("alpha beta") && out.contains("400000"),
            "{out}"
        )
    });
    eco.assert_classified(|p| !p.ends_with("/list"));
    eco.assert_cached(&zips);
    eco.assert_revalidated(&format!("/{GO}/zc/alpha/@v/list"));
    eco.assert_learned(GO, "GOPROXY");
}

// ---------------------------------------------------------------- gem

const GEM: &str = "gems.eco.example.test";
const GEMS: [(&str, usize); 2] = [("zc-alpha", 400_000), ("zc-beta", 200_000)];

/// Runs `script` in a container of `image` on the daemon directly (no
/// network needed) and copies its `/srv` out: files made by the
/// ecosystem's own tools, for the origin to serve.
fn made_in(image: &str, script: &str) -> tempfile::TempDir {
    let name = unique("ecosystem-make");
    let _cleanup = Cleanup::container(&name);
    run_ok(support::docker_direct().args([
        "run",
        "--network",
        "none",
        "--name",
        &name,
        image,
        "sh",
        "-ec",
        script,
    ]));
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        support::docker_direct()
            .arg("cp")
            .arg(format!("{name}:/srv/."))
            .arg(dir.path()),
    );
    dir
}

/// Serves every file under `dir` at its path relative to `dir`.
fn serve_dir(origin: &Origin, dir: &std::path::Path, under: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            serve_dir(origin, &path, under);
        } else {
            let rel = path.strip_prefix(under).unwrap().to_str().unwrap();
            origin.put(&format!("/{rel}"), File::new(std::fs::read(&path).unwrap()));
        }
    }
}

#[test]
fn gem_installs_from_a_learned_source_and_its_second_run_comes_from_the_cache() {
    let image = job_image(
        "cistern-test/eco-gem",
        CLIENTS,
        &[("/etc/gemrc", format!("---\n:sources:\n- https://{GEM}/\n"))],
        "",
    );
    // The gems and the full index (specs, quick gemspecs), made by RubyGems.
    let mut make = String::from("mkdir -p /srv/gems /build\n");
    for (name, size) in GEMS {
        make.push_str(&format!(
            "mkdir -p /build/{name}/lib && cd /build/{name} && echo 'module Zc; end' > lib/{name}.rb && \
             head -c {size} /dev/urandom > data.bin && \
             printf 'Gem::Specification.new do |s|\\n  s.name = \"{name}\"\\n  s.version = \"1.0.0\"\\n  s.summary = \"cistern test gem\"\\n  s.authors = [\"cistern tests\"]\\n  s.license = \"MIT\"\\n  s.files = [\"lib/{name}.rb\", \"data.bin\"]\\nend\\n' > {name}.gemspec && \
             gem build -q {name}.gemspec && mv {name}-1.0.0.gem /srv/gems/\n"
        ));
    }
    make.push_str("gem generate_index -q --directory /srv\n");
    let made = made_in(&image, &make);
    let repository = Repository::new(GEM);
    serve_dir(&repository.origin, made.path(), made.path());
    // The compact index beside it, as the real source has: RubyGems takes it
    // when the source's root answers (its `HEAD /`).
    let mut versions = String::from("created_at: 2024-01-01T00:00:00Z\n---\n");
    for (name, _) in GEMS {
        let gem = std::fs::read(made.path().join(format!("gems/{name}-1.0.0.gem"))).unwrap();
        let info = format!("---\n1.0.0 |checksum:{}\n", sha256_hex(&gem));
        versions.push_str(&format!("{name} 1.0.0 {}\n", md5_hex(info.as_bytes())));
        repository
            .origin
            .put(&format!("/info/{name}"), File::new(info));
    }
    repository.origin.put("/versions", File::new(versions));
    let mut root = File::new("<!DOCTYPE html>\n<html><body>cistern test gems</body></html>\n");
    root.content_type = "text/html";
    repository.origin.put("/", root);
    let eco = Ecosystem::start("gem", repository);
    let script = "gem install --no-document zc-alpha zc-beta && \
                  stat -c %s $(gem contents zc-alpha | grep data.bin) $(gem contents zc-beta | grep data.bin)";
    eco.twice(&image, script, |out| {
        assert!(out.contains("400000") && out.contains("200000"), "{out}")
    });
    let gems: Vec<String> = GEMS
        .iter()
        .flat_map(|(name, _)| {
            [
                format!("/gems/{name}-1.0.0.gem"),
                format!("/quick/Marshal.4.8/{name}-1.0.0.gemspec.rz"),
            ]
        })
        .collect();
    eco.assert_classified(|p| p.ends_with(".gem") || p.ends_with(".gemspec.rz"));
    eco.assert_cached(&gems);
    eco.assert_revalidated("/info/zc-alpha");
    eco.assert_learned(GEM, "/etc/gemrc");
}

// ---------------------------------------------------------------- cargo

const CRATES: &str = "crates.eco.example.test";
const CRATE_FILES: [(&str, usize); 2] = [("zc-alpha", 300_000), ("zc-beta", 200_000)];

/// A `.crate` (a gzipped tar of `<name>-1.0.0/` with its manifest, a library
/// and a data file), made with Python's tarfile.
fn crate_file(name: &str, size: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, origin::random_bytes(size, seed)).unwrap();
    let out = dir.path().join("out.crate");
    let script = r#"
import io, sys, tarfile
name, data, out = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
manifest = f'[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2018"\n'.encode()
files = {"Cargo.toml": manifest, "src/lib.rs": b"pub const NAME: &str = \"zc\";\n", "data.bin": data}
with tarfile.open(out, "w:gz") as t:
    for path, body in files.items():
        info = tarfile.TarInfo(f"{name}-1.0.0/{path}")
        info.size, info.mode, info.mtime = len(body), 0o644, 1700000000
        t.addfile(info, io.BytesIO(body))
"#;
    python(
        script,
        &[OsStr::new(name), data.as_os_str(), out.as_os_str()],
    );
    std::fs::read(out).unwrap()
}

/// A sparse registry (`config.json`, index files, downloads) with
/// `CRATE_FILES` on a new origin; the download paths.
fn crates_repository(dl: &str) -> (Repository, Vec<String>) {
    let mut hosts = vec![CRATES, dl];
    hosts.dedup();
    let repository = Repository::for_hosts(&hosts);
    let mut config = File::new(format!(
        "{{\"dl\":\"https://{dl}/api/v1/crates\",\"api\":\"https://{CRATES}\"}}"
    ));
    config.content_type = "application/json";
    repository.origin.put("/index/config.json", config);
    let mut crates = Vec::new();
    for (i, (name, size)) in CRATE_FILES.iter().enumerate() {
        let bytes = crate_file(name, *size, 400 + i as u64);
        let entry = format!(
            "{{\"name\":\"{name}\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
            sha256_hex(&bytes)
        );
        repository.origin.put(
            &format!("/index/{}/{}/{name}", &name[..2], &name[2..4]),
            File::new(entry),
        );
        let path = format!("/api/v1/crates/{name}/1.0.0/download");
        repository.origin.put(&path, File::new(bytes));
        crates.push(path);
    }
    (repository, crates)
}

/// What both cargo tests check once the job ran twice.
fn assert_crates(eco: &Ecosystem, crates: &[String]) {
    eco.assert_classified(|p| p.ends_with("/download"));
    eco.assert_cached(crates);
    eco.assert_revalidated("/index/config.json");
    eco.assert_revalidated("/index/zc/-a/zc-alpha");
    eco.assert_learned(CRATES, "/root/.cargo/config.toml");
}

fn cargo_config() -> (&'static str, String) {
    (
        "/root/.cargo/config.toml",
        format!("[registries.zc]\nindex = \"sparse+https://{CRATES}/index/\"\n"),
    )
}

/// The sparse registry layout fetched with curl, as cargo fetches it, in the
/// image of the other clients: Debian's cargo brings rustc, LLVM and gcc
/// (about 600 MB more), past the time these tests may add to CI; the next
/// test runs Debian's cargo itself.
#[test]
fn a_sparse_cargo_registry_learned_from_cargo_config_is_served_from_the_cache_the_second_time() {
    let image = job_image(
        "cistern-test/eco-cargo-curl",
        CLIENTS,
        &[cargo_config()],
        "",
    );
    let (repository, crates) = crates_repository(CRATES);
    let eco = Ecosystem::start("cargo-curl", repository);
    let script = format!(
        "cd /tmp && curl -fsS https://{CRATES}/index/config.json >/dev/null && \
         for n in alpha beta; do \
           line=$(curl -fsS https://{CRATES}/index/zc/-$(echo $n | cut -c1)/zc-$n); \
           sum=$(echo \"$line\" | sed 's/.*\"cksum\":\"\\([0-9a-f]*\\)\".*/\\1/'); \
           curl -fsS -o zc-$n.crate https://{CRATES}/api/v1/crates/zc-$n/1.0.0/download; \
           echo \"$sum  zc-$n.crate\" | sha256sum -c; tar -xzf zc-$n.crate; stat -c %s zc-$n-1.0.0/data.bin; \
         done"
    );
    eco.twice(&image, &script, |out| {
        assert!(out.contains("300000") && out.contains("200000"), "{out}")
    });
    assert_crates(&eco, &crates);
}

const CRATES_DL: &str = "static.eco-dl.example.test";

/// A registry whose `config.json` sends downloads to another host (as the
/// default registry does): that host is in no configuration file of the
/// image, and is learned from the index configuration the first job reads.
#[test]
fn a_sparse_registrys_download_host_is_learned_from_its_index_config() {
    let image = job_image(
        "cistern-test/eco-cargo-curl",
        CLIENTS,
        &[cargo_config()],
        "",
    );
    let (repository, crates) = crates_repository(CRATES_DL);
    let eco = Ecosystem::start("cargo-dl", repository);
    let out = eco.cistern.job(
        &image,
        &format!(
            "curl -fsS https://{CRATES}/index/config.json; echo; \
             getent hosts {CRATES_DL} || echo '{CRATES_DL} not routed'"
        ),
    );
    assert!(out.contains(&format!("{CRATES_DL} not routed")), "{out}");
    let from = format!("https://{CRATES}/index/config.json");
    let mut line = String::new();
    for _ in 0..50 {
        let listing = eco.cistern.cache_domains(&[]);
        if let Some(l) = listing.lines().find(|l| l.starts_with(CRATES_DL)) {
            line = l.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        line.contains(&from),
        "{CRATES_DL} not learned: {line:?}\n{}",
        eco.cistern.logs()
    );
    let script = format!(
        "cd /tmp && for n in alpha beta; do \
           curl -fsS -o zc-$n.crate https://{CRATES_DL}/api/v1/crates/zc-$n/1.0.0/download; \
           tar -xzf zc-$n.crate; stat -c %s zc-$n-1.0.0/data.bin; \
         done"
    );
    eco.twice(&image, &script, |out| {
        assert!(out.contains("300000") && out.contains("200000"), "{out}")
    });
    eco.assert_cached(&crates);
}

/// Debian bookworm's cargo (0.66) has the sparse protocol as an unstable
/// feature: `-Z sparse-registry`, which a stable cargo takes with
/// `RUSTC_BOOTSTRAP=1`.
#[test]
fn cargo_fetches_from_a_learned_sparse_registry_and_its_second_run_comes_from_the_cache() {
    let image = job_image("cistern-test/eco-cargo", &["cargo"], &[cargo_config()], "");
    let (repository, crates) = crates_repository(CRATES);
    let eco = Ecosystem::start("cargo", repository);
    let script = "mkdir -p /tmp/app/src && cd /tmp/app && echo 'fn main() {}' > src/main.rs && \
                  printf '[package]\\nname = \"app\"\\nversion = \"0.1.0\"\\nedition = \"2018\"\\n\\n[dependencies]\\n\
                  zc-alpha = { version = \"1\", registry = \"zc\" }\\nzc-beta = { version = \"1\", registry = \"zc\" }\\n' > Cargo.toml && \
                  RUSTC_BOOTSTRAP=1 cargo -Z sparse-registry fetch -q && \
                  stat -c %s /root/.cargo/registry/src/*/zc-alpha-1.0.0/data.bin /root/.cargo/registry/src/*/zc-beta-1.0.0/data.bin";
    eco.twice(&image, script, |out| {
        assert!(out.contains("300000") && out.contains("200000"), "{out}")
    });
    assert_crates(&eco, &crates);
}

// ---------------------------------------------------------------- maven

const MAVEN: &str = "maven.eco.example.test";

/// A jar (a zip with a manifest and `data.bin`), made with Python's zipfile.
fn jar(size: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, origin::random_bytes(size, seed)).unwrap();
    let out = dir.path().join("out.jar");
    let script = r#"
import sys, zipfile
data, out = open(sys.argv[1], "rb").read(), sys.argv[2]
with zipfile.ZipFile(out, "w") as z:
    z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
    z.writestr("data.bin", data)
"#;
    python(script, &[data.as_os_str(), out.as_os_str()]);
    std::fs::read(out).unwrap()
}

/// Maven core resolves a project's parent POM (here by a version range,
/// through `maven-metadata.xml`) and its build extensions itself: no plugin
/// is needed, so nothing but these comes from the repository, and
/// `mvn validate` on such a project downloads them.
#[test]
fn maven_resolves_from_a_learned_mirror_and_its_second_run_comes_from_the_cache() {
    let pom = "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
               <parent><groupId>test.zc</groupId><artifactId>zc-parent</artifactId><version>[1.0.0,2)</version></parent>\n  \
               <groupId>test.app</groupId><artifactId>app</artifactId><version>1.0</version>\n  \
               <build><extensions><extension><groupId>test.zc</groupId><artifactId>zc-ext</artifactId><version>1.0.0</version></extension></extensions></build>\n\
               </project>\n";
    let image = job_image(
        "cistern-test/eco-maven",
        &["maven"],
        &[
            (
                "/root/.m2/settings.xml",
                format!(
                    "<settings>\n  <mirrors>\n    <mirror>\n      <id>zc</id>\n      <mirrorOf>*</mirrorOf>\n      \
                     <url>https://{MAVEN}/maven2</url>\n    </mirror>\n  </mirrors>\n</settings>\n"
                ),
            ),
            ("/app/pom.xml", pom.to_string()),
        ],
        "",
    );
    let repository = Repository::new(MAVEN);
    let base = "/maven2/test/zc";
    let parent = "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
                  <groupId>test.zc</groupId><artifactId>zc-parent</artifactId><version>1.0.0</version><packaging>pom</packaging>\n</project>\n";
    let ext_pom = "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
                   <groupId>test.zc</groupId><artifactId>zc-ext</artifactId><version>1.0.0</version>\n</project>\n";
    let ext_jar = jar(400_000, 500);
    let mut artifacts = Vec::new();
    for (path, bytes) in [
        (
            format!("{base}/zc-parent/1.0.0/zc-parent-1.0.0.pom"),
            parent.as_bytes().to_vec(),
        ),
        (
            format!("{base}/zc-ext/1.0.0/zc-ext-1.0.0.pom"),
            ext_pom.as_bytes().to_vec(),
        ),
        (format!("{base}/zc-ext/1.0.0/zc-ext-1.0.0.jar"), ext_jar),
        // What Maven adds to every extension that does not bring its own.
        (
            "/maven2/org/codehaus/plexus/plexus-utils/1.1/plexus-utils-1.1.jar".to_string(),
            jar(1000, 501),
        ),
    ] {
        repository
            .origin
            .put(&format!("{path}.sha1"), File::new(sha1_hex(&bytes)));
        repository.origin.put(&path, File::new(bytes));
        artifacts.push(path);
    }
    repository.origin.put(
        "/maven2/org/codehaus/plexus/plexus-utils/1.1/plexus-utils-1.1.pom",
        File::new(
            "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
             <groupId>org.codehaus.plexus</groupId><artifactId>plexus-utils</artifactId><version>1.1</version>\n</project>\n",
        ),
    );
    // The parent's version is a range: its versions are listed in
    // `maven-metadata.xml`, which revalidates.
    let metadata = "<metadata>\n  <groupId>test.zc</groupId>\n  <artifactId>zc-parent</artifactId>\n  <versioning>\n    \
                    <latest>1.0.0</latest>\n    <release>1.0.0</release>\n    <versions><version>1.0.0</version></versions>\n    \
                    <lastUpdated>20240101000000</lastUpdated>\n  </versioning>\n</metadata>\n";
    let metadata_path = format!("{base}/zc-parent/maven-metadata.xml");
    repository.origin.put(
        &format!("{metadata_path}.sha1"),
        File::new(sha1_hex(metadata.as_bytes())),
    );
    repository.origin.put(&metadata_path, File::new(metadata));
    let eco = Ecosystem::start("maven", repository);
    // Java reads its own keystore, not the PEM bundles: cistern's CAs are
    // imported from the file cistern injects, one by one (keytool takes the
    // first certificate of a file), as the README says.
    let script = "awk '/BEGIN CERT/ {n++} n {print > (\"/tmp/cistern-ca-\" n \".pem\")}' /etc/cistern/ca.pem && \
                  for f in /tmp/cistern-ca-*.pem; do keytool -importcert -noprompt -cacerts -storepass changeit \
                  -alias \"$(basename $f .pem)\" -file $f >/dev/null; done && \
                  cd /app && mvn -B -q validate && \
                  stat -c %s /root/.m2/repository/test/zc/zc-ext/1.0.0/zc-ext-1.0.0.jar";
    eco.twice(&image, script, |out| {
        // The jar: 400000 bytes of data, stored.
        let sizes = out.split(|c: char| !c.is_ascii_digit());
        assert!(
            sizes
                .filter_map(|n| n.parse::<u64>().ok())
                .any(|n| n > 400_000),
            "{out}"
        )
    });
    eco.assert_classified(|p| !p.contains("maven-metadata.xml"));
    eco.assert_cached(&artifacts);
    eco.assert_revalidated(&metadata_path);
    eco.assert_learned(MAVEN, "/root/.m2/settings.xml");
}

// ---------------------------------------------------------------- dnf

const RPM: &str = "rpm.eco.example.test";
const RPMS: [(&str, usize); 2] = [("zc-alpha", 400_000), ("zc-beta", 200_000)];

#[test]
fn dnf_installs_from_a_learned_repository_and_its_second_run_comes_from_the_cache() {
    // rpmbuild and createrepo_c (in the image) make the repository.
    let image = job_image(
        "cistern-test/eco-dnf",
        CLIENTS,
        &[(
            "/etc/yum.repos.d/zc.repo",
            format!("[zc]\nname=zc\nbaseurl=https://{RPM}/repo/\nenabled=1\ngpgcheck=0\n"),
        )],
        "",
    );
    let mut make = String::from("mkdir -p /srv/repo /build\n");
    for (name, size) in RPMS {
        make.push_str(&format!(
            "printf 'Name: {name}\\nVersion: 1.0\\nRelease: 1\\nSummary: cistern test package\\nLicense: MIT\\nBuildArch: noarch\\nAutoReqProv: no\\n\
             %%description\\ncistern test package\\n%%install\\nmkdir -p %%{{buildroot}}/opt/{name}\\nhead -c {size} /dev/urandom > %%{{buildroot}}/opt/{name}/data\\n\
             %%files\\n/opt/{name}/data\\n' > /build/{name}.spec && \
             rpmbuild -bb --quiet --define '_topdir /build/rpm' /build/{name}.spec && \
             mv /build/rpm/RPMS/noarch/{name}-1.0-1.noarch.rpm /srv/repo/\n"
        ));
    }
    make.push_str("createrepo_c -q /srv/repo\n");
    let made = made_in(&image, &make);
    let repository = Repository::new(RPM);
    serve_dir(&repository.origin, made.path(), made.path());
    let eco = Ecosystem::start("dnf", repository);
    let script =
        "dnf -y -q --installroot=/tmp/root --releasever=1 --setopt=reposdir=/etc/yum.repos.d \
                  install zc-alpha zc-beta && \
                  stat -c %s /tmp/root/opt/zc-alpha/data /tmp/root/opt/zc-beta/data";
    eco.twice(&image, script, |out| {
        assert!(out.contains("400000") && out.contains("200000"), "{out}")
    });
    eco.assert_classified(|p| !p.ends_with("/repomd.xml"));
    let rpms: Vec<String> = RPMS
        .iter()
        .map(|(name, _)| format!("/repo/{name}-1.0-1.noarch.rpm"))
        .collect();
    eco.assert_cached(&rpms);
    eco.assert_revalidated("/repo/repodata/repomd.xml");
    eco.assert_learned(RPM, "/etc/yum.repos.d/zc.repo");
}
