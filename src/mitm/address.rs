//! Where the caching proxy listens when `caching.proxy.http`/`https` are
//! not set: on the address containers reach the host at, and nowhere else.
//!
//! Containers reach the proxy through the extra hosts cistern injects:
//! `host-gateway`, or the IP in `caching.inject.address`. dockerd resolves
//! `host-gateway` to the default bridge's gateway, the address of the
//! bridge's interface (`docker0`) on the host. Some daemons (Debian's
//! dockerd 20.10 with default settings among them) leave the gateway out of
//! the bridge network's IPAM config; the interface the network's options
//! name (`com.docker.network.bridge.name`) still carries it.
//!
//! [`bridge_address`] decides from a network inspect and the host's
//! interface addresses, without I/O; [`listen_addresses`] asks the kernel
//! for those, and the server hands it the daemon's answer (this room never
//! calls the daemon). When no such address is found, the proxy does not start:
//! listening on every address would open it on the host's other networks.
//! A daemon started with its own `--host-gateway-ip` is not seen through
//! the API: set the proxy's addresses (or `inject.address`) then.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use super::error::{AddressError, StartError};
use super::CachingConfig;

/// The interface of the default bridge when the network's options name none.
const DEFAULT_BRIDGE_INTERFACE: &str = "docker0";

/// The network option naming the bridge's interface on the host.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// One IPv4 address of one of the host's network interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface (`docker0`, `eth0`...).
    pub name: String,
    /// One of its addresses.
    pub address: Ipv4Addr,
}

/// Whether [`listen_addresses`] needs the daemon's default bridge network
/// (`GET /networks/bridge`): the proxy's addresses are not both set and
/// containers reach it through `host-gateway`. The server reads it.
pub fn needs_bridge(config: &CachingConfig) -> bool {
    !(config.http.is_some() && config.https.is_some())
        && config.inject_address.parse::<IpAddr>().is_err()
}

/// Where the proxy listens: the configured addresses, or ports 80 and 443
/// on the address containers reach it at (`inject.address`, or for
/// `host-gateway` the default bridge's address on this host, from
/// `bridge`, the daemon's answer the server read when [`needs_bridge`]).
/// Refuses when that address cannot be found rather than listening on every
/// address.
pub fn listen_addresses(
    config: &CachingConfig,
    bridge: Option<Result<Value, AddressError>>,
) -> Result<(SocketAddr, SocketAddr), StartError> {
    if let (Some(http), Some(https)) = (config.http, config.https) {
        return Ok((http, https));
    }
    let ip = match config.inject_address.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let gateway = bridge
                .unwrap_or_else(|| {
                    Err(AddressError::Daemon(
                        "the daemon's bridge network was not read".into(),
                    ))
                })
                .and_then(|inspect| bridge_address(&inspect, &host_interfaces()?));
            IpAddr::V4(gateway.map_err(|source| StartError::NoListenAddress { source })?)
        }
    };
    Ok((
        config.http.unwrap_or(SocketAddr::new(ip, 80)),
        config.https.unwrap_or(SocketAddr::new(ip, 443)),
    ))
}

/// The host's IPv4 interface addresses.
fn host_interfaces() -> Result<Vec<InterfaceAddress>, AddressError> {
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|err| AddressError::Interfaces(err.to_string()))?;
    Ok(addresses
        .filter_map(|a| {
            let address = a.address?.as_sockaddr_in()?.ip();
            Some(InterfaceAddress {
                name: a.interface_name,
                address,
            })
        })
        .collect())
}

