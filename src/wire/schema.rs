//! The Docker request bodies cistern inspects, as data: for each object, its exact
//! field names (as Go's `encoding/json` spells them, `json:"..."` tags applied) and
//! Go types, and whether a policy rule reads the field (`sec: true`).
//!
//! The field sets are the union of Docker 20.10 (API 1.41) and current moby
//! (`api/types/container/{config,hostconfig,hostconfig_unix}.go`,
//! `api/types/mount/mount.go`, `api/types/network/*.go`, `api/types/volume/`,
//! `ExecConfig`/`ExecCreateRequest`, `NetworkCreateRequest`), so that a daemon
//! upgrade never reads a field cistern silently forwarded. Embedded structs
//! (`HostConfig` embeds `Resources`, `UpdateConfig` embeds `Resources`,
//! `NetworkCreateRequest` embeds `NetworkCreate`) are flattened, as Go does.
//!
//! Deliberately absent: 20.10's `ContainerConfigWrapper` also embedded
//! `*HostConfig` at the top level of the create body ("Deprecated. Exported to
//! read attributes from json that are not in the inner host config structure"), so
//! 20.10 reads `{"Image":"x","Privileged":true}` as a privileged container when
//! `HostConfig` is absent, and copies top-level `Memory`, `CpuShares`,
//! `CpusetCpus`, `VolumeDriver` (and `Cpuset`) into it when present. Those
//! top-level keys are unknown here, so they are refused (or dropped), except
//! with `null` (no meaning to Go) and dockerode's empty `VolumesFrom`
//! ([`Ty::EmptyOnly`]); see [`json`](super::json) for the rule.
//!
//! This is not bollard's model: bollard's typed structs drop unknown fields and
//! cannot tell `null` from absent; this table only names fields.

/// A Go type, as far as JSON decoding is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Bool,
    /// `int`, `int64`, `*int64`, `time.Duration` (amd64/arm64: `int` is 64-bit).
    I64,
    U16,
    /// `uint32`, `os.FileMode`.
    U32,
    /// `uint`, `uint64`.
    U64,
    Str,
    /// `strslice.StrSlice` (20.10): a string or an array of strings.
    StrSlice,
    List(&'static Ty),
    /// `map[string]T`: keys match exactly.
    Map(&'static Ty),
    /// `map[string]struct{}` (`Volumes`, `ExposedPorts`).
    Set,
    Obj(&'static Obj),
    /// A field cistern never forwards (swarm-only); any non-null value is refused.
    Never,
    /// A field real clients send that no daemon reads: accepted with any value
    /// and dropped from the forwarded body (so it is never forwarded unchecked).
    Ignored,
    /// A field that only some daemon versions read and that a released client
    /// sends empty, where the daemons that read it take empty as absent: an
    /// empty value of the type (`[]`, `{}`, `""`, `false`, `0`) is dropped, any
    /// other value is treated as an unknown field (refused, or dropped under
    /// `unknown_fields: drop`).
    EmptyOnly(&'static Ty),
}

/// A struct field: its exact JSON name, type, and whether a rule reads it.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub sec: bool,
}

/// A Go struct, as groups of fields (embedded structs are extra groups).
#[derive(Debug)]
pub struct Obj {
    pub name: &'static str,
    pub groups: &'static [&'static [Field]],
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        sec: false,
    }
}

/// A field a policy rule reads.
const fn s(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        sec: true,
    }
}

const STR_LIST: Ty = Ty::List(&Ty::Str);
const STR_MAP: Ty = Ty::Map(&Ty::Str);

// Element types that name an object (statics, so that they can be borrowed for
// 'static inside the field tables).
static T_DEVICE_MAPPING: Ty = Ty::Obj(&DEVICE_MAPPING);
static T_DEVICE_REQUEST: Ty = Ty::Obj(&DEVICE_REQUEST);
static T_ENDPOINT_SETTINGS: Ty = Ty::Obj(&ENDPOINT_SETTINGS);
static T_IPAM_CONFIG: Ty = Ty::Obj(&IPAM_CONFIG);
static T_MOUNT: Ty = Ty::Obj(&MOUNT);
static T_PORT_BINDING: Ty = Ty::Obj(&PORT_BINDING);
static T_PORT_BINDING_LIST: Ty = Ty::List(&T_PORT_BINDING);
static T_THROTTLE_DEVICE: Ty = Ty::Obj(&THROTTLE_DEVICE);
static T_ULIMIT: Ty = Ty::Obj(&ULIMIT);
static T_WEIGHT_DEVICE: Ty = Ty::Obj(&WEIGHT_DEVICE);

