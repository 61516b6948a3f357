//! The zoned-device trait: exactly what a host-managed zoned drive offers
//! (cf. `linux/blkzoned.h` and the NVMe ZNS command set), nothing more.
//!
//! Rules every implementation enforces (and the conformance suite checks):
//! - sequential zones accept writes only at their write pointer, in multiples
//!   of the device's write granularity, and never past the zone capacity;
//! - a write moves an empty or closed zone to implicitly open; at most
//!   `max_open` zones are open (implicitly or explicitly) and at most
//!   `max_active` are open or closed (0 = no limit); a write that would break
//!   a limit fails with [`crate::Error::ZoneViolation`];
//! - `finish` makes a zone full (write pointer to its end), `reset` makes it
//!   empty, `close` moves an open zone to closed (still active);
//! - reads anywhere below the write pointer return what was written; reads at
//!   or above it are refused;
//! - conventional zones (if any) have no write pointer and accept writes
//!   anywhere.

use crate::Result;

/// Kind of zone, as reported by the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneType {
    /// Random-write zone without a write pointer.
    Conventional,
    /// Sequential-write-required zone (host-managed).
    SequentialRequired,
}

/// Zone condition (state machine of ZNS / blkzoned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneCond {
    /// Conventional zone (no state).
    NotWp,
    Empty,
    ImplicitOpen,
    ExplicitOpen,
    Closed,
    Full,
    ReadOnly,
    Offline,
}

impl ZoneCond {
    /// Open zones count against `max_open`.
    pub fn is_open(self) -> bool {
        matches!(self, ZoneCond::ImplicitOpen | ZoneCond::ExplicitOpen)
    }
    /// Open or closed zones count against `max_active`.
    pub fn is_active(self) -> bool {
        self.is_open() || self == ZoneCond::Closed
    }
}

/// One zone as reported by `report_zones`. All positions in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    pub index: u32,
    /// Byte offset of the zone's start on the device.
    pub start: u64,
    /// Zone size (distance between zone starts).
    pub len: u64,
    /// Writable capacity (<= len).
    pub capacity: u64,
    /// Write pointer, relative to `start` (bytes written into the zone).
    pub wp: u64,
    pub zone_type: ZoneType,
    pub cond: ZoneCond,
}

/// Static geometry of a zoned device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZonedGeometry {
    pub zone_size: u64,
    pub zone_capacity: u64,
    pub nr_zones: u32,
    /// Number of leading conventional zones.
    pub nr_conventional: u32,
    /// 0 = unlimited.
    pub max_open: u32,
    /// 0 = unlimited.
    pub max_active: u32,
    /// Smallest write unit and alignment, in bytes (4096 here).
    pub write_granularity: u32,
}

/// The admission rules for a write of `len` bytes at `offset` into a
/// sequential zone in condition `cond` with write pointer `wp`: no other
/// write in flight, the zone writable (not full, read-only or offline), the
/// write at the write pointer and within `capacity`. Returns the broken rule,
/// for the implementation's [`crate::Error::ZoneViolation`]. Shared by every
/// implementation so the emulation and real devices refuse alike.
pub fn check_append(
    cond: ZoneCond,
    busy: bool,
    wp: u64,
    offset: u64,
    len: u64,
    capacity: u64,
) -> std::result::Result<(), String> {
    if busy {
        return Err("another write is in flight".into());
    }
    match cond {
        ZoneCond::Full => return Err("zone is full".into()),
        ZoneCond::ReadOnly | ZoneCond::Offline | ZoneCond::NotWp => {
            return Err(format!("zone is {cond:?}"))
        }
        _ => {}
    }
    if offset != wp {
        return Err(format!(
            "write at {offset} is not at the write pointer {wp}"
        ));
    }
    if offset.checked_add(len).is_none_or(|e| e > capacity) {
        return Err(format!(
            "write of {len} bytes at {offset} runs past the zone capacity {capacity}"
        ));
    }
    Ok(())
}

/// Open and active zone counts over the zones' conditions, for the
/// max_open / max_active limits.
pub fn open_active_counts(conds: impl IntoIterator<Item = ZoneCond>) -> (u32, u32) {
    conds.into_iter().fold((0, 0), |(open, active), c| {
        (open + c.is_open() as u32, active + c.is_active() as u32)
    })
}

/// The admission rules for finishing a sequential zone in condition `cond`:
/// no write in flight; a full zone needs nothing (`Ok(false)`); an empty zone
/// becomes active, so `active` (zones active now) must be below `max_active`
/// (0 = unlimited); open and closed zones may be finished (`Ok(true)`); any
/// other condition is refused. Shared like [`check_append`].
pub fn check_finish(
    cond: ZoneCond,
    busy: bool,
    active: u32,
    max_active: u32,
) -> std::result::Result<bool, String> {
    if busy {
        return Err("a write is in flight".into());
    }
    match cond {
        ZoneCond::Full => Ok(false),
        ZoneCond::Empty if max_active != 0 && active >= max_active => {
            Err(format!("max_active {max_active} zones already active"))
        }
        ZoneCond::Empty | ZoneCond::ImplicitOpen | ZoneCond::ExplicitOpen | ZoneCond::Closed => {
            Ok(true)
        }
        c => Err(format!("cannot finish a zone in state {c:?}")),
    }
}

/// A host-managed zoned block device.
pub trait ZonedDevice: Send + Sync + std::fmt::Debug {
    fn geometry(&self) -> ZonedGeometry;
    /// Human-readable description (`zoned-file:/path`, `/dev/nvme0n1`).
    fn describe(&self) -> String;
    /// Current state of all zones.
    fn report_zones(&self) -> Result<Vec<ZoneInfo>>;
    /// Write `data` at byte `offset` within zone `zone`. For sequential zones
    /// `offset` must equal the write pointer. Durable on return.
    fn write(&self, zone: u32, offset: u64, data: &[u8]) -> Result<()>;
    /// Read `buf.len()` bytes at `offset` within `zone` (below the wp).
    fn read(&self, zone: u32, offset: u64, buf: &mut [u8]) -> Result<()>;
    fn open(&self, zone: u32) -> Result<()>;
    fn close(&self, zone: u32) -> Result<()>;
    fn finish(&self, zone: u32) -> Result<()>;
    fn reset(&self, zone: u32) -> Result<()>;
}
