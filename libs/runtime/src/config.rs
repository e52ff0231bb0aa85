//! Layered configuration: a service's `Default`, then an optional TOML file, then environment
//! variables `ALOFT_<SECTION>__<KEY>=value` (`__` separates nesting levels).
//!
//! The layers are merged as JSON values before one typed deserialization, so a bad value or an
//! unknown key in the file is reported once, with its dotted path, instead of as a serde trace.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A configuration that can check itself after loading (URLs parse, ports are sane, ...).
pub trait Validate {
    /// Returns the first problem found, naming its key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Why a configuration could not be loaded. Every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A key that the service does not know.
    #[error("unknown config key `{key}` (from {origin})")]
    UnknownKey {
        /// Dotted path of the key.
        key: String,
        /// The file or environment variable it came from.
        origin: String,
    },
    /// A value of the wrong type or form.
    #[error("invalid value for config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

/// Loads `C` from its defaults, `file` (if any) and the process environment, then validates it.
pub fn load<C>(file: Option<&Path>) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned + Default + Validate,
{
    let env: Vec<(String, String)> = std::env::vars().collect();
    let text = match file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?,
        )),
        None => None,
    };
    load_from(text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())), &env)
}

/// Pure core of [`load`]: `file` is `(name, contents)`; `env` is the environment to read.
pub fn load_from<C>(file: Option<(&str, &str)>, env: &[(String, String)]) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned + Default + Validate,
{
    let mut merged =
        serde_json::to_value(C::default()).map_err(|e| ConfigError::invalid("<defaults>", e.to_string()))?;
    if let Some((path, text)) = file {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_string(), message: e.to_string() })?;
        let file_value = serde_json::to_value(table).map_err(|e| ConfigError::invalid(path, e.to_string()))?;
        merge(&mut merged, file_value, "", path)?;
    }
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("ALOFT_") else { continue };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        // The environment is shared by every service (and by unrelated ALOFT_ settings such as
        // ALOFT_LOG), so variables naming keys this service does not have are ignored rather
        // than fatal; unknown keys in a file, which is per service, are errors.
        set_env_value(&mut merged, &path, raw);
    }
    let config: C = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        match inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            Some(field) => ConfigError::UnknownKey {
                key: if key == "." { field.to_string() } else { format!("{key}.{field}") },
                origin: "configuration".into(),
            },
            None => ConfigError::Invalid { key, message: inner },
        }
    })?;
    config.validate()?;
    Ok(config)
}

/// Merges `overlay` into `base`, refusing keys `base` does not have (the defaults list every key).
fn merge(base: &mut Value, overlay: Value, prefix: &str, origin: &str) -> Result<(), ConfigError> {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (k, v) in overlay {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match base.get_mut(&k) {
                    // Optional sections default to null; take the file's table as a whole.
                    Some(slot @ Value::Null) => *slot = v,
                    Some(slot) => merge(slot, v, &key, origin)?,
                    None => return Err(ConfigError::UnknownKey { key, origin: origin.to_string() }),
                }
            }
            Ok(())
        }
        (slot, v) => {
            *slot = v;
            Ok(())
        }
    }
}

/// Sets a string from the environment at `path`, converted to the type of the default there.
fn set_env_value(root: &mut Value, path: &[String], raw: &str) {
    let mut node = root;
    for (i, part) in path.iter().enumerate() {
        let Value::Object(map) = node else { return };
        if i + 1 == path.len() {
            if let Some(slot) = map.get_mut(part) {
                *slot = coerce(slot, raw);
            }
            return;
        }
        match map.get_mut(part) {
            Some(next) => node = next,
            None => return,
        }
    }
}

fn coerce(existing: &Value, raw: &str) -> Value {
    match existing {
        Value::Bool(_) => raw.parse::<bool>().map(Value::Bool).unwrap_or_else(|_| Value::String(raw.into())),
        Value::Number(_) => serde_json::from_str::<serde_json::Number>(raw)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Value::Array(_) => Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
        ),
        _ => Value::String(raw.to_string()),
    }
}

/// Serializes a loaded config as TOML for `--print-config`, with secrets already redacted by the
/// service's `Serialize` implementation.
pub fn to_toml<C: Serialize>(config: &C) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Grpc {
        listen: String,
        max_conns: u32,
    }
    impl Default for Grpc {
        fn default() -> Self {
            Grpc { listen: "127.0.0.1:8089".into(), max_conns: 10 }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        grpc: Grpc,
        debug: bool,
        tags: Vec<String>,
    }
    impl Validate for Conf {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.grpc.max_conns == 0 {
                return Err(ConfigError::invalid("grpc.max_conns", "must be at least 1"));
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let c: Conf = load_from(
            Some(("a.toml", "debug = true\n[grpc]\nlisten = \"0.0.0.0:1\"\n")),
            &env(&[("ALOFT_GRPC__MAX_CONNS", "7"), ("ALOFT_TAGS", "a, b"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(c.grpc.listen, "0.0.0.0:1");
        assert_eq!(c.grpc.max_conns, 7);
        assert!(c.debug);
        assert_eq!(c.tags, vec!["a", "b"]);
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = load_from::<Conf>(Some(("a.toml", "[grpc]\nlisen = \"x\"\n")), &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key `grpc.lisen` (from a.toml)");
    }

    #[test]
    fn unknown_env_keys_are_ignored() {
        let c: Conf = load_from(None, &env(&[("ALOFT_NOPE__X", "1"), ("ALOFT_LOG", "debug")])).unwrap();
        assert_eq!(c, Conf::default());
    }

    #[test]
    fn bad_type_names_the_key() {
        let err = load_from::<Conf>(None, &env(&[("ALOFT_GRPC__MAX_CONNS", "lots")])).unwrap_err();
        assert!(err.to_string().contains("max_conns"), "{err}");
    }

    #[test]
    fn validation_runs_last() {
        let err = load_from::<Conf>(None, &env(&[("ALOFT_GRPC__MAX_CONNS", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid value for config key `grpc.max_conns`: must be at least 1");
    }

    #[test]
    fn syntax_error_names_file() {
        let err = load_from::<Conf>(Some(("x.toml", "grpc = [")), &[]).unwrap_err();
        assert!(err.to_string().starts_with("config file x.toml is not valid TOML"), "{err}");
    }
}
