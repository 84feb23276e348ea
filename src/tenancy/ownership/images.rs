//! Images: who built what, kept in a state file.
//!
//! Images cannot be labelled after the fact, so cistern records ownership in
//! `<state_dir>/images.json`: the image IDs a tenant **built** (`POST /build`,
//! read from the `{"aux":{"ID":"sha256:..."}}` message of the response stream)
//! or **committed**, and the **tags** it created (`POST /images/{name}/tag`,
//! build `t=`, commit `repo`/`tag`). Every image the file does not name is a
//! **base image**, owned by nobody.
//!
//! The rules ([`Rules`]):
//!
//! * A tenant sees (`images/json`, `system/df`, inspect, history, save) and
//!   uses (container create) base images and its own; another tenant's image
//!   is "missing" (`No such image: <name>`, 404, dockerd's wording), and so
//!   are its tags in listings.
//! * Only the owner may delete (`DELETE /images/{name}`), tag from or push an
//!   image it owns. A tag a tenant created on a base image may be removed by
//!   that tenant (that only untags).
//! * Base images, and tags that are not the tenant's, cannot be deleted or
//!   moved through cistern: `rmi busybox`, `tag mine busybox:latest` and
//!   `build -t busybox:latest` are refused (403).
//!
//! The file is a [`StateFile`] (atomic writes under a lock, read-modify-write).
//! It is re-read once per image request: it is small and image requests are
//! rare.
//!
//! Not covered yet: `docker load` and `docker import` can also create or move
//! tags; pulls are shared (a pulled image is a base image).

use std::collections::BTreeMap;
use std::path::Path;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::daemon::client::{self as daemon, Answer};
use crate::daemon::error::DockerError;

use super::labels::Owner;
use super::names::Namespace;
use super::resolve::hidden;
pub use super::state_file::{StateFile, StoreError};

/// Where namespaced tenants' tags live (see [`super::names`]).
const IMAGE_NAMESPACES: &str = "cistern-ns/";

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub images: BTreeMap<String, Record>,
    #[serde(default)]
    pub tags: BTreeMap<String, TagRecord>,
}

/// An image a tenant built or committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub tenant: String,
    pub instance: String,
    /// `build` or `commit`.
    pub how: String,
}

/// A tag a tenant created, and the image it pointed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub tenant: String,
    pub instance: String,
    pub image: String,
}

fn is(owner: &Owner, tenant: &str, instance: &str) -> bool {
    owner.tenant.as_str() == tenant && owner.instance == instance
}

/// A reference as cistern records tags: `name:latest` when no tag or digest
/// is given. (No registry-host normalisation: a differently spelt reference
/// only ever fails closed, as "not yours".)
pub fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// The familiar form of `name` among an image's `RepoTags` (as the daemon
/// lists them): the exact entry, else the one entry `name` ends with after a
/// `/` (the daemon shortens only its default registry's names), else
/// [`normalize`]d `name`.
pub fn familiar(name: &str, repo_tags: &[&str]) -> String {
    let name = normalize(name);
    if repo_tags.contains(&name.as_str()) {
        return name;
    }
    let mut ends = repo_tags
        .iter()
        .filter(|t| name.ends_with(&format!("/{t}")));
    match (ends.next(), ends.next()) {
        (Some(t), None) => (*t).to_string(),
        _ => name,
    }
}

/// A `name:tag` reference split into repository and tag (`latest` when
/// none is given).
pub fn split(reference: &str) -> (&str, &str) {
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last..].rfind(':') {
        Some(i) => (&reference[..last + i], &reference[last + i + 1..]),
        None => (reference, "latest"),
    }
}

/// `repo` and `tag` query values as one reference.
pub fn join(repo: &str, tag: &str) -> String {
    if tag.is_empty() {
        normalize(repo)
    } else {
        format!("{repo}:{tag}")
    }
}

/// An image as the daemon resolves a name: its ID (`None` when missing) and
/// the name in the daemon's familiar form (one of its `RepoTags`), which is
/// how the state file records tags: clients send `docker tag` targets fully
/// qualified and `rmi` names as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub id: Option<String>,
    pub name: String,
}

