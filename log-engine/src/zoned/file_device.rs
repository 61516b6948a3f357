//! `ZonedFile`: an emulated host-managed zoned drive in one regular file.
//!
//! It enforces what a ZNS drive (or Linux `null_blk` in zoned mode) enforces;
//! see the rules in [`super::device`]. File layout (see `FORMAT.md`, section
//! "Emulated zoned file"):
//!
//! ```text
//! [geometry block 4096] [zone table slot A] [zone table slot B] [zone 0] [zone 1] ...
//! ```
//!
//! - The geometry block is written once at create and never rewritten.
//! - The zone table (per-zone write pointer and condition) is written to slot
//!   A and B alternately with a growing generation; each slot has its own
//!   crc32c, so a torn table write leaves the other slot intact and open
//!   falls back to it.
//!
//! # Invariants
//! - A write is acknowledged only after its data was `fdatasync`ed and then a
//!   zone table recording the new write pointer was `fdatasync`ed. So the
//!   persisted write pointer never covers data that was not durable: after a
//!   crash, reads below the wp return only acknowledged bytes (or bytes of the
//!   one write that was in flight, whose table update may or may not have
//!   landed).
//! - `finish` zero-fills `[wp, capacity)` (hole punch) before the table
//!   records the zone full, so reads of a finished zone never return stale
//!   bytes from before an earlier reset.
//! - Opening and closing zones change no durable state: on [`ZonedFile::open`]
//!   (a power cycle) open zones become closed, or empty if nothing was written.
//! - Implicit open with `max_open` reached: like NVMe ZNS and `null_blk`, an
//!   implicitly opened zone (without a write in flight) is closed to make
//!   room; if only explicitly opened zones hold the open resources, or the
//!   zone would exceed `max_active`, the request fails with
//!   [`Error::ZoneViolation`]. An explicit `open` follows the same rule.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::device::{
    check_append, check_finish, open_active_counts, ZoneCond, ZoneInfo, ZoneType, ZonedDevice,
    ZonedGeometry,
};
use crate::error::IoContext;
use crate::{Error, Result};

/// Magic of the geometry block and of both zone-table slots.
pub const ZONED_FILE_MAGIC: &[u8; 8] = b"LSVDZONF";
/// Format version of the emulated zoned file.
pub const ZONED_FILE_VERSION: u32 = 1;
/// Largest number of zones an emulated file may have (keeps each zone-table
/// write at most 1 MiB).
pub const MAX_ZONES: u32 = 65536;

const BLOCK: u64 = 4096;
const GEOM_LEN: usize = 64;
const TABLE_FIXED: usize = 32;
const ZONE_ENTRY: usize = 16;

