//! lsvd's RADOS segment store: an image's segments, checkpoints and
//! superblock as RADOS objects, through librados (Debian's, via the `ceph`
//! crate's raw FFI). See README.md for the object naming and
//! [`store::RadosStore`] for the invariants.
//!
//! Entry points: [`RadosStore::create`] / [`RadosStore::open`],
//! [`list_images`], and the spec functions [`open_spec`] / [`create_spec`]
//! for `rados:POOL/NAME[?conf=PATH]` or `rados:POOL/NS/NAME[?conf=PATH]`.

pub mod conn;
pub mod errors;
pub mod spec;
pub mod store;

pub use spec::{create_spec, open_spec, parse_spec, RadosSpec};
pub use store::{list_images, ImageLocation, RadosOptions, RadosStore};
