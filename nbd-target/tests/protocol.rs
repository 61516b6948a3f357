//! Protocol tests against a real engine image over a real Unix socket:
//! negotiation, every command, every refusal, and clients misbehaving
//! while others keep working.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;

use common::*;
use lsvd_nbd::proto::*;

const MIB: u64 = 1 << 20;

#[test]
fn go_write_read_flush_trim_zeroes() {
    let f = Fixture::new(16 * MIB, false);
    for structured in [false, true] {
        let mut c = connect(&f.path(), structured, true);
        assert_eq!(c.size, 16 * MIB);
        for flag in [
            TFLAG_HAS_FLAGS,
            TFLAG_SEND_FLUSH,
            TFLAG_SEND_FUA,
            TFLAG_SEND_TRIM,
            TFLAG_SEND_WRITE_ZEROES,
            TFLAG_CAN_MULTI_CONN,
        ] {
            assert_ne!(c.flags & flag, 0, "flag {flag:#x}");
        }
        assert_eq!(c.flags & TFLAG_READ_ONLY, 0);
        let d = pattern(1, 64 * 1024);
        assert_eq!(c.write(8192, &d), 0);
        let got = c.read(8192, d.len() as u32).unwrap();
        let bad = got.iter().zip(&d).position(|(a, b)| a != b);
        assert!(
            bad.is_none(),
            "structured {structured}: first mismatch at {bad:?}"
        );
        // 512-byte granularity (read-modify-write inside a 4 KiB block).
        let small = pattern(2, 512);
        assert_eq!(c.write(8192 + 1536, &small), 0);
        let back = c.read(8192, 4096).unwrap();
        assert_eq!(&back[..1536], &d[..1536]);
        assert_eq!(&back[1536..2048], &small[..]);
        assert_eq!(&back[2048..], &d[2048..4096]);
        // FUA write, flush.
        c.send(CMD_WRITE, CMD_FLAG_FUA, 9, 0, 4096, &pattern(3, 4096));
        assert_eq!(c.reply(0), (9, 0, vec![]));
        assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
        // Trim and write-zeroes (with and without NO_HOLE, unaligned edges).
        assert_eq!(c.cmd(CMD_TRIM, 0, 8192, 16384), 0);
        assert_eq!(c.read(8192, 16384).unwrap(), vec![0u8; 16384]);
        assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 8192 + 16384 + 512, 8192), 0);
        let after = c.read(8192 + 16384, 65536 - 16384).unwrap();
        assert_eq!(&after[..512], &d[16384..16384 + 512]);
        assert_eq!(&after[512..512 + 8192], &vec![0u8; 8192][..]);
        assert_eq!(&after[512 + 8192..], &d[16384 + 512 + 8192..]);
        // NO_HOLE + FUA writes real zeros, here over data.
        assert_eq!(c.write(1 << 20, &pattern(4, 16384)), 0);
        assert_eq!(
            c.cmd(
                CMD_WRITE_ZEROES,
                CMD_FLAG_NO_HOLE | CMD_FLAG_FUA,
                (1 << 20) + 512,
                12288
            ),
            0
        );
        let z = c.read(1 << 20, 16384).unwrap();
        assert_eq!(&z[..512], &pattern(4, 16384)[..512]);
        assert_eq!(&z[512..512 + 12288], &vec![0u8; 12288][..]);
        assert_eq!(&z[512 + 12288..], &pattern(4, 16384)[512 + 12288..]);
        c.disc();
    }
    // What was flushed through NBD is in the engine.
    let mut b = vec![0u8; 4096];
    f.image.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(3, 4096));
}

#[test]
fn export_name_list_info_and_unknown_options() {
    let f = Fixture::new(4 * MIB, false);
    let mut s = raw(&f.path());
    greet(&mut s);
    send_opt(&mut s, OPT_LIST, &[]);
    let (h, d) = read_opt_reply(&mut s);
    assert_eq!(h.reply, REP_SERVER);
    assert_eq!(&d[4..], b"disk");
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ACK);
    send_opt(&mut s, OPT_LIST, b"junk");
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_INVALID);
    send_opt(&mut s, 999, b"whatever");
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_UNSUP);
    send_opt(&mut s, OPT_STARTTLS, &[]);
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_POLICY);
    // INFO on an unknown export, then a good one with block sizes.
    let info = |name: &str| {
        InfoRequest {
            name: name.into(),
            infos: vec![INFO_BLOCK_SIZE, INFO_NAME],
        }
        .encode()
    };
    send_opt(&mut s, OPT_INFO, &info("nope"));
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_UNKNOWN);
    send_opt(&mut s, OPT_INFO, &[0, 0, 0, 9, b'x']);
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_INVALID);
    send_opt(&mut s, OPT_INFO, &info("disk"));
    let mut saw_bs = false;
    loop {
        let (h, d) = read_opt_reply(&mut s);
        if h.reply == REP_ACK {
            break;
        }
        assert_eq!(h.reply, REP_INFO);
        if u16::from_be_bytes([d[0], d[1]]) == INFO_BLOCK_SIZE {
            assert_eq!(&d[2..], &info_block_size(512, 4096, 32 << 20)[2..]);
            saw_bs = true;
        }
    }
    assert!(saw_bs);
    // Too-large option payload: refused, stream stays in sync.
    let big = vec![0u8; MAX_OPTION_LEN as usize + 1];
    send_opt(&mut s, OPT_INFO, &big);
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ERR_TOO_BIG);
    // EXPORT_NAME: size + flags, no zero padding (NO_ZEROES).
    send_opt(&mut s, OPT_EXPORT_NAME, b"disk");
    let mut b = [0u8; 10];
    s.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), 4 * MIB);
    let mut c = Client {
        s,
        size: 4 * MIB,
        flags: 0,
        structured: false,
    };
    assert_eq!(c.write(0, &pattern(5, 4096)), 0);
    assert_eq!(c.read(0, 4096).unwrap(), pattern(5, 4096));
    c.disc();

    // EXPORT_NAME of an unknown export closes the connection; ABORT is acked.
    let mut s = raw(&f.path());
    greet(&mut s);
    send_opt(&mut s, OPT_EXPORT_NAME, b"other");
    assert!(closed(&mut s));
    let mut s = raw(&f.path());
    greet(&mut s);
    send_opt(&mut s, OPT_ABORT, &[]);
    assert_eq!(read_opt_reply(&mut s).0.reply, REP_ACK);
    assert!(closed(&mut s));
}

