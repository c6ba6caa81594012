//! Security tests: see integration/security.rs.
