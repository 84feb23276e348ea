//! The BuildKit messages cistern reads, written by hand with prost: only the
//! fields the policy inspects, every other field skipped by the decoder (and
//! never re-encoded: the client's bytes are what the daemon gets).
//!
//! Pinned to the BuildKit that dockerd 20.10.24 vendors:
//! `github.com/moby/buildkit eeb7b65ab7d6` (v0.8.4-0.20221020190723),
//! `api/services/control/control.proto` (package `moby.buildkit.v1`) and
//! `solver/pb/ops.proto` (package `pb`). Each field's tag is the one in those
//! files; the tests below encode with these structs and check the tags on the
//! wire. Later BuildKit versions only added fields (checked up to v0.12 for
//! the ones read here), so newer clients decode the same.

use std::collections::HashMap;

/// `moby.buildkit.v1.SolveRequest` (control.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SolveRequest {
    /// `string Ref = 1`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// `pb.Definition Definition = 2`.
    #[prost(message, optional, tag = "2")]
    pub definition: Option<Definition>,
    /// `string Exporter = 3`.
    #[prost(string, tag = "3")]
    pub exporter: String,
    /// `map<string, string> ExporterAttrs = 4`.
    #[prost(map = "string, string", tag = "4")]
    pub exporter_attrs: HashMap<String, String>,
    /// `string Session = 5`.
    #[prost(string, tag = "5")]
    pub session: String,
    /// `string Frontend = 6`.
    #[prost(string, tag = "6")]
    pub frontend: String,
    /// `map<string, string> FrontendAttrs = 7`.
    #[prost(map = "string, string", tag = "7")]
    pub frontend_attrs: HashMap<String, String>,
    /// `repeated string Entitlements = 9`.
    #[prost(string, repeated, tag = "9")]
    pub entitlements: Vec<String>,
    /// `map<string, pb.Definition> FrontendInputs = 10`.
    #[prost(map = "string, message", tag = "10")]
    pub frontend_inputs: HashMap<String, Definition>,
}

/// `moby.buildkit.v1.SolveResponse` (control.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SolveResponse {
    /// `map<string, string> ExporterResponse = 1` (the `moby` exporter
    /// answers `containerimage.digest`: the image ID).
    #[prost(map = "string, string", tag = "1")]
    pub exporter_response: HashMap<String, String>,
}

/// `moby.buildkit.v1.StatusRequest` (control.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {
    /// `string Ref = 1`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
}

/// `moby.buildkit.v1.PruneRequest` (control.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PruneRequest {
    /// `repeated string filter = 1`.
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
    /// `bool all = 2`.
    #[prost(bool, tag = "2")]
    pub all: bool,
}

/// `pb.Definition` (ops.proto, BuildKit eeb7b65ab7d6): the marshaled ops.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definition {
    /// `repeated bytes def = 1`: each a marshaled [`Op`].
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
}

/// `pb.Op` (ops.proto, BuildKit eeb7b65ab7d6). The `oneof op` members are
/// read as separate optional fields: on the wire a oneof is its members'
/// tags, and should a message carry several, every one is judged (Go keeps
/// the last).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    /// `ExecOp exec = 2`.
    #[prost(message, optional, tag = "2")]
    pub exec: Option<ExecOp>,
    /// `SourceOp source = 3`.
    #[prost(message, optional, tag = "3")]
    pub source: Option<SourceOp>,
    /// `BuildOp build = 5` (a nested build: its definition is judged too).
    #[prost(message, optional, tag = "5")]
    pub build: Option<BuildOp>,
}

/// `pb.NetMode` (ops.proto, BuildKit eeb7b65ab7d6): `UNSET = 0` (sandbox),
/// `HOST = 1`, `NONE = 2`.
pub const NET_MODE_HOST: i32 = 1;
/// `pb.SecurityMode` (ops.proto, BuildKit eeb7b65ab7d6): `SANDBOX = 0`,
/// `INSECURE = 1` (privileged).
pub const SECURITY_MODE_INSECURE: i32 = 1;

/// `pb.ExecOp` (ops.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    /// `repeated Mount mounts = 2`.
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    /// `NetMode network = 3`, read as a plain integer so values this
    /// version does not know are seen (and refused) rather than dropped.
    #[prost(int32, tag = "3")]
    pub network: i32,
    /// `SecurityMode security = 4`, likewise.
    #[prost(int32, tag = "4")]
    pub security: i32,
}

/// `pb.Mount` (ops.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// `MountType mountType = 6`, read as a plain integer.
    #[prost(int32, tag = "6")]
    pub mount_type: i32,
    /// `CacheOpt cacheOpt = 20`.
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
}

/// `MountType.CACHE`.
pub const MOUNT_TYPE_CACHE: i32 = 3;

/// `pb.CacheOpt` (ops.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOpt {
    /// `string ID = 1`: the cache mount's id, which the daemon shares
    /// between every build naming it.
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `pb.SourceOp` (ops.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceOp {
    /// `string identifier = 1`: `docker-image://`, `local://`, `git://`,
    /// `https://`...
    #[prost(string, tag = "1")]
    pub identifier: String,
    /// `map<string, string> attrs = 2` (`local.session`, `git.*`...).
    #[prost(map = "string, string", tag = "2")]
    pub attrs: HashMap<String, String>,
}

/// `pb.BuildOp` (ops.proto, BuildKit eeb7b65ab7d6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BuildOp {
    /// `Definition def = 3`.
    #[prost(message, optional, tag = "3")]
    pub def: Option<Definition>,
    /// `map<string, string> attrs = 4`.
    #[prost(map = "string, string", tag = "4")]
    pub attrs: HashMap<String, String>,
}

