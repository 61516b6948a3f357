//! Store specs for RADOS images:
//!
//! - `rados:POOL/NAME` — image `NAME` in the default namespace of `POOL`;
//! - `rados:POOL/NS/NAME` — in RADOS namespace `NS`;
//! - options after `?`, joined by `&`: `conf=PATH` (ceph.conf; default:
//!   `$CEPH_CONF`, else librados' search of /etc/ceph), `timeout=SECS`
//!   (librados mount/op timeout, whole seconds, default 10),
//!   `retry=SECS` (how long a call retries transient failures, default 30).

use std::sync::Arc;
use std::time::Duration;

use log_engine::store::SegmentStore;
use log_engine::{Error, Result};

use crate::store::{check_image_name, ImageLocation, RadosOptions, RadosStore};

const FORM: &str =
    "rados:POOL/NAME or rados:POOL/NS/NAME, options ?conf=PATH&timeout=SECS&retry=SECS";

/// A parsed `rados:` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadosSpec {
    pub loc: ImageLocation,
    pub op_timeout_secs: u32,
    pub retry_secs: u64,
}

impl RadosSpec {
    /// Options for the store.
    pub fn options(&self) -> RadosOptions {
        RadosOptions {
            op_timeout_secs: self.op_timeout_secs,
            retry_budget: Duration::from_secs(self.retry_secs),
            ..RadosOptions::default()
        }
    }
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "bad store spec {spec:?}: {why}; valid form: {FORM}"
    ))
}

fn check_part(spec: &str, what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.contains(['/', '?', '&', '\0']) {
        return Err(bad(spec, format!("empty or invalid {what} {v:?}")));
    }
    Ok(())
}

/// Parse a `rados:` spec (see the module docs). The conf path falls back to
/// `$CEPH_CONF` when not given.
pub fn parse_spec(spec: &str) -> Result<RadosSpec> {
    let rest = spec
        .strip_prefix("rados:")
        .ok_or_else(|| bad(spec, "does not start with \"rados:\""))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (pool, ns, name) = match parts.as_slice() {
        [pool, name] => (*pool, "", *name),
        [pool, ns, name] => (*pool, *ns, *name),
        _ => return Err(bad(spec, "expected POOL/NAME or POOL/NS/NAME")),
    };
    check_part(spec, "pool", pool)?;
    if parts.len() == 3 {
        check_part(spec, "namespace", ns)?;
    }
    check_image_name(name).map_err(|e| bad(spec, e))?;
    let mut conf = None;
    let mut timeout = RadosOptions::default().op_timeout_secs;
    let mut retry = RadosOptions::default().retry_budget.as_secs();
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(spec, format!("option {kv:?} is not key=value")))?;
        match k {
            "conf" if !v.is_empty() => conf = Some(v.to_string()),
            "timeout" => {
                timeout =
                    v.parse::<u32>().ok().filter(|t| *t > 0).ok_or_else(|| {
                        bad(spec, format!("timeout={v:?} is not whole seconds > 0"))
                    })?
            }
            "retry" => {
                retry = v
                    .parse::<u64>()
                    .map_err(|_| bad(spec, format!("retry={v:?} is not whole seconds")))?
            }
            _ => return Err(bad(spec, format!("unknown or empty option {k:?}"))),
        }
    }
    let conf = conf.or_else(|| std::env::var("CEPH_CONF").ok().filter(|s| !s.is_empty()));
    Ok(RadosSpec {
        loc: ImageLocation {
            conf_path: conf,
            pool: pool.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        op_timeout_secs: timeout,
        retry_secs: retry,
    })
}

/// Open the image a `rados:` spec names.
pub fn open_spec(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    let s = parse_spec(spec)?;
    let opts = s.options();
    Ok(Arc::new(RadosStore::open_at(s.loc, opts)?))
}

/// Create an (empty) image store for a `rados:` spec; `Image::create`
/// then writes the image into it.
pub fn create_spec(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    let s = parse_spec(spec)?;
    let opts = s.options();
    Ok(Arc::new(RadosStore::create_at(s.loc, opts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let s = parse_spec("rados:rbd/img1?conf=/x/ceph.conf&timeout=3&retry=7").unwrap();
        assert_eq!(s.loc.pool, "rbd");
        assert_eq!(s.loc.namespace, "");
        assert_eq!(s.loc.name, "img1");
        assert_eq!(s.loc.conf_path.as_deref(), Some("/x/ceph.conf"));
        assert_eq!((s.op_timeout_secs, s.retry_secs), (3, 7));
        let s = parse_spec("rados:p/ns1/vm-2?conf=/c").unwrap();
        assert_eq!(
            (s.loc.namespace.as_str(), s.loc.name.as_str()),
            ("ns1", "vm-2")
        );
        assert_eq!(s.loc.describe(), "rados:p/ns1/vm-2");
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for bad in [
            "dir:/x",
            "rados:",
            "rados:pool",
            "rados:/img",
            "rados:pool/",
            "rados:pool/a.b",
            "rados:p/n/s/x",
            "rados:p//x",
            "rados:p/x?timeout=1.5",
            "rados:p/x?timeout=0",
            "rados:p/x?bogus=1",
            "rados:p/x?conf",
        ] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains("bad store spec"), "{bad}: {e}");
        }
    }
}
