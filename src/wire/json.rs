//! Go-compatible JSON reading: parse a Docker request body the way dockerd's
//! `encoding/json` will read it, and canonicalise it so that cistern checks and
//! forwards one and the same reading.
//!
//! How Go's `json.NewDecoder(r).Decode(&v)` reads a body, and what cistern does:
//!
//! * **Object keys match struct fields case-insensitively** (`privileged` and
//!   `PRIVILEGED` both set `Privileged`). Go ≥ 1.21 (`encoding/json/fold.go`) folds
//!   ASCII letters and maps every other rune to the smallest rune of its
//!   `unicode.SimpleFold` orbit; older Go (`equalFoldRight`) special-cases the same
//!   two runes. For Docker's ASCII field names the only non-ASCII runes that can
//!   match are the Kelvin sign `K` (U+212A, folds with `k`) and the long s `ſ`
//!   (U+017F, folds with `s`). cistern maps every key to the exact field name.
//! * **The last duplicate wins** (and `null` leaves a field unchanged, so
//!   `"Privileged":true,"privileged":null` is privileged). cistern refuses any object
//!   with two keys that name the same field under the fold, and exact duplicate keys
//!   in maps (`Labels`, `Sysctls`...), where Go matches keys exactly.
//! * **Unknown keys are ignored** by the decoder, yet such a key can carry meaning:
//!   20.10 reads the top level of a create body into an embedded `HostConfig`
//!   (`{"Image":"x","Privileged":true}` without `HostConfig` is privileged),
//!   current moby decodes the API 1.40 `HostConfig.Capabilities` on its own to
//!   refuse it, and a daemon newer than [`schema`](super::schema) may read a field
//!   cistern does not know. cistern never passes an unknown key through. It
//!   **drops** it, with a log line naming the field (never its value), when no
//!   daemon can act on it:
//!   - its value is `null`: Go leaves whatever field it would fill at its zero
//!     value, as if absent (docker-py's `run(network="n")` sends
//!     `"NetworkingConfig":{"n":null}` and attaches through `NetworkMode`);
//!   - the schema lists it as read by no daemon ([`Ty::Ignored`]: options that
//!     dockerode and docker-py echo from the query, docker-py's `LxcConf`...);
//!   - the schema lists it as [`Ty::EmptyOnly`] and it is empty (dockerode's
//!     top-level `"VolumesFrom":[]`, which 20.10 reads as no list).
//!
//!   Any other unknown key is **refused** with 400 naming it (or dropped when the
//!   policy says `unknown_fields: drop`). Emptiness alone is not enough: 20.10
//!   reads a top-level `"MaskedPaths":[]` as "mask nothing", unlike absent.
//! * **Trailing data after the value is ignored** by `Decoder.Decode`. cistern refuses
//!   anything but whitespace after the value.
//! * **Invalid UTF-8 and lone surrogate escapes** are replaced by U+FFFD in Go.
//!   cistern refuses them (serde_json does).
//! * **Type mismatches** make the daemon fail the whole request. cistern refuses them
//!   too, so a value it did not understand never reaches the daemon. Integers must be
//!   integer literals in the Go type's range (Go's `ParseInt` refuses `1e3`, `1.0`).
//! * `null` is the same as absent for every field of a freshly decoded struct, so the
//!   canonical form drops `null` fields. `null` inside arrays and as map values is
//!   refused (Go would store a zero value or a nil pointer).
//! * Nesting is limited by serde_json's recursion limit (128), far above any Docker
//!   body; deeper input is a 400, not a stack overflow.
//!
//! The driver forwards only the body re-serialised from the canonical value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::schema::{Field, Obj, Ty};
use super::{Refusal, UnknownFields};

