//! Mounts: host paths reaching a container, through every door the daemon offers.
//!
//! * `HostConfig.Binds` (`src:dst[:mode]`): the daemon's Linux parser
//!   (`volume/mounts/linux_parser.go`) makes an absolute `src` a bind mount and any
//!   other `src` a named volume; `src:mode` with a valid mode is an anonymous volume.
//! * `HostConfig.Mounts[]`: `Type: bind` is a host path; `Type: volume` is a named
//!   volume, whose `VolumeOptions.DriverConfig` can name another driver or give the
//!   `local` driver `type`/`device`/`o` options that mount anything (`o=bind,
//!   device=/`); `tmpfs` and `image` are fine; `npipe`, `cluster` and anything else
//!   are refused.
//! * `POST /volumes/create` with a driver other than `local` or bind-making options.
//! * `HostConfig.VolumeDriver` (the driver for named volumes in `Binds`).
//! * `HostConfig.VolumesFrom` (another container's mounts, `name[:ro|rw]`): a
//!   well-formed entry passes to the ownership stage, which resolves it to one of
//!   the tenant's own containers; a malformed one is refused (rule
//!   [`RULE_VOLUMES_FROM`]).
//!
//! Host paths are compared to the allowlist on lexically cleaned absolute paths,
//! component by component: `/data/../etc` is `/etc`, `/data-evil` is not under
//! `/data`. An entry with `read_only: true` needs `:ro` / `ReadOnly: true` (and not
//! `ReadOnlyNonRecursive`). Mount propagation `shared`/`rshared` is refused: it
//! would let mounts made in the container appear on the host.
//!
//! Not solved here (no I/O): a symlink inside an allowlisted directory that points
//! elsewhere is followed by the daemon; allowlisted directories must not be writable
//! by jobs in a way that lets them plant symlinks.

use super::{Ctx, Json, Refusal};
use crate::wire::mounts::{clean_components, split_bind};

/// Another container's volumes (`VolumesFrom`).
pub const RULE_VOLUMES_FROM: &str = "volumes_from";

/// An allowlisted host path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAllow {
    /// Path components, e.g. `["srv", "cache"]`.
    pub components: Vec<String>,
    pub read_only: bool,
}

impl BindAllow {
    /// A prefix from config: absolute, clean, not `/`.
    pub fn new(path: &str, read_only: bool) -> Option<BindAllow> {
        let rest = path.strip_prefix('/')?;
        let components: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        if components
            .iter()
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return None;
        }
        Some(BindAllow {
            components,
            read_only,
        })
    }

    /// The configured path, for messages.
    pub fn path(&self) -> String {
        format!("/{}", self.components.join("/"))
    }
}

/// Checks a host path against the allowlist; `read_only` is what the mount asks.
fn check_host_path(
    ctx: &mut Ctx<'_>,
    field: &str,
    source: &str,
    read_only: bool,
) -> Result<(), Refusal> {
    let comps = clean_components(source);
    let entry = ctx
        .policy
        .bind_mounts
        .iter()
        .filter(|a| {
            comps.len() >= a.components.len()
                && a.components.iter().zip(&comps).all(|(a, b)| a == b)
        })
        // Prefer a writable entry when several match.
        .min_by_key(|a| a.read_only)
        .cloned();
    match entry {
        None => ctx.deny(
            "bind_mount",
            field,
            format_args!("bind mount of host path {source:?} is not allowed"),
        ),
        Some(a) if a.read_only && !read_only => ctx.deny(
            "bind_mount_read_only",
            field,
            format_args!(
                "host path {source:?} may only be mounted read-only (allowlist entry {})",
                a.path()
            ),
        ),
        Some(_) => Ok(()),
    }
}

fn check_propagation(ctx: &mut Ctx<'_>, field: &str, p: &str) -> Result<(), Refusal> {
    if p == "shared" || p == "rshared" {
        ctx.deny(
            "mount_propagation",
            field,
            format_args!("{p} mount propagation is not allowed"),
        )?;
    }
    Ok(())
}