/// `container.Config`.
pub const CONFIG_FIELDS: &[Field] = &[
    f("Hostname", Ty::Str),
    f("Domainname", Ty::Str),
    f("User", Ty::Str),
    f("AttachStdin", Ty::Bool),
    f("AttachStdout", Ty::Bool),
    f("AttachStderr", Ty::Bool),
    f("ExposedPorts", Ty::Set),
    f("Tty", Ty::Bool),
    f("OpenStdin", Ty::Bool),
    f("StdinOnce", Ty::Bool),
    s("Env", STR_LIST),
    f("Cmd", Ty::StrSlice),
    f("Healthcheck", Ty::Obj(&HEALTH_CONFIG)),
    f("ArgsEscaped", Ty::Bool),
    f("Image", Ty::Str),
    f("Volumes", Ty::Set),
    f("WorkingDir", Ty::Str),
    f("Entrypoint", Ty::StrSlice),
    f("NetworkDisabled", Ty::Bool),
    f("MacAddress", Ty::Str),
    f("OnBuild", STR_LIST),
    s("Labels", STR_MAP),
    f("StopSignal", Ty::Str),
    f("StopTimeout", Ty::I64),
    f("Shell", Ty::StrSlice),
];

pub static HEALTH_CONFIG: Obj = Obj {
    name: "HealthConfig",
    groups: &[&[
        f("Test", STR_LIST),
        f("Interval", Ty::I64),
        f("Timeout", Ty::I64),
        f("StartPeriod", Ty::I64),
        f("StartInterval", Ty::I64),
        f("Retries", Ty::I64),
    ]],
};

/// `container.Config` as a body on its own (`POST /commit`).
pub static CONFIG: Obj = Obj {
    name: "Config",
    groups: &[CONFIG_FIELDS, COMMIT_QUERY_ECHO],
};

/// dockerode (and testcontainers-node's `commit()` through it) sends its commit
/// options both as the query and as the body. dockerd reads them from the query
/// only: 20.10 decodes the body as a create body and keeps only its `Config`,
/// current moby decodes it as a bare `Config`; these keys are in neither.
const COMMIT_QUERY_ECHO: &[Field] = &[
    f("container", Ty::Ignored),
    f("repo", Ty::Ignored),
    f("tag", Ty::Ignored),
    f("comment", Ty::Ignored),
    f("author", Ty::Ignored),
    f("pause", Ty::Ignored),
    f("changes", Ty::Ignored),
];

/// `POST /containers/create`: `Config` fields at the top level, plus `HostConfig`
/// and `NetworkingConfig` (current moby's `container.CreateRequest`).
pub static CONTAINER_CREATE: Obj = Obj {
    name: "container create",
    groups: &[
        CONFIG_FIELDS,
        &[
            s("HostConfig", Ty::Obj(&HOST_CONFIG)),
            s("NetworkingConfig", Ty::Obj(&NETWORKING_CONFIG)),
            // dockerode (and testcontainers-node through it) sends its options
            // both as the query and as the body; dockerd reads `name` and
            // `platform` from the query only and ignores them here.
            f("name", Ty::Ignored),
            f("platform", Ty::Ignored),
            // dockerode's `docker.run()` sends `"VolumesFrom": []` at the top
            // level. 20.10 reads top-level keys into its embedded `HostConfig`
            // (used only when the body has no `HostConfig`), where an empty
            // list is no list; current moby ignores the key. Anything but
            // empty would name containers whose volumes 20.10 mounts.
            f("VolumesFrom", Ty::EmptyOnly(&STR_LIST)),
        ],
    ],
};

