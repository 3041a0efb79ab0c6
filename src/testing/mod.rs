//! What tests build on, exported with the `testing` feature (and compiled into the crate's
//! own unit tests): [`fake`], the in-memory kernel and config source that the daemon's seam
//! accepts, and [`wire`], netlink messages as the kernel sends them (acknowledgements,
//! notifications), for tests and fuzz seeds of the decoders. With the `fuzzing` feature it
//! also implements `arbitrary::Arbitrary` for the expressions, statements, sets and chains,
//! as the wire carries them, so fuzz targets draw the library's own types.
//!
//! It stands above every layer (the fake kernel implements the daemon's seam) and nothing
//! but tests uses it.

#[cfg(feature = "fuzzing")]
mod arbitrary;
pub mod fake;
pub mod wire;
