//! SignalService: the values gate nodes wait for (`approve`, `wait_for_input`).
//!
//! The scheduler creates a signal when a gate starts (GetOrCreateSignal); a person sets its value
//! once (FlyteRemote.approve / reject / set_signal → SetSignal), which is stored and announced to
//! the scheduler on the bus (`SignalNotice`) so the gate opens without polling. A value set
//! before the gate starts waits in the table and is found when the gate asks.

use aloft_proto::aloft::v1::{Envelope, SignalNotice, envelope::Body};
use aloft_proto::flyteidl::admin;
use aloft_proto::flyteidl::core::{self, Literal, LiteralType, SignalIdentifier, WorkflowExecutionIdentifier};
use prost::Message;

use crate::adapters::store::SignalRow;
use crate::app::{App, Page, decode, now_micros, timestamp};
use crate::domain::filters;
use crate::error::{Error, Result};
use crate::runs::{exec_display, validate_exec_id};

fn signal_parts(id: Option<&SignalIdentifier>, what: &str) -> Result<(WorkflowExecutionIdentifier, String)> {
    let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing signal id")))?;
    if id.signal_id.is_empty() {
        return Err(Error::invalid(format!("{what}: id.signal_id must not be empty")));
    }
    let exec = validate_exec_id(id.execution_id.as_ref(), what)?;
    Ok((exec, id.signal_id.clone()))
}

fn key(e: &WorkflowExecutionIdentifier) -> (&str, &str, &str) {
    (&e.project, &e.domain, &e.name)
}

impl App {
    async fn signal_message(&self, exec: &WorkflowExecutionIdentifier, row: &SignalRow) -> Result<admin::Signal> {
        let value = if row.set_at == 0 { None } else { Some(decode::<Literal>(&row.value, "signal value")?) };
        Ok(admin::Signal {
            id: Some(SignalIdentifier { signal_id: row.signal_id.clone(), execution_id: Some(exec.clone()) }),
            r#type: Some(decode::<LiteralType>(&row.type_, "signal type")?),
            value,
        })
    }

    async fn require_execution(&self, exec: &WorkflowExecutionIdentifier) -> Result<()> {
        match self.store.get_execution(&exec.project, &exec.domain, &exec.name).await? {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("execution {} does not exist", exec_display(exec)))),
        }
    }

    /// GetOrCreateSignal.
    pub async fn get_or_create_signal(&self, req: admin::SignalGetOrCreateRequest) -> Result<admin::Signal> {
        let (exec, signal_id) = signal_parts(req.id.as_ref(), "GetOrCreateSignal")?;
        let type_ = req.r#type.ok_or_else(|| Error::invalid("GetOrCreateSignal: type is required"))?;
        self.require_execution(&exec).await?;
        let row = self.store.get_or_create_signal(key(&exec), &signal_id, &type_.encode_to_vec(), now_micros()).await?;
        self.signal_message(&exec, &row).await
    }

    /// ListSignals: an execution's signals, oldest first.
    pub async fn list_signals(&self, req: &admin::SignalListRequest) -> Result<Page<admin::Signal>> {
        let exec = validate_exec_id(req.workflow_execution_id.as_ref(), "ListSignals")?;
        self.require_execution(&exec).await?;
        let (limit, offset) = filters::page(req.limit, &req.token, 1000)?;
        let rows = self.store.list_signals(key(&exec), limit, offset).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(self.signal_message(&exec, r).await?);
        }
        Ok(Page { items, token: filters::next_token(offset, limit, rows.len()) })
    }

    /// SetSignal: once per signal, with a value of its type; setting the same value again is a
    /// no-op, a different one is refused (the gate may already have acted on the first).
    pub async fn set_signal(&self, req: admin::SignalSetRequest) -> Result<()> {
        let (exec, signal_id) = signal_parts(req.id.as_ref(), "SetSignal")?;
        let value = req.value.ok_or_else(|| Error::invalid("SetSignal: value is required"))?;
        let Some(row) = self.store.get_signal(key(&exec), &signal_id).await? else {
            self.require_execution(&exec).await?;
            return Err(Error::not_found(format!(
                "signal `{signal_id}` of execution {} does not exist (yet): it is created when its gate node starts",
                exec_display(&exec)
            )));
        };
        let type_: LiteralType = decode(&row.type_, "signal type")?;
        if let Err(why) = fits(&value, &type_) {
            return Err(Error::invalid(format!("SetSignal: signal `{signal_id}` {why}")));
        }
        let bytes = value.encode_to_vec();
        if !self.store.set_signal(key(&exec), &signal_id, &bytes, now_micros()).await? {
            return match row.value == bytes {
                true => Ok(()),
                false => Err(Error::FailedPrecondition(format!(
                    "signal `{signal_id}` of execution {} already has a different value",
                    exec_display(&exec)
                ))),
            };
        }
        let notice = Envelope {
            id: format!("signal/{}/{}/{}/{signal_id}", exec.project, exec.domain, exec.name),
            created_at: Some(timestamp(now_micros())),
            source: "metadata".into(),
            body: Some(Body::Signal(SignalNotice {
                id: Some(SignalIdentifier { signal_id: signal_id.clone(), execution_id: Some(exec.clone()) }),
                value: Some(value),
            })),
        };
        // Stored first: if the announcement is lost, the gate still finds the value when it asks.
        self.bus()?.publish(&notice).await.map_err(|e| Error::Internal(format!("cannot announce the signal: {e}")))?;
        Ok(())
    }
}

