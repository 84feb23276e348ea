//! Image tags that arrive with content: `docker load`, `docker import`,
//! `docker pull`.
//!
//! These endpoints create or move tags that no query of cistern's can
//! name beforehand: a `docker save` archive carries its tags inside
//! (`manifest.json`, or the older `repositories`), an import names its tag in
//! the query, a pull names a registry's. Without checks, one tenant could
//! point another tenant's tag, a shared base image or a name in another
//! tenant's image namespace at an image of its own choosing. The rules
//! ([`Protected::check`]), for a reference `R` that tenant `T` creates:
//!
//! * `R` under `cistern-ns/` must be `T`'s own image namespace;
//! * an `R` that exists on the daemon must be one of `T`'s tags, or keep
//!   pointing at the same image (re-loading an archive of an image already
//!   there is fine);
//! * a pull may refresh a shared base image (its content comes from the
//!   registry), but not another tenant's tag.
//!
//! A load is checked **while it streams** ([`TarScan`]): the archive is read
//! entry by entry as it passes (tar headers parsed by the `tar` crate, paths
//! cleaned the way the daemon's untar cleans them, PAX and GNU long names
//! honoured), and `manifest.json` and `repositories` are read whole. The
//! daemon applies tags only after it has the whole archive, so a refused
//! archive is cut off before its manifest's last byte reaches the daemon and
//! nothing is tagged. Archives cistern cannot read (compressed ones, a
//! manifest that is a link) are refused.
//!
//! I/O-free.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::images::{normalize, Rules};
use super::names::{Namespace, IMAGE_ROOT};
use super::tar_stream::{Event, TarStream};

/// A reference in the form the checks compare: `name:tag`, without
/// `docker.io/` or `docker.io/library/`.
pub fn key(reference: &str) -> String {
    let r = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .or_else(|| reference.strip_prefix("index.docker.io/library/"))
        .unwrap_or(reference);
    normalize(r)
}

/// What a tenant may not overwrite, from the daemon's image list before the
/// request.
#[derive(Debug, Default)]
pub struct Protected {
    /// Every tag on the daemon → its image ID.
    existing: HashMap<String, String>,
    /// Tags recorded as the tenant's own.
    own: HashSet<String>,
    /// Tags recorded as other tenants'.
    others: HashSet<String>,
    /// Every image ID on the daemon.
    ids: HashSet<String>,
    /// `cistern-ns/<tenant>/`, the tenant's own image namespace.
    own_namespace: Option<String>,
}

