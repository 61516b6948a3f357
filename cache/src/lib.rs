//! lsvd's local cache device: the write journal (`journal`) that makes
//! writes durable in microseconds and is replayed after a crash, the read
//! cache (`read_cache`) that keeps hot backend data on local flash, and
//! [`disk::Disk`], the engine with both in front, which front ends use.

pub mod disk;
pub mod journal;
pub mod read_cache;
