//! Name namespaces: two tenants can both have a container `db`, a volume
//! `cache` and a network `app_default`.
//!
//! With `namespaces: true` on a listener (and always for per-job tenants),
//! the names a tenant chooses for containers, volumes and networks are
//! stored on the daemon with the tenant's prefix ([`Namespace::prefix`],
//! `<tenant>-`): `docker run --name db` creates `/<tenant>-db`. Every answer
//! the tenant reads is mapped back, so clients see only the names they chose:
//!
//! * **requests**: the `name` query of container create and rename, `Name` in
//!   volume and network create bodies ([`Namespace::create_body`]), `name`
//!   filters anchored with `^` ([`Namespace::name_filter`]); names in paths
//!   and inside container create bodies (networks, links, volumes,
//!   `container:` modes, `VolumesFrom`) are looked up prefixed first, then as
//!   written (IDs, ID prefixes and anonymous volumes), by the ownership driver;
//! * **answers** ([`Namespace::answer`]): container `Name`/`Names` (links
//!   included), network names in `NetworkSettings.Networks` and `NetworkMode`,
//!   volume names in `Mounts`, `Binds`, volume and network listings and
//!   inspects, `system df`, container events ([`Namespace::event`]), and the
//!   daemon's error messages ([`Namespace::message`]).
//!
//! A container created with a namespaced name on a user-defined network also
//! gets the name the client chose as a network alias
//! ([`Namespace::alias_networks`]), so its neighbours still reach it as `db`.
//!
//! Names that do not carry the prefix (shared networks such as `bridge`, IDs,
//! anonymous volumes) pass unchanged. I/O-free.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use serde_json::Value;

use crate::http::{BoxError, ProxyBody};
use crate::policy::Json;
use crate::wire::route::Endpoint;

/// The repository path under which namespaced tenants' image tags live.
pub const IMAGE_ROOT: &str = "cistern-ns";

/// A tenant's name prefix on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
    /// `cistern-ns/<tenant, lowercase>/`, when that is a valid repository
    /// path (image names are lowercase); `None` leaves images unnamespaced.
    image_prefix: Option<String>,
}

impl Namespace {
    /// The namespace of a tenant (a valid tenant name: no `/`).
    pub fn of(tenant: &str) -> Namespace {
        let lower = tenant.to_ascii_lowercase();
        Namespace {
            prefix: format!("{tenant}-"),
            image_prefix: is_path_component(&lower).then(|| format!("{IMAGE_ROOT}/{lower}/")),
        }
    }

    /// Whether image tags are namespaced too.
    pub fn images(&self) -> bool {
        self.image_prefix.is_some()
    }