impl Protected {
    /// From `GET /images/json` and the state file's rules for the tenant.
    pub fn new(images_json: &[u8], rules: &Rules<'_>, ns: Option<&Namespace>) -> Protected {
        let mut p = Protected {
            own_namespace: ns
                .filter(|n| n.images())
                .map(|n| n.image_to_daemon("x").trim_end_matches('x').to_string()),
            ..Protected::default()
        };
        let list: Value = serde_json::from_slice(images_json).unwrap_or(Value::Null);
        for image in list.as_array().into_iter().flatten() {
            let Some(id) = image.get("Id").and_then(Value::as_str) else {
                continue;
            };
            p.ids.insert(id.to_string());
            for tag in image
                .get("RepoTags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|t| *t != "<none>:<none>")
            {
                p.existing.insert(key(tag), id.to_string());
            }
        }
        for (reference, record) in &rules.state.tags {
            if record.tenant == rules.owner.tenant.as_str()
                && record.instance == rules.owner.instance
            {
                p.own.insert(key(reference));
            } else {
                p.others.insert(key(reference));
            }
        }
        p
    }

    /// Whether `id` was on the daemon before the request.
    pub fn existed(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// May the tenant make `reference` point at `new_id` (`None`: not known
    /// yet)?
    pub fn check(&self, reference: &str, new_id: Option<&str>) -> Result<(), String> {
        let k = key(reference);
        self.check_namespace(&k)?;
        match self.existing.get(&k) {
            None => Ok(()),
            Some(_) if self.own.contains(&k) => Ok(()),
            Some(current) if Some(current.as_str()) == new_id => Ok(()),
            Some(_) => Err(format!(
                "cistern: {k} is in use on this daemon and is not yours: it cannot be replaced"
            )),
        }
    }

    /// A pull may refresh shared images, not another tenant's tag.
    pub fn check_pull(&self, reference: &str) -> Result<(), String> {
        let k = key(reference);
        self.check_namespace(&k)?;
        if self.others.contains(&k) {
            return Err(format!(
                "cistern: {k} is another tenant's tag: it cannot be pulled over"
            ));
        }
        Ok(())
    }

    fn check_namespace(&self, k: &str) -> Result<(), String> {
        if k.starts_with(&format!("{IMAGE_ROOT}/"))
            && !self
                .own_namespace
                .as_deref()
                .is_some_and(|p| k.starts_with(p))
        {
            return Err(format!(
                "cistern: {k} is in another tenant's image namespace"
            ));
        }
        Ok(())
    }
}

/// Which metadata file an archive entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Manifest,
    Repositories,
}

/// Tags an archive's metadata assigns: `(image ID if known, tags)`.
pub type Assigned = Vec<(Option<String>, Vec<String>)>;

/// Largest metadata entry read (a manifest of a few thousand images).
const MAX_META: u64 = 16 << 20;

/// Reads a `docker save` archive as it streams past.
#[derive(Debug, Default)]
pub struct TarScan {
    stream: TarStream,
    /// The metadata entry being read, and its bytes so far.
    reading: Option<Meta>,
    data: Vec<u8>,
    /// Why the archive was refused; every later feed fails with it.
    failed: Option<String>,
}

impl TarScan {
    /// Feeds the next bytes; the tags of every metadata file completed in
    /// them. `Err` for an archive cistern cannot read.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Assigned, String> {
        let mut found = Vec::new();
        let TarScan {
            stream,
            reading,
            data,
            failed,
        } = self;
        if let Some(why) = failed {
            return Err(why.clone());
        }
        stream.feed(bytes, &mut |event| {
            if failed.is_some() {
                return;
            }
            let result = match event {
                Event::Entry {
                    path, kind, size, ..
                } => match meta(&path) {
                    Some(_) if !kind.is_file() => Err(format!(
                        "cistern: the archive's {path} is not a regular file"
                    )),
                    Some(_) if size > MAX_META => {
                        Err("cistern: the archive's metadata is too large to check".into())
                    }
                    m => {
                        *reading = m;
                        data.clear();
                        Ok(())
                    }
                },
                Event::Data(bytes) if reading.is_some() => {
                    data.extend_from_slice(bytes);
                    Ok(())
                }
                // An empty manifest assigns nothing, but must still parse.
                Event::DataEnd => match reading.take() {
                    Some(m) => assigned(m, data).map(|a| found.extend(a)),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(why) = result {
                *failed = Some(why);
            }
        });
        if failed.is_none() && stream.is_raw() {
            *failed = Some(unreadable(stream.headers()));
        }
        match failed {
            Some(why) => Err(why.clone()),
            None => Ok(found),
        }
    }
}

fn unreadable(headers: u64) -> String {
    if headers == 0 {
        "cistern: the image archive is not an uncompressed tar archive (cistern checks the tags inside; load a `docker save` archive without compression)".into()
    } else {
        "cistern: the image archive is not a valid tar archive".into()
    }
}

fn meta(path: &str) -> Option<Meta> {
    match path {
        "manifest.json" => Some(Meta::Manifest),
        "repositories" => Some(Meta::Repositories),
        _ => None,
    }
}

/// The tags a metadata file assigns.
fn assigned(meta: Meta, data: &[u8]) -> Result<Assigned, String> {
    let bad = |what: &str| format!("cistern: the archive's {what} cannot be read");
    let v: Value = serde_json::from_slice(data).map_err(|_| {
        bad(match meta {
            Meta::Manifest => "manifest.json",
            Meta::Repositories => "repositories file",
        })
    })?;
    Ok(match meta {
        Meta::Manifest => v
            .as_array()
            .ok_or_else(|| bad("manifest.json"))?
            .iter()
            .map(|entry| {
                let id = entry.get("Config").and_then(Value::as_str).map(|c| {
                    let file = c.rsplit('/').next().unwrap_or(c);
                    format!("sha256:{}", file.trim_end_matches(".json"))
                });
                let tags = entry
                    .get("RepoTags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                (id, tags)
            })
            .collect(),
        Meta::Repositories => v
            .as_object()
            .ok_or_else(|| bad("repositories file"))?
            .iter()
            .map(|(repo, tags)| {
                let tags = tags
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(tag, _)| format!("{repo}:{tag}"))
                    .collect();
                (None, tags)
            })
            .collect(),
    })
}

/// A `docker load` request body checked as it streams: each frame is read by
/// a [`TarScan`] before it is passed on; a refused tag ends the body with an
/// error (so the daemon never gets the whole archive) and leaves the reason
/// in `refused` for the client's answer.
pub struct LoadGuard {
    inner: crate::http::ProxyBody,
    scan: TarScan,
    protected: std::sync::Arc<Protected>,
    refused: Refusal,
    /// Why the archive was refused; the body then drains the client.
    failed: Option<String>,
    done: bool,
}

/// Where a [`LoadGuard`] leaves why it cut a body off.
pub type Refusal = std::sync::Arc<std::sync::Mutex<Option<String>>>;

impl LoadGuard {
    pub fn new(
        inner: crate::http::ProxyBody,
        protected: std::sync::Arc<Protected>,
        refused: Refusal,
    ) -> LoadGuard {
        LoadGuard {
            inner,
            scan: TarScan::default(),
            protected,
            refused,
            failed: None,
            done: false,
        }
    }