/// One `map<string, string>` entry as the wire carries it (a message with
/// `key = 1`, `value = 2`): what cistern appends to override a map value
/// (protobuf decoders keep the last entry of a key).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `SolveRequest.ExporterAttrs`' tag, for appended entries.
pub const SOLVE_EXPORTER_ATTRS_TAG: u32 = 4;
/// `SolveRequest.FrontendAttrs`' tag, for appended entries.
pub const SOLVE_FRONTEND_ATTRS_TAG: u32 = 7;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The first byte of a field: tag << 3 | wire type.
    fn key(tag: u32, wire: u8) -> u8 {
        (tag << 3) as u8 | wire
    }

    #[test]
    fn solve_request_fields_use_the_pinned_tags() {
        let mut req = SolveRequest {
            r#ref: "r".into(),
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec()[0], key(1, 2));
        req = SolveRequest {
            definition: Some(Definition::default()),
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec()[0], key(2, 2));
        for (tag, req) in [
            (
                3,
                SolveRequest {
                    exporter: "moby".into(),
                    ..Default::default()
                },
            ),
            (
                4,
                SolveRequest {
                    exporter_attrs: [("name".into(), "a".into())].into(),
                    ..Default::default()
                },
            ),
            (
                5,
                SolveRequest {
                    session: "s".into(),
                    ..Default::default()
                },
            ),
            (
                6,
                SolveRequest {
                    frontend: "dockerfile.v0".into(),
                    ..Default::default()
                },
            ),
            (
                7,
                SolveRequest {
                    frontend_attrs: [("a".into(), "b".into())].into(),
                    ..Default::default()
                },
            ),
            (
                9,
                SolveRequest {
                    entitlements: vec!["network.host".into()],
                    ..Default::default()
                },
            ),
            (
                10,
                SolveRequest {
                    frontend_inputs: [("ctx".into(), Definition::default())].into(),
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(req.encode_to_vec()[0], key(tag, 2), "tag {tag}");
        }
    }

    #[test]
    fn op_fields_use_the_pinned_tags() {
        let exec = ExecOp {
            network: NET_MODE_HOST,
            security: SECURITY_MODE_INSECURE,
            ..ExecOp::default()
        };
        assert_eq!(exec.encode_to_vec(), [key(3, 0), 1, key(4, 0), 1]);
        let mount = Mount {
            mount_type: MOUNT_TYPE_CACHE,
            cache_opt: Some(CacheOpt { id: "c".into() }),
        };
        let exec = ExecOp {
            mounts: vec![mount],
            ..ExecOp::default()
        };
        // mounts = 2 { mountType = 6: 3, cacheOpt = 20 { ID = 1: "c" } }.
        assert_eq!(
            exec.encode_to_vec(),
            [
                key(2, 2),
                8,
                key(6, 0),
                3,
                0xa2,
                0x01,
                3,
                key(1, 2),
                1,
                b'c'
            ]
        );
        let op = Op {
            exec: Some(ExecOp::default()),
            ..Default::default()
        };
        assert_eq!(op.encode_to_vec()[0], key(2, 2));
        let op = Op {
            source: Some(SourceOp::default()),
            ..Default::default()
        };
        assert_eq!(op.encode_to_vec()[0], key(3, 2));
        let op = Op {
            build: Some(BuildOp::default()),
            ..Default::default()
        };
        assert_eq!(op.encode_to_vec()[0], key(5, 2));
        let src = SourceOp {
            identifier: "x".into(),
            attrs: [("k".into(), "v".into())].into(),
        };
        let bytes = src.encode_to_vec();
        assert_eq!((bytes[0], bytes[3]), (key(1, 2), key(2, 2)));
        let b = BuildOp {
            def: Some(Definition { def: vec![vec![]] }),
            attrs: [("k".into(), "v".into())].into(),
        };
        let bytes = b.encode_to_vec();
        assert_eq!(bytes[0], key(3, 2));
        assert_eq!(
            Definition { def: vec![vec![]] }.encode_to_vec()[0],
            key(1, 2)
        );
        let resp = SolveResponse {
            exporter_response: [("k".into(), "v".into())].into(),
        };
        assert_eq!(resp.encode_to_vec()[0], key(1, 2));
        assert_eq!(
            StatusRequest { r#ref: "r".into() }.encode_to_vec()[0],
            key(1, 2)
        );
        let prune = PruneRequest {
            filter: vec!["f".into()],
            all: true,
        };
        assert_eq!(prune.encode_to_vec(), [key(1, 2), 1, b'f', key(2, 0), 1]);
    }

    #[test]
    fn a_later_map_entry_overrides_an_earlier_one() {
        let mut bytes = SolveRequest {
            exporter_attrs: [("name".into(), "other/app".into())].into(),
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::message::encode(
            SOLVE_EXPORTER_ATTRS_TAG,
            &StringEntry {
                key: "name".into(),
                value: "mine/app".into(),
            },
            &mut bytes,
        );
        let req = SolveRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.exporter_attrs["name"], "mine/app");
    }
}