#[test]
fn malformed_handshakes_close_only_that_connection() {
    let f = Fixture::new(4 * MIB, false);
    let mut good = connect(&f.path(), true, true);
    assert_eq!(good.write(0, &pattern(7, 4096)), 0);
    let cases: Vec<Vec<u8>> = vec![
        vec![],                         // connect and leave
        vec![0, 0],                     // truncated client flags
        0x80u32.to_be_bytes().to_vec(), // unknown client flags
        {
            // bad option magic
            let mut v = 3u32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0xff; 16]);
            v
        },
        {
            // option header cut short
            let mut v = 3u32.to_be_bytes().to_vec();
            v.extend_from_slice(&IHAVEOPT.to_be_bytes()[..5]);
            v
        },
        {
            // GO whose payload never arrives
            let mut v = 3u32.to_be_bytes().to_vec();
            v.extend_from_slice(
                &OptionHeader {
                    option: OPT_GO,
                    len: 100,
                }
                .encode(),
            );
            v.extend_from_slice(&[0, 0]);
            v
        },
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut s = raw(&f.path());
        let mut g = [0u8; 18];
        s.read_exact(&mut g).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        // Either a polite close or error replies then close; never a hang.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        // The established client is untouched.
        assert_eq!(good.read(0, 4096).unwrap(), pattern(7, 4096), "case {i}");
    }
    good.disc();
}

#[test]
fn bad_requests_get_protocol_errors() {
    let f = Fixture::new(4 * MIB, false);
    let mut c = connect(&f.path(), false, true);
    let size = 4 * MIB;
    // Past the end: read EINVAL, write ENOSPC (payload consumed), trim EINVAL.
    assert_eq!(c.read(size - 4096, 8192), Err(EINVAL));
    assert_eq!(c.read(u64::MAX - 511, 512), Err(EINVAL));
    assert_eq!(c.write(size, &[1u8; 4096]), ENOSPC);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, size - 4096, 8192), ENOSPC);
    assert_eq!(c.cmd(CMD_TRIM, 0, size, 4096), EINVAL);
    // Misaligned for the advertised minimum (client asked for block sizes).
    assert_eq!(c.read(100, 512), Err(EINVAL));
    assert_eq!(c.write(512, &[1u8; 100]), EINVAL);
    // Zero length and unknown commands.
    assert_eq!(c.read(0, 0), Err(EINVAL));
    assert_eq!(c.cmd(42, 0, 0, 0), EINVAL);
    // Oversized: a read refused, a write refused with its payload skipped.
    assert_eq!(c.read(0, (32 << 20) + 512), Err(EINVAL));
    let big = vec![9u8; (32 << 20) + 512];
    assert_eq!(c.write(0, &big), EINVAL);
    // Still in sync and the data untouched.
    assert_eq!(c.read(0, 4096).unwrap(), vec![0u8; 4096]);
    c.disc();

    // A client that did not ask for block sizes may use any granularity.
    let mut c = connect(&f.path(), true, false);
    assert_eq!(c.write(100, b"hello"), 0);
    assert_eq!(c.read(98, 9).unwrap(), b"\0\0hello\0\0");
    c.disc();
}

#[test]
fn read_only_export_refuses_writes() {
    let f = Fixture::new(4 * MIB, true);
    let mut c = connect(&f.path(), true, true);
    assert_ne!(c.flags & TFLAG_READ_ONLY, 0);
    assert_eq!(c.write(0, &[1u8; 4096]), EPERM);
    assert_eq!(c.cmd(CMD_TRIM, 0, 0, 4096), EPERM);
    assert_eq!(c.cmd(CMD_WRITE_ZEROES, 0, 0, 4096), EPERM);
    assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
    assert_eq!(c.read(0, 4096).unwrap(), vec![0u8; 4096]);
    c.disc();
}

