//! Store specs as the tools see them: the embedded stores of log-engine
//! (`dir:`, `zoned-file:`), RADOS (`rados:POOL[/NS]/NAME`, in lsvd-rados) and
//! real zoned block devices (`zns:/dev/X[,zones=A-B]`, in lsvd-zns).
//! log-engine cannot know about either (dependencies point down), so the
//! dispatch lives here, shared by `lsvdctl` and the `lsvd` daemon.

use std::sync::Arc;

use log_engine::store::spec as embedded;
use log_engine::{Result, SegmentStore};

/// True for a RADOS spec.
pub fn is_rados(spec: &str) -> bool {
    spec.starts_with("rados:")
}

/// Check a spec's syntax without touching the store.
pub fn parse_spec(spec: &str) -> Result<()> {
    if is_rados(spec) {
        lsvd_rados::parse_spec(spec).map(|_| ())
    } else if lsvd_zns::is_zns(spec) {
        lsvd_zns::parse_spec(spec).map(|_| ())
    } else {
        embedded::parse_spec(spec).map(|_| ())
    }
}

/// Create the (empty) store named by `spec`.
pub fn create_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    if is_rados(spec) {
        lsvd_rados::create_spec(spec)
    } else if lsvd_zns::is_zns(spec) {
        lsvd_zns::create_store(spec)
    } else {
        embedded::create_store(spec)
    }
}

/// Create the store named by `spec`; with `force`, a zoned device holding
/// another image's store or unknown data is erased first (`image create
/// --force`). Other stores never overwrite what is there: `force` is refused.
pub fn create_store_force(spec: &str, force: bool) -> Result<Arc<dyn SegmentStore>> {
    if !force {
        return create_store(spec);
    }
    if lsvd_zns::is_zns(spec) {
        lsvd_zns::format_store(spec)
    } else {
        Err(log_engine::Error::InvalidArgument(format!(
            "--force erases zoned devices only (zns: stores), not {spec:?}"
        )))
    }
}

/// Open the existing store named by `spec`.
pub fn open_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    if is_rados(spec) {
        lsvd_rados::open_spec(spec)
    } else if lsvd_zns::is_zns(spec) {
        lsvd_zns::open_store(spec)
    } else {
        embedded::open_store(spec)
    }
}

/// The image name inside a RADOS spec (`rados:POOL[/NS]/NAME[?...]` ->
/// `NAME`), used as the catalog name by `image create rados:POOL/NAME`.
pub fn rados_image_name(spec: &str) -> Option<String> {
    let path = spec.strip_prefix("rados:")?;
    let path = path.split('?').next()?;
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rados_names() {
        assert_eq!(rados_image_name("rados:rbd/vm1").as_deref(), Some("vm1"));
        assert_eq!(
            rados_image_name("rados:rbd/ns/vm1?conf=/x").as_deref(),
            Some("vm1")
        );
        assert_eq!(rados_image_name("dir:/a/b"), None);
        assert_eq!(rados_image_name("rados:rbd/"), None);
        assert!(parse_spec("rados:rbd/vm1").is_ok());
        assert!(parse_spec("rados:").is_err());
        assert!(parse_spec("dir:/tmp/x").is_ok());
        assert!(parse_spec("zns:/dev/nullb0,zones=2-9").is_ok());
        assert!(parse_spec("zns:/dev/nullb0,zones=9-2").is_err());
    }
}
