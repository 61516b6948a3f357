//! lsvd's NBD front end (being written).
