//! The control protocol of the `lsvd` daemon: one JSON object per line on a
//! local Unix socket, each request answered by one response line.
//!
//! ```text
//! > {"version":1,"op":"export","name":"vm1","unix":null,"tcp":null,"read_only":false}
//! < {"version":1,"ok":true,"exports":[{"name":"vm1","address":"unix:/run/lsvd/nbd-vm1.sock",...}]}
//! > {"version":1,"op":"unexport","name":"vm1"}
//! > {"version":1,"op":"list"}
//! < {"version":1,"ok":false,"error":"no export named \"x\""}
//! ```
//!
//! # Invariants
//! - Every request and response carries `version`; a request of another
//!   version is answered with an error naming both versions.
//! - A request line longer than [`MAX_LINE`] or not valid JSON gets an
//!   error response; the connection and the daemon go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Version of the control protocol.
pub const CONTROL_VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Default control socket path.
pub const DEFAULT_CONTROL: &str = "/run/lsvd/lsvd.sock";

/// A request (`version` plus an operation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

/// Operations of the control protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Open image `name` from the catalog and serve it over NBD: on the Unix
    /// socket `unix` (default `<run-dir>/nbd-NAME.sock`) or, only when given,
    /// on TCP address `tcp`.
    Export {
        name: String,
        #[serde(default)]
        unix: Option<String>,
        #[serde(default)]
        tcp: Option<String>,
        #[serde(default)]
        read_only: bool,
        /// Open even if the image's write journal is lost (the image goes
        /// back to what its backend holds; see `lsvdctl --accept-cache-loss`).
        #[serde(default)]
        accept_cache_loss: bool,
    },
    /// Stop serving `name`: disconnect its clients (in-flight requests
    /// finish), flush and close the image.
    Unexport { name: String },
    /// List the exports.
    List,
    /// Serve image `name` as a ublk block device `/dev/ublkbN`.
    Map {
        name: String,
        #[serde(default)]
        queues: Option<u16>,
        #[serde(default)]
        depth: Option<u16>,
        #[serde(default)]
        accept_cache_loss: bool,
    },
    /// Remove a device (by `/dev/ublkbN` path or image name): flush, stop,
    /// close the image.
    Unmap { target: String },
    /// List the devices.
    Devices,
    /// Reattach the devices recorded by a daemon that died (also done at
    /// start); answers the devices that came back.
    Recover,
}

/// One ublk device as reported by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// `/dev/ublkbN`.
    pub path: String,
    pub dev_id: u32,
    pub size: u64,
    /// Served through the image's write journal (write-back: writes are
    /// acknowledged once journaled) rather than write-through.
    pub journaled: bool,
}

/// One export as reported by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    /// `unix:PATH` or `tcp:ADDR:PORT` (the dedicated listener of the export).
    pub address: String,
    /// `nbd+unix:///NAME?socket=PATH` or `nbd://ADDR:PORT/NAME`.
    pub uri: String,
    pub size: u64,
    pub read_only: bool,
    pub connections: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// A response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<Vec<ExportInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceInfo>>,
}

impl Response {
    pub fn ok(exports: Vec<ExportInfo>) -> Self {
        Response {
            version: CONTROL_VERSION,
            ok: true,
            error: None,
            exports: Some(exports),
            devices: None,
        }
    }
    pub fn devices(devices: Vec<DeviceInfo>) -> Self {
        Response {
            version: CONTROL_VERSION,
            ok: true,
            error: None,
            exports: None,
            devices: Some(devices),
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            version: CONTROL_VERSION,
            ok: false,
            error: Some(msg.into()),
            exports: None,
            devices: None,
        }
    }
}

/// Parse one request line; the error is the message to send back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    #[derive(Deserialize)]
    struct V {
        version: Option<u32>,
    }
    let v: V = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    match v.version {
        Some(CONTROL_VERSION) => {}
        Some(other) => {
            return Err(format!(
            "control protocol version {other} not supported (this daemon speaks {CONTROL_VERSION})"
        ))
        }
        None => return Err("bad request: missing field `version`".into()),
    }
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

/// Read one line of at most [`MAX_LINE`] bytes; `None` at end of stream.
pub fn read_line<R: BufRead>(r: &mut R) -> std::io::Result<Option<Result<Vec<u8>, String>>> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            // Drop the rest of the over-long line.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let n = r
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut sink)?;
                if n == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
            return Ok(Some(Err(format!("request longer than {MAX_LINE} bytes"))));
        }
    } else {
        line.pop();
    }
    Ok(Some(Ok(line)))
}

/// Send one request to the daemon at `control` and wait for its answer
/// (the client side, used by `lsvdctl export`).
pub fn call(control: &Path, op: Op) -> anyhow::Result<Response> {
    let mut s = UnixStream::connect(control).with_context(|| {
        format!(
            "connect to the lsvd daemon at {} (is `lsvd` running? see --control / LSVD_CONTROL)",
            control.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut line = serde_json::to_vec(&Request {
        version: CONTROL_VERSION,
        op,
    })?;
    line.push(b'\n');
    s.write_all(&line)
        .with_context(|| format!("send request to {}", control.display()))?;
    let mut r = BufReader::new(s);
    let Some(reply) = read_line(&mut r)? else {
        bail!("the daemon at {} closed the connection", control.display());
    };
    let reply = reply.map_err(anyhow::Error::msg)?;
    let resp: Response = serde_json::from_slice(&reply)
        .with_context(|| format!("bad response from {}", control.display()))?;
    if resp.version != CONTROL_VERSION {
        bail!(
            "the daemon speaks control protocol version {}, this lsvdctl {CONTROL_VERSION}",
            resp.version
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        let r =
            parse_request(br#"{"version":1,"op":"export","name":"a","read_only":true}"#).unwrap();
        assert_eq!(
            r.op,
            Op::Export {
                name: "a".into(),
                unix: None,
                tcp: None,
                read_only: true,
                accept_cache_loss: false,
            }
        );
        assert_eq!(
            parse_request(br#"{"version":1,"op":"list"}"#).unwrap().op,
            Op::List
        );
        assert!(parse_request(br#"{"version":2,"op":"list"}"#)
            .unwrap_err()
            .contains("version 2"));
        assert!(parse_request(br#"{"op":"list"}"#)
            .unwrap_err()
            .contains("version"));
        assert!(parse_request(b"{nope").is_err());
        assert!(parse_request(br#"{"version":1,"op":"explode"}"#).is_err());
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        long.extend_from_slice(b"{\"version\":1,\"op\":\"list\"}\n");
        let mut r = std::io::Cursor::new(long);
        assert!(read_line(&mut r).unwrap().unwrap().is_err());
        let ok = read_line(&mut r).unwrap().unwrap().unwrap();
        assert_eq!(parse_request(&ok).unwrap().op, Op::List);
        assert!(read_line(&mut r).unwrap().is_none());
    }
}