    /// The daemon's reference for an image reference the client chose
    /// (`app:1` → `cistern-ns/<tenant>/app:1`; a registry host moves into the
    /// path, its port written `__`: `reg.example:5000/app` →
    /// `cistern-ns/<tenant>/reg.example__5000/app`). Digests are global: a
    /// reference with one is left alone, as is one cistern cannot place in
    /// the namespace, and everything without an image namespace.
    pub fn image_to_daemon(&self, reference: &str) -> String {
        let Some(p) = &self.image_prefix else {
            return reference.to_string();
        };
        if reference.is_empty() || reference.contains('@') {
            return reference.to_string();
        }
        let (domain, rest) = match reference.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first), rest)
            }
            _ => (None, reference),
        };
        match domain {
            None => format!("{p}{reference}"),
            Some("docker.io" | "index.docker.io") => {
                format!("{p}{}", rest.strip_prefix("library/").unwrap_or(rest))
            }
            Some(domain) => {
                let encoded = domain.to_ascii_lowercase().replace(':', "__");
                if is_path_component(&encoded) {
                    format!("{p}{encoded}/{rest}")
                } else {
                    reference.to_string()
                }
            }
        }
    }

    /// Whether a daemon reference is in this tenant's image namespace.
    pub fn is_own_image(&self, reference: &str) -> bool {
        self.image_prefix
            .as_deref()
            .is_some_and(|p| reference.starts_with(p))
    }

    /// The client's reference for a daemon reference.
    pub fn image_to_client(&self, reference: &str) -> String {
        let Some(rest) = self
            .image_prefix
            .as_deref()
            .and_then(|p| reference.strip_prefix(p))
        else {
            return reference.to_string();
        };
        match rest.split_once('/') {
            Some((first, tail)) if first.contains('.') || first.contains("__") => {
                format!("{}/{tail}", first.replace("__", ":"))
            }
            _ => rest.to_string(),
        }
    }

    /// Free text (a build's output, an error) with image references mapped.
    pub fn image_text(&self, text: &str) -> String {
        let Some(p) = &self.image_prefix else {
            return text.to_string();
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(p.as_str()) {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']' | ')'))
                .unwrap_or(tail.len());
            out.push_str(&self.image_to_client(&tail[..end]));
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }

    /// `<tenant>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The daemon's name for a name the client chose (a container's leading
    /// `/` dropped, as the daemon drops it).
    pub fn to_daemon(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name.trim_start_matches('/'))
    }

    /// The client's name for a daemon name; unprefixed names unchanged.
    pub fn to_client<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(self.prefix.as_str()).unwrap_or(name)
    }

    /// A container name path as the daemon reports it (`/t-db`, or a link
    /// name `/t-web/t-db`): each component mapped.
    pub fn to_client_path(&self, path: &str) -> String {
        path.split('/')
            .map(|c| self.to_client(c))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A `name` filter value: anchored patterns (`^db`, `^/db`) get the
    /// prefix after the anchor; unanchored ones are substring matches the
    /// prefixed name still satisfies.
    pub fn name_filter(&self, value: &str) -> String {
        if let Some(rest) = value.strip_prefix("^/") {
            format!("^/{}{rest}", self.prefix)
        } else if let Some(rest) = value.strip_prefix('^') {
            format!("^{}{rest}", self.prefix)
        } else {
            value.to_string()
        }
    }

    /// Volume and network create bodies: `Name` prefixed (an empty name, an
    /// anonymous volume, stays empty).
    pub fn create_body(&self, body: &mut Json) {
        if let Some(name) = body.get("Name").and_then(Json::as_str) {
            if !name.is_empty() {
                let daemon = self.to_daemon(name);
                body.set("Name", Json::string(daemon));
            }
        }
    }

    /// Adds the client's container name as an alias on every user-defined
    /// network the create body joins (`NetworkMode` and
    /// `NetworkingConfig.EndpointsConfig`, by their daemon names), so
    /// neighbours resolve it by the name the client gave.
    pub fn alias_networks(&self, body: &mut Json, client_name: &str, user_networks: &[String]) {
        let alias = client_name.trim_start_matches('/');
        if alias.is_empty() {
            return;
        }
        for net in user_networks {
            let endpoint = body
                .object_mut("NetworkingConfig")
                .object_mut("EndpointsConfig")
                .object_mut(net);
            let mut aliases: Vec<String> = endpoint
                .get("Aliases")
                .map(|a| a.strings().map(str::to_string).collect())
                .unwrap_or_default();
            if !aliases.iter().any(|a| a == alias) {
                aliases.push(alias.to_string());
            }
            endpoint.set(
                "Aliases",
                Json::Array(aliases.into_iter().map(Json::string).collect()),
            );
        }
    }

    /// Whether answers to this endpoint carry names to map back.
    pub fn maps_answer(endpoint: &Endpoint) -> bool {
        matches!(
            endpoint,
            Endpoint::ContainerList
                | Endpoint::ContainerInspect { .. }
                | Endpoint::ImageList
                | Endpoint::ImageInspect { .. }
                | Endpoint::ImageDelete { .. }
                | Endpoint::VolumeList
                | Endpoint::VolumeInspect { .. }
                | Endpoint::VolumeCreate
                | Endpoint::NetworkList
                | Endpoint::NetworkInspect { .. }
                | Endpoint::SystemDf
        )
    }

    /// Maps the names in a successful answer back to the client's.
    pub fn answer(&self, endpoint: &Endpoint, v: &mut Value) {
        match endpoint {
            Endpoint::ContainerList => each(v, |c| self.container(c)),
            Endpoint::ContainerInspect { .. } => self.container(v),
            Endpoint::VolumeList => {
                if let Some(vols) = v.get_mut("Volumes") {
                    each(vols, |vol| self.field(vol, "Name"));
                }
            }
            Endpoint::VolumeInspect { .. } | Endpoint::VolumeCreate => self.field(v, "Name"),
            Endpoint::NetworkList => each(v, |n| self.network(n)),
            Endpoint::NetworkInspect { .. } => self.network(v),
            Endpoint::ImageList => each(v, |i| self.image(i)),
            Endpoint::ImageInspect { .. } => self.image(v),
            Endpoint::ImageDelete { .. } => each(v, |d| {
                if let Some(Value::String(s)) = d.get_mut("Untagged") {
                    *s = self.image_to_client(s);
                }
            }),
            Endpoint::SystemDf => {
                if let Some(cs) = v.get_mut("Containers") {
                    each(cs, |c| self.container(c));
                }
                if let Some(is) = v.get_mut("Images") {
                    each(is, |i| self.image(i));
                }
                if let Some(vols) = v.get_mut("Volumes") {
                    each(vols, |vol| self.field(vol, "Name"));
                }
            }
            _ => {}
        }
    }

    /// A container event: its name and image attributes.
    pub fn event(&self, v: &mut Value) {
        if let Some(attrs) = v.pointer_mut("/Actor/Attributes") {
            self.field(attrs, "name");
            if let Some(Value::String(s)) = attrs.get_mut("image") {
                *s = self.image_to_client(s);
            }
        }
        if let Some(Value::String(s)) = v.get_mut("from") {
            *s = self.image_to_client(s);
        }
    }

    /// A build's (or pull's) progress message: image references in its
    /// text.
    pub fn progress(&self, v: &mut Value) {
        for key in ["stream", "error", "status"] {
            if let Some(Value::String(s)) = v.get_mut(key) {
                *s = self.image_text(s);
            }
        }
        if let Some(Value::String(s)) = v.pointer_mut("/errorDetail/message") {
            *s = self.image_text(s);
        }
    }

    /// A daemon error message: prefixed names where a name can start
    /// (after a quote, `/`, a space or at the start) lose the prefix.
    pub fn message(&self, message: &str) -> String {
        let message = self.image_text(message);
        let mut out = String::with_capacity(message.len());
        let mut rest = message.as_str();
        let mut boundary = true;
        while !rest.is_empty() {
            if boundary && rest.starts_with(self.prefix.as_str()) {
                rest = &rest[self.prefix.len()..];
                boundary = false;
                continue;
            }
            let c = rest.chars().next().unwrap_or(' ');
            boundary = matches!(c, '"' | '\'' | '/' | ' ' | ':' | '(' | '[');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    fn field(&self, v: &mut Value, key: &str) {
        if let Some(Value::String(s)) = v.get_mut(key) {
            let mapped = self.to_client(s).to_string();
            *s = mapped;
        }
    }

    fn keys(&self, v: &mut Value) {
        if let Some(map) = v.as_object_mut() {
            let entries = std::mem::take(map);
            for (k, val) in entries {
                map.insert(self.to_client(&k).to_string(), val);
            }
        }
    }

    fn image(&self, i: &mut Value) {
        for key in ["RepoTags", "RepoDigests"] {
            if let Some(Value::Array(refs)) = i.get_mut(key) {
                for r in refs {
                    if let Value::String(s) = r {
                        *s = self.image_to_client(s);
                    }
                }
            }
        }
    }

    fn container(&self, c: &mut Value) {
        if let Some(Value::String(image)) = c.get_mut("Image") {
            *image = self.image_to_client(image);
        }
        if let Some(Value::String(image)) = c.pointer_mut("/Config/Image") {
            *image = self.image_to_client(image);
        }
        if let Some(Value::String(name)) = c.get_mut("Name") {
            *name = self.to_client_path(name);
        }
        if let Some(Value::Array(names)) = c.get_mut("Names") {
            for n in names {
                if let Value::String(s) = n {
                    *s = self.to_client_path(s);
                }
            }
        }
        if let Some(nets) = c.pointer_mut("/NetworkSettings/Networks") {
            self.keys(nets);
        }
        if let Some(host) = c.get_mut("HostConfig") {
            self.field(host, "NetworkMode");
            if let Some(Value::Array(links)) = host.get_mut("Links") {
                for l in links {
                    if let Value::String(s) = l {
                        *s = match s.split_once(':') {
                            Some((from, to)) => {
                                format!("{}:{}", self.to_client_path(from), self.to_client_path(to))
                            }
                            None => self.to_client_path(s),
                        };
                    }
                }
            }
            if let Some(Value::Array(binds)) = host.get_mut("Binds") {
                for b in binds {
                    if let Value::String(s) = b {
                        if !s.starts_with('/') {
                            *s = self.to_client(s).to_string();
                        }
                    }
                }
            }
        }
        if let Some(mounts) = c.get_mut("Mounts") {
            each(mounts, |m| {
                if m.get("Type").and_then(Value::as_str) == Some("volume") {
                    self.field(m, "Name");
                    self.field(m, "Source");
                }
            });
        }
    }

    fn network(&self, n: &mut Value) {
        self.field(n, "Name");
        if let Some(Value::Object(cs)) = n.get_mut("Containers") {
            for c in cs.values_mut() {
                self.field(c, "Name");
            }
        }
    }
}

/// What a stream of JSON lines carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// `GET /events`: [`Namespace::event`].
    Events,
    /// Build (and similar) progress: [`Namespace::progress`].
    Progress,
}

/// A stream of JSON objects, one per line (events, build progress), with
/// names mapped back line by line as frames arrive. A line longer than
/// [`MappedLines::MAX_LINE`] passes through unmapped.
pub struct MappedLines {
    inner: ProxyBody,
    ns: Namespace,
    lines: Lines,
    pending: BytesMut,
}

impl MappedLines {
    pub const MAX_LINE: usize = 1 << 20;

    pub fn new(inner: ProxyBody, ns: Namespace, lines: Lines) -> MappedLines {
        MappedLines {
            inner,
            ns,
            lines,
            pending: BytesMut::new(),
        }
    }

    /// The complete lines in `pending`, mapped.
    fn drain_lines(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line = self.pending.split_to(end + 1);
            out.extend_from_slice(&self.map_line(&line));
        }
        if self.pending.len() > Self::MAX_LINE {
            out.extend_from_slice(&self.pending.split());
        }
        out.freeze()
    }

    fn map_line(&self, line: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut v) => {
                match self.lines {
                    Lines::Events => self.ns.event(&mut v),
                    Lines::Progress => self.ns.progress(&mut v),
                }
                let mut out = serde_json::to_vec(&v).unwrap_or_else(|_| line.to_vec());
                out.push(b'\n');
                out
            }
            Err(_) => line.to_vec(),
        }
    }
}

