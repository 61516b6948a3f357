//! `BlockZonedDevice`: [`ZonedDevice`] on a real host-managed zoned block
//! device (NVMe ZNS namespace, `null_blk` in zoned mode), through the
//! `linux/blkzoned.h` ioctls, `O_DIRECT` reads and io_uring writes.
//!
//! # Invariants
//! - The device is opened `O_RDWR | O_DIRECT | O_EXCL`: no other process (and
//!   no mounted file system) uses it while it is open here. Inside one
//!   process, several images share one open device through
//!   [`crate::spec`]'s registry, each on its own zone range.
//! - The geometry is never guessed: sysfs and the ioctls must agree, every
//!   zone must have the same size, sequential zones the same capacity,
//!   conventional zones must come first, and host-aware
//!   (sequential-write-preferred) zones are refused.
//! - The device never sees an invalid write: each sequential zone's write
//!   pointer and condition are tracked here (initialised and refreshed from
//!   `BLKREPORTZONE`) and a write not at the write pointer, misaligned, past
//!   the capacity, to a full zone, or beyond `max_open`/`max_active` fails with
//!   [`Error::ZoneViolation`] before any I/O. One write per zone is in flight
//!   at a time.
//! - A write is durable when `write` returns: the data goes down through
//!   io_uring, then an io_uring `fsync` flushes the device's volatile write
//!   cache (a no-op in the kernel for `write through` devices). Zone
//!   management commands are followed by a flush too.
//! - Closing a zone that holds no data leaves it empty on every device
//!   (QEMU's NVMe ZNS would keep it closed and active: it is reset).
//! - Positions in the trait are bytes relative to the zone start; the ioctls
//!   take 512-byte sectors whatever the logical block size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use io_uring::{opcode, types, IoUring};
use log_engine::zoned::{
    check_append, check_finish, open_active_counts, ZoneCond, ZoneInfo, ZoneType, ZonedDevice,
    ZonedGeometry,
};
use log_engine::{Error, Result};
use parking_lot::Mutex;

use crate::buf::AlignedBuf;
use crate::ioctl::{self, BlkZone, ZoneOp, SECTOR};
use crate::sysfs::{self, SysfsInfo};

/// Largest piece of one write submitted at once (the bounce buffer size).
const CHUNK: usize = 1 << 20;
/// Zones asked for per `BLKREPORTZONE` call.
const REPORT_BATCH: u32 = 1024;

/// Time spent writing data and flushing the write cache, over the life of
/// the open device (to see what the flush costs on a given device).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IoStats {
    /// Durable writes (each: data, then a flush).
    pub writes: u64,
    pub bytes: u64,
    pub data_secs: f64,
    pub flush_secs: f64,
}

#[derive(Debug, Default)]
struct Stats {
    writes: AtomicU64,
    bytes: AtomicU64,
    data_ns: AtomicU64,
    flush_ns: AtomicU64,
}

/// Tracked state of one zone.
#[derive(Clone, Copy, Debug)]
struct Zone {
    /// Bytes written (relative to the zone start); 0 for conventional zones.
    wp: u64,
    cond: ZoneCond,
    /// A write is in flight.
    busy: bool,
}

/// A host-managed zoned block device. See the module docs.
pub struct BlockZonedDevice {
    path: PathBuf,
    file: File,
    sysfs: SysfsInfo,
    geo: ZonedGeometry,
    zone_sectors: u64,
    zones: Mutex<Vec<Zone>>,
    /// Idle io_uring instances (one per concurrent writer, created on demand).
    rings: Mutex<Vec<IoUring>>,
    stats: Stats,
}

impl std::fmt::Debug for BlockZonedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockZonedDevice")
            .field("path", &self.path)
            .field("geometry", &self.geo)
            .finish_non_exhaustive()
    }
}

