//! `ZonedStore`: a [`SegmentStore`] over any [`ZonedDevice`].
//!
//! Layout (see `FORMAT.md`, section "Zoned store layout"):
//! - **metadata log**: two areas A/B used alternately. With conventional
//!   zones: zone 0 and zone 1 (or the two halves of zone 0 if there is only
//!   one); without: the first two sequential zones. Records
//!   `{magic, version, kind, name, epoch, payload, crc32c}` padded to 4096 are
//!   appended; the latest record per name wins; deletes are tombstones. When
//!   the active area is full, every live record is copied into the other area
//!   under a new epoch, followed by a `Commit` record; only then is the old
//!   area reset. An area counts only if it holds a `Commit` record; the
//!   committed area with the highest epoch is the active one.
//! - **data zones**: all other zones. Each segment is stored as a 4096-byte
//!   placement header `{LSVDZSEG, version, seq, len, write_id, store uuid,
//!   crc32c}` followed by the segment bytes, never straddling the zone
//!   capacity. Open rebuilds `seq -> (zone, offset, len)` by walking each
//!   zone from its start to its write pointer and stops at the first bad
//!   placement header (torn tail: that space is dead and the zone is
//!   finished).
//! - **deletions** are durable `SegDead {seq, write_id}` records in the
//!   metadata log (so a deleted segment does not come back on reopen); a
//!   zone is reset once every segment in it is dead, and its tombstones are
//!   dropped at the next compaction. `write_id` is unique per physical write,
//!   so a tombstone can never kill a later segment that reuses a seq.
//!
//! # Invariants
//! - At most `data_open_limit()` data zones take appends (one writer each),
//!   chosen so that data zones + metadata zones stay within the device's
//!   `max_open` and `max_active` even while the metadata log compacts.
//! - Lock order: `inner` before `meta`; device I/O for segment data runs
//!   without either lock held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

use super::device::{ZoneCond, ZoneInfo, ZoneType, ZonedDevice, ZonedGeometry};
use crate::store::check_meta_name;
use crate::store::{Media, SegmentEntry, SegmentStore, SpaceInfo};
use crate::{Error, Result};

/// Magic of a segment placement header.
pub const PLACEMENT_MAGIC: &[u8; 8] = b"LSVDZSEG";
/// Magic of a metadata log record.
pub const META_MAGIC: &[u8; 8] = b"LSVDZMET";
/// Version of placement headers and metadata records.
pub const ZONED_STORE_VERSION: u32 = 1;
/// Bytes of the placement header before each segment.
pub const PLACEMENT_LEN: u64 = 4096;

const BLOCK: u64 = 4096;
const PH_CRC_OFF: usize = 56;
const REC_FIXED: usize = 32;

const KIND_PUT: u16 = 1;
const KIND_DELETE: u16 = 2;
const KIND_SEG_DEAD: u16 = 3;
const KIND_COMMIT: u16 = 4;
const KIND_ZONE_MAP: u16 = 5;
const KIND_ZONE_RESET: u16 = 6;
const KIND_ZONE_TAIL: u16 = 7;

use super::le::{round_up, u16_at, u32_at, u64_at};

/// Encode the placement header of a segment.
fn encode_placement(seq: u64, len: u64, write_id: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(BLOCK as usize);
    b.extend_from_slice(PLACEMENT_MAGIC);
    b.extend_from_slice(&ZONED_STORE_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&write_id.to_le_bytes());
    b.extend_from_slice(uuid);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(BLOCK as usize, 0);
    b
}

/// Decode a placement header; `None` if it is not a valid one of this store.
fn decode_placement(b: &[u8], uuid: &[u8; 16]) -> Option<(u64, u64, u64)> {
    if b.len() < PH_CRC_OFF + 4 || &b[0..8] != PLACEMENT_MAGIC {
        return None;
    }
    if crc32c::crc32c(&b[..PH_CRC_OFF]) != u32_at(b, PH_CRC_OFF) {
        return None;
    }
    if u32_at(b, 8) != ZONED_STORE_VERSION || &b[40..56] != uuid {
        return None;
    }
    Some((u64_at(b, 16), u64_at(b, 24), u64_at(b, 32)))
}

fn encode_record(kind: u16, name: &str, epoch: u64, payload: &[u8]) -> Vec<u8> {
    let body = REC_FIXED + name.len() + payload.len();
    let mut b = Vec::with_capacity(round_up(body as u64 + 4, BLOCK) as usize);
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&ZONED_STORE_VERSION.to_le_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(payload);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(round_up(b.len() as u64, BLOCK) as usize, 0);
    b
}

fn record_len(name_len: usize, payload_len: usize) -> u64 {
    round_up((REC_FIXED + name_len + payload_len + 4) as u64, BLOCK)
}

/// One metadata area (half of the log).
#[derive(Clone, Copy, Debug)]
struct Area {
    zone: u32,
    start: u64,
    len: u64,
    sequential: bool,
}

/// Where a live blob's record sits in the active area.
#[derive(Clone, Copy, Debug)]
struct BlobLoc {
    rec_off: u64,
    rec_len: u64,
}

#[derive(Debug)]
struct MetaLog {
    areas: [Area; 2],
    active: usize,
    epoch: u64,
    max_epoch: u64,
    tail: u64,
    blobs: BTreeMap<String, BlobLoc>,
    /// Live segment tombstones: (seq, write_id) -> zone.
    tombs: HashMap<(u64, u64), u32>,
    /// Durable write frontier per non-empty data zone, as the log records it
    /// (the last zone-map record, minus zones reset since). The device's
    /// write pointers can only be at or past these; open refuses otherwise.
    recorded: BTreeMap<u32, u64>,
    /// Zones finished after a torn write: where their valid segments end.
    /// Finishing moves the write pointer to the capacity, so without this a
    /// later open would take the torn segment's intact placement header for
    /// a complete segment. Dropped when the zone is reset.
    tails: BTreeMap<u32, u64>,
}

/// A record found while scanning an area.
#[derive(Debug)]
enum Rec {
    Put { name: String, loc: BlobLoc },
    Delete { name: String },
    SegDead { seq: u64, write_id: u64, zone: u32 },
    Commit,
    ZoneMap(BTreeMap<u32, u64>),
    ZoneReset(u32),
    ZoneTail(u32, u64),
}

#[derive(Debug, Default)]
struct AreaScan {
    epoch: Option<u64>,
    recs: Vec<Rec>,
    end: u64,
    committed: Option<[u8; 16]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZState {
    Free,
    Open,
    Full,
}

#[derive(Clone, Copy, Debug)]
struct DZone {
    state: ZState,
    wp: u64,
    busy: bool,
    live: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegLoc {
    zone: u32,
    off: u64,
    len: u64,
    write_id: u64,
}

#[derive(Debug)]
struct Inner {
    segs: BTreeMap<u64, SegLoc>,
    /// Indexed by `zone - first_data`.
    zones: Vec<DZone>,
    open: Vec<u32>,
    pending: HashSet<u64>,
    next_write_id: u64,
}

type DestroyHook = Box<dyn FnOnce() -> Result<()> + Send>;

/// Segment store over a zoned device. See the module docs.
pub struct ZonedStore<D: ZonedDevice> {
    dev: D,
    geo: ZonedGeometry,
    uuid: [u8; 16],
    first_data: u32,
    data_open: usize,
    inner: Mutex<Inner>,
    cv: Condvar,
    meta: Mutex<MetaLog>,
    destroyed: AtomicBool,
    destroy_hook: Mutex<Option<DestroyHook>>,
}

impl<D: ZonedDevice> std::fmt::Debug for ZonedStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZonedStore")
            .field("dev", &self.dev)
            .field("first_data", &self.first_data)
            .field("data_open", &self.data_open)
            .finish_non_exhaustive()
    }
}

