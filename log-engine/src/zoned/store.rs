//! (being written)
#[derive(Debug)]
pub struct ZonedStore;
