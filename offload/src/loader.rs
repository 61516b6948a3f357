//! ELF loader: extracts one named code section from a clang-compiled eBPF object
//! (`clang -O2 -target bpf -c`).
//!
//! Accepted: ELF64, little-endian, `EM_BPF`, object ≤ [`MAX_OBJECT_BYTES`], section ≤
//! [`crate::MAX_INSNS`] instructions. Relocations are refused (maps, globals, calls into
//! other sections) except `R_BPF_64_32` on a local call (`call` with src = 1) whose target
//! symbol lies in the same section and whose encoded pc-relative target is already right:
//! such calls need no patching.
//!
//! Entry point: the section's one global function symbol (or offset 0 if it has none).
//! clang may place static functions before it; the loader then moves the entry function
//! to slot 0 and re-targets the pc-relative local calls (functions are self-contained, so
//! no other instruction needs patching). The returned code always starts at its entry.

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
            .filter(|_| (offset as usize).is_multiple_of(INSN_SIZE))
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
    let funcs = functions(&file, &sec, code.len() as u64)?;
    entry_first(code, &funcs)
}

/// A function symbol of the section: byte range and whether it is global.
#[derive(Debug, Clone, Copy)]
struct Func {
    start: u64,
    end: u64,
    global: bool,
}

fn functions<'d>(
    file: &object::File<'d>,
    sec: &object::Section<'d, '_>,
    len: u64,
) -> Result<Vec<Func>, LoadError> {
    let mut funcs: Vec<Func> = file
        .symbols()
        .filter(|s| s.section_index() == Some(sec.index()) && s.kind() == object::SymbolKind::Text)
        .map(|s| Func {
            start: s.address(),
            end: s.address().saturating_add(s.size()),
            global: s.is_global(),
        })
        .collect();
    funcs.sort_by_key(|f| f.start);
    funcs.dedup_by_key(|f| f.start);
    if funcs.iter().filter(|f| f.global).count() > 1 {
        return Err(LoadError::BadElf(
            "more than one global function in the section: the entry is ambiguous".into(),
        ));
    }
    for f in &funcs {
        if f.end > len || f.start % INSN_SIZE as u64 != 0 || f.end % INSN_SIZE as u64 != 0 {
            return Err(LoadError::BadElf(format!(
                "function symbol {:#x}..{:#x} does not fit the section",
                f.start, f.end
            )));
        }
    }
    Ok(funcs)
}

/// Moves the global function to slot 0, patching local calls.
fn entry_first(code: &[u8], funcs: &[Func]) -> Result<Vec<u8>, LoadError> {
    let Some(entry) = funcs.iter().find(|f| f.global).copied() else {
        return Ok(code.to_vec());
    };
    if entry.start == 0 {
        return Ok(code.to_vec());
    }
    // Moving needs functions that tile the section exactly.
    let tiles = funcs.first().map(|f| f.start) == Some(0)
        && funcs.windows(2).all(|w| w[0].end == w[1].start)
        && funcs.last().map(|f| f.end) == Some(code.len() as u64);
    if !tiles {
        return Err(LoadError::BadElf(
            "entry function is not at offset 0 and function symbols do not tile the section".into(),
        ));
    }
    let n = insn_count(code);
    let mut order: Vec<Func> = vec![entry];
    order.extend(funcs.iter().filter(|f| f.start != entry.start));
    // new_index[old slot] = new slot.
    let mut new_index = vec![0usize; n];
    let mut out = Vec::with_capacity(code.len());
    for f in &order {
        let (a, b) = (f.start as usize / INSN_SIZE, f.end as usize / INSN_SIZE);
        for (old, slot) in new_index.iter_mut().enumerate().take(b).skip(a) {
            *slot = out.len() / INSN_SIZE + (old - a);
        }
        out.extend_from_slice(&code[f.start as usize..f.end as usize]);
    }
    let mut i = 0;
    while i < n {
        let ins = Insn::at(code, i).ok_or_else(|| LoadError::BadElf("truncated code".into()))?;
        if ins.op == crate::insn::LDDW {
            i += 2;
            continue;
        }
        if ins.op == CALL && ins.src == 1 {
            let t = i as i64 + 1 + ins.imm as i64;
            if t < 0 || t as usize >= n {
                return Err(LoadError::BadElf(format!(
                    "local call at {i} targets {t}, outside the code"
                )));
            }
            let rel = new_index[t as usize] as i64 - new_index[i] as i64 - 1;
            let p = new_index[i] * INSN_SIZE;
            let imm =
                i32::try_from(rel).map_err(|_| LoadError::BadElf("call offset overflow".into()))?;
            out[p + 4..p + 8].copy_from_slice(&imm.to_le_bytes());
        }
        i += 1;
    }
    Ok(out)
}
