//! Reading a journal back: the superblock ([`probe`]), the valid records of
//! its generation ([`scan`]), one record's data ([`read_record`]) and a
//! summary for tools ([`inspect`]).
//!
//! The scan reads the whole log in large chunks and tries a record header
//! at every 4 KiB block: a block is a record only if its magic and header
//! crc32c are right, it carries the superblock's image uuid and generation
//! nonce, and the crc32c of its data matches. A valid record is skipped
//! whole; anything else advances one block. So records are found wherever
//! they are, in any order (completions of concurrent writes are not
//! ordered), and stale records of earlier laps or generations never count.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use log_engine::{Error, Result};

use super::format::{AlignedBuf, RecordHeader, Superblock, BLOCK, DATA_START};

/// Bytes read per chunk while scanning.
const CHUNK: u64 = 16 << 20;

/// The journal superblock as found on the device.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Size of the file or device.
    pub device_size: u64,
    /// The newest valid superblock slot, or why there is none.
    pub superblock: std::result::Result<Superblock, String>,
}

/// A valid record found by [`scan`].
#[derive(Clone, Debug)]
pub struct RecordInfo {
    /// Byte offset of the record on the device.
    pub pos: u64,
    pub header: RecordHeader,
}

/// What [`scan`] found.
#[derive(Clone, Debug, Default)]
pub struct ScanResult {
    /// Valid records of the generation, sorted by seq (one per seq).
    pub records: Vec<RecordInfo>,
    /// Records of the generation whose header is sound but whose data crc
    /// (or length) is not: (position, seq, problem). A torn write or damage.
    pub damaged: Vec<(u64, u64, String)>,
}

/// Summary of a journal for `lsvdctl cache info`.
#[derive(Clone, Debug)]
pub struct JournalInfo {
    pub image_uuid: String,
    pub size: u64,
    pub generation: u64,
    /// Backend write seq when the generation started.
    pub base_seq: u64,
    /// Highest seq a completed flush made durable.
    pub flushed_seq: u64,
    /// Valid records of the current generation.
    pub records: u64,
    /// Bytes those records occupy.
    pub used: u64,
    /// Lowest and highest record seq (None without records).
    pub replay_from_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records with a sound header but damaged data.
    pub damaged: u64,
}

/// Open read-only with O_DIRECT (buffered where the file system refuses
/// it): reads then never share the page cache with the direct writes of
/// a previous process whose last I/O may still be completing.
fn open_ro(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => File::open(path),
        r => r,
    }
}

fn open_ro_ctx(path: &Path) -> Result<File> {
    open_ro(path).map_err(|e| Error::io(format!("open journal {}", path.display()), e))
}

fn device_size(f: &File, path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of journal {}", path.display()), e))
}

fn read_at(f: &File, buf: &mut [u8], pos: u64, path: &Path) -> Result<()> {
    f.read_exact_at(buf, pos).map_err(|e| {
        Error::io(
            format!("read journal {} at offset {pos}", path.display()),
            e,
        )
    })
}