#[test]
fn garbage_and_vanishing_clients_lose_nothing_acknowledged() {
    let f = Fixture::new(8 * MIB, false);
    let mut keeper = connect(&f.path(), false, true);
    let d = pattern(11, 1 << 20);
    assert_eq!(keeper.write(0, &d), 0);
    assert_eq!(keeper.cmd(CMD_FLUSH, 0, 0, 0), 0);

    // Bad request magic: connection closed.
    let mut c = connect(&f.path(), false, true);
    c.s.write_all(&[0xab; 28]).unwrap();
    assert!(closed(&mut c.s));
    // Vanish mid-header and mid-payload.
    let mut c = connect(&f.path(), false, true);
    c.s.write_all(
        &Request {
            flags: 0,
            kind: CMD_WRITE,
            cookie: 1,
            offset: 0,
            len: 4096,
        }
        .encode()[..10],
    )
    .unwrap();
    drop(c);
    let mut c = connect(&f.path(), false, true);
    let r = Request {
        flags: 0,
        kind: CMD_WRITE,
        cookie: 1,
        offset: 0,
        len: 1 << 20,
    };
    c.s.write_all(&r.encode()).unwrap();
    c.s.write_all(&[0xee; 1000]).unwrap();
    drop(c);
    // Many pipelined requests, then vanish without reading replies.
    let mut c = connect(&f.path(), false, true);
    for i in 0..64u64 {
        c.send(CMD_READ, 0, i, 0, 65536, &[]);
    }
    drop(c);

    assert_eq!(keeper.read(0, 1 << 20).unwrap(), d);
    keeper.disc();
    let mut b = vec![0u8; 1 << 20];
    f.image.read(0, &mut b).unwrap();
    assert_eq!(b, d);
}

#[test]
fn pipelined_requests_and_many_connections() {
    let f = Fixture::new(16 * MIB, false);
    let path = f.path();
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let path = path.clone();
        threads.push(thread::spawn(move || {
            let mut c = connect(&path, t % 2 == 0, true);
            // 32 writes in flight, each its own 4 KiB of this thread's MiB;
            // plus 512-byte sectors interleaved in shared blocks.
            for i in 0..32u64 {
                let off = t * MIB + i * 4096;
                c.send(CMD_WRITE, 0, i, off, 4096, &pattern(t * 100 + i, 4096));
            }
            for i in 0..8u64 {
                let off = 12 * MIB + i * 4096 + t * 512;
                c.send(CMD_WRITE, 0, 100 + i, off, 512, &pattern(t * 1000 + i, 512));
            }
            let mut seen = std::collections::HashSet::new();
            for _ in 0..40 {
                let (cookie, err, _) = c.reply(0);
                assert_eq!(err, 0);
                assert!(seen.insert(cookie));
            }
            assert_eq!(c.cmd(CMD_FLUSH, 0, 0, 0), 0);
            c
        }));
    }
    let mut clients: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let c = &mut clients[0];
    for t in 0..4u64 {
        for i in 0..32u64 {
            let got = c.read(t * MIB + i * 4096, 4096).unwrap();
            assert_eq!(got, pattern(t * 100 + i, 4096), "thread {t} block {i}");
        }
        for i in 0..8u64 {
            let got = c.read(12 * MIB + i * 4096 + t * 512, 512).unwrap();
            assert_eq!(got, pattern(t * 1000 + i, 512), "thread {t} sector {i}");
        }
    }
    for c in clients {
        c.disc();
    }
}

#[test]
fn stopping_a_listener_ends_its_clients() {
    let mut f = Fixture::new(4 * MIB, false);
    let mut c = connect(&f.path(), false, true);
    assert_eq!(c.write(0, &pattern(1, 4096)), 0);
    let idle = raw(&f.path()); // still in negotiation
    f.listener.stop();
    assert!(closed(&mut c.s));
    let mut idle = idle;
    let mut g = Vec::new();
    let _ = idle.read_to_end(&mut g);
    assert!(!f.path().exists(), "socket file removed");
    let mut b = vec![0u8; 4096];
    f.image.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(1, 4096));
    let _ = Arc::strong_count(&f.export);
}

#[test]
fn a_client_that_never_reads_replies_does_not_block_stop() {
    let mut f = Fixture::new(64 * MIB, false);
    let mut c = connect(&f.path(), false, true);
    c.s.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    // Far more reply data than the socket buffers hold; never read it.
    let t0 = std::time::Instant::now();
    for i in 0..2000u64 {
        let r = Request {
            flags: 0,
            kind: CMD_READ,
            cookie: i,
            offset: 0,
            len: 1 << 20,
        };
        if c.s.write_all(&r.encode()).is_err() {
            break; // the server stopped reading: it is stuck on replies
        }
    }
    let mut other = connect(&f.path(), false, true);
    assert_eq!(other.write(0, &pattern(1, 4096)), 0);
    other.disc();
    f.listener.stop();
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
}
