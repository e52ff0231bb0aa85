//! Raw-container data (flyte contract 5.5, what Flyte's CoPilot does): which files to write
//! under `input_path` before the command runs, and how the files under `output_path` become
//! `outputs.pb` afterwards. The adapter (`raw_container`) does the reading and writing.

use std::collections::BTreeMap;

use aloft_proto::flyteidl::core::{
    Binary, Blob, BlobMetadata, BlobType, Error as ErrorValue, Literal, LiteralMap, LiteralType, Primitive, SimpleType,
    VariableMap, Void, blob_type, literal, literal_type, primitive, scalar,
};
use serde_json::Value as Json;

use super::SpecError;
use super::text::{
    format_duration, format_timestamp, parse_duration, parse_timestamp, primitive_text, scalar_kind, scalar_literal,
};

/// The largest file read as a simple-typed output (CoPilot's limit).
pub const MAX_SIMPLE_OUTPUT_BYTES: usize = 1024;

/// The file whose presence under `output_path` means the command failed (CoPilot's name).
pub const ERROR_FILE: &str = "_ERROR";

/// One file (or directory) to create under the input directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFile {
    /// A primitive (or none, struct, error) value as text.
    Text {
        /// Absolute path.
        path: String,
        /// Content.
        content: Vec<u8>,
    },
    /// A blob to download: one file, or a directory for a multipart blob.
    Blob {
        /// Absolute path.
        path: String,
        /// Where it is in the store.
        uri: String,
        /// A directory of parts rather than one object.
        multipart: bool,
    },
}

/// What to write under the input directory.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPlan {
    /// The values, one file per variable (a directory per collection or map).
    pub files: Vec<InputFile>,
    /// `inputs.pb`: the inputs with blob uris replaced by their local paths.
    pub local_inputs: LiteralMap,
    /// `inputs.json` (and `inputs.yaml`, of which JSON is a subset): native values.
    pub json: Json,
}

/// Plans the input directory `dir` (an absolute path) for `inputs`.
pub fn plan_inputs(inputs: &LiteralMap, dir: &str) -> Result<InputPlan, SpecError> {
    let mut files = Vec::new();
    let mut local = LiteralMap::default();
    let mut json = serde_json::Map::new();
    for (var, value) in &inputs.literals {
        check_segment(var).map_err(|e| e.context(&format!("input `{var}`")))?;
        let path = format!("{}/{var}", dir.trim_end_matches('/'));
        let (local_value, native) =
            plan_literal(value, &path, &mut files).map_err(|e| e.context(&format!("input `{var}`")))?;
        local.literals.insert(var.clone(), local_value);
        json.insert(var.clone(), native);
    }
    Ok(InputPlan { files, local_inputs: local, json: Json::Object(json) })
}

fn plan_literal(value: &Literal, path: &str, files: &mut Vec<InputFile>) -> Result<(Literal, Json), SpecError> {
    let text = |files: &mut Vec<InputFile>, content: String| {
        files.push(InputFile::Text { path: path.to_string(), content: content.into_bytes() });
    };
    match &value.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => {
                text(files, primitive_text(p)?);
                Ok((value.clone(), primitive_json(p)))
            }
            Some(scalar::Value::Blob(b)) => {
                let multipart = b
                    .metadata
                    .as_ref()
                    .and_then(|m| m.r#type.as_ref())
                    .is_some_and(|t| t.dimensionality == blob_type::BlobDimensionality::Multipart as i32);
                files.push(InputFile::Blob { path: path.to_string(), uri: b.uri.clone(), multipart });
                let local = Literal {
                    value: scalar_literal(scalar::Value::Blob(Blob {
                        metadata: b.metadata.clone(),
                        uri: path.to_string(),
                    }))
                    .value,
                    ..value.clone()
                };
                Ok((local, Json::String(path.to_string())))
            }
            Some(scalar::Value::NoneType(_)) => {
                text(files, "null".into());
                Ok((value.clone(), Json::Null))
            }
            Some(scalar::Value::Error(e)) => {
                text(files, e.message.clone());
                Ok((value.clone(), Json::String(e.message.clone())))
            }
            Some(scalar::Value::Generic(st)) => {
                let native = struct_json(st);
                text(files, native.to_string());
                Ok((value.clone(), native))
            }
            Some(scalar::Value::Union(u)) => match &u.value {
                Some(inner) => plan_literal(inner, path, files),
                None => Err(SpecError::new("a union without a value")),
            },
            other => {
                Err(SpecError::new(format!("a {} cannot be given to a raw container", scalar_kind(other.as_ref()))))
            }
        },
        Some(literal::Value::Collection(c)) => {
            let mut locals = Vec::with_capacity(c.literals.len());
            let mut natives = Vec::with_capacity(c.literals.len());
            for (i, item) in c.literals.iter().enumerate() {
                let (l, n) = plan_literal(item, &format!("{path}/{i}"), files)?;
                locals.push(l);
                natives.push(n);
            }
            let local = Literal {
                value: Some(literal::Value::Collection(aloft_proto::flyteidl::core::LiteralCollection {
                    literals: locals,
                })),
                ..value.clone()
            };
            Ok((local, Json::Array(natives)))
        }
        Some(literal::Value::Map(m)) => {
            let mut locals = BTreeMap::new();
            let mut natives = serde_json::Map::new();
            for (key, item) in &m.literals {
                check_segment(key).map_err(|e| e.context(&format!("map key `{key}`")))?;
                let (l, n) = plan_literal(item, &format!("{path}/{key}"), files)?;
                locals.insert(key.clone(), l);
                natives.insert(key.clone(), n);
            }
            let local = Literal { value: Some(literal::Value::Map(LiteralMap { literals: locals })), ..value.clone() };
            Ok((local, Json::Object(natives)))
        }
        Some(literal::Value::OffloadedMetadata(_)) => {
            Err(SpecError::new("an offloaded literal cannot be given to a raw container"))
        }
        None => Err(SpecError::new("an empty literal")),
    }
}