/// A JSON value that keeps every object key, in order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member with this exact key (canonical trees have unique keys).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Mutable access to the member with this exact key.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a path of exact keys.
    pub fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    /// Sets (or replaces) a member; no-op when `self` is not an object.
    pub fn set(&mut self, key: &str, value: Json) {
        if let Json::Object(m) = self {
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_string(), value)),
            }
        }
    }

    /// Removes a member and returns it.
    pub fn remove(&mut self, key: &str) -> Option<Json> {
        match self {
            Json::Object(m) => {
                let i = m.iter().position(|(k, _)| k == key)?;
                Some(m.remove(i).1)
            }
            _ => None,
        }
    }

    /// The member object `key`, created empty when absent.
    pub fn object_mut(&mut self, key: &str) -> &mut Json {
        if !matches!(self.get(key), Some(Json::Object(_))) {
            self.set(key, Json::Object(Vec::new()));
        }
        match self {
            Json::Object(m) => m
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .expect("member was just set"),
            // `set` is a no-op on non-objects; the callers only pass objects.
            other => other,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The strings of a canonical string array (empty when absent or not an array).
    pub fn strings(&self) -> impl Iterator<Item = &str> {
        self.as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(Json::as_str)
    }

    /// Serialises to compact JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        #[cfg(test)]
        counts::SERIALISED.with(|n| n.set(n.get() + 1));
        // Serialising this tree cannot fail: keys are strings, numbers are finite.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn string(s: impl Into<String>) -> Json {
        Json::String(s.into())
    }

    pub fn int(n: i64) -> Json {
        Json::Number(n.into())
    }

    pub fn string_array<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Json {
        Json::Array(items.into_iter().map(|s| Json::String(s.into())).collect())
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element()? {
            v.push(e);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some((k, e)) = map.next_entry::<String, Json>()? {
            v.push((k, e));
        }
        Ok(Json::Object(v))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for e in a {
                    seq.serialize_element(e)?;
                }
                seq.end()
            }
            Json::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Parses exactly one JSON value followed by optional whitespace.
pub fn parse(bytes: &[u8]) -> Result<Json, Refusal> {
    #[cfg(test)]
    counts::PARSED.with(|n| n.set(n.get() + 1));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Json::deserialize(&mut de).map_err(malformed)?;
    // Go's Decoder would ignore what follows; refuse it instead.
    de.end().map_err(malformed)?;
    Ok(value)
}

/// How often this thread parsed and serialised bodies (tests check that a
/// request's body is parsed once and serialised once).
#[cfg(test)]
pub mod counts {
    use std::cell::Cell;

    thread_local! {
        pub static PARSED: Cell<usize> = const { Cell::new(0) };
        pub static SERIALISED: Cell<usize> = const { Cell::new(0) };
    }

    /// (parsed, serialised) since the last call, on this thread.
    pub fn take() -> (usize, usize) {
        (
            PARSED.with(|n| n.replace(0)),
            SERIALISED.with(|n| n.replace(0)),
        )
    }
}

fn malformed(e: serde_json::Error) -> Refusal {
    let what = e.to_string();
    // serde_json appends " at line L column C"; put the position first.
    let what = what
        .rsplit_once(" at line ")
        .map_or(what.as_str(), |(w, _)| w)
        .to_string();
    Refusal::malformed(
        "json_malformed",
        String::new(),
        format!(
            "cistern: malformed JSON at line {} column {}: {what}",
            e.line(),
            e.column()
        ),
    )
}

/// Go's case-insensitive key match against an ASCII field name
/// (`strings.EqualFold` semantics, including U+212A ↔ k and U+017F ↔ s).
pub fn go_fold_eq(key: &str, field: &str) -> bool {
    let mut f = field.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c if c.is_ascii() => c.to_ascii_lowercase(),
            _ => return false,
        };
        match f.next() {
            Some(b) if b.to_ascii_lowercase() == folded as u8 => {}
            _ => return false,
        }
    }
    f.next().is_none()
}

/// Options for canonicalisation.
#[derive(Debug, Clone, Copy)]
pub struct Canon {
    pub unknown: UnknownFields,
}

/// Findings that are not errors: dropped unknown fields, rewrites.
pub type Notes = Vec<String>;

