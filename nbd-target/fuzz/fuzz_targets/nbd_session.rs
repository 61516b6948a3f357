//! Fuzz the NBD server's negotiation and request parsing end to end: a
//! whole client byte stream is served (requests run inline) against a real
//! engine image on an in-memory store. Any panic, hang or abort is a bug.
//!
//! The first input byte picks the mode: even — the bytes are the raw client
//! stream from the first byte on; odd — a valid negotiation (fixed newstyle,
//! optionally structured replies, GO with or without block sizes) is
//! prepended so the fuzzer spends its time on the transmission phase.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use log_engine::store::mem::MemStore;
use log_engine::{CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_nbd::proto::*;
use lsvd_nbd::{Export, Exports};

fn exports() -> &'static Exports {
    static E: OnceLock<Exports> = OnceLock::new();
    E.get_or_init(|| {
        let store: Arc<dyn SegmentStore> = Arc::new(MemStore::new());
        Image::create(
            store.clone(),
            &CreateOptions {
                size: 4 << 20,
                segment_size: 256 << 10,
                ..Default::default()
            },
        )
        .expect("create image");
        let img = Image::open(
            store,
            OpenOptions {
                upload_threads: 1,
                max_pending_bytes: 8 << 20,
                checkpoint_every: 8,
                gc: GcConfig {
                    enabled: true,
                    threshold_pct: 50,
                    interval: Duration::from_millis(200),
                },
                store_timeout: Duration::from_secs(10),
                read_only: false,
            },
        )
        .expect("open image");
        let t = Exports::new();
        t.insert(Arc::new(Export::new("disk", Arc::new(img), false)));
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut v = (CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
            .to_be_bytes()
            .to_vec();
        if mode & 2 != 0 {
            v.extend_from_slice(
                &OptionHeader {
                    option: OPT_STRUCTURED_REPLY,
                    len: 0,
                }
                .encode(),
            );
        }
        let infos = if mode & 4 != 0 {
            vec![INFO_BLOCK_SIZE]
        } else {
            vec![]
        };
        let go = InfoRequest {
            name: String::new(),
            infos,
        }
        .encode();
        v.extend_from_slice(
            &OptionHeader {
                option: OPT_GO,
                len: go.len() as u32,
            }
            .encode(),
        );
        v.extend_from_slice(&go);
        v.extend_from_slice(rest);
        v
    };
    lsvd_nbd::serve_bytes(&input, exports(), Box::new(std::io::sink()));
});
