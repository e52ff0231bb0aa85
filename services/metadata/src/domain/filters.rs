//! Flyte admin list filters (`eq(version,abc)+gte(created_at,...)`), sorting and pagination,
//! turned into a safe SQL fragment: columns come from an allow-list, values are always bound.

use aloft_proto::flyteidl::admin::{Sort, sort::Direction};

use crate::error::{Error, Result};

/// A comparison the admin API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `contains` (substring)
    Contains,
    /// `value_in` (values separated by `;`)
    ValueIn,
    /// `value_not_in`
    ValueNotIn,
}

/// One parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The comparison.
    pub op: Op,
    /// The field as the client named it (without an entity prefix).
    pub field: String,
    /// The values (one, or several for `value_in`).
    pub values: Vec<String>,
}

/// A column a filter may use, and how to bind its values.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Field name in the API.
    pub field: &'static str,
    /// Column in SQL.
    pub column: &'static str,
    /// Values are integers (bound as i64).
    pub integer: bool,
}

/// A bound SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
}

/// Parses the filter grammar. An empty string is no filter.
pub fn parse(text: &str) -> Result<Vec<Filter>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in split_top(text) {
        let part = part.trim();
        let open = part.find('(').ok_or_else(|| bad(part, "expected func(field,value)"))?;
        if !part.ends_with(')') {
            return Err(bad(part, "missing closing parenthesis"));
        }
        let func = &part[..open];
        let inner = &part[open + 1..part.len() - 1];
        let (field, value) = inner.split_once(',').ok_or_else(|| bad(part, "expected func(field,value)"))?;
        let op = match func {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "contains" => Op::Contains,
            "value_in" => Op::ValueIn,
            "value_not_in" => Op::ValueNotIn,
            other => return Err(bad(part, &format!("unknown function `{other}`"))),
        };
        let field = field.trim();
        // Flyte lets clients prefix a field with its entity (`task.version`); the entity is implied here.
        let field = field.rsplit('.').next().unwrap_or(field).to_string();
        let values: Vec<String> = if matches!(op, Op::ValueIn | Op::ValueNotIn) {
            value.split(';').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
        } else {
            vec![value.trim().to_string()]
        };
        if values.is_empty() {
            return Err(bad(part, "no values"));
        }
        out.push(Filter { op, field, values });
    }
    Ok(out)
}

/// Splits on `+` outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '+' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn bad(part: &str, why: &str) -> Error {
    Error::invalid(format!("invalid filter `{part}`: {why}"))
}

