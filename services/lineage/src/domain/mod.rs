//! The functional core: the graph model, events and declarations turned into graph mutations,
//! and the payloads for the catalogs. No I/O here.

pub mod capture;
pub mod declarations;
pub mod export;
pub mod graph;
pub mod links;
