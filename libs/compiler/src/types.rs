//! Type castability (Flyte's `AreTypesCastable`) and readable type names for error messages.

use aloft_proto::flyteidl::core::{
    self, LiteralType, SimpleType, literal_type::Type, scalar, schema_type::schema_column::SchemaColumnType,
};
use prost_types::value::Kind;

/// Whether a value of type `upstream` may be bound where `downstream` is declared.
///
/// Mirrors flytepropeller's `AreTypesCastable` (`validators/typing.go`) with three deliberate
/// differences asked for by Aloft: a non-union value casts into a union when *any* variant accepts it
/// (Flyte additionally rejects ambiguous matches), a union casts into a non-union when *every*
/// variant does (Flyte only unwraps single-variant unions), and blobs must agree on dimensionality
/// (file vs directory) as well as on format. Enums cast into enums whose values are a superset.
/// A type with no kind set is unknown and casts either way.
pub fn types_castable(upstream: &LiteralType, downstream: &LiteralType) -> bool {
    let (Some(up), Some(down)) = (&upstream.r#type, &downstream.r#type) else {
        return true;
    };

    if let Type::UnionType(up_union) = up
        && !matches!(down, Type::UnionType(_))
    {
        return !up_union.variants.is_empty() && up_union.variants.iter().all(|v| types_castable(v, downstream));
    }

    match down {
        Type::UnionType(down_union) => match up {
            Type::UnionType(up_union) => {
                up_union.variants.iter().all(|u| down_union.variants.iter().any(|d| types_castable(u, d)))
            }
            _ => down_union.variants.iter().any(|d| types_castable(upstream, d)),
        },
        Type::CollectionType(down_elem) => match up {
            Type::CollectionType(up_elem) => is_none(up_elem) || types_castable(up_elem, down_elem),
            _ => false,
        },
        Type::MapValueType(down_value) => match up {
            Type::MapValueType(up_value) => is_none(up_value) || types_castable(up_value, down_value),
            _ => false,
        },
        Type::Blob(down_blob) => match up {
            Type::Blob(up_blob) => {
                (up_blob.format.is_empty() || down_blob.format.is_empty() || up_blob.format == down_blob.format)
                    && up_blob.dimensionality == down_blob.dimensionality
            }
            _ => false,
        },
        Type::Schema(down_schema) => match up {
            Type::Schema(up_schema) => schema_from_schema(up_schema, down_schema),
            // a Flyte schema can only be read from parquet
            Type::StructuredDatasetType(up_sd) => {
                (up_sd.format.is_empty() || up_sd.format.eq_ignore_ascii_case("parquet"))
                    && schema_from_structured_dataset(up_sd, down_schema)
            }
            _ => false,
        },
        Type::StructuredDatasetType(down_sd) => match up {
            // structured datasets are nullable
            Type::Simple(s) if *s == SimpleType::None as i32 => true,
            Type::StructuredDatasetType(up_sd) => structured_dataset_from_structured_dataset(up_sd, down_sd),
            Type::Schema(up_schema) => {
                (down_sd.format.is_empty() || down_sd.format.eq_ignore_ascii_case("parquet"))
                    && structured_dataset_from_schema(up_schema, down_sd)
            }
            _ => false,
        },
        Type::EnumType(down_enum) => {
            tags_compatible(upstream, downstream)
                && match up {
                    Type::EnumType(up_enum) => up_enum.values.iter().all(|v| down_enum.values.contains(v)),
                    Type::Simple(s) => *s == SimpleType::String as i32,
                    _ => false,
                }
        }
        Type::Simple(down_simple) => {
            if *down_simple == SimpleType::None as i32 {
                return is_none(upstream);
            }
            match up {
                // an enum is a constrained string
                Type::EnumType(_) => *down_simple == SimpleType::String as i32,
                Type::Simple(up_simple) => {
                    up_simple == down_simple
                        && tags_compatible(upstream, downstream)
                        && (*down_simple != SimpleType::Struct as i32 || struct_castable(upstream, downstream))
                }
                _ => false,
            }
        }
    }
}