/// `HostConfig.Binds`, `Mounts`, `VolumeDriver`, `VolumesFrom`.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &Json) -> Result<(), Refusal> {
    let binds: Vec<String> = hc
        .get("Binds")
        .map(|b| b.strings().map(str::to_string).collect())
        .unwrap_or_default();
    for (i, spec) in binds.iter().enumerate() {
        let field = format!("HostConfig.Binds[{i}]");
        let Some((source, mode)) = split_bind(spec) else {
            ctx.deny(
                "bind_mount",
                &field,
                format_args!("bind spec {spec:?} is not valid"),
            )?;
            continue;
        };
        for m in mode.split(',') {
            check_propagation(ctx, &field, m)?;
        }
        // A Docker socket bind mapped to the connection's own socket passed
        // its own stage ([`super::socket_bind`]).
        if ctx.mapped.binds.contains(&i) {
            continue;
        }
        if let Some(src) = source.filter(|s| s.starts_with('/')) {
            let ro = mode.split(',').any(|m| m == "ro");
            check_host_path(ctx, &field, src, ro)?;
        }
    }
    let mounts: Vec<Json> = hc
        .get("Mounts")
        .and_then(Json::as_array)
        .map(<[Json]>::to_vec)
        .unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("HostConfig.Mounts[{i}]");
        let ty = m.get("Type").and_then(Json::as_str).unwrap_or("");
        let source = m.get("Source").and_then(Json::as_str).unwrap_or("");
        match ty {
            "bind" => {
                if let Some(p) = m.at(&["BindOptions", "Propagation"]).and_then(Json::as_str) {
                    check_propagation(ctx, &format!("{field}.BindOptions.Propagation"), p)?;
                }
                let ro = m.get("ReadOnly").and_then(Json::as_bool) == Some(true)
                    && m.at(&["BindOptions", "ReadOnlyNonRecursive"])
                        .and_then(Json::as_bool)
                        != Some(true);
                if !ctx.mapped.mounts.contains(&i) {
                    check_host_path(ctx, &format!("{field}.Source"), source, ro)?;
                }
            }
            "volume" => {
                if source.starts_with('/') {
                    ctx.deny(
                        "bind_mount",
                        format!("{field}.Source"),
                        format_args!("volume mount of host path {source:?} is not allowed"),
                    )?;
                }
                if let Some(sub) = m.at(&["VolumeOptions", "Subpath"]).and_then(Json::as_str) {
                    if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                        ctx.deny(
                            "bind_mount",
                            format!("{field}.VolumeOptions.Subpath"),
                            format_args!("volume subpath {sub:?} is not allowed"),
                        )?;
                    }
                }
                if let Some(dc) = m.at(&["VolumeOptions", "DriverConfig"]) {
                    let f = format!("{field}.VolumeOptions.DriverConfig");
                    let driver = dc.get("Name").and_then(Json::as_str).unwrap_or("");
                    check_driver(ctx, &format!("{f}.Name"), driver)?;
                    check_local_opts(ctx, &format!("{f}.Options"), dc.get("Options"))?;
                }
            }
            "tmpfs" | "image" => {}
            other => ctx.deny(
                "mount_type",
                format!("{field}.Type"),
                format_args!("mount type {other:?} is not allowed"),
            )?,
        }
    }
    if let Some(d) = hc.get("VolumeDriver").and_then(Json::as_str) {
        check_driver(ctx, "HostConfig.VolumeDriver", d)?;
    }
    for entry in hc
        .get("VolumesFrom")
        .map(Json::strings)
        .into_iter()
        .flatten()
    {
        let (name, mode) = entry.split_once(':').unwrap_or((entry, "rw"));
        if !super::namespaces::is_container_ref(name) || !matches!(mode, "ro" | "rw") {
            ctx.deny(
                RULE_VOLUMES_FROM,
                "HostConfig.VolumesFrom",
                format_args!("{entry:?} is not a container name or ID with an optional :ro or :rw"),
            )?;
        }
    }
    Ok(())
}

fn check_driver(ctx: &mut Ctx<'_>, field: &str, driver: &str) -> Result<(), Refusal> {
    if !(driver.is_empty() || driver == "local") {
        ctx.deny(
            "volume_driver",
            field,
            format_args!("volume driver {driver:?} is not allowed"),
        )?;
    }
    Ok(())
}