/// An emulated zoned drive backed by one file. See the module docs.
#[derive(Debug)]
pub struct ZonedFile {
    path: PathBuf,
    file: File,
    geo: ZonedGeometry,
    slot_len: u64,
    data_off: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    zones: Vec<Zone>,
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Zone {
    wp: u64,
    cond: ZoneCond,
    /// A data write is in flight (between validation and table update).
    busy: bool,
}

fn cond_code(c: ZoneCond) -> u8 {
    match c {
        ZoneCond::NotWp => 0,
        ZoneCond::Empty => 1,
        ZoneCond::ImplicitOpen => 2,
        ZoneCond::ExplicitOpen => 3,
        ZoneCond::Closed => 4,
        ZoneCond::Full => 5,
        ZoneCond::ReadOnly => 6,
        ZoneCond::Offline => 7,
    }
}

fn cond_from(c: u8) -> Option<ZoneCond> {
    Some(match c {
        0 => ZoneCond::NotWp,
        1 => ZoneCond::Empty,
        2 => ZoneCond::ImplicitOpen,
        3 => ZoneCond::ExplicitOpen,
        4 => ZoneCond::Closed,
        5 => ZoneCond::Full,
        6 => ZoneCond::ReadOnly,
        7 => ZoneCond::Offline,
        _ => return None,
    })
}

use super::le::{round_up, u32_at, u64_at};

/// Check a geometry for the emulated file.
fn validate_geometry(g: &ZonedGeometry) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(format!("zoned geometry: {m}")));
    let gran = g.write_granularity as u64;
    if gran < 512 || !gran.is_power_of_two() {
        return bad(format!(
            "write granularity {gran} must be a power of two >= 512"
        ));
    }
    if g.zone_size == 0 || !g.zone_size.is_multiple_of(gran) {
        return bad(format!(
            "zone size {} must be a non-zero multiple of {gran}",
            g.zone_size
        ));
    }
    if g.zone_capacity == 0
        || g.zone_capacity > g.zone_size
        || !g.zone_capacity.is_multiple_of(gran)
    {
        return bad(format!(
            "zone capacity {} must be a non-zero multiple of {gran} and <= zone size {}",
            g.zone_capacity, g.zone_size
        ));
    }
    if g.nr_zones == 0 || g.nr_zones > MAX_ZONES {
        return bad(format!("zone count {} must be 1..={MAX_ZONES}", g.nr_zones));
    }
    if g.nr_conventional > g.nr_zones {
        return bad(format!(
            "{} conventional zones but only {} zones",
            g.nr_conventional, g.nr_zones
        ));
    }
    if g.max_active != 0 && g.max_open > g.max_active {
        return bad(format!(
            "max_open {} must be <= max_active {}",
            g.max_open, g.max_active
        ));
    }
    if g.zone_size.checked_mul(g.nr_zones as u64).is_none() {
        return bad("device size overflows".into());
    }
    Ok(())
}

fn encode_geometry(g: &ZonedGeometry, out: &mut Vec<u8>) {
    out.extend_from_slice(&g.zone_size.to_le_bytes());
    out.extend_from_slice(&g.zone_capacity.to_le_bytes());
    out.extend_from_slice(&g.nr_zones.to_le_bytes());
    out.extend_from_slice(&g.nr_conventional.to_le_bytes());
    out.extend_from_slice(&g.max_open.to_le_bytes());
    out.extend_from_slice(&g.max_active.to_le_bytes());
    out.extend_from_slice(&g.write_granularity.to_le_bytes());
}

fn decode_geometry(b: &[u8]) -> ZonedGeometry {
    ZonedGeometry {
        zone_size: u64_at(b, 0),
        zone_capacity: u64_at(b, 8),
        nr_zones: u32_at(b, 16),
        nr_conventional: u32_at(b, 20),
        max_open: u32_at(b, 24),
        max_active: u32_at(b, 28),
        write_granularity: u32_at(b, 32),
    }
}

fn slot_len_for(nr_zones: u32) -> u64 {
    round_up(
        (TABLE_FIXED + nr_zones as usize * ZONE_ENTRY + 4) as u64,
        BLOCK,
    )
}