fn primitive_json(p: &Primitive) -> Json {
    match &p.value {
        Some(primitive::Value::Integer(i)) => Json::from(*i),
        Some(primitive::Value::FloatValue(f)) => {
            serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null)
        }
        Some(primitive::Value::StringValue(s)) => Json::String(s.clone()),
        Some(primitive::Value::Boolean(b)) => Json::Bool(*b),
        Some(primitive::Value::Datetime(t)) => Json::String(format_timestamp(t)),
        Some(primitive::Value::Duration(d)) => Json::String(format_duration(d)),
        None => Json::Null,
    }
}

fn struct_json(st: &prost_types::Struct) -> Json {
    Json::Object(st.fields.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn value_json(v: &prost_types::Value) -> Json {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map(Json::Number).unwrap_or(Json::Null),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_json).collect()),
        Some(Kind::NullValue(_)) | None => Json::Null,
    }
}

fn json_value(j: &Json) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match j {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_value).collect() }),
        Json::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// How one output variable is read from `output_path/<var>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// A file holding the value as text.
    Simple(SimpleType),
    /// A file (or a directory, for a multipart blob) to upload.
    Blob(BlobType),
}

/// The output variables and how to read each; types CoPilot cannot read (collections, unions,
/// ...) are refused.
pub fn output_kinds(outputs: Option<&VariableMap>) -> Result<Vec<(String, OutputKind)>, SpecError> {
    let Some(outputs) = outputs else { return Ok(Vec::new()) };
    outputs
        .variables
        .iter()
        .map(|(name, var)| {
            check_segment(name).map_err(|e| e.context(&format!("output `{name}`")))?;
            let kind = match var.r#type.as_ref().and_then(|t: &LiteralType| t.r#type.as_ref()) {
                Some(literal_type::Type::Simple(s)) => OutputKind::Simple(
                    SimpleType::try_from(*s)
                        .map_err(|_| SpecError::new(format!("output `{name}` has an unknown simple type {s}")))?,
                ),
                Some(literal_type::Type::Blob(b)) => OutputKind::Blob(b.clone()),
                _ => {
                    return Err(SpecError::new(format!(
                        "output `{name}`: raw containers can only return simple types and blobs"
                    )));
                }
            };
            Ok((name.clone(), kind))
        })
        .collect()
}

