//! Pure decisions of the metadata service: validation, filters, pagination, naming. No I/O.

pub mod executions;
pub mod filters;
pub mod ids;
pub mod refs;
pub mod registry;
pub mod upload;