/// Metadata areas and first data zone for a geometry.
fn layout(geo: &ZonedGeometry) -> Result<([Area; 2], u32)> {
    let bad = |m: String| Err(Error::InvalidArgument(format!("zoned store: {m}")));
    if geo.write_granularity as u64 > BLOCK || !BLOCK.is_multiple_of(geo.write_granularity as u64) {
        return bad(format!(
            "write granularity {} does not divide 4096",
            geo.write_granularity
        ));
    }
    let (areas, first_data) = match geo.nr_conventional {
        0 => {
            let a = |z| Area {
                zone: z,
                start: 0,
                len: geo.zone_capacity,
                sequential: true,
            };
            ([a(0), a(1)], 2)
        }
        1 => {
            let half = geo.zone_size / 2 / BLOCK * BLOCK;
            let a = |s| Area {
                zone: 0,
                start: s,
                len: half,
                sequential: false,
            };
            ([a(0), a(half)], 1)
        }
        n => {
            let a = |z| Area {
                zone: z,
                start: 0,
                len: geo.zone_size,
                sequential: false,
            };
            ([a(0), a(1)], n)
        }
    };
    if first_data >= geo.nr_zones {
        return bad(format!(
            "device has {} zones, need at least {} (metadata + 1 data zone)",
            geo.nr_zones,
            first_data + 1
        ));
    }
    if areas[0].len < 2 * BLOCK || geo.zone_capacity < 2 * BLOCK {
        return bad("zones are too small".into());
    }
    Ok((areas, first_data))
}