/// Read the superblock slots. `Ok(None)` when the path does not exist.
pub fn probe(path: &Path) -> Result<Option<Probe>> {
    let f = match open_ro(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open journal {}", path.display()), e)),
    };
    let device_size = device_size(&f, path)?;
    if device_size < DATA_START {
        return Ok(Some(Probe {
            device_size,
            superblock: Err(format!("too small ({device_size} bytes)")),
        }));
    }
    let mut b = AlignedBuf::new(DATA_START as usize);
    read_at(&f, &mut b, 0, path)?;
    let mut best: Option<Superblock> = None;
    let mut errors = Vec::new();
    for slot in 0..2usize {
        let what = format!("journal {} superblock slot {slot}", path.display());
        match Superblock::decode(&b[slot * BLOCK as usize..], &what) {
            Ok(sb) => {
                if best.as_ref().is_none_or(|b| sb.counter > b.counter) {
                    best = Some(sb);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let superblock = match best {
        Some(sb) if sb.size > device_size => Err(format!(
            "superblock says {} bytes but the device has {device_size}",
            sb.size
        )),
        Some(sb) => Ok(sb),
        None => Err(errors.join("; ")),
    };
    Ok(Some(Probe {
        device_size,
        superblock,
    }))
}

/// Find every valid record of `sb`'s image and generation.
pub fn scan(path: &Path, sb: &Superblock) -> Result<ScanResult> {
    let f = open_ro_ctx(path)?;
    let end = sb.size;
    let mut out = ScanResult::default();
    let mut chunk = AlignedBuf::new(CHUNK as usize);
    let mut chunk_len = 0usize;
    let mut chunk_pos = 0u64;
    let mut pos = DATA_START;
    while pos + BLOCK <= end {
        if pos < chunk_pos || pos + BLOCK > chunk_pos + chunk_len as u64 {
            chunk_len = CHUNK.min(end - pos) as usize;
            read_at(&f, &mut chunk[..chunk_len], pos, path)?;
            chunk_pos = pos;
        }
        let at = (pos - chunk_pos) as usize;
        let hdr = match RecordHeader::decode(&chunk[at..at + BLOCK as usize], pos) {
            None => {
                pos += BLOCK;
                continue;
            }
            Some(Err(_)) => {
                // A sound header of an unknown shape: not ours to replay.
                pos += BLOCK;
                continue;
            }
            Some(Ok(h)) => h,
        };
        if hdr.uuid != sb.uuid || hdr.generation != sb.generation {
            pos += BLOCK;
            continue;
        }
        if pos + hdr.record_len > end {
            out.damaged
                .push((pos, hdr.seq, "runs past the end of the journal".into()));
            pos += BLOCK;
            continue;
        }
        let data_at = pos + BLOCK;
        let data_end = data_at + hdr.data_len;
        let crc = if data_end <= chunk_pos + chunk_len as u64 {
            let s = (data_at - chunk_pos) as usize;
            crc32c::crc32c(&chunk[s..s + hdr.data_len as usize])
        } else {
            let mut extra = AlignedBuf::new(hdr.data_len as usize);
            let n = extra.len();
            read_at(&f, &mut extra[..n], data_at, path)?;
            crc32c::crc32c(&extra[..hdr.data_len as usize])
        };
        if crc != hdr.data_crc {
            out.damaged
                .push((pos, hdr.seq, "data crc32c mismatch".into()));
            pos += BLOCK;
            continue;
        }
        let len = hdr.record_len;
        out.records.push(RecordInfo { pos, header: hdr });
        pos += len;
    }
    out.records.sort_by_key(|r| r.header.seq);
    out.records.dedup_by_key(|r| r.header.seq);
    Ok(out)
}

/// Read and verify the data of a record found by [`scan`].
pub fn read_record(f: &File, path: &Path, rec: &RecordInfo) -> Result<Vec<u8>> {
    if rec.header.data_len == 0 {
        return Ok(Vec::new());
    }
    let mut buf = AlignedBuf::new(rec.header.data_len as usize);
    let n = buf.len();
    read_at(f, &mut buf[..n], rec.pos + BLOCK, path)?;
    let data = buf[..rec.header.data_len as usize].to_vec();
    if crc32c::crc32c(&data) != rec.header.data_crc {
        return Err(Error::corrupt(
            format!(
                "journal {} record seq {} at offset {}",
                path.display(),
                rec.header.seq,
                rec.pos
            ),
            "data crc32c mismatch on re-read",
        ));
    }
    Ok(data)
}

/// Reads records in (mostly) increasing position order through a large
/// read-ahead buffer: replay of many small records costs a few big
/// sequential reads instead of one device read per record.
pub struct RecordReader {
    f: File,
    path: std::path::PathBuf,
    buf: AlignedBuf,
    buf_pos: u64,
    buf_len: usize,
    end: u64,
}

impl RecordReader {
    /// A reader for the journal at `path` whose superblock says `size`.
    pub fn open(path: &Path, size: u64) -> Result<RecordReader> {
        Ok(RecordReader {
            f: open_ro_ctx(path)?,
            path: path.to_path_buf(),
            buf: AlignedBuf::new(CHUNK as usize),
            buf_pos: 0,
            buf_len: 0,
            end: size,
        })
    }

    /// The verified data of `rec`.
    pub fn read(&mut self, rec: &RecordInfo) -> Result<Vec<u8>> {
        let (start, len) = (rec.pos + BLOCK, rec.header.data_len);
        if len > CHUNK {
            return read_record(&self.f, &self.path, rec);
        }
        if start < self.buf_pos || start + len > self.buf_pos + self.buf_len as u64 {
            self.buf_pos = start;
            self.buf_len = CHUNK.min(self.end.saturating_sub(start)) as usize;
            if (self.buf_len as u64) < len {
                return read_record(&self.f, &self.path, rec);
            }
            read_at(&self.f, &mut self.buf[..self.buf_len], start, &self.path)?;
        }
        let at = (start - self.buf_pos) as usize;
        let data = self.buf[at..at + len as usize].to_vec();
        if crc32c::crc32c(&data) != rec.header.data_crc {
            return Err(Error::corrupt(
                format!(
                    "journal {} record seq {} at offset {}",
                    self.path.display(),
                    rec.header.seq,
                    rec.pos
                ),
                "data crc32c mismatch on re-read",
            ));
        }
        Ok(data)
    }
}

/// Open a journal for [`read_record`].
pub fn open_for_read(path: &Path) -> Result<File> {
    open_ro_ctx(path)
}

/// Describe the journal at `path` without changing it.
pub fn inspect(path: &Path) -> Result<JournalInfo> {
    let probe =
        probe(path)?.ok_or_else(|| Error::NotFound(format!("journal {}", path.display())))?;
    let sb = probe
        .superblock
        .map_err(|e| Error::corrupt(format!("journal {}", path.display()), e))?;
    let s = scan(path, &sb)?;
    Ok(JournalInfo {
        image_uuid: super::format::uuid_string(&sb.uuid),
        size: sb.size,
        generation: sb.generation,
        base_seq: sb.base_seq,
        flushed_seq: sb.flushed_seq,
        records: s.records.len() as u64,
        used: s.records.iter().map(|r| r.header.record_len).sum(),
        replay_from_seq: s.records.first().map(|r| r.header.seq),
        last_seq: s.records.last().map(|r| r.header.seq),
        damaged: s.damaged.len() as u64,
    })
}
