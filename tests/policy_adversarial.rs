//! The same attacks in every encoding a client can send: raw HTTP to cistern's
//! socket, each asserting the refusal (status and message) and that the daemon
//! created nothing. Also: cistern and the daemon agree on what a path means.
//!
//! Go's `encoding/json` (dockerd) matches keys case-insensitively with Unicode
//! folding (`K` U+212A is `k`, `ſ` U+017F is `s`), keeps the last of duplicate
//! keys, and 20.10 reads HostConfig fields at the top level of a create body;
//! gorilla/mux percent-decodes paths and redirects unclean ones.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{busybox, daemon, docker_direct, run, run_ok, unique, Cistern, Cleanup};

/// Sends raw bytes and reads the whole answer. cistern may answer (413, a
/// refusal) before the request is fully written, so a failed write is not an
/// error: the answer is read anyway.
fn send(sock: &Path, request: &[u8]) -> (u16, String) {
    let mut stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A JSON POST with `Content-Length` and `Connection: close`.
fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The `message` of the first JSON error body in an answer.
fn message(text: &str) -> String {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<Value>(body.trim())
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no JSON error in {text:?}"))
}

fn exists(kind: &str, name: &str) -> bool {
    run(docker_direct().args([kind, "inspect", name]))
        .status
        .success()
}

fn assert_no_container(name: &str, what: &str) {
    assert!(
        !exists("container", name),
        "{what}: container {name} exists on the daemon"
    );
}

/// Sends one create request for a unique container name; asserts the status, that
/// the message starts with `message` and that nothing was created.
fn assert_create_refused(
    cistern: &Cistern,
    path: &str,
    body: &[u8],
    status: u16,
    message_start: &str,
) {
    let name = unique("adv");
    let _cleanup = Cleanup::container(&name);
    let sep = if path.contains('?') { '&' } else { '?' };
    let (got, text) = send(
        &cistern.socket,
        &post(&format!("{path}{sep}name={name}"), body),
    );
    let what = format!("{path} {}", String::from_utf8_lossy(body));
    assert_eq!(got, status, "{what}\n{text}");
    let m = message(&text);
    assert!(
        m.starts_with(message_start),
        "{what}\nwant: {message_start}\ngot:  {m}"
    );
    assert_no_container(&name, &what);
}

fn image() -> &'static str {
    busybox()
}

const PRIVILEGED: &str =
    "cistern: privileged containers are not allowed (policy conservative, HostConfig.Privileged)";