/// Parses a simple-typed output from its file content, as CoPilot does (surrounding spaces,
/// tabs and newlines ignored; Go's number, boolean, RFC 3339 and duration syntax).
pub fn parse_simple(t: SimpleType, content: &[u8]) -> Result<Literal, SpecError> {
    if content.len() > MAX_SIMPLE_OUTPUT_BYTES {
        return Err(SpecError::new(format!(
            "the file holds {} bytes, more than the {MAX_SIMPLE_OUTPUT_BYTES} allowed for a {} value",
            content.len(),
            t.as_str_name().to_lowercase()
        )));
    }
    let raw = String::from_utf8_lossy(content);
    let text = raw.trim_matches([' ', '\n', '\t', '\r']);
    let bad = |what: &str| SpecError::new(format!("`{text}` is not {what}"));
    let prim = |v: primitive::Value| scalar::Value::Primitive(Primitive { value: Some(v) });
    let value = match t {
        SimpleType::Integer => prim(primitive::Value::Integer(text.parse().map_err(|_| bad("an integer"))?)),
        SimpleType::Float => prim(primitive::Value::FloatValue(parse_float(text).ok_or_else(|| bad("a float"))?)),
        SimpleType::String => prim(primitive::Value::StringValue(text.to_string())),
        SimpleType::Boolean => prim(primitive::Value::Boolean(match text {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(bad("a boolean")),
        })),
        SimpleType::Datetime => prim(primitive::Value::Datetime(parse_timestamp(text).map_err(SpecError::new)?)),
        SimpleType::Duration => prim(primitive::Value::Duration(parse_duration(text).map_err(SpecError::new)?)),
        SimpleType::None => scalar::Value::NoneType(Void {}),
        SimpleType::Binary => scalar::Value::Binary(Binary { value: text.as_bytes().to_vec(), tag: String::new() }),
        SimpleType::Error => scalar::Value::Error(ErrorValue { message: text.to_string(), ..Default::default() }),
        SimpleType::Struct => {
            let json: Json = serde_json::from_str(text).map_err(|_| bad("a JSON object"))?;
            let prost_types::Value { kind: Some(prost_types::value::Kind::StructValue(st)) } = json_value(&json) else {
                return Err(bad("a JSON object"));
            };
            scalar::Value::Generic(st)
        }
    };
    Ok(scalar_literal(value))
}

/// The literal of an uploaded blob output.
pub fn blob_literal(uri: &str, declared: &BlobType, is_dir: bool) -> Literal {
    let dimensionality =
        if is_dir { blob_type::BlobDimensionality::Multipart } else { blob_type::BlobDimensionality::Single };
    scalar_literal(scalar::Value::Blob(Blob {
        metadata: Some(BlobMetadata {
            r#type: Some(BlobType { format: declared.format.clone(), dimensionality: dimensionality as i32 }),
        }),
        uri: uri.to_string(),
    }))
}

/// Go's `ParseFloat` also takes `inf`, `NaN` and hex floats; decimal and the named values suffice.
fn parse_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ if text.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) => {
            text.parse().ok()
        }
        _ => None,
    }
}

