//! Branch conditions: Flyte's `BooleanExpression` evaluated over the branch node's inputs.

#![allow(deprecated)] // Operand::Primitive is deprecated in flyteidl but flytekit still sends it
use aloft_proto::flyteidl::core::{
    BooleanExpression, ComparisonExpression, LiteralMap, Operand, Primitive, boolean_expression, comparison_expression,
    conjunction_expression, literal, operand, primitive, scalar,
};

/// A comparable value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
    Time(i64, i32),
    None,
}

fn of_primitive(p: &Primitive) -> Result<Value, String> {
    Ok(match &p.value {
        Some(primitive::Value::Integer(i)) => Value::Num(*i as f64),
        Some(primitive::Value::FloatValue(f)) => Value::Num(*f),
        Some(primitive::Value::StringValue(s)) => Value::Str(s.clone()),
        Some(primitive::Value::Boolean(b)) => Value::Bool(*b),
        Some(primitive::Value::Datetime(t)) => Value::Time(t.seconds, t.nanos),
        Some(primitive::Value::Duration(d)) => Value::Time(d.seconds, d.nanos),
        None => return Err("empty primitive".into()),
    })
}

fn of_scalar(s: &aloft_proto::flyteidl::core::Scalar) -> Result<Value, String> {
    match &s.value {
        Some(scalar::Value::Primitive(p)) => of_primitive(p),
        Some(scalar::Value::NoneType(_)) => Ok(Value::None),
        Some(scalar::Value::Union(u)) => match u.value.as_deref().and_then(|l| l.value.as_ref()) {
            Some(literal::Value::Scalar(s)) => of_scalar(s),
            _ => Err("a union holding a non-scalar cannot be compared".into()),
        },
        _ => Err("only primitives and None can be compared".into()),
    }
}

fn operand(o: &Operand, inputs: &LiteralMap) -> Result<Value, String> {
    match &o.val {
        Some(operand::Val::Primitive(p)) => of_primitive(p),
        Some(operand::Val::Scalar(s)) => of_scalar(s),
        Some(operand::Val::Var(name)) => {
            let lit = inputs.literals.get(name).ok_or_else(|| format!("condition refers to unknown input `{name}`"))?;
            match &lit.value {
                Some(literal::Value::Scalar(s)) => of_scalar(s).map_err(|e| format!("input `{name}`: {e}")),
                _ => Err(format!("input `{name}` is not a scalar")),
            }
        }
        None => Err("empty operand".into()),
    }
}

fn compare(c: &ComparisonExpression, inputs: &LiteralMap) -> Result<bool, String> {
    use comparison_expression::Operator as Op;
    let left = operand(c.left_value.as_ref().ok_or("comparison without a left operand")?, inputs)?;
    let right = operand(c.right_value.as_ref().ok_or("comparison without a right operand")?, inputs)?;
    let op = Op::try_from(c.operator).map_err(|_| format!("unknown comparison operator {}", c.operator))?;
    let ordering = match (&left, &right) {
        (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Time(s1, n1), Value::Time(s2, n2)) => Some((s1, n1).cmp(&(s2, n2))),
        (Value::None, Value::None) => Some(std::cmp::Ordering::Equal),
        // None compares unequal to any value; ordering it is an error, as in Flyte
        (Value::None, _) | (_, Value::None) => {
            return match op {
                Op::Eq => Ok(false),
                Op::Neq => Ok(true),
                _ => Err("cannot order None".into()),
            };
        }
        _ => return Err(format!("cannot compare {left:?} with {right:?}")),
    };
    let ord = ordering.ok_or("cannot compare NaN")?;
    Ok(match op {
        Op::Eq => ord.is_eq(),
        Op::Neq => ord.is_ne(),
        Op::Gt => ord.is_gt(),
        Op::Gte => ord.is_ge(),
        Op::Lt => ord.is_lt(),
        Op::Lte => ord.is_le(),
    })
}