/// The `local` driver's options: only `type=tmpfs` (with a non-path device, without
/// `bind`/`rbind` in `o`, which would turn it into a bind of `device`) and `size`.
fn check_local_opts(ctx: &mut Ctx<'_>, field: &str, opts: Option<&Json>) -> Result<(), Refusal> {
    let Some(opts) = opts.and_then(Json::as_object) else {
        return Ok(());
    };
    let get = |k: &str| {
        opts.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_str())
    };
    for (k, _) in opts {
        if !["type", "device", "o", "size"].contains(&k.as_str()) {
            return ctx.deny(
                "volume_driver_opts",
                field,
                format_args!("volume driver option {k:?} is not allowed"),
            );
        }
    }
    let ty = get("type");
    let device = get("device");
    let o = get("o");
    if ty.is_none() && device.is_none() && o.is_none() {
        return Ok(());
    }
    let binds = o.is_some_and(|o| {
        o.split(',')
            .any(|x| matches!(x.trim().to_ascii_lowercase().as_str(), "bind" | "rbind"))
    });
    if ty != Some("tmpfs") || binds || device.is_some_and(|d| d.starts_with('/')) {
        ctx.deny(
            "volume_driver_opts",
            field,
            "volume driver options that mount host paths or devices are not allowed",
        )?;
    }
    Ok(())
}

