//! Agent registry library.
pub mod pb;