/// Map a `BLK_ZONE_COND_*` to the trait's condition.
pub fn cond_from_kernel(c: u8) -> Option<ZoneCond> {
    Some(match c {
        ioctl::BLK_ZONE_COND_NOT_WP => ZoneCond::NotWp,
        ioctl::BLK_ZONE_COND_EMPTY => ZoneCond::Empty,
        ioctl::BLK_ZONE_COND_IMP_OPEN => ZoneCond::ImplicitOpen,
        ioctl::BLK_ZONE_COND_EXP_OPEN => ZoneCond::ExplicitOpen,
        ioctl::BLK_ZONE_COND_CLOSED => ZoneCond::Closed,
        ioctl::BLK_ZONE_COND_READONLY => ZoneCond::ReadOnly,
        ioctl::BLK_ZONE_COND_FULL => ZoneCond::Full,
        ioctl::BLK_ZONE_COND_OFFLINE => ZoneCond::Offline,
        _ => return None,
    })
}

/// Every zone of the device behind `fd`, with capacities (capacity = length
/// when the kernel does not report capacities). `what` names the device.
pub fn report_all(fd: i32, what: &Path) -> Result<Vec<BlkZone>> {
    let nr = ioctl::get_nr_zones(fd)
        .map_err(|e| Error::io(format!("BLKGETNRZONES on {}", what.display()), e))?;
    let mut out: Vec<BlkZone> = Vec::with_capacity(nr as usize);
    let mut sector = 0u64;
    while (out.len() as u32) < nr {
        let (zs, has_cap) = ioctl::report_zones(fd, sector, REPORT_BATCH.min(nr))
            .map_err(|e| Error::io(format!("BLKREPORTZONE on {}", what.display()), e))?;
        let Some(last) = zs.last() else { break };
        sector = last.start.saturating_add(last.len);
        for mut z in zs {
            if !has_cap {
                z.capacity = z.len;
            }
            out.push(z);
        }
    }
    if out.len() as u32 != nr {
        return Err(Error::corrupt(
            format!("zone report of {}", what.display()),
            format!("{} zones reported, BLKGETNRZONES says {nr}", out.len()),
        ));
    }
    Ok(out)
}

/// Check the zone report against sysfs and derive the geometry.
fn derive_geometry(path: &Path, si: &SysfsInfo, fd: i32, zs: &[BlkZone]) -> Result<ZonedGeometry> {
    let refuse = |m: String| Err(Error::InvalidArgument(format!("{}: {m}", path.display())));
    let zsz = ioctl::get_zone_size(fd)
        .map_err(|e| Error::io(format!("BLKGETZONESZ on {}", path.display()), e))?
        as u64;
    if zsz == 0 || zsz != si.chunk_sectors {
        return refuse(format!(
            "zone size disagrees: BLKGETZONESZ {zsz} sectors, sysfs chunk_sectors {}; refusing to guess",
            si.chunk_sectors
        ));
    }
    if zs.len() as u32 != si.nr_zones {
        return refuse(format!(
            "zone count disagrees: BLKREPORTZONE {} zones, sysfs nr_zones {}; refusing to guess",
            zs.len(),
            si.nr_zones
        ));
    }
    let gran = 4096u64.max(si.physical_block_size as u64);
    let mut nr_conv = 0u32;
    let mut cap: Option<u64> = None;
    for (i, z) in zs.iter().enumerate() {
        if z.start != i as u64 * zsz || z.len != zsz {
            return refuse(format!(
                "zone {i} starts at sector {} with {} sectors; expected {} and {zsz} (zones of different sizes are not supported)",
                z.start,
                z.len,
                i as u64 * zsz
            ));
        }
        match z.zone_type {
            ioctl::BLK_ZONE_TYPE_CONVENTIONAL => {
                if nr_conv as usize != i {
                    return refuse(format!(
                        "conventional zone {i} follows a sequential zone; only leading conventional zones are supported"
                    ));
                }
                nr_conv += 1;
            }
            ioctl::BLK_ZONE_TYPE_SEQWRITE_REQ => {
                let c = z.capacity;
                match cap {
                    None => cap = Some(c),
                    Some(c0) if c0 != c => {
                        return refuse(format!(
                            "zone {i} has capacity {c} sectors, earlier sequential zones {c0}; \
                             zones of different capacities are not supported"
                        ))
                    }
                    _ => {}
                }
            }
            ioctl::BLK_ZONE_TYPE_SEQWRITE_PREF => {
                return refuse(format!(
                    "zone {i} is sequential-write-preferred (host-aware); a zns: store needs \
                     sequential-write-required zones (host-managed)"
                ))
            }
            t => return refuse(format!("zone {i} has unknown type {t}")),
        }
    }
    let cap = cap.unwrap_or(zsz);
    if cap == 0 || cap > zsz {
        return refuse(format!(
            "zone capacity {cap} sectors is not within the zone size {zsz}"
        ));
    }
    let (zone_size, zone_capacity) = (zsz * SECTOR, cap * SECTOR);
    if !zone_size.is_multiple_of(gran) || !zone_capacity.is_multiple_of(gran) {
        return refuse(format!(
            "zone size {zone_size} / capacity {zone_capacity} bytes are not multiples of the write granularity {gran}"
        ));
    }
    Ok(ZonedGeometry {
        zone_size,
        zone_capacity,
        nr_zones: zs.len() as u32,
        nr_conventional: nr_conv,
        max_open: si.max_open_zones,
        max_active: si.max_active_zones,
        write_granularity: gran as u32,
    })
}

