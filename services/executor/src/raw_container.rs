//! Raw-container data on the host (what Flyte's CoPilot init and sidecar containers do): write
//! the inputs under `input_path` before the command runs, turn the files under `output_path`
//! into `outputs.pb` after it exits. The plan and the parsing are in `domain::raw_io`.

use std::path::{Path, PathBuf};

use aloft_blob::BlobStore;
use aloft_proto::flyteidl::core::{
    ContainerError, ErrorDocument, LiteralMap, container_error, data_loading_config::LiteralMapFormat, execution_error,
};
use prost::Message as _;

use crate::domain::outcome::Files;
use crate::domain::raw_io::{ERROR_FILE, InputFile, InputPlan, OutputKind, blob_literal, parse_simple};

/// Writes every planned input under `dir`, plus `inputs.pb` and `inputs.json`/`inputs.yaml`.
pub(crate) async fn materialise(
    store: &BlobStore,
    plan: &InputPlan,
    dir: &Path,
    format: LiteralMapFormat,
) -> Result<(), String> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in &plan.files {
        match file {
            InputFile::Text { path, content } => write(Path::new(path), content).await?,
            InputFile::Blob { path, uri, multipart: false } => {
                store.get_to_file(uri, Path::new(path)).await.map_err(|e| format!("cannot download {uri}: {e}"))?;
            }
            InputFile::Blob { path, uri, multipart: true } => {
                let prefix = format!("{}/", uri.trim_end_matches('/'));
                let parts = store.list(&prefix).await.map_err(|e| format!("cannot list {prefix}: {e}"))?;
                tokio::fs::create_dir_all(path).await.map_err(|e| format!("cannot create {path}: {e}"))?;
                for part in parts {
                    let relative = &part[prefix.len()..];
                    let target = Path::new(path).join(relative);
                    store.get_to_file(&part, &target).await.map_err(|e| format!("cannot download {part}: {e}"))?;
                }
            }
        }
    }
    write(&dir.join("inputs.pb"), &plan.local_inputs.encode_to_vec()).await?;
    let json = serde_json::to_vec(&plan.json).map_err(|e| format!("cannot encode the inputs as JSON: {e}"))?;
    match format {
        LiteralMapFormat::Json => write(&dir.join("inputs.json"), &json).await?,
        // JSON is YAML: no YAML writer needed.
        LiteralMapFormat::Yaml => write(&dir.join("inputs.yaml"), &json).await?,
        LiteralMapFormat::Proto => {}
    }
    Ok(())
}

/// Creates the output directory and removes what a previous try may have left there (the files
/// that would be read as this attempt's outputs, and the error file).
pub(crate) async fn prepare_output_dir(dir: &Path, outputs: &[(String, OutputKind)]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    for name in outputs.iter().map(|(n, _)| n.as_str()).chain([ERROR_FILE]) {
        let path = dir.join(name);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&path).await?,
            Ok(_) => tokio::fs::remove_file(&path).await?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Reads the outputs under `dir` and writes `O/outputs.pb`, or `O/error.pb` when the command
/// left an error file or an output is missing or malformed (a user error, as CoPilot reports
/// it). Returns what it wrote, so the caller need not read it back. `Err` only when the store
/// fails (a system error).
pub(crate) async fn collect(
    store: &BlobStore,
    dir: &Path,
    outputs: &[(String, OutputKind)],
    raw_prefix: &str,
    output_prefix: &str,
) -> Result<Files, String> {
    let error_file = dir.join(ERROR_FILE);
    if let Ok(content) = tokio::fs::read(&error_file).await {
        let text = String::from_utf8_lossy(&content[..content.len().min(1024 * 1024)]).into_owned();
        return write_error(store, output_prefix, "UserError", format!("User Error: {}", text.trim_end())).await;
    }
    let mut literals = LiteralMap::default();
    for (name, kind) in outputs {
        let path = dir.join(name);
        let literal = match kind {
            OutputKind::Simple(t) => match tokio::fs::read(&path).await {
                Ok(content) => match parse_simple(*t, &content) {
                    Ok(l) => l,
                    Err(e) => {
                        return write_error(
                            store,
                            output_prefix,
                            "OutputUploadFailed",
                            format!("output `{name}`: {e}"),
                        )
                        .await;
                    }
                },
                Err(e) => {
                    let message = format!("output `{name}`: cannot read {}: {e}", path.display());
                    return write_error(store, output_prefix, "OutputUploadFailed", message).await;
                }
            },
            OutputKind::Blob(declared) => {
                let target = aloft_blob::join(raw_prefix, name);
                match tokio::fs::metadata(&path).await {
                    Ok(m) if m.is_dir() => {
                        for file in files_under(&path).map_err(|e| format!("cannot list {}: {e}", path.display()))? {
                            let relative = file.strip_prefix(&path).expect("under path").to_string_lossy().into_owned();
                            let uri = aloft_blob::join(&target, &relative);
                            store.put_file(&uri, &file).await.map_err(|e| format!("cannot upload {uri}: {e}"))?;
                        }
                        blob_literal(&target, declared, true)
                    }
                    Ok(_) => {
                        store.put_file(&target, &path).await.map_err(|e| format!("cannot upload {target}: {e}"))?;
                        blob_literal(&target, declared, false)
                    }
                    Err(e) => {
                        let message = format!("output `{name}`: cannot read {}: {e}", path.display());
                        return write_error(store, output_prefix, "OutputUploadFailed", message).await;
                    }
                }
            }
        };
        literals.literals.insert(name.clone(), literal);
    }
    let uri = aloft_blob::join(output_prefix, "outputs.pb");
    store.put(&uri, literals.encode_to_vec()).await.map_err(|e| format!("cannot write {uri}: {e}"))?;
    Ok(Files { error: None, outputs: true, futures: false })
}

async fn write_error(store: &BlobStore, output_prefix: &str, code: &str, message: String) -> Result<Files, String> {
    let doc = ErrorDocument {
        error: Some(ContainerError {
            code: code.into(),
            message,
            kind: container_error::Kind::NonRecoverable as i32,
            origin: execution_error::ErrorKind::User as i32,
            timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            worker: String::new(),
        }),
    };
    let uri = aloft_blob::join(output_prefix, "error.pb");
    store.put(&uri, doc.encode_to_vec()).await.map_err(|e| format!("cannot write {uri}: {e}"))?;
    Ok(Files { error: doc.error.map(Ok), outputs: false, futures: false })
}

async fn write(path: &Path, content: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    tokio::fs::write(path, content).await.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Every regular file below `dir`, sorted (symlinks are followed to their targets' content).
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if std::fs::metadata(&path)?.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