/// `container.Resources` (embedded in `HostConfig` and `UpdateConfig`).
pub const RESOURCES_FIELDS: &[Field] = &[
    f("CpuShares", Ty::I64),
    s("Memory", Ty::I64),
    s("NanoCpus", Ty::I64),
    s("CgroupParent", Ty::Str),
    f("BlkioWeight", Ty::U16),
    f("BlkioWeightDevice", Ty::List(&T_WEIGHT_DEVICE)),
    f("BlkioDeviceReadBps", Ty::List(&T_THROTTLE_DEVICE)),
    f("BlkioDeviceWriteBps", Ty::List(&T_THROTTLE_DEVICE)),
    f("BlkioDeviceReadIOps", Ty::List(&T_THROTTLE_DEVICE)),
    f("BlkioDeviceWriteIOps", Ty::List(&T_THROTTLE_DEVICE)),
    s("CpuPeriod", Ty::I64),
    s("CpuQuota", Ty::I64),
    s("CpuRealtimePeriod", Ty::I64),
    s("CpuRealtimeRuntime", Ty::I64),
    f("CpusetCpus", Ty::Str),
    f("CpusetMems", Ty::Str),
    s("Devices", Ty::List(&T_DEVICE_MAPPING)),
    s("DeviceCgroupRules", STR_LIST),
    s("DeviceRequests", Ty::List(&T_DEVICE_REQUEST)),
    // 20.10 only (removed in current moby).
    f("KernelMemory", Ty::I64),
    f("KernelMemoryTCP", Ty::I64),
    f("MemoryReservation", Ty::I64),
    s("MemorySwap", Ty::I64),
    f("MemorySwappiness", Ty::I64),
    s("OomKillDisable", Ty::Bool),
    s("PidsLimit", Ty::I64),
    s("Ulimits", Ty::List(&T_ULIMIT)),
    f("CpuCount", Ty::I64),
    f("CpuPercent", Ty::I64),
    f("IOMaximumIOps", Ty::U64),
    f("IOMaximumBandwidth", Ty::U64),
];

/// `container.HostConfig` without the embedded `Resources`.
pub const HOST_FIELDS: &[Field] = &[
    s("Binds", STR_LIST),
    f("ContainerIDFile", Ty::Str),
    s("LogConfig", Ty::Obj(&LOG_CONFIG)),
    s("NetworkMode", Ty::Str),
    s("PortBindings", Ty::Map(&T_PORT_BINDING_LIST)),
    f("RestartPolicy", Ty::Obj(&RESTART_POLICY)),
    f("AutoRemove", Ty::Bool),
    s("VolumeDriver", Ty::Str),
    s("VolumesFrom", STR_LIST),
    f("ConsoleSize", Ty::List(&Ty::U64)),
    s("Annotations", STR_MAP),
    s("CapAdd", Ty::StrSlice),
    f("CapDrop", Ty::StrSlice),
    s("CgroupnsMode", Ty::Str),
    f("Dns", STR_LIST),
    f("DnsOptions", STR_LIST),
    f("DnsSearch", STR_LIST),
    s("ExtraHosts", STR_LIST),
    f("GroupAdd", STR_LIST),
    s("IpcMode", Ty::Str),
    s("Cgroup", Ty::Str),
    f("Links", STR_LIST),
    s("OomScoreAdj", Ty::I64),
    s("PidMode", Ty::Str),
    s("Privileged", Ty::Bool),
    s("PublishAllPorts", Ty::Bool),
    f("ReadonlyRootfs", Ty::Bool),
    s("SecurityOpt", STR_LIST),
    f("StorageOpt", STR_MAP),
    s("Tmpfs", STR_MAP),
    s("UTSMode", Ty::Str),
    s("UsernsMode", Ty::Str),
    s("ShmSize", Ty::I64),
    s("Sysctls", STR_MAP),
    s("Runtime", Ty::Str),
    s("Isolation", Ty::Str),
    s("Mounts", Ty::List(&T_MOUNT)),
    s("MaskedPaths", STR_LIST),
    s("ReadonlyPaths", STR_LIST),
    s("Init", Ty::Bool),
    // docker-py's `lxc_conf`: no daemon has read it since the LXC driver was
    // removed (Docker 1.10).
    f("LxcConf", Ty::Ignored),
];

pub static HOST_CONFIG: Obj = Obj {
    name: "HostConfig",
    groups: &[HOST_FIELDS, RESOURCES_FIELDS],
};

