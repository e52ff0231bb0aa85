//! Flyte literals as a person reads them: Python-like values, files as their URI, dataclasses
//! (msgpack in flytekit 1.16) and dicts as JSON.

use aloft_proto::flyteidl::core::{self, literal, primitive, scalar};

/// Long values (a big JSON blob) are cut here, with a note saying how long they were.
const MAX_CHARS: usize = 2000;

/// The value as text.
pub fn render(l: &core::Literal) -> String {
    let text = value(l);
    if text.chars().count() > MAX_CHARS {
        let cut: String = text.chars().take(MAX_CHARS).collect();
        format!("{cut}… ({} characters)", text.chars().count())
    } else {
        text
    }
}

/// What kind of value it is, in flytekit's Python terms where they are unambiguous.
pub fn kind(l: &core::Literal) -> String {
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => match &p.value {
                Some(primitive::Value::Integer(_)) => "int",
                Some(primitive::Value::FloatValue(_)) => "float",
                Some(primitive::Value::StringValue(_)) => "str",
                Some(primitive::Value::Boolean(_)) => "bool",
                Some(primitive::Value::Datetime(_)) => "datetime",
                Some(primitive::Value::Duration(_)) => "timedelta",
                None => "?",
            }
            .into(),
            Some(scalar::Value::Blob(b)) => {
                let multipart =
                    b.metadata.as_ref().and_then(|m| m.r#type.as_ref()).is_some_and(|t| t.dimensionality == 1);
                if multipart { "directory" } else { "file" }.into()
            }
            Some(scalar::Value::StructuredDataset(_)) => "dataframe".into(),
            Some(scalar::Value::Schema(_)) => "schema".into(),
            Some(scalar::Value::Binary(b)) if b.tag == "msgpack" => "dataclass".into(),
            Some(scalar::Value::Binary(_)) => "binary".into(),
            Some(scalar::Value::NoneType(_)) => "none".into(),
            Some(scalar::Value::Error(_)) => "error".into(),
            Some(scalar::Value::Generic(_)) => "dict".into(),
            Some(scalar::Value::Union(u)) => u.value.as_ref().map(|v| kind(v)).unwrap_or_else(|| "union".into()),
            None => "?".into(),
        },
        Some(literal::Value::Collection(_)) => "list".into(),
        Some(literal::Value::Map(_)) => "map".into(),
        Some(literal::Value::OffloadedMetadata(_)) => "offloaded".into(),
        None => "?".into(),
    }
}

fn value(l: &core::Literal) -> String {
    match &l.value {
        Some(literal::Value::Scalar(s)) => scalar_text(s),
        Some(literal::Value::Collection(c)) => {
            format!("[{}]", c.literals.iter().map(value).collect::<Vec<_>>().join(", "))
        }
        Some(literal::Value::Map(m)) => {
            let items: Vec<String> = m.literals.iter().map(|(k, v)| format!("{k:?}: {}", value(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(literal::Value::OffloadedMetadata(o)) => format!("(offloaded to {})", o.uri),
        None => "?".into(),
    }
}

fn scalar_text(s: &core::Scalar) -> String {
    match &s.value {
        Some(scalar::Value::Primitive(p)) => match &p.value {
            Some(primitive::Value::Integer(i)) => i.to_string(),
            Some(primitive::Value::FloatValue(f)) => float(*f),
            Some(primitive::Value::StringValue(s)) => serde_json::Value::String(s.clone()).to_string(),
            Some(primitive::Value::Boolean(b)) => if *b { "True" } else { "False" }.into(),
            Some(primitive::Value::Datetime(t)) => {
                super::render::timestamp(t.seconds as f64 + f64::from(t.nanos) / 1e9)
            }
            Some(primitive::Value::Duration(d)) => super::render::duration(d.seconds as f64 + f64::from(d.nanos) / 1e9),
            None => "?".into(),
        },
        Some(scalar::Value::Blob(b)) => b.uri.clone(),
        Some(scalar::Value::StructuredDataset(d)) => d.uri.clone(),
        Some(scalar::Value::Schema(s)) => s.uri.clone(),
        Some(scalar::Value::Binary(b)) if b.tag == "msgpack" => match msgpack_json(&b.value) {
            Some(json) => json.to_string(),
            None => format!("<{} bytes of msgpack that do not decode>", b.value.len()),
        },
        Some(scalar::Value::Binary(b)) => format!("<{} bytes, tag {:?}>", b.value.len(), b.tag),
        Some(scalar::Value::NoneType(_)) => "None".into(),
        Some(scalar::Value::Error(e)) => format!("error in {}: {}", e.failed_node_id, e.message),
        Some(scalar::Value::Generic(g)) => struct_json(g).to_string(),
        Some(scalar::Value::Union(u)) => u.value.as_ref().map(|v| value(v)).unwrap_or_else(|| "?".into()),
        None => "?".into(),
    }
}

/// Floats as Python prints them: always with a decimal point.
fn float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 { format!("{f:.1}") } else { f.to_string() }
}

fn msgpack_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let v = rmpv::decode::read_value(&mut &bytes[..]).ok()?;
    Some(msgpack_to_json(&v))
}

fn msgpack_to_json(v: &rmpv::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        rmpv::Value::Nil => J::Null,
        rmpv::Value::Boolean(b) => J::Bool(*b),
        rmpv::Value::Integer(i) => i.as_i64().map(J::from).or_else(|| i.as_u64().map(J::from)).unwrap_or(J::Null),
        rmpv::Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map(J::Number).unwrap_or(J::Null),
        rmpv::Value::F64(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        rmpv::Value::String(s) => J::String(s.as_str().unwrap_or("<invalid utf-8>").to_string()),
        rmpv::Value::Binary(b) => J::String(format!("<{} bytes>", b.len())),
        rmpv::Value::Array(a) => J::Array(a.iter().map(msgpack_to_json).collect()),
        rmpv::Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| k.to_string()), msgpack_to_json(v)))
                .collect(),
        ),
        rmpv::Value::Ext(_, b) => J::String(format!("<extension, {} bytes>", b.len())),
    }
}

fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), proto_value_json(v))).collect())
}

fn proto_value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    match &v.kind {
        Some(Kind::NullValue(_)) | None => J::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map(J::Number).unwrap_or(J::Null),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(proto_value_json).collect()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn scalar(v: scalar::Value) -> core::Literal {
        core::Literal {
            value: Some(literal::Value::Scalar(Box::new(core::Scalar { value: Some(v) }))),
            ..Default::default()
        }
    }

    pub fn prim(v: primitive::Value) -> core::Literal {
        scalar(scalar::Value::Primitive(core::Primitive { value: Some(v) }))
    }

    #[test]
    fn primitives_read_like_python() {
        assert_eq!(render(&prim(primitive::Value::Integer(42))), "42");
        assert_eq!(render(&prim(primitive::Value::FloatValue(0.5))), "0.5");
        assert_eq!(render(&prim(primitive::Value::FloatValue(3.0))), "3.0");
        assert_eq!(render(&prim(primitive::Value::StringValue("a \"b\"".into()))), r#""a \"b\"""#);
        assert_eq!(render(&prim(primitive::Value::Boolean(true))), "True");
        assert_eq!(kind(&prim(primitive::Value::Boolean(true))), "bool");
    }

    #[test]
    fn dataclasses_in_msgpack_are_json() {
        let mut bytes = Vec::new();
        let v = rmpv::Value::Map(vec![
            (rmpv::Value::from("accuracy"), rmpv::Value::F64(0.93)),
            (rmpv::Value::from("depth"), rmpv::Value::from(4)),
        ]);
        rmpv::encode::write_value(&mut bytes, &v).unwrap();
        let l = scalar(scalar::Value::Binary(core::Binary { value: bytes, tag: "msgpack".into() }));
        assert_eq!(render(&l), r#"{"accuracy":0.93,"depth":4}"#);
        assert_eq!(kind(&l), "dataclass");
        let broken = scalar(scalar::Value::Binary(core::Binary { value: vec![0x92], tag: "msgpack".into() }));
        assert_eq!(render(&broken), "<1 bytes of msgpack that do not decode>");
    }

    #[test]
    fn collections_maps_and_files() {
        let list = core::Literal {
            value: Some(literal::Value::Collection(core::LiteralCollection {
                literals: vec![prim(primitive::Value::Integer(1)), prim(primitive::Value::Integer(2))],
            })),
            ..Default::default()
        };
        assert_eq!(render(&list), "[1, 2]");
        let file = scalar(scalar::Value::Blob(core::Blob { uri: "/d/store/x.joblib".into(), metadata: None }));
        assert_eq!((render(&file), kind(&file)), ("/d/store/x.joblib".to_string(), "file".to_string()));
        let long = prim(primitive::Value::StringValue("x".repeat(3000)));
        assert!(render(&long).ends_with("… (3002 characters)"), "{}", render(&long));
    }
}