/// Canonicalises a body against an object schema: exact field names, checked types,
/// no duplicates, no `null` members, unknown fields refused or dropped.
pub fn canonicalise(
    value: Json,
    obj: &'static Obj,
    opts: Canon,
    notes: &mut Notes,
) -> Result<Json, Refusal> {
    match value {
        Json::Object(_) => Ok(canon(value, &Ty::Obj(obj), "", opts, notes)?.unwrap_or(Json::Null)),
        _ => Err(Refusal::malformed(
            "json_type",
            String::new(),
            "cistern: request body must be a JSON object".to_string(),
        )),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_error(path: &str, want: &str) -> Refusal {
    Refusal::malformed(
        "json_type",
        path.to_string(),
        format!("cistern: {path} must be {want}"),
    )
}

/// Returns `None` for `null` (absent).
fn canon(
    value: Json,
    ty: &Ty,
    path: &str,
    opts: Canon,
    notes: &mut Notes,
) -> Result<Option<Json>, Refusal> {
    if value == Json::Null {
        return Ok(None);
    }
    let int = |v: &Json, lo: i128, hi: i128, want: &str| -> Result<Option<Json>, Refusal> {
        let n = match v {
            Json::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            _ => None,
        };
        match n {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(v.clone())),
            _ => Err(type_error(path, want)),
        }
    };
    match ty {
        Ty::Bool => match value {
            Json::Bool(_) => Ok(Some(value)),
            _ => Err(type_error(path, "a boolean")),
        },
        Ty::I64 => int(&value, i64::MIN.into(), i64::MAX.into(), "an integer"),
        Ty::U16 => int(&value, 0, u16::MAX.into(), "an integer from 0 to 65535"),
        Ty::U32 => int(&value, 0, u32::MAX.into(), "a non-negative 32-bit integer"),
        Ty::U64 => int(&value, 0, u64::MAX.into(), "a non-negative integer"),
        Ty::Str => match value {
            Json::String(_) => Ok(Some(value)),
            _ => Err(type_error(path, "a string")),
        },
        Ty::StrSlice => match value {
            // strslice.StrSlice (20.10) also takes a single string: make it a list.
            Json::String(s) => Ok(Some(Json::Array(vec![Json::String(s)]))),
            Json::Array(_) => canon(value, &Ty::List(&Ty::Str), path, opts, notes),
            _ => Err(type_error(path, "a string or an array of strings")),
        },
        Ty::List(elem) => match value {
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    match canon(item, elem, &p, opts, notes)? {
                        Some(v) => out.push(v),
                        None => return Err(type_error(&p, "a value, not null")),
                    }
                }
                Ok(Some(Json::Array(out)))
            }
            _ => Err(type_error(path, "an array")),
        },
        Ty::Map(elem) => match value {
            Json::Object(members) => {
                let mut out: Vec<(String, Json)> = Vec::with_capacity(members.len());
                for (k, v) in members {
                    let p = join(path, &k);
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(duplicate(&p));
                    }
                    match canon(v, elem, &p, opts, notes)? {
                        Some(v) => out.push((k, v)),
                        None => return Err(type_error(&p, "a value, not null")),
                    }
                }
                Ok(Some(Json::Object(out)))
            }
            _ => Err(type_error(path, "an object")),
        },
        Ty::Set => match value {
            Json::Object(members) => {
                let mut out: Vec<(String, Json)> = Vec::with_capacity(members.len());
                for (k, v) in members {
                    let p = join(path, &k);
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(duplicate(&p));
                    }
                    // Go decodes the value into `struct{}`: any object (or null) is
                    // fine and its content is ignored.
                    match v {
                        Json::Object(_) | Json::Null => out.push((k, Json::Object(Vec::new()))),
                        _ => return Err(type_error(&p, "an object")),
                    }
                }
                Ok(Some(Json::Object(out)))
            }
            _ => Err(type_error(path, "an object")),
        },
        Ty::Obj(obj) => match value {
            Json::Object(members) => canon_object(members, obj, path, opts, notes).map(Some),
            _ => Err(type_error(path, "an object")),
        },
        Ty::Ignored => {
            dropped(notes, path, "no daemon reads it");
            Ok(None)
        }
        // Only a field's type; `canon_object` handles it, knowing the object.
        Ty::EmptyOnly(_) | Ty::Never => Err(Refusal::policy(
            "unsupported_field",
            path.to_string(),
            format!("cistern: {path} is not supported"),
        )),
    }
}

fn duplicate(path: &str) -> Refusal {
    Refusal::malformed(
        "json_duplicate_key",
        path.to_string(),
        format!("cistern: duplicate key {path} (keys match case-insensitively)"),
    )
}

