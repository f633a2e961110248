//! The OpenAPI 3.1 document of the server's routes (`server/api/openapi.json`), served at
//! `GET /openapi.json`. It is written by hand and kept true by `server/tests/hardening.rs`
//! (`the_openapi_document_matches_the_routes_and_the_json_types`): every documented route
//! answers, every route of the router is documented, and every response and request type, as
//! serde writes it, has exactly the documented required and allowed properties.

/// The document.
pub const DOCUMENT: &str = include_str!("../api/openapi.json");
