//! The layering of `src/` (see docs/architecture.md): each top-level module imports only from
//! the modules before it in `LAYERS`. Reads the source; talks to no server.

use std::path::Path;

/// Top-level modules of `src/`, lowest layer first.
const LAYERS: &[&str] = &[
    "base", "redis", "lease", "client", "session", "wait", "sync", "recipes", "kv", "inspect",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_point_only_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs");
        let Some(rank) = LAYERS.iter().position(|l| *l == module) else {
            // lib.rs (the map), the CLI binary and test-only modules sit above every layer.
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests at the end of a file may reach anywhere.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(target) = LAYERS.iter().position(|l| *l == name) {
                if target > rank {
                    upward.push(format!("{} imports crate::{name}", rel.display()));
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} files checked: is LAYERS out of date?"
    );
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
            if name != "reply_fuzz" {
                assert!(LAYERS.contains(&name), "module {name} is in no layer");
            }
        }
    }
}