impl ImageRef {
    /// What an empty name resolves to, without asking.
    pub fn nothing() -> ImageRef {
        ImageRef {
            id: None,
            name: String::new(),
        }
    }

    /// Reads the answer to `GET /images/{name}/json`. `Err` when the daemon
    /// failed (5xx); any other refusal is a missing image.
    pub fn from_answer(name: &str, answer: &Answer) -> Result<ImageRef, DockerError> {
        if answer.status.is_server_error() {
            return Err(DockerError::upstream(format!(
                "the Docker daemon failed to look up an image: {}",
                answer.message()
            )));
        }
        if answer.status != StatusCode::OK {
            return Ok(ImageRef {
                id: None,
                name: normalize(name),
            });
        }
        let v = daemon::json(answer)?;
        let tags: Vec<&str> = v
            .get("RepoTags")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        Ok(ImageRef {
            id: v.get("Id").and_then(|v| v.as_str()).map(str::to_string),
            name: familiar(name, &tags),
        })
    }
}

/// An image a tenant names, as found on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnImage {
    /// Its ID; `None` when missing.
    pub id: Option<String>,
    /// The daemon's familiar name for it (see [`ImageRef`]).
    pub name: String,
    /// Found in the tenant's image namespace.
    pub namespaced: bool,
}

impl OwnImage {
    pub fn new(found: ImageRef, namespaced: bool) -> OwnImage {
        OwnImage {
            id: found.id,
            name: found.name,
            namespaced,
        }
    }
}

/// The name to try first for an image reference a tenant gives: its tag in
/// the tenant's image namespace (`ns`: the namespace when it covers images),
/// when that differs from the name as written. Found, it wins; missing, the name as written
/// (base images, IDs, digests) is looked up.
pub fn namespaced_image(ns: Option<&Namespace>, name: &str) -> Option<String> {
    let mapped = ns?.image_to_daemon(name);
    (mapped != name).then_some(mapped)
}

/// The repository a tenant's new tag goes to (namespaced when on).
pub fn new_repo(ns: Option<&Namespace>, repo: &str) -> String {
    ns.map_or_else(|| repo.to_string(), |ns| ns.image_to_daemon(repo))
}

/// The image rules over one snapshot of the state.
pub struct Rules<'a> {
    pub state: &'a State,
    pub owner: &'a Owner,
}

impl Rules<'_> {
    /// Who owns an image: `None` for a base image.
    fn image_owner(&self, id: &str) -> Option<&Record> {
        self.state.images.get(id)
    }

    fn own_image(&self, id: &str) -> bool {
        self.image_owner(id)
            .is_some_and(|r| is(self.owner, &r.tenant, &r.instance))
    }

    fn own_tag(&self, reference: &str) -> bool {
        self.state
            .tags
            .get(&normalize(reference))
            .is_some_and(|t| is(self.owner, &t.tenant, &t.instance))
    }

    /// Base images and the tenant's own.
    pub fn visible(&self, id: &str) -> bool {
        self.image_owner(id).is_none() || self.own_image(id)
    }

    /// Tags nobody recorded and the tenant's own; never a tag in another
    /// tenant's image namespace (`cistern-ns/<other>/...`, recorded or not).
    pub fn tag_visible(&self, reference: &str) -> bool {
        if reference.starts_with(IMAGE_NAMESPACES) {
            let own = self
                .owner
                .namespace
                .as_ref()
                .is_some_and(|ns| ns.is_own_image(reference));
            if !own {
                return false;
            }
        }
        match self.state.tags.get(&normalize(reference)) {
            None => true,
            Some(t) => is(self.owner, &t.tenant, &t.instance),
        }
    }

    /// Inspect, history, save, create a container from, tag from, push: the
    /// image `name` resolved to `id` (`None`: the daemon does not know it and
    /// answers for itself).
    pub fn check_use(&self, name: &str, id: Option<&str>) -> Result<(), DockerError> {
        if !self.tag_visible(name) {
            return Err(no_such_image(name));
        }
        match id {
            Some(id) if !self.visible(id) && !self.own_tag(name) => Err(no_such_image(name)),
            _ => Ok(()),
        }
    }

    /// `DELETE /images/{name}`.
    pub fn check_delete(&self, name: &str, id: Option<&str>) -> Result<(), DockerError> {
        let Some(id) = id else { return Ok(()) };
        if !self.visible(id) && !self.own_tag(name) {
            return Err(no_such_image(name));
        }
        if self.own_image(id) || self.own_tag(name) {
            return Ok(());
        }
        Err(DockerError::client(
            StatusCode::FORBIDDEN,
            format!("cistern: {name} is a base image: base images cannot be deleted or retagged through cistern"),
        ))
    }

    /// A tag about to be set (`tag`, build `t`, commit `repo`): free, the
    /// tenant's own, or on an image the tenant owns. `current` is the image
    /// the reference names now, if any.
    pub fn check_new_tag(&self, reference: &str, current: Option<&str>) -> Result<(), DockerError> {
        let Some(current) = current else {
            return Ok(());
        };
        let recorded_other = self
            .state
            .tags
            .get(&normalize(reference))
            .is_some_and(|t| !is(self.owner, &t.tenant, &t.instance));
        if self.own_tag(reference) || (self.own_image(current) && !recorded_other) {
            return Ok(());
        }
        if !self.visible(current) || recorded_other {
            // Someone else's: say no more than that the name is taken.
            return Err(DockerError::client(
                StatusCode::CONFLICT,
                format!("cistern: the tag {reference} is in use by another tenant"),
            ));
        }
        Err(DockerError::client(
            StatusCode::FORBIDDEN,
            format!("cistern: {reference} is a base image: base images cannot be deleted or retagged through cistern"),
        ))
    }
}