impl ZonedFile {
    /// Create a new emulated zoned drive at `path` (which must not exist):
    /// all sequential zones empty. The file is sparse.
    pub fn create(path: impl AsRef<Path>, geometry: ZonedGeometry) -> Result<ZonedFile> {
        let path = path.as_ref().to_path_buf();
        validate_geometry(&geometry)?;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(format!("zoned file {}", path.display())))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("create zoned file {}", path.display()),
                    e,
                ))
            }
        };
        let slot_len = slot_len_for(geometry.nr_zones);
        let data_off = BLOCK + 2 * slot_len;
        let total = data_off + geometry.zone_size * geometry.nr_zones as u64;
        file.set_len(total)
            .ctx(|| format!("size zoned file {} to {total}", path.display()))?;

        let mut gb = Vec::with_capacity(BLOCK as usize);
        gb.extend_from_slice(ZONED_FILE_MAGIC);
        gb.extend_from_slice(&ZONED_FILE_VERSION.to_le_bytes());
        gb.extend_from_slice(&0u32.to_le_bytes()); // flags
        encode_geometry(&geometry, &mut gb);
        gb.extend_from_slice(&slot_len.to_le_bytes());
        debug_assert_eq!(gb.len(), GEOM_LEN - 4);
        let crc = crc32c::crc32c(&gb);
        gb.extend_from_slice(&crc.to_le_bytes());
        gb.resize(BLOCK as usize, 0);
        file.write_all_at(&gb, 0)
            .ctx(|| format!("write geometry of {}", path.display()))?;

        let zones = (0..geometry.nr_zones)
            .map(|i| Zone {
                wp: 0,
                cond: if i < geometry.nr_conventional {
                    ZoneCond::NotWp
                } else {
                    ZoneCond::Empty
                },
                busy: false,
            })
            .collect();
        let dev = ZonedFile {
            path: path.clone(),
            file,
            geo: geometry,
            slot_len,
            data_off,
            state: Mutex::new(State {
                zones,
                generation: 0,
            }),
        };
        {
            let mut st = dev.state.lock();
            // Both slots valid from the start.
            dev.persist(&mut st)?;
            dev.persist(&mut st)?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .ctx(|| format!("fsync directory {}", parent.display()))?;
        }
        Ok(dev)
    }

    /// Open an existing emulated drive. Open zones come back closed (or
    /// empty when nothing was written), as after a power cycle.
    pub fn open(path: impl AsRef<Path>) -> Result<ZonedFile> {
        let path = path.as_ref().to_path_buf();
        let what = || format!("zoned file {}", path.display());
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(what()))
            }
            Err(e) => return Err(Error::io(format!("open {}", what()), e)),
        };
        let flen = file.metadata().ctx(|| format!("stat {}", what()))?.len();
        let mut gb = vec![0u8; GEOM_LEN];
        if flen < BLOCK {
            return Err(Error::corrupt(what(), format!("file is only {flen} bytes")));
        }
        file.read_exact_at(&mut gb, 0)
            .ctx(|| format!("read geometry of {}", what()))?;
        if &gb[0..8] != ZONED_FILE_MAGIC {
            return Err(Error::corrupt(
                what(),
                "bad magic (not an emulated zoned file)",
            ));
        }
        let stored = u32_at(&gb, GEOM_LEN - 4);
        if crc32c::crc32c(&gb[..GEOM_LEN - 4]) != stored {
            return Err(Error::corrupt(what(), "geometry block crc mismatch"));
        }
        let version = u32_at(&gb, 8);
        if version != ZONED_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: what(),
                version,
            });
        }
        let geo = decode_geometry(&gb[16..]);
        validate_geometry(&geo).map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let slot_len = u64_at(&gb, 52);
        if slot_len != slot_len_for(geo.nr_zones) {
            return Err(Error::corrupt(
                what(),
                format!("bad table slot length {slot_len}"),
            ));
        }
        let data_off = BLOCK + 2 * slot_len;
        let total = data_off + geo.zone_size * geo.nr_zones as u64;
        if flen < total {
            return Err(Error::corrupt(
                what(),
                format!("file is {flen} bytes, geometry needs {total}"),
            ));
        }

        let mut best: Option<(u64, Vec<Zone>)> = None;
        let mut errors = Vec::new();
        for slot in 0..2u64 {
            match Self::read_slot(&file, &geo, slot_len, slot) {
                Ok((g, z)) => {
                    if best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                        best = Some((g, z));
                    }
                }
                Err(e) => errors.push(format!("slot {}: {e}", if slot == 0 { 'A' } else { 'B' })),
            }
        }
        let Some((generation, mut zones)) = best else {
            return Err(Error::corrupt(
                what(),
                format!("no valid zone table: {}", errors.join("; ")),
            ));
        };
        if !errors.is_empty() {
            tracing::warn!(file = %path.display(), errors = %errors.join("; "), "zone table slot damaged, using the other one");
        }
        // Power cycle: open zones become closed (empty if unwritten).
        for z in zones.iter_mut() {
            if z.cond.is_open() {
                z.cond = if z.wp == 0 {
                    ZoneCond::Empty
                } else {
                    ZoneCond::Closed
                };
            }
        }
        Ok(ZonedFile {
            path,
            file,
            geo,
            slot_len,
            data_off,
            state: Mutex::new(State { zones, generation }),
        })
    }

    /// Path of the backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_slot(
        file: &File,
        geo: &ZonedGeometry,
        slot_len: u64,
        slot: u64,
    ) -> Result<(u64, Vec<Zone>)> {
        let mut b = vec![0u8; slot_len as usize];
        file.read_exact_at(&mut b, BLOCK + slot * slot_len)
            .map_err(|e| Error::corrupt("zone table", e.to_string()))?;
        let n = geo.nr_zones as usize;
        let end = TABLE_FIXED + n * ZONE_ENTRY;
        if &b[0..8] != ZONED_FILE_MAGIC {
            return Err(Error::corrupt("zone table", "bad magic"));
        }
        if crc32c::crc32c(&b[..end]) != u32_at(&b, end) {
            return Err(Error::corrupt("zone table", "crc mismatch"));
        }
        let version = u32_at(&b, 8);
        if version != ZONED_FILE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "zone table".into(),
                version,
            });
        }
        if u32_at(&b, 24) != geo.nr_zones {
            return Err(Error::corrupt(
                "zone table",
                "zone count differs from geometry",
            ));
        }
        let generation = u64_at(&b, 16);
        let mut zones = Vec::with_capacity(n);
        for i in 0..n {
            let e = &b[TABLE_FIXED + i * ZONE_ENTRY..TABLE_FIXED + (i + 1) * ZONE_ENTRY];
            let wp = u64_at(e, 0);
            let cond = cond_from(e[8]).ok_or_else(|| {
                Error::corrupt("zone table", format!("zone {i}: bad condition {}", e[8]))
            })?;
            let conv = (i as u32) < geo.nr_conventional;
            let ok = if conv {
                cond == ZoneCond::NotWp && wp == 0
            } else {
                cond != ZoneCond::NotWp && wp <= geo.zone_capacity
            };
            if !ok {
                return Err(Error::corrupt(
                    "zone table",
                    format!("zone {i}: impossible state {cond:?} wp {wp}"),
                ));
            }
            zones.push(Zone {
                wp,
                cond,
                busy: false,
            });
        }
        Ok((generation, zones))
    }

    /// Write the zone table to the next slot and fdatasync it.
    fn persist(&self, st: &mut State) -> Result<()> {
        let generation = st.generation + 1;
        let mut b = Vec::with_capacity(self.slot_len as usize);
        b.extend_from_slice(ZONED_FILE_MAGIC);
        b.extend_from_slice(&ZONED_FILE_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&generation.to_le_bytes());
        b.extend_from_slice(&self.geo.nr_zones.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for z in &st.zones {
            b.extend_from_slice(&z.wp.to_le_bytes());
            b.push(cond_code(z.cond));
            b.extend_from_slice(&[0u8; 7]);
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(self.slot_len as usize, 0);
        let off = BLOCK + (generation % 2) * self.slot_len;
        self.file
            .write_all_at(&b, off)
            .and_then(|_| self.file.sync_data())
            .ctx(|| format!("write zone table of {}", self.path.display()))?;
        st.generation = generation;
        Ok(())
    }

    fn zone_pos(&self, zone: u32) -> u64 {
        self.data_off + zone as u64 * self.geo.zone_size
    }

    fn check_zone(&self, zone: u32) -> Result<usize> {
        if zone >= self.geo.nr_zones {
            return Err(Error::InvalidArgument(format!(
                "{}: zone {zone} out of range (device has {} zones)",
                self.path.display(),
                self.geo.nr_zones
            )));
        }
        Ok(zone as usize)
    }

    fn violation(&self, zone: u32, msg: impl std::fmt::Display) -> Error {
        Error::ZoneViolation(format!("{} zone {zone}: {msg}", self.path.display()))
    }

    fn counts(st: &State) -> (u32, u32) {
        open_active_counts(st.zones.iter().map(|z| z.cond))
    }

    /// Make room for zone `zi` (currently Empty or Closed) to become open:
    /// checks max_active (Empty adds an active zone) and max_open, closing an
    /// implicitly open idle zone if needed.
    fn acquire_open(&self, st: &mut State, zi: usize) -> Result<()> {
        let (open, active) = Self::counts(st);
        let z = st.zones[zi];
        if z.cond == ZoneCond::Empty && self.geo.max_active != 0 && active >= self.geo.max_active {
            return Err(self.violation(
                zi as u32,
                format!("max_active {} zones already active", self.geo.max_active),
            ));
        }
        if self.geo.max_open != 0 && open >= self.geo.max_open {
            let victim = st
                .zones
                .iter()
                .position(|v| v.cond == ZoneCond::ImplicitOpen && !v.busy);
            match victim {
                Some(v) => {
                    st.zones[v].cond = ZoneCond::Closed;
                    tracing::trace!(zone = v, "implicitly closed to make room");
                }
                None => {
                    return Err(self.violation(
                        zi as u32,
                        format!(
                            "max_open {} zones open and none can be implicitly closed",
                            self.geo.max_open
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn punch_zeros(&self, pos: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: plain fallocate on our own fd.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                pos as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        // No hole punching: write zeros.
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..n], pos + done)
                .ctx(|| format!("zero-fill {}", self.path.display()))?;
            done += n as u64;
        }
        Ok(())
    }
}

impl ZonedDevice for ZonedFile {
    fn geometry(&self) -> ZonedGeometry {
        self.geo
    }

    fn describe(&self) -> String {
        format!("zoned-file:{}", self.path.display())
    }

    fn report_zones(&self) -> Result<Vec<ZoneInfo>> {
        let st = self.state.lock();
        Ok(st
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let conv = (i as u32) < self.geo.nr_conventional;
                ZoneInfo {
                    index: i as u32,
                    start: i as u64 * self.geo.zone_size,
                    len: self.geo.zone_size,
                    capacity: if conv {
                        self.geo.zone_size
                    } else {
                        self.geo.zone_capacity
                    },
                    wp: z.wp,
                    zone_type: if conv {
                        ZoneType::Conventional
                    } else {
                        ZoneType::SequentialRequired
                    },
                    cond: z.cond,
                }
            })
            .collect())
    }

    fn write(&self, zone: u32, offset: u64, data: &[u8]) -> Result<()> {
        let zi = self.check_zone(zone)?;
        let gran = self.geo.write_granularity as u64;
        let len = data.len() as u64;
        if len == 0 || !len.is_multiple_of(gran) || !offset.is_multiple_of(gran) {
            return Err(self.violation(
                zone,
                format!("write of {len} bytes at {offset} is not aligned to {gran}"),
            ));
        }
        if zone < self.geo.nr_conventional {
            if offset
                .checked_add(len)
                .is_none_or(|e| e > self.geo.zone_size)
            {
                return Err(
                    self.violation(zone, format!("write of {len} at {offset} past zone end"))
                );
            }
            return self
                .file
                .write_all_at(data, self.zone_pos(zone) + offset)
                .and_then(|_| self.file.sync_data())
                .ctx(|| format!("write {} zone {zone} at {offset}", self.path.display()));
        }
        {
            let mut st = self.state.lock();
            let z = st.zones[zi];
            check_append(z.cond, z.busy, z.wp, offset, len, self.geo.zone_capacity)
                .map_err(|m| self.violation(zone, m))?;
            if matches!(z.cond, ZoneCond::Empty | ZoneCond::Closed) {
                self.acquire_open(&mut st, zi)?;
                st.zones[zi].cond = ZoneCond::ImplicitOpen;
            }
            st.zones[zi].busy = true;
        }
        let res = self
            .file
            .write_all_at(data, self.zone_pos(zone) + offset)
            .and_then(|_| self.file.sync_data())
            .ctx(|| format!("write {} zone {zone} at {offset}", self.path.display()));
        let mut st = self.state.lock();
        st.zones[zi].busy = false;
        res?;
        let old = st.zones[zi];
        let wp = offset + len;
        st.zones[zi].wp = wp;
        if wp == self.geo.zone_capacity {
            st.zones[zi].cond = ZoneCond::Full;
        }
        if let Err(e) = self.persist(&mut st) {
            st.zones[zi] = old;
            return Err(e);
        }
        Ok(())
    }

    fn read(&self, zone: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let zi = self.check_zone(zone)?;
        let len = buf.len() as u64;
        let limit = if zone < self.geo.nr_conventional {
            self.geo.zone_size
        } else {
            let st = self.state.lock();
            let z = st.zones[zi];
            if z.cond == ZoneCond::Offline {
                return Err(self.violation(zone, "zone is offline"));
            }
            z.wp
        };
        if offset.checked_add(len).is_none_or(|e| e > limit) {
            return Err(self.violation(
                zone,
                format!(
                    "read of {len} bytes at {offset} reaches at or above the write pointer {limit}"
                ),
            ));
        }
        self.file
            .read_exact_at(buf, self.zone_pos(zone) + offset)
            .ctx(|| format!("read {} zone {zone} at {offset}", self.path.display()))
    }

    fn open(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if zone < self.geo.nr_conventional {
            return Err(self.violation(zone, "conventional zones cannot be opened"));
        }
        let mut st = self.state.lock();
        match st.zones[zi].cond {
            ZoneCond::ExplicitOpen => Ok(()),
            ZoneCond::ImplicitOpen => {
                st.zones[zi].cond = ZoneCond::ExplicitOpen;
                Ok(())
            }
            ZoneCond::Empty | ZoneCond::Closed => {
                self.acquire_open(&mut st, zi)?;
                st.zones[zi].cond = ZoneCond::ExplicitOpen;
                Ok(())
            }
            c => Err(self.violation(zone, format!("cannot open a zone in state {c:?}"))),
        }
    }

    fn close(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if zone < self.geo.nr_conventional {
            return Err(self.violation(zone, "conventional zones cannot be closed"));
        }
        let mut st = self.state.lock();
        let z = st.zones[zi];
        if z.busy {
            return Err(self.violation(zone, "a write is in flight"));
        }
        match z.cond {
            ZoneCond::Closed => Ok(()),
            ZoneCond::ImplicitOpen | ZoneCond::ExplicitOpen => {
                st.zones[zi].cond = if z.wp == 0 {
                    ZoneCond::Empty
                } else {
                    ZoneCond::Closed
                };
                Ok(())
            }
            c => Err(self.violation(zone, format!("cannot close a zone in state {c:?}"))),
        }
    }

    fn finish(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if zone < self.geo.nr_conventional {
            return Err(self.violation(zone, "conventional zones cannot be finished"));
        }
        let mut st = self.state.lock();
        let z = st.zones[zi];
        let (_, active) = Self::counts(&st);
        if !check_finish(z.cond, z.busy, active, self.geo.max_active)
            .map_err(|m| self.violation(zone, m))?
        {
            return Ok(());
        }
        // Unwritten tail reads as zeros, never as bytes from before a reset.
        self.punch_zeros(self.zone_pos(zone) + z.wp, self.geo.zone_size - z.wp)?;
        self.file
            .sync_all()
            .ctx(|| format!("sync {}", self.path.display()))?;
        st.zones[zi].wp = self.geo.zone_capacity;
        st.zones[zi].cond = ZoneCond::Full;
        if let Err(e) = self.persist(&mut st) {
            st.zones[zi] = z;
            return Err(e);
        }
        Ok(())
    }

    fn reset(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if zone < self.geo.nr_conventional {
            return Err(self.violation(zone, "conventional zones cannot be reset"));
        }
        let mut st = self.state.lock();
        let z = st.zones[zi];
        if z.busy {
            return Err(self.violation(zone, "a write is in flight"));
        }
        match z.cond {
            ZoneCond::Empty => return Ok(()),
            ZoneCond::ReadOnly | ZoneCond::Offline | ZoneCond::NotWp => {
                return Err(
                    self.violation(zone, format!("cannot reset a zone in state {:?}", z.cond))
                )
            }
            _ => {}
        }
        st.zones[zi].wp = 0;
        st.zones[zi].cond = ZoneCond::Empty;
        if let Err(e) = self.persist(&mut st) {
            st.zones[zi] = z;
            return Err(e);
        }
        // Give the space back to the host filesystem (best effort; stale
        // bytes are unreadable below a zero wp anyway).
        let pos = self.zone_pos(zone);
        // SAFETY: plain fallocate on our own fd.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                pos as libc::off_t,
                self.geo.zone_size as libc::off_t,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoned::conformance::run_zoned_device_conformance;

    fn geo(conv: u32) -> ZonedGeometry {
        ZonedGeometry {
            zone_size: 1 << 20,
            zone_capacity: 768 << 10,
            nr_zones: 8,
            nr_conventional: conv,
            max_open: 2,
            max_active: 3,
            write_granularity: 4096,
        }
    }

    fn run(conv: u32) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.img");
        let p2 = path.clone();
        let mut make = || {
            let _ = std::fs::remove_file(&path);
            ZonedFile::create(&path, geo(conv)).unwrap()
        };
        let mut reopen = |d: ZonedFile| {
            drop(d);
            ZonedFile::open(&p2).unwrap()
        };
        run_zoned_device_conformance(&mut make, Some(&mut reopen)).unwrap();
    }

    #[test]
    fn conformance_no_conventional() {
        run(0);
    }

    #[test]
    fn conformance_two_conventional() {
        run(2);
    }

    #[test]
    fn torn_table_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.img");
        let d = ZonedFile::create(&path, geo(0)).unwrap();
        d.write(1, 0, &[1u8; 8192]).unwrap();
        d.write(1, 8192, &[2u8; 4096]).unwrap();
        let gen = d.state.lock().generation;
        let slot_len = d.slot_len;
        drop(d);
        // Tear the newest slot: the previous state (wp 8192) comes back.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xffu8; 100], BLOCK + (gen % 2) * slot_len + 40)
            .unwrap();
        drop(f);
        let d = ZonedFile::open(&path).unwrap();
        let z = d.report_zones().unwrap()[1];
        assert_eq!((z.wp, z.cond), (8192, ZoneCond::Closed));
        // Both slots torn: a clear corrupt error, no panic.
        drop(d);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xffu8; 100], BLOCK + 40).unwrap();
        f.write_all_at(&[0xffu8; 100], BLOCK + slot_len + 40)
            .unwrap();
        drop(f);
        let e = ZonedFile::open(&path).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("no valid zone table"), "{e}");
    }

    #[test]
    fn create_open_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.img");
        assert!(matches!(ZonedFile::open(&path), Err(Error::NotFound(_))));
        let mut g = geo(0);
        g.zone_capacity = g.zone_size + 4096;
        assert!(matches!(
            ZonedFile::create(&path, g),
            Err(Error::InvalidArgument(_))
        ));
        ZonedFile::create(&path, geo(0)).unwrap();
        assert!(matches!(
            ZonedFile::create(&path, geo(0)),
            Err(Error::Exists(_))
        ));
        std::fs::write(&path, b"not a zoned file at all").unwrap();
        assert!(matches!(ZonedFile::open(&path), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn write_cost() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = geo(0);
        g.zone_size = 64 << 20;
        g.zone_capacity = 64 << 20;
        let d = ZonedFile::create(dir.path().join("z.img"), g).unwrap();
        let buf = vec![5u8; 1 << 20];
        let t = std::time::Instant::now();
        for i in 0..16u64 {
            d.write(0, i << 20, &buf).unwrap();
        }
        eprintln!(
            "ZonedFile: 1 MiB write + table update: {:?} each",
            t.elapsed() / 16
        );
        let small = vec![5u8; 4096];
        let t = std::time::Instant::now();
        for i in 0..16u64 {
            d.write(0, (16 << 20) + i * 4096, &small).unwrap();
        }
        eprintln!(
            "ZonedFile: 4 KiB write + table update: {:?} each",
            t.elapsed() / 16
        );
    }
}
