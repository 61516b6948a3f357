// TEMP until spec.rs lands: this whole file. When
// `log_engine::store::spec::{create_store, open_store, parse_spec}` exist,
// delete this file and `mod spec_shim;` in lib.rs, and change the one
// `use crate::spec_shim as spec;` in cmd/mod.rs to
// `use log_engine::store::spec;` (adapting the three calls in
// `cmd::store_*` if the real signatures differ).
//! Minimal stand-in for the store-spec parser (TEMP).

use std::sync::Arc;

use log_engine::size::parse_size;
use log_engine::{Error, Result, SegmentStore};

/// Check the syntax of `dir:PATH` and
/// `zoned-file:PATH,zone-size=..,zones=..[,zone-cap=..][,conv=N][,max-open=N][,max-active=N]`.
pub fn parse_spec(spec: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidArgument(format!("bad store spec {spec:?}: {why}"));
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| bad("expected KIND:PARAMS (dir:PATH or zoned-file:PATH,...)"))?;
    let mut parts = rest.split(',');
    let path = parts.next().unwrap_or("");
    if path.is_empty() {
        return Err(bad("missing path"));
    }
    match kind {
        "dir" => match parts.next() {
            Some(p) => Err(bad(&format!("unexpected parameter {p:?}"))),
            None => Ok(()),
        },
        "zoned-file" => {
            let (mut size, mut zones) = (false, false);
            for p in parts {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("parameter {p:?} is not KEY=VALUE")))?;
                match k {
                    "zone-size" | "zone-cap" => {
                        parse_size(v).map_err(|e| bad(&e.to_string()))?;
                        size |= k == "zone-size";
                    }
                    "zones" | "conv" | "max-open" | "max-active" => {
                        v.parse::<u32>()
                            .map_err(|_| bad(&format!("{k}={v:?} is not a number")))?;
                        zones |= k == "zones";
                    }
                    _ => return Err(bad(&format!("unknown parameter {k:?}"))),
                }
            }
            if !(size && zones) {
                return Err(bad("zoned-file needs zone-size=SIZE and zones=N"));
            }
            Ok(())
        }
        _ => Err(bad(&format!(
            "unknown store kind {kind:?} (dir, zoned-file)"
        ))),
    }
}

/// Stand-in: the stores are not wired up yet.
pub fn create_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    parse_spec(spec)?;
    Err(Error::Unavailable(format!(
        "store {spec}: store backends not available in this build yet"
    )))
}

/// Stand-in: the stores are not wired up yet.
pub fn open_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    parse_spec(spec)?;
    Err(Error::Unavailable(format!(
        "store {spec}: store backends not available in this build yet"
    )))
}
