//! The `aloft` command line: what a person runs to get Aloft on one machine.
//!
//! Owns: argument parsing, `aloft up` (the embedded services, the data directory, the generated
//! flytekit config, the front door that serves gRPC and the console on one port, and what is
//! printed to the person), the commands that read a running Aloft through its gRPC APIs,
//! `aloft init` and its template, exit codes. Must not: hold service logic; it only builds each
//! service's config and calls its `start`, as a deployment's binaries do, and reads everything
//! else through the same public APIs a remote client uses.

pub mod cli;
pub mod console;
pub mod error;
pub mod front;
pub mod nats;
pub mod up;

pub use error::Error;
