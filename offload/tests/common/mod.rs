//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use lsvd_offload::{load_section, verify, Verified, VerifyError, VerifyErrorKind};

/// Path of a committed example object.
pub fn obj_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/bpf")
        .join(rel)
}

/// Code of section "offload" of a committed object.
pub fn load(rel: &str) -> Vec<u8> {
    let elf = std::fs::read(obj_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    load_section(&elf, "offload").unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Verifies and expects acceptance.
pub fn accept(code: &[u8]) -> Verified {
    verify(code).unwrap_or_else(|e| panic!("expected acceptance, got {e}"))
}

/// Verifies and expects a refusal of `kind`.
pub fn refuse(code: &[u8], kind: VerifyErrorKind) -> VerifyError {
    match verify(code) {
        Ok(v) => panic!("expected {kind:?}, program was accepted: {v:?}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "wrong refusal: {e}");
            e
        }
    }
}
