//! (being written)
#[derive(Debug)]
pub struct ZonedFile;