/// Evaluates `expr` against the branch node's resolved inputs.
pub fn evaluate(expr: &BooleanExpression, inputs: &LiteralMap) -> Result<bool, String> {
    match &expr.expr {
        Some(boolean_expression::Expr::Comparison(c)) => compare(c, inputs),
        Some(boolean_expression::Expr::Conjunction(c)) => {
            let left = evaluate(c.left_expression.as_ref().ok_or("conjunction without a left side")?, inputs)?;
            let and = c.operator == conjunction_expression::LogicalOperator::And as i32;
            // short-circuit like Python's `&` / `|` on booleans would not, but results are the same
            if and && !left {
                return Ok(false);
            }
            if !and && left {
                return Ok(true);
            }
            evaluate(c.right_expression.as_ref().ok_or("conjunction without a right side")?, inputs)
        }
        None => Err("empty condition".into()),
    }
}

/// The child a branch runs: the first case whose condition holds, else the `else` child; an
/// `else` that fails, no match, or a condition that cannot be evaluated is an error message.
pub fn choose(branch_id: &str, branch: &super::plan::Branch, inputs: &LiteralMap) -> Result<String, String> {
    for (condition, child) in &branch.cases {
        if evaluate(condition, inputs).map_err(|e| format!("branch node `{branch_id}`: {e}"))? {
            return Ok(child.id.clone());
        }
    }
    match &branch.otherwise {
        super::plan::Otherwise::Child(c) => Ok(c.id.clone()),
        super::plan::Otherwise::Fail(message) => Err(message.clone()),
        super::plan::Otherwise::Nothing => {
            Err(format!("branch node `{branch_id}`: no condition held and there is no else"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{ConjunctionExpression, Literal, Scalar};

    fn int_lit(v: i64) -> Literal {
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(v)) })),
            }))),
            ..Default::default()
        }
    }

    fn cmp(op: comparison_expression::Operator, var: &str, v: f64) -> BooleanExpression {
        BooleanExpression {
            expr: Some(boolean_expression::Expr::Comparison(ComparisonExpression {
                operator: op as i32,
                left_value: Some(Operand { val: Some(operand::Val::Var(var.into())) }),
                right_value: Some(Operand {
                    val: Some(operand::Val::Primitive(Primitive { value: Some(primitive::Value::FloatValue(v)) })),
                }),
            })),
        }
    }

    #[test]
    fn comparisons_and_conjunctions() {
        use comparison_expression::Operator::*;
        let inputs = LiteralMap { literals: [("n0.o0".to_string(), int_lit(5))].into() };
        assert!(evaluate(&cmp(Gt, "n0.o0", 4.5), &inputs).unwrap());
        assert!(!evaluate(&cmp(Lt, "n0.o0", 4.5), &inputs).unwrap());
        assert!(evaluate(&cmp(Eq, "n0.o0", 5.0), &inputs).unwrap());
        let and = |l: BooleanExpression, r: BooleanExpression, op: conjunction_expression::LogicalOperator| {
            BooleanExpression {
                expr: Some(boolean_expression::Expr::Conjunction(Box::new(ConjunctionExpression {
                    operator: op as i32,
                    left_expression: Some(Box::new(l)),
                    right_expression: Some(Box::new(r)),
                }))),
            }
        };
        use conjunction_expression::LogicalOperator::{And, Or};
        assert!(!evaluate(&and(cmp(Gt, "n0.o0", 1.0), cmp(Gt, "n0.o0", 9.0), And), &inputs).unwrap());
        assert!(evaluate(&and(cmp(Gt, "n0.o0", 9.0), cmp(Gt, "n0.o0", 1.0), Or), &inputs).unwrap());
        assert_eq!(
            evaluate(&cmp(Gt, "missing", 1.0), &inputs).unwrap_err(),
            "condition refers to unknown input `missing`"
        );
    }
}
