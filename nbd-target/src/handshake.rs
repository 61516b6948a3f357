//! Fixed newstyle negotiation: from the greeting to the start of the
//! transmission phase.
//!
//! # Invariants
//! - Every option payload read is at most [`MAX_OPTION_LEN`] bytes; longer
//!   ones are skipped and answered `NBD_REP_ERR_TOO_BIG` (`EXPORT_NAME`,
//!   which has no error reply, closes the connection instead).
//! - A connection negotiates at most [`MAX_OPTIONS`] options.
//! - Malformed data ends the connection with an error; it never panics.

use std::io::{self, Read, Write};
use std::sync::Arc;

use tracing::debug;

use crate::error::{NbdError, Result};
use crate::export::{Export, Exports};
use crate::proto::*;

/// Most options one connection may send before transmission.
pub const MAX_OPTIONS: usize = 1024;

/// What the negotiation ended with.
pub enum Outcome {
    /// Enter transmission on `export`.
    Transmit(Session),
    /// The client aborted (or ended) the negotiation politely.
    Abort,
}

/// Parameters of the transmission phase.
pub struct Session {
    pub export: Arc<Export>,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// The client asked for block sizes, so the advertised minimum is
    /// enforced (requests not a multiple of it get EINVAL). Otherwise any
    /// byte granularity is served (the spec's default minimum of 1).
    pub min_block: u32,
}

fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Discard `n` bytes of input.
pub(crate) fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Run the negotiation on `s` for the exports of `exports`.
pub fn negotiate<S: Read + Write>(s: &mut S, exports: &Exports) -> Result<Outcome> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&greeting)?;
    s.flush()?;

    let mut cf = [0u8; 4];
    if !read_exact_or_eof(s, &mut cf)? {
        return Ok(Outcome::Abort);
    }
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(NbdError::Refused(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    // Without fixed newstyle the client may not understand error replies:
    // an option we do not serve ends the connection instead.
    let fixed = client_flags & CLIENT_FIXED_NEWSTYLE != 0;
    let mut structured = false;

    for _ in 0..MAX_OPTIONS {
        let mut hb = [0u8; OptionHeader::LEN];
        if !read_exact_or_eof(s, &mut hb)? {
            return Ok(Outcome::Abort);
        }
        let h = OptionHeader::decode(&hb)?;
        debug!(option = h.option, len = h.len, "nbd option");
        if h.len > MAX_OPTION_LEN {
            skip(s, u64::from(h.len))?;
            if h.option == OPT_EXPORT_NAME {
                return Err(NbdError::Refused("export name too long".into()));
            }
            reply(s, h.option, REP_ERR_TOO_BIG, b"option payload too large")?;
            continue;
        }
        let mut data = vec![0u8; h.len as usize];
        s.read_exact(&mut data)?;
        match h.option {
            OPT_EXPORT_NAME => {
                let name = decode_name(&data)?;
                let Some(export) = exports.lookup(&name) else {
                    return Err(NbdError::Refused(format!("no export named {name:?}")));
                };
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&export.size().to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&out)?;
                s.flush()?;
                return Ok(Outcome::Transmit(Session {
                    export,
                    structured,
                    min_block: 1,
                }));
            }
            OPT_ABORT => {
                // The client may already have closed: ignore errors.
                let _ = reply(s, h.option, REP_ACK, &[]);
                return Ok(Outcome::Abort);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply(s, h.option, REP_ERR_INVALID, b"LIST takes no data")?;
                    continue;
                }
                for e in exports.list() {
                    let mut d = Vec::with_capacity(4 + e.name().len());
                    d.extend_from_slice(&(e.name().len() as u32).to_be_bytes());
                    d.extend_from_slice(e.name().as_bytes());
                    reply(s, h.option, REP_SERVER, &d)?;
                }
                reply(s, h.option, REP_ACK, &[])?;
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    reply(
                        s,
                        h.option,
                        REP_ERR_INVALID,
                        b"STRUCTURED_REPLY takes no data",
                    )?;
                    continue;
                }
                structured = true;
                reply(s, h.option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let req = match InfoRequest::decode(&data) {
                    Ok(r) => r,
                    Err(e) => {
                        reply(s, h.option, REP_ERR_INVALID, e.to_string().as_bytes())?;
                        continue;
                    }
                };
                let Some(export) = exports.lookup(&req.name) else {
                    let msg = format!("no export named {:?}", req.name);
                    reply(s, h.option, REP_ERR_UNKNOWN, msg.as_bytes())?;
                    continue;
                };
                let (min, pref, max) = export.block_sizes();
                reply(
                    s,
                    h.option,
                    REP_INFO,
                    &info_export(export.size(), export.transmission_flags()),
                )?;
                // Block sizes are always sent (allowed even unrequested);
                // they are enforced only for clients that asked for them.
                reply(s, h.option, REP_INFO, &info_block_size(min, pref, max))?;
                if req.infos.contains(&INFO_NAME) {
                    reply(
                        s,
                        h.option,
                        REP_INFO,
                        &info_string(INFO_NAME, export.name()),
                    )?;
                }
                if req.infos.contains(&INFO_DESCRIPTION) && !export.description().is_empty() {
                    reply(
                        s,
                        h.option,
                        REP_INFO,
                        &info_string(INFO_DESCRIPTION, export.description()),
                    )?;
                }
                reply(s, h.option, REP_ACK, &[])?;
                if h.option == OPT_GO {
                    let min_block = if req.infos.contains(&INFO_BLOCK_SIZE) {
                        min
                    } else {
                        1
                    };
                    return Ok(Outcome::Transmit(Session {
                        export,
                        structured,
                        min_block,
                    }));
                }
            }
            OPT_STARTTLS => {
                reply(s, h.option, REP_ERR_POLICY, b"TLS is not supported")?;
            }
            other if !fixed => {
                return Err(NbdError::Refused(format!(
                    "option {other} from a client without fixed newstyle"
                )));
            }
            other => {
                let msg = format!("option {other} not supported");
                reply(s, h.option, REP_ERR_UNSUP, msg.as_bytes())?;
            }
        }
    }
    Err(NbdError::Refused(format!(
        "more than {MAX_OPTIONS} options in one negotiation"
    )))
}

fn reply<W: Write>(w: &mut W, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&option_reply(option, kind, data))?;
    w.flush()
}