/// dockerd's answer for a missing image.
pub fn no_such_image(name: &str) -> DockerError {
    hidden(
        StatusCode::NOT_FOUND,
        format!("No such image: {}", normalize(name)),
    )
}

/// What a successful image request changes in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An image built or committed, with the tags it got.
    Image {
        id: String,
        how: &'static str,
        tags: Vec<String>,
    },
    /// A tag created on `image`.
    Tag { reference: String, image: String },
    /// A `DELETE /images` answer: references untagged, images deleted.
    Deleted {
        untagged: Vec<String>,
        deleted: Vec<String>,
    },
}

impl Change {
    /// Reads `[{"Untagged": ...}, {"Deleted": ...}]`.
    pub fn from_delete_answer(body: &[u8]) -> Option<Change> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let items = v.as_array()?;
        let get = |key: &str| -> Vec<String> {
            items
                .iter()
                .filter_map(|i| i.get(key).and_then(|s| s.as_str()).map(str::to_string))
                .collect()
        };
        Some(Change::Deleted {
            untagged: get("Untagged"),
            deleted: get("Deleted"),
        })
    }

    /// Applies the change for `owner`.
    pub fn apply(&self, state: &mut State, owner: &Owner) {
        let tenant = owner.tenant.as_str().to_string();
        match self {
            Change::Image { id, how, tags } => {
                // An identical build elsewhere yields the same ID (layer
                // cache): the first owner keeps it; the tags are still this
                // tenant's.
                state.images.entry(id.clone()).or_insert_with(|| Record {
                    tenant: tenant.clone(),
                    instance: owner.instance.clone(),
                    how: (*how).to_string(),
                });
                for t in tags {
                    state.tags.insert(
                        normalize(t),
                        TagRecord {
                            tenant: tenant.clone(),
                            instance: owner.instance.clone(),
                            image: id.clone(),
                        },
                    );
                }
            }
            Change::Tag { reference, image } => {
                state.tags.insert(
                    normalize(reference),
                    TagRecord {
                        tenant,
                        instance: owner.instance.clone(),
                        image: image.clone(),
                    },
                );
            }
            Change::Deleted { untagged, deleted } => {
                for t in untagged {
                    state.tags.remove(&normalize(t));
                }
                for id in deleted {
                    state.images.remove(id);
                    state.tags.retain(|_, t| &t.image != id);
                }
            }
        }
    }
}

