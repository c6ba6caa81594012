//! Images from elsewhere turned into lrun layers: today an OCI image layout on disk
//! (`oci.rs`), parsed with `oci-spec`'s typed image structs. An image from an OCI registry
//! (issue 15) is fetched by `crate::distribution` and handed to the same conversion.

pub mod oci;