fn canon_object(
    members: Vec<(String, Json)>,
    obj: &'static Obj,
    path: &str,
    opts: Canon,
    notes: &mut Notes,
) -> Result<Json, Refusal> {
    let mut out: Vec<(String, Json)> = Vec::with_capacity(members.len());
    let mut seen: Vec<&'static str> = Vec::new();
    for (key, value) in members {
        let Some(field) = obj.field(&key) else {
            let p = join(path, &key);
            if value == Json::Null {
                // Go gives `null` no meaning: whatever field a daemon version
                // (20.10's top-level HostConfig, one newer than this table)
                // would decode it into keeps its zero value, as when absent.
                dropped(notes, &p, "null");
            } else {
                unknown(&p, obj, opts, notes)?;
            }
            continue;
        };
        let p = join(path, field.name);
        if seen.contains(&field.name) {
            return Err(duplicate(&p));
        }
        seen.push(field.name);
        if let Ty::EmptyOnly(ty) = field.ty {
            match canon(value, ty, &p, opts, notes)? {
                None => {}
                Some(v) if is_empty(&v) => dropped(notes, &p, "empty, read as absent"),
                Some(_) => unknown(&p, obj, opts, notes)?,
            }
            continue;
        }
        if let Some(v) = canon(value, &field.ty, &p, opts, notes)? {
            out.push((field.name.to_string(), v));
        }
    }
    Ok(Json::Object(out))
}

/// An unknown member with a value: refused with 400 naming it (a daemon version
/// may act on it), or dropped under `unknown_fields: drop`.
fn unknown(path: &str, obj: &Obj, opts: Canon, notes: &mut Notes) -> Result<(), Refusal> {
    match opts.unknown {
        UnknownFields::Refuse => {
            // A policy refusal (audit mode forwards without the field), but
            // answered like the daemon answers invalid parameters: 400.
            let mut r = Refusal::policy(
                "unknown_field",
                path.to_string(),
                format!("cistern: unknown field {path} in {}", obj.name),
            );
            r.status = http::StatusCode::BAD_REQUEST;
            Err(r)
        }
        UnknownFields::Drop => {
            dropped(notes, path, "unknown field");
            Ok(())
        }
    }
}

/// Records a member left out of the forwarded body: a note for the access log
/// and a log line with the field's path (never its value).
fn dropped(notes: &mut Notes, path: &str, why: &'static str) {
    tracing::info!(target: "cistern::policy", field = %path, why, "body field dropped");
    notes.push(format!("dropped {path} ({why})"));
}

/// Go's zero value of a canonical value's type: `[]`, `{}`, `""`, `false`, `0`.
fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Bool(b) => !b,
        Json::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(m) => m.is_empty(),
    }
}

impl Obj {
    /// The field a key names under Go's matching (exact first, then folded).
    pub fn field(&self, key: &str) -> Option<&'static Field> {
        let all = || self.groups.iter().flat_map(|g| g.iter());
        all()
            .find(|f| f.name == key)
            .or_else(|| all().find(|f| go_fold_eq(key, f.name)))
    }
}

/// Re-reads a canonical body the way the daemon would and reports the first thing
/// that is not canonical: a duplicate under the fold, or a key that is not the exact
/// field name. Used by tests and the fuzz target.
pub fn check_canonical(value: &Json, obj: &'static Obj) -> Result<(), String> {
    check_ty(value, &Ty::Obj(obj), "")
}

