//! Tar streams of namespaced tenants: build contexts whose `FROM` lines name
//! the tenant's own images, and load archives whose tags go to its namespace.
//!
//! A tenant's tags live under `cistern-ns/<tenant>/` on the daemon
//! ([`super::names`]), but a Dockerfile names them as the tenant does
//! (`FROM app-base:1`), and the daemon resolves `FROM` itself. So for a
//! namespaced tenant with tags of its own, the Dockerfile inside the build
//! context is rewritten as the context streams to the daemon:
//! [`rewrite_dockerfile`] replaces the image of a `FROM` line, and of a
//! `COPY --from=`, that names one of the tenant's tags with the daemon's name
//! for it; build stage names, `ARG`-substituted images (`FROM $BASE`) and
//! everything else are left alone. The Dockerfile entry (named by the build's
//! `dockerfile` parameter, default `Dockerfile`, path cleaned as the daemon
//! cleans it) is held back while it arrives, rewritten and sent on with a
//! corrected tar header; every other byte passes through as it came
//! ([`ContextRewrite`]). A context that is not a plain tar (compressed) or a
//! Dockerfile over 16 MiB passes unchanged.
//!
//! The same stream rewriting gives a `docker load` archive's tags (in
//! `manifest.json` and `repositories`) the tenant's image namespace
//! ([`Entry::LoadTags`]), before [`super::image_load`] checks them.
//!
//! I/O-free.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use super::image_load::key;
use super::names::Namespace;
use super::tar_stream::{clean, Event, TarStream};
use crate::http::{BoxError, ProxyBody};

/// Largest entry held back for rewriting (a Dockerfile, a load manifest).
const MAX_ENTRY: u64 = 16 << 20;

/// Which entry of a tar stream is rewritten, and how.
pub enum Entry {
    /// A build context's Dockerfile (its cleaned path): `FROM` lines naming
    /// the tenant's images ([`rewrite_dockerfile`]).
    Dockerfile {
        path: String,
        images: HashMap<String, String>,
    },
    /// A `docker load` archive's `manifest.json` and `repositories`: the
    /// tags it brings go to the tenant's image namespace.
    LoadTags(Namespace),
    /// A `docker save` archive coming back: the tenant's tags as it named
    /// them.
    SaveTags(Namespace),
}

impl Entry {
    fn matches(&self, path: &str) -> bool {
        match self {
            Entry::Dockerfile { path: p, .. } => path == p,
            Entry::LoadTags(_) | Entry::SaveTags(_) => {
                path == "manifest.json" || path == "repositories"
            }
        }
    }

    fn rewrite(&self, path: &str, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            Entry::Dockerfile { images, .. } => std::str::from_utf8(data)
                .ok()
                .and_then(|text| rewrite_dockerfile(text, images))
                .map(String::into_bytes),
            Entry::LoadTags(ns) | Entry::SaveTags(ns) => {
                let map_name = |s: &str| match self {
                    Entry::SaveTags(_) => ns.image_to_client(s),
                    _ => ns.image_to_daemon(s),
                };
                let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
                if path == "manifest.json" {
                    for image in v.as_array_mut()? {
                        if let Some(serde_json::Value::Array(tags)) = image.get_mut("RepoTags") {
                            for t in tags.iter_mut() {
                                if let serde_json::Value::String(s) = t {
                                    *s = map_name(s);
                                }
                            }
                        }
                    }
                } else {
                    let repos = std::mem::take(v.as_object_mut()?);
                    let map = v.as_object_mut()?;
                    for (repo, tags) in repos {
                        map.insert(map_name(&repo), tags);
                    }
                }
                serde_json::to_vec(&v).ok()
            }
        }
    }
}