/// How many data zones may take appends at once, within the device limits.
fn data_open_limit(geo: &ZonedGeometry, areas: &[Area; 2], first_data: u32) -> Result<usize> {
    let seq_meta = areas[0].sequential;
    let (meta_active, meta_open) = if seq_meta { (2u32, 1u32) } else { (0, 0) };
    let lim = |max: u32, meta: u32| -> Option<usize> {
        if max == 0 {
            Some(usize::MAX)
        } else {
            max.checked_sub(meta).map(|v| v as usize)
        }
    };
    let n = [
        2,
        (geo.nr_zones - first_data) as usize,
        lim(geo.max_active, meta_active).unwrap_or(0),
        lim(geo.max_open, meta_open).unwrap_or(0),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    if n == 0 {
        return Err(Error::InvalidArgument(format!(
            "zoned store: device limits max_open {} / max_active {} leave no zone for data",
            geo.max_open, geo.max_active
        )));
    }
    Ok(n)
}

impl<D: ZonedDevice> ZonedStore<D> {
    /// Format a new store on `dev`. Refuses ([`Error::Exists`]) a device with
    /// non-empty sequential zones or an existing store's metadata; use
    /// [`ZonedStore::format`] to erase first.
    pub fn create(dev: D) -> Result<Self> {
        let geo = dev.geometry();
        let (areas, _) = layout(&geo)?;
        let zones = dev.report_zones()?;
        // Another image's store, or data lsvd does not know: never
        // overwritten unless the caller erases first (`format`, --force).
        for a in &areas {
            if let Some(uuid) = scan_area(&dev, a, &zones)?.committed {
                return Err(Error::Exists(format!(
                    "{} holds an lsvd zoned store (store {}), probably another image's; \
                     refusing to overwrite it (--force erases the zones)",
                    dev.describe(),
                    uuid::Uuid::from_bytes(uuid)
                )));
            }
        }
        if let Some(z) = zones
            .iter()
            .find(|z| z.zone_type == ZoneType::SequentialRequired && z.cond != ZoneCond::Empty)
        {
            return Err(Error::Exists(format!(
                "{}: zone {} is not empty ({:?}, wp {}) and holds data that is not an lsvd \
                 store; refusing to overwrite it (--force erases the zones)",
                dev.describe(),
                z.index,
                z.cond,
                z.wp
            )));
        }
        Self::write_initial(&dev, &areas)?;
        Self::open(dev)
    }

    /// Erase every zone of `dev` (reset sequential zones, invalidate the
    /// metadata areas) and create a new store.
    pub fn format(dev: D) -> Result<Self> {
        let geo = dev.geometry();
        let (areas, _) = layout(&geo)?;
        erase(&dev, &areas)?;
        Self::create(dev)
    }

    fn write_initial(dev: &D, areas: &[Area; 2]) -> Result<()> {
        let uuid = *uuid::Uuid::new_v4().as_bytes();
        if !areas[0].sequential {
            let zero = vec![0u8; BLOCK as usize];
            dev.write(areas[1].zone, areas[1].start, &zero)?;
        }
        // Each store starts at its own epoch: a scan stops at the first
        // record of another epoch, so records an earlier store left behind
        // its first block (conventional areas are not reset) never count.
        let mut e = [0u8; 8];
        e.copy_from_slice(&uuid[..8]);
        let epoch = (u64::from_le_bytes(e) >> 2).max(1);
        let rec = encode_record(KIND_COMMIT, "", epoch, &uuid);
        dev.write(areas[0].zone, areas[0].start, &rec)?;
        if areas[0].sequential {
            dev.close(areas[0].zone)?;
        }
        Ok(())
    }

    /// Open the store on `dev`: rebuild metadata and the segment index,
    /// finish zones with torn tails, reset zones whose segments are all dead.
    pub fn open(dev: D) -> Result<Self> {
        let geo = dev.geometry();
        let (areas, first_data) = layout(&geo)?;
        let data_open = data_open_limit(&geo, &areas, first_data)?;
        let zones = dev.report_zones()?;
        if zones.len() != geo.nr_zones as usize {
            return Err(Error::corrupt(
                dev.describe(),
                format!(
                    "report_zones returned {} zones, geometry says {}",
                    zones.len(),
                    geo.nr_zones
                ),
            ));
        }

        // --- metadata log
        let scans = [
            scan_area(&dev, &areas[0], &zones)?,
            scan_area(&dev, &areas[1], &zones)?,
        ];
        let max_epoch = scans.iter().filter_map(|s| s.epoch).max().unwrap_or(0);
        let active = match (scans[0].committed, scans[1].committed) {
            (None, None) => {
                if scans.iter().all(|s| s.recs.is_empty()) {
                    let all_empty = zones.iter().all(|z| {
                        z.zone_type == ZoneType::Conventional || z.cond == ZoneCond::Empty
                    });
                    let why = if all_empty && !areas[0].sequential {
                        " (no metadata in the conventional zones)"
                    } else if all_empty {
                        " (every zone is empty: a new or reset device; a QEMU restart forgets \
                         zone state, so an image that lived here is gone from the device's view)"
                    } else {
                        " (the zones hold data that is not an lsvd zoned store)"
                    };
                    return Err(Error::NotFound(format!(
                        "no lsvd zoned store on {}{why}",
                        dev.describe()
                    )));
                }
                return Err(Error::corrupt(
                    format!("zoned store metadata on {}", dev.describe()),
                    "no committed metadata area",
                ));
            }
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (Some(_), Some(_)) => {
                if scans[1].epoch > scans[0].epoch {
                    1
                } else {
                    0
                }
            }
        };
        let [s0, s1] = scans;
        let (scan, other) = if active == 0 { (s0, s1) } else { (s1, s0) };
        let uuid = scan.committed.unwrap_or_default();
        let mut meta = MetaLog {
            areas,
            active,
            epoch: scan.epoch.unwrap_or(1),
            max_epoch,
            tail: scan.end,
            blobs: BTreeMap::new(),
            tombs: HashMap::new(),
            recorded: BTreeMap::new(),
            tails: BTreeMap::new(),
        };
        for r in scan.recs {
            match r {
                Rec::Put { name, loc } => {
                    meta.blobs.insert(name, loc);
                }
                Rec::Delete { name } => {
                    meta.blobs.remove(&name);
                }
                Rec::SegDead {
                    seq,
                    write_id,
                    zone,
                } => {
                    meta.tombs.insert((seq, write_id), zone);
                }
                Rec::Commit => {}
                Rec::ZoneMap(map) => meta.recorded = map,
                Rec::ZoneReset(zone) => {
                    meta.recorded.remove(&zone);
                    meta.tails.remove(&zone);
                }
                Rec::ZoneTail(zone, end) => {
                    meta.tails.insert(zone, end);
                }
            }
        }
        // Before anything is written: the device must hold at least what the
        // log says was durably written in every data zone.
        check_frontier(&dev, &zones, &meta.recorded, first_data)?;
        let a = areas[active];
        let torn_meta = a.sequential && zone_wp(&zones, a.zone) != scan.end;
        let oa = areas[1 - active];
        if oa.sequential && zone_cond(&zones, oa.zone) != ZoneCond::Empty {
            dev.reset(oa.zone)?;
        }
        drop(other);

        // --- data zones
        let nd = (geo.nr_zones - first_data) as usize;
        let mut dz = vec![
            DZone {
                state: ZState::Free,
                wp: 0,
                busy: false,
                live: 0,
            };
            nd
        ];
        let mut found: Vec<(u64, SegLoc)> = Vec::new();
        let mut torn: Vec<(u32, u64)> = Vec::new();
        let mut max_wid = meta.tombs.keys().map(|k| k.1).max().unwrap_or(0);
        for (i, d) in dz.iter_mut().enumerate() {
            let zone = first_data + i as u32;
            let zi = &zones[zone as usize];
            if zi.cond == ZoneCond::Empty {
                continue;
            }
            d.wp = zi.wp;
            d.state = if zi.cond == ZoneCond::Full {
                ZState::Full
            } else {
                ZState::Open
            };
            let mut off = 0u64;
            let mut hb = vec![0u8; BLOCK as usize];
            // A zone finished after a torn write: valid segments end at its tail.
            let limit = meta.tails.get(&zone).map_or(zi.wp, |&t| t.min(zi.wp));
            while off + PLACEMENT_LEN <= limit {
                dev.read(zone, off, &mut hb)?;
                let Some((seq, len, wid)) = decode_placement(&hb, &uuid) else {
                    break;
                };
                if len % BLOCK != 0 || off + PLACEMENT_LEN + len > limit {
                    break;
                }
                max_wid = max_wid.max(wid);
                found.push((
                    seq,
                    SegLoc {
                        zone,
                        off,
                        len,
                        write_id: wid,
                    },
                ));
                off += PLACEMENT_LEN + len;
            }
            if off != zi.wp && zi.cond != ZoneCond::Full {
                tracing::warn!(dev = %dev.describe(), zone, at = off, wp = zi.wp, "torn tail in data zone; finishing it");
                torn.push((zone, off));
            }
        }
        let mut segs: BTreeMap<u64, SegLoc> = BTreeMap::new();
        let mut dups: Vec<(u64, SegLoc)> = Vec::new();
        found.sort_by_key(|(s, l)| (*s, l.zone, l.off));
        for (seq, loc) in found {
            if meta.tombs.contains_key(&(seq, loc.write_id)) {
                continue;
            }
            if segs.contains_key(&seq) {
                dups.push((seq, loc));
                continue;
            }
            dz[(loc.zone - first_data) as usize].live += 1;
            segs.insert(seq, loc);
        }
        let store = ZonedStore {
            geo,
            uuid,
            first_data,
            data_open,
            inner: Mutex::new(Inner {
                segs,
                zones: dz,
                open: Vec::new(),
                pending: HashSet::new(),
                next_write_id: max_wid + 1,
            }),
            cv: Condvar::new(),
            meta: Mutex::new(meta),
            destroyed: AtomicBool::new(false),
            destroy_hook: Mutex::new(None),
            dev,
        };
        {
            let mut m = store.meta.lock();
            // Tombstones of segments in zones reset since (still in the log)
            // match nothing; they go away at the next compaction.
            if torn_meta {
                tracing::warn!(dev = %store.dev.describe(), "torn metadata tail; compacting");
                store.compact(&mut m)?;
            }
            // A duplicate copy of a seq (a write that failed after reaching
            // the medium, then retried) is made dead durably.
            for (seq, loc) in &dups {
                let p = seg_dead_payload(*seq, loc.write_id, loc.zone);
                store.append_meta(&mut m, KIND_SEG_DEAD, "", &p, None)?;
                m.tombs.insert((*seq, loc.write_id), loc.zone);
            }
        }
        {
            let mut g = store.inner.lock();
            for (zone, end) in torn {
                // Durably first: a crash before the finish scans the same.
                {
                    let mut m = store.meta.lock();
                    let p = zone_tail_payload(zone, end);
                    store.append_meta(&mut m, KIND_ZONE_TAIL, "", &p, None)?;
                    m.tails.insert(zone, end);
                }
                store.dev.finish(zone)?;
                let d = &mut g.zones[(zone - first_data) as usize];
                d.state = ZState::Full;
                d.wp = geo.zone_capacity;
            }
            for i in 0..nd {
                let zone = first_data + i as u32;
                let d = g.zones[i];
                if d.state != ZState::Free && d.live == 0 {
                    store.reset_zone(&mut g, zone)?;
                }
            }
            // Adopt partially written zones as append zones, finish the rest.
            let mut candidates: Vec<u32> = (0..nd)
                .filter(|&i| g.zones[i].state == ZState::Open)
                .map(|i| first_data + i as u32)
                .collect();
            candidates.sort_by_key(|&z| std::cmp::Reverse(g.zones[(z - first_data) as usize].wp));
            for (k, zone) in candidates.into_iter().enumerate() {
                if k < data_open {
                    g.open.push(zone);
                } else {
                    store.finish_zone(&mut g, zone)?;
                }
            }
        }
        Ok(store)
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Give the device back (e.g. to reopen it in a test).
    pub fn into_device(self) -> D {
        self.dev
    }

    /// Store identity (random at create, in the first metadata record and in
    /// every placement header).
    pub fn store_uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// Maximum number of data zones taking appends at once.
    pub fn data_open_limit(&self) -> usize {
        self.data_open
    }

    /// Largest segment (bytes) that fits in one zone.
    pub fn max_segment_len(&self) -> u64 {
        self.geo.zone_capacity - PLACEMENT_LEN
    }

    /// Run `hook` at the end of a successful [`SegmentStore::destroy`] (e.g.
    /// delete the emulated zoned file).
    pub fn set_destroy_hook(&self, hook: impl FnOnce() -> Result<()> + Send + 'static) {
        *self.destroy_hook.lock() = Some(Box::new(hook));
    }

    fn check_alive(&self) -> Result<()> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(Error::Unavailable(format!(
                "{} was destroyed",
                self.dev.describe()
            )));
        }
        Ok(())
    }

    fn dz_idx(&self, zone: u32) -> usize {
        (zone - self.first_data) as usize
    }

    /// Finish data zone `zone` (no more appends); reset it if nothing in it
    /// is live.
    fn finish_zone(&self, g: &mut Inner, zone: u32) -> Result<()> {
        g.open.retain(|&z| z != zone);
        let i = self.dz_idx(zone);
        if g.zones[i].live == 0 {
            return self.reset_zone(g, zone);
        }
        self.dev.finish(zone)?;
        g.zones[i].state = ZState::Full;
        g.zones[i].wp = self.geo.zone_capacity;
        Ok(())
    }

    /// Reset data zone `zone` (all its segments are dead) and drop the
    /// tombstones that pointed into it.
    fn reset_zone(&self, g: &mut Inner, zone: u32) -> Result<()> {
        g.open.retain(|&z| z != zone);
        {
            // The log must know before the device does: a crash between the
            // two then leaves a zone ahead of its record, never behind it.
            let mut m = self.meta.lock();
            if m.recorded.contains_key(&zone) || m.tails.contains_key(&zone) {
                self.append_meta(&mut m, KIND_ZONE_RESET, "", &zone.to_le_bytes(), None)?;
                m.recorded.remove(&zone);
                m.tails.remove(&zone);
            }
        }
        self.dev.reset(zone)?;
        let i = self.dz_idx(zone);
        g.zones[i] = DZone {
            state: ZState::Free,
            wp: 0,
            busy: false,
            live: 0,
        };
        self.meta.lock().tombs.retain(|_, z| *z != zone);
        tracing::debug!(dev = %self.dev.describe(), zone, "zone reset");
        Ok(())
    }

    /// Append one record `{kind, name, payload}` to the active metadata
    /// area under its current epoch, compacting first if it does not fit.
    /// `replaces` is the blob whose old record the new one supersedes (not
    /// counted as live when checking room). Returns (offset, record length).
    fn append_meta(
        &self,
        m: &mut MetaLog,
        kind: u16,
        name: &str,
        payload: &[u8],
        replaces: Option<&str>,
    ) -> Result<(u64, u64)> {
        let rlen = record_len(name.len(), payload.len());
        let alen = m.areas[m.active].len;
        if rlen + BLOCK > alen {
            return Err(Error::NoSpace(format!(
                "{}: metadata record {name:?} of {rlen} bytes is larger than a metadata area ({alen} bytes)",
                self.dev.describe()
            )));
        }
        if m.tail + rlen > alen {
            let old = replaces
                .and_then(|n| m.blobs.get(n))
                .map_or(0, |l| l.rec_len);
            let live = live_meta_bytes(m) - old;
            if live + rlen > alen {
                return Err(Error::NoSpace(format!(
                    "{}: metadata area full ({live} live bytes + {rlen} for {name:?} > {alen})",
                    self.dev.describe()
                )));
            }
            self.compact(m)?;
        }
        let rec = encode_record(kind, name, m.epoch, payload);
        let a = m.areas[m.active];
        let off = m.tail;
        self.dev.write(a.zone, a.start + off, &rec)?;
        m.tail += rlen;
        if a.sequential && m.tail < a.len {
            if let Err(e) = self.dev.close(a.zone) {
                tracing::warn!(error = %e, zone = a.zone, "closing metadata zone failed");
            }
        }
        Ok((off, rlen))
    }

    /// Copy every live record into the other area under a new epoch, then
    /// commit and reset the old area.
    fn compact(&self, m: &mut MetaLog) -> Result<()> {
        let src = m.areas[m.active];
        let dst_i = 1 - m.active;
        let dst = m.areas[dst_i];
        let epoch = m.max_epoch + 1;
        if dst.sequential {
            self.dev.reset(dst.zone)?;
        }
        let mut out: Vec<u8> = Vec::new();
        let mut off = 0u64;
        let mut new_blobs = BTreeMap::new();
        let flush = |out: &mut Vec<u8>, off: &mut u64| -> Result<()> {
            if !out.is_empty() {
                self.dev.write(dst.zone, dst.start + *off, out)?;
                *off += out.len() as u64;
                out.clear();
            }
            Ok(())
        };
        for (name, loc) in &m.blobs {
            let data = self.read_blob(src, name, *loc)?;
            let rec = encode_record(KIND_PUT, name, epoch, &data);
            let rec_len = rec.len() as u64;
            if off + out.len() as u64 + rec_len + BLOCK > dst.len {
                return Err(Error::NoSpace(format!(
                    "{}: live metadata does not fit in a metadata area",
                    self.dev.describe()
                )));
            }
            new_blobs.insert(
                name.clone(),
                BlobLoc {
                    rec_off: off + out.len() as u64,
                    rec_len,
                },
            );
            out.extend_from_slice(&rec);
            if out.len() >= 4 << 20 {
                flush(&mut out, &mut off)?;
            }
        }
        for (&(seq, wid), &zone) in &m.tombs {
            let rec = encode_record(KIND_SEG_DEAD, "", epoch, &seg_dead_payload(seq, wid, zone));
            if off + out.len() as u64 + rec.len() as u64 + BLOCK > dst.len {
                return Err(Error::NoSpace(format!(
                    "{}: live metadata does not fit in a metadata area",
                    self.dev.describe()
                )));
            }
            out.extend_from_slice(&rec);
            if out.len() >= 4 << 20 {
                flush(&mut out, &mut off)?;
            }
        }
        for (&zone, &end) in &m.tails {
            let rec = encode_record(KIND_ZONE_TAIL, "", epoch, &zone_tail_payload(zone, end));
            if off + out.len() as u64 + rec.len() as u64 + BLOCK > dst.len {
                return Err(Error::NoSpace(format!(
                    "{}: live metadata does not fit in a metadata area",
                    self.dev.describe()
                )));
            }
            out.extend_from_slice(&rec);
        }
        if !m.recorded.is_empty() {
            let rec = encode_record(KIND_ZONE_MAP, "", epoch, &zone_map_payload(&m.recorded));
            if off + out.len() as u64 + rec.len() as u64 + BLOCK > dst.len {
                return Err(Error::NoSpace(format!(
                    "{}: live metadata does not fit in a metadata area",
                    self.dev.describe()
                )));
            }
            out.extend_from_slice(&rec);
        }
        out.extend_from_slice(&encode_record(KIND_COMMIT, "", epoch, &self.uuid));
        flush(&mut out, &mut off)?;
        // Committed: switch, then free the old area.
        m.active = dst_i;
        m.epoch = epoch;
        m.max_epoch = epoch;
        m.tail = off;
        m.blobs = new_blobs;
        if src.sequential {
            self.dev.reset(src.zone)?;
        }
        if dst.sequential && off < dst.len {
            if let Err(e) = self.dev.close(dst.zone) {
                tracing::warn!(error = %e, zone = dst.zone, "closing metadata zone failed");
            }
        }
        tracing::debug!(dev = %self.dev.describe(), epoch, bytes = off, "metadata log compacted");
        Ok(())
    }

    fn read_blob(&self, a: Area, name: &str, loc: BlobLoc) -> Result<Vec<u8>> {
        let mut b = vec![0u8; loc.rec_len as usize];
        self.dev.read(a.zone, a.start + loc.rec_off, &mut b)?;
        let what = || format!("metadata blob {name} on {}", self.dev.describe());
        let (kind, rname, _, payload) = parse_record(&b).map_err(|d| Error::corrupt(what(), d))?;
        if kind != KIND_PUT || rname != name {
            return Err(Error::corrupt(what(), "record does not hold this blob"));
        }
        Ok(payload.to_vec())
    }
}