/// `POST /volumes/create`.
pub fn volume_create(ctx: &mut Ctx<'_>, body: &Json) -> Result<(), Refusal> {
    if let Some(d) = body.get("Driver").and_then(Json::as_str) {
        check_driver(ctx, "Driver", d)?;
    }
    check_local_opts(ctx, "DriverOpts", body.get("DriverOpts"))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;
    use super::*;

    fn with_allowlist() -> Policy {
        policy_yaml("bind_mounts: [{path: /data}, {path: /srv/cache, read_only: true}]")
    }

    #[test]
    fn binds_of_host_paths_need_the_allowlist() {
        let p = with_allowlist();
        for b in [
            "/data:/d",
            "/data/sub:/d:rw",
            "/data/:/d",
            "/srv/cache:/c:ro",
            "/srv/cache/x:/c:ro,z",
            "named:/v",
            "named:/v:ro",
            "/anon",
            "/anon:ro",
        ] {
            create(
                &p,
                &format!(r#"{{"Image":"x","HostConfig":{{"Binds":["{b}"]}}}}"#),
            )
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        }
        for (b, rule) in [
            ("/:/host", "bind_mount"),
            ("/etc:/e:ro", "bind_mount"),
            ("/data/../etc:/e", "bind_mount"),
            ("/data-evil:/e", "bind_mount"),
            ("/dat:/e", "bind_mount"),
            ("/srv/cache:/c", "bind_mount_read_only"),
            ("/srv/cache:/c:rw", "bind_mount_read_only"),
            ("/data:/d:rshared", "mount_propagation"),
            ("/a:/b:c:d", "bind_mount"),
            (":/b", "bind_mount"),
            ("/data:/d:bogus", "bind_mount"),
        ] {
            let r = refused(
                &p,
                &format!(r#"{{"Image":"x","HostConfig":{{"Binds":["{b}"]}}}}"#),
            );
            assert_eq!(
                (r.rule, r.field.as_str()),
                (rule, "HostConfig.Binds[0]"),
                "{b}"
            );
        }
        // The default policy has no allowlist at all.
        assert_eq!(
            refused(
                &Policy::default(),
                r#"{"Image":"x","HostConfig":{"Binds":["/data:/d"]}}"#
            )
            .rule,
            "bind_mount"
        );
    }

    #[test]
    fn mounts_of_type_bind_need_the_allowlist() {
        let p = with_allowlist();
        create(&p, r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"bind","Source":"/data/x","Target":"/d"},{"Type":"bind","Source":"/srv/cache","Target":"/c","ReadOnly":true},{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1024}},{"Type":"volume","Source":"v","Target":"/v"}]}}"#).unwrap();
        for (m, rule) in [
            (
                r#"{"Type":"bind","Source":"/","Target":"/h"}"#,
                "bind_mount",
            ),
            (
                r#"{"type":"bind","source":"/data/../etc","target":"/h"}"#,
                "bind_mount",
            ),
            (
                r#"{"Type":"bind","Source":"/srv/cache","Target":"/c"}"#,
                "bind_mount_read_only",
            ),
            (
                r#"{"Type":"bind","Source":"/srv/cache","Target":"/c","ReadOnly":true,"BindOptions":{"ReadOnlyNonRecursive":true}}"#,
                "bind_mount_read_only",
            ),
            (
                r#"{"Type":"bind","Source":"/data","Target":"/d","BindOptions":{"Propagation":"rshared"}}"#,
                "mount_propagation",
            ),
            (
                r#"{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"sshfs"}}}"#,
                "volume_driver",
            ),
            (
                r#"{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/etc"}}}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"type":"tmpfs","o":"size=1m,bind","device":"tmpfs"}}}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"Subpath":"../../etc"}}"#,
                "bind_mount",
            ),
            (
                r#"{"Type":"volume","Source":"/etc","Target":"/v"}"#,
                "bind_mount",
            ),
            (
                r#"{"Type":"npipe","Source":"x","Target":"/v"}"#,
                "mount_type",
            ),
            (
                r#"{"Type":"cluster","Source":"x","Target":"/v"}"#,
                "mount_type",
            ),
            (
                r#"{"Type":"BIND","Source":"/","Target":"/v"}"#,
                "mount_type",
            ),
            (r#"{"Source":"/","Target":"/v"}"#, "mount_type"),
            (
                r#"{"Type":"volume","Source":"x","Target":"/v","ClusterOptions":{}}"#,
                "unsupported_field",
            ),
        ] {
            let r = refused(
                &p,
                &format!(r#"{{"Image":"x","HostConfig":{{"Mounts":[{m}]}}}}"#),
            );
            assert_eq!(r.rule, rule, "{m}");
        }
    }

    #[test]
    fn volume_driver_and_volumes_from() {
        let p = Policy::default();
        assert_eq!(
            refused(
                &p,
                r#"{"Image":"x","HostConfig":{"VolumeDriver":"convoy"}}"#
            )
            .rule,
            "volume_driver"
        );
        assert_eq!(
            refused(
                &p,
                r#"{"Image":"x","HostConfig":{"VolumesFrom":["other:rx"]}}"#
            )
            .rule,
            RULE_VOLUMES_FROM
        );
        create(
            &p,
            r#"{"Image":"x","HostConfig":{"VolumesFrom":["other:ro","4f3c2a"]}}"#,
        )
        .unwrap();
        create(&p, r#"{"Image":"x","Volumes":{"/v":{}},"HostConfig":{"VolumeDriver":"local","VolumesFrom":[],"Tmpfs":{"/run":"rw,noexec"}}}"#).unwrap();
    }

    #[test]
    fn volume_create_refuses_other_drivers_and_bind_options() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/volumes/create");
        for (body, rule) in [
            (r#"{"Name":"v","Driver":"nfs"}"#, "volume_driver"),
            (
                r#"{"Name":"v","DriverOpts":{"type":"none","o":"bind","device":"/etc"}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Name":"v","DriverOpts":{"type":"nfs","o":"addr=10.0.0.1","device":":/export"}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Name":"v","DriverOpts":{"device":"/dev/sda1"}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Name":"v","DriverOpts":{"TYPE":"none"}}"#,
                "volume_driver_opts",
            ),
            (
                r#"{"Name":"v","ClusterVolumeSpec":{"Group":"g"}}"#,
                "unsupported_field",
            ),
        ] {
            assert_eq!(
                p.inspect_body(&r, body.as_bytes()).unwrap_err().rule,
                rule,
                "{body}"
            );
        }
        for body in [
            r#"{"Name":"v"}"#,
            r#"{"Name":"v","Driver":"local","DriverOpts":{},"Labels":{"a":"b"}}"#,
            r#"{"Name":"v","DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=100m,uid=1000"}}"#,
        ] {
            p.inspect_body(&r, body.as_bytes()).unwrap();
        }
    }

    #[test]
    fn allowlist_entries_are_clean_and_absolute() {
        assert_eq!(
            BindAllow::new("/srv/cache/", false).unwrap().path(),
            "/srv/cache"
        );
        for bad in ["/", "rel", "/a/../b", "/a//b", "/./a", ""] {
            assert!(BindAllow::new(bad, false).is_none(), "{bad}");
        }
    }
}