/// `POST /containers/{id}/update`: `container.UpdateConfig`.
pub static CONTAINER_UPDATE: Obj = Obj {
    name: "container update",
    groups: &[
        RESOURCES_FIELDS,
        &[
            f("RestartPolicy", Ty::Obj(&RESTART_POLICY)),
            // The API spec's `Resources` lists `Init`, so clients generated
            // from it (bollard's `ContainerUpdateBody`) can send it; Go's
            // `UpdateConfig` has no such field and dockerd ignores it.
            f("Init", Ty::Ignored),
        ],
    ],
};

pub static WEIGHT_DEVICE: Obj = Obj {
    name: "WeightDevice",
    groups: &[&[f("Path", Ty::Str), f("Weight", Ty::U16)]],
};

pub static THROTTLE_DEVICE: Obj = Obj {
    name: "ThrottleDevice",
    groups: &[&[f("Path", Ty::Str), f("Rate", Ty::U64)]],
};

pub static DEVICE_MAPPING: Obj = Obj {
    name: "DeviceMapping",
    groups: &[&[
        f("PathOnHost", Ty::Str),
        f("PathInContainer", Ty::Str),
        f("CgroupPermissions", Ty::Str),
    ]],
};

pub static DEVICE_REQUEST: Obj = Obj {
    name: "DeviceRequest",
    groups: &[&[
        f("Driver", Ty::Str),
        f("Count", Ty::I64),
        f("DeviceIDs", STR_LIST),
        f("Capabilities", Ty::List(&STR_LIST)),
        f("Options", STR_MAP),
    ]],
};

pub static ULIMIT: Obj = Obj {
    name: "Ulimit",
    groups: &[&[s("Name", Ty::Str), s("Hard", Ty::I64), s("Soft", Ty::I64)]],
};

pub static RESTART_POLICY: Obj = Obj {
    name: "RestartPolicy",
    groups: &[&[f("Name", Ty::Str), f("MaximumRetryCount", Ty::I64)]],
};

pub static LOG_CONFIG: Obj = Obj {
    name: "LogConfig",
    groups: &[&[s("Type", Ty::Str), s("Config", STR_MAP)]],
};

pub static PORT_BINDING: Obj = Obj {
    name: "PortBinding",
    groups: &[&[s("HostIp", Ty::Str), f("HostPort", Ty::Str)]],
};

pub static MOUNT: Obj = Obj {
    name: "Mount",
    groups: &[&[
        s("Type", Ty::Str),
        s("Source", Ty::Str),
        f("Target", Ty::Str),
        s("ReadOnly", Ty::Bool),
        f("Consistency", Ty::Str),
        s("BindOptions", Ty::Obj(&BIND_OPTIONS)),
        s("VolumeOptions", Ty::Obj(&VOLUME_OPTIONS)),
        f("ImageOptions", Ty::Obj(&IMAGE_OPTIONS)),
        f("TmpfsOptions", Ty::Obj(&TMPFS_OPTIONS)),
        s("ClusterOptions", Ty::Never),
    ]],
};

pub static BIND_OPTIONS: Obj = Obj {
    name: "BindOptions",
    groups: &[&[
        s("Propagation", Ty::Str),
        f("NonRecursive", Ty::Bool),
        f("CreateMountpoint", Ty::Bool),
        s("ReadOnlyNonRecursive", Ty::Bool),
        f("ReadOnlyForceRecursive", Ty::Bool),
    ]],
};

pub static VOLUME_OPTIONS: Obj = Obj {
    name: "VolumeOptions",
    groups: &[&[
        f("NoCopy", Ty::Bool),
        f("Labels", STR_MAP),
        s("Subpath", Ty::Str),
        s("DriverConfig", Ty::Obj(&MOUNT_DRIVER)),
    ]],
};

pub static MOUNT_DRIVER: Obj = Obj {
    name: "Driver",
    groups: &[&[s("Name", Ty::Str), s("Options", STR_MAP)]],
};

pub static IMAGE_OPTIONS: Obj = Obj {
    name: "ImageOptions",
    groups: &[&[s("Subpath", Ty::Str)]],
};

pub static TMPFS_OPTIONS: Obj = Obj {
    name: "TmpfsOptions",
    groups: &[&[
        f("SizeBytes", Ty::I64),
        f("Mode", Ty::U32),
        f("Options", Ty::List(&STR_LIST)),
    ]],
};

