//! The offload limits file: lowers the server's limits (issue 8's table) for one daemon.
//!
//! Format: one `key = value` per line; `#` starts a comment; blank lines are ignored.
//! Keys are the [`ServerConfig`] field names (`max_hops`, `vm_time`, ...). Counts and
//! byte sizes are decimal integers (`_` separators allowed); durations take a unit:
//! `us`, `ms` or `s` (`250ms`, `1s`). Unknown keys, repeated keys, zero values and
//! malformed lines are errors with the line number; values above the caps in
//! [`crate::server::caps`] are refused by [`ServerConfig::validate`]. A file can only
//! lower a limit (or raise `max_hops` up to its cap of 1024), never pass a cap.
//!
//! ```text
//! # /etc/lsvd/offload.conf
//! max_hops = 16
//! vm_time = 20ms
//! fns_per_uid = 8
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::server::{ConfigError, ServerConfig};

/// Why a limits file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("offload config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `key = value`, names an unknown or repeated key, or has a bad value.
    #[error("offload config line {line}: {msg}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A value passes its cap.
    #[error(transparent)]
    Limit(#[from] ConfigError),
}

/// Reads `path` and applies it to `base` (see the module docs).
pub fn load_limits(path: &Path, base: ServerConfig) -> Result<ServerConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_limits(&text, base)
}