/// The image state file of one state directory (`images.json`).
pub type Store = StateFile<State>;

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        StateFile::open(state_dir, "images")
    }

    /// The state, read off the async workers.
    pub async fn state(&self) -> Result<State, DockerError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|err| DockerError::internal(format!("state file task: {err}")))?
            .map_err(DockerError::from)
    }

    /// Records `change` for `owner`, off the async workers. The request it
    /// follows succeeded on the daemon, so a failure is logged, not answered.
    pub async fn record(&self, owner: &Owner, change: Change) {
        let store = self.clone();
        let owner = owner.clone();
        let done =
            tokio::task::spawn_blocking(move || store.update(|s| change.apply(s, &owner))).await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::error!(target: "cistern::ownership", error = %err, "cannot record image ownership")
            }
            Err(err) => {
                tracing::error!(target: "cistern::ownership", error = %err, "cannot record image ownership")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::ownership::identity::Tenant;

    fn owner(t: &str) -> Owner {
        Owner::new(Tenant::new(t).unwrap(), "default")
    }

    fn state() -> State {
        let mut s = State::default();
        Change::Image {
            id: "sha256:alices".into(),
            how: "build",
            tags: vec!["alice/app".into()],
        }
        .apply(&mut s, &owner("alice"));
        Change::Tag {
            reference: "bob/bb:1".into(),
            image: "sha256:base".into(),
        }
        .apply(&mut s, &owner("bob"));
        s
    }

    #[test]
    fn base_images_are_shared_own_images_private() {
        let s = state();
        let bob = owner("bob");
        let rules = Rules {
            state: &s,
            owner: &bob,
        };
        assert!(rules.visible("sha256:base"));
        assert!(!rules.visible("sha256:alices"));
        assert!(!rules.tag_visible("alice/app:latest"));
        assert!(rules.tag_visible("busybox:latest"));
        rules.check_use("busybox", Some("sha256:base")).unwrap();
        let err = rules
            .check_use("alice/app", Some("sha256:alices"))
            .unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (StatusCode::NOT_FOUND, "No such image: alice/app:latest")
        );
    }

    #[test]
    fn only_owners_delete_and_nobody_deletes_base_images() {
        let s = state();
        let (alice, bob) = (owner("alice"), owner("bob"));
        let a = Rules {
            state: &s,
            owner: &alice,
        };
        let b = Rules {
            state: &s,
            owner: &bob,
        };
        a.check_delete("alice/app", Some("sha256:alices")).unwrap();
        assert_eq!(
            b.check_delete("alice/app", Some("sha256:alices"))
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            a.check_delete("busybox", Some("sha256:base"))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        // Bob's own tag on a base image: removing it only untags.
        b.check_delete("bob/bb:1", Some("sha256:base")).unwrap();
        a.check_delete("ghost", None).unwrap();
    }

    #[test]
    fn tags_cannot_move_base_or_foreign_references() {
        let s = state();
        let (alice, bob) = (owner("alice"), owner("bob"));
        let a = Rules {
            state: &s,
            owner: &alice,
        };
        let b = Rules {
            state: &s,
            owner: &bob,
        };
        a.check_new_tag("alice/new:1", None).unwrap();
        a.check_new_tag("alice/app", Some("sha256:alices")).unwrap();
        assert_eq!(
            a.check_new_tag("busybox:latest", Some("sha256:base"))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            b.check_new_tag("alice/app:latest", Some("sha256:alices"))
                .unwrap_err()
                .status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            a.check_new_tag("bob/bb:1", Some("sha256:base"))
                .unwrap_err()
                .status,
            StatusCode::CONFLICT
        );
        b.check_new_tag("bob/bb:1", Some("sha256:base")).unwrap();
    }

    #[test]
    fn delete_answers_update_the_state() {
        let mut s = state();
        let change = Change::from_delete_answer(
            br#"[{"Untagged":"alice/app:latest"},{"Deleted":"sha256:alices"},{"Deleted":"sha256:layer"}]"#,
        )
        .unwrap();
        change.apply(&mut s, &owner("alice"));
        assert!(s.images.is_empty());
        assert_eq!(s.tags.keys().collect::<Vec<_>>(), ["bob/bb:1"]);
    }

    fn inspect(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    const BUSYBOX: &str = r#"{"Id":"sha256:base","RepoTags":["busybox:latest","busybox:1"]}"#;
    const ALICES: &str = r#"{"Id":"sha256:alices","RepoTags":["alice/app:latest"]}"#;

    #[test]
    fn image_inspects_give_the_id_and_the_familiar_name() {
        for name in ["busybox", "busybox:latest", "docker.io/library/busybox"] {
            assert_eq!(
                ImageRef::from_answer(name, &inspect(200, BUSYBOX)).unwrap(),
                ImageRef {
                    id: Some("sha256:base".into()),
                    name: "busybox:latest".into()
                },
                "{name}"
            );
        }
        let missing = ImageRef::from_answer(
            "nope",
            &inspect(404, r#"{"message":"No such image: nope:latest"}"#),
        );
        assert_eq!(
            missing.unwrap(),
            ImageRef {
                id: None,
                name: "nope:latest".into()
            }
        );
        let failed =
            ImageRef::from_answer("x", &inspect(500, r#"{"message":"boom"}"#)).unwrap_err();
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
        assert!(failed.message.ends_with("boom"), "{}", failed.message);
    }

    #[test]
    fn shared_images_are_everyones_own_images_their_owners() {
        let s = state();
        let found = |json: &str, name: &str| {
            OwnImage::new(
                ImageRef::from_answer(name, &inspect(200, json)).unwrap(),
                false,
            )
        };
        let check = |tenant: &str, image: &OwnImage| {
            Rules {
                state: &s,
                owner: &owner(tenant),
            }
            .check_use(&image.name, image.id.as_deref())
        };
        let busybox = found(BUSYBOX, "busybox");
        assert!(check("alice", &busybox).is_ok());
        assert!(check("bob", &busybox).is_ok());
        let app = found(ALICES, "alice/app");
        assert!(check("alice", &app).is_ok());
        let err = check("bob", &app).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (StatusCode::NOT_FOUND, "No such image: alice/app:latest")
        );
    }

    #[test]
    fn a_namespaced_tenants_images_are_looked_up_in_its_namespace_first() {
        let ns = Namespace::of("alice");
        assert_eq!(
            namespaced_image(Some(&ns), "app:1").as_deref(),
            Some("cistern-ns/alice/app:1")
        );
        assert_eq!(namespaced_image(None, "app:1"), None);
        // Digests are global: looked up as written only.
        let digest = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(namespaced_image(Some(&ns), &digest), None);
        assert_eq!(new_repo(Some(&ns), "app"), "cistern-ns/alice/app");
        assert_eq!(new_repo(None, "app"), "app");
    }

    #[test]
    fn references_get_latest() {
        assert_eq!(normalize("busybox"), "busybox:latest");
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize("x:1"), "x:1");
        assert_eq!(normalize("x@sha256:ab"), "x@sha256:ab");
        assert_eq!(join("x", ""), "x:latest");
        assert_eq!(
            familiar("registry.test/library/x:1", &["x:1", "y:2"]),
            "x:1"
        );
        assert_eq!(familiar("x", &["x:latest"]), "x:latest");
        assert_eq!(
            familiar("other.test/x:1", &["other.test/x:1", "x:1"]),
            "other.test/x:1"
        );
        assert_eq!(familiar("sha256:abc", &["x:1"]), "sha256:abc");
        assert_eq!(join("x", "2"), "x:2");
    }

    #[test]
    fn the_store_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("state"));
        assert_eq!(store.load().unwrap(), State::default());
        store
            .update(|s| {
                Change::Image {
                    id: "sha256:x".into(),
                    how: "build",
                    tags: vec![],
                }
                .apply(s, &owner("alice"))
            })
            .unwrap();
        let again = Store::new(&dir.path().join("state")).load().unwrap();
        assert_eq!(again.images["sha256:x"].tenant, "alice");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

/// Finds the image ID in a build response stream (`{"aux":{"ID":"sha256:..."}}`
/// messages, one JSON object per line) without keeping more than one line;
/// a line longer than [`AuxScanner::MAX_LINE`] is skipped (the aux line is
/// short). A quiet build (`q=1`) sends no aux message, only
/// `{"stream":"sha256:...\n"}`; that form is accepted only then, when the
/// daemon suppresses every other output (so `RUN echo sha256:...` cannot
/// fake it).
#[derive(Debug, Default)]
pub struct AuxScanner {
    line: Vec<u8>,
    skipping: bool,
    quiet: bool,
}

impl AuxScanner {
    pub const MAX_LINE: usize = 64 << 10;

    /// A scanner for a build with `q` as moby reads it (`BoolValue`: anything
    /// but empty, `0`, `no`, `false`, `none` is true).
    pub fn new(quiet: bool) -> AuxScanner {
        AuxScanner {
            quiet,
            ..AuxScanner::default()
        }
    }

    /// moby's `httputils.BoolValue` on a query value.
    pub fn quiet_value(v: &str) -> bool {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        )
    }

    /// Feeds bytes; returns the image IDs of the aux lines completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut ids = Vec::new();
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            self.push(&data[..nl]);
            if let Some(id) = self.take_line() {
                ids.push(id);
            }
            data = &data[nl + 1..];
        }
        self.push(data);
        ids
    }

    /// The end of the stream: a last line without newline.
    pub fn finish(&mut self) -> Option<String> {
        self.take_line()
    }

    fn push(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + part.len() > Self::MAX_LINE {
            self.line.clear();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let skipped = std::mem::replace(&mut self.skipping, false);
        if skipped {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&line).ok()?;
        let id = match (v.get("aux"), v.get("stream")) {
            (Some(aux), _) => aux.get("ID")?.as_str()?,
            (None, Some(stream)) if self.quiet => stream.as_str()?.trim_end(),
            _ => return None,
        };
        (id.starts_with("sha256:")
            && id.len() == 71
            && id[7..].bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_string())
    }
}

