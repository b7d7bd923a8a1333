//! The workload-side client of the CA API (see the crate docs).
