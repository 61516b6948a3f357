//! A minimal NBD client for the protocol tests, and a served real engine
//! image (log engine on an in-memory store).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log_engine::store::mem::MemStore;
use log_engine::{CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_nbd::proto::*;
use lsvd_nbd::{Export, Exports, ListenerHandle, Server};

pub fn image(size: u64) -> Arc<Image> {
    let store: Arc<dyn SegmentStore> = Arc::new(MemStore::new());
    Image::create(
        Arc::clone(&store),
        &CreateOptions {
            size,
            segment_size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = OpenOptions {
        upload_threads: 2,
        max_pending_bytes: 32 << 20,
        checkpoint_every: 16,
        gc: GcConfig {
            policy: Default::default(),
            enabled: false,
            threshold_pct: 50,
            interval: Duration::from_secs(10),
        },
        store_timeout: Duration::from_secs(10),
        read_only: false,
    };
    Arc::new(Image::open(store, opts).unwrap())
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server: Arc<Server>,
    pub listener: ListenerHandle,
    pub image: Arc<Image>,
    pub export: Arc<Export>,
}

impl Fixture {
    pub fn new(size: u64, read_only: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::new(4).unwrap();
        let image = image(size);
        let export = Arc::new(Export::new("disk", image.clone(), read_only));
        let listener = server
            .listen_unix(
                &dir.path().join("nbd.sock"),
                Exports::single(export.clone()),
            )
            .unwrap();
        Fixture {
            dir,
            server,
            listener,
            image,
            export,
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("nbd.sock")
    }
}

pub struct Client {
    pub s: UnixStream,
    pub size: u64,
    pub flags: u16,
    pub structured: bool,
}

pub fn raw(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read the greeting and send client flags.
pub fn greet(s: &mut UnixStream) {
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
    assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
    s.write_all(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes())
        .unwrap();
}

pub fn send_opt(s: &mut UnixStream, opt: u32, data: &[u8]) {
    let h = OptionHeader {
        option: opt,
        len: data.len() as u32,
    };
    s.write_all(&h.encode()).unwrap();
    s.write_all(data).unwrap();
}

pub fn read_opt_reply(s: &mut UnixStream) -> (OptionReplyHeader, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    let h = OptionReplyHeader::decode(&h).unwrap();
    let mut d = vec![0u8; h.len as usize];
    s.read_exact(&mut d).unwrap();
    (h, d)
}

/// Connect with GO (asking for block sizes when `strict`).
pub fn connect(path: &Path, structured: bool, strict: bool) -> Client {
    let mut s = raw(path);
    greet(&mut s);
    if structured {
        send_opt(&mut s, OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(read_opt_reply(&mut s).0.reply, REP_ACK);
    }
    let infos = if strict {
        vec![INFO_BLOCK_SIZE]
    } else {
        vec![]
    };
    send_opt(
        &mut s,
        OPT_GO,
        &InfoRequest {
            name: String::new(),
            infos,
        }
        .encode(),
    );
    let (mut size, mut flags) = (0, 0);
    loop {
        let (h, d) = read_opt_reply(&mut s);
        match h.reply {
            REP_ACK => break,
            REP_INFO if u16::from_be_bytes([d[0], d[1]]) == INFO_EXPORT => {
                size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                flags = u16::from_be_bytes([d[10], d[11]]);
            }
            REP_INFO => {}
            r => panic!("GO failed: reply {r:#x} {:?}", String::from_utf8_lossy(&d)),
        }
    }
    Client {
        s,
        size,
        flags,
        structured,
    }
}

impl Client {
    pub fn send(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8]) {
        let r = Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        };
        let mut b = r.encode().to_vec();
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    /// Read one reply: (cookie, error, read data). `read_len` is the data
    /// length expected for a successful simple read reply.
    pub fn reply(&mut self, read_len: usize) -> (u64, u32, Vec<u8>) {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m).unwrap();
        let magic = u32::from_be_bytes(m);
        if magic == SIMPLE_REPLY_MAGIC {
            let mut rest = [0u8; 12];
            self.s.read_exact(&mut rest).unwrap();
            let err = u32::from_be_bytes(rest[..4].try_into().unwrap());
            let cookie = u64::from_be_bytes(rest[4..].try_into().unwrap());
            let mut d = vec![0u8; if err == 0 { read_len } else { 0 }];
            self.s.read_exact(&mut d).unwrap();
            return (cookie, err, d);
        }
        assert_eq!(magic, STRUCTURED_REPLY_MAGIC);
        let mut rest = [0u8; 16];
        self.s.read_exact(&mut rest).unwrap();
        let flags = u16::from_be_bytes([rest[0], rest[1]]);
        let kind = u16::from_be_bytes([rest[2], rest[3]]);
        let cookie = u64::from_be_bytes(rest[4..12].try_into().unwrap());
        let len = u32::from_be_bytes(rest[12..].try_into().unwrap());
        assert_ne!(flags & REPLY_FLAG_DONE, 0);
        let mut p = vec![0u8; len as usize];
        self.s.read_exact(&mut p).unwrap();
        match kind {
            REPLY_TYPE_OFFSET_DATA => (cookie, 0, p[8..].to_vec()),
            REPLY_TYPE_ERROR => (
                cookie,
                u32::from_be_bytes(p[..4].try_into().unwrap()),
                vec![],
            ),
            k => panic!("unexpected chunk type {k}"),
        }
    }

    pub fn write(&mut self, off: u64, data: &[u8]) -> u32 {
        self.send(CMD_WRITE, 0, 1, off, data.len() as u32, data);
        self.reply(0).1
    }
    pub fn read(&mut self, off: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.send(CMD_READ, 0, 2, off, len, &[]);
        let (c, e, d) = self.reply(len as usize);
        assert_eq!(c, 2);
        if e == 0 {
            Ok(d)
        } else {
            Err(e)
        }
    }
    pub fn cmd(&mut self, kind: u16, flags: u16, off: u64, len: u32) -> u32 {
        self.send(kind, flags, 3, off, len, &[]);
        self.reply(0).1
    }
    pub fn disc(mut self) {
        self.send(CMD_DISC, 0, 4, 0, 0, &[]);
        let mut b = [0u8; 1];
        assert_eq!(self.s.read(&mut b).unwrap(), 0, "server closes after DISC");
    }
}

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// True when the server closed the connection (EOF or reset).
pub fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("expected close, got {e}"),
        }
    }
}
