//! lsvdctl library part
