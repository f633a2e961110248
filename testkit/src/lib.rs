//! # followup-testkit
//!
//! Test and benchmark support, kept out of every product library (`followup-domain`,
//! `followup-device`, `followup-server`, `followup-ffi`):
//!
//! | module | what it holds |
//! |---|---|
//! | [`workload`] | the brief's benchmark workload (300 patients, 1,000 responses of 50 answers, 10 edited), deterministic from a seed |
//! | [`shaper`] | a TCP link shaper that charges connection set-up and resets the link periodically, counting every byte on the link (HTTP headers included): what `followup bench` measures through |
//! | [`registry`] | the registry-scale workload (100 clinics, 10,000 patients, 100,000 responses, 2,000 adverse events) for the read model and console benchmarks |
//! | [`synthetic`] | a synthetic registry (every item type, free text with a canary) written straight into a server's storage, for the export tests and benchmark |
//! | [`linksim`] | a TCP link simulator (bandwidth, latency, cuts) for tests, the demo's bad-link story and the benchmark |
//!
//! The CLI's `bench` and `demo`, the criterion benches and the end-to-end tests use it. A product
//! library must never depend on this crate.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// Test support returns the device crate's error unchanged, whatever its size.
#![allow(clippy::result_large_err)]

pub mod linksim;
pub mod registry;
pub mod shaper;
pub mod synthetic;
pub mod workload;