#[test]
fn key_spellings_duplicates_and_top_level_fields_are_refused() {
    let cistern = Cistern::start("");
    let img = image();
    let kelvin = '\u{212A}';
    let long_s = '\u{017F}';
    for (body, status, want) in [
        (format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":true}}}}"#), 403, PRIVILEGED.to_string()),
        (format!(r#"{{"Image":"{img}","hostconfig":{{"privileged":true}}}}"#), 403, PRIVILEGED.into()),
        (format!(r#"{{"Image":"{img}","HOSTCONFIG":{{"PRIVILEGED":true}}}}"#), 403, PRIVILEGED.into()),
        (format!(r#"{{"image":"{img}","hOsTcOnFiG":{{"pRiViLeGeD":true}}}}"#), 403, PRIVILEGED.into()),
        // Escaped key characters are the same key to Go.
        (format!(r#"{{"Image":"{img}","HostConfig":{{"\u0050rivileged":true}}}}"#), 403, PRIVILEGED.into()),
        // U+212A KELVIN SIGN folds to `k` in Go's key matching.
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Networ{kelvin}Mode":"host"}}}}"#),
            403,
            "cistern: the host network namespace is not allowed (policy conservative, HostConfig.NetworkMode)".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"CapAdd":["SYS_ADMIN"],"{kelvin}ernelMemory":0}}}}"#),
            403,
            "cistern: capability CAP_SYS_ADMIN is not allowed (policy conservative, HostConfig.CapAdd)".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Mas{kelvin}edPaths":[]}}}}"#),
            403,
            "cistern: setting MaskedPaths is not allowed (the daemon's defaults apply) (policy conservative, HostConfig.MaskedPaths)".into(),
        ),
        // U+017F LATIN SMALL LETTER LONG S folds to `s`.
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"{long_s}ecurityOpt":["seccomp=unconfined"]}}}}"#),
            403,
            "cistern: security option \"seccomp=unconfined\" is not allowed (policy conservative, HostConfig.SecurityOpt[0])".into(),
        ),
        // Capability values: Go's ToUpper maps `ſ` to `S`; cistern refuses non-ASCII.
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"CapAdd":["{long_s}Y{long_s}_ADMIN"]}}}}"#),
            403,
            "cistern: capability".into(),
        ),
        // Duplicates: Go keeps the last; cistern refuses the ambiguity.
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":false,"privileged":true}}}}"#),
            400,
            "cistern: duplicate key HostConfig.Privileged (keys match case-insensitively)".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":false}},"hostconfig":{{"Privileged":true}}}}"#),
            400,
            "cistern: duplicate key HostConfig".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"CapAdd":[],"CapAdd":["ALL"]}}}}"#),
            400,
            "cistern: duplicate key HostConfig.CapAdd".into(),
        ),
        // 20.10 reads HostConfig fields at the top level of the create body.
        (
            format!(r#"{{"Image":"{img}","Privileged":true}}"#),
            400,
            "cistern: unknown field Privileged in container create".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","Binds":["/:/host"]}}"#),
            400,
            "cistern: unknown field Binds in container create".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{}},"CapAdd":["ALL"]}}"#),
            400,
            "cistern: unknown field CapAdd in container create".into(),
        ),
        // Wrong JSON types the daemon might coerce differently.
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":"true"}}}}"#),
            400,
            "cistern: HostConfig.Privileged must be".into(),
        ),
        (
            format!(r#"{{"Image":"{img}","HostConfig":{{"Privileged":1}}}}"#),
            400,
            "cistern: HostConfig.Privileged must be".into(),
        ),
    ] {
        assert_create_refused(&cistern, "/v1.41/containers/create", body.as_bytes(), status, &want);
    }
}

#[test]
fn a_listener_that_drops_unknown_fields_never_forwards_them() {
    // With `unknown_fields: drop` a top-level `Privileged` is dropped, never
    // forwarded: the container may be created, but not privileged.
    let cistern = Cistern::start("    policy: {unknown_fields: drop}\n");
    let name = unique("adv-drop");
    let _cleanup = Cleanup::container(&name);
    let body = format!(
        r#"{{"Image":"{}","Cmd":["true"],"Privileged":true,"NetworkMode":"host","PidMode":"host"}}"#,
        image()
    );
    let (status, text) = send(
        &cistern.socket,
        &post(
            &format!("/v1.41/containers/create?name={name}"),
            body.as_bytes(),
        ),
    );
    assert_eq!(status, 201, "{text}");
    assert_eq!(
        run_ok(docker_direct().args([
            "inspect",
            "--format",
            "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}}",
            &name
        ]))
        .trim(),
        "false default"
    );
    // Known fields are still judged.
    let kelvin = '\u{212A}';
    assert_create_refused(
        &cistern,
        "/v1.41/containers/create",
        format!(
            r#"{{"Image":"{}","HostConfig":{{"Networ{kelvin}Mode":"host"}}}}"#,
            image()
        )
        .as_bytes(),
        403,
        "cistern: the host network namespace is not allowed",
    );
}

