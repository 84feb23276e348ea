//! Fuzzes the inspection of BuildKit's `/grpc` requests (`Solve`, `Prune`,
//! `Status`).
//!
//! Input: a first byte (bit 0: frame the rest as one gRPC message; bits
//! 1-2: the call), then the request body.
//! Properties:
//! * nothing panics;
//! * allowing more never refuses more: a request accepted by the default
//!   switches is accepted, with the same findings, by all of them;
//! * an accepted `Solve` holds no host-network or insecure step, git source
//!   or host-network frontend attribute (re-checked here on the decoded
//!   message, independently of the judge);
//! * the exporter's names, once rewritten by the appended map entry, read
//!   back as written and the rest of the request is unchanged.
#![no_main]

use cistern::buildkit::policy::{judge_prune, judge_solve, status_ref, with_image_names, Rules};
use cistern::buildkit::proto::{Op, SolveRequest, NET_MODE_HOST, SECURITY_MODE_INSECURE};
use cistern::buildkit::{frame, Allow};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn all() -> Allow {
    Allow::parse([
        "network.host",
        "security.insecure",
        "git",
        "frontends",
        "prune_all",
        "disk_usage",
    ])
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let body = if first & 1 == 1 {
        framed = frame::encode(rest);
        &framed[..]
    } else {
        rest
    };
    let none = Allow::default();
    let all = all();
    let strict = Rules {
        policy: "p",
        allow: &none,
        cache_namespace: "cistern/i/t",
    };
    let loose = Rules {
        policy: "p",
        allow: &all,
        cache_namespace: "cistern/i/t",
    };
    match (first >> 1) % 3 {
        0 => {
            let judged = judge_solve(strict, body);
            let looser = judge_solve(loose, body);
            let Ok(judged) = judged else { return };
            assert_eq!(looser.as_ref(), Ok(&judged));
            let msg = frame::single(body).unwrap();
            let req = SolveRequest::decode(msg).unwrap();
            assert!(req.entitlements.is_empty());
            assert_ne!(
                req.frontend_attrs.get("force-network-mode").map(|s| s.trim()),
                Some("host")
            );
            let defs = req.definition.iter().chain(req.frontend_inputs.values());
            for def in defs {
                for raw in &def.def {
                    let op = Op::decode(raw.as_slice()).unwrap();
                    if let Some(e) = op.exec {
                        assert_ne!(e.network, NET_MODE_HOST);
                        assert_ne!(e.security, SECURITY_MODE_INSECURE);
                    }
                    if let Some(s) = op.source {
                        assert!(!s.identifier.starts_with("git://"));
                    }
                }
            }
            if !judged.image_names.is_empty() {
                let names: Vec<String> = judged.image_names.iter().map(|n| format!("ns/{n}")).collect();
                let edited = with_image_names(msg, &names);
                let back = SolveRequest::decode(edited.as_slice()).unwrap();
                assert_eq!(back.exporter_attrs.get("name"), Some(&names.join(",")));
                let mut expected = req.clone();
                expected
                    .exporter_attrs
                    .insert("name".into(), names.join(","));
                assert_eq!(back, expected);
            }
        }
        1 => {
            if judge_prune(strict, body).is_ok() {
                assert!(judge_prune(loose, body).is_ok());
            }
        }
        _ => {
            let _ = status_ref(body);
        }
    }
});