fn check_ty(value: &Json, ty: &Ty, path: &str) -> Result<(), String> {
    match (ty, value) {
        (Ty::Obj(obj), Json::Object(m)) => {
            let mut seen = Vec::new();
            for (k, v) in m {
                let f = obj
                    .field(k)
                    .ok_or_else(|| format!("unknown key {}", join(path, k)))?;
                if f.name != k {
                    return Err(format!("non-canonical key {}", join(path, k)));
                }
                if seen.contains(&f.name) {
                    return Err(format!("duplicate key {}", join(path, k)));
                }
                seen.push(f.name);
                check_ty(v, &f.ty, &join(path, k))?;
            }
            Ok(())
        }
        (Ty::Map(elem), Json::Object(m)) => {
            for (i, (k, v)) in m.iter().enumerate() {
                if m[..i].iter().any(|(s, _)| s == k) {
                    return Err(format!("duplicate key {}", join(path, k)));
                }
                check_ty(v, elem, &join(path, k))?;
            }
            Ok(())
        }
        (Ty::List(elem), Json::Array(a)) => a.iter().try_for_each(|v| check_ty(v, elem, path)),
        (Ty::StrSlice, Json::Array(a)) => a.iter().try_for_each(|v| check_ty(v, &Ty::Str, path)),
        (_, Json::Null) => Err(format!("null at {path}")),
        (Ty::Bool, Json::Bool(_))
        | (Ty::Str, Json::String(_))
        | (Ty::Set, Json::Object(_))
        | (Ty::I64 | Ty::U16 | Ty::U32 | Ty::U64, Json::Number(_)) => Ok(()),
        _ => Err(format!("unexpected value at {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::schema;

    fn canon_create(body: &str) -> Result<Json, Refusal> {
        let v = parse(body.as_bytes())?;
        let mut notes = Vec::new();
        canonicalise(
            v,
            &schema::CONTAINER_CREATE,
            Canon {
                unknown: UnknownFields::Refuse,
            },
            &mut notes,
        )
    }

    #[test]
    fn fold_matches_go_equal_fold() {
        assert!(go_fold_eq("privileged", "Privileged"));
        assert!(go_fold_eq("PRIVILEGED", "Privileged"));
        assert!(go_fold_eq("Privileged", "Privileged"));
        // Kelvin sign folds with k, long s with s.
        assert!(go_fold_eq("\u{212A}ernelMemory", "KernelMemory"));
        assert!(go_fold_eq("Privileged", "Privileged"));
        assert!(go_fold_eq("\u{017F}ecurityOpt", "SecurityOpt"));
        assert!(go_fold_eq("HO\u{017F}TCONFIG", "HostConfig"));
        // Other look-alikes do not fold to ASCII in Go.
        assert!(!go_fold_eq("Pr\u{0131}vileged", "Privileged")); // dotless i
        assert!(!go_fold_eq("Pr\u{0130}vileged", "Privileged")); // dotted I
        assert!(!go_fold_eq("Privilege", "Privileged"));
        assert!(!go_fold_eq("Privilegedd", "Privileged"));
        assert!(!go_fold_eq("Privileged_", "Privileged"));
    }

    #[test]
    fn keys_are_mapped_to_exact_field_names_at_every_level() {
        let v = canon_create(r#"{"image":"x","hostconfig":{"privileged":false,"PORTBINDINGS":{"80/tcp":[{"hostip":"","hostport":"8080"}]}}}"#).unwrap();
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"Privileged":false,"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}}}"#
        );
        // Kelvin-sign key.
        let v =
            canon_create("{\"Image\":\"x\",\"HostConfig\":{\"\u{212A}ernelMemory\":1}}").unwrap();
        assert_eq!(v.at(&["HostConfig", "KernelMemory"]), Some(&Json::int(1)));
    }

    #[test]
    fn duplicates_under_fold_are_refused() {
        for body in [
            r#"{"Image":"x","HostConfig":{"Privileged":false,"privileged":true}}"#,
            r#"{"Image":"x","HostConfig":{"Privileged":true,"privileged":null}}"#,
            r#"{"Image":"x","HostConfig":{},"hostconfig":{"Privileged":true}}"#,
            "{\"Image\":\"x\",\"HostConfig\":{\"SecurityOpt\":[],\"\u{017F}ecurityopt\":[\"seccomp=unconfined\"]}}",
            r#"{"Image":"x","Labels":{"a":"1","a":"2"}}"#,
            r#"{"Image":"x","image":"y"}"#,
        ] {
            let r = canon_create(body).unwrap_err();
            assert_eq!(r.rule, "json_duplicate_key", "{body}");
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST);
        }
        // Map keys are exact in Go: different case is not a duplicate.
        assert!(canon_create(r#"{"Image":"x","Labels":{"a":"1","A":"2"}}"#).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused_or_dropped_never_forwarded() {
        let r = canon_create(r#"{"Image":"x","HostConfig":{"Privileged":false,"Bogus":1}}"#)
            .unwrap_err();
        assert_eq!(r.rule, "unknown_field");
        assert_eq!(r.field, "HostConfig.Bogus");
        assert_eq!(r.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(
            r.message,
            "cistern: unknown field HostConfig.Bogus in HostConfig"
        );
        // 20.10 read HostConfig fields at the top level too; current moby does not.
        let r = canon_create(r#"{"Image":"x","Privileged":true}"#).unwrap_err();
        assert_eq!(r.field, "Privileged");
        let mut notes = Vec::new();
        let v = canonicalise(
            parse(br#"{"Image":"x","Privileged":true,"HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t","Extra":{"a":1}}]}}"#).unwrap(),
            &schema::CONTAINER_CREATE,
            Canon { unknown: UnknownFields::Drop },
            &mut notes,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}}"#
        );
        assert_eq!(notes.len(), 2);
    }

    fn canon_with(body: &str, obj: &'static Obj, unknown: UnknownFields) -> (Json, Notes) {
        let mut notes = Vec::new();
        let v = canonicalise(
            parse(body.as_bytes()).unwrap(),
            obj,
            Canon { unknown },
            &mut notes,
        )
        .unwrap();
        (v, notes)
    }

    /// docker-py 7.1.0's `containers.run(image, network="mynet")` sends the
    /// network as a `NetworkingConfig` key with `null`; dockerd ignores it and
    /// attaches through `NetworkMode`.
    #[test]
    fn unknown_members_with_null_are_dropped_at_every_level() {
        let (v, notes) = canon_with(
            r#"{"Image":"x","HostConfig":{"NetworkMode":"mynet"},"NetworkingConfig":{"mynet":null}}"#,
            &schema::CONTAINER_CREATE,
            UnknownFields::Refuse,
        );
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"NetworkMode":"mynet"},"NetworkingConfig":{}}"#
        );
        assert_eq!(notes, ["dropped NetworkingConfig.mynet (null)"]);
        // A top-level key 20.10 would read into its embedded HostConfig, one the
        // API dropped, and one nested in a list: null means absent to all.
        let (v, notes) = canon_with(
            r#"{"Image":"x","Runtime":null,"HostConfig":{"Capabilities":null,"Mounts":[{"Type":"tmpfs","Target":"/t","Future":null}]}}"#,
            &schema::CONTAINER_CREATE,
            UnknownFields::Refuse,
        );
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}}"#
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    /// A value, even an empty one, may carry meaning to some daemon version.
    #[test]
    fn unknown_members_with_a_value_are_still_refused() {
        for (body, field) in [
            (
                r#"{"Image":"x","NetworkingConfig":{"mynet":{}}}"#,
                "NetworkingConfig.mynet",
            ),
            (
                r#"{"Image":"x","NetworkingConfig":{"mynet":{"Aliases":["db"]}}}"#,
                "NetworkingConfig.mynet",
            ),
            // API 1.40's full capability set; current moby refuses it on its own.
            (
                r#"{"Image":"x","HostConfig":{"Capabilities":["CAP_SYS_ADMIN"]}}"#,
                "HostConfig.Capabilities",
            ),
            // docker-py's low-level `create_container(runtime=...)`: 20.10 reads
            // it when the body has no HostConfig.
            (r#"{"Image":"x","Runtime":"runc"}"#, "Runtime"),
            // 20.10 reads this as "mask nothing", unlike an absent list.
            (r#"{"Image":"x","MaskedPaths":[]}"#, "MaskedPaths"),
            (r#"{"Image":"x","Privileged":false}"#, "Privileged"),
        ] {
            let r = canon_create(body).unwrap_err();
            assert_eq!(
                (r.rule, r.field.as_str(), r.status),
                ("unknown_field", field, http::StatusCode::BAD_REQUEST),
                "{body}"
            );
        }
    }

    /// dockerode's `docker.run()` sends `"VolumesFrom": []` at the top level.
    #[test]
    fn empty_only_fields_are_dropped_when_empty_and_unknown_otherwise() {
        let (v, notes) = canon_with(
            r#"{"Image":"x","Volumes":{},"VolumesFrom":[]}"#,
            &schema::CONTAINER_CREATE,
            UnknownFields::Refuse,
        );
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","Volumes":{}}"#
        );
        assert_eq!(notes, ["dropped VolumesFrom (empty, read as absent)"]);
        assert!(canon_create(r#"{"Image":"x","volumesfrom":null}"#).is_ok());
        let r = canon_create(r#"{"Image":"x","VolumesFrom":["db"]}"#).unwrap_err();
        assert_eq!((r.rule, r.field.as_str()), ("unknown_field", "VolumesFrom"));
        assert_eq!(
            r.message,
            "cistern: unknown field VolumesFrom in container create"
        );
        // Types are still Go's, and the fold still finds duplicates.
        let r = canon_create(r#"{"Image":"x","VolumesFrom":"db"}"#).unwrap_err();
        assert_eq!(r.rule, "json_type");
        let r = canon_create(r#"{"Image":"x","VolumesFrom":[],"volumesFrom":["db"]}"#).unwrap_err();
        assert_eq!(r.rule, "json_duplicate_key");
        // Under `unknown_fields: drop`, a non-empty value is dropped too.
        let (v, notes) = canon_with(
            r#"{"Image":"x","VolumesFrom":["db"]}"#,
            &schema::CONTAINER_CREATE,
            UnknownFields::Drop,
        );
        assert_eq!(String::from_utf8(v.to_vec()).unwrap(), r#"{"Image":"x"}"#);
        assert_eq!(notes, ["dropped VolumesFrom (unknown field)"]);
        // Inside HostConfig it is the real field.
        let v = canon_create(r#"{"Image":"x","HostConfig":{"VolumesFrom":["db"]}}"#).unwrap();
        assert_eq!(
            v.at(&["HostConfig", "VolumesFrom"]),
            Some(&Json::string_array(["db"]))
        );
    }

    /// Fields released clients send that no daemon reads: dropped, any value.
    #[test]
    fn fields_no_daemon_reads_are_dropped_with_any_value() {
        // docker-py's `lxc_conf`.
        let (v, notes) = canon_with(
            r#"{"Image":"x","HostConfig":{"LxcConf":[{"Key":"lxc.x","Value":"1"}]}}"#,
            &schema::CONTAINER_CREATE,
            UnknownFields::Refuse,
        );
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{}}"#
        );
        assert_eq!(notes, ["dropped HostConfig.LxcConf (no daemon reads it)"]);
        // dockerode's commit options, echoed from the query.
        let (v, notes) = canon_with(
            r#"{"container":"c","repo":"r","tag":"t","comment":"","author":"a","pause":true,"changes":"ENV A=1","Env":["A=1"]}"#,
            &schema::CONFIG,
            UnknownFields::Refuse,
        );
        assert_eq!(String::from_utf8(v.to_vec()).unwrap(), r#"{"Env":["A=1"]}"#);
        assert_eq!(notes.len(), 7);
        // bollard's `ContainerUpdateBody.init` (from the API spec's Resources).
        let (v, _) = canon_with(
            r#"{"Memory":1048576,"Init":true}"#,
            &schema::CONTAINER_UPDATE,
            UnknownFields::Refuse,
        );
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Memory":1048576}"#
        );
    }

    #[test]
    fn trailing_data_invalid_utf8_and_surrogates_are_malformed() {
        for body in [
            &br#"{"Image":"x"} {"Image":"y"}"#[..],
            br#"{"Image":"x"}x"#,
            br#"{"Image":"x"}]"#,
            b"{\"Image\":\"\xff\"}",
            br#"{"Image":"\ud800"}"#,
            b"\xef\xbb\xbf{}",
            b"",
            br#"{"Image":"x",}"#,
            br#"{"Image":01}"#,
        ] {
            let r = canon_create(std::str::from_utf8(body).unwrap_or("\u{fffd}")).err();
            let r = r.or_else(|| parse(body).err()).expect("refused");
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST);
            assert!(
                r.message.starts_with("cistern: malformed JSON at line "),
                "{}",
                r.message
            );
            assert_eq!(parse(body).unwrap_err().rule, "json_malformed");
        }
        // Trailing whitespace is fine.
        assert!(parse(b"{\"Image\":\"x\"} \r\n\t").is_ok());
    }

    #[test]
    fn malformed_message_names_line_and_column() {
        let r = parse(b"{\n  \"Image\": 1 2}").unwrap_err();
        assert!(
            r.message
                .starts_with("cistern: malformed JSON at line 2 column"),
            "{}",
            r.message
        );
        assert_eq!(
            r.json_body(),
            serde_json::json!({ "message": r.message }).to_string()
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut deep = vec![b'['; 1 << 20];
        deep.extend(vec![b']'; 1 << 20]);
        let r = parse(&deep).unwrap_err();
        assert!(r.message.contains("recursion limit"), "{}", r.message);
        let mut objs = String::new();
        for _ in 0..200 {
            objs.push_str("{\"a\":");
        }
        objs.push('1');
        objs.push_str(&"}".repeat(200));
        assert!(parse(objs.as_bytes()).is_err());
        // 100 levels are fine.
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn numbers_must_fit_the_go_type() {
        for body in [
            r#"{"Image":"x","HostConfig":{"Memory":1e3}}"#,
            r#"{"Image":"x","HostConfig":{"Memory":1.0}}"#,
            r#"{"Image":"x","HostConfig":{"Memory":9223372036854775808}}"#,
            r#"{"Image":"x","HostConfig":{"Memory":99999999999999999999999}}"#,
            r#"{"Image":"x","HostConfig":{"BlkioWeight":65536}}"#,
            r#"{"Image":"x","HostConfig":{"BlkioWeight":-1}}"#,
            r#"{"Image":"x","HostConfig":{"Memory":"1g"}}"#,
        ] {
            assert_eq!(canon_create(body).unwrap_err().rule, "json_type", "{body}");
        }
        assert_eq!(
            canon_create(r#"{"Image":"x","HostConfig":{"Memory":1e400}}"#)
                .unwrap_err()
                .rule,
            "json_malformed"
        );
        assert!(canon_create(
            r#"{"Image":"x","HostConfig":{"Memory":9223372036854775807,"MemorySwap":-1}}"#
        )
        .is_ok());
    }

    #[test]
    fn null_is_absent_and_types_are_checked() {
        let v = canon_create(r#"{"Image":"x","Cmd":null,"HostConfig":{"CapAdd":null,"Binds":[],"Privileged":false,"SecurityOpt":null}}"#).unwrap();
        assert_eq!(
            String::from_utf8(v.to_vec()).unwrap(),
            r#"{"Image":"x","HostConfig":{"Binds":[],"Privileged":false}}"#
        );
        // strslice: a bare string becomes a one-element array.
        let v = canon_create(r#"{"Image":"x","Cmd":"sh","HostConfig":{"CapAdd":"NET_ADMIN"}}"#)
            .unwrap();
        assert_eq!(
            v.at(&["HostConfig", "CapAdd"]),
            Some(&Json::string_array(["NET_ADMIN"]))
        );
        for body in [
            r#"{"Image":"x","HostConfig":{"Privileged":"true"}}"#,
            r#"{"Image":"x","HostConfig":{"Privileged":1}}"#,
            r#"{"Image":"x","HostConfig":{"Binds":"/:/host"}}"#,
            r#"{"Image":"x","HostConfig":{"Binds":["/a:/a",null]}}"#,
            r#"{"Image":"x","Labels":{"a":null}}"#,
            r#"{"Image":"x","HostConfig":[]}"#,
            r#"{"Image":"x","ExposedPorts":{"80/tcp":1}}"#,
        ] {
            assert_eq!(canon_create(body).unwrap_err().rule, "json_type", "{body}");
        }
        assert_eq!(canon_create("[]").unwrap_err().rule, "json_type");
        assert_eq!(canon_create("null").unwrap_err().rule, "json_type");
    }

    #[test]
    fn canonical_output_re_reads_as_canonical() {
        let v = canon_create(r#"{"image":"x","ExposedPorts":{"80/tcp":{"junk":1}},"HOSTCONFIG":{"mounts":[{"type":"volume","source":"v","target":"/v","volumeoptions":{"driverconfig":{"name":"local"}}}]}}"#).unwrap();
        check_canonical(&v, &schema::CONTAINER_CREATE).unwrap();
        let again = canon_create(std::str::from_utf8(&v.to_vec()).unwrap()).unwrap();
        assert_eq!(again, v);
    }
}
