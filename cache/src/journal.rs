//! Write journal (being written).