impl Body for MappedLines {
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
                        self.pending.extend_from_slice(&data);
                        let out = self.drain_lines();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) if !self.pending.is_empty() => {
                    let rest = self.pending.split().freeze();
                    let out = self.map_line(&rest);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                other => return other,
            }
        }
    }
}

/// A repository path component (`[a-z0-9]+` joined by `.`, `_`, `__` or
/// runs of `-`).
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &s[start..i];
        let dashes = sep.bytes().all(|c| c == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

fn each(v: &mut Value, mut f: impl FnMut(&mut Value)) {
    if let Value::Array(items) = v {
        items.iter_mut().for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json;
    use serde_json::json;

    fn ns() -> Namespace {
        Namespace::of("alice")
    }

    #[test]
    fn names_map_both_ways() {
        let ns = ns();
        assert_eq!(ns.to_daemon("db"), "alice-db");
        assert_eq!(ns.to_daemon("/db"), "alice-db");
        assert_eq!(ns.to_client("alice-db"), "db");
        assert_eq!(ns.to_client("bridge"), "bridge");
        assert_eq!(ns.to_client_path("/alice-web/alice-db"), "/web/db");
        assert_eq!(ns.name_filter("^/db$"), "^/alice-db$");
        assert_eq!(ns.name_filter("^db"), "^alice-db");
        assert_eq!(ns.name_filter("db"), "db");
    }

    #[test]
    fn container_inspect_is_mapped_back() {
        let mut v = json!({
            "Name": "/alice-web",
            "HostConfig": {"NetworkMode": "alice-app_default", "Links": ["/alice-db:/alice-web/db"], "Binds": ["alice-cache:/c", "/srv:/srv"]},
            "Mounts": [{"Type":"volume","Name":"alice-cache","Source":"/var/lib/docker/volumes/alice-cache/_data"}, {"Type":"bind","Source":"/srv"}],
            "NetworkSettings": {"Networks": {"alice-app_default": {"Aliases": ["web"]}, "bridge": {}}}
        });
        ns().answer(&Endpoint::ContainerInspect { id: "x".into() }, &mut v);
        assert_eq!(
            v,
            json!({
                "Name": "/web",
                "HostConfig": {"NetworkMode": "app_default", "Links": ["/db:/web/db"], "Binds": ["cache:/c", "/srv:/srv"]},
                "Mounts": [{"Type":"volume","Name":"cache","Source":"/var/lib/docker/volumes/alice-cache/_data"}, {"Type":"bind","Source":"/srv"}],
                "NetworkSettings": {"Networks": {"app_default": {"Aliases": ["web"]}, "bridge": {}}}
            })
        );
    }

    #[test]
    fn listings_are_mapped_back() {
        let mut vols =
            json!({"Volumes": [{"Name": "alice-cache"}, {"Name": "0123abcd"}], "Warnings": null});
        ns().answer(&Endpoint::VolumeList, &mut vols);
        assert_eq!(vols["Volumes"][0]["Name"], "cache");
        assert_eq!(vols["Volumes"][1]["Name"], "0123abcd");
        let mut nets = json!([{"Name": "alice-app_default", "Containers": {"abc": {"Name": "alice-web"}}}, {"Name": "bridge"}]);
        ns().answer(&Endpoint::NetworkList, &mut nets);
        assert_eq!(
            nets,
            json!([{"Name": "app_default", "Containers": {"abc": {"Name": "web"}}}, {"Name": "bridge"}])
        );
        let mut ps =
            json!([{"Names": ["/alice-db"], "NetworkSettings": {"Networks": {"alice-n": {}}}}]);
        ns().answer(&Endpoint::ContainerList, &mut ps);
        assert_eq!(
            ps,
            json!([{"Names": ["/db"], "NetworkSettings": {"Networks": {"n": {}}}}])
        );
    }

    #[test]
    fn events_and_errors_are_mapped_back() {
        let mut e = json!({"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"alice-db","image":"busybox"}}});
        ns().event(&mut e);
        assert_eq!(e["Actor"]["Attributes"]["name"], "db");
        assert_eq!(
            ns().message(r#"Conflict. The container name "/alice-db" is already in use by container "abc". You have to remove (or rename) that container to be able to reuse that name."#),
            r#"Conflict. The container name "/db" is already in use by container "abc". You have to remove (or rename) that container to be able to reuse that name."#
        );
        assert_eq!(
            ns().message("remove alice-cache: volume is in use - [abc]"),
            "remove cache: volume is in use - [abc]"
        );
        // Not at a name boundary: left alone.
        assert_eq!(ns().message("bob-alice-x"), "bob-alice-x");
    }

    #[test]
    fn image_references_map_both_ways() {
        let ns = ns();
        for (client, daemon) in [
            ("app", "cistern-ns/alice/app"),
            ("app:1", "cistern-ns/alice/app:1"),
            ("team/app:1", "cistern-ns/alice/team/app:1"),
            (
                "localhost:5999/app:v1",
                "cistern-ns/alice/localhost__5999/app:v1",
            ),
            ("Reg.Example/t/app", "cistern-ns/alice/reg.example/t/app"),
        ] {
            assert_eq!(ns.image_to_daemon(client), daemon, "{client}");
            assert_eq!(
                ns.image_to_client(daemon).to_ascii_lowercase(),
                client.to_ascii_lowercase(),
                "{daemon}"
            );
        }
        assert_eq!(
            ns.image_to_daemon("docker.io/library/app:1"),
            "cistern-ns/alice/app:1"
        );
        assert_eq!(ns.image_to_daemon("app@sha256:00"), "app@sha256:00");
        assert_eq!(ns.image_to_client("busybox:latest"), "busybox:latest");
        assert_eq!(
            ns.image_text("Successfully tagged cistern-ns/alice/localhost__5999/app:v1\n"),
            "Successfully tagged localhost:5999/app:v1\n"
        );
        // Upper-case tenants are lower-cased; impossible ones get no image namespace.
        assert_eq!(
            Namespace::of("Bob").image_to_daemon("x"),
            "cistern-ns/bob/x"
        );
        assert_eq!(Namespace::of("a..b").image_to_daemon("x"), "x");
    }

    #[test]
    fn create_bodies_get_the_prefix_and_aliases() {
        let mut body = json::parse(br#"{"Name":"cache","Driver":"local"}"#).unwrap();
        ns().create_body(&mut body);
        assert_eq!(body.get("Name").and_then(Json::as_str), Some("alice-cache"));
        let mut anon = json::parse(br#"{"Name":""}"#).unwrap();
        ns().create_body(&mut anon);
        assert_eq!(anon.get("Name").and_then(Json::as_str), Some(""));

        let mut c = json::parse(br#"{"Image":"x","NetworkingConfig":{"EndpointsConfig":{"alice-n":{"Aliases":["svc"]}}}}"#).unwrap();
        ns().alias_networks(&mut c, "db", &["alice-n".into(), "alice-m".into()]);
        let v: Value = serde_json::from_slice(&c.to_vec()).unwrap();
        assert_eq!(
            v["NetworkingConfig"]["EndpointsConfig"],
            json!({"alice-n": {"Aliases": ["svc", "db"]}, "alice-m": {"Aliases": ["db"]}})
        );
    }
}
