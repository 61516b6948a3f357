//! lsvd's ublk front end (being written).
