//! Fuzzes routing and body inspection together.
//!
//! Input: a first line `PATH` (method chosen by the first byte), then the body.
//! Properties:
//! * nothing panics (classify, authorize, inspect_query, judge_body);
//! * an accepted body re-reads identically under Go's matching rules: it parses as
//!   one JSON value, no two keys of an object fold together, every key is the exact
//!   canonical field name, and the types are the daemon's;
//! * an accepted body is a fixed point: inspecting it again yields the same bytes.
#![no_main]

use cistern::policy::{body_schema, json, Policy, Verdict};
use cistern::wire::route::classify;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 5] = ["POST", "GET", "DELETE", "PUT", "HEAD"];

fn policies() -> [Policy; 3] {
    let plain = Policy::default();
    let mut strict = Policy::default();
    strict.publish_host_ip = Some([127, 0, 0, 1].into());
    strict.inject.labels = vec![("ci".into(), "1".into())];
    strict.inject.env = vec!["CI=true".into()];
    strict.inject.extra_hosts = vec!["cache:10.0.0.2".into()];
    strict.inject.no_new_privileges = true;
    strict.inject.init = true;
    strict.inject.cgroup_parent = Some("/ci".into());
    let mut audit = strict.clone();
    audit.audit = true;
    audit.unknown_fields = cistern::policy::UnknownFields::Drop;
    [plain, strict, audit]
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let (line, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(line) else {
        return;
    };
    let method = http::Method::from_bytes(METHODS[m as usize % METHODS.len()].as_bytes()).unwrap();
    let Ok(route) = classify(&method, path) else {
        return;
    };
    for policy in policies() {
        let _ = policy.authorize(&route);
        let _ = policy.inspect_query(&route);
        let verdict = policy.judge_body(&route, body);
        let Some(obj) = body_schema(&route.endpoint) else {
            continue;
        };
        let forwarded = match &verdict {
            Verdict::Allow(i) => Some(i.body.clone()),
            Verdict::Refuse { audit_forward, .. } => audit_forward.clone(),
        };
        let Some(out) = forwarded else { continue };
        if out.is_empty() {
            continue;
        }
        let reread = json::parse(&out).expect("forwarded body parses");
        json::check_canonical(&reread, obj).expect("forwarded body is canonical");
        if let Verdict::Allow(i) = verdict {
            let again = policy
                .inspect_body(&route, &i.body)
                .expect("accepted body accepted again");
            assert_eq!(again.body, i.body, "inspection is a fixed point");
        }
    }
});