pub static NETWORKING_CONFIG: Obj = Obj {
    name: "NetworkingConfig",
    groups: &[&[s("EndpointsConfig", Ty::Map(&T_ENDPOINT_SETTINGS))]],
};

pub static ENDPOINT_SETTINGS: Obj = Obj {
    name: "EndpointSettings",
    groups: &[&[
        f("IPAMConfig", Ty::Obj(&ENDPOINT_IPAM_CONFIG)),
        f("Links", STR_LIST),
        f("Aliases", STR_LIST),
        s("DriverOpts", STR_MAP),
        f("GwPriority", Ty::I64),
        f("NetworkID", Ty::Str),
        f("EndpointID", Ty::Str),
        f("Gateway", Ty::Str),
        f("IPAddress", Ty::Str),
        f("IPPrefixLen", Ty::I64),
        f("IPv6Gateway", Ty::Str),
        f("GlobalIPv6Address", Ty::Str),
        f("GlobalIPv6PrefixLen", Ty::I64),
        f("MacAddress", Ty::Str),
        f("DNSNames", STR_LIST),
    ]],
};

pub static ENDPOINT_IPAM_CONFIG: Obj = Obj {
    name: "EndpointIPAMConfig",
    groups: &[&[
        f("IPv4Address", Ty::Str),
        f("IPv6Address", Ty::Str),
        f("LinkLocalIPs", STR_LIST),
    ]],
};

/// `POST /containers/{id}/exec`: `ExecConfig` (20.10) / `ExecCreateRequest`.
pub static EXEC_CREATE: Obj = Obj {
    name: "exec create",
    groups: &[&[
        f("User", Ty::Str),
        s("Privileged", Ty::Bool),
        f("Tty", Ty::Bool),
        f("ConsoleSize", Ty::List(&Ty::U64)),
        f("AttachStdin", Ty::Bool),
        f("AttachStderr", Ty::Bool),
        f("AttachStdout", Ty::Bool),
        f("Detach", Ty::Bool),
        f("DetachKeys", Ty::Str),
        f("Env", STR_LIST),
        f("WorkingDir", Ty::Str),
        f("Cmd", Ty::StrSlice),
        // docker-py (and docker-compose v1 through it) sends the container's
        // name here too; dockerd's `ExecConfig` has no such field and takes the
        // container from the path only.
        f("Container", Ty::Ignored),
    ]],
};

/// `POST /exec/{id}/start`: `ExecStartCheck` / `ExecStartRequest`.
pub static EXEC_START: Obj = Obj {
    name: "exec start",
    groups: &[&[
        f("Detach", Ty::Bool),
        f("Tty", Ty::Bool),
        f("ConsoleSize", Ty::List(&Ty::U64)),
        // bollard's `StartExecOptions` serialises its own read-buffer size;
        // dockerd has no such field and ignores it.
        f("OutputCapacity", Ty::Ignored),
        // dockerode (testcontainers-node) sends its own client-side options
        // `stdin` and `hijack` in the body; dockerd ignores them.
        f("stdin", Ty::Ignored),
        f("hijack", Ty::Ignored),
    ]],
};

/// `POST /volumes/create`: `VolumeCreateBody` / `volume.CreateRequest`.
pub static VOLUME_CREATE: Obj = Obj {
    name: "volume create",
    groups: &[&[
        f("Name", Ty::Str),
        s("Driver", Ty::Str),
        s("DriverOpts", STR_MAP),
        f("Labels", STR_MAP),
        s("ClusterVolumeSpec", Ty::Never),
    ]],
};

/// `POST /networks/create`: `NetworkCreateRequest` (`Name` + embedded
/// `NetworkCreate`) / `network.CreateRequest`.
pub static NETWORK_CREATE: Obj = Obj {
    name: "network create",
    groups: &[&[
        f("Name", Ty::Str),
        f("CheckDuplicate", Ty::Bool),
        s("Driver", Ty::Str),
        s("Scope", Ty::Str),
        f("EnableIPv4", Ty::Bool),
        f("EnableIPv6", Ty::Bool),
        s("IPAM", Ty::Obj(&IPAM)),
        f("Internal", Ty::Bool),
        f("Attachable", Ty::Bool),
        s("Ingress", Ty::Bool),
        s("ConfigOnly", Ty::Bool),
        s("ConfigFrom", Ty::Obj(&CONFIG_REFERENCE)),
        s("Options", STR_MAP),
        f("Labels", STR_MAP),
    ]],
};

