//! The scheduler's pure core: the workflow plan, binding resolution and the state machine.

pub mod bindings;
pub mod cache;
pub mod conditions;
pub mod machine;
pub mod plan;

#[cfg(test)]
mod tests;
