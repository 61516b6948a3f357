//! The zoned block device ioctls of `linux/blkzoned.h`, through libc.
//!
//! Every position these ioctls take or return is in 512-byte sectors,
//! whatever the device's logical block size. The structs mirror the kernel's
//! layout exactly (checked against the installed header by the tests).

use std::io;
use std::os::fd::RawFd;

/// Bytes per sector in every blkzoned ioctl.
pub const SECTOR: u64 = 512;

/// `BLK_ZONE_TYPE_CONVENTIONAL`
pub const BLK_ZONE_TYPE_CONVENTIONAL: u8 = 0x1;
/// `BLK_ZONE_TYPE_SEQWRITE_REQ`
pub const BLK_ZONE_TYPE_SEQWRITE_REQ: u8 = 0x2;
/// `BLK_ZONE_TYPE_SEQWRITE_PREF` (host-aware; refused by this backend).
pub const BLK_ZONE_TYPE_SEQWRITE_PREF: u8 = 0x3;

pub const BLK_ZONE_COND_NOT_WP: u8 = 0x0;
pub const BLK_ZONE_COND_EMPTY: u8 = 0x1;
pub const BLK_ZONE_COND_IMP_OPEN: u8 = 0x2;
pub const BLK_ZONE_COND_EXP_OPEN: u8 = 0x3;
pub const BLK_ZONE_COND_CLOSED: u8 = 0x4;
pub const BLK_ZONE_COND_READONLY: u8 = 0xD;
pub const BLK_ZONE_COND_FULL: u8 = 0xE;
pub const BLK_ZONE_COND_OFFLINE: u8 = 0xF;

/// `BLK_ZONE_REP_CAPACITY`: set by the caller to ask for zone capacities;
/// set by the kernel in the reply when `capacity` is valid.
pub const BLK_ZONE_REP_CAPACITY: u32 = 1 << 0;

/// `struct blk_zone` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkZone {
    /// Zone start sector.
    pub start: u64,
    /// Zone length in sectors.
    pub len: u64,
    /// Write pointer position (absolute sector).
    pub wp: u64,
    pub zone_type: u8,
    pub cond: u8,
    pub non_seq: u8,
    pub reset: u8,
    pub resv: [u8; 4],
    /// Zone capacity in sectors (valid with `BLK_ZONE_REP_CAPACITY`).
    pub capacity: u64,
    pub reserved: [u8; 24],
}

/// `struct blk_zone_report` header (16 bytes), followed by `nr_zones`
/// [`BlkZone`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkZoneReport {
    pub sector: u64,
    pub nr_zones: u32,
    pub flags: u32,
}

/// `struct blk_zone_range` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkZoneRange {
    pub sector: u64,
    pub nr_sectors: u64,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0x12 << 8) | nr
}
const W: u64 = 1;
const R: u64 = 2;

/// `_IOWR(0x12, 130, struct blk_zone_report)`
pub const BLKREPORTZONE: u64 = ioc(R | W, 130, std::mem::size_of::<BlkZoneReport>());
/// `_IOW(0x12, 131, struct blk_zone_range)`
pub const BLKRESETZONE: u64 = ioc(W, 131, std::mem::size_of::<BlkZoneRange>());
/// `_IOR(0x12, 132, __u32)`
pub const BLKGETZONESZ: u64 = ioc(R, 132, 4);
/// `_IOR(0x12, 133, __u32)`
pub const BLKGETNRZONES: u64 = ioc(R, 133, 4);
/// `_IOW(0x12, 134, struct blk_zone_range)`
pub const BLKOPENZONE: u64 = ioc(W, 134, std::mem::size_of::<BlkZoneRange>());
/// `_IOW(0x12, 135, struct blk_zone_range)`
pub const BLKCLOSEZONE: u64 = ioc(W, 135, std::mem::size_of::<BlkZoneRange>());
/// `_IOW(0x12, 136, struct blk_zone_range)`
pub const BLKFINISHZONE: u64 = ioc(W, 136, std::mem::size_of::<BlkZoneRange>());

/// A zone management operation on a range of zones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneOp {
    Reset,
    Open,
    Close,
    Finish,
}

