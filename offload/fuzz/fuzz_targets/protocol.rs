//! Protocol decoder: arbitrary bytes never panic; whatever decodes re-encodes to the same
//! message; a frame stream read with `read_frame` agrees with `decode_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lsvd_offload::protocol::{decode_frame, encode_frame, read_frame, Request, Response};

fuzz_target!(|data: &[u8]| {
    // As a whole frame.
    if let Ok(f) = decode_frame(data) {
        assert_eq!(encode_frame(f.op, f.id, &f.payload), data);
        check_payload(f.op, &f.payload);
    }
    // As a stream of frames.
    let mut r = data;
    while let Ok(Some(f)) = read_frame(&mut r, || ()) {
        check_payload(f.op, &f.payload);
    }
    // As bare payloads of every op.
    if let Some((&op, rest)) = data.split_first() {
        let op = match op & 7 {
            0 => 1,
            1 => 2,
            2 => 3,
            3 => 4,
            4 => 0x81,
            5 => 0x82,
            6 => 0x84,
            _ => 0xff,
        };
        check_payload(op, rest);
    }
});

fn check_payload(op: u16, p: &[u8]) {
    if let Ok(req) = Request::decode(op, p) {
        assert_eq!(req.encode(), p, "request re-encodes differently");
        assert_eq!(Request::decode(req.op(), &req.encode()).as_ref(), Ok(&req));
    }
    if let Ok(resp) = Response::decode(op, p) {
        assert_eq!(Response::decode(resp.op(), &resp.encode()).as_ref(), Ok(&resp));
    }
}
