//! Networking: published ports, endpoint driver options, network create/connect.
//!
//! * `publish_host_ip`: every `PortBindings` entry's `HostIp` is forced to the
//!   configured address (cistern's value wins), and `PublishAllPorts: true` is
//!   refused because its addresses cannot be forced per port.
//! * Endpoint `DriverOpts` (create's `NetworkingConfig`, network connect) are
//!   driver-specific knobs (current moby even sets per-interface sysctls through
//!   them): refused when non-empty.
//! * Network create: only the `bridge` driver (`macvlan`/`ipvlan` attach to a host
//!   `parent` interface, `overlay` needs swarm), local scope, no `Ingress`,
//!   `ConfigOnly` or `ConfigFrom`, bridge options from a short allowlist (never
//!   `com.docker.network.bridge.name`, which can adopt an existing host bridge such
//!   as `docker0`, nor `host_binding_ipv4`), and no client IPAM: a chosen subnet
//!   adds a host route that can shadow networks the host itself uses. `Internal`,
//!   `Attachable`, `EnableIPv6` and labels are fine.

use super::{Ctx, Json, Refusal};

/// Bridge driver options a client may set.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.driver.mtu",
    "com.docker.network.container_iface_prefix",
];

/// Port publishing on a create `HostConfig`.
pub fn host_config(ctx: &mut Ctx<'_>, hc: &mut Json) -> Result<(), Refusal> {
    let Some(ip) = ctx.policy.publish_host_ip else {
        return Ok(());
    };
    if hc.get("PublishAllPorts").and_then(Json::as_bool) == Some(true) {
        ctx.deny(
            "publish_all_ports",
            "HostConfig.PublishAllPorts",
            "publishing all ports is not allowed (ports are published on a fixed address)",
        )?;
    }
    let ip = ip.to_string();
    let mut changed = false;
    if let Some(Json::Object(ports)) = hc.get_mut("PortBindings") {
        for (_, bindings) in ports.iter_mut() {
            if let Json::Array(list) = bindings {
                for b in list.iter_mut() {
                    if b.get("HostIp").and_then(Json::as_str) != Some(ip.as_str()) {
                        b.set("HostIp", Json::string(ip.clone()));
                        changed = true;
                    }
                }
            }
        }
    }
    if changed {
        ctx.notes.push(format!("published ports forced onto {ip}"));
    }
    Ok(())
}

fn endpoint(ctx: &mut Ctx<'_>, ep: &Json, field: &str) -> Result<(), Refusal> {
    if ep
        .get("DriverOpts")
        .and_then(Json::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        ctx.deny(
            "endpoint_driver_opts",
            format!("{field}.DriverOpts"),
            "endpoint driver options are not allowed",
        )?;
    }
    Ok(())
}

/// `NetworkingConfig.EndpointsConfig` on container create.
pub fn networking_config(ctx: &mut Ctx<'_>, body: &Json) -> Result<(), Refusal> {
    let eps: Vec<(String, Json)> = body
        .at(&["NetworkingConfig", "EndpointsConfig"])
        .and_then(Json::as_object)
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    for (name, ep) in eps {
        endpoint(
            ctx,
            &ep,
            &format!("NetworkingConfig.EndpointsConfig.{name}"),
        )?;
    }
    Ok(())
}

/// `POST /networks/{id}/connect`.
pub fn network_connect(ctx: &mut Ctx<'_>, body: &Json) -> Result<(), Refusal> {
    match body.get("EndpointConfig") {
        Some(ep) => endpoint(ctx, ep, "EndpointConfig"),
        None => Ok(()),
    }
}