impl ZoneOp {
    fn request(self) -> u64 {
        match self {
            ZoneOp::Reset => BLKRESETZONE,
            ZoneOp::Open => BLKOPENZONE,
            ZoneOp::Close => BLKCLOSEZONE,
            ZoneOp::Finish => BLKFINISHZONE,
        }
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ZoneOp::Reset => "reset",
            ZoneOp::Open => "open",
            ZoneOp::Close => "close",
            ZoneOp::Finish => "finish",
        }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `BLKGETZONESZ`: zone size in sectors (0 for a device that is not zoned).
pub fn get_zone_size(fd: RawFd) -> io::Result<u32> {
    let mut v: u32 = 0;
    // SAFETY: the request writes one u32 through the pointer.
    check(unsafe { libc::ioctl(fd, BLKGETZONESZ as _, &mut v as *mut u32) })?;
    Ok(v)
}

/// `BLKGETNRZONES`: number of zones (0 for a device that is not zoned).
pub fn get_nr_zones(fd: RawFd) -> io::Result<u32> {
    let mut v: u32 = 0;
    // SAFETY: the request writes one u32 through the pointer.
    check(unsafe { libc::ioctl(fd, BLKGETNRZONES as _, &mut v as *mut u32) })?;
    Ok(v)
}

/// Zone management (`BLKRESETZONE`, `BLKOPENZONE`, `BLKCLOSEZONE`,
/// `BLKFINISHZONE`) on the zones covering `[sector, sector + nr_sectors)`.
pub fn zone_mgmt(fd: RawFd, op: ZoneOp, sector: u64, nr_sectors: u64) -> io::Result<()> {
    let range = BlkZoneRange { sector, nr_sectors };
    // SAFETY: the request reads one blk_zone_range through the pointer.
    check(unsafe { libc::ioctl(fd, op.request() as _, &range as *const BlkZoneRange) })
}

/// One `BLKREPORTZONE` call: up to `max` zones starting at the zone that
/// contains `sector`, asking for capacities. Returns the zones and whether
/// the kernel set `BLK_ZONE_REP_CAPACITY` (capacities valid).
pub fn report_zones(fd: RawFd, sector: u64, max: u32) -> io::Result<(Vec<BlkZone>, bool)> {
    let hdr = std::mem::size_of::<BlkZoneReport>();
    let zsz = std::mem::size_of::<BlkZone>();
    // u64 words keep the buffer 8-aligned for both structs.
    let words = (hdr + max as usize * zsz).div_ceil(8);
    let mut buf = vec![0u64; words];
    let rep = BlkZoneReport {
        sector,
        nr_zones: max,
        flags: BLK_ZONE_REP_CAPACITY,
    };
    // SAFETY: buf holds at least `hdr` bytes and is 8-aligned.
    unsafe { std::ptr::write(buf.as_mut_ptr() as *mut BlkZoneReport, rep) };
    // SAFETY: the kernel writes the header and at most `max` zones, which
    // fit in buf.
    check(unsafe { libc::ioctl(fd, BLKREPORTZONE as _, buf.as_mut_ptr()) })?;
    // SAFETY: header initialised above and updated by the kernel.
    let out = unsafe { std::ptr::read(buf.as_ptr() as *const BlkZoneReport) };
    let n = out.nr_zones.min(max) as usize;
    let base = buf.as_ptr() as *const u8;
    let zones = (0..n)
        // SAFETY: zone i lies inside buf (n <= max); read_unaligned copes
        // with any alignment.
        .map(|i| unsafe { std::ptr::read_unaligned(base.add(hdr + i * zsz) as *const BlkZone) })
        .collect();
    Ok((zones, out.flags & BLK_ZONE_REP_CAPACITY != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<BlkZone>(), 64);
        assert_eq!(offset_of!(BlkZone, start), 0);
        assert_eq!(offset_of!(BlkZone, len), 8);
        assert_eq!(offset_of!(BlkZone, wp), 16);
        assert_eq!(offset_of!(BlkZone, zone_type), 24);
        assert_eq!(offset_of!(BlkZone, cond), 25);
        assert_eq!(offset_of!(BlkZone, non_seq), 26);
        assert_eq!(offset_of!(BlkZone, reset), 27);
        assert_eq!(offset_of!(BlkZone, capacity), 32);
        assert_eq!(offset_of!(BlkZone, reserved), 40);
        assert_eq!(size_of::<BlkZoneReport>(), 16);
        assert_eq!(offset_of!(BlkZoneReport, nr_zones), 8);
        assert_eq!(offset_of!(BlkZoneReport, flags), 12);
        assert_eq!(size_of::<BlkZoneRange>(), 16);
        assert_eq!(BLKREPORTZONE, 0xC010_1282);
        assert_eq!(BLKRESETZONE, 0x4010_1283);
        assert_eq!(BLKGETZONESZ, 0x8004_1284);
        assert_eq!(BLKGETNRZONES, 0x8004_1285);
        assert_eq!(BLKOPENZONE, 0x4010_1286);
        assert_eq!(BLKCLOSEZONE, 0x4010_1287);
        assert_eq!(BLKFINISHZONE, 0x4010_1288);
    }

    /// Compile a C program against the installed `linux/blkzoned.h`
    /// (linux-libc-dev) and compare every number with ours.
    #[test]
    fn matches_kernel_header() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("z.c");
        let bin = dir.path().join("z");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stddef.h>
#include <linux/blkzoned.h>
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct blk_zone), offsetof(struct blk_zone, wp),
    offsetof(struct blk_zone, type), offsetof(struct blk_zone, capacity),
    sizeof(struct blk_zone_report), offsetof(struct blk_zone_report, flags), sizeof(struct blk_zone_range));
  printf("%lu %lu %lu %lu %lu %lu %lu\n", (unsigned long)BLKREPORTZONE, (unsigned long)BLKRESETZONE,
    (unsigned long)BLKGETZONESZ, (unsigned long)BLKGETNRZONES, (unsigned long)BLKOPENZONE,
    (unsigned long)BLKCLOSEZONE, (unsigned long)BLKFINISHZONE);
  printf("%d %d %d %d %d %d %d %d %d %d %d %d\n", BLK_ZONE_TYPE_CONVENTIONAL, BLK_ZONE_TYPE_SEQWRITE_REQ,
    BLK_ZONE_TYPE_SEQWRITE_PREF, BLK_ZONE_COND_NOT_WP, BLK_ZONE_COND_EMPTY, BLK_ZONE_COND_IMP_OPEN,
    BLK_ZONE_COND_EXP_OPEN, BLK_ZONE_COND_CLOSED, BLK_ZONE_COND_READONLY, BLK_ZONE_COND_FULL,
    BLK_ZONE_COND_OFFLINE, BLK_ZONE_REP_CAPACITY);
  return 0;
}
"#,
        )
        .unwrap();
        let st = std::process::Command::new("cc")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("cc is needed to check the ioctl numbers against linux/blkzoned.h");
        assert!(st.success(), "compiling against linux/blkzoned.h failed");
        let out = std::process::Command::new(&bin).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Vec<u64>> = text
            .lines()
            .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
            .collect();
        assert_eq!(
            lines[0],
            vec![
                size_of::<BlkZone>() as u64,
                offset_of!(BlkZone, wp) as u64,
                offset_of!(BlkZone, zone_type) as u64,
                offset_of!(BlkZone, capacity) as u64,
                size_of::<BlkZoneReport>() as u64,
                offset_of!(BlkZoneReport, flags) as u64,
                size_of::<BlkZoneRange>() as u64,
            ]
        );
        assert_eq!(
            lines[1],
            vec![
                BLKREPORTZONE,
                BLKRESETZONE,
                BLKGETZONESZ,
                BLKGETNRZONES,
                BLKOPENZONE,
                BLKCLOSEZONE,
                BLKFINISHZONE
            ]
        );
        let c = |v: u8| v as u64;
        assert_eq!(
            lines[2],
            vec![
                c(BLK_ZONE_TYPE_CONVENTIONAL),
                c(BLK_ZONE_TYPE_SEQWRITE_REQ),
                c(BLK_ZONE_TYPE_SEQWRITE_PREF),
                c(BLK_ZONE_COND_NOT_WP),
                c(BLK_ZONE_COND_EMPTY),
                c(BLK_ZONE_COND_IMP_OPEN),
                c(BLK_ZONE_COND_EXP_OPEN),
                c(BLK_ZONE_COND_CLOSED),
                c(BLK_ZONE_COND_READONLY),
                c(BLK_ZONE_COND_FULL),
                c(BLK_ZONE_COND_OFFLINE),
                BLK_ZONE_REP_CAPACITY as u64,
            ]
        );
    }

    #[test]
    fn not_zoned_on_regular_file() {
        use std::os::fd::AsRawFd;
        let f = tempfile::tempfile().unwrap();
        // Not a block device: the kernel refuses the zone ioctls.
        assert!(get_zone_size(f.as_raw_fd()).is_err());
        assert!(report_zones(f.as_raw_fd(), 0, 4).is_err());
    }
}