impl BlockZonedDevice {
    /// Open the host-managed zoned device at `path` exclusively and check
    /// its geometry (see the module docs).
    pub fn open(path: impl AsRef<Path>) -> Result<BlockZonedDevice> {
        let path = path.as_ref().to_path_buf();
        let si = sysfs::read(&path)?;
        sysfs::require_host_managed(&path, &si)?;
        // The exclusive claim of a previous opener in this process (or one
        // that just exited) is released when its io_uring instances finish
        // tearing down, which the kernel does asynchronously: retry EBUSY
        // briefly before calling the device busy.
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_EXCL)
                .open(&path)
        };
        let mut tries = 0;
        let file = loop {
            match open() {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        let file = file.map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Error::Unavailable(format!(
                    "{} is busy: opened exclusively elsewhere (another lsvd process or \
                         image, a mounted file system)",
                    path.display()
                ))
            } else {
                Error::io(format!("open {}", path.display()), e)
            }
        })?;
        let fd = file.as_raw_fd();
        let zs = report_all(fd, &path)?;
        let geo = derive_geometry(&path, &si, fd, &zs)?;
        let zone_sectors = geo.zone_size / SECTOR;
        let mut dev = BlockZonedDevice {
            path,
            file,
            sysfs: si,
            geo,
            zone_sectors,
            zones: Mutex::new(Vec::new()),
            rings: Mutex::new(Vec::new()),
            stats: Stats::default(),
        };
        let infos = dev.convert(&zs)?;
        *dev.zones.get_mut() = infos
            .iter()
            .map(|z| Zone {
                wp: z.wp,
                cond: z.cond,
                busy: false,
            })
            .collect();
        tracing::debug!(dev = %dev.path.display(), geometry = ?dev.geo, "opened zoned block device");
        Ok(dev)
    }

    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write and flush times so far.
    pub fn io_stats(&self) -> IoStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IoStats {
            writes: l(&self.stats.writes),
            bytes: l(&self.stats.bytes),
            data_secs: l(&self.stats.data_ns) as f64 / 1e9,
            flush_secs: l(&self.stats.flush_ns) as f64 / 1e9,
        }
    }

    /// What sysfs said at open.
    pub fn sysfs(&self) -> &SysfsInfo {
        &self.sysfs
    }

    fn convert(&self, zs: &[BlkZone]) -> Result<Vec<ZoneInfo>> {
        zs.iter()
            .enumerate()
            .map(|(i, z)| {
                let cond = cond_from_kernel(z.cond).ok_or_else(|| {
                    Error::corrupt(
                        format!("zone report of {}", self.path.display()),
                        format!("zone {i} has unknown condition {}", z.cond),
                    )
                })?;
                let conv = z.zone_type == ioctl::BLK_ZONE_TYPE_CONVENTIONAL;
                let capacity = if conv {
                    self.geo.zone_size
                } else {
                    self.geo.zone_capacity
                };
                let wp = match cond {
                    _ if conv => 0,
                    ZoneCond::Empty => 0,
                    ZoneCond::Full => capacity,
                    ZoneCond::ReadOnly | ZoneCond::Offline => capacity,
                    _ => {
                        let rel = z.wp.checked_sub(z.start).map(|s| s * SECTOR);
                        match rel {
                            Some(w) if w <= capacity => w,
                            _ => {
                                return Err(Error::corrupt(
                                    format!("zone report of {}", self.path.display()),
                                    format!(
                                        "zone {i} write pointer sector {} outside the zone (start {}, capacity {capacity} bytes)",
                                        z.wp, z.start
                                    ),
                                ))
                            }
                        }
                    }
                };
                Ok(ZoneInfo {
                    index: i as u32,
                    start: z.start * SECTOR,
                    len: z.len * SECTOR,
                    capacity,
                    wp,
                    zone_type: if conv {
                        ZoneType::Conventional
                    } else {
                        ZoneType::SequentialRequired
                    },
                    cond: if conv { ZoneCond::NotWp } else { cond },
                })
            })
            .collect()
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

    fn is_conv(&self, zone: u32) -> bool {
        zone < self.geo.nr_conventional
    }

    fn byte_pos(&self, zone: u32, offset: u64) -> u64 {
        zone as u64 * self.geo.zone_size + offset
    }

    /// Errors of the kernel mapped to ours: the zone-resource errors
    /// (`ETOOMANYREFS` = open resources, `EOVERFLOW` = active resources) are
    /// zone violations; everything else is an I/O error with context.
    fn map_err(&self, zone: u32, what: String, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ETOOMANYREFS) => {
                self.violation(zone, format!("{what}: too many open zones ({e})"))
            }
            Some(libc::EOVERFLOW) => {
                self.violation(zone, format!("{what}: too many active zones ({e})"))
            }
            _ => Error::io(format!("{} zone {zone}: {what}", self.path.display()), e),
        }
    }

    fn counts(zones: &[Zone]) -> (u32, u32) {
        open_active_counts(zones.iter().map(|z| z.cond))
    }

    /// Check that zone `zi` (Empty or Closed) may become open; returns true
    /// when the device will have to close an implicitly open zone (our
    /// tracking then marks one closed and resynchronises afterwards).
    fn acquire_open(&self, zones: &mut [Zone], zi: usize) -> Result<bool> {
        let (open, active) = Self::counts(zones);
        let z = zones[zi];
        if z.cond == ZoneCond::Empty && self.geo.max_active != 0 && active >= self.geo.max_active {
            return Err(self.violation(
                zi as u32,
                format!("max_active {} zones already active", self.geo.max_active),
            ));
        }
        if self.geo.max_open != 0 && open >= self.geo.max_open {
            let victim = zones
                .iter()
                .position(|v| v.cond == ZoneCond::ImplicitOpen && !v.busy);
            let Some(v) = victim else {
                return Err(self.violation(
                    zi as u32,
                    format!(
                        "max_open {} zones already open (explicitly or with writes in flight)",
                        self.geo.max_open
                    ),
                ));
            };
            zones[v].cond = ZoneCond::Closed;
            return Ok(true);
        }
        Ok(false)
    }

    /// Refresh the tracked state of every zone without a write in flight.
    fn resync(&self) -> Result<Vec<ZoneInfo>> {
        let zs = report_all(self.file.as_raw_fd(), &self.path)?;
        if zs.len() as u32 != self.geo.nr_zones {
            return Err(Error::corrupt(
                format!("zone report of {}", self.path.display()),
                format!("{} zones now, {} at open", zs.len(), self.geo.nr_zones),
            ));
        }
        let infos = self.convert(&zs)?;
        let mut st = self.zones.lock();
        for (t, z) in st.iter_mut().zip(&infos) {
            if !t.busy {
                t.wp = z.wp;
                t.cond = z.cond;
            }
        }
        Ok(infos)
    }

    fn ring(&self) -> io::Result<IoUring> {
        match self.rings.lock().pop() {
            Some(r) => Ok(r),
            None => IoUring::new(4),
        }
    }

    /// Submit one SQE and wait for its completion; the result (bytes or 0).
    fn submit_one(ring: &mut IoUring, sqe: io_uring::squeue::Entry) -> io::Result<u32> {
        // SAFETY: the buffers the SQE points to outlive this call (the
        // caller holds them until we return with the completion).
        unsafe {
            ring.submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Some(cqe) = ring.completion().next() {
                let r = cqe.result();
                return if r < 0 {
                    Err(io::Error::from_raw_os_error(-r))
                } else {
                    Ok(r as u32)
                };
            }
        }
    }

    /// Write `data` (a multiple of 4096) at byte `pos` of the device through
    /// io_uring, then flush the write cache.
    fn write_durable(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let mut ring = self.ring()?;
        let fd = types::Fd(self.file.as_raw_fd());
        let mut bounce = AlignedBuf::new(CHUNK.min(data.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let t0 = Instant::now();
        let mut t1 = t0;
        let res = (|| {
            let mut done = 0usize;
            while done < data.len() {
                let n = (data.len() - done).min(bounce.len());
                bounce.as_mut_slice()[..n].copy_from_slice(&data[done..done + n]);
                let sqe = opcode::Write::new(fd, bounce.as_slice().as_ptr(), n as u32)
                    .offset(pos + done as u64)
                    .build();
                let w = Self::submit_one(&mut ring, sqe)? as usize;
                if w == 0 || !w.is_multiple_of(512) {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {w} of {n} bytes"),
                    ));
                }
                done += w;
            }
            t1 = Instant::now();
            let sqe = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build();
            Self::submit_one(&mut ring, sqe).map(|_| ())
        })();
        self.rings.lock().push(ring);
        if res.is_ok() {
            let st = &self.stats;
            st.writes.fetch_add(1, Ordering::Relaxed);
            st.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            st.data_ns
                .fetch_add((t1 - t0).as_nanos() as u64, Ordering::Relaxed);
            st.flush_ns
                .fetch_add(t1.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        res
    }

    /// Flush the device's write cache (after zone management commands).
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn zone_mgmt(&self, zone: u32, op: ZoneOp) -> Result<()> {
        let sector = zone as u64 * self.zone_sectors;
        ioctl::zone_mgmt(self.file.as_raw_fd(), op, sector, self.zone_sectors)
            .and_then(|_| self.flush())
            .map_err(|e| self.map_err(zone, format!("{} zone", op.name()), e))
    }
}

impl ZonedDevice for BlockZonedDevice {
    fn geometry(&self) -> ZonedGeometry {
        self.geo
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn report_zones(&self) -> Result<Vec<ZoneInfo>> {
        let mut infos = self.resync()?;
        // Zones with a write in flight: what we track (the device may be
        // half way through the write).
        let st = self.zones.lock();
        for (i, z) in infos.iter_mut().enumerate() {
            if st[i].busy {
                z.wp = st[i].wp;
                z.cond = st[i].cond;
            }
        }
        Ok(infos)
    }

    fn write(&self, zone: u32, offset: u64, data: &[u8]) -> Result<()> {
        let zi = self.check_zone(zone)?;
        let gran = self.geo.write_granularity as u64;
        let len = data.len() as u64;
        let _span =
            tracing::debug_span!("zns_write", dev = %self.path.display(), zone, offset, len)
                .entered();
        if len == 0 || !len.is_multiple_of(gran) || !offset.is_multiple_of(gran) {
            return Err(self.violation(
                zone,
                format!("write of {len} bytes at {offset} is not aligned to {gran}"),
            ));
        }
        let what = || format!("write of {len} bytes at {offset}");
        if self.is_conv(zone) {
            if offset
                .checked_add(len)
                .is_none_or(|e| e > self.geo.zone_size)
            {
                return Err(self.violation(zone, format!("{} runs past the zone end", what())));
            }
            return self
                .write_durable(self.byte_pos(zone, offset), data)
                .map_err(|e| self.map_err(zone, what(), e));
        }
        let prev;
        let implicit_close;
        {
            let mut st = self.zones.lock();
            let z = st[zi];
            prev = z;
            check_append(z.cond, z.busy, z.wp, offset, len, self.geo.zone_capacity)
                .map_err(|m| self.violation(zone, m))?;
            implicit_close = if z.cond.is_open() {
                false
            } else {
                self.acquire_open(&mut st, zi)?
            };
            st[zi].busy = true;
            if !z.cond.is_open() {
                st[zi].cond = ZoneCond::ImplicitOpen;
            }
        }
        let res = self.write_durable(self.byte_pos(zone, offset), data);
        {
            let mut st = self.zones.lock();
            st[zi].busy = false;
            if res.is_ok() {
                st[zi].wp = offset + len;
                if st[zi].wp == self.geo.zone_capacity {
                    st[zi].cond = ZoneCond::Full;
                }
            } else {
                st[zi] = prev;
            }
        }
        match res {
            Ok(()) => {
                if implicit_close {
                    // The device picked which implicitly open zone to close.
                    self.resync()?;
                }
                Ok(())
            }
            Err(e) => {
                // Learn where the device's write pointer really is.
                let err = self.map_err(zone, what(), e);
                if let Err(e2) = self.resync() {
                    tracing::warn!(error = %e2, "zone report after a failed write failed");
                }
                Err(err)
            }
        }
    }

    fn read(&self, zone: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let zi = self.check_zone(zone)?;
        let len = buf.len() as u64;
        let _span = tracing::trace_span!("zns_read", dev = %self.path.display(), zone, offset, len)
            .entered();
        if len == 0 {
            return Ok(());
        }
        let limit = if self.is_conv(zone) {
            self.geo.zone_size
        } else {
            let z = self.zones.lock()[zi];
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
        // The covering 4096-aligned range stays below the write pointer:
        // the write pointer is a multiple of the write granularity.
        let a = offset / 4096 * 4096;
        let e = (offset + len).next_multiple_of(4096).min(limit);
        let mut b = AlignedBuf::new((e - a) as usize).ok_or_else(|| {
            Error::io(
                format!("{} zone {zone}: read buffer", self.path.display()),
                io::Error::from(io::ErrorKind::OutOfMemory),
            )
        })?;
        let n = (e - a) as usize;
        self.file
            .read_exact_at(&mut b.as_mut_slice()[..n], self.byte_pos(zone, a))
            .map_err(|e| self.map_err(zone, format!("read of {len} bytes at {offset}"), e))?;
        let s = (offset - a) as usize;
        buf.copy_from_slice(&b.as_slice()[s..s + len as usize]);
        Ok(())
    }

    fn open(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if self.is_conv(zone) {
            return Err(self.violation(zone, "conventional zones cannot be opened"));
        }
        let implicit_close = {
            let mut st = self.zones.lock();
            match st[zi].cond {
                ZoneCond::ExplicitOpen => return Ok(()),
                ZoneCond::ImplicitOpen => false,
                ZoneCond::Empty | ZoneCond::Closed => self.acquire_open(&mut st, zi)?,
                c => return Err(self.violation(zone, format!("cannot open a zone in state {c:?}"))),
            }
        };
        let r = self.zone_mgmt(zone, ZoneOp::Open);
        if r.is_err() || implicit_close {
            self.resync()?;
        } else {
            self.zones.lock()[zi].cond = ZoneCond::ExplicitOpen;
        }
        r
    }

    fn close(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if self.is_conv(zone) {
            return Err(self.violation(zone, "conventional zones cannot be closed"));
        }
        {
            let st = self.zones.lock();
            let z = st[zi];
            if z.busy {
                return Err(self.violation(zone, "a write is in flight"));
            }
            match z.cond {
                ZoneCond::Closed | ZoneCond::ImplicitOpen | ZoneCond::ExplicitOpen => {}
                c => {
                    return Err(self.violation(zone, format!("cannot close a zone in state {c:?}")))
                }
            }
        }
        self.zone_mgmt(zone, ZoneOp::Close)?;
        // ZBC and null_blk empty a zone closed before anything was written
        // into it; QEMU's NVMe ZNS leaves it closed, holding an active
        // resource. Reset it so every device behaves the same.
        let z = self.zones.lock()[zi];
        if z.wp == 0 && !z.busy {
            let now = self.resync()?;
            if now[zi].cond == ZoneCond::Closed && now[zi].wp == 0 {
                tracing::debug!(dev = %self.path.display(), zone, "closed an unwritten zone: resetting it to empty");
                self.zone_mgmt(zone, ZoneOp::Reset)?;
            }
        }
        self.resync()?;
        Ok(())
    }

    fn finish(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if self.is_conv(zone) {
            return Err(self.violation(zone, "conventional zones cannot be finished"));
        }
        {
            let st = self.zones.lock();
            let z = st[zi];
            let (_, active) = Self::counts(&st);
            if !check_finish(z.cond, z.busy, active, self.geo.max_active)
                .map_err(|m| self.violation(zone, m))?
            {
                return Ok(());
            }
        }
        let r = self.zone_mgmt(zone, ZoneOp::Finish);
        if r.is_err() {
            self.resync()?;
        } else {
            let mut st = self.zones.lock();
            st[zi].cond = ZoneCond::Full;
            st[zi].wp = self.geo.zone_capacity;
        }
        r
    }

    fn reset(&self, zone: u32) -> Result<()> {
        let zi = self.check_zone(zone)?;
        if self.is_conv(zone) {
            return Err(self.violation(zone, "conventional zones cannot be reset"));
        }
        {
            let st = self.zones.lock();
            let z = st[zi];
            if z.busy {
                return Err(self.violation(zone, "a write is in flight"));
            }
            match z.cond {
                ZoneCond::ReadOnly | ZoneCond::Offline | ZoneCond::NotWp => {
                    return Err(
                        self.violation(zone, format!("cannot reset a zone in state {:?}", z.cond))
                    )
                }
                _ => {}
            }
        }
        let r = self.zone_mgmt(zone, ZoneOp::Reset);
        if r.is_err() {
            self.resync()?;
        } else {
            let mut st = self.zones.lock();
            st[zi].cond = ZoneCond::Empty;
            st[zi].wp = 0;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert_eq!(cond_from_kernel(0xE), Some(ZoneCond::Full));
        assert_eq!(cond_from_kernel(0x2), Some(ZoneCond::ImplicitOpen));
        assert_eq!(cond_from_kernel(0xD), Some(ZoneCond::ReadOnly));
        assert_eq!(cond_from_kernel(0x7), None);
    }

    #[test]
    fn refuses_regular_file_and_dev_null() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = BlockZonedDevice::open(f.path()).unwrap_err().to_string();
        assert!(e.contains("is not a block device"), "{e}");
        let e = BlockZonedDevice::open("/dev/null").unwrap_err().to_string();
        assert!(e.contains("/dev/null is not a block device"), "{e}");
    }

    /// A real non-zoned block device (a loop device: the node exists on any
    /// host with the loop driver, attached or not) gets the clear error.
    #[test]
    fn refuses_non_zoned_block_device() {
        let e = BlockZonedDevice::open("/dev/loop0")
            .expect_err("/dev/loop0 must not open as a zoned device")
            .to_string();
        assert_eq!(
            e,
            "invalid argument: /dev/loop0 is not a zoned block device (queue/zoned=none): \
             use a dir: or zoned-file: store"
        );
    }
}
