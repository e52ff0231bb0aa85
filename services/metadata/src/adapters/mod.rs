//! I/O at the edge: the database.

pub mod store;