/// What is tried, the headers after `Content-Type`, the bytes after the head, and
/// which statuses are acceptable.
type FramingCase = (&'static str, String, Vec<u8>, fn(u16) -> bool);

#[test]
fn framing_variants_cannot_smuggle_a_body() {
    let cistern = Cistern::start("");
    let body = format!(
        r#"{{"Image":"{}","Cmd":["true"],"HostConfig":{{"Privileged":true}}}}"#,
        image()
    );
    let b = body.as_bytes();
    let chunked = |b: &[u8]| {
        let mut out = Vec::new();
        for part in b.chunks(7) {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let refused: fn(u16) -> bool = |s| s == 403;
    // The daemon never sees a create with that body: anything but a success.
    let not_created: fn(u16) -> bool = |s| !(200..300).contains(&s);
    let cases: [FramingCase; 6] = [
        (
            "content-length",
            format!("Content-Length: {}\r\nConnection: close\r\n", b.len()),
            b.to_vec(),
            refused,
        ),
        (
            "chunked",
            "Transfer-Encoding: chunked\r\nConnection: close\r\n".into(),
            chunked(b),
            refused,
        ),
        // RFC 9112: Transfer-Encoding wins over Content-Length (or the request is
        // refused); either way cistern judges what it read and forwards that with
        // fresh framing.
        (
            "chunked and content-length",
            "Transfer-Encoding: chunked\r\nContent-Length: 10\r\nConnection: close\r\n".into(),
            chunked(b),
            |s| s == 400 || s == 403,
        ),
        // The bytes after `Content-Length: 0` are the next request (malformed).
        (
            "content-length 0 then a body",
            "Content-Length: 0\r\n".into(),
            b.to_vec(),
            not_created,
        ),
        // A request without Content-Length or Transfer-Encoding has no body.
        (
            "no length, connection close",
            "Connection: close\r\n".into(),
            b.to_vec(),
            not_created,
        ),
        (
            "two content-lengths",
            format!(
                "Content-Length: 2\r\nContent-Length: {}\r\nConnection: close\r\n",
                b.len()
            ),
            b.to_vec(),
            |s| s == 400,
        ),
    ];
    for (what, headers, body, ok) in cases {
        let name = unique("adv-framing");
        let _cleanup = Cleanup::container(&name);
        let mut req = format!("POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n{headers}\r\n").into_bytes();
        req.extend_from_slice(&body);
        let (status, text) = send(&cistern.socket, &req);
        assert!(ok(status), "{what}: {text}");
        assert!(!text.contains(" 201 Created"), "{what}: {text}");
        assert_no_container(&name, what);
    }
}

#[test]
fn path_variants_of_create_are_refused_or_not_routed() {
    let cistern = Cistern::start("");
    let body = format!(
        r#"{{"Image":"{}","HostConfig":{{"Privileged":true}}}}"#,
        image()
    );
    for (path, status, want) in [
        ("/v1.41/containers/create", 403, PRIVILEGED),
        ("/containers/create", 403, PRIVILEGED),
        ("/v1.24/containers/create", 403, PRIVILEGED),
        ("/%63ontainers/create", 403, PRIVILEGED),
        ("/v1.41/%63ontainers/%63reate", 403, PRIVILEGED),
        ("/%76%31%2e%34%31/containers/create", 403, PRIVILEGED),
        (
            "//containers/create",
            400,
            "cistern: path is not in canonical form",
        ),
        (
            "/v1.41//containers/create",
            400,
            "cistern: path is not in canonical form",
        ),
        (
            "/v1.41/./containers/create",
            400,
            "cistern: path is not in canonical form",
        ),
        (
            "/v1.41/x/../containers/create",
            400,
            "cistern: path is not in canonical form",
        ),
        (
            "/v1.41/%2e/containers/create",
            400,
            "cistern: path is not in canonical form",
        ),
        // mux matches the decoded path: this is a create.
        ("/v1.41%2fcontainers/create", 403, PRIVILEGED),
        ("/V1.41/containers/create", 404, "cistern: page not found"),
        ("/v1.41/containers/create/", 404, "cistern: page not found"),
        ("/v1.41/Containers/create", 404, "cistern: page not found"),
        (
            "/v1.23/containers/create",
            400,
            "cistern: unsupported API version \"1.23\"",
        ),
        (
            "/v1.41.0/containers/create",
            400,
            "cistern: unsupported API version \"1.41.0\"",
        ),
        (
            "/v01.41/containers/create",
            400,
            "cistern: unsupported API version \"01.41\"",
        ),
        (
            "/v1.41/containers/create%00",
            400,
            "cistern: path contains control characters",
        ),
        (
            "/v1.41/containers/create%zz",
            400,
            "cistern: invalid URL escape",
        ),
    ] {
        assert_create_refused(&cistern, path, body.as_bytes(), status, want);
    }
}

/// For a harmless endpoint, cistern and the daemon never disagree on where a path
/// goes: either cistern forwards and both answer alike, or cistern refuses it (and
/// then the daemon does not serve it either, or would only redirect it).
#[test]
fn cistern_and_the_daemon_agree_on_every_path_variant() {
    let cistern = Cistern::start("");
    let body_of = |text: &str| text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    for path in [
        "/version",
        "/v1.41/version",
        "/%76ersion",
        "/%76%65%72%73%69%6f%6e",
        "/v1.41/%76ersion",
        "/%2576ersion",
        "/%2fversion",
        "//version",
        "/./version",
        "/v1.41//version",
        "/v1.41/./version",
        "/v1.41/../version",
        "/x/../version",
        "/version/",
        "/version/.",
        "/VERSION",
        "/V1.41/version",
        "/v1.41.0/version",
        "/v1.23/version",
        "/v1.99/version",
        "/version?x=1",
        "/version;x=1",
        "/version%3Fx=1",
        "/version#x",
        "/version%23x",
    ] {
        let (c_status, c_text) = send(&cistern.socket, &get(path));
        // A fragment never reaches the daemon through cistern: hyper drops it from
        // the target, and cistern forwards the target it classified. Compare with
        // what the daemon then receives.
        let forwarded = path.split('#').next().unwrap_or(path);
        let (d_status, d_text) = send(&daemon(), &get(forwarded));
        let refused_by_cistern = c_text.contains("\"message\":\"cistern: ");
        if refused_by_cistern {
            assert!(
                matches!(c_status, 400 | 404),
                "{path}: cistern refused with {c_status}: {c_text}"
            );
            assert!(
                d_status != 200 || c_status == 400,
                "{path}: cistern says not found, the daemon serves it:\n{d_text}"
            );
            if c_status == 404 {
                assert_eq!(d_status, 404, "{path}: {d_text}");
            }
        } else {
            assert_eq!(
                c_status, d_status,
                "{path}:\ncistern: {c_text}\ndaemon: {d_text}"
            );
            assert_eq!(body_of(&c_text), body_of(&d_text), "{path}");
        }
    }
}

#[test]
fn old_api_versions_cannot_pass_a_host_config_to_start() {
    let cistern = Cistern::start("");
    let name = unique("adv-start");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["create", "--name", &name, image(), "sleep", "30"]),
    );
    let hc = br#"{"Privileged":true,"Binds":["/:/host"],"PidMode":"host"}"#;
    for (path, body, want) in [
        (
            format!("/v1.23/containers/{name}/start"),
            &hc[..],
            "cistern: unsupported API version \"1.23\"",
        ),
        (
            format!("/v1.12/containers/{name}/start"),
            &hc[..],
            "cistern: unsupported API version \"1.12\"",
        ),
        (
            format!("/v1.41/containers/{name}/start"),
            &hc[..],
            "cistern: unknown field Privileged in empty body",
        ),
        (
            format!("/containers/{name}/start"),
            &br#"{"HostConfig":{"Privileged":true}}"#[..],
            "cistern: unknown field HostConfig in empty body",
        ),
    ] {
        let (status, text) = send(&cistern.socket, &post(&path, body));
        assert_eq!(status, 400, "{path}: {text}");
        assert!(message(&text).starts_with(want), "{path}: {text}");
    }
    assert_eq!(
        run_ok(docker_direct().args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.HostConfig.Privileged}} {{.HostConfig.PidMode}}",
            &name
        ]))
        .trim(),
        "created false"
    );
}

