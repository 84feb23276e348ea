//! Where the CA goes inside a container, and the bytes written there. Pure:
//! [`super::archive`] does the daemon calls.
//!
//! * **System bundles** ([`BUNDLES`]): the PEM files TLS libraries read by
//!   default on each distribution family. Only bundles that exist in the
//!   container's filesystem are touched (cistern never guesses a layout), and a
//!   bundle is only ever **appended** to: its original content stays first, then
//!   each CA PEM not already in it, after a `#` comment line (OpenSSL, GnuTLS,
//!   Go and rustls-native-certs all skip text outside PEM blocks).
//! * **Symbolic links**: RHEL's `/etc/pki/tls/certs/ca-bundle.crt` and Alpine's
//!   `/etc/ssl/cert.pem` are links to another bundle. The daemon's path stat
//!   (`X-Docker-Container-Path-Stat`, moby `container.StatPath`) reports a link's
//!   target fully resolved within the container's root, so cistern writes the
//!   target (once, however many links lead to it) and the link stays a link.
//!   Writing through the link path would replace the link by a regular file.
//! * **Standalone PEM** at [`super::CA_PATH`] (`/etc/cistern/ca.pem`): all CAs,
//!   for `NODE_EXTRA_CA_CERTS` and anything a job wants to point at it.
//!
//! Writes go through `PUT /containers/{id}/archive` into the container's own
//! writable layer: the image is never modified. Only certificates are handled
//! here; private keys never leave cistern's state directory.

use std::io::Read;

use serde::Deserialize;

use crate::mitm::handout::HandedCa;

/// System trust bundles, by distribution family.
pub const BUNDLES: &[&str] = &[
    // Debian, Ubuntu, Alpine (ca-certificates)
    "/etc/ssl/certs/ca-certificates.crt",
    // Fedora, RHEL, CentOS (ca-certificates, p11-kit extract)
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // openSUSE
    "/etc/ssl/ca-bundle.pem",
    // Alpine, BSD-style, LibreSSL default
    "/etc/ssl/cert.pem",
];

/// The largest bundle cistern reads back from a container (the full Mozilla
/// bundle is ~220 KB).
pub const MAX_BUNDLE: usize = 8 << 20;

// Go's os.FileMode type bits, as the stat header carries them.
const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
const MODE_TYPE: u32 = MODE_DIR
    | MODE_SYMLINK
    | (1 << 25) // named pipe
    | (1 << 24) // socket
    | (1 << 26) // device
    | (1 << 21) // char device
    | (1 << 19); // irregular

/// moby's `types.ContainerPathStat`, from the base64 JSON in
/// `X-Docker-Container-Path-Stat`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PathStat {
    pub name: String,
    #[serde(default)]
    pub size: i64,
    /// Go `os.FileMode`: permission bits plus type bits.
    pub mode: u32,
    /// For a link: its target, fully resolved in the container's root, absolute.
    #[serde(default, rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// Decodes the header value.
    pub fn from_header(value: &[u8]) -> Result<PathStat, String> {
        use base64::Engine as _;
        let json = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value))
            .map_err(|err| format!("path stat header is not base64: {err}"))?;
        serde_json::from_slice(&json).map_err(|err| format!("path stat header: {err}"))
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & MODE_SYMLINK != 0
    }

    pub fn is_regular(&self) -> bool {
        self.mode & MODE_TYPE == 0
    }
}

fn comment(ca: &HandedCa) -> String {
    format!(
        "# cistern caching proxy CA {} (valid until {})\n",
        ca.id, ca.not_after
    )
}

/// `original` followed by every CA not already in it. `None` when all are there.
pub fn appended(original: &[u8], cas: &[HandedCa]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(original);
    let missing: Vec<&HandedCa> = cas
        .iter()
        .filter(|ca| !text.contains(ca.pem.trim()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut out = original.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    for ca in missing {
        out.extend_from_slice(comment(ca).as_bytes());
        out.extend_from_slice(ca.pem.trim_end().as_bytes());
        out.push(b'\n');
    }
    Some(out)
}

/// The standalone PEM file: every CA, each after its comment line.
pub fn standalone(cas: &[HandedCa]) -> Vec<u8> {
    appended(b"", cas).unwrap_or_default()
}

/// Ownership and permissions of a file read from a container, kept when it
/// is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl Default for FileMeta {
    fn default() -> Self {
        FileMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }
}

/// Reads the one regular file of a `GET /containers/{id}/archive` answer
/// (at most `cap` bytes of content).
pub fn read_single_file(tar_bytes: &[u8], cap: usize) -> Result<(FileMeta, Vec<u8>), String> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = archive
        .entries()
        .map_err(|err| format!("unreadable archive: {err}"))?;
    let mut entry = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(err)) => return Err(format!("unreadable archive: {err}")),
        None => return Err("empty archive".into()),
    };
    let header = entry.header();
    if header.entry_type() != tar::EntryType::Regular {
        return Err(format!("not a regular file ({:?})", header.entry_type()));
    }
    let meta = FileMeta {
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
    };
    let size = entry.size();
    if size > cap as u64 {
        return Err(format!(
            "{size} bytes is over the {cap} bytes cistern reads"
        ));
    }
    let mut content = Vec::with_capacity(size as usize);
    entry
        .by_ref()
        .take(cap as u64)
        .read_to_end(&mut content)
        .map_err(|err| format!("unreadable archive: {err}"))?;
    Ok((meta, content))
}