/// `POST /networks/create`.
pub fn network_create(ctx: &mut Ctx<'_>, body: &Json) -> Result<(), Refusal> {
    let s = |k: &str| body.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let driver = s("Driver");
    if !(driver.is_empty() || driver == "bridge") {
        ctx.deny(
            "network_driver",
            "Driver",
            format_args!("network driver {driver:?} is not allowed"),
        )?;
    }
    let scope = s("Scope");
    if !(scope.is_empty() || scope == "local") {
        ctx.deny(
            "network_scope",
            "Scope",
            format_args!("network scope {scope:?} is not allowed"),
        )?;
    }
    for (key, rule) in [
        ("Ingress", "network_ingress"),
        ("ConfigOnly", "network_config_only"),
    ] {
        if body.get(key).and_then(Json::as_bool) == Some(true) {
            ctx.deny(rule, key, format_args!("{key} networks are not allowed"))?;
        }
    }
    if body.get("ConfigFrom").is_some() {
        ctx.deny(
            "network_config_from",
            "ConfigFrom",
            "networks from a config network are not allowed",
        )?;
    }
    let options: Vec<String> = body
        .get("Options")
        .and_then(Json::as_object)
        .map(|m| m.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for k in options {
        if !BRIDGE_OPTIONS.contains(&k.as_str()) {
            ctx.deny(
                "network_options",
                format!("Options.{k}"),
                format_args!("network option {k} is not allowed"),
            )?;
        }
    }
    if let Some(ipam) = body.get("IPAM") {
        let driver = ipam.get("Driver").and_then(Json::as_str).unwrap_or("");
        let non_empty_obj = |k: &str| {
            ipam.get(k)
                .and_then(Json::as_object)
                .is_some_and(|m| !m.is_empty())
        };
        let non_empty_arr = |k: &str| {
            ipam.get(k)
                .and_then(Json::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        if !(driver.is_empty() || driver == "default")
            || non_empty_obj("Options")
            || non_empty_arr("Config")
        {
            ctx.deny(
                "network_ipam",
                "IPAM",
                "choosing network addressing (IPAM driver, options or subnets) is not allowed",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Policy;
    use super::*;

    #[test]
    fn published_ports_are_forced_onto_the_configured_address() {
        let p = policy_yaml("publish_host_ip: 127.0.0.1");
        let v = create(&p, r#"{"Image":"x","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"},{"HostPort":"8081"}],"53/udp":[{"HostIp":"","HostPort":""}]}}}"#).unwrap();
        let pb = v.at(&["HostConfig", "PortBindings"]).unwrap();
        for (_, list) in pb.as_object().unwrap() {
            for b in list.as_array().unwrap() {
                assert_eq!(b.get("HostIp").and_then(Json::as_str), Some("127.0.0.1"));
            }
        }
        assert_eq!(
            refused(&p, r#"{"Image":"x","HostConfig":{"PublishAllPorts":true}}"#).rule,
            "publish_all_ports"
        );
        create(
            &p,
            r#"{"Image":"x","HostConfig":{"PublishAllPorts":false}}"#,
        )
        .unwrap();
        // Without the setting, ports are left alone.
        let v = create(&Policy::default(), r#"{"Image":"x","HostConfig":{"PublishAllPorts":true,"PortBindings":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"80"}]}}}"#).unwrap();
        assert_eq!(
            v.at(&["HostConfig", "PortBindings", "80/tcp"])
                .unwrap()
                .as_array()
                .unwrap()[0]
                .get("HostIp")
                .and_then(Json::as_str),
            Some("0.0.0.0")
        );
    }

    #[test]
    fn endpoint_driver_options_are_refused() {
        let p = Policy::default();
        assert_eq!(refused(&p, r#"{"Image":"x","NetworkingConfig":{"EndpointsConfig":{"n":{"DriverOpts":{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}}}}}"#).rule, "endpoint_driver_opts");
        create(&p, r#"{"Image":"x","NetworkingConfig":{"EndpointsConfig":{"n":{"Aliases":["db"],"IPAMConfig":{"IPv4Address":"172.20.0.5"},"DriverOpts":{}}}}}"#).unwrap();
        let r = route("POST", "/v1.41/networks/n/connect");
        assert_eq!(
            p.inspect_body(
                &r,
                br#"{"Container":"c","EndpointConfig":{"DriverOpts":{"a":"b"}}}"#
            )
            .unwrap_err()
            .rule,
            "endpoint_driver_opts"
        );
        p.inspect_body(
            &r,
            br#"{"Container":"c","EndpointConfig":{"Aliases":["x"]}}"#,
        )
        .unwrap();
    }

    #[test]
    fn network_create_is_bridge_only_without_host_knobs() {
        let p = Policy::default();
        let r = route("POST", "/v1.41/networks/create");
        for (body, rule) in [
            (
                r#"{"Name":"n","Driver":"macvlan","Options":{"parent":"eth0"}}"#,
                "network_driver",
            ),
            (r#"{"Name":"n","Driver":"host"}"#, "network_driver"),
            (r#"{"Name":"n","Driver":"overlay"}"#, "network_driver"),
            (r#"{"Name":"n","Scope":"swarm"}"#, "network_scope"),
            (r#"{"Name":"n","Ingress":true}"#, "network_ingress"),
            (r#"{"Name":"n","ConfigOnly":true}"#, "network_config_only"),
            (
                r#"{"Name":"n","ConfigFrom":{"Network":"cfg"}}"#,
                "network_config_from",
            ),
            (
                r#"{"Name":"n","Options":{"com.docker.network.bridge.name":"docker0"}}"#,
                "network_options",
            ),
            (
                r#"{"Name":"n","Options":{"com.docker.network.bridge.host_binding_ipv4":"0.0.0.0"}}"#,
                "network_options",
            ),
            (
                r#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.0.0.0/8"}]}}"#,
                "network_ipam",
            ),
            (r#"{"Name":"n","IPAM":{"Driver":"dhcp"}}"#, "network_ipam"),
        ] {
            assert_eq!(
                p.inspect_body(&r, body.as_bytes()).unwrap_err().rule,
                rule,
                "{body}"
            );
        }
        for body in [
            r#"{"Name":"n"}"#,
            r#"{"Name":"n","Driver":"bridge","CheckDuplicate":true,"Internal":true,"Attachable":true,"EnableIPv6":false,"IPAM":{"Driver":"default","Config":[],"Options":{}},"Options":{"com.docker.network.driver.mtu":"1400"},"Labels":{"ci":"1"}}"#,
        ] {
            p.inspect_body(&r, body.as_bytes()).unwrap();
        }
    }
}
