//! Trust for runtimes that ignore the system store, and the record of what a
//! container was given.
//!
//! * `Env`: the configured `NAME=VALUE` entries (default
//!   `NODE_EXTRA_CA_CERTS=/etc/cistern/ca.pem`: Node reads only its bundled
//!   roots plus that one file). A client entry with the same name (`NAME=...`
//!   or a bare `NAME`) wins, as for extra hosts: Node takes a single extra
//!   file, and a job that points it at its own bundle asked for that.
//! * `Labels`: `cistern.ca=<id>,<id>...`, the ids of the CAs the container
//!   trusts, newest first. Labels can only be set at create, so it is set on the
//!   body before it is forwarded; cistern's value replaces a client's.

use crate::policy::Json;

/// The label that records the CA ids a container was given.
pub const CA_LABEL: &str = "cistern.ca";

fn name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(n, _)| n)
}

/// Adds the entries of `inject` whose names the client did not set; returns
/// how many were added.
pub fn container_create(body: &mut Json, inject: &[String]) -> usize {
    let mut env: Vec<String> = body
        .get("Env")
        .map(|a| a.strings().map(str::to_string).collect())
        .unwrap_or_default();
    let added: Vec<String> = inject
        .iter()
        .filter(|e| !env.iter().any(|c| name(c) == name(e)))
        .cloned()
        .collect();
    let n = added.len();
    if n > 0 {
        env.extend(added);
        body.set("Env", Json::string_array(env));
    }
    n
}

/// Sets the `cistern.ca` label.
pub fn label(body: &mut Json, ids: &[String]) {
    body.object_mut("Labels")
        .set(CA_LABEL, Json::string(ids.join(",")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json;

    #[test]
    fn client_env_wins_and_label_replaces() {
        let mut body = json::parse(
            br#"{"Image":"x","Env":["NODE_EXTRA_CA_CERTS=/mine.pem","A=1"],"Labels":{"cistern.ca":"forged","keep":"1"}}"#,
        )
        .unwrap();
        let inject = vec![
            "NODE_EXTRA_CA_CERTS=/etc/cistern/ca.pem".to_string(),
            "EXTRA=1".to_string(),
        ];
        assert_eq!(container_create(&mut body, &inject), 1);
        assert_eq!(
            body.get("Env").unwrap().strings().collect::<Vec<_>>(),
            ["NODE_EXTRA_CA_CERTS=/mine.pem", "A=1", "EXTRA=1"]
        );
        label(&mut body, &["aaaa".into(), "bbbb".into()]);
        assert_eq!(
            body.at(&["Labels", CA_LABEL]).and_then(Json::as_str),
            Some("aaaa,bbbb")
        );
        assert_eq!(
            body.at(&["Labels", "keep"]).and_then(Json::as_str),
            Some("1")
        );
    }

    #[test]
    fn a_bare_body_gets_env() {
        let mut body = json::parse(br#"{"Image":"x"}"#).unwrap();
        assert_eq!(
            container_create(&mut body, &["NODE_EXTRA_CA_CERTS=/p".into()]),
            1
        );
        assert_eq!(
            body.get("Env").unwrap().strings().collect::<Vec<_>>(),
            ["NODE_EXTRA_CA_CERTS=/p"]
        );
    }
}
