//! Task output caching with Flyte's datacatalog semantics, pure: which tasks are cached and the
//! key a run's outputs are stored under.
//!
//! The key covers what makes two runs interchangeable: the task's project, domain and name, its
//! cache version, its interface, and its input values (minus `cache_ignore_input_vars`). A
//! literal that carries a `hash` (flytekit sets one for values it offloads, such as dataframes
//! with a hash method) is represented by that hash instead of its bytes, so two uploads of the same
//! data hit the same entry.

use aloft_proto::flyteidl::core::{Identifier, Literal, LiteralMap, TaskTemplate, TypedInterface, literal};
use prost::Message;
use sha2::{Digest, Sha256};

/// How a task is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// `cache_version`.
    pub version: String,
    /// `cache_serialize`: one run per key at a time; the others wait for its outputs.
    pub serializable: bool,
    /// `cache_ignore_input_vars`.
    pub ignore: Vec<String>,
}

/// The cache settings of a task, when it is cached (`TaskMetadata.discoverable`).
pub fn spec(task: &TaskTemplate) -> Option<CacheSpec> {
    let m = task.metadata.as_ref().filter(|m| m.discoverable)?;
    Some(CacheSpec {
        version: m.discovery_version.clone(),
        serializable: m.cache_serializable,
        ignore: m.cache_ignore_input_vars.clone(),
    })
}

/// The cache key of a run of `task` with `inputs`: 64 hex characters.
pub fn key(task: &Identifier, spec: &CacheSpec, interface: &TypedInterface, inputs: &LiteralMap) -> String {
    let mut h = Sha256::new();
    // length-prefixed fields, so ("ab", "c") and ("a", "bc") differ
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"aloft-cache-v1");
    field(task.project.as_bytes());
    field(task.domain.as_bytes());
    field(task.name.as_bytes());
    field(spec.version.as_bytes());
    field(&interface.encode_to_vec());
    // LiteralMap's map is ordered (btree), so this visits names in a stable order
    for (name, value) in &inputs.literals {
        if spec.ignore.contains(name) {
            continue;
        }
        field(name.as_bytes());
        field(&canonical(value).encode_to_vec());
    }
    hex::encode(h.finalize())
}

/// A literal as it counts for the key: hashed values by their hash, metadata dropped (it
/// describes, it does not change the value).
fn canonical(lit: &Literal) -> Literal {
    if !lit.hash.is_empty() {
        return Literal { hash: lit.hash.clone(), ..Default::default() };
    }
    let value = match &lit.value {
        Some(literal::Value::Collection(c)) => {
            Some(literal::Value::Collection(aloft_proto::flyteidl::core::LiteralCollection {
                literals: c.literals.iter().map(canonical).collect(),
            }))
        }
        Some(literal::Value::Map(m)) => Some(literal::Value::Map(LiteralMap {
            literals: m.literals.iter().map(|(k, v)| (k.clone(), canonical(v))).collect(),
        })),
        other => other.clone(),
    };
    Literal { value, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{Primitive, Scalar, TaskMetadata, primitive, scalar};

    fn int(v: i64) -> Literal {
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(v)) })),
            }))),
            ..Default::default()
        }
    }

    fn inputs(pairs: &[(&str, Literal)]) -> LiteralMap {
        LiteralMap { literals: pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    fn task(name: &str) -> Identifier {
        Identifier { project: "p".into(), domain: "development".into(), name: name.into(), ..Default::default() }
    }

    fn cached(version: &str, ignore: &[&str]) -> CacheSpec {
        CacheSpec {
            version: version.into(),
            serializable: false,
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_discoverable_tasks_are_cached() {
        let mut t = TaskTemplate::default();
        assert_eq!(spec(&t), None);
        t.metadata = Some(TaskMetadata {
            discoverable: true,
            discovery_version: "1.0".into(),
            cache_serializable: true,
            cache_ignore_input_vars: vec!["seed".into()],
            ..Default::default()
        });
        assert_eq!(
            spec(&t),
            Some(CacheSpec { version: "1.0".into(), serializable: true, ignore: vec!["seed".into()] })
        );
    }

    #[test]
    fn key_changes_with_every_part_that_matters() {
        let i = TypedInterface::default();
        let base = key(&task("t"), &cached("1", &[]), &i, &inputs(&[("x", int(1))]));
        assert_eq!(base.len(), 64);
        assert_eq!(base, key(&task("t"), &cached("1", &[]), &i, &inputs(&[("x", int(1))])), "deterministic");
        assert_ne!(base, key(&task("u"), &cached("1", &[]), &i, &inputs(&[("x", int(1))])), "task name");
        assert_ne!(base, key(&task("t"), &cached("2", &[]), &i, &inputs(&[("x", int(1))])), "cache version");
        assert_ne!(base, key(&task("t"), &cached("1", &[]), &i, &inputs(&[("x", int(2))])), "input value");
        assert_ne!(base, key(&task("t"), &cached("1", &[]), &i, &inputs(&[("y", int(1))])), "input name");
        let other_interface = TypedInterface { inputs: Some(Default::default()), ..Default::default() };
        assert_ne!(base, key(&task("t"), &cached("1", &[]), &other_interface, &inputs(&[("x", int(1))])));
        let mut other_domain = task("t");
        other_domain.domain = "production".into();
        assert_ne!(base, key(&other_domain, &cached("1", &[]), &i, &inputs(&[("x", int(1))])), "domain");
    }

    #[test]
    fn ignored_inputs_and_literal_hashes() {
        let i = TypedInterface::default();
        let spec = cached("1", &["seed"]);
        assert_eq!(
            key(&task("t"), &spec, &i, &inputs(&[("x", int(1)), ("seed", int(7))])),
            key(&task("t"), &spec, &i, &inputs(&[("x", int(1)), ("seed", int(8))])),
            "cache_ignore_input_vars"
        );
        // two different uploads of the same data, hashed by the client, are the same input
        let mut a = int(1);
        a.hash = "abc".into();
        let mut b = int(2);
        b.hash = "abc".into();
        assert_eq!(
            key(&task("t"), &cached("1", &[]), &i, &inputs(&[("df", a)])),
            key(&task("t"), &cached("1", &[]), &i, &inputs(&[("df", b)]))
        );
    }
}