/// Whether a value can be given to a signal of `expected` type (simple types are checked; the
/// others are left to the workflow, as their values carry no type of their own).
pub fn fits(value: &Literal, expected: &LiteralType) -> std::result::Result<(), String> {
    use core::literal_type::Type;
    use core::{SimpleType, primitive::Value as P};
    let Some(Type::Simple(simple)) = expected.r#type else { return Ok(()) };
    let Ok(simple) = SimpleType::try_from(simple) else { return Ok(()) };
    let primitive = match &value.value {
        Some(core::literal::Value::Scalar(s)) => match &s.value {
            Some(core::scalar::Value::Primitive(p)) => p.value.as_ref(),
            _ => None,
        },
        _ => None,
    };
    let ok = match simple {
        SimpleType::Boolean => matches!(primitive, Some(P::Boolean(_))),
        SimpleType::Integer => matches!(primitive, Some(P::Integer(_))),
        SimpleType::Float => matches!(primitive, Some(P::FloatValue(_))),
        SimpleType::String => matches!(primitive, Some(P::StringValue(_))),
        SimpleType::Datetime => matches!(primitive, Some(P::Datetime(_))),
        SimpleType::Duration => matches!(primitive, Some(P::Duration(_))),
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("expects a {} value", simple.as_str_name().to_lowercase())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_proto::flyteidl::core::{Primitive, Scalar, SimpleType, literal_type::Type, primitive::Value as P};

    fn prim(v: P) -> Literal {
        Literal {
            value: Some(core::literal::Value::Scalar(Box::new(Scalar {
                value: Some(core::scalar::Value::Primitive(Primitive { value: Some(v) })),
            }))),
            ..Default::default()
        }
    }

    fn simple(t: SimpleType) -> LiteralType {
        LiteralType { r#type: Some(Type::Simple(t as i32)), ..Default::default() }
    }

    #[test]
    fn values_must_fit_simple_signal_types() {
        assert!(fits(&prim(P::Boolean(true)), &simple(SimpleType::Boolean)).is_ok());
        assert_eq!(fits(&prim(P::Integer(1)), &simple(SimpleType::Boolean)).unwrap_err(), "expects a boolean value");
        assert!(fits(&prim(P::FloatValue(0.5)), &simple(SimpleType::Float)).is_ok());
        assert!(fits(&prim(P::StringValue("x".into())), &simple(SimpleType::Integer)).is_err());
        assert!(fits(&prim(P::Integer(1)), &LiteralType::default()).is_ok(), "complex types are not checked");
    }
}
