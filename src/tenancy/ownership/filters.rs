//! Filters: listings, prunes and event streams that show only the tenant's own.
//!
//! * **Query side** ([`merge_label_filter`]): `GET /containers/json`,
//!   `/volumes`, `/networks`, `/events` and `POST /containers/prune`,
//!   `/volumes/prune`, `/networks/prune` get `label=io.cistern.tenant=<t>` and
//!   `label=io.cistern.instance=<i>` merged into the client's `filters` JSON.
//!   dockerd ANDs every `label` value (`filters.Args.MatchKVList`) and ANDs
//!   filter keys, so nothing a client adds can widen the result. Both formats
//!   Go's `filters.FromJSON` reads are kept as they came: `{"label":{"a":true}}`
//!   and the old `{"label":["a"]}`. Go's `Form.Get` reads the first `filters`
//!   parameter; the rewritten query has exactly one.
//! * **Response side**: `GET /images/json` ([`filter_images`]),
//!   `GET /system/df` ([`filter_df`]) and the predefined networks
//!   ([`filter_shared_network`]) are filtered after the daemon answered:
//!   containers and volumes by their labels, images by the state file (base
//!   images and the tenant's own). The build cache records in `system/df`
//!   carry no owner, and their descriptions name other tenants' `RUN`
//!   commands: they are left out.
//!
//! Event streams carry labels only for container events (dockerd puts the
//! container's labels in the event attributes); volume, network and image
//! events have none, so a tenant's event stream shows container events only.
//!
//! I/O-free.

use http::StatusCode;
use serde_json::{Map, Value};

use crate::daemon::error::DockerError;
use crate::wire::query::Query;
use crate::wire::route::Endpoint;

use super::labels::{self, Owner};
use super::names::Namespace;

/// Whether the daemon's answer to this endpoint is narrowed by a label filter.
pub fn label_filtered(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ContainerList
            | Endpoint::VolumeList
            | Endpoint::NetworkList
            | Endpoint::Events
            | Endpoint::ContainerPrune
            | Endpoint::VolumePrune
            | Endpoint::NetworkPrune
    )
}

fn invalid(what: impl std::fmt::Display) -> DockerError {
    DockerError::client(
        StatusCode::BAD_REQUEST,
        format!("cistern: invalid filters: {what}"),
    )
}

/// The `filters` JSON with the label values added.
pub fn merge_filters_json(filters: &str, values: &[String]) -> Result<String, DockerError> {
    let mut map: Map<String, Value> = if filters.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str(filters).map_err(invalid)? {
            Value::Object(m) => m,
            _ => return Err(invalid("not a JSON object")),
        }
    };
    // Go tries `map[string]map[string]bool` first, then the old
    // `map[string][]string`; one format for the whole object.
    let new_format = map.values().all(|v| {
        v.as_object()
            .is_some_and(|o| o.values().all(Value::is_boolean))
    });
    let old_format = map
        .values()
        .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)));
    if map.is_empty() || new_format {
        let label = map
            .entry("label")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = label {
            for v in values {
                o.insert(v.clone(), Value::Bool(true));
            }
        }
    } else if old_format {
        let label = map
            .entry("label")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = label {
            for v in values {
                a.push(Value::String(v.clone()));
            }
        }
    } else {
        return Err(invalid(
            "values must be lists of strings or maps of booleans",
        ));
    }
    Ok(Value::Object(map).to_string())
}

/// The request target with the owner's label filter merged into `filters`.
pub fn merge_label_filter(target: &str, owner: &Owner) -> Result<String, DockerError> {
    let (path, raw) = target.split_once('?').unwrap_or((target, ""));
    let q = Query::parse(raw).map_err(|r| DockerError::client(r.status, r.message))?;
    let first = q.values("filters").next().unwrap_or("").to_string();
    let mut merged = merge_filters_json(&first, &owner.filter_values())?;
    if let Some(ns) = &owner.namespace {
        merged = namespace_name_filter(&merged, ns)?;
    }
    Ok(format!("{path}?{}", q.with("filters", &merged).encode()))
}