/// A Dockerfile with the tenant's images named as the daemon knows them;
/// `None` when nothing changes. `images` maps [`key`]s of the tenant's
/// references to daemon references.
pub fn rewrite_dockerfile(text: &str, images: &HashMap<String, String>) -> Option<String> {
    let mut stages: HashSet<String> = HashSet::new();
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 64);
    let mut continued = false;
    for line in text.split_inclusive('\n') {
        let was_continued = continued;
        let body = line.trim_end_matches(['\n', '\r']);
        continued = body.ends_with('\\');
        if was_continued || continued {
            out.push_str(line);
            continue;
        }
        let trimmed = body.trim_start();
        let indent = &body[..body.len() - trimmed.len()];
        let mut words: Vec<&str> = trimmed.split_whitespace().collect();
        let instruction = words.first().map(|w| w.to_ascii_uppercase());
        let mut replaced: Option<String> = None;
        match instruction.as_deref() {
            Some("FROM") => {
                let image_at = words
                    .iter()
                    .skip(1)
                    .position(|w| !w.starts_with("--"))
                    .map(|i| i + 1);
                if let Some(i) = image_at {
                    let image = words[i];
                    if let Some(daemon) = lookup(image, &stages, images) {
                        words[i] = daemon;
                        replaced = Some(words.join(" "));
                    }
                    if let (Some(as_kw), Some(name)) = (words.get(i + 1), words.get(i + 2)) {
                        if as_kw.eq_ignore_ascii_case("as") {
                            stages.insert(name.to_ascii_lowercase());
                        }
                    }
                }
            }
            Some("COPY") | Some("ADD") => {
                let mut any = false;
                let mapped: Vec<String> = words
                    .iter()
                    .map(|w| match w.strip_prefix("--from=") {
                        Some(from) => match lookup(from, &stages, images) {
                            Some(daemon) => {
                                any = true;
                                format!("--from={daemon}")
                            }
                            None => w.to_string(),
                        },
                        None => w.to_string(),
                    })
                    .collect();
                if any {
                    replaced = Some(mapped.join(" "));
                }
            }
            _ => {}
        }
        match replaced {
            Some(new) => {
                changed = true;
                out.push_str(indent);
                out.push_str(&new);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    changed.then_some(out)
}

fn lookup<'a>(
    image: &str,
    stages: &HashSet<String>,
    images: &'a HashMap<String, String>,
) -> Option<&'a str> {
    if image.contains('$') || stages.contains(&image.to_ascii_lowercase()) {
        return None;
    }
    images.get(&key(image)).map(String::as_str)
}

/// An entry held back to be rewritten: its header block and data so far.
struct Held {
    header: Vec<u8>,
    path: String,
    data: Vec<u8>,
}

/// A tar stream to the daemon (a build context, a load archive) with one
/// kind of entry rewritten ([`Entry`]).
pub struct ContextRewrite {
    inner: ProxyBody,
    entry: Entry,
    stream: TarStream,
    /// Extended-header entries (PAX, GNU long names) waiting for the header
    /// they describe.
    extended: Vec<u8>,
    held: Option<Held>,
    /// The held entry went out rewritten, with padding of its own: the
    /// original padding is dropped.
    skip_padding: bool,
}

impl ContextRewrite {
    /// A build context whose Dockerfile (named by the build's `dockerfile`
    /// parameter) gets the tenant's images.
    pub fn build(inner: ProxyBody, dockerfile: &str, images: HashMap<String, String>) -> Self {
        Self::new(
            inner,
            Entry::Dockerfile {
                path: clean(dockerfile),
                images,
            },
        )
    }

    pub fn new(inner: ProxyBody, entry: Entry) -> Self {
        ContextRewrite {
            inner,
            entry,
            stream: TarStream::default(),
            extended: Vec::new(),
            held: None,
            skip_padding: false,
        }
    }

    /// Processes a frame's bytes; what to send on now.
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let ContextRewrite {
            entry,
            stream,
            extended,
            held,
            skip_padding,
            ..
        } = self;
        stream.feed(bytes, &mut |event| match event {
            Event::Extended(b) => extended.extend_from_slice(b),
            Event::Entry {
                block,
                path,
                kind,
                size,
                pax_size,
            } => {
                *skip_padding = false;
                // A size from a PAX record would still be there after the
                // header's is corrected: such an entry passes as it is.
                if kind.is_file() && !pax_size && size <= MAX_ENTRY && entry.matches(&path) {
                    *held = Some(Held {
                        header: block.to_vec(),
                        path,
                        data: Vec::new(),
                    });
                } else {
                    out.extend_from_slice(&std::mem::take(extended));
                    out.extend_from_slice(block);
                }
            }
            Event::Data(b) => match held {
                Some(h) => h.data.extend_from_slice(b),
                None => out.extend_from_slice(b),
            },
            Event::DataEnd => {
                if let Some(h) = held.take() {
                    out.extend_from_slice(&std::mem::take(extended));
                    *skip_padding = emit(entry, h, &mut out);
                }
            }
            Event::Padding(b) => {
                if !*skip_padding {
                    out.extend_from_slice(b);
                }
            }
            Event::Zero(b) | Event::Raw(b) => {
                out.extend_from_slice(&std::mem::take(extended));
                out.extend_from_slice(b);
            }
        });
        out.freeze()
    }

    /// What is still held when the stream ends (a truncated archive), as
    /// it came.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.extended);
        if let Some(h) = self.held.take() {
            rest.extend_from_slice(&h.header);
            rest.extend_from_slice(&h.data);
        }
        rest
    }
}