/// A tar for `PUT /containers/{id}/archive`: `dirs` (relative, created 0755
/// if missing) then `name` (relative to the PUT's `path`) with `content`.
pub fn file_tar(
    dirs: &[&str],
    name: &str,
    meta: FileMeta,
    content: &[u8],
    mtime: u64,
) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    let fail = |err: std::io::Error| format!("cannot build archive: {err}");
    for dir in dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mtime(mtime);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .map_err(fail)?;
    }
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(meta.mode);
    header.set_uid(meta.uid);
    header.set_gid(meta.gid);
    header.set_size(content.len() as u64);
    header.set_mtime(mtime);
    builder
        .append_data(&mut header, name, content)
        .map_err(fail)?;
    builder.into_inner().map_err(fail)
}

/// Splits an absolute container path into its directory and file name.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if dir.is_empty() { "/" } else { dir }, name))
}

/// Whether `path` is `mount` or inside it (both absolute, clean).
pub fn is_under(path: &str, mount: &str) -> bool {
    let mount = mount.trim_end_matches('/');
    mount.is_empty()
        || path == mount
        || path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(id: &str) -> HandedCa {
        HandedCa {
            id: id.into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            pem: format!("-----BEGIN CERTIFICATE-----\n{id}\n-----END CERTIFICATE-----\n"),
        }
    }

    #[test]
    fn stat_header_decodes_links_and_files() {
        use base64::Engine as _;
        let enc = |j: &str| base64::engine::general_purpose::STANDARD.encode(j);
        let link = PathStat::from_header(
            enc(r#"{"name":"ca-bundle.crt","size":49,"mode":134218239,"mtime":"2024-01-01T00:00:00Z","linkTarget":"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"}"#).as_bytes(),
        )
        .unwrap();
        assert!(link.is_symlink());
        assert!(!link.is_regular());
        assert_eq!(
            link.link_target,
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
        );
        let file = PathStat::from_header(
            enc(r#"{"name":"x","size":3,"mode":420,"mtime":"2024-01-01T00:00:00Z","linkTarget":""}"#).as_bytes(),
        )
        .unwrap();
        assert!(file.is_regular());
        let dir = PathStat::from_header(
            enc(r#"{"name":"x","size":3,"mode":2147484141,"linkTarget":""}"#).as_bytes(),
        )
        .unwrap();
        assert!(!dir.is_regular());
        assert!(PathStat::from_header(b"!!").is_err());
    }

    #[test]
    fn appending_keeps_the_original_first_and_skips_present_cas() {
        let original = b"-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----";
        let out = appended(original, &[ca("a"), ca("b")]).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with(std::str::from_utf8(original).unwrap()));
        assert!(text.ends_with(&ca("b").pem));
        assert!(text.contains("# cistern caching proxy CA a"));
        // Idempotent: a second pass adds nothing; a new CA only itself.
        assert_eq!(appended(&out, &[ca("a"), ca("b")]), None);
        let again = appended(&out, &[ca("c"), ca("a")]).unwrap();
        assert_eq!(
            String::from_utf8(again).unwrap().matches("BEGIN").count(),
            4
        );
        assert!(standalone(&[ca("a")]).starts_with(b"# cistern"));
    }

    #[test]
    fn tars_round_trip() {
        let meta = FileMeta {
            mode: 0o640,
            uid: 0,
            gid: 7,
        };
        let tar = file_tar(&["etc/cistern"], "etc/cistern/ca.pem", meta, b"pem", 1).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc/cistern", "etc/cistern/ca.pem"]);
        let tar = file_tar(&[], "b.crt", meta, b"content", 1).unwrap();
        assert_eq!(
            read_single_file(&tar, 100).unwrap(),
            (meta, b"content".to_vec())
        );
        assert!(read_single_file(&tar, 3).is_err());
        assert!(read_single_file(b"garbage", 3).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(split("/etc/ssl/cert.pem"), Some(("/etc/ssl", "cert.pem")));
        assert_eq!(split("/x"), Some(("/", "x")));
        assert_eq!(split("/etc/"), None);
        assert!(is_under("/etc/ssl/certs/a", "/etc/ssl"));
        assert!(is_under("/etc/ssl", "/etc/ssl/"));
        assert!(!is_under("/etc/ssl2/a", "/etc/ssl"));
        assert!(is_under("/anything", "/"));
    }
}
