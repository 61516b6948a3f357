//! Helpers shared by the daemon test files: `lsvdctl` in a home, and a minimal NBD client
//! (handshake + simple requests) spoken with the encoders of `lsvd_nbd::proto`.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use lsvd_nbd::proto::*;

/// Runs `lsvdctl args` with `LSVD_HOME=home`.
pub fn lsvdctl(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
        .args(args)
        .env("LSVD_HOME", home)
        .output()
        .unwrap()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Negotiates (fixed newstyle, GO on the default export) and returns the stream.
pub fn go<S: Read + Write>(mut s: S) -> S {
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
    s.write_all(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes())
        .unwrap();
    let req = InfoRequest {
        name: String::new(),
        infos: vec![INFO_BLOCK_SIZE],
    }
    .encode();
    s.write_all(
        &OptionHeader {
            option: OPT_GO,
            len: req.len() as u32,
        }
        .encode(),
    )
    .unwrap();
    s.write_all(&req).unwrap();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        let h = OptionReplyHeader::decode(&h).unwrap();
        let mut d = vec![0u8; h.len as usize];
        s.read_exact(&mut d).unwrap();
        if h.reply == REP_ACK {
            return s;
        }
        assert_eq!(h.reply, REP_INFO, "{}", String::from_utf8_lossy(&d));
    }
}

/// One simple request; returns the reply's error and, for a successful read, the data.
pub fn request<S: Read + Write>(
    s: &mut S,
    kind: u16,
    off: u64,
    data: &[u8],
    len: u32,
) -> (u32, Vec<u8>) {
    let r = Request {
        flags: 0,
        kind,
        cookie: 5,
        offset: off,
        len,
    };
    s.write_all(&r.encode()).unwrap();
    s.write_all(data).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let rep = SimpleReply::decode(&h).unwrap();
    assert_eq!(rep.cookie, 5);
    let n = if kind == CMD_READ && rep.error == 0 {
        len as usize
    } else {
        0
    };
    let mut d = vec![0u8; n];
    s.read_exact(&mut d).unwrap();
    (rep.error, d)
}