#[test]
fn form_encoded_bodies_cannot_override_the_checked_query() {
    let cistern = Cistern::start("");
    let tag = format!("cistern-test/{}:latest", unique("adv-form"));
    let _cleanup = Cleanup::image(&tag);
    for ct in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
    ] {
        let body = "networkmode=host";
        let req = format!(
            "POST /v1.41/build?t={tag} HTTP/1.1\r\nHost: d\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = send(&cistern.socket, req.as_bytes());
        assert_eq!(status, 400, "{ct}: {text}");
        assert!(
            message(&text).starts_with("cistern: Content-Type "),
            "{ct}: {text}"
        );
    }
    assert!(!exists("image", &tag));
}

#[test]
fn host_paths_through_mounts_binds_and_volume_options_are_refused() {
    let cistern = Cistern::start("");
    let img = image();
    let vol = unique("adv-vol");
    let mut cleanup = Cleanup::default();
    cleanup.volumes.push(vol.clone());
    for (hc, rule_text) in [
        (r#"{"Binds":["/:/host"]}"#.to_string(), "cistern: bind mount of host path \"/\""),
        (r#"{"Binds":["/etc/../:/host:rw"]}"#.into(), "cistern: bind mount of host path \"/etc/../\""),
        (r#"{"binds":["/var/run:/s"]}"#.into(), "cistern: bind mount of host path \"/var/run\""),
        (r#"{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}"#.into(), "cistern: bind mount of host path \"/\""),
        (r#"{"mounts":[{"type":"bind","source":"/etc","target":"/h","readonly":true}]}"#.into(), "cistern: bind mount of host path \"/etc\""),
        (r#"{"Mounts":[{"Type":"volume","Source":"/etc","Target":"/h"}]}"#.into(), "cistern: volume mount of host path \"/etc\""),
        (
            format!(r#"{{"Mounts":[{{"Type":"volume","Source":"{vol}","Target":"/h","VolumeOptions":{{"DriverConfig":{{"Name":"local","Options":{{"type":"none","o":"bind","device":"/etc"}}}}}}}}]}}"#),
            "cistern: volume driver options that mount host paths or devices",
        ),
        (
            format!(r#"{{"Mounts":[{{"Type":"volume","Source":"{vol}","Target":"/h","VolumeOptions":{{"DriverConfig":{{"Options":{{"type":"ext4","device":"/dev/sda1"}}}}}}}}]}}"#),
            "cistern: volume driver options that mount host paths or devices",
        ),
        (
            format!(r#"{{"Mounts":[{{"Type":"volume","Source":"{vol}","Target":"/h","VolumeOptions":{{"DriverConfig":{{"Name":"evil"}}}}}}]}}"#),
            "cistern: volume driver \"evil\"",
        ),
        (r#"{"Mounts":[{"Type":"npipe","Source":"x","Target":"/h"}]}"#.into(), "cistern: mount type \"npipe\""),
        (r#"{"Mounts":[{"Type":"bind","Source":"/tmp","Target":"/h","BindOptions":{"Propagation":"rshared"}}]}"#.into(), "cistern: rshared mount propagation"),
        (format!(r#"{{"Binds":["{vol}:/h"],"VolumeDriver":"evil"}}"#), "cistern: volume driver \"evil\""),
    ] {
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            format!(r#"{{"Image":"{img}","HostConfig":{hc}}}"#).as_bytes(),
            403,
            rule_text,
        );
    }
    for body in [
        format!(r#"{{"Name":"{vol}","DriverOpts":{{"type":"none","o":"bind","device":"/etc"}}}}"#),
        format!(r#"{{"name":"{vol}","driveropts":{{"type":"none","o":"rbind,ro","device":"/"}}}}"#),
        format!(r#"{{"Name":"{vol}","DriverOpts":{{"Type":"none","O":"bind","Device":"/etc"}}}}"#),
        format!(r#"{{"Name":"{vol}","DriverOpts":{{"type":"tmpfs","device":"/etc","o":"bind"}}}}"#),
        format!(r#"{{"Name":"{vol}","Driver":"evil"}}"#),
    ] {
        let (status, text) = send(
            &cistern.socket,
            &post("/v1.41/volumes/create", body.as_bytes()),
        );
        assert_eq!(status, 403, "{body}: {text}");
        assert!(!exists("volume", &vol), "{body}: volume created");
    }
    assert!(
        !exists("volume", &vol),
        "a volume was created by the container creates"
    );
}

#[test]
fn joining_another_tenants_namespaces_is_refused_by_name_id_or_prefix() {
    let cistern = Cistern::start("");
    // Created on the daemon directly: not this tenant's.
    let victim = unique("adv-victim");
    let _victim = Cleanup::container(&victim);
    let id = run_ok(docker_direct().args(["run", "-d", "--name", &victim, image(), "sleep", "60"]))
        .trim()
        .to_string();
    let img = image();
    for target in [
        victim.clone(),
        id.clone(),
        id[..12].to_string(),
        id[..4].to_string(),
    ] {
        for key in ["PidMode", "IpcMode", "NetworkMode", "Cgroup"] {
            for prefix in ["container:", "CONTAINER:", "Container:"] {
                assert_create_refused(
                    &cistern,
                    "/v1.41/containers/create",
                    format!(r#"{{"Image":"{img}","HostConfig":{{"{key}":"{prefix}{target}"}}}}"#)
                        .as_bytes(),
                    404,
                    &format!("No such container: {target}"),
                );
            }
        }
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            format!(r#"{{"Image":"{img}","HostConfig":{{"VolumesFrom":["{target}:ro"]}}}}"#)
                .as_bytes(),
            404,
            &format!("No such container: {target}"),
        );
        for key in ["UTSMode", "UsernsMode", "CgroupnsMode"] {
            assert_create_refused(
                &cistern,
                "/v1.41/containers/create",
                format!(r#"{{"Image":"{img}","HostConfig":{{"{key}":"container:{target}"}}}}"#)
                    .as_bytes(),
                403,
                &format!("cistern: {key} \"container:{target}\" is not allowed"),
            );
        }
    }
    // Malformed targets never reach a lookup.
    for target in ["", "../x", "a b"] {
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            format!(r#"{{"Image":"{img}","HostConfig":{{"PidMode":"container:{target}"}}}}"#)
                .as_bytes(),
            403,
            "cistern: ",
        );
    }
    // The tenant's own container: by name, ID and prefix, joined for real.
    let own = unique("adv-own");
    let _own = Cleanup::container(&own);
    let own_id =
        run_ok(
            cistern
                .docker()
                .args(["run", "-d", "--name", &own, image(), "sleep", "60"]),
        )
        .trim()
        .to_string();
    for target in [own.clone(), own_id.clone(), own_id[..12].to_string()] {
        let joined = run_ok(cistern.docker().args([
            "run",
            "--rm",
            "--pid",
            &format!("container:{target}"),
            "--volumes-from",
            &format!("{target}:ro"),
            image(),
            "sh",
            "-c",
            "ps -o comm | grep -c sleep",
        ]));
        assert_eq!(joined.trim(), "1", "joined {target}");
    }
    // Host spellings the daemon compares exactly are refused whatever the case.
    for (key, value) in [
        ("PidMode", "HOST"),
        ("NetworkMode", "Host"),
        ("UTSMode", "host"),
        ("UsernsMode", "host"),
        ("CgroupnsMode", "host"),
        ("IpcMode", "host"),
    ] {
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            format!(r#"{{"Image":"{img}","HostConfig":{{"{key}":"{value}"}}}}"#).as_bytes(),
            403,
            "cistern: the host ",
        );
    }
}

#[test]
fn privileged_exec_is_refused_in_every_spelling() {
    let cistern = Cistern::start("");
    let name = unique("adv-exec");
    let _cleanup = Cleanup::container(&name);
    run_ok(
        cistern
            .docker()
            .args(["run", "-d", "--name", &name, image(), "sleep", "60"]),
    );
    let kelvin = '\u{212A}';
    for (path, body, status, want) in [
        (
            format!("/v1.41/containers/{name}/exec"),
            r#"{"Cmd":["id"],"Privileged":true}"#.to_string(),
            403,
            "cistern: privileged exec is not allowed (policy conservative, Privileged)",
        ),
        (
            format!("/containers/{name}/exec"),
            r#"{"cmd":["id"],"privileged":true}"#.into(),
            403,
            "cistern: privileged exec is not allowed",
        ),
        (
            format!("/%63ontainers/{name}/exec"),
            r#"{"Cmd":["id"],"PRIVILEGED":true}"#.into(),
            403,
            "cistern: privileged exec is not allowed",
        ),
        (
            format!("/v1.41/containers/{name}/exec"),
            r#"{"Cmd":["id"],"Privileged":false,"privileged":true}"#.into(),
            400,
            "cistern: duplicate key Privileged",
        ),
        (
            format!("/v1.41/containers/{name}/exec"),
            format!(r#"{{"Cmd":["id"],"Privileged":true,"{kelvin}":1}}"#),
            400,
            "cistern: unknown field",
        ),
        (
            format!("/v1.41/containers/{name}/exec"),
            r#"{"Cmd":["id"],"Privileged":"1"}"#.into(),
            400,
            "cistern: Privileged must be",
        ),
    ] {
        let (got, text) = send(&cistern.socket, &post(&path, body.as_bytes()));
        assert_eq!(got, status, "{body}: {text}");
        assert!(message(&text).starts_with(want), "{body}: {text}");
    }
    assert_eq!(
        run_ok(docker_direct().args(["inspect", "--format", "{{json .ExecIDs}}", &name])).trim(),
        "null",
        "an exec was created"
    );
}

#[test]
fn oversized_deep_trailing_and_invalid_bodies_are_refused() {
    let cistern = Cistern::start("");
    let img = image();
    // 2 MiB: over the 1 MiB cap, whatever the content.
    let mut big = format!(r#"{{"Image":"{img}","Labels":{{"x":""#).into_bytes();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend_from_slice(br#""},"HostConfig":{"Privileged":true}}"#);
    assert_create_refused(
        &cistern,
        "/v1.41/containers/create",
        &big,
        413,
        "cistern: request body is larger than",
    );

    let mut deep = format!(r#"{{"Image":"{img}","Labels":"#).into_bytes();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.push(b'}');
    assert_create_refused(
        &cistern,
        "/v1.41/containers/create",
        &deep,
        400,
        "cistern: malformed JSON",
    );
    let mut deep_obj = format!(r#"{{"Image":"{img}","Labels":"#).into_bytes();
    deep_obj.extend(std::iter::repeat_n(&br#"{"a":"#[..], 5_000).flatten());
    deep_obj.extend_from_slice(b"1");
    deep_obj.extend(std::iter::repeat_n(b'}', 5_001));
    assert_create_refused(
        &cistern,
        "/v1.41/containers/create",
        &deep_obj,
        400,
        "cistern: ",
    );

    for body in [
        format!(r#"{{"Image":"{img}"}} {{"HostConfig":{{"Privileged":true}}}}"#),
        format!(r#"{{"Image":"{img}","Cmd":["true"]}}garbage"#),
        format!(r#"{{"Image":"{img}","Cmd":["true"]}}]"#),
        format!(r#"{{"Image":"{img}","Cmd":["true"],}}"#),
        format!(r#"{{"Image":"{img}","Cmd":["true"]"#),
        format!(r#"{{"Image":"{img}","Cmd":["true"]}}{{}}"#),
    ] {
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            body.as_bytes(),
            400,
            "cistern: malformed JSON",
        );
    }
    for bytes in [
        &b"\xff\xfe{}"[..],
        &b"{\"Image\":\"x\",\"Labels\":{\"a\":\"\xc3\x28\"}}"[..],
        &b"{\"Image\":\"x\",\"Labels\":{\"\xed\xa0\x80\":\"a\"}}"[..],
        &b"\xef\xbb\xbf{\"Image\":\"x\"}"[..],
    ] {
        assert_create_refused(
            &cistern,
            "/v1.41/containers/create",
            bytes,
            400,
            "cistern: malformed JSON",
        );
    }
}

/// A client still sending a build context when cistern refuses the build's query
/// reads the refusal instead of a broken pipe.
#[test]
fn a_refused_build_still_lets_the_client_send_its_context_and_read_the_answer() {
    let cistern = Cistern::start("");
    let context = vec![0u8; 256 << 10];
    let mut stream = UnixStream::connect(&cistern.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1.41/build?networkmode=host HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        context.len()
    )
    .unwrap();
    // cistern has decided by now; the context arrives afterwards.
    std::thread::sleep(Duration::from_millis(200));
    stream
        .write_all(&context)
        .expect("cistern closed while the client was sending");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert_eq!(
        message(&answer),
        "cistern: build network mode \"host\" is not allowed (policy conservative, networkmode)"
    );
}
