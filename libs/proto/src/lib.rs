//! Generated protocol types.
//!
//! `flyteidl` mirrors the flyteidl 1.16 packages exactly (field numbers and names as on the wire),
//! with tonic servers and clients for every service; `aloft` holds Aloft's own bus messages.
//! Nothing here has behaviour: helpers that interpret these types live in the crates that use them.

#![allow(clippy::all, missing_docs, rustdoc::all)]

/// flyteidl 1.16 (from the published `flyteidl==1.16.8` wheel).
pub mod flyteidl {
    /// `flyteidl.core`: identifiers, literals, types, tasks, workflows, errors.
    pub mod core {
        tonic::include_proto!("flyteidl.core");
    }
    /// `flyteidl.admin`: the admin API's request and entity messages.
    pub mod admin {
        tonic::include_proto!("flyteidl.admin");
    }
    /// `flyteidl.event`: workflow, node and task execution events.
    pub mod event {
        tonic::include_proto!("flyteidl.event");
    }
    /// `flyteidl.service`: AdminService, DataProxyService, SignalService and the rest.
    pub mod service {
        tonic::include_proto!("flyteidl.service");
    }
    /// `flyteidl.cacheservice`.
    pub mod cacheservice {
        tonic::include_proto!("flyteidl.cacheservice");
    }
    /// `flyteidl.plugins`: task-type specific configuration (array jobs, kubeflow, ...).
    pub mod plugins {
        tonic::include_proto!("flyteidl.plugins");
        /// `flyteidl.plugins.kubeflow`.
        pub mod kubeflow {
            tonic::include_proto!("flyteidl.plugins.kubeflow");
        }
    }
}

/// `datacatalog` (a top-level package in flyteidl): the cache catalog service.
pub mod datacatalog {
    tonic::include_proto!("datacatalog");
}

/// `google.api` HTTP annotations, referenced by flyteidl's service definitions.
pub mod google {
    /// `google.api`.
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// Aloft's own messages (`proto/aloft/`).
pub mod aloft {
    /// `aloft.v1`: the bus envelope and internal commands.
    pub mod v1 {
        tonic::include_proto!("aloft.v1");
    }
}

/// The encoded FileDescriptorSet of everything above, for gRPC reflection and tooling.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.binpb"));
