//! The crate's modules stack in layers (see the layout in `lib.rs`): each
//! imports only from layers below its own, so no two import each other and
//! none imports back up. This reads every module's source and checks every
//! `crate::` path in its code (comments aside) against that table.

use std::collections::BTreeMap;
use std::path::Path;

/// Each module's layer, from the ground (1) up, as `lib.rs` lists them.
const LAYERS: &[(&str, u8)] = &[
    ("error", 1),
    ("reason", 1),
    ("pattern", 1),
    ("conditional", 1),
    ("check", 1),
    ("layout", 1),
    ("map", 1),
    ("hot", 1),
    ("evict", 1),
    ("lock", 1),
    ("key", 2),
    ("rules", 2),
    ("meta", 3),
    ("entry", 4),
    ("policy", 4),
    ("tail", 4),
    ("storage", 5),
    ("read", 6),
    ("write", 6),
    ("store", 7),
    ("shared", 7),
    ("maintain", 8),
    ("cache", 8),
];

/// The modules a source file names as `crate::<module>` in its code.
fn imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn modules_import_only_from_layers_below_their_own() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut seen = Vec::new();
    for file in std::fs::read_dir(&src).unwrap() {
        let path = file.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "lib" {
            continue;
        }
        let Some(&layer) = layers.get(name.as_str()) else {
            wrong.push(format!("{name}.rs has no layer: add it to lib.rs and here"));
            continue;
        };
        seen.push(name.clone());
        for import in imports(&std::fs::read_to_string(&path).unwrap()) {
            match layers.get(import.as_str()) {
                Some(&below) if below < layer => {}
                Some(&other) => wrong.push(format!(
                    "{name} (layer {layer}) imports {import} (layer {other})"
                )),
                None => wrong.push(format!(
                    "{name} (layer {layer}) imports crate::{import} from the crate root"
                )),
            }
        }
    }
    for (name, _) in LAYERS {
        if !seen.iter().any(|s| s == name) {
            wrong.push(format!("{name} is in the table but has no file"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_reads_imports_and_skips_comments() {
    let source = "use crate::meta::Meta;\n\
                  //! See [`x`](crate::store::Store).\n\
                  let p = crate::layout::content_path(d, i); // crate::cache\n";
    assert_eq!(imports(source), ["meta", "layout"]);
}
