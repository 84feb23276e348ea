//! Devices: host devices in a container (`Devices`), device-driver requests (GPUs,
//! `DeviceRequests`) and device cgroup rules (`DeviceCgroupRules`, e.g. `c *:* rwm`
//! lets the container `mknod` and open any character device). All refused when
//! non-empty, on create and on update (`UpdateConfig` embeds `Resources`).

use super::{Ctx, Json, Refusal};

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The device fields of a `Resources` object (`HostConfig` or the update body).
pub fn resources(ctx: &mut Ctx<'_>, res: &Json, prefix: &str) -> Result<(), Refusal> {
    let non_empty = |k: &str| {
        res.get(k)
            .and_then(Json::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if non_empty("Devices") {
        ctx.deny(
            "devices",
            field(prefix, "Devices"),
            "host devices are not allowed",
        )?;
    }
    if non_empty("DeviceRequests") {
        ctx.deny(
            "device_requests",
            field(prefix, "DeviceRequests"),
            "device requests are not allowed",
        )?;
    }
    if non_empty("DeviceCgroupRules") {
        ctx.deny(
            "device_cgroup_rules",
            field(prefix, "DeviceCgroupRules"),
            "device cgroup rules are not allowed",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;

    #[test]
    fn devices_are_refused_when_present() {
        let p = Policy::default();
        for (body, rule) in [
            (
                r#"{"Image":"x","HostConfig":{"Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]}}"#,
                "devices",
            ),
            (
                r#"{"Image":"x","HostConfig":{"DeviceRequests":[{"Driver":"nvidia","Count":-1,"Capabilities":[["gpu"]]}]}}"#,
                "device_requests",
            ),
            (
                r#"{"Image":"x","HostConfig":{"DeviceCgroupRules":["c *:* rwm"]}}"#,
                "device_cgroup_rules",
            ),
        ] {
            assert_eq!(refused(&p, body).rule, rule);
        }
        create(&p, r#"{"Image":"x","HostConfig":{"Devices":[],"DeviceRequests":null,"DeviceCgroupRules":[]}}"#).unwrap();
    }

    #[test]
    fn update_cannot_add_devices() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/containers/c/update");
        let e = p
            .inspect_body(&r, br#"{"devices":[{"PathOnHost":"/dev/mem"}]}"#)
            .unwrap_err();
        assert_eq!((e.rule, e.field.as_str()), ("devices", "Devices"));
        p.inspect_body(&r, br#"{"Memory":0,"RestartPolicy":{"Name":"always"}}"#)
            .unwrap();
    }
}