pub static IPAM: Obj = Obj {
    name: "IPAM",
    groups: &[&[
        s("Driver", Ty::Str),
        s("Options", STR_MAP),
        s("Config", Ty::List(&T_IPAM_CONFIG)),
    ]],
};

pub static IPAM_CONFIG: Obj = Obj {
    name: "IPAMConfig",
    groups: &[&[
        f("Subnet", Ty::Str),
        f("IPRange", Ty::Str),
        f("Gateway", Ty::Str),
        f("AuxiliaryAddresses", STR_MAP),
    ]],
};

pub static CONFIG_REFERENCE: Obj = Obj {
    name: "ConfigReference",
    groups: &[&[f("Network", Ty::Str)]],
};

/// `POST /networks/{id}/connect`.
pub static NETWORK_CONNECT: Obj = Obj {
    name: "network connect",
    groups: &[&[
        f("Container", Ty::Str),
        s("EndpointConfig", Ty::Obj(&ENDPOINT_SETTINGS)),
    ]],
};

/// `POST /networks/{id}/disconnect`.
pub static NETWORK_DISCONNECT: Obj = Obj {
    name: "network disconnect",
    groups: &[&[f("Container", Ty::Str), f("Force", Ty::Bool)]],
};

/// The `ulimits` build parameter (`[]*units.Ulimit` as JSON), wrapped in an object
/// so that it is canonicalised like a body.
pub static BUILD_ULIMITS: Obj = Obj {
    name: "build ulimits",
    groups: &[&[s("Ulimits", Ty::List(&T_ULIMIT))]],
};

/// A body that must be empty: any member is unknown.
pub static EMPTY: Obj = Obj {
    name: "empty body",
    groups: &[],
};

/// Every object, for the table self-checks.
pub static ALL: &[&Obj] = &[
    &CONFIG,
    &HEALTH_CONFIG,
    &CONTAINER_CREATE,
    &HOST_CONFIG,
    &CONTAINER_UPDATE,
    &WEIGHT_DEVICE,
    &THROTTLE_DEVICE,
    &DEVICE_MAPPING,
    &DEVICE_REQUEST,
    &ULIMIT,
    &RESTART_POLICY,
    &LOG_CONFIG,
    &PORT_BINDING,
    &MOUNT,
    &BIND_OPTIONS,
    &VOLUME_OPTIONS,
    &MOUNT_DRIVER,
    &IMAGE_OPTIONS,
    &TMPFS_OPTIONS,
    &NETWORKING_CONFIG,
    &ENDPOINT_SETTINGS,
    &ENDPOINT_IPAM_CONFIG,
    &EXEC_CREATE,
    &EXEC_START,
    &VOLUME_CREATE,
    &NETWORK_CREATE,
    &IPAM,
    &IPAM_CONFIG,
    &CONFIG_REFERENCE,
    &NETWORK_CONNECT,
    &NETWORK_DISCONNECT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json::go_fold_eq;

    /// Go picks the exact name first, then the first fold match; cistern's mapping
    /// is unambiguous only if no two fields of one struct fold together.
    #[test]
    fn no_two_fields_of_an_object_fold_together() {
        for obj in ALL {
            let fields: Vec<&Field> = obj.groups.iter().flat_map(|g| g.iter()).collect();
            for (i, a) in fields.iter().enumerate() {
                assert!(a.name.is_ascii(), "{}.{}", obj.name, a.name);
                for b in &fields[i + 1..] {
                    assert!(
                        !go_fold_eq(a.name, b.name),
                        "{}: {} vs {}",
                        obj.name,
                        a.name,
                        b.name
                    );
                }
            }
        }
    }

    #[test]
    fn security_relevant_fields_are_marked() {
        let hc = &HOST_CONFIG;
        for name in [
            "Privileged",
            "CapAdd",
            "Binds",
            "Mounts",
            "Devices",
            "SecurityOpt",
            "PidMode",
        ] {
            assert!(hc.field(name).is_some_and(|f| f.sec), "{name}");
        }
        assert!(hc
            .field("privileged")
            .is_some_and(|f| f.name == "Privileged"));
        assert!(CONTAINER_CREATE.field("Privileged").is_none());
    }
}
