//! Caching with no cached domain configured: a Debian image whose apt sources
//! and pip configuration name package repositories, run twice through
//! cistern. cistern learns the repositories from the image, routes and
//! trusts the job's container for them, and serves the second run from its
//! cache.
//!
//! The repositories are local origins shaped like the real ones (an apt
//! repository with `dists/` and `pool/`, a PEP 503 simple index with wheels
//! over HTTPS signed by a test CA). Their names are placeholders that only
//! cistern's `caching.upstream.overrides` resolve; that, the paths and the
//! proxy's ports are the whole configuration: no `domains`.

#[path = "support/origin.rs"]
mod origin;
mod support;

use std::process::Command;

use origin::{File, Origin};
use support::{
    bridge_address, daemon, debian_image, debian_image_with, run_ok, sha256_hex, Cistern,
};

const DEB: &str = "deb.zero.example.test";
const PYPI: &str = "pypi.zero.example.test";

/// The packages of the apt repository and their payload sizes.
const DEBS: [(&str, usize); 3] = [
    ("zc-alpha", 600_000),
    ("zc-beta", 900_000),
    ("zc-gamma", 300_000),
];
/// The wheels of the Python index and their payload sizes.
const WHEELS: [(&str, usize); 2] = [("zcpkg_one", 700_000), ("zcpkg_two", 400_000)];

/// A `.deb` of `name`, with `size` bytes of incompressible data under
/// `/opt/<name>/`, built by `dpkg-deb`.
fn deb(name: &str, size: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("opt").join(name)).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: cistern tests <tests@example.test>\nDescription: cistern zero-configuration test package\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("opt").join(name).join("data"),
        origin::random_bytes(size, seed),
    )
    .unwrap();
    let out = dir.path().join("out.deb");
    run_ok(
        Command::new("dpkg-deb")
            .args(["--build", "-Zgzip", "--root-owner-group"])
            .arg(&root)
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

/// Puts an apt repository (suite `zero`, component `main`) on `origin`
/// under `/debian/`.
fn apt_repository(origin: &Origin) -> u64 {
    let mut packages = String::new();
    let mut total = 0;
    for (i, (name, size)) in DEBS.iter().enumerate() {
        let bytes = deb(name, *size, i as u64 + 1);
        let path = format!("pool/main/z/{name}/{name}_1.0_all.deb");
        packages.push_str(&format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: cistern tests <tests@example.test>\nFilename: {path}\nSize: {}\nSHA256: {}\nDescription: cistern zero-configuration test package\n\n",
            bytes.len(),
            sha256_hex(&bytes)
        ));
        total += bytes.len() as u64;
        origin.put(&format!("/debian/{path}"), File::new(bytes));
    }
    let release = format!(
        "Origin: cistern-test\nLabel: cistern-test\nSuite: zero\nCodename: zero\nDate: Mon, 01 Jan 2024 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n",
        sha256_hex(packages.as_bytes()),
        packages.len()
    );
    origin.put(
        "/debian/dists/zero/main/binary-amd64/Packages",
        File::new(packages),
    );
    origin.put("/debian/dists/zero/Release", File::new(release));
    total
}

/// A wheel of `name` with `size` bytes of data, made with Python's own
/// zipfile (the RECORD hashes are right, as pip checks them).
fn wheel(name: &str, size: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, origin::random_bytes(size, seed)).unwrap();
    let out = dir.path().join("out.whl");
    let script = r#"
