//! aya 0.14 refuses libbpf section names it does not know (`tc`, `tcx/ingress`…). Before
//! loading, the agent renames such sections in a private copy of the ELF (a new section-name
//! table appended at the end; nothing else moves) and reports what it renamed.

use bpfship_verifier::ebpf::aya_section_name;

/// A section renamed for aya.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Renamed {
    pub from: String,
    pub to: String,
}

pub(crate) fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
pub(crate) fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
pub(crate) fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

pub(crate) fn name_at(strtab: &[u8], off: u32) -> Option<&str> {
    let rest = strtab.get(off as usize..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// A renamed private copy of an object and what was renamed.
pub type RenamedCopy = (Vec<u8>, Vec<Renamed>);

/// Returns the object unchanged (`None`) when no section needs a new name, else the renamed
/// copy. Only little-endian ELF64 objects are handled (what the validator accepts).
pub fn for_aya(elf: &[u8]) -> Result<Option<RenamedCopy>, String> {
    let bad = || "malformed ELF section headers".to_string();
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Ok(None);
    }
    let shoff = u64_at(elf, 0x28).ok_or_else(bad)? as usize;
    let shentsize = u16_at(elf, 0x3a).ok_or_else(bad)? as usize;
    let shnum = u16_at(elf, 0x3c).ok_or_else(bad)? as usize;
    let shstrndx = u16_at(elf, 0x3e).ok_or_else(bad)? as usize;
    if shentsize < 0x40 || shstrndx >= shnum {
        return Err(bad());
    }
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strhdr = header(shstrndx).ok_or_else(bad)?;
    let str_off = u64_at(elf, strhdr + 0x18).ok_or_else(bad)? as usize;
    let str_size = u64_at(elf, strhdr + 0x20).ok_or_else(bad)? as usize;
    let strtab = elf
        .get(str_off..str_off.checked_add(str_size).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    let mut renames = Vec::new();
    for i in 0..shnum {
        let h = header(i).ok_or_else(bad)?;
        let name = name_at(strtab, u32_at(elf, h).ok_or_else(bad)?).ok_or_else(bad)?;
        if let Some(to) = aya_section_name(name) {
            renames.push((h, name.to_string(), to));
        }
    }
    if renames.is_empty() {
        return Ok(None);
    }
    let mut out = elf.to_vec();
    let mut new_strtab = strtab.to_vec();
    let mut renamed = Vec::new();
    for (h, from, to) in renames {
        let off = new_strtab.len() as u32;
        new_strtab.extend_from_slice(to.as_bytes());
        new_strtab.push(0);
        out[h..h + 4].copy_from_slice(&off.to_le_bytes());
        renamed.push(Renamed {
            from,
            to: to.to_string(),
        });
    }
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let new_off = out.len() as u64;
    out.extend_from_slice(&new_strtab);
    out[strhdr + 0x18..strhdr + 0x20].copy_from_slice(&new_off.to_le_bytes());
    out[strhdr + 0x20..strhdr + 0x28].copy_from_slice(&(new_strtab.len() as u64).to_le_bytes());
    Ok(Some((out, renamed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_and_truncated_input() {
        assert_eq!(for_aya(b"not an elf"), Ok(None));
        let mut fake = b"\x7fELF\x02\x01".to_vec();
        fake.resize(0x40, 0);
        assert!(for_aya(&fake).is_err());
    }
}