/// A variable name becomes a file name: no separators, not `.` or `..`, not empty.
fn check_segment(name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(SpecError::new("the name cannot be used as a file name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{LiteralCollection, Variable};

    use super::*;

    fn scalar_lit(v: scalar::Value) -> Literal {
        scalar_literal(v)
    }

    fn int(i: i64) -> Literal {
        scalar_lit(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(i)) }))
    }

    fn blob(uri: &str, dim: blob_type::BlobDimensionality) -> Literal {
        scalar_lit(scalar::Value::Blob(Blob {
            metadata: Some(BlobMetadata {
                r#type: Some(BlobType { format: "csv".into(), dimensionality: dim as i32 }),
            }),
            uri: uri.into(),
        }))
    }

    fn map(pairs: Vec<(&str, Literal)>) -> LiteralMap {
        LiteralMap { literals: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    #[test]
    fn inputs_become_files_with_local_blob_paths() {
        let inputs = map(vec![
            ("x", int(41)),
            ("f", blob("s3://b/raw/data.csv", blob_type::BlobDimensionality::Single)),
            ("d", blob("s3://b/raw/dir", blob_type::BlobDimensionality::Multipart)),
            (
                "xs",
                Literal {
                    value: Some(literal::Value::Collection(LiteralCollection { literals: vec![int(1), int(2)] })),
                    ..Default::default()
                },
            ),
        ]);
        let plan = plan_inputs(&inputs, "/in/").unwrap();
        assert_eq!(
            plan.files,
            vec![
                InputFile::Blob { path: "/in/d".into(), uri: "s3://b/raw/dir".into(), multipart: true },
                InputFile::Blob { path: "/in/f".into(), uri: "s3://b/raw/data.csv".into(), multipart: false },
                InputFile::Text { path: "/in/x".into(), content: b"41".to_vec() },
                InputFile::Text { path: "/in/xs/0".into(), content: b"1".to_vec() },
                InputFile::Text { path: "/in/xs/1".into(), content: b"2".to_vec() },
            ]
        );
        assert_eq!(plan.local_inputs.literals["f"], blob("/in/f", blob_type::BlobDimensionality::Single));
        assert_eq!(plan.local_inputs.literals["x"], int(41));
        assert_eq!(plan.json, serde_json::json!({"x": 41, "f": "/in/f", "d": "/in/d", "xs": [1, 2]}));
    }

    #[test]
    fn unusable_inputs_are_named() {
        let bad_name = map(vec![("../x", int(1))]);
        assert_eq!(
            plan_inputs(&bad_name, "/in").unwrap_err().to_string(),
            "input `../x`: the name cannot be used as a file name"
        );
        let binary = map(vec![("b", scalar_lit(scalar::Value::Binary(Binary::default())))]);
        assert_eq!(
            plan_inputs(&binary, "/in").unwrap_err().to_string(),
            "input `b`: a binary cannot be given to a raw container"
        );
    }

    #[test]
    fn simple_outputs_parse_like_copilot() {
        let p = |t, s: &str| parse_simple(t, s.as_bytes());
        assert_eq!(p(SimpleType::Integer, "42\n").unwrap(), int(42));
        assert_eq!(
            p(SimpleType::Float, " 3.5 ").unwrap(),
            scalar_lit(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::FloatValue(3.5)) }))
        );
        assert!(p(SimpleType::Boolean, "True").is_ok());
        assert!(p(SimpleType::Boolean, "yes").is_err());
        assert_eq!(
            p(SimpleType::String, "  hello world \n").unwrap(),
            scalar_lit(scalar::Value::Primitive(Primitive {
                value: Some(primitive::Value::StringValue("hello world".into()))
            }))
        );
        assert!(p(SimpleType::Datetime, "2024-01-02T03:04:05Z").is_ok());
        assert!(p(SimpleType::Duration, "1m30s").is_ok());
        let st = p(SimpleType::Struct, r#"{"a": [1, "x"], "b": null}"#).unwrap();
        let Some(literal::Value::Scalar(inner)) = st.value else { panic!("not a scalar") };
        assert!(matches!(inner.value, Some(scalar::Value::Generic(_))));
        assert_eq!(p(SimpleType::Integer, "4x").unwrap_err().to_string(), "`4x` is not an integer");
        assert_eq!(p(SimpleType::Struct, "[1]").unwrap_err().to_string(), "`[1]` is not a JSON object");
        let big = vec![b'1'; MAX_SIMPLE_OUTPUT_BYTES + 1];
        assert!(parse_simple(SimpleType::Integer, &big).unwrap_err().to_string().contains("more than the 1024"));
    }

    #[test]
    fn output_kinds_accept_simple_and_blob_only() {
        let var = |t: literal_type::Type| Variable {
            r#type: Some(LiteralType { r#type: Some(t), ..Default::default() }),
            ..Default::default()
        };
        let vars = VariableMap {
            variables: [
                ("y".to_string(), var(literal_type::Type::Simple(SimpleType::Integer as i32))),
                ("f".to_string(), var(literal_type::Type::Blob(BlobType { format: "csv".into(), dimensionality: 0 }))),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            output_kinds(Some(&vars)).unwrap(),
            vec![
                ("f".into(), OutputKind::Blob(BlobType { format: "csv".into(), dimensionality: 0 })),
                ("y".into(), OutputKind::Simple(SimpleType::Integer)),
            ]
        );
        let list = VariableMap {
            variables: [(
                "ys".to_string(),
                var(literal_type::Type::CollectionType(Box::new(LiteralType {
                    r#type: Some(literal_type::Type::Simple(1)),
                    ..Default::default()
                }))),
            )]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            output_kinds(Some(&list)).unwrap_err().to_string(),
            "output `ys`: raw containers can only return simple types and blobs"
        );
        assert_eq!(output_kinds(None).unwrap(), vec![]);
    }

    #[test]
    fn blob_outputs_keep_the_declared_format() {
        let declared = BlobType { format: "csv".into(), dimensionality: 0 };
        assert_eq!(
            blob_literal("s3://b/raw/f", &declared, false),
            blob("s3://b/raw/f", blob_type::BlobDimensionality::Single)
        );
        assert_eq!(
            blob_literal("s3://b/raw/d", &declared, true),
            blob("s3://b/raw/d", blob_type::BlobDimensionality::Multipart)
        );
    }
}