import base64, hashlib, sys, zipfile
name, data, out = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
info = f"{name}-1.0.dist-info"
files = {
    f"{name}/__init__.py": b"VERSION = '1.0'\n",
    f"{name}/data.bin": data,
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
    f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cistern-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for path, body in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    record += f"{path},sha256={digest},{len(body)}\n"
record += f"{info}/RECORD,,\n"
with zipfile.ZipFile(out, "w") as z:
    for path, body in files.items():
        z.writestr(path, body)
    z.writestr(f"{info}/RECORD", record)
"#;
    run_ok(
        Command::new("python3")
            .args(["-c", script, name])
            .arg(&data)
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

/// Puts a simple index with `WHEELS` on `origin`.
fn python_index(origin: &Origin) -> u64 {
    let mut total = 0;
    for (i, (name, size)) in WHEELS.iter().enumerate() {
        let bytes = wheel(name, *size, 100 + i as u64);
        let file = format!("{name}-1.0-py3-none-any.whl");
        let page = format!(
            "<!DOCTYPE html>\n<html><body>\n<a href=\"https://{PYPI}/packages/ab/cd/{file}#sha256={}\">{file}</a>\n</body></html>\n",
            sha256_hex(&bytes)
        );
        total += bytes.len() as u64;
        origin.put(&format!("/packages/ab/cd/{file}"), File::new(bytes));
        let mut page = File::new(page);
        page.content_type = "text/html";
        origin.put(&format!("/simple/{}/", name.replace('_', "-")), page);
    }
    total
}

#[test]
fn apt_and_pip_in_a_debian_container_get_their_second_run_from_the_cache_with_no_domain_configured()
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let test_ca = origin::TestCa::new(&[PYPI]);
    let apt_origin = runtime.block_on(Origin::start(None));
    let pip_origin = runtime.block_on(Origin::start(Some(test_ca.server.clone())));
    let deb_bytes = apt_repository(&apt_origin);
    let wheel_bytes = python_index(&pip_origin);

    // The job images: Debian with its apt sources, and Debian's pip with its
    // configuration, naming the repositories. Nothing else names them.
    let apt_image = "cistern-test/zero-config-apt";
    let pip_image = "cistern-test/zero-config-pip";
    let base = debian_image(&[]);
    let pip_base = debian_image_with(&["python3-pip"], &[]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base}\nRUN rm -f /etc/apt/sources.list.d/*\nCOPY sources.list /etc/apt/sources.list\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("sources.list"),
        format!("deb [trusted=yes] http://{DEB}/debian zero main\n"),
    )
    .unwrap();
    support::build_tagged(apt_image, ctx.path());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {pip_base}\nCOPY pip.conf /etc/pip.conf\n"),
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("pip.conf"),
        format!("[global]\nindex-url = https://{PYPI}/simple/\n"),
    )
    .unwrap();
    support::build_tagged(pip_image, ctx.path());

    let dir = tempfile::tempdir().unwrap();
    let origin_ca = dir.path().join("origin-ca.pem");
    std::fs::write(&origin_ca, &test_ca.ca_pem).unwrap();
    let socket = dir.path().join("docker.sock");
    let gateway = bridge_address();
    // No `domains`, and discovery as the default has it. The proxy listens
    // where the learned names are routed: the bridge address, ports 80 and
    // 443, as the default does.
    let config = format!(
        "admin: {{tcp: \"127.0.0.1:{admin}\"}}\nupstream:\n  unix: {daemon}\nlisteners:\n  - name: test\n    unix:\n      path: {sock}\n      mode: \"0600\"\n\
         caching:\n  state_dir: {state}\n  cache_dir: {cache}\n  proxy: {{http: \"{gateway}:80\", https: \"{gateway}:443\"}}\n  \
         upstream:\n    extra_roots: [{root}]\n    overrides: {{{DEB}: \"{apt}\", {PYPI}: \"{pip}\"}}\n",
        admin = support::free_port(),
        daemon = daemon().display(),
        sock = socket.display(),
        state = dir.path().join("state").display(),
        cache = dir.path().join("cache").display(),
        root = origin_ca.display(),
        apt = apt_origin.addr,
        pip = pip_origin.addr,
    );
    let run_dir = tempfile::tempdir().unwrap();
    let cistern = Cistern::start_with_config(run_dir, socket, &config);

    let apt =
        "apt-get update -qq && apt-get install -y -qq zc-alpha zc-beta zc-gamma >/dev/null && \
               stat -c %s /opt/zc-alpha/data /opt/zc-beta/data /opt/zc-gamma/data";
    let pip =
        "python3 -m pip install --no-cache-dir --disable-pip-version-check -q --target /tmp/site \
               zcpkg-one zcpkg-two && ls /tmp/site";

    // First run: everything comes from the origins, through cistern.
    let out = cistern.job(apt_image, apt);
    assert!(out.contains("600000") && out.contains("900000"), "{out}");
    let out = cistern.job(pip_image, pip);
    assert!(
        out.contains("zcpkg_one") && out.contains("zcpkg_two"),
        "{out}"
    );
    let apt_first = apt_origin.bytes_sent();
    let pip_first = pip_origin.bytes_sent();
    assert!(apt_first >= deb_bytes, "{apt_first} < {deb_bytes}");
    assert!(pip_first >= wheel_bytes, "{pip_first} < {wheel_bytes}");

    // Second run, in new containers: at least 95% of the bytes from the cache.
    cistern.job(apt_image, apt);
    cistern.job(pip_image, pip);
    let apt_second = apt_origin.bytes_sent() - apt_first;
    let pip_second = pip_origin.bytes_sent() - pip_first;
    println!(
        "first run from the origins: apt {apt_first} B, pip {pip_first} B; second run from the origins: apt {apt_second} B, pip {pip_second} B"
    );
    assert!(
        (apt_second + pip_second) * 20 <= apt_first + pip_first,
        "second run took {apt_second} + {pip_second} bytes from the origins (first: {apt_first} + {pip_first})"
    );
    // The index files were revalidated, not downloaded again.
    let packages = apt_origin.counts("/debian/dists/zero/main/binary-amd64/Packages");
    assert!(packages.not_modified >= 1, "{packages:?}");

    // Where the names came from.
    let deb = cistern.cache_domains_line(DEB, &[]);
    assert!(deb.contains("apt (image "), "{deb}");
    // With the running cistern's figures: the second run's hits count.
    assert!(
        deb.contains(" requests, hit ratio ") && deb.ends_with('%'),
        "{deb}"
    );
    let pypi = cistern.cache_domains_line(PYPI, &[]);
    assert!(pypi.contains("/etc/pip.conf"), "{pypi}");
}
