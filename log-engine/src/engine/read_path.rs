//! The read path: look the range up in the extent map; copy pieces that
//! live in the open batch or a pending segment from memory while the state
//! lock is held (they can't move under us); read the rest from the store
//! through verified segment headers, checking every chunk's crc. Holes read
//! as zeros. The GC gate is held shared for the whole read so a segment is
//! never deleted under a reader.

use std::sync::Arc;

use super::state::{Batch, Inner};
use crate::extent_map::Piece;
use crate::format::segment::SegmentHeader;
use crate::format::segment_name;
use crate::{Error, Result};

impl Inner {
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let _gate = self.gc_gate.read();
        let lba0 = offset / 4096;
        let mut from_store: Vec<Piece> = Vec::new();
        {
            let st = self.state.lock();
            if st.closed {
                return Err(Error::Unavailable("image is closed".into()));
            }
            let pieces = st.map.lookup(lba0, buf.len() as u64 / 4096);
            for p in pieces {
                let start = ((p.lba - lba0) * 4096) as usize;
                let out = &mut buf[start..start + p.len as usize * 4096];
                match p.target {
                    None => out.fill(0),
                    Some(t) => {
                        let mem: Option<&Batch> = match &st.batch {
                            Some(b) if b.seq == t.seq => Some(b),
                            _ => st.pending.get(&t.seq).map(|b| &**b),
                        };
                        match mem {
                            Some(b) => {
                                let s = t.off as usize * 4096;
                                out.copy_from_slice(&b.data[s..s + out.len()]);
                            }
                            None => from_store.push(p),
                        }
                    }
                }
            }
        }
        for p in from_store {
            let Some(t) = p.target else { continue };
            let start = ((p.lba - lba0) * 4096) as usize;
            let out = &mut buf[start..start + p.len as usize * 4096];
            self.read_segment_data(t.seq, t.off as u64 * 4096, out)?;
        }
        Ok(())
    }

    /// Read logical data of a stored segment, crc-checked.
    pub(crate) fn read_segment_data(
        &self,
        seq: u64,
        logical_off: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let hdr = self.segment_header(seq)?;
        let store = &self.store;
        hdr.read_data(logical_off, out, &mut |pos, b| {
            store.read_segment(seq, pos, b)
        })
    }

    /// A segment's verified header, from the cache or the store.
    pub(crate) fn segment_header(&self, seq: u64) -> Result<Arc<SegmentHeader>> {
        if let Some(h) = self.headers.lock().get(seq) {
            return Ok(h);
        }
        let h = Arc::new(load_header(&*self.store, &self.sb.uuid, seq)?);
        self.headers.lock().insert(seq, h.clone());
        Ok(h)
    }
}

/// Read and verify the header of segment `seq` from `store`.
pub(crate) fn load_header(
    store: &dyn crate::store::SegmentStore,
    uuid: &[u8; 16],
    seq: u64,
) -> Result<SegmentHeader> {
    let mut first = vec![0u8; 4096];
    store
        .read_segment(seq, 0, &mut first)
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(segment_name(seq)),
            e => e,
        })?;
    let hlen = SegmentHeader::fixed_len_hint(&first, seq)? as usize;
    if hlen > first.len() {
        let mut rest = vec![0u8; hlen - first.len()];
        // A corrupt length field can point past the object: that is damage
        // of this segment, not a store failure.
        store
            .read_segment(seq, first.len() as u64, &mut rest)
            .map_err(|e| match e {
                e if e.is_transient() => e,
                e => Error::corrupt(
                    segment_name(seq),
                    format!("header length {hlen} unreadable: {e}"),
                ),
            })?;
        first.extend_from_slice(&rest);
    }
    SegmentHeader::decode(Some(uuid), seq, &first)
}
