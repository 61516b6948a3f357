//! A small NBD client (fixed newstyle handshake, `NBD_OPT_GO`, simple replies) over a
//! Unix socket: the per-level peer of the benchmark. Written from the protocol
//! document (nbd/doc/proto.md), independent of lsvd's server code.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const FLAG_FIXED_NEWSTYLE: u32 = 1;
const FLAG_NO_ZEROES: u32 = 2;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_FLUSH: u16 = 3;

/// One NBD connection in the transmission phase.
pub struct Nbd {
    s: UnixStream,
    cookie: u64,
}

impl Nbd {
    /// Connects to `path` and negotiates export `name` with `NBD_OPT_GO`.
    pub fn connect(path: &Path, name: &str) -> anyhow::Result<Nbd> {
        let mut s = UnixStream::connect(path)
            .with_context(|| format!("connect to NBD socket {}", path.display()))?;
        let mut g = [0u8; 18];
        s.read_exact(&mut g).context("NBD greeting")?;
        if g[..8] != NBDMAGIC.to_be_bytes() || g[8..16] != IHAVEOPT.to_be_bytes() {
            bail!("not a newstyle NBD server");
        }
        s.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
        let mut data = Vec::new();
        data.extend_from_slice(&(name.len() as u32).to_be_bytes());
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut opt = Vec::new();
        opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt)?;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).context("NBD option reply")?;
            let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            let mut m = [0u8; 8];
            m.copy_from_slice(&h[..8]);
            if u64::from_be_bytes(m) != REPLY_MAGIC {
                bail!("bad NBD option reply magic");
            }
            let (reply, len) = (be32(12), be32(16));
            if len > 1 << 16 {
                bail!("NBD option reply of {len} bytes");
            }
            let mut d = vec![0u8; len as usize];
            s.read_exact(&mut d)?;
            match reply {
                REP_ACK => break,
                REP_INFO => continue,
                r => bail!(
                    "NBD_OPT_GO refused ({r:#x}): {}",
                    String::from_utf8_lossy(&d)
                ),
            }
        }
        Ok(Nbd { s, cookie: 0 })
    }

    fn request(&mut self, kind: u16, off: u64, len: u32, data: &[u8]) -> anyhow::Result<()> {
        self.cookie += 1;
        let mut r = [0u8; 28];
        r[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r[6..8].copy_from_slice(&kind.to_be_bytes());
        r[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        r[16..24].copy_from_slice(&off.to_be_bytes());
        r[24..28].copy_from_slice(&len.to_be_bytes());
        self.s.write_all(&r)?;
        if !data.is_empty() {
            self.s.write_all(data)?;
        }
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).context("NBD reply")?;
        let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&h[8..16]);
        if be32(0) != SIMPLE_REPLY_MAGIC || u64::from_be_bytes(c) != self.cookie {
            bail!("bad NBD reply");
        }
        if be32(4) != 0 {
            bail!("NBD error {} at offset {off}", be32(4));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off`.
    pub fn read(&mut self, off: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        self.request(CMD_READ, off, buf.len() as u32, &[])?;
        self.s.read_exact(buf).context("NBD read data")?;
        Ok(())
    }

    /// Writes `data` at `off`.
    pub fn write(&mut self, off: u64, data: &[u8]) -> anyhow::Result<()> {
        self.request(CMD_WRITE, off, data.len() as u32, data)
    }

    /// Flushes.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.request(CMD_FLUSH, 0, 0, &[])
    }
}
