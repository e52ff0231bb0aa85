//! Embeds the `aloft init` template: every file under `template/` becomes a `(path, contents)`
//! pair in `$OUT_DIR/template.rs`, so the binary carries the template and a new file in the folder
//! is picked up without a list to maintain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Python and editor droppings from trying the template in place.
        if matches!(name, "__pycache__" | ".pytest_cache" | ".ruff_cache") || name.ends_with(".pyc") {
            continue;
        }
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("template");
    let mut list = Vec::new();
    files(&root, &mut list);
    let mut code = String::from(
        "/// Every template file: path relative to the project, contents.\npub static FILES: &[(&str, &str)] = &[\n",
    );
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &list {
        println!("cargo:rerun-if-changed={}", f.display());
        if let Some(parent) = f.parent() {
            println!("cargo:rerun-if-changed={}", parent.display());
        }
        let rel = f.strip_prefix(&root).expect("under template/").to_str().expect("utf-8 path");
        writeln!(code, "    ({rel:?}, include_str!({:?})),", f.display().to_string()).expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("template.rs");
    std::fs::write(out, code).expect("write template.rs");
}
