//! ELF loader: extracts one named code section from a clang-compiled eBPF object
//! (`clang -O2 -target bpf -c`).
//!
//! Accepted: ELF64, little-endian, `EM_BPF`, object ≤ [`MAX_OBJECT_BYTES`], section ≤
//! [`crate::MAX_INSNS`] instructions. Relocations are refused (maps, globals, calls into
//! other sections) except `R_BPF_64_32` on a local call (`call` with src = 1) whose target
//! symbol lies in the same section and whose encoded pc-relative target is already right:
//! such calls need no patching.

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};

use crate::insn::{insn_count, Insn, CALL, INSN_SIZE};
use crate::MAX_INSNS;

/// Largest object file accepted.
pub const MAX_OBJECT_BYTES: usize = 1 << 20;
/// `EM_BPF`.
const EM_BPF: u16 = 247;
/// `R_BPF_64_32` (clang emits it for calls).
const R_BPF_64_32: u32 = 10;

/// Why an object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not a 64-bit little-endian eBPF ELF object, or malformed.
    #[error("bad ELF object: {0}")]
    BadElf(String),
    /// The requested section does not exist.
    #[error("no section named {0:?}")]
    NoSection(String),
    /// A relocation that would need patching (maps, globals, cross-section calls).
    #[error("relocation at section offset {offset:#x} refused: {detail}")]
    Relocation {
        /// Byte offset inside the section.
        offset: u64,
        /// What the relocation refers to.
        detail: String,
    },
    /// Object or section over the limits.
    #[error("too large: {0}")]
    TooLarge(String),
}

/// Returns the instruction bytes of section `section` of the ELF object `elf`.
pub fn load_section(elf: &[u8], section: &str) -> Result<Vec<u8>, LoadError> {
    if elf.len() > MAX_OBJECT_BYTES {
        return Err(LoadError::TooLarge(format!(
            "object is {} bytes, more than {MAX_OBJECT_BYTES}",
            elf.len()
        )));
    }
    // Check the raw header first: object's parser accepts other machines and classes.
    let hdr = elf
        .get(..20)
        .ok_or_else(|| LoadError::BadElf("shorter than an ELF header".into()))?;
    if &hdr[..4] != b"\x7fELF" {
        return Err(LoadError::BadElf("no ELF magic".into()));
    }
    if hdr[4] != 2 {
        return Err(LoadError::BadElf("not ELF64".into()));
    }
    if hdr[5] != 1 {
        return Err(LoadError::BadElf("not little-endian".into()));
    }
    let machine = u16::from_le_bytes([hdr[18], hdr[19]]);
    if machine != EM_BPF {
        return Err(LoadError::BadElf(format!(
            "e_machine {machine} is not EM_BPF ({EM_BPF})"
        )));
    }
    let file = object::File::parse(elf).map_err(|e| LoadError::BadElf(e.to_string()))?;
    let sec = file
        .section_by_name(section)
        .ok_or_else(|| LoadError::NoSection(section.to_string()))?;
    let code = sec
        .data()
        .map_err(|e| LoadError::BadElf(format!("section {section:?}: {e}")))?;
    if code.is_empty() || code.len() % INSN_SIZE != 0 {
        return Err(LoadError::BadElf(format!(
            "section {section:?} is {} bytes, not a non-zero multiple of 8",
            code.len()
        )));
    }
    let n = insn_count(code);
    if n > MAX_INSNS {
        return Err(LoadError::TooLarge(format!(
            "section {section:?} has {n} instructions, more than {MAX_INSNS}"
        )));
    }
    for (offset, rel) in sec.relocations() {
        let refuse = |detail: String| LoadError::Relocation { offset, detail };
        let r_type = match rel.flags() {
            RelocationFlags::Elf { r_type } => r_type,
            other => return Err(refuse(format!("unexpected relocation kind {other:?}"))),
        };
        let sym_idx = match rel.target() {
            RelocationTarget::Symbol(i) => i,
            other => return Err(refuse(format!("relocation target {other:?}"))),
        };
        let sym = file
            .symbol_by_index(sym_idx)
            .map_err(|e| refuse(format!("bad symbol: {e}")))?;
        let name = sym.name().unwrap_or("?").to_string();
        if r_type != R_BPF_64_32 {
            return Err(refuse(format!(
                "type {r_type} against {name:?} (maps and globals are not supported)"
            )));
        }
        if sym.section_index() != Some(sec.index()) {
            return Err(refuse(format!(
                "call into {name:?} in another section (put all functions in {section:?})"
            )));
        }
        let idx = (offset as usize) / INSN_SIZE;
        let ins = Insn::at(code, idx)
            .filter(|_| offset as usize % INSN_SIZE == 0)
            .ok_or_else(|| refuse("offset outside the code".into()))?;
        if ins.op != CALL || ins.src != 1 {
            return Err(refuse(format!(
                "R_BPF_64_32 on a non-call instruction against {name:?}"
            )));
        }
        let tgt = idx as i64 + 1 + ins.imm as i64;
        if tgt < 0 || tgt as usize >= n {
            return Err(refuse(format!(
                "local call target {tgt} outside the section"
            )));
        }
        if sym.kind() == object::SymbolKind::Text && sym.address() != tgt as u64 * INSN_SIZE as u64
        {
            return Err(refuse(format!(
                "local call to {name:?} at {:#x} is not resolved (encoded target {:#x})",
                sym.address(),
                tgt * INSN_SIZE as i64
            )));
        }
    }
    Ok(code.to_vec())
}