/// The address containers on the bridge network described by `inspect`
/// (`GET /networks/bridge`) reach the host at: its IPv4 gateway when the
/// daemon reports one, else the IPv4 address, within the network's subnet,
/// of the interface its options name. Either must be one of `interfaces`
/// (the host's), or the proxy could not listen there.
pub fn bridge_address(
    inspect: &Value,
    interfaces: &[InterfaceAddress],
) -> Result<Ipv4Addr, AddressError> {
    if !inspect.is_object() {
        return Err(AddressError::BadInspect);
    }
    let configs: &[Value] = inspect
        .get("IPAM")
        .and_then(|ipam| ipam.get("Config"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let text = |config: &Value, key: &str| config.get(key)?.as_str().map(str::to_owned);
    if let Some(gateway) = configs
        .iter()
        .find_map(|c| text(c, "Gateway")?.parse::<Ipv4Addr>().ok())
    {
        return if interfaces.iter().any(|i| i.address == gateway) {
            Ok(gateway)
        } else {
            Err(AddressError::GatewayNotLocal { gateway })
        };
    }
    let subnets: Vec<String> = configs.iter().filter_map(|c| text(c, "Subnet")).collect();
    let v4_subnets: Vec<(Ipv4Addr, u32)> = subnets.iter().filter_map(|s| ipv4_net(s)).collect();
    let name = inspect
        .get("Options")
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_BRIDGE_INTERFACE);
    let mut own = interfaces.iter().filter(|i| i.name == name).peekable();
    if own.peek().is_none() {
        return Err(AddressError::NoInterface {
            name: name.to_owned(),
        });
    }
    own.map(|i| i.address)
        .find(|a| v4_subnets.is_empty() || v4_subnets.iter().any(|&net| contains(net, *a)))
        .ok_or_else(|| AddressError::NoAddress {
            name: name.to_owned(),
            subnets: subnets.join(", "),
        })
}

/// An IPv4 network written `a.b.c.d/n`.
fn ipv4_net(text: &str) -> Option<(Ipv4Addr, u32)> {
    let (address, prefix) = text.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    Some((address.parse().ok()?, prefix))
}

fn contains((network, prefix): (Ipv4Addr, u32), address: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(network) & mask == u32::from(address) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker network inspect bridge` of Debian's dockerd 20.10: no gateway.
    const DEBIAN_20_10: &str = r#"{"Name":"bridge","Driver":"bridge","IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.17.0.0/16"}]},"Options":{"com.docker.network.bridge.default_bridge":"true","com.docker.network.bridge.name":"docker0","com.docker.network.driver.mtu":"1500"}}"#;

    /// The same network on a daemon that reports its gateway.
    const WITH_GATEWAY: &str = r#"{"Name":"bridge","IPAM":{"Config":[{"Subnet":"fd00::/64","Gateway":"fd00::1"},{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]},"Options":{"com.docker.network.bridge.name":"docker0"}}"#;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn host(list: &[(&str, [u8; 4])]) -> Vec<InterfaceAddress> {
        list.iter()
            .map(|(name, a)| InterfaceAddress {
                name: (*name).to_owned(),
                address: Ipv4Addr::from(*a),
            })
            .collect()
    }

    fn runner() -> Vec<InterfaceAddress> {
        host(&[
            ("lo", [127, 0, 0, 1]),
            ("eth0", [192, 0, 2, 2]),
            ("docker0", [172, 17, 0, 1]),
        ])
    }

    #[test]
    fn without_a_gateway_the_bridge_interface_address_is_used() {
        assert_eq!(
            bridge_address(&json(DEBIAN_20_10), &runner()),
            Ok(Ipv4Addr::new(172, 17, 0, 1))
        );
    }

    #[test]
    fn the_interface_is_the_one_the_network_names_and_its_address_in_the_subnet() {
        let inspect = json(
            r#"{"IPAM":{"Config":[{"Subnet":"10.20.0.0/24"}]},"Options":{"com.docker.network.bridge.name":"br-ci"}}"#,
        );
        let interfaces = host(&[
            ("docker0", [172, 17, 0, 1]),
            ("br-ci", [192, 168, 9, 1]),
            ("br-ci", [10, 20, 0, 1]),
        ]);
        assert_eq!(
            bridge_address(&inspect, &interfaces),
            Ok(Ipv4Addr::new(10, 20, 0, 1))
        );
        // No name in the options: docker0, dockerd's default.
        let unnamed = json(r#"{"IPAM":{"Config":[{"Subnet":"172.17.0.0/16"}]},"Options":{}}"#);
        assert_eq!(
            bridge_address(&unnamed, &interfaces),
            Ok(Ipv4Addr::new(172, 17, 0, 1))
        );
    }

    #[test]
    fn a_reported_gateway_is_used_when_it_is_an_address_of_this_host() {
        assert_eq!(
            bridge_address(&json(WITH_GATEWAY), &runner()),
            Ok(Ipv4Addr::new(172, 17, 0, 1))
        );
        let elsewhere = host(&[("lo", [127, 0, 0, 1]), ("eth0", [192, 0, 2, 2])]);
        assert_eq!(
            bridge_address(&json(WITH_GATEWAY), &elsewhere),
            Err(AddressError::GatewayNotLocal {
                gateway: Ipv4Addr::new(172, 17, 0, 1)
            })
        );
    }

    #[test]
    fn a_bridge_interface_missing_from_this_host_is_refused() {
        // A daemon on another host, or cistern in another network namespace.
        let no_bridge = host(&[("lo", [127, 0, 0, 1]), ("eth0", [192, 0, 2, 2])]);
        let err = bridge_address(&json(DEBIAN_20_10), &no_bridge).unwrap_err();
        assert_eq!(
            err,
            AddressError::NoInterface {
                name: "docker0".into()
            }
        );
        assert!(err
            .to_string()
            .contains("this host has no interface docker0"));
        let renamed = DEBIAN_20_10.replace("\"docker0\"", "\"br-gone\"");
        assert_eq!(
            bridge_address(&json(&renamed), &runner()),
            Err(AddressError::NoInterface {
                name: "br-gone".into()
            })
        );
    }

    #[test]
    fn a_bridge_interface_without_an_address_in_the_subnet_is_refused() {
        let other_subnet = host(&[("docker0", [10, 99, 0, 1])]);
        assert_eq!(
            bridge_address(&json(DEBIAN_20_10), &other_subnet),
            Err(AddressError::NoAddress {
                name: "docker0".into(),
                subnets: "172.17.0.0/16".into()
            })
        );
        assert_eq!(
            bridge_address(&json("[]"), &runner()),
            Err(AddressError::BadInspect)
        );
    }

    #[test]
    fn the_refusal_says_what_to_set() {
        let err = StartError::NoListenAddress {
            source: AddressError::NoInterface {
                name: "docker0".into(),
            },
        };
        let text = err.to_string();
        assert!(text.contains("caching.proxy.http"), "{text}");
        assert!(text.contains("caching.proxy.https"), "{text}");
        assert!(text.contains("docker0"), "{text}");
    }

    #[test]
    fn subnets_contain_their_addresses() {
        let net = ipv4_net("172.17.0.0/16").unwrap();
        assert!(contains(net, Ipv4Addr::new(172, 17, 255, 1)));
        assert!(!contains(net, Ipv4Addr::new(172, 18, 0, 1)));
        assert!(contains(
            ipv4_net("0.0.0.0/0").unwrap(),
            Ipv4Addr::LOCALHOST
        ));
        assert_eq!(ipv4_net("172.17.0.0/33"), None);
        assert_eq!(ipv4_net("fd00::/64"), None);
    }
}
