//! Read cache (being written).