/// Renders filters as `AND`-joined SQL conditions with `$n` placeholders starting at `first`.
/// Returns the SQL (empty or starting with " AND ") and the values to bind, in order.
pub fn to_sql(filters: &[Filter], columns: &[Column], first: usize) -> Result<(String, Vec<Value>)> {
    let mut sql = String::new();
    let mut values = Vec::new();
    let mut n = first;
    for f in filters {
        let col = columns.iter().find(|c| c.field == f.field).ok_or_else(|| {
            let known: Vec<&str> = columns.iter().map(|c| c.field).collect();
            Error::invalid(format!("cannot filter on `{}`: known fields are {}", f.field, known.join(", ")))
        })?;
        let mut bind = |v: &str| -> Result<String> {
            let value = if col.integer {
                Value::Int(
                    v.parse()
                        .map_err(|_| Error::invalid(format!("filter on `{}`: `{v}` is not an integer", f.field)))?,
                )
            } else {
                Value::Text(v.to_string())
            };
            values.push(value);
            let p = format!("${n}");
            n += 1;
            Ok(p)
        };
        let cond = match f.op {
            Op::Eq => format!("{} = {}", col.column, bind(&f.values[0])?),
            Op::Ne => format!("{} <> {}", col.column, bind(&f.values[0])?),
            Op::Gt => format!("{} > {}", col.column, bind(&f.values[0])?),
            Op::Gte => format!("{} >= {}", col.column, bind(&f.values[0])?),
            Op::Lt => format!("{} < {}", col.column, bind(&f.values[0])?),
            Op::Lte => format!("{} <= {}", col.column, bind(&f.values[0])?),
            Op::Contains => {
                if col.integer {
                    return Err(Error::invalid(format!("cannot use contains on `{}`", f.field)));
                }
                format!("{} LIKE {}", col.column, bind(&format!("%{}%", escape_like(&f.values[0])))?)
            }
            Op::ValueIn | Op::ValueNotIn => {
                let ps: Result<Vec<String>> = f.values.iter().map(|v| bind(v)).collect();
                let not = if f.op == Op::ValueNotIn { "NOT " } else { "" };
                format!("{} {not}IN ({})", col.column, ps?.join(", "))
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    Ok((sql, values))
}

fn escape_like(s: &str) -> String {
    // LIKE wildcards in user text are matched literally; both databases accept `\` as an escape
    // only with ESCAPE, so the characters are simply dropped from the pattern's meaning by
    // replacing them with the single-character wildcard, which is close enough for a substring search.
    s.replace(['%', '_'], "_")
}

/// `ORDER BY` clause from a `Sort`; `default` applies when none is given.
pub fn order_by(sort: Option<&Sort>, columns: &[Column], default: &str) -> Result<String> {
    let Some(sort) = sort.filter(|s| !s.key.is_empty()) else {
        return Ok(default.to_string());
    };
    let col = columns
        .iter()
        .find(|c| c.field == sort.key)
        .ok_or_else(|| Error::invalid(format!("cannot sort by `{}`", sort.key)))?;
    let dir = if sort.direction == Direction::Ascending as i32 { "ASC" } else { "DESC" };
    Ok(format!("{} {dir}", col.column))
}

/// Page bounds from `limit` and `token`. Flyte's token is the decimal offset of the next page.
pub fn page(limit: u32, token: &str, max: u32) -> Result<(i64, i64)> {
    let limit = if limit == 0 { 100 } else { limit.min(max) };
    let offset = if token.is_empty() {
        0
    } else {
        token.parse::<u64>().map_err(|_| Error::invalid(format!("invalid pagination token `{token}`")))?
    };
    Ok((limit as i64, offset as i64))
}

/// The next token: only when the page came back full (Flyte's rule; flytekit loops while non-empty).
pub fn next_token(offset: i64, limit: i64, returned: usize) -> String {
    if returned as i64 == limit { (offset + limit).to_string() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[Column] = &[
        Column { field: "version", column: "version", integer: false },
        Column { field: "name", column: "name", integer: false },
        Column { field: "state", column: "state", integer: true },
    ];

    #[test]
    fn parses_what_flytekit_sends() {
        let f = parse("eq(version,4zckwafHx09YceglhTGDIw)").unwrap();
        assert_eq!(
            f,
            vec![Filter { op: Op::Eq, field: "version".into(), values: vec!["4zckwafHx09YceglhTGDIw".into()] }]
        );
        let f = parse("eq(launch_plan.state,1)+value_in(name,a;b)").unwrap();
        assert_eq!(f[0].field, "state");
        assert_eq!(f[1].values, vec!["a", "b"]);
    }

    #[test]
    fn sql_binds_values_and_allows_known_columns_only() {
        let f = parse("eq(version,v1)+value_in(state,0;1)").unwrap();
        let (sql, values) = to_sql(&f, COLS, 3).unwrap();
        assert_eq!(sql, " AND version = $3 AND state IN ($4, $5)");
        assert_eq!(values, vec![Value::Text("v1".into()), Value::Int(0), Value::Int(1)]);
        let err = to_sql(&parse("eq(password,x)").unwrap(), COLS, 1).unwrap_err();
        assert_eq!(err.to_string(), "cannot filter on `password`: known fields are version, name, state");
        let err = to_sql(&parse("eq(state,active)").unwrap(), COLS, 1).unwrap_err();
        assert_eq!(err.to_string(), "filter on `state`: `active` is not an integer");
    }

    #[test]
    fn malformed_filters_are_rejected() {
        for (text, msg) in [
            ("eq(version)", "invalid filter `eq(version)`: expected func(field,value)"),
            ("like(version,x)", "invalid filter `like(version,x)`: unknown function `like`"),
            ("eq(version,x", "invalid filter `eq(version,x`: missing closing parenthesis"),
        ] {
            assert_eq!(parse(text).unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn pagination() {
        assert_eq!(page(0, "", 1000).unwrap(), (100, 0));
        assert_eq!(page(5000, "200", 1000).unwrap(), (1000, 200));
        assert!(page(1, "x", 10).is_err());
        assert_eq!(next_token(0, 2, 2), "2");
        assert_eq!(next_token(2, 2, 1), "");
    }

    #[test]
    fn ordering() {
        let s = Sort { key: "name".into(), direction: Direction::Ascending as i32 };
        assert_eq!(order_by(Some(&s), COLS, "created_at DESC").unwrap(), "name ASC");
        assert_eq!(order_by(None, COLS, "created_at DESC").unwrap(), "created_at DESC");
        let s = Sort { key: "secret".into(), direction: 0 };
        assert!(order_by(Some(&s), COLS, "x").is_err());
    }
}
