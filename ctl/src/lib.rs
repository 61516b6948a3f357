//! # lsvd-ctl
//!
//! The library half of `lsvdctl`, the lsvd command-line tool:
//! - [`catalog`]: finds images by name in a catalog directory (shared with the
//!   future `lsvd` daemon);
//! - [`pattern`]: the deterministic data pattern of `lsvdctl io write/verify`;
//! - [`output`]: tables, JSON and time formatting;
//! - [`cli`] and [`cmd`]: the argument grammar and the commands;
//! - [`daemon`]: the `lsvd` daemon serving images over NBD, and its
//!   control protocol.
//!
//! Exit codes of the tool: [`cmd::EXIT_OK`], [`cmd::EXIT_ERROR`],
//! [`cmd::EXIT_USAGE`], [`cmd::EXIT_DAMAGE`].

pub mod catalog;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod output;
pub mod pattern;
pub mod stores;
pub mod volume;
