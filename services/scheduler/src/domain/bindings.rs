//! Binding resolution: turns a node's bindings into the LiteralMap it runs with, from the outputs of
//! the nodes it depends on. Pure; the caller loads the upstream outputs.

use std::collections::BTreeMap;

use aloft_proto::flyteidl::core::{
    self, Binding, BindingData, Literal, LiteralCollection, LiteralMap, binding_data, literal, promise_attribute,
    scalar,
};

/// Why a binding could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input `{var}`: {reason}")]
pub struct BindingError {
    /// The input being bound.
    pub var: String,
    /// What went wrong.
    pub reason: String,
}

/// Resolves every binding. `outputs(node_id)` returns the outputs of a finished node
/// (`start-node` = the execution inputs).
pub fn resolve(bindings: &[Binding], outputs: &dyn Fn(&str) -> Option<LiteralMap>) -> Result<LiteralMap, BindingError> {
    let mut out = LiteralMap::default();
    for b in bindings {
        let data = b
            .binding
            .as_ref()
            .ok_or_else(|| BindingError { var: b.var.clone(), reason: "binding has no value".into() })?;
        let lit = resolve_data(data, outputs).map_err(|reason| BindingError { var: b.var.clone(), reason })?;
        out.literals.insert(b.var.clone(), lit);
    }
    Ok(out)
}

fn resolve_data(data: &BindingData, outputs: &dyn Fn(&str) -> Option<LiteralMap>) -> Result<Literal, String> {
    let lit = match &data.value {
        Some(binding_data::Value::Scalar(s)) => {
            Literal { value: Some(literal::Value::Scalar(Box::new(s.clone()))), ..Default::default() }
        }
        Some(binding_data::Value::Collection(c)) => {
            let literals = c.bindings.iter().map(|b| resolve_data(b, outputs)).collect::<Result<Vec<_>, _>>()?;
            Literal { value: Some(literal::Value::Collection(LiteralCollection { literals })), ..Default::default() }
        }
        Some(binding_data::Value::Map(m)) => {
            let mut literals = BTreeMap::new();
            for (k, b) in &m.bindings {
                literals.insert(k.clone(), resolve_data(b, outputs)?);
            }
            Literal { value: Some(literal::Value::Map(LiteralMap { literals })), ..Default::default() }
        }
        Some(binding_data::Value::Promise(p)) => {
            let map = outputs(&p.node_id).ok_or_else(|| format!("node `{}` has no outputs yet", p.node_id))?;
            let lit = map
                .literals
                .get(&p.var)
                .cloned()
                .ok_or_else(|| format!("node `{}` has no output `{}`", p.node_id, p.var))?;
            follow_path(lit, &p.attr_path).map_err(|e| format!("{}.{}: {e}", p.node_id, p.var))?
        }
        Some(binding_data::Value::OffloadedMetadata(_)) => return Err("offloaded binding data is not supported".into()),
        None => return Err("empty binding".into()),
    };
    // A value bound to a union-typed input is wrapped with the variant type the compiler chose.
    Ok(match &data.union {
        Some(u) => Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar {
                value: Some(scalar::Value::Union(Box::new(core::Union {
                    value: Some(Box::new(lit)),
                    r#type: u.target_type.clone(),
                }))),
            }))),
            ..Default::default()
        },
        None => lit,
    })
}

/// Applies `attr_path` (list index, map key, or field of a generic struct) to a literal.
fn follow_path(mut lit: Literal, path: &[core::PromiseAttribute]) -> Result<Literal, String> {
    for (i, attr) in path.iter().enumerate() {
        let step = attr.value.as_ref().ok_or("empty attribute")?;
        lit = match (lit.value, step) {
            (Some(literal::Value::Collection(c)), promise_attribute::Value::IntValue(n)) => {
                let len = c.literals.len();
                c.literals
                    .into_iter()
                    .nth(*n as usize)
                    .ok_or_else(|| format!("index {n} out of range (length {len})"))?
            }
            (Some(literal::Value::Map(m)), promise_attribute::Value::StringValue(k)) => {
                m.literals.get(k).cloned().ok_or_else(|| format!("no key `{k}`"))?
            }
            (Some(literal::Value::Scalar(s)), step) => match s.value {
                Some(scalar::Value::Generic(st)) => {
                    let mut v = prost_types::Value { kind: Some(prost_types::value::Kind::StructValue(st)) };
                    for a in &path[i..] {
                        v = struct_step(v, a)?;
                    }
                    return Ok(from_json_value(v));
                }
                Some(scalar::Value::Binary(b)) => return msgpack_path(&b, &path[i..]),
                _ => return Err(format!("cannot apply `{step:?}` to a scalar")),
            },
            (_, step) => return Err(format!("cannot apply `{step:?}` here")),
        };
    }
    Ok(lit)
}