/// Sends a held entry on, rewritten (with its own padding: `true`) or as it
/// came (its padding follows: `false`).
fn emit(entry: &Entry, held: Held, out: &mut BytesMut) -> bool {
    match entry.rewrite(&held.path, &held.data) {
        Some(new) => {
            let mut h = tar::Header::from_byte_slice(&held.header).clone();
            h.set_size(new.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&new);
            let padding = (512 - new.len() % 512) % 512;
            out.resize(out.len() + padding, 0);
            tracing::debug!(target: "cistern::ownership", entry = %held.path, "image names mapped to the tenant's image namespace");
            true
        }
        None => {
            out.extend_from_slice(&held.header);
            out.extend_from_slice(&held.data);
            false
        }
    }
}

impl Body for ContextRewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = self.feed(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    let rest = self.rest();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn images() -> HashMap<String, String> {
        HashMap::from([
            ("base:1".to_string(), "cistern-ns/alice/base:1".to_string()),
            (
                "localhost:5999/tools:latest".to_string(),
                "cistern-ns/alice/localhost__5999/tools:latest".to_string(),
            ),
        ])
    }

    #[test]
    fn from_lines_naming_own_images_are_mapped() {
        let text = "# syntax comment\nFROM --platform=linux/amd64 base:1 AS build\nRUN make\nfrom busybox\nCOPY --from=build /out /out\nCOPY --from=localhost:5999/tools /bin/t /t\nFROM build\nFROM $BASE\nFROM base:1 \\\n  AS x\n";
        let out = rewrite_dockerfile(text, &images()).unwrap();
        assert_eq!(
            out,
            "# syntax comment\nFROM --platform=linux/amd64 cistern-ns/alice/base:1 AS build\nRUN make\nfrom busybox\nCOPY --from=build /out /out\nCOPY --from=cistern-ns/alice/localhost__5999/tools:latest /bin/t /t\nFROM build\nFROM $BASE\nFROM base:1 \\\n  AS x\n"
        );
        assert_eq!(rewrite_dockerfile("FROM busybox\n", &images()), None);
    }

    fn context(dockerfile_name: &str, dockerfile: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("a.txt", "x".repeat(700)),
            (dockerfile_name, dockerfile.to_string()),
            ("z.txt", "tail".to_string()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    async fn through(bytes: Vec<u8>, dockerfile: &str, piece: usize) -> Vec<u8> {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = bytes
            .chunks(piece)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner =
            http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
        let body = ContextRewrite::build(inner, dockerfile, images());
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    fn entries(bytes: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().display().to_string();
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                (p, s)
            })
            .collect()
    }

    #[tokio::test]
    async fn load_archives_get_their_tags_namespaced() {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("0a1b.json", "{}".to_string()),
            (
                "manifest.json",
                r#"[{"Config":"0a1b.json","RepoTags":["app:1"],"Layers":[]}]"#.to_string(),
            ),
            ("repositories", r#"{"app":{"1":"abc"}}"#.to_string()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = bytes
            .chunks(100)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner =
            http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
        let body = ContextRewrite::new(inner, Entry::LoadTags(Namespace::of("alice")));
        let out = body.collect().await.unwrap().to_bytes().to_vec();
        let e = entries(&out);
        assert_eq!(
            e[1].1,
            r#"[{"Config":"0a1b.json","Layers":[],"RepoTags":["cistern-ns/alice/app:1"]}]"#
        );
        assert_eq!(e[2].1, r#"{"cistern-ns/alice/app":{"1":"abc"}}"#);
    }

    #[tokio::test]
    async fn the_dockerfile_entry_is_rewritten_in_the_stream() {
        let ctx = context("sub/Dockerfile.ci", "FROM base:1\nRUN true\n");
        for piece in [1, 100, 512, 4096] {
            let out = through(ctx.clone(), "./sub/Dockerfile.ci", piece).await;
            let e = entries(&out);
            assert_eq!(e[0], ("a.txt".into(), "x".repeat(700)));
            assert_eq!(
                e[1].1, "FROM cistern-ns/alice/base:1\nRUN true\n",
                "pieces of {piece}"
            );
            assert_eq!(e[2], ("z.txt".into(), "tail".into()));
        }
        // Another Dockerfile name, or nothing to map: the bytes pass as they came.
        let out = through(ctx.clone(), "Dockerfile", 300).await;
        assert_eq!(out, ctx);
        let plain = context("Dockerfile", "FROM busybox\n");
        assert_eq!(through(plain.clone(), "Dockerfile", 77).await, plain);
        // Not a tar (compressed): unchanged.
        let gz = [0x1f, 0x8b, 8, 0].repeat(300);
        assert_eq!(through(gz.clone(), "Dockerfile", 100).await, gz);
    }
}
