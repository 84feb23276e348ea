//! Unprivileged images: a listed image (a resource reaper such as
//! `testcontainers/ryuk`) that asks for `Privileged: true` runs unprivileged
//! instead of being refused.
//!
//! Some clients start their reaper privileged although it only needs the
//! Docker socket (which [`super::socket_bind`] maps to the client's cistern
//! socket). With the policy's `unprivileged_images` listing the image, the
//! create's `HostConfig.Privileged` is set to `false` (logged, noted, and
//! visible in `docker inspect`); everything else in the body is still judged by
//! the rules that follow, capabilities and devices included. Off (empty) by
//! default.
//!
//! The rule only ever takes privilege away, so matching on the name a client
//! writes is safe even though a tenant can tag any image with a listed name.
//! Names are compared as written, without tag or digest (`testcontainers/ryuk`
//! matches `testcontainers/ryuk:0.11.0` and `testcontainers/ryuk@sha256:...`);
//! an entry with a tag matches that tag only. A registry prefix is part of the
//! name: list every spelling the clients use.

use super::{Ctx, Json};

/// An image name from the `unprivileged_images` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    repository: String,
    tag: Option<String>,
}

impl ImageName {
    /// Parses `name[:tag]`; `None` for empty names, digests, upper case or spaces
    /// (which Docker never accepts in a reference).
    pub fn parse(entry: &str) -> Option<ImageName> {
        if entry.is_empty()
            || entry.contains('@')
            || entry
                .chars()
                .any(|c| c.is_whitespace() || c.is_ascii_uppercase() || c.is_control())
        {
            return None;
        }
        let (repository, tag) = split_reference(entry);
        if repository.is_empty() || tag == Some("") {
            return None;
        }
        Some(ImageName {
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
        })
    }

    /// Whether an image reference as a client wrote it names this image.
    fn matches(&self, reference: &str) -> bool {
        let reference = reference.split_once('@').map_or(reference, |(r, _)| r);
        let (repository, tag) = split_reference(reference);
        repository == self.repository && self.tag.as_deref().map_or(true, |t| Some(t) == tag)
    }
}

/// `repo[:tag]` → (`repo`, `tag`): the tag is after the last `:` that follows
/// the last `/` (a registry's `host:port/` is part of the repository).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            Some(&reference[name_start + i + 1..]),
        ),
        None => (reference, None),
    }
}

/// Drops `HostConfig.Privileged: true` from a create of a listed image.
pub fn container_create(ctx: &mut Ctx<'_>, body: &mut Json) {
    let Some(image) = body.get("Image").and_then(Json::as_str) else {
        return;
    };
    if !ctx
        .policy
        .unprivileged_images
        .iter()
        .any(|n| n.matches(image))
    {
        return;
    }
    let image = image.to_string();
    let Some(hc) = body.get_mut("HostConfig") else {
        return;
    };
    if hc.get("Privileged").and_then(Json::as_bool) != Some(true) {
        return;
    }
    hc.set("Privileged", Json::Bool(false));
    tracing::info!(target: "cistern::policy", image = %image, policy = %ctx.policy.name, "privileged create of a listed image: running it unprivileged");
    ctx.notes.push(format!(
        "HostConfig.Privileged: dropped for image {image} (unprivileged_images)"
    ));
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;
    use super::*;

    fn reaper_policy() -> Policy {
        policy_yaml("unprivileged_images: [testcontainers/ryuk, 'registry.test:5000/reaper:1.2']\nlimits: none")
    }

    #[test]
    fn a_listed_image_asking_privileged_runs_unprivileged() {
        let p = reaper_policy();
        for image in [
            "testcontainers/ryuk",
            "testcontainers/ryuk:0.11.0",
            "testcontainers/ryuk@sha256:0123",
            "registry.test:5000/reaper:1.2",
        ] {
            let body = format!(
                r#"{{"Image":"{image}","HostConfig":{{"Privileged":true,"Binds":["v:/v"]}}}}"#
            );
            let v = create(&p, &body).unwrap_or_else(|r| panic!("{image}: {r}"));
            assert_eq!(
                v.at(&["HostConfig", "Privileged"]),
                Some(&Json::Bool(false)),
                "{image}"
            );
        }
        // Case variants of the key are canonicalised first.
        let v = create(
            &p,
            r#"{"image":"testcontainers/ryuk:0.5.1","hostconfig":{"privileged":true}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"testcontainers/ryuk:0.5.1","HostConfig":{"Privileged":false}}"#
        );
    }

    #[test]
    fn other_images_and_everything_else_are_still_judged() {
        let p = reaper_policy();
        for (body, rule) in [
            (
                r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#,
                "privileged",
            ),
            (
                r#"{"Image":"testcontainers/ryuk-evil","HostConfig":{"Privileged":true}}"#,
                "privileged",
            ),
            (
                r#"{"Image":"other/testcontainers/ryuk","HostConfig":{"Privileged":true}}"#,
                "privileged",
            ),
            (
                r#"{"Image":"registry.test:5000/reaper:1.3","HostConfig":{"Privileged":true}}"#,
                "privileged",
            ),
            (
                r#"{"Image":"testcontainers/ryuk","HostConfig":{"Privileged":true,"CapAdd":["SYS_ADMIN"]}}"#,
                "cap_add",
            ),
            (
                r#"{"Image":"testcontainers/ryuk","HostConfig":{"Privileged":true,"PidMode":"host"}}"#,
                "namespace_host",
            ),
            (
                r#"{"Image":"testcontainers/ryuk","HostConfig":{"Binds":["/etc:/e"]}}"#,
                "bind_mount",
            ),
        ] {
            assert_eq!(refused(&p, body).rule, rule, "{body}");
        }
    }

    #[test]
    fn off_by_default() {
        let r = refused(
            &Policy::default(),
            r#"{"Image":"testcontainers/ryuk","HostConfig":{"Privileged":true}}"#,
        );
        assert_eq!(r.rule, "privileged");
    }

    #[test]
    fn entries_are_image_names() {
        for bad in ["", "Ryuk", "a b", "x@sha256:00", "x:"] {
            assert!(ImageName::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            ImageName::parse("host.test:5000/r"),
            Some(ImageName {
                repository: "host.test:5000/r".into(),
                tag: None
            })
        );
    }
}