/// Attribute access into a msgpack-encoded value (flytekit 1.16's dataclasses, Pydantic models and
/// dicts): walk the decoded value, then hand back a primitive literal for a primitive (as Flyte's
/// propeller does) or the sub-value re-encoded as msgpack.
fn msgpack_path(binary: &core::Binary, path: &[core::PromiseAttribute]) -> Result<Literal, String> {
    use rmpv::Value;
    if binary.tag != "msgpack" {
        return Err(format!("cannot follow an attribute path into a `{}` binary value", binary.tag));
    }
    let mut v = rmpv::decode::read_value(&mut binary.value.as_slice()).map_err(|e| format!("invalid msgpack: {e}"))?;
    for attr in path {
        v = match (v, &attr.value) {
            (Value::Map(entries), Some(promise_attribute::Value::StringValue(k))) => entries
                .into_iter()
                .find(|(key, _)| key.as_str() == Some(k.as_str()))
                .map(|(_, val)| val)
                .ok_or_else(|| format!("no key `{k}`"))?,
            (Value::Array(items), Some(promise_attribute::Value::IntValue(n))) => {
                let len = items.len();
                usize::try_from(*n)
                    .ok()
                    .and_then(|n| items.into_iter().nth(n))
                    .ok_or_else(|| format!("index {n} out of range (length {len})"))?
            }
            (other, a) => return Err(format!("cannot apply `{a:?}` to `{other}`")),
        };
    }
    let prim = |p: core::primitive::Value| Literal {
        value: Some(literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(scalar::Value::Primitive(core::Primitive { value: Some(p) })),
        }))),
        ..Default::default()
    };
    Ok(match v {
        Value::Integer(i) if i.as_i64().is_some() => {
            prim(core::primitive::Value::Integer(i.as_i64().unwrap_or_default()))
        }
        Value::F32(f) => prim(core::primitive::Value::FloatValue(f64::from(f))),
        Value::F64(f) => prim(core::primitive::Value::FloatValue(f)),
        Value::String(s) if s.as_str().is_some() => {
            prim(core::primitive::Value::StringValue(s.into_str().unwrap_or_default()))
        }
        Value::Boolean(b) => prim(core::primitive::Value::Boolean(b)),
        other => {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &other).map_err(|e| format!("cannot encode msgpack: {e}"))?;
            Literal {
                value: Some(literal::Value::Scalar(Box::new(core::Scalar {
                    value: Some(scalar::Value::Binary(core::Binary { value: bytes, tag: "msgpack".into() })),
                }))),
                ..Default::default()
            }
        }
    })
}

fn struct_step(v: prost_types::Value, attr: &core::PromiseAttribute) -> Result<prost_types::Value, String> {
    use prost_types::value::Kind;
    match (v.kind, &attr.value) {
        (Some(Kind::StructValue(s)), Some(promise_attribute::Value::StringValue(k))) => {
            s.fields.get(k).cloned().ok_or_else(|| format!("no field `{k}`"))
        }
        (Some(Kind::ListValue(l)), Some(promise_attribute::Value::IntValue(n))) => {
            l.values.get(*n as usize).cloned().ok_or_else(|| format!("index {n} out of range"))
        }
        _ => Err("attribute does not match the value".into()),
    }
}