/// Applies the `key = value` lines of `text` to `base` and validates the result.
pub fn parse_limits(text: &str, base: ServerConfig) -> Result<ServerConfig, ConfigFileError> {
    let mut cfg = base;
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |msg: String| ConfigFileError::Line { line, msg };
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let Some((key, value)) = body.split_once('=') else {
            return Err(bad(format!("expected `key = value`, got {body:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        if !seen.insert(key.to_string()) {
            return Err(bad(format!("{key} is set twice")));
        }
        let n = || count(value).map_err(|m| bad(format!("{key}: {m}")));
        let d = || duration(value).map_err(|m| bad(format!("{key}: {m}")));
        match key {
            "max_object_bytes" => cfg.max_object_bytes = to_usize(n()?, key, line)?,
            "max_insns" => cfg.max_insns = to_usize(n()?, key, line)?,
            "verifier_processed" => cfg.verifier_processed = n()?,
            "verifier_time" => cfg.verifier_time = d()?,
            "max_hop_insns" => cfg.max_hop_insns = n()?,
            "default_hops" => cfg.default_hops = to_u32(n()?, key, line)?,
            "max_hops" => cfg.max_hops = to_u32(n()?, key, line)?,
            "vm_time" => cfg.vm_time = d()?,
            "total_time" => cfg.total_time = d()?,
            "max_args" => cfg.max_args = to_usize(n()?, key, line)?,
            "fns_per_uid" => cfg.fns_per_uid = to_usize(n()?, key, line)?,
            "fns_total" => cfg.fns_total = to_usize(n()?, key, line)?,
            "in_flight_per_conn" => cfg.in_flight_per_conn = to_usize(n()?, key, line)?,
            "workers" => cfg.workers = to_usize(n()?, key, line)?,
            "max_connections" => cfg.max_connections = to_usize(n()?, key, line)?,
            "frame_timeout" => cfg.frame_timeout = d()?,
            _ => return Err(bad(format!("unknown key {key:?}"))),
        }
    }
    // Lowering max_hops below the default hop count lowers the default with it, unless the
    // file set both (then validate() checks default_hops <= max_hops).
    if !seen.contains("default_hops") {
        cfg.default_hops = cfg.default_hops.min(cfg.max_hops);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn count(v: &str) -> Result<u64, String> {
    let digits: String = v.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not a decimal integer"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("{v:?} is too large"))?;
    if n == 0 {
        return Err("zero is not a limit".into());
    }
    Ok(n)
}

fn duration(v: &str) -> Result<Duration, String> {
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .ok_or_else(|| format!("{v:?} needs a unit (us, ms or s)"))?;
    let (num, unit) = v.split_at(split);
    let n = count(num)?;
    let d = match unit.trim() {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        u => return Err(format!("unknown unit {u:?} (us, ms or s)")),
    };
    Ok(d)
}

fn to_usize(n: u64, key: &str, line: usize) -> Result<usize, ConfigFileError> {
    usize::try_from(n).map_err(|_| ConfigFileError::Line {
        line,
        msg: format!("{key}: {n} is too large"),
    })
}

fn to_u32(n: u64, key: &str, line: usize) -> Result<u32, ConfigFileError> {
    u32::try_from(n).map_err(|_| ConfigFileError::Line {
        line,
        msg: format!("{key}: {n} is too large"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<ServerConfig, ConfigFileError> {
        parse_limits(t, ServerConfig::default())
    }

    fn line_err(t: &str) -> (usize, String) {
        match parse(t) {
            Err(ConfigFileError::Line { line, msg }) => (line, msg),
            other => panic!("expected a line error for {t:?}, got {other:?}"),
        }
    }

    #[test]
    fn lowers_limits_with_comments_and_units() {
        let c = parse(
            "# test\n\nmax_hops = 16   # fewer hops\nvm_time = 20ms\ntotal_time=1s\n\
             frame_timeout = 500us\nfns_per_uid = 8\nverifier_processed = 100_000\n",
        )
        .unwrap();
        assert_eq!(c.max_hops, 16);
        assert_eq!(c.default_hops, 16, "default follows a lower max_hops");
        assert_eq!(c.vm_time, Duration::from_millis(20));
        assert_eq!(c.total_time, Duration::from_secs(1));
        assert_eq!(c.frame_timeout, Duration::from_micros(500));
        assert_eq!(c.fns_per_uid, 8);
        assert_eq!(c.verifier_processed, 100_000);
        let d = ServerConfig::default();
        assert_eq!(c.max_args, d.max_args, "unset keys keep their default");
        assert_eq!(parse("").unwrap().default_hops, 64);
    }

    #[test]
    fn max_hops_may_rise_to_its_cap_and_no_further() {
        assert_eq!(parse("max_hops = 1024").unwrap().max_hops, 1024);
        match parse("max_hops = 1025") {
            Err(ConfigFileError::Limit(e)) => assert_eq!(e.field, "max_hops"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn caps_are_not_passed() {
        for (text, field) in [
            ("vm_time = 101ms", "vm_time"),
            ("total_time = 2s", "total_time"),
            ("max_hop_insns = 100001", "max_hop_insns"),
            ("fns_per_uid = 65", "fns_per_uid"),
            ("fns_total = 1025", "fns_total"),
            ("max_args = 4097", "max_args"),
            ("max_insns = 4097", "max_insns"),
            ("max_object_bytes = 1048577", "max_object_bytes"),
            ("verifier_processed = 1000001", "verifier_processed"),
            ("verifier_time = 1001ms", "verifier_time"),
            ("in_flight_per_conn = 65", "in_flight_per_conn"),
            ("max_hops = 8\ndefault_hops = 9", "default_hops"),
        ] {
            match parse(text) {
                Err(ConfigFileError::Limit(e)) => assert_eq!(e.field, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(line_err("max_hops = 4\nbogus = 1").0, 2);
        assert!(line_err("bogus = 1").1.contains("unknown key"));
        assert!(line_err("max_hops 4").1.contains("key = value"));
        assert!(line_err("max_hops = 4\nmax_hops = 5").1.contains("twice"));
        assert!(line_err("max_hops = 0").1.contains("zero"));
        assert!(line_err("max_hops = -1").1.contains("integer"));
        assert!(line_err("max_hops = 4x").1.contains("integer"));
        assert!(line_err("max_hops = 99999999999").1.contains("too large"));
        assert!(line_err("max_hops = 99999999999999999999999")
            .1
            .contains("too large"));
        assert!(line_err("vm_time = 20").1.contains("unit"));
        assert!(line_err("vm_time = 20 min").1.contains("unknown unit"));
        assert!(line_err("vm_time = ms").1.contains("integer"));
        assert!(line_err("vm_time = 0ms").1.contains("zero"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load_limits(
            Path::new("/nonexistent/offload.conf"),
            ServerConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/offload.conf"), "{e}");
    }
}