/// `name` filter values in the tenant's namespace (see
/// [`Namespace::name_filter`]), in either filters format.
fn namespace_name_filter(filters: &str, ns: &Namespace) -> Result<String, DockerError> {
    let mut v: Value = serde_json::from_str(filters).map_err(invalid)?;
    match v.get_mut("name") {
        Some(Value::Object(names)) => {
            let old = std::mem::take(names);
            for (k, val) in old {
                names.insert(ns.name_filter(&k), val);
            }
        }
        Some(Value::Array(names)) => {
            for n in names.iter_mut() {
                if let Value::String(s) = n {
                    *s = ns.name_filter(s);
                }
            }
        }
        _ => return Ok(filters.to_string()),
    }
    Ok(v.to_string())
}

/// Whether a listed object's labels (at `key`) say this owner.
fn owned_entry(entry: &Value, owner: &Owner) -> bool {
    owner.owns(&labels::from_value(entry.get("Labels")))
}

/// `GET /images/json`: keeps images `visible` says the tenant may see and
/// drops the tags `tag_visible` hides.
pub fn filter_images(
    body: &[u8],
    visible: impl Fn(&str) -> bool,
    tag_visible: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, DockerError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|err| DockerError::upstream(format!("unreadable image list: {err}")))?;
    let Value::Array(images) = v else {
        return Err(DockerError::upstream("the image list is not a JSON array"));
    };
    let kept: Vec<Value> = images
        .into_iter()
        .filter(|i| visible(i.get("Id").and_then(Value::as_str).unwrap_or("")))
        .map(|mut i| {
            strip_tags(&mut i, &tag_visible);
            i
        })
        .collect();
    serde_json::to_vec(&kept).map_err(|err| DockerError::internal(err.to_string()))
}

/// `GET /images/{name}/json`: the tags `tag_visible` hides are dropped.
pub fn filter_image_inspect(
    body: &[u8],
    tag_visible: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, DockerError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|err| DockerError::upstream(format!("unreadable image inspect: {err}")))?;
    strip_tags(&mut v, &tag_visible);
    serde_json::to_vec(&v).map_err(|err| DockerError::internal(err.to_string()))
}

fn strip_tags(image: &mut Value, tag_visible: &impl Fn(&str) -> bool) {
    for key in ["RepoTags", "RepoDigests"] {
        if let Some(Value::Array(tags)) = image.get_mut(key) {
            tags.retain(|t| t.as_str().map_or(true, tag_visible));
        }
    }
}

/// `GET /networks/{bridge|host|none}`: the predefined network without the
/// containers attached to it (they may be anyone's).
pub fn filter_shared_network(body: &[u8]) -> Result<Vec<u8>, DockerError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|err| DockerError::upstream(format!("unreadable network: {err}")))?;
    if let Some(containers) = v.get_mut("Containers") {
        *containers = Value::Object(Map::new());
    }
    serde_json::to_vec(&v).map_err(|err| DockerError::internal(err.to_string()))
}

/// `GET /system/df`: containers and volumes by label, images by `visible`.
pub fn filter_df(
    body: &[u8],
    owner: &Owner,
    visible: impl Fn(&str) -> bool,
    tag_visible: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, DockerError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|err| DockerError::upstream(format!("unreadable disk usage: {err}")))?;
    for key in ["Containers", "Volumes"] {
        if let Some(Value::Array(items)) = v.get_mut(key) {
            items.retain(|i| owned_entry(i, owner));
        }
    }
    if let Some(Value::Array(items)) = v.get_mut("BuildCache") {
        items.clear();
    }
    if let Some(size) = v.get_mut("BuilderSize") {
        *size = Value::from(0);
    }
    if let Some(Value::Array(items)) = v.get_mut("Images") {
        items.retain(|i| visible(i.get("Id").and_then(Value::as_str).unwrap_or("")));
        for i in items.iter_mut() {
            strip_tags(i, &tag_visible);
        }
    }
    serde_json::to_vec(&v).map_err(|err| DockerError::internal(err.to_string()))
}

