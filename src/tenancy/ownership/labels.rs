//! Labels: how the daemon remembers who owns a container, volume or network.
//!
//! Every container, volume and network created through cistern gets
//! [`TENANT`]`=<tenant>` and [`INSTANCE`]`=<instance>` in its `Labels`, added
//! to the canonical body the policy accepted (after the policy's own label
//! injection, so these win over anything the client or the policy set).
//! Ownership is then a property of the resource on the daemon: it survives a
//! `kill -9` of cistern, and finding a tenant's resources is a label query.
//!
//! I/O-free; runs on the body the driver is about to forward.

use std::collections::BTreeMap;

use crate::policy::Json;
use crate::wire::route::Endpoint;

use super::identity::Tenant;
use super::names::Namespace;

/// The label naming the owning tenant.
pub const TENANT: &str = "io.cistern.tenant";
/// The label naming the cistern instance that created the resource.
pub const INSTANCE: &str = "io.cistern.instance";

/// Who a request acts for: the tenant and the cistern instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: Tenant,
    pub instance: String,
    /// The tenant's name namespace, when its listener has `namespaces: true`.
    pub namespace: Option<Namespace>,
}

impl Owner {
    /// An owner without a name namespace.
    pub fn new(tenant: Tenant, instance: impl Into<String>) -> Owner {
        Owner {
            tenant,
            instance: instance.into(),
            namespace: None,
        }
    }

    /// Whether labels (as the daemon reports them) say this owner.
    /// The namespace of the tenant's BuildKit cache mounts
    /// (`BUILDKIT_CACHE_MOUNT_NS`): the daemon's one BuildKit shares a
    /// cache mount between every build that names its id, so each tenant's
    /// ids are put under its own name.
    pub fn cache_mount_namespace(&self) -> String {
        format!("cistern/{}/{}", self.instance, self.tenant.as_str())
    }

    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(TENANT).map(String::as_str) == Some(self.tenant.as_str())
            && labels.get(INSTANCE) == Some(&self.instance)
    }

    /// `label=` filter values selecting this owner's resources.
    pub fn filter_values(&self) -> [String; 2] {
        [
            format!("{TENANT}={}", self.tenant),
            format!("{INSTANCE}={}", self.instance),
        ]
    }
}

/// Whether this endpoint creates a resource that is labelled.
pub fn labels_create(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ContainerCreate | Endpoint::VolumeCreate | Endpoint::NetworkCreate
    )
}

/// Labels under this prefix are cistern's: a client's are dropped.
pub const RESERVED_PREFIX: &str = "io.cistern.";

/// Adds the owner's labels to a canonical create body (container, volume or
/// network: all three keep them in a top-level `Labels`), after dropping any
/// `io.cistern.*` label the client set (such as a job's). An empty body
/// becomes `{"Labels": {...}}`.
pub fn label_body(body: &mut Json, owner: &Owner) {
    if !matches!(body, Json::Object(_)) {
        *body = Json::Object(Vec::new());
    }
    let labels = body.object_mut("Labels");
    if let Json::Object(entries) = labels {
        entries.retain(|(k, _)| !k.starts_with(RESERVED_PREFIX));
    }
    labels.set(TENANT, Json::string(owner.tenant.as_str()));
    labels.set(INSTANCE, Json::string(owner.instance.clone()));
}

/// Labels from a daemon answer (`Config.Labels` of a container, `Labels` of a
/// volume or network); `null` or absent is empty.
pub fn from_value(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    v.and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json;

    fn owner() -> Owner {
        Owner::new(Tenant::new("alice").unwrap(), "default")
    }

    #[test]
    fn clients_cannot_set_cisterns_labels() {
        let mut body = json::parse(
            br#"{"Image":"x","Labels":{"io.cistern.job":"0a1b2c3d4e5f","io.cistern.x":"1","ci":"1"}}"#,
        )
        .unwrap();
        label_body(&mut body, &owner());
        let v: serde_json::Value = serde_json::from_slice(&body.to_vec()).unwrap();
        assert_eq!(
            v["Labels"],
            serde_json::json!({"ci":"1","io.cistern.tenant":"alice","io.cistern.instance":"default"})
        );
    }

    #[test]
    fn injected_labels_win() {
        let mut body =
            json::parse(br#"{"Image":"x","Labels":{"io.cistern.tenant":"bob","keep":"1"}}"#)
                .unwrap();
        label_body(&mut body, &owner());
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            r#"{"Image":"x","Labels":{"keep":"1","io.cistern.tenant":"alice","io.cistern.instance":"default"}}"#
        );
        let mut null_labels = json::parse(br#"{"Name":"v","Labels":null}"#).unwrap();
        label_body(&mut null_labels, &owner());
        assert_eq!(
            null_labels.at(&["Labels", TENANT]).and_then(Json::as_str),
            Some("alice")
        );
        let mut empty = Json::Null;
        label_body(&mut empty, &owner());
        assert_eq!(
            String::from_utf8(empty.to_vec()).unwrap(),
            r#"{"Labels":{"io.cistern.tenant":"alice","io.cistern.instance":"default"}}"#
        );
    }

    #[test]
    fn ownership_needs_tenant_and_instance() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"io.cistern.tenant":"alice","io.cistern.instance":"default"}"#,
        )
        .unwrap();
        assert!(owner().owns(&from_value(Some(&v))));
        let other: serde_json::Value =
            serde_json::from_str(r#"{"io.cistern.tenant":"alice","io.cistern.instance":"other"}"#)
                .unwrap();
        assert!(!owner().owns(&from_value(Some(&other))));
        assert!(!owner().owns(&from_value(None)));
        assert!(!owner().owns(&from_value(Some(&serde_json::Value::Null))));
    }
}
