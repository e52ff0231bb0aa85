//! Reading the JSON `check_execution.py` prints (what FlyteRemote saw) with errors that show it.

#![allow(dead_code)] // each test binary uses a different subset

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// The value at a JSON pointer, or an error that prints the whole document.
pub fn at<'a>(facts: &'a Value, pointer: &str) -> Result<&'a Value> {
    facts.pointer(pointer).with_context(|| format!("{pointer} is missing in\n{facts:#}"))
}

/// A string at a JSON pointer.
pub fn str_at<'a>(facts: &'a Value, pointer: &str) -> Result<&'a str> {
    at(facts, pointer)?.as_str().with_context(|| format!("{pointer} is not a string in\n{facts:#}"))
}

/// The value at a JSON pointer equals `want`.
pub fn expect(facts: &Value, pointer: &str, want: Value) -> Result<()> {
    let got = at(facts, pointer)?;
    ensure!(*got == want, "{pointer}: expected {want}, got {got}\nin {facts:#}");
    Ok(())
}