    fn check(&mut self, data: &[u8]) -> Result<(), String> {
        for (id, tags) in self.scan.feed(data)? {
            for tag in tags {
                self.protected.check(&tag, id.as_deref())?;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LoadGuard {
    type Data = bytes::Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(reason) = self.failed.clone() {
            // Refused: the rest of the client's archive is read and dropped,
            // so the client gets the answer rather than a broken pipe; then
            // the daemon's request ends in an error, before the archive is
            // whole.
            loop {
                match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(_) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(reason.into())));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        if self.done {
            return Poll::Ready(None);
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                if let Err(reason) = self.check(&data) {
                    tracing::info!(target: "cistern::ownership", reason = %reason, "image load refused");
                    if let Ok(mut slot) = self.refused.lock() {
                        *slot = Some(reason.clone());
                    }
                    self.failed = Some(reason);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.failed.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The references a load's answer reports (`Loaded image: app:1`) and the
/// IDs it reports for untagged images (`Loaded image ID: sha256:...`).
pub fn loaded(answer: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut ids = Vec::new();
    for line in answer.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let Some(text) = v.get("stream").and_then(Value::as_str) else {
            continue;
        };
        if let Some(id) = text.trim().strip_prefix("Loaded image ID: ") {
            ids.push(id.to_string());
        } else if let Some(tag) = text.trim().strip_prefix("Loaded image: ") {
            tags.push(tag.to_string());
        }
    }
    (tags, ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::ownership::identity::Tenant;
    use crate::tenancy::ownership::images::{State, TagRecord};
    use crate::tenancy::ownership::labels::Owner;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan_in_pieces(bytes: &[u8], piece: usize) -> Result<Assigned, String> {
        let mut s = TarScan::default();
        let mut all = Vec::new();
        for chunk in bytes.chunks(piece) {
            all.extend(s.feed(chunk)?);
        }
        Ok(all)
    }

    const MANIFEST: &[u8] = br#"[{"Config":"0a1b.json","RepoTags":["app:1","busybox:latest"],"Layers":["l/layer.tar"]}]"#;

    #[test]
    fn tags_are_found_however_the_archive_is_cut() {
        let tar = archive(&[
            ("l/layer.tar", &[7u8; 3000]),
            ("0a1b.json", b"{}"),
            ("manifest.json", MANIFEST),
            ("repositories", br#"{"app":{"1":"abc"}}"#),
        ]);
        for piece in [1, 7, 512, 1000, tar.len()] {
            let found = scan_in_pieces(&tar, piece).unwrap();
            assert_eq!(
                found,
                vec![
                    (
                        Some("sha256:0a1b".to_string()),
                        vec!["app:1".to_string(), "busybox:latest".to_string()]
                    ),
                    (None, vec!["app:1".to_string()]),
                ],
                "pieces of {piece}"
            );
        }
    }

    /// One entry with a raw name (the `tar` builder refuses `..`), padded.
    fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name.as_bytes()[..n]);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn hidden_manifests_and_odd_archives_are_caught() {
        // A path the daemon cleans to manifest.json.
        let tar = raw_entry("x/../manifest.json", tar::EntryType::Regular, MANIFEST);
        assert_eq!(scan_in_pieces(&tar, 100).unwrap().len(), 1);
        // A link named manifest.json.
        let link = raw_entry("manifest.json", tar::EntryType::Symlink, b"");
        assert!(scan_in_pieces(&link, 512)
            .unwrap_err()
            .contains("not a regular file"));
        // Compressed archives cannot be checked.
        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3].repeat(60);
        assert!(scan_in_pieces(&gz, 512)
            .unwrap_err()
            .contains("not an uncompressed tar"));
        // A GNU long name, and a PAX path, that say manifest.json.
        let long = format!("{}/../manifest.json\0", "d".repeat(120));
        let mut gnu = raw_entry(
            "././@LongLink",
            tar::EntryType::GNULongName,
            long.as_bytes(),
        );
        gnu.extend(raw_entry("ddd", tar::EntryType::Regular, MANIFEST));
        assert_eq!(scan_in_pieces(&gnu, 64).unwrap().len(), 1);
        let record = "29 path=./x/../manifest.json\n";
        let mut pax = raw_entry("PaxHeader", tar::EntryType::XHeader, record.as_bytes());
        pax.extend(raw_entry(
            "innocent.json",
            tar::EntryType::Regular,
            MANIFEST,
        ));
        assert_eq!(scan_in_pieces(&pax, 33).unwrap().len(), 1);
    }

    #[test]
    fn a_manifest_hidden_by_a_pax_size_record_is_still_found() {
        // The ustar header says the layer has 1024 bytes, its PAX record
        // says 0 as the daemon reads it: the "layer data" is the next entry,
        // a manifest.json.
        let record = "10 size=0\n";
        let mut tar = raw_entry("PaxHeader", tar::EntryType::XHeader, record.as_bytes());
        let mut layer = raw_entry("layer.tar", tar::EntryType::Regular, &[0u8; 1024]);
        let hidden = raw_entry("manifest.json", tar::EntryType::Regular, MANIFEST);
        layer.truncate(512);
        tar.extend(layer);
        tar.extend(&hidden);
        tar.resize(tar.len() + 1024, 0);
        let found = scan_in_pieces(&tar, 100).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn rules_protect_others_tags_base_images_and_namespaces() {
        let alice = Owner::new(Tenant::new("alice").unwrap(), "default");
        let mut state = State::default();
        state.tags.insert(
            "mine:1".into(),
            TagRecord {
                tenant: "alice".into(),
                instance: "default".into(),
                image: "sha256:m".into(),
            },
        );
        state.tags.insert(
            "bobs:1".into(),
            TagRecord {
                tenant: "bob".into(),
                instance: "default".into(),
                image: "sha256:b".into(),
            },
        );
        let rules = Rules {
            state: &state,
            owner: &alice,
        };
        let images = br#"[{"Id":"sha256:base","RepoTags":["busybox:latest"]},{"Id":"sha256:m","RepoTags":["mine:1"]},{"Id":"sha256:b","RepoTags":["bobs:1"]}]"#;
        let ns = Namespace::of("alice");
        let p = Protected::new(images, &rules, Some(&ns));
        p.check("new:1", Some("sha256:x")).unwrap();
        p.check("mine:1", Some("sha256:x")).unwrap();
        p.check("docker.io/library/busybox:latest", Some("sha256:base"))
            .unwrap();
        assert!(p
            .check("busybox", Some("sha256:evil"))
            .unwrap_err()
            .contains("not yours"));
        assert!(p.check("bobs:1", None).is_err());
        assert!(p
            .check("cistern-ns/bob/app:1", None)
            .unwrap_err()
            .contains("another tenant"));
        p.check("cistern-ns/alice/app:1", None).unwrap();
        p.check_pull("busybox:latest").unwrap();
        assert!(p.check_pull("bobs:1").is_err());
        assert!(p.existed("sha256:base") && !p.existed("sha256:x"));
    }
}
