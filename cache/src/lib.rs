//! lsvd's local cache device: the write journal (`journal`) that makes
//! writes durable in microseconds and is replayed after a crash, and the read
//! cache (`read_cache`) that keeps hot backend data on local flash.

pub mod journal;
pub mod read_cache;
