//! Generates Rust types and tonic stubs for flyteidl 1.16 and for Aloft's own protos.
//!
//! flyteidl is not vendored: `scripts/fetch-flyteidl.sh` extracts its FileDescriptorSet from the
//! published, hash-pinned wheel. Aloft's protos under `proto/aloft/` are compiled with protox (a
//! pure-Rust protobuf compiler, so no `protoc` is needed) against that set, and both are generated
//! together so `aloft.*` messages can embed flyteidl ones.

use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::FileDescriptorSet;

const SCHEMA_FILE: &str = "flyteidl-1.16.8.binpb";
const SETUP_COMMAND: &str = "scripts/fetch-flyteidl.sh";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let schema = std::env::var_os("ALOFT_FLYTEIDL_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("proto/flyteidl/.schema").join(SCHEMA_FILE));
    println!("cargo:rerun-if-env-changed=ALOFT_FLYTEIDL_SCHEMA");
    println!("cargo:rerun-if-changed={}", schema.display());

    let bytes = match std::fs::read(&schema) {
        Ok(b) => b,
        Err(_) => fail(&format!(
            "flyteidl schema not found at {}: run {SETUP_COMMAND} (or scripts/dev-deps.sh) first",
            schema.display()
        )),
    };
    let mut set = FileDescriptorSet::decode(bytes.as_slice()).unwrap_or_else(|e| {
        fail(&format!("flyteidl schema at {} is corrupt ({e}): rerun {SETUP_COMMAND}", schema.display()))
    });

    let aloft_dir = root.join("proto");
    // the folder too, so a new .proto file is picked up without touching an old one
    println!("cargo:rerun-if-changed={}", aloft_dir.join("aloft").display());
    let aloft_files = proto_files(&aloft_dir.join("aloft"));
    for f in &aloft_files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    if !aloft_files.is_empty() {
        let resolver = protox::file::ChainFileResolver::new();
        let mut resolver = resolver;
        resolver.add(protox::file::IncludeFileResolver::new(aloft_dir.clone()));
        resolver.add(
            protox::file::DescriptorSetFileResolver::decode(bytes.as_slice())
                .unwrap_or_else(|e| fail(&format!("flyteidl schema unreadable: {e}"))),
        );
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(false);
        for f in &aloft_files {
            let rel = f.strip_prefix(&aloft_dir).expect("under proto/");
            if let Err(e) = compiler.open_file(rel) {
                fail(&format!("{}: {e}", rel.display()));
            }
        }
        let ours = compiler.file_descriptor_set();
        set.file.extend(ours.file.into_iter().filter(|f| f.name().starts_with("aloft/")));
    }

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("descriptors.binpb"), set.encode_to_vec()).expect("write descriptors");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // Services answer UNIMPLEMENTED for methods a crate does not override (never UNKNOWN,
        // which makes flytekit start a login flow).
        .generate_default_stubs(true)
        // Ordered maps make encodings deterministic, so equal specs have equal bytes and digests.
        .btree_map(".")
        .compile_fds(set)
        .unwrap_or_else(|e| fail(&format!("code generation failed: {e}")));
}

fn proto_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    files.sort();
    files
}

fn fail(line: &str) -> ! {
    eprintln!("error: {line}");
    std::process::exit(1);
}
