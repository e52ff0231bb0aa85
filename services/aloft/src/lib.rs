//! The `aloft` command line: what a person runs to get Aloft on one machine.
//!
//! Owns: argument parsing, `aloft up` (the embedded services, the data directory, the generated
//! flytekit config and what is printed to the person), exit codes. Must not: hold service logic;
//! it only builds each service's config and calls its `start`, as a deployment's binaries do.

pub mod cli;
pub mod error;
pub mod nats;
pub mod up;

pub use error::Error;