fn seg_dead_payload(seq: u64, write_id: u64, zone: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&write_id.to_le_bytes());
    p.extend_from_slice(&zone.to_le_bytes());
    p
}

fn live_meta_bytes(m: &MetaLog) -> u64 {
    m.blobs.values().map(|l| l.rec_len).sum::<u64>()
        + m.tombs.len() as u64 * BLOCK
        + record_len(0, 4 + 16 * m.recorded.len())
        + m.tails.len() as u64 * BLOCK
        + BLOCK
}

/// Zone-tail payload: `zone u32, 0 u32, valid end u64`.
fn zone_tail_payload(zone: u32, end: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&zone.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&end.to_le_bytes());
    p
}

/// Zone-map payload: `n u32`, then `n` x `{zone u32, 0 u32, frontier u64}`.
fn zone_map_payload(map: &BTreeMap<u32, u64>) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + 16 * map.len());
    p.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (&zone, &wp) in map {
        p.extend_from_slice(&zone.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&wp.to_le_bytes());
    }
    p
}

fn parse_zone_map(p: &[u8]) -> Option<BTreeMap<u32, u64>> {
    if p.len() < 4 {
        return None;
    }
    let n = u32_at(p, 0) as usize;
    if p.len() != 4 + 16 * n {
        return None;
    }
    Some(
        (0..n)
            .map(|i| (u32_at(p, 4 + 16 * i), u64_at(p, 12 + 16 * i)))
            .collect(),
    )
}

