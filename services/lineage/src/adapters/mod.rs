//! I/O at the edge: the database, the metadata admin API, the catalogs' HTTP endpoints.

pub mod admin;
pub mod sender;
pub mod store;
