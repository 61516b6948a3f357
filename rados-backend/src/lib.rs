//! lsvd's RADOS segment store (being written).