fn is_none(t: &LiteralType) -> bool {
    matches!(t.r#type, Some(Type::Simple(s)) if s == SimpleType::None as i32)
}

fn tag(t: &LiteralType) -> &str {
    t.structure.as_ref().map_or("", |s| s.tag.as_str())
}

fn tags_compatible(upstream: &LiteralType, downstream: &LiteralType) -> bool {
    tag(upstream).is_empty() || tag(upstream) == tag(downstream)
}

/// Generic structs (dataclasses, dicts) carry their JSON schema in `metadata`. Flyte accepts equal
/// schemas and upstream schemas that are a supertype; without a schema on either side it cannot
/// tell and accepts. The supertype test here is structural: every property the downstream schema
/// declares exists upstream with the same schema.
fn struct_castable(upstream: &LiteralType, downstream: &LiteralType) -> bool {
    let (Some(up), Some(down)) = (non_empty(&upstream.metadata), non_empty(&downstream.metadata)) else {
        return true;
    };
    if up == down {
        return true;
    }
    let (Some(up_props), Some(down_props)) = (properties(up), properties(down)) else {
        return false;
    };
    down_props.fields.iter().all(|(name, schema)| up_props.fields.get(name) == Some(schema))
}

fn non_empty(s: &Option<prost_types::Struct>) -> Option<&prost_types::Struct> {
    s.as_ref().filter(|s| !s.fields.is_empty())
}

fn properties(schema: &prost_types::Struct) -> Option<&prost_types::Struct> {
    match schema.fields.get("properties")?.kind.as_ref()? {
        Kind::StructValue(s) => Some(s),
        _ => None,
    }
}

fn schema_from_schema(up: &core::SchemaType, down: &core::SchemaType) -> bool {
    if up.columns.is_empty() || down.columns.is_empty() {
        return true;
    }
    down.columns.iter().all(|d| up.columns.iter().any(|u| u.name == d.name && u.r#type == d.r#type))
}

fn structured_dataset_from_structured_dataset(
    up: &core::StructuredDatasetType,
    down: &core::StructuredDatasetType,
) -> bool {
    // an empty format means "any" (flyteorg/flyte#2864)
    if !up.format.is_empty() && !down.format.is_empty() && !up.format.eq_ignore_ascii_case(&down.format) {
        return false;
    }
    if up.columns.is_empty() || down.columns.is_empty() {
        return true;
    }
    down.columns.iter().all(|d| {
        up.columns.iter().any(|u| {
            u.name == d.name
                && match (&u.literal_type, &d.literal_type) {
                    (Some(ut), Some(dt)) => types_castable(ut, dt),
                    _ => true,
                }
        })
    })
}

fn structured_dataset_from_schema(up: &core::SchemaType, down: &core::StructuredDatasetType) -> bool {
    if up.columns.is_empty() || down.columns.is_empty() {
        return true;
    }
    down.columns.iter().all(|d| {
        up.columns
            .iter()
            .any(|u| u.name == d.name && column_matches_simple(u.r#type, d.literal_type.as_ref().and_then(simple_of)))
    })
}

fn schema_from_structured_dataset(up: &core::StructuredDatasetType, down: &core::SchemaType) -> bool {
    if up.columns.is_empty() || down.columns.is_empty() {
        return true;
    }
    down.columns.iter().all(|d| {
        up.columns
            .iter()
            .any(|u| u.name == d.name && column_matches_simple(d.r#type, u.literal_type.as_ref().and_then(simple_of)))
    })
}

fn simple_of(t: &LiteralType) -> Option<i32> {
    match t.r#type {
        Some(Type::Simple(s)) => Some(s),
        _ => None,
    }
}

fn column_matches_simple(column: i32, simple: Option<i32>) -> bool {
    let expected = match SchemaColumnType::try_from(column) {
        Ok(SchemaColumnType::Integer) => SimpleType::Integer,
        Ok(SchemaColumnType::Float) => SimpleType::Float,
        Ok(SchemaColumnType::String) => SimpleType::String,
        Ok(SchemaColumnType::Boolean) => SimpleType::Boolean,
        Ok(SchemaColumnType::Datetime) => SimpleType::Datetime,
        Ok(SchemaColumnType::Duration) => SimpleType::Duration,
        Err(_) => return false,
    };
    simple == Some(expected as i32)
}

/// A readable name for a type, as used in compile errors: `integer`, `list<string>`,
/// `map<string, float>`, `blob(csv)`, `blob(multipart)`, `union<integer, none>`, `enum{a, b}`,
/// `structured_dataset(parquet)`, `struct(MyDataclass)`.
pub fn describe_type(t: &LiteralType) -> String {
    let Some(kind) = &t.r#type else {
        return "unknown".to_owned();
    };
    match kind {
        Type::Simple(s) => {
            let name =
                SimpleType::try_from(*s).map_or_else(|_| format!("simple({s})"), |s| s.as_str_name().to_lowercase());
            match struct_title(t) {
                Some(title) if *s == SimpleType::Struct as i32 => format!("{name}({title})"),
                _ => name,
            }
        }
        Type::CollectionType(elem) => format!("list<{}>", describe_type(elem)),
        Type::MapValueType(value) => format!("map<string, {}>", describe_type(value)),
        Type::Blob(blob) => {
            let multipart = blob.dimensionality == core::blob_type::BlobDimensionality::Multipart as i32;
            match (blob.format.is_empty(), multipart) {
                (true, false) => "blob".to_owned(),
                (true, true) => "blob(multipart)".to_owned(),
                (false, false) => format!("blob({})", blob.format),
                (false, true) => format!("blob({}, multipart)", blob.format),
            }
        }
        Type::EnumType(e) => format!("enum{{{}}}", e.values.join(", ")),
        Type::UnionType(u) => {
            format!("union<{}>", u.variants.iter().map(describe_type).collect::<Vec<_>>().join(", "))
        }
        Type::Schema(schema) => {
            if schema.columns.is_empty() {
                "schema".to_owned()
            } else {
                let columns = schema
                    .columns
                    .iter()
                    .map(|c| {
                        let ty = SchemaColumnType::try_from(c.r#type)
                            .map_or_else(|_| "unknown".to_owned(), |t| t.as_str_name().to_lowercase());
                        format!("{}: {ty}", c.name)
                    })
                    .collect::<Vec<_>>();
                format!("schema({})", columns.join(", "))
            }
        }
        Type::StructuredDatasetType(sd) => {
            let mut parts = Vec::new();
            if !sd.format.is_empty() {
                parts.push(sd.format.clone());
            }
            for c in &sd.columns {
                let ty = c.literal_type.as_ref().map_or_else(|| "unknown".to_owned(), describe_type);
                parts.push(format!("{}: {ty}", c.name));
            }
            if parts.is_empty() {
                "structured_dataset".to_owned()
            } else {
                format!("structured_dataset({})", parts.join(", "))
            }
        }
    }
}

fn struct_title(t: &LiteralType) -> Option<&str> {
    match t.metadata.as_ref()?.fields.get("title")?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The type of a literal scalar, as Flyte infers it (`literalTypeForScalar`); `None` when the scalar
/// carries too little information (a blob without metadata, an empty value).
pub(crate) fn scalar_type(s: &core::Scalar) -> Option<LiteralType> {
    let kind = match s.value.as_ref()? {
        scalar::Value::Primitive(p) => {
            use core::primitive::Value as P;
            let simple = match p.value.as_ref()? {
                P::Integer(_) => SimpleType::Integer,
                P::FloatValue(_) => SimpleType::Float,
                P::StringValue(_) => SimpleType::String,
                P::Boolean(_) => SimpleType::Boolean,
                P::Datetime(_) => SimpleType::Datetime,
                P::Duration(_) => SimpleType::Duration,
            };
            Type::Simple(simple as i32)
        }
        scalar::Value::Blob(b) => Type::Blob(b.metadata.as_ref()?.r#type.clone()?),
        scalar::Value::Binary(_) => Type::Simple(SimpleType::Binary as i32),
        scalar::Value::Schema(s) => Type::Schema(s.r#type.clone().unwrap_or_default()),
        scalar::Value::NoneType(_) => Type::Simple(SimpleType::None as i32),
        scalar::Value::Error(_) => Type::Simple(SimpleType::Error as i32),
        scalar::Value::Generic(_) => Type::Simple(SimpleType::Struct as i32),
        scalar::Value::StructuredDataset(sd) => Type::StructuredDatasetType(
            sd.metadata.as_ref().and_then(|m| m.structured_dataset_type.clone()).unwrap_or_default(),
        ),
        scalar::Value::Union(u) => Type::UnionType(core::UnionType { variants: vec![u.r#type.clone()?] }),
    };
    Some(LiteralType { r#type: Some(kind), ..Default::default() })
}

/// Whether a literal scalar bound where `expected` is declared should be type-checked at all.
///
/// Literal bindings are checked loosely: primitives, `none` and union literals must fit; generic
/// structs, binaries, blobs, schemas, datasets and errors are taken on trust, since flytekit only
/// serialises them from a value that already matched the declared Python type.
pub(crate) fn scalar_is_checked(s: &core::Scalar) -> bool {
    matches!(s.value, Some(scalar::Value::Primitive(_) | scalar::Value::NoneType(_) | scalar::Value::Union(_)))
}

/// Whether a declared type is well formed: every kind set, simple types in range, element types
/// present. Used for signal gates, whose type the scheduler must be able to decode values with.
pub(crate) fn is_well_formed(t: &LiteralType) -> bool {
    match &t.r#type {
        None => false,
        Some(Type::Simple(s)) => SimpleType::try_from(*s).is_ok(),
        Some(Type::CollectionType(e) | Type::MapValueType(e)) => is_well_formed(e),
        Some(Type::UnionType(u)) => !u.variants.is_empty() && u.variants.iter().all(is_well_formed),
        Some(Type::Blob(_) | Type::Schema(_) | Type::EnumType(_) | Type::StructuredDatasetType(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{
        BlobType, EnumType, SchemaType, StructuredDatasetType, TypeStructure, UnionType, blob_type::BlobDimensionality,
        schema_type::SchemaColumn, structured_dataset_type::DatasetColumn,
    };
    use prost_types::{Struct, Value};

    fn simple(s: SimpleType) -> LiteralType {
        LiteralType { r#type: Some(Type::Simple(s as i32)), ..Default::default() }
    }
    fn int() -> LiteralType {
        simple(SimpleType::Integer)
    }
    fn float() -> LiteralType {
        simple(SimpleType::Float)
    }
    fn string() -> LiteralType {
        simple(SimpleType::String)
    }
    fn none() -> LiteralType {
        simple(SimpleType::None)
    }
    fn boolean() -> LiteralType {
        simple(SimpleType::Boolean)
    }
    fn list(t: LiteralType) -> LiteralType {
        LiteralType { r#type: Some(Type::CollectionType(Box::new(t))), ..Default::default() }
    }
    fn map(t: LiteralType) -> LiteralType {
        LiteralType { r#type: Some(Type::MapValueType(Box::new(t))), ..Default::default() }
    }
    fn union(variants: Vec<LiteralType>) -> LiteralType {
        LiteralType { r#type: Some(Type::UnionType(UnionType { variants })), ..Default::default() }
    }
    fn blob(format: &str, dim: BlobDimensionality) -> LiteralType {
        LiteralType {
            r#type: Some(Type::Blob(BlobType { format: format.into(), dimensionality: dim as i32 })),
            ..Default::default()
        }
    }
    fn file(format: &str) -> LiteralType {
        blob(format, BlobDimensionality::Single)
    }
    fn dir(format: &str) -> LiteralType {
        blob(format, BlobDimensionality::Multipart)
    }
    fn enum_of(values: &[&str]) -> LiteralType {
        LiteralType {
            r#type: Some(Type::EnumType(EnumType { values: values.iter().map(|v| v.to_string()).collect() })),
            ..Default::default()
        }
    }
    fn sd(format: &str, columns: &[(&str, LiteralType)]) -> LiteralType {
        LiteralType {
            r#type: Some(Type::StructuredDatasetType(StructuredDatasetType {
                format: format.into(),
                columns: columns
                    .iter()
                    .map(|(n, t)| DatasetColumn { name: n.to_string(), literal_type: Some(t.clone()) })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
    fn schema(columns: &[(&str, SchemaColumnType)]) -> LiteralType {
        LiteralType {
            r#type: Some(Type::Schema(SchemaType {
                columns: columns.iter().map(|(n, t)| SchemaColumn { name: n.to_string(), r#type: *t as i32 }).collect(),
            })),
            ..Default::default()
        }
    }
    fn string_value(s: &str) -> Value {
        Value { kind: Some(Kind::StringValue(s.into())) }
    }
    fn struct_value(fields: Vec<(&str, Value)>) -> Value {
        Value { kind: Some(Kind::StructValue(obj(fields))) }
    }
    fn obj(fields: Vec<(&str, Value)>) -> Struct {
        Struct { fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }
    fn dataclass(title: &str, props: &[(&str, &str)]) -> LiteralType {
        let props = props.iter().map(|(n, t)| (*n, struct_value(vec![("type", string_value(t))]))).collect();
        LiteralType {
            metadata: Some(obj(vec![("title", string_value(title)), ("properties", struct_value(props))])),
            ..simple(SimpleType::Struct)
        }
    }
    fn tagged(t: LiteralType, tag: &str) -> LiteralType {
        LiteralType { structure: Some(TypeStructure { tag: tag.into(), ..Default::default() }), ..t }
    }

    #[test]
    fn castability_table() {
        use SchemaColumnType as C;
        let cases: Vec<(&str, LiteralType, LiteralType, bool)> = vec![
            ("same simple", int(), int(), true),
            ("different simple", int(), string(), false),
            ("integer is not float", int(), float(), false),
            ("none into none", none(), none(), true),
            ("integer into none", int(), none(), false),
            ("none into optional", none(), union(vec![int(), none()]), true),
            ("none into union without none", none(), union(vec![int(), string()]), false),
            ("none into integer", none(), int(), false),
            ("into union with a matching variant", int(), union(vec![string(), int()]), true),
            ("into union without a matching variant", boolean(), union(vec![string(), int()]), false),
            ("string into union<string, enum> is accepted", string(), union(vec![string(), enum_of(&["a"])]), true),
            ("union into wider union", union(vec![int(), none()]), union(vec![none(), string(), int()]), true),
            ("union into narrower union", union(vec![int(), string()]), union(vec![int(), none()]), false),
            ("optional into plain", union(vec![int(), none()]), int(), false),
            ("single-variant union into plain", union(vec![int()]), int(), true),
            ("union whose variants all fit", union(vec![list(int()), list(none())]), list(int()), true),
            ("list element-wise", list(int()), list(int()), true),
            ("list element mismatch", list(int()), list(string()), false),
            ("nested lists", list(list(int())), list(list(int())), true),
            ("nesting depth differs", list(int()), list(list(int())), false),
            ("empty list literal", list(none()), list(string()), true),
            ("list into scalar", list(int()), int(), false),
            ("list into optional list", list(int()), union(vec![list(int()), none()]), true),
            ("map value-wise", map(float()), map(float()), true),
            ("map value mismatch", map(float()), map(int()), false),
            ("empty map literal", map(none()), map(int()), true),
            ("map is not list", map(int()), list(int()), false),
            ("blob same format", file("csv"), file("csv"), true),
            ("blob different format", file("csv"), file("parquet"), false),
            ("blob any format downstream", file("csv"), file(""), true),
            ("blob any format upstream", file(""), file("csv"), true),
            ("file is not directory", file(""), dir(""), false),
            ("directory into directory", dir("csv"), dir("csv"), true),
            ("blob into string", file("csv"), string(), false),
            ("enum subset", enum_of(&["a"]), enum_of(&["a", "b"]), true),
            ("enum superset", enum_of(&["a", "b", "c"]), enum_of(&["a", "b"]), false),
            ("enum into string", enum_of(&["a"]), string(), true),
            ("string into enum", string(), enum_of(&["a"]), true),
            ("integer into enum", int(), enum_of(&["a"]), false),
            ("sd same format", sd("parquet", &[]), sd("parquet", &[]), true),
            ("sd format case-insensitive", sd("PARQUET", &[]), sd("parquet", &[]), true),
            ("sd different format", sd("csv", &[]), sd("parquet", &[]), false),
            ("sd any format", sd("", &[]), sd("parquet", &[]), true),
            ("sd column subset", sd("", &[("a", int()), ("b", string())]), sd("", &[("a", int())]), true),
            ("sd missing column", sd("", &[("a", int())]), sd("", &[("b", int())]), false),
            ("sd column type mismatch", sd("", &[("a", int())]), sd("", &[("a", string())]), false),
            ("sd without columns downstream", sd("", &[("a", int())]), sd("", &[]), true),
            ("none into sd", none(), sd("", &[]), true),
            ("schema into schema", schema(&[("a", C::Integer)]), schema(&[]), true),
            ("schema column subset", schema(&[("a", C::Integer), ("b", C::String)]), schema(&[("b", C::String)]), true),
            ("schema column mismatch", schema(&[("a", C::Integer)]), schema(&[("a", C::Float)]), false),
            ("schema into sd", schema(&[("a", C::Integer)]), sd("parquet", &[("a", int())]), true),
            ("schema into csv sd", schema(&[]), sd("csv", &[]), false),
            ("sd into schema", sd("parquet", &[("a", int())]), schema(&[("a", C::Integer)]), true),
            ("csv sd into schema", sd("csv", &[]), schema(&[]), false),
            ("struct without schema", simple(SimpleType::Struct), simple(SimpleType::Struct), true),
            ("struct schema vs none", dataclass("A", &[("x", "integer")]), simple(SimpleType::Struct), true),
            ("struct same schema", dataclass("A", &[("x", "integer")]), dataclass("A", &[("x", "integer")]), true),
            (
                "struct wider upstream",
                dataclass("A", &[("x", "integer"), ("y", "string")]),
                dataclass("B", &[("x", "integer")]),
                true,
            ),
            (
                "struct missing property",
                dataclass("A", &[("x", "integer")]),
                dataclass("B", &[("y", "integer")]),
                false,
            ),
            (
                "struct property type differs",
                dataclass("A", &[("x", "integer")]),
                dataclass("B", &[("x", "string")]),
                false,
            ),
            ("struct is not string", simple(SimpleType::Struct), string(), false),
            ("same tag", tagged(int(), "t"), tagged(int(), "t"), true),
            ("different tag", tagged(int(), "t"), tagged(int(), "u"), false),
            ("untagged upstream", int(), tagged(int(), "u"), true),
            ("unknown upstream", LiteralType::default(), int(), true),
            ("unknown downstream", int(), LiteralType::default(), true),
        ];
        let mut failures = Vec::new();
        for (name, up, down, expected) in &cases {
            if types_castable(up, down) != *expected {
                failures.push(format!("{name}: {} -> {} expected {expected}", describe_type(up), describe_type(down)));
            }
        }
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    }

    #[test]
    fn readable_type_names() {
        let cases = vec![
            (int(), "integer"),
            (string(), "string"),
            (list(int()), "list<integer>"),
            (map(float()), "map<string, float>"),
            (file("csv"), "blob(csv)"),
            (file(""), "blob"),
            (dir(""), "blob(multipart)"),
            (dir("csv"), "blob(csv, multipart)"),
            (union(vec![int(), none()]), "union<integer, none>"),
            (enum_of(&["red", "green"]), "enum{red, green}"),
            (sd("parquet", &[("a", int())]), "structured_dataset(parquet, a: integer)"),
            (sd("", &[]), "structured_dataset"),
            (schema(&[("a", SchemaColumnType::Float)]), "schema(a: float)"),
            (dataclass("Point", &[]), "struct(Point)"),
            (simple(SimpleType::Struct), "struct"),
            (LiteralType::default(), "unknown"),
        ];
        for (t, name) in cases {
            assert_eq!(describe_type(&t), name);
        }
    }

    #[test]
    fn scalar_types() {
        use aloft_proto::flyteidl::core::{Primitive, Scalar, Void, primitive};
        let int_scalar =
            Scalar { value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(3)) })) };
        assert_eq!(scalar_type(&int_scalar), Some(int()));
        let none_scalar = Scalar { value: Some(scalar::Value::NoneType(Void {})) };
        assert_eq!(scalar_type(&none_scalar), Some(none()));
        assert_eq!(scalar_type(&Scalar::default()), None);
    }

    #[test]
    fn well_formed_types() {
        assert!(is_well_formed(&int()));
        assert!(is_well_formed(&list(map(string()))));
        assert!(!is_well_formed(&LiteralType::default()));
        assert!(!is_well_formed(&list(LiteralType::default())));
        assert!(!is_well_formed(&LiteralType { r#type: Some(Type::Simple(99)), ..Default::default() }));
        assert!(!is_well_formed(&union(vec![])));
    }
}