#[cfg(test)]
mod scanner_tests {
    use super::AuxScanner;

    #[test]
    fn finds_the_image_id_across_chunk_boundaries() {
        let id = format!("sha256:{}", "a".repeat(64));
        let stream = format!(
            "{{\"stream\":\"Step 1/2 : FROM x\\n\"}}\r\n{{\"aux\":{{\"ID\":\"{id}\"}}}}\r\n{{\"stream\":\"Successfully built aaaa\\n\"}}\r\n"
        );
        for split in [1, 7, 40, stream.len()] {
            let mut s = AuxScanner::default();
            let mut found = Vec::new();
            for chunk in stream.as_bytes().chunks(split) {
                found.extend(s.feed(chunk));
            }
            found.extend(s.finish());
            assert_eq!(found, vec![id.clone()], "chunks of {split}");
        }
        let mut s = AuxScanner::default();
        assert!(s
            .feed(format!("{{\"aux\":{{\"ID\":\"{id}\"}}}}").as_bytes())
            .is_empty());
        assert_eq!(s.finish(), Some(id.clone()));
        // Quiet builds: the ID as the only stream line, and only then.
        let quiet = format!("{{\"stream\":\"{id}\\n\"}}\r\n");
        assert_eq!(
            AuxScanner::new(true).feed(quiet.as_bytes()),
            vec![id.clone()]
        );
        assert!(AuxScanner::new(false).feed(quiet.as_bytes()).is_empty());
        assert!(AuxScanner::quiet_value("1") && AuxScanner::quiet_value("True"));
        assert!(!AuxScanner::quiet_value("0") && !AuxScanner::quiet_value("false"));
        // BuildKit (`version=2`): progress as base64 `moby.buildkit.trace`
        // aux strings, the image as `moby.image.id`.
        let buildkit = format!(
            "{{\"id\":\"moby.buildkit.trace\",\"aux\":\"Cm8KR3NoYTI1Ng==\"}}\r\n{{\"id\":\"moby.image.id\",\"aux\":{{\"ID\":\"{id}\"}}}}\r\n"
        );
        assert_eq!(
            AuxScanner::default().feed(buildkit.as_bytes()),
            vec![id.clone()]
        );
        let mut s = AuxScanner::default();
        assert!(s.feed(&vec![b'x'; 100_000]).is_empty());
        assert!(s.feed(b"\"aux\"\n").is_empty());
        assert_eq!(
            s.feed(b"{\"aux\":{\"ID\":\"sha256:short\"}}\n"),
            Vec::<String>::new()
        );
    }
}