/// A JSON value taken out of a generic struct, as flytekit's own attribute access produces it:
/// numbers become floats (or integers when whole), strings and bools primitives, objects structs.
fn from_json_value(v: prost_types::Value) -> Literal {
    use prost_types::value::Kind;
    let prim = |p: core::primitive::Value| Literal {
        value: Some(literal::Value::Scalar(Box::new(core::Scalar {
            value: Some(scalar::Value::Primitive(core::Primitive { value: Some(p) })),
        }))),
        ..Default::default()
    };
    match v.kind {
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            prim(core::primitive::Value::Integer(n as i64))
        }
        Some(Kind::NumberValue(n)) => prim(core::primitive::Value::FloatValue(n)),
        Some(Kind::StringValue(s)) => prim(core::primitive::Value::StringValue(s)),
        Some(Kind::BoolValue(b)) => prim(core::primitive::Value::Boolean(b)),
        Some(Kind::ListValue(l)) => Literal {
            value: Some(literal::Value::Collection(LiteralCollection {
                literals: l.values.into_iter().map(from_json_value).collect(),
            })),
            ..Default::default()
        },
        Some(Kind::StructValue(s)) => Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar { value: Some(scalar::Value::Generic(s)) }))),
            ..Default::default()
        },
        Some(Kind::NullValue(_)) | None => Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar {
                value: Some(scalar::Value::NoneType(core::Void {})),
            }))),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{BindingDataCollection, BindingDataMap, OutputReference, PromiseAttribute};

    pub fn int(v: i64) -> Literal {
        Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar {
                value: Some(scalar::Value::Primitive(core::Primitive {
                    value: Some(core::primitive::Value::Integer(v)),
                })),
            }))),
            ..Default::default()
        }
    }

    fn promise(node: &str, var: &str, path: Vec<PromiseAttribute>) -> BindingData {
        BindingData {
            value: Some(binding_data::Value::Promise(OutputReference {
                node_id: node.into(),
                var: var.into(),
                attr_path: path,
            })),
            union: None,
        }
    }

    fn outputs(node: &str) -> Option<LiteralMap> {
        match node {
            "start-node" => Some(LiteralMap { literals: [("x".to_string(), int(1))].into() }),
            "n0" => Some(LiteralMap {
                literals: [(
                    "o0".to_string(),
                    Literal {
                        value: Some(literal::Value::Collection(LiteralCollection { literals: vec![int(10), int(20)] })),
                        ..Default::default()
                    },
                )]
                .into(),
            }),
            _ => None,
        }
    }

    #[test]
    fn every_binding_form() {
        let bindings = vec![
            Binding { var: "a".into(), binding: Some(promise("start-node", "x", vec![])) },
            Binding {
                var: "b".into(),
                binding: Some(promise(
                    "n0",
                    "o0",
                    vec![PromiseAttribute { value: Some(promise_attribute::Value::IntValue(1)) }],
                )),
            },
            Binding {
                var: "c".into(),
                binding: Some(BindingData {
                    value: Some(binding_data::Value::Collection(BindingDataCollection {
                        bindings: vec![promise("start-node", "x", vec![]), promise("start-node", "x", vec![])],
                    })),
                    union: None,
                }),
            },
            Binding {
                var: "d".into(),
                binding: Some(BindingData {
                    value: Some(binding_data::Value::Map(BindingDataMap {
                        bindings: [("k".to_string(), promise("start-node", "x", vec![]))].into(),
                    })),
                    union: None,
                }),
            },
        ];
        let m = resolve(&bindings, &outputs).unwrap();
        assert_eq!(m.literals["a"], int(1));
        assert_eq!(m.literals["b"], int(20));
        assert!(matches!(&m.literals["c"].value, Some(literal::Value::Collection(c)) if c.literals.len() == 2));
        assert!(matches!(&m.literals["d"].value, Some(literal::Value::Map(m)) if m.literals["k"] == int(1)));
    }

    #[test]
    fn errors_name_the_input() {
        let b = vec![Binding { var: "a".into(), binding: Some(promise("n9", "o0", vec![])) }];
        assert_eq!(resolve(&b, &outputs).unwrap_err().to_string(), "input `a`: node `n9` has no outputs yet");
        let b = vec![Binding {
            var: "a".into(),
            binding: Some(promise(
                "n0",
                "o0",
                vec![PromiseAttribute { value: Some(promise_attribute::Value::IntValue(5)) }],
            )),
        }];
        assert_eq!(resolve(&b, &outputs).unwrap_err().to_string(), "input `a`: n0.o0: index 5 out of range (length 2)");
    }

    #[test]
    fn attribute_paths_into_msgpack_values() {
        use rmpv::Value;
        let doc = Value::Map(vec![
            (Value::from("name"), Value::from("shoes")),
            (Value::from("prices"), Value::Array(vec![Value::from(1.5), Value::from(2.5)])),
            (Value::from("meta"), Value::Map(vec![(Value::from("n"), Value::from(3))])),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &doc).unwrap();
        let binary = core::Binary { value: bytes, tag: "msgpack".into() };
        let s = |k: &str| PromiseAttribute { value: Some(promise_attribute::Value::StringValue(k.into())) };
        let i = |n: i32| PromiseAttribute { value: Some(promise_attribute::Value::IntValue(n)) };
        let float = |v: f64| Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar {
                value: Some(scalar::Value::Primitive(core::Primitive {
                    value: Some(core::primitive::Value::FloatValue(v)),
                })),
            }))),
            ..Default::default()
        };
        assert_eq!(msgpack_path(&binary, &[s("prices"), i(1)]).unwrap(), float(2.5));
        assert_eq!(msgpack_path(&binary, &[s("meta"), s("n")]).unwrap(), int(3));
        let sub = msgpack_path(&binary, &[s("meta")]).unwrap();
        let Some(literal::Value::Scalar(sc)) = &sub.value else { panic!() };
        let Some(scalar::Value::Binary(b)) = &sc.value else { panic!("a map stays msgpack") };
        assert_eq!(b.tag, "msgpack");
        assert_eq!(msgpack_path(&binary, &[s("nope")]).unwrap_err(), "no key `nope`");
        assert_eq!(msgpack_path(&binary, &[s("prices"), i(7)]).unwrap_err(), "index 7 out of range (length 2)");
    }

    #[test]
    fn union_bindings_are_wrapped() {
        let mut data = promise("start-node", "x", vec![]);
        data.union = Some(core::UnionInfo { target_type: Some(core::LiteralType::default()) });
        let m = resolve(&[Binding { var: "u".into(), binding: Some(data) }], &outputs).unwrap();
        let Some(literal::Value::Scalar(s)) = &m.literals["u"].value else { panic!() };
        assert!(matches!(&s.value, Some(scalar::Value::Union(u)) if u.value.as_deref() == Some(&int(1))));
    }
}