/// Refuse a device whose write pointers are behind what the metadata log
/// recorded as durably written: its zones were reset or the device was
/// swapped behind the store's back, and appending would overwrite nothing
/// less than the evidence. Nothing is written before this check.
fn check_frontier<D: ZonedDevice>(
    dev: &D,
    zones: &[ZoneInfo],
    recorded: &BTreeMap<u32, u64>,
    first_data: u32,
) -> Result<()> {
    for (&zone, &want) in recorded {
        let Some(z) = zones.get(zone as usize).filter(|_| zone >= first_data) else {
            return Err(Error::corrupt(
                format!("zoned store on {}", dev.describe()),
                format!("zone map names zone {zone}, which is not a data zone of this device"),
            ));
        };
        let have = match z.cond {
            ZoneCond::Full => continue,
            ZoneCond::Empty => 0,
            _ => z.wp,
        };
        if have < want {
            return Err(Error::corrupt(
                format!("zoned store on {}", dev.describe()),
                format!(
                    "zone {zone} ({:?}) has its write pointer at {have} bytes, behind the {want} bytes \
                     the store recorded as written: the zones were reset or the device was swapped \
                     behind lsvd's back (a QEMU restart forgets zone state); refusing to open, \
                     nothing was written",
                    z.cond
                ),
            ));
        }
    }
    Ok(())
}

fn zone_wp(zones: &[ZoneInfo], zone: u32) -> u64 {
    zones.get(zone as usize).map_or(0, |z| z.wp)
}

fn zone_cond(zones: &[ZoneInfo], zone: u32) -> ZoneCond {
    zones.get(zone as usize).map_or(ZoneCond::Empty, |z| z.cond)
}

/// Parse a full record buffer: (kind, name, epoch, payload).
fn parse_record(b: &[u8]) -> std::result::Result<(u16, &str, u64, &[u8]), String> {
    if b.len() < REC_FIXED + 4 || &b[0..8] != META_MAGIC {
        return Err("bad magic".into());
    }
    let nl = u16_at(b, 14) as usize;
    let pl = u64_at(b, 24);
    let body = (REC_FIXED as u64)
        .saturating_add(nl as u64)
        .saturating_add(pl);
    if body.saturating_add(4) > b.len() as u64 {
        return Err(format!("record length {body} exceeds its buffer"));
    }
    let body = body as usize;
    if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
        return Err("crc mismatch".into());
    }
    let name = std::str::from_utf8(&b[REC_FIXED..REC_FIXED + nl])
        .map_err(|_| "name is not utf-8".to_string())?;
    Ok((u16_at(b, 12), name, u64_at(b, 16), &b[REC_FIXED + nl..body]))
}

/// Walk one metadata area from its start, stopping at the first record that
/// is invalid, torn, or of another epoch.
fn scan_area<D: ZonedDevice>(dev: &D, a: &Area, zones: &[ZoneInfo]) -> Result<AreaScan> {
    let limit = if a.sequential {
        zone_wp(zones, a.zone)
    } else {
        a.len
    };
    let mut s = AreaScan::default();
    let mut off = 0u64;
    let mut hb = vec![0u8; BLOCK as usize];
    while off + BLOCK <= limit {
        dev.read(a.zone, a.start + off, &mut hb)?;
        if &hb[0..8] != META_MAGIC {
            break;
        }
        let version = u32_at(&hb, 8);
        if version != ZONED_STORE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: format!("zoned store metadata record on {}", dev.describe()),
                version,
            });
        }
        let epoch = u64_at(&hb, 16);
        if s.epoch.is_some_and(|e| e != epoch) {
            break;
        }
        let nl = u16_at(&hb, 14) as usize;
        let pl = u64_at(&hb, 24);
        if pl > a.len {
            break;
        }
        let rlen = record_len(nl, pl as usize);
        if off + rlen > limit {
            break;
        }
        let full;
        let buf: &[u8] = if rlen > BLOCK {
            let mut b = vec![0u8; rlen as usize];
            dev.read(a.zone, a.start + off, &mut b)?;
            full = b;
            &full
        } else {
            &hb
        };
        let Ok((kind, name, _, payload)) = parse_record(buf) else {
            break;
        };
        let rec = match kind {
            KIND_PUT => Rec::Put {
                name: name.to_string(),
                loc: BlobLoc {
                    rec_off: off,
                    rec_len: rlen,
                },
            },
            KIND_DELETE => Rec::Delete {
                name: name.to_string(),
            },
            KIND_SEG_DEAD if payload.len() >= 20 => Rec::SegDead {
                seq: u64_at(payload, 0),
                write_id: u64_at(payload, 8),
                zone: u32_at(payload, 16),
            },
            KIND_ZONE_MAP => match parse_zone_map(payload) {
                Some(map) => Rec::ZoneMap(map),
                None => break,
            },
            KIND_ZONE_RESET if payload.len() >= 4 => Rec::ZoneReset(u32_at(payload, 0)),
            KIND_ZONE_TAIL if payload.len() >= 16 => {
                Rec::ZoneTail(u32_at(payload, 0), u64_at(payload, 8))
            }
            KIND_COMMIT if payload.len() >= 16 => {
                let mut u = [0u8; 16];
                u.copy_from_slice(&payload[..16]);
                s.committed = Some(u);
                Rec::Commit
            }
            _ => break,
        };
        s.epoch = Some(epoch);
        s.recs.push(rec);
        off += rlen;
    }
    s.end = off;
    Ok(s)
}

/// Reset all sequential zones and invalidate conventional metadata areas.
fn erase<D: ZonedDevice>(dev: &D, areas: &[Area; 2]) -> Result<()> {
    for z in dev.report_zones()? {
        if z.zone_type == ZoneType::SequentialRequired && z.cond != ZoneCond::Empty {
            dev.reset(z.index)?;
        }
    }
    if !areas[0].sequential {
        let zero = vec![0u8; BLOCK as usize];
        for a in areas {
            dev.write(a.zone, a.start, &zero)?;
        }
    }
    Ok(())
}

impl<D: ZonedDevice> SegmentStore for ZonedStore<D> {
    fn media(&self) -> Media {
        Media::Zoned
    }