/// A tenant's counts for `GET /info`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub containers: u64,
    pub running: u64,
    pub paused: u64,
    pub stopped: u64,
    pub images: u64,
}

impl Counts {
    /// From the tenant's `containers/json?all=1` and its filtered image list.
    pub fn new(containers: &Value, images: &[u8]) -> Counts {
        let mut c = Counts::default();
        for state in containers
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.get("State").and_then(Value::as_str).unwrap_or(""))
        {
            c.containers += 1;
            match state {
                "running" | "restarting" => c.running += 1,
                "paused" => c.paused += 1,
                _ => c.stopped += 1,
            }
        }
        c.images = serde_json::from_slice::<Value>(images)
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len() as u64))
            .unwrap_or(0);
        c
    }
}

/// `GET /info`: the daemon-wide container and image counts replaced by the
/// tenant's.
pub fn filter_info(body: &[u8], counts: &Counts) -> Result<Vec<u8>, DockerError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|err| DockerError::upstream(format!("unreadable system info: {err}")))?;
    for (key, n) in [
        ("Containers", counts.containers),
        ("ContainersRunning", counts.running),
        ("ContainersPaused", counts.paused),
        ("ContainersStopped", counts.stopped),
        ("Images", counts.images),
    ] {
        if let Some(slot) = v.get_mut(key) {
            *slot = Value::from(n);
        }
    }
    serde_json::to_vec(&v).map_err(|err| DockerError::internal(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::ownership::identity::Tenant;

    fn alice() -> Owner {
        Owner::new(Tenant::new("alice").unwrap(), "default")
    }

    fn decoded_filters(target: &str) -> Value {
        let q = Query::parse(target.split_once('?').unwrap().1).unwrap();
        serde_json::from_str(q.get("filters").unwrap().unwrap()).unwrap()
    }

    #[test]
    fn info_counts_are_the_tenants() {
        let containers = serde_json::json!([{"State":"running"},{"State":"exited"},{"State":"paused"},{"State":"created"}]);
        let counts = Counts::new(&containers, br#"[{"Id":"a"},{"Id":"b"}]"#);
        assert_eq!(
            counts,
            Counts {
                containers: 4,
                running: 1,
                paused: 1,
                stopped: 2,
                images: 2
            }
        );
        let info = filter_info(
            br#"{"Containers":57,"ContainersRunning":9,"ContainersPaused":0,"ContainersStopped":48,"Images":120,"Name":"host"}"#,
            &counts,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&info).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Containers":4,"ContainersRunning":1,"ContainersPaused":1,"ContainersStopped":2,"Images":2,"Name":"host"})
        );
    }

    #[test]
    fn anchored_name_filters_get_the_namespace() {
        let mut owner = alice();
        owner.namespace = Some(Namespace::of("alice"));
        let f = crate::wire::query::escape(r#"{"name":{"^/db$":true,"web":true}}"#);
        let t = merge_label_filter(&format!("/containers/json?filters={f}"), &owner).unwrap();
        let v = decoded_filters(&t);
        assert_eq!(
            v["name"],
            serde_json::json!({"^/alice-db$": true, "web": true})
        );
        let f = crate::wire::query::escape(r#"{"name":["^cache"]}"#);
        let t = merge_label_filter(&format!("/volumes?filters={f}"), &owner).unwrap();
        assert_eq!(
            decoded_filters(&t)["name"],
            serde_json::json!(["^alice-cache"])
        );
    }

    #[test]
    fn shared_networks_are_shown_without_their_containers() {
        let body = br#"{"Name":"bridge","Id":"n1","IPAM":{"Config":[{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]},"Containers":{"c1":{"Name":"someone-elses","IPv4Address":"172.17.0.2/16"}},"Labels":{}}"#;
        let out: Value = serde_json::from_slice(&filter_shared_network(body).unwrap()).unwrap();
        assert_eq!(out["Containers"], serde_json::json!({}));
        assert_eq!(out["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
        assert_eq!(out["Name"], "bridge");
    }

    #[test]
    fn label_filter_is_added_in_both_formats() {
        let t = merge_label_filter("/v1.41/containers/json?all=1", &alice()).unwrap();
        assert!(t.starts_with("/v1.41/containers/json?all=1&filters="));
        assert_eq!(
            decoded_filters(&t),
            serde_json::json!({"label":{"io.cistern.tenant=alice":true,"io.cistern.instance=default":true}})
        );
        let new = r#"{"label":{"app=web":true},"status":{"running":true}}"#;
        let t = merge_label_filter(
            &format!(
                "/containers/json?filters={}",
                crate::wire::query::escape(new)
            ),
            &alice(),
        )
        .unwrap();
        assert_eq!(
            decoded_filters(&t),
            serde_json::json!({"label":{"app=web":true,"io.cistern.tenant=alice":true,"io.cistern.instance=default":true},"status":{"running":true}})
        );
        let old = r#"{"label":["app=web"],"dangling":["true"]}"#;
        let t = merge_label_filter(
            &format!("/volumes?filters={}", crate::wire::query::escape(old)),
            &alice(),
        )
        .unwrap();
        assert_eq!(
            decoded_filters(&t),
            serde_json::json!({"label":["app=web","io.cistern.tenant=alice","io.cistern.instance=default"],"dangling":["true"]})
        );
    }

    #[test]
    fn a_second_filters_parameter_cannot_slip_past() {
        // Go reads the first; cistern forwards exactly one, merged from it.
        let t = merge_label_filter(
            "/events?filters=%7B%7D&filters=%7B%22label%22%3A%5B%5D%7D",
            &alice(),
        )
        .unwrap();
        assert_eq!(t.matches("filters=").count(), 1);
        assert_eq!(
            decoded_filters(&t),
            serde_json::json!({"label":{"io.cistern.tenant=alice":true,"io.cistern.instance=default":true}})
        );
    }

    #[test]
    fn unreadable_filters_are_refused() {
        for bad in [
            "[]",
            "{",
            r#"{"label":"x"}"#,
            r#"{"label":["a"],"x":{"b":true}}"#,
        ] {
            assert!(merge_filters_json(bad, &["l".into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn disk_usage_shows_only_the_tenants_own() {
        let df = br#"{"LayersSize":1,"Images":[{"Id":"sha256:base","RepoTags":["busybox:latest","bob/x:1"]},{"Id":"sha256:bobs"}],
            "Containers":[{"Id":"a","Labels":{"io.cistern.tenant":"alice","io.cistern.instance":"default"}},{"Id":"b","Labels":{"io.cistern.tenant":"bob","io.cistern.instance":"default"}},{"Id":"c","Labels":null}],
            "Volumes":[{"Name":"v","Labels":{"io.cistern.tenant":"alice","io.cistern.instance":"default"}},{"Name":"w","Labels":null}],
            "BuildCache":[{"ID":"x","Description":"mount / from exec /bin/sh -c curl -H token: bob"}],"BuilderSize":9}"#;
        let out = filter_df(
            df,
            &alice(),
            |id| id != "sha256:bobs",
            |t| !t.starts_with("bob/"),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Containers"].as_array().unwrap().len(), 1);
        assert_eq!(v["Containers"][0]["Id"], "a");
        assert_eq!(v["Volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["Images"],
            serde_json::json!([{"Id":"sha256:base","RepoTags":["busybox:latest"]}])
        );
        assert_eq!(v["LayersSize"], 1);
        assert_eq!(v["BuildCache"], serde_json::json!([]));
        assert_eq!(v["BuilderSize"], 0);
    }

    #[test]
    fn image_list_keeps_base_and_own() {
        let list = br#"[{"Id":"sha256:base","RepoTags":["busybox:latest"]},{"Id":"sha256:bobs","RepoTags":["bob/app:latest"]},{"Id":"sha256:mine","RepoTags":null}]"#;
        let out = filter_images(list, |id| id != "sha256:bobs", |_| true).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let ids: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["sha256:base", "sha256:mine"]);
    }
}