    fn describe(&self) -> String {
        self.dev.describe()
    }

    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()> {
        self.check_alive()?;
        let len = data.len() as u64;
        if !len.is_multiple_of(BLOCK) {
            return Err(Error::InvalidArgument(format!(
                "segment {seq:016x}: length {len} is not a multiple of 4096"
            )));
        }
        let need = PLACEMENT_LEN + len;
        let cap = self.geo.zone_capacity;
        if need > cap {
            return Err(Error::InvalidArgument(format!(
                "segment {seq:016x} of {len} bytes does not fit in a zone of capacity {cap} (max {})",
                self.max_segment_len()
            )));
        }
        let (zone, off, wid) = {
            let mut g = self.inner.lock();
            if g.segs.contains_key(&seq) || g.pending.contains(&seq) {
                return Err(Error::Exists(format!(
                    "segment {seq:016x} on {}",
                    self.dev.describe()
                )));
            }
            let zone = loop {
                let fits = g.open.iter().copied().find(|&z| {
                    let d = g.zones[self.dz_idx(z)];
                    !d.busy && d.wp + need <= cap
                });
                if let Some(z) = fits {
                    break z;
                }
                let stale: Vec<u32> = g
                    .open
                    .iter()
                    .copied()
                    .filter(|&z| !g.zones[self.dz_idx(z)].busy)
                    .collect();
                if !stale.is_empty() {
                    for z in stale {
                        self.finish_zone(&mut g, z)?;
                    }
                    continue;
                }
                if g.open.len() < self.data_open {
                    if let Some(i) = g.zones.iter().position(|d| d.state == ZState::Free) {
                        let z = self.first_data + i as u32;
                        g.zones[i].state = ZState::Open;
                        g.open.push(z);
                        break z;
                    }
                }
                if g.open.is_empty() {
                    return Err(Error::NoSpace(format!(
                        "{}: no free zone for segment {seq:016x}",
                        self.dev.describe()
                    )));
                }
                self.cv.wait(&mut g);
            };
            let i = self.dz_idx(zone);
            g.zones[i].busy = true;
            g.pending.insert(seq);
            let wid = g.next_write_id;
            g.next_write_id += 1;
            (zone, g.zones[i].wp, wid)
        };

        let mut buf = encode_placement(seq, len, wid, &self.uuid);
        buf.extend_from_slice(data);
        let res = self.dev.write(zone, off, &buf);
        drop(buf);

        let mut g = self.inner.lock();
        let i = self.dz_idx(zone);
        g.zones[i].busy = false;
        g.pending.remove(&seq);
        let out = match res {
            Ok(()) => {
                g.zones[i].wp = off + need;
                g.zones[i].live += 1;
                g.segs.insert(
                    seq,
                    SegLoc {
                        zone,
                        off,
                        len,
                        write_id: wid,
                    },
                );
                if off + need == cap {
                    g.zones[i].state = ZState::Full;
                    g.open.retain(|&z| z != zone);
                }
                Ok(())
            }
            Err(e) => {
                // The zone's tail is unknown now: stop appending to it.
                if let Err(e2) = self.finish_zone(&mut g, zone) {
                    tracing::warn!(error = %e2, zone, "finishing zone after a failed write failed");
                }
                Err(e)
            }
        };
        self.cv.notify_all();
        out
    }

    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_alive()?;
        let loc = self.inner.lock().segs.get(&seq).copied().ok_or_else(|| {
            Error::NotFound(format!("segment {seq:016x} on {}", self.dev.describe()))
        })?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > loc.len)
        {
            return Err(Error::InvalidArgument(format!(
                "read of {} bytes at {offset} past the end of segment {seq:016x} ({} bytes)",
                buf.len(),
                loc.len
            )));
        }
        self.dev
            .read(loc.zone, loc.off + PLACEMENT_LEN + offset, buf)
    }

    fn delete_segment(&self, seq: u64) -> Result<()> {
        self.check_alive()?;
        let Some(loc) = self.inner.lock().segs.get(&seq).copied() else {
            return Ok(());
        };
        {
            let mut m = self.meta.lock();
            let p = seg_dead_payload(seq, loc.write_id, loc.zone);
            self.append_meta(&mut m, KIND_SEG_DEAD, "", &p, None)?;
            m.tombs.insert((seq, loc.write_id), loc.zone);
        }
        let mut g = self.inner.lock();
        if g.segs.get(&seq) == Some(&loc) {
            g.segs.remove(&seq);
            let i = self.dz_idx(loc.zone);
            g.zones[i].live = g.zones[i].live.saturating_sub(1);
            if g.zones[i].live == 0 && g.zones[i].state == ZState::Full {
                self.reset_zone(&mut g, loc.zone)?;
                self.cv.notify_all();
            }
        }
        Ok(())
    }

    fn list_segments(&self) -> Result<Vec<SegmentEntry>> {
        self.check_alive()?;
        Ok(self
            .inner
            .lock()
            .segs
            .iter()
            .map(|(&seq, l)| SegmentEntry { seq, len: l.len })
            .collect())
    }

    fn segment_unit(&self, seq: u64) -> Option<u32> {
        self.inner.lock().segs.get(&seq).map(|l| l.zone)
    }

    fn open_units(&self) -> Vec<u32> {
        let mut v = self.inner.lock().open.clone();
        v.sort_unstable();
        v
    }

    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()> {
        self.check_alive()?;
        check_meta_name(name)?;
        // The frontier is taken with `inner` held and `meta` already locked,
        // so no zone reset (which holds `inner`, then logs under `meta`) can
        // slip between the snapshot and its record.
        let (mut m, frontier) = {
            let g = self.inner.lock();
            let m = self.meta.lock();
            let f: BTreeMap<u32, u64> = g
                .zones
                .iter()
                .enumerate()
                .filter(|(_, d)| d.state != ZState::Free && d.wp > 0)
                .map(|(i, d)| (self.first_data + i as u32, d.wp))
                .collect();
            (m, f)
        };
        let (rec_off, rec_len) = self.append_meta(&mut m, KIND_PUT, name, data, Some(name))?;
        m.blobs
            .insert(name.to_string(), BlobLoc { rec_off, rec_len });
        // Checkpoints go through here: record the write frontier with them
        // (when it moved), so open can tell a device that lost writes.
        if frontier != m.recorded {
            let p = zone_map_payload(&frontier);
            self.append_meta(&mut m, KIND_ZONE_MAP, "", &p, None)?;
            m.recorded = frontier;
        }
        Ok(())
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.check_alive()?;
        check_meta_name(name)?;
        let m = self.meta.lock();
        let Some(loc) = m.blobs.get(name).copied() else {
            return Ok(None);
        };
        let a = m.areas[m.active];
        // Held across the read: compaction may move the record.
        self.read_blob(a, name, loc).map(Some)
    }

    fn delete_meta(&self, name: &str) -> Result<()> {
        self.check_alive()?;
        check_meta_name(name)?;
        let mut m = self.meta.lock();
        if !m.blobs.contains_key(name) {
            return Ok(());
        }
        // If the tombstone does not fit, compaction runs first; it still
        // copies the old blob, which the tombstone then kills.
        self.append_meta(&mut m, KIND_DELETE, name, &[], None)?;
        m.blobs.remove(name);
        Ok(())
    }

    fn list_meta(&self) -> Result<Vec<String>> {
        self.check_alive()?;
        Ok(self.meta.lock().blobs.keys().cloned().collect())
    }

    fn max_segment_len(&self) -> Option<u64> {
        Some(ZonedStore::max_segment_len(self))
    }

    fn space(&self) -> Result<SpaceInfo> {
        self.check_alive()?;
        let g = self.inner.lock();
        let cap = self.geo.zone_capacity;
        let used = g
            .zones
            .iter()
            .map(|d| match d.state {
                ZState::Free => 0,
                ZState::Open => d.wp,
                ZState::Full => cap,
            })
            .sum();
        Ok(SpaceInfo {
            capacity: Some(g.zones.len() as u64 * cap),
            used,
        })
    }

    fn destroy(&self) -> Result<()> {
        let mut g = self.inner.lock();
        let m = self.meta.lock();
        self.destroyed.store(true, Ordering::Release);
        erase(&self.dev, &m.areas)?;
        g.segs.clear();
        g.open.clear();
        drop(m);
        drop(g);
        if let Some(hook) = self.destroy_hook.lock().take() {
            hook()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoned::conformance::run_segment_store_conformance;
    use crate::zoned::ZonedFile;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    fn geo(nr_zones: u32, conv: u32, max_open: u32, max_active: u32) -> ZonedGeometry {
        ZonedGeometry {
            zone_size: 1 << 20,
            zone_capacity: 768 << 10,
            nr_zones,
            nr_conventional: conv,
            max_open,
            max_active,
            write_granularity: 4096,
        }
    }

    fn new_store(path: &Path, g: ZonedGeometry) -> ZonedStore<ZonedFile> {
        let _ = std::fs::remove_file(path);
        ZonedStore::create(ZonedFile::create(path, g).unwrap()).unwrap()
    }

    fn reopen(s: ZonedStore<ZonedFile>) -> ZonedStore<ZonedFile> {
        let p: PathBuf = s.device().path().to_path_buf();
        drop(s);
        ZonedStore::open(ZonedFile::open(p).unwrap()).unwrap()
    }

    /// The device never has more open/active zones than its limits.
    fn check_limits(s: &ZonedStore<ZonedFile>) {
        let g = s.device().geometry();
        let r = s.device().report_zones().unwrap();
        let open = r.iter().filter(|z| z.cond.is_open()).count() as u32;
        let active = r.iter().filter(|z| z.cond.is_active()).count() as u32;
        assert!(g.max_open == 0 || open <= g.max_open, "{open} open");
        assert!(
            g.max_active == 0 || active <= g.max_active,
            "{active} active"
        );
    }

    fn conformance(g: ZonedGeometry) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.img");
        let p2 = p.clone();
        let mut make = || -> Arc<dyn SegmentStore> { Arc::new(new_store(&p, g)) };
        let mut re = |s: Arc<dyn SegmentStore>| -> Arc<dyn SegmentStore> {
            drop(s);
            Arc::new(ZonedStore::open(ZonedFile::open(&p2).unwrap()).unwrap())
        };
        run_segment_store_conformance(&mut make, Some(&mut re), 64 << 10).unwrap();
    }

    #[test]
    fn conformance_sequential_meta() {
        conformance(geo(12, 0, 4, 6));
    }

    #[test]
    fn conformance_conventional_meta() {
        conformance(geo(10, 2, 2, 3));
        conformance(geo(10, 1, 0, 0));
    }

    #[test]
    fn tight_limits_one_data_zone() {
        let dir = tempfile::tempdir().unwrap();
        let s = new_store(&dir.path().join("z.img"), geo(8, 0, 2, 3));
        assert_eq!(s.data_open_limit(), 1);
        for seq in 0..20u64 {
            s.write_segment(seq, &vec![seq as u8; 128 << 10]).unwrap();
            s.put_meta("m", &[seq as u8; 5000]).unwrap();
            check_limits(&s);
        }
        let s = reopen(s);
        assert_eq!(s.list_segments().unwrap().len(), 20);
        assert_eq!(s.get_meta("m").unwrap().unwrap(), vec![19u8; 5000]);
        let mut b = vec![0u8; 4096];
        s.read_segment(13, 4096, &mut b).unwrap();
        assert_eq!(b, vec![13u8; 4096]);
    }

    #[test]
    fn torn_segment_is_dropped_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = new_store(&dir.path().join("z.img"), geo(8, 0, 4, 6));
        s.write_segment(1, &[1u8; 64 << 10]).unwrap();
        s.write_segment(2, &[2u8; 64 << 10]).unwrap();
        let zone = s.segment_unit(2).unwrap();
        assert_eq!(s.open_units(), vec![zone]);
        let uuid = s.store_uuid();
        let dev = s.into_device();
        // A write of segment 3 torn after 8 KiB of its 64 KiB.
        let wp = dev.report_zones().unwrap()[zone as usize].wp;
        let mut torn = encode_placement(3, 64 << 10, 99, &uuid);
        torn.extend_from_slice(&[3u8; 8192]);
        dev.write(zone, wp, &torn).unwrap();
        let p = dev.path().to_path_buf();
        drop(dev);
        let s = ZonedStore::open(ZonedFile::open(&p).unwrap()).unwrap();
        let seqs: Vec<u64> = s.list_segments().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        // The zone with the dead tail takes no more appends.
        assert!(s.open_units().is_empty());
        assert_eq!(
            s.device().report_zones().unwrap()[zone as usize].cond,
            ZoneCond::Full
        );
        // Opened again, now that the zone is full (wp = capacity): the torn
        // segment's intact placement header must still not count.
        let s = reopen(s);
        let seqs: Vec<u64> = s.list_segments().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        // And after a metadata compaction (the tail record is carried over).
        {
            let mut m = s.meta.lock();
            s.compact(&mut m).unwrap();
        }
        let s = reopen(s);
        let seqs: Vec<u64> = s.list_segments().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        s.write_segment(3, &[3u8; 64 << 10]).unwrap();
        assert_ne!(s.segment_unit(3), Some(zone));
        let mut b = vec![0u8; 64 << 10];
        s.read_segment(2, 0, &mut b).unwrap();
        assert_eq!(b, vec![2u8; 64 << 10]);
        s.read_segment(3, 0, &mut b).unwrap();
        assert_eq!(b, vec![3u8; 64 << 10]);
    }

    /// A device whose zones were reset behind the store's back (or swapped
    /// for another) is refused with the reason, and nothing is written.
    #[test]
    fn write_pointer_behind_the_log_is_refused() {
        for conv in [0u32, 2] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("z.img");
            let s = new_store(&p, geo(10, conv, 4, 6));
            for seq in 1..=12u64 {
                s.write_segment(seq, &[seq as u8; 128 << 10]).unwrap();
            }
            // A checkpoint records the frontier with it.
            s.put_meta("checkpoint", b"ck").unwrap();
            let zone = s.segment_unit(1).unwrap();
            // Zone resets done by the store itself never trip the check.
            for seq in 1..=12u64 {
                if s.segment_unit(seq) == Some(zone) {
                    s.delete_segment(seq).unwrap();
                }
            }
            let s = reopen(s);
            s.put_meta("checkpoint", b"ck2").unwrap();
            let live = s.segment_unit(12).unwrap();
            let dev = s.into_device();
            let before = dev.report_zones().unwrap();
            dev.reset(live).unwrap();
            let after_reset = dev.report_zones().unwrap();
            drop(dev);
            let err = ZonedStore::open(ZonedFile::open(&p).unwrap()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("zone {live} ")) && msg.contains("behind"),
                "{msg}"
            );
            // Nothing written: the zone report is exactly as the reset left it.
            let dev = ZonedFile::open(&p).unwrap();
            assert_eq!(dev.report_zones().unwrap(), after_reset);
            assert_ne!(before, after_reset);
        }
    }

    /// A store created where a destroyed one lived (conventional metadata
    /// zones keep the old records past their first block) starts empty.
    #[test]
    fn recreate_after_destroy_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.img");
        let s = new_store(&p, geo(10, 2, 4, 6));
        s.put_meta("superblock", b"old image").unwrap();
        s.put_meta("other", b"x").unwrap();
        s.write_segment(1, &[1u8; 64 << 10]).unwrap();
        s.destroy().unwrap();
        let s = ZonedStore::create(s.into_device()).unwrap();
        assert!(s.list_meta().unwrap().is_empty());
        assert!(s.list_segments().unwrap().is_empty());
        let s = reopen(s);
        assert!(s.list_meta().unwrap().is_empty());
    }

    /// An erased device (every zone empty) says so instead of "not found".
    #[test]
    fn all_zones_empty_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.img");
        let s = new_store(&p, geo(8, 0, 4, 6));
        s.write_segment(1, &[1u8; 64 << 10]).unwrap();
        let dev = s.into_device();
        for z in 0..8 {
            dev.reset(z).unwrap();
        }
        drop(dev);
        let err = ZonedStore::open(ZonedFile::open(&p).unwrap()).unwrap_err();
        assert!(err.to_string().contains("every zone is empty"), "{err}");
    }

    #[test]
    fn zone_reset_bounded_space_and_nospace() {
        let dir = tempfile::tempdir().unwrap();
        // 4 data zones of 768 KiB; segments of 124 KiB + 4 KiB header = 6 per zone.
        let s = new_store(&dir.path().join("z.img"), geo(6, 0, 4, 6));
        let seg = |seq: u64| vec![seq as u8; 124 << 10];
        let cap = s.space().unwrap().capacity.unwrap();
        assert_eq!(cap, 4 * (768 << 10));
        let mut seq = 0u64;
        let mut live = std::collections::VecDeque::new();
        let mut resets = 0;
        for _round in 0..30 {
            // Keep 12 segments live (half the store), delete the oldest.
            s.write_segment(seq, &seg(seq)).unwrap();
            live.push_back(seq);
            seq += 1;
            if live.len() > 12 {
                let old = live.pop_front().unwrap();
                let unit = s.segment_unit(old).unwrap();
                s.delete_segment(old).unwrap();
                if !s
                    .list_segments()
                    .unwrap()
                    .iter()
                    .any(|e| s.segment_unit(e.seq) == Some(unit))
                    && !s.open_units().contains(&unit)
                {
                    assert_eq!(
                        s.device().report_zones().unwrap()[unit as usize].cond,
                        ZoneCond::Empty,
                        "zone {unit} reset once all its segments are dead"
                    );
                    resets += 1;
                }
            }
            check_limits(&s);
            assert!(s.space().unwrap().used <= cap);
        }
        assert!(resets >= 2, "{resets} resets");
        // Survives reopen with the deletions.
        let s = reopen(s);
        let seqs: Vec<u64> = s.list_segments().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, live.iter().copied().collect::<Vec<_>>());
        // Fill up: NoSpace, then deleting everything gives all space back.
        let mut n = 0;
        let err = loop {
            match s.write_segment(seq, &seg(seq)) {
                Ok(()) => {
                    seq += 1;
                    n += 1;
                }
                Err(e) => break e,
            }
            assert!(n < 100);
        };
        assert!(matches!(err, Error::NoSpace(_)), "{err}");
        for e in s.list_segments().unwrap() {
            s.delete_segment(e.seq).unwrap();
        }
        let sp = s.space().unwrap();
        assert!(sp.used <= 768 << 10, "used {} after deleting all", sp.used);
        let s = reopen(s);
        assert!(s.list_segments().unwrap().is_empty());
        s.write_segment(seq, &seg(seq)).unwrap();
        // A segment larger than a zone is refused.
        assert!(matches!(
            s.write_segment(seq + 1, &vec![0u8; 768 << 10]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn meta_compaction_and_limits() {
        for conv in [0u32, 1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let s = new_store(&dir.path().join("z.img"), geo(6, conv, 4, 6));
            let area = if conv == 1 {
                512 << 10
            } else if conv == 2 {
                1 << 20
            } else {
                768 << 10
            };
            // Many replacements: several compactions.
            for i in 0..200u32 {
                s.put_meta("superblock", &i.to_le_bytes()).unwrap();
                s.put_meta("ckpt.a", &vec![i as u8; 40_000]).unwrap();
                if i % 10 == 0 {
                    s.write_segment(i as u64, &[1u8; 8192]).unwrap();
                    s.delete_segment(i as u64).unwrap();
                }
            }
            s.put_meta("x", b"1").unwrap();
            s.delete_meta("x").unwrap();
            let s = reopen(s);
            assert_eq!(
                s.get_meta("superblock").unwrap().unwrap(),
                199u32.to_le_bytes()
            );
            assert_eq!(s.get_meta("ckpt.a").unwrap().unwrap(), vec![199u8; 40_000]);
            assert_eq!(s.list_meta().unwrap(), vec!["ckpt.a", "superblock"]);
            assert!(s.list_segments().unwrap().is_empty());
            // Too big for a metadata area.
            let e = s.put_meta("huge", &vec![0u8; area]).unwrap_err();
            assert!(matches!(e, Error::NoSpace(_)), "{e}");
            // Live set fills the area: NoSpace, old value intact.
            let big = vec![1u8; area / 3];
            s.put_meta("b1", &big).unwrap();
            s.put_meta("b2", &big).unwrap();
            assert!(matches!(s.put_meta("b3", &big), Err(Error::NoSpace(_))));
            assert_eq!(s.get_meta("b2").unwrap().unwrap(), big);
            check_limits(&s);
        }
    }

    #[test]
    fn create_refuses_used_device_and_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.img");
        let s = new_store(&p, geo(6, 0, 4, 6));
        s.write_segment(1, &[1u8; 4096]).unwrap();
        let dev = s.into_device();
        let e = ZonedStore::create(dev).unwrap_err();
        assert!(matches!(e, Error::Exists(_)), "{e}");
        let dev = ZonedFile::open(&p).unwrap();
        let s = ZonedStore::format(dev).unwrap();
        assert!(s.list_segments().unwrap().is_empty());
        s.write_segment(1, &[1u8; 4096]).unwrap();
        s.destroy().unwrap();
        assert!(matches!(s.list_segments(), Err(Error::Unavailable(_))));
        let dev = s.into_device();
        assert!(dev
            .report_zones()
            .unwrap()
            .iter()
            .all(|z| z.cond == ZoneCond::Empty));
        assert!(matches!(ZonedStore::open(dev), Err(Error::NotFound(_))));
        // Conventional metadata: refuses an existing store too.
        let p2 = dir.path().join("c.img");
        let s = new_store(&p2, geo(6, 2, 4, 6));
        let dev = s.into_device();
        assert!(matches!(ZonedStore::create(dev), Err(Error::Exists(_))));
    }

    #[test]
    fn write_cost() {
        let dir = tempfile::tempdir().unwrap();
        let g = ZonedGeometry {
            zone_size: 64 << 20,
            zone_capacity: 64 << 20,
            nr_zones: 8,
            nr_conventional: 0,
            max_open: 8,
            max_active: 12,
            write_granularity: 4096,
        };
        let s = new_store(&dir.path().join("z.img"), g);
        let seg = vec![7u8; 4 << 20];
        let t = std::time::Instant::now();
        for seq in 0..8 {
            s.write_segment(seq, &seg).unwrap();
        }
        eprintln!(
            "ZonedStore: 4 MiB segment write: {:?} each",
            t.elapsed() / 8
        );
        let t = std::time::Instant::now();
        for seq in 0..8 {
            s.delete_segment(seq).unwrap();
        }
        eprintln!("ZonedStore: delete_segment: {:?} each", t.elapsed() / 8);
    }
}
