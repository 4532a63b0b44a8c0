//! uprobes: the file offset of a function in an ELF executable or library, and a perf-event link
//! that runs a program at its entry in every process.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

use crate::{KernelError, LinkFd, ProgramFd};

/// The file offset of `symbol`'s entry in the ELF file at `binary` (symbol table, then the
/// dynamic symbol table).
pub fn symbol_offset(binary: &Path, symbol: &str) -> Result<u64, KernelError> {
    let io = |e| KernelError::Io(binary.to_owned(), e);
    let data = std::fs::read(binary).map_err(io)?;
    let file = object::File::parse(&*data)
        .map_err(|e| KernelError::Object(format!("{}: {e}", binary.display())))?;
    let found = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(symbol) && s.address() != 0 && s.is_definition());
    let sym = found.ok_or_else(|| {
        KernelError::Object(format!("{}: no function named {symbol}", binary.display()))
    })?;
    let section = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| KernelError::Object(format!("{symbol}: not in a section")))?;
    let (file_off, _) = section
        .file_range()
        .ok_or_else(|| KernelError::Object(format!("{symbol}: its section has no file data")))?;
    sym.address()
        .checked_sub(section.address())
        .and_then(|d| d.checked_add(file_off))
        .ok_or_else(|| KernelError::Object(format!("{symbol}: address outside its section")))
}

fn uprobe_pmu_type() -> Result<u32, KernelError> {
    let p = Path::new("/sys/bus/event_source/devices/uprobe/type");
    std::fs::read_to_string(p)
        .map_err(|e| KernelError::Io(p.to_owned(), e))?
        .trim()
        .parse()
        .map_err(|_| KernelError::Object(format!("{}: not a number", p.display())))
}

/// Attaches `prog` (a kprobe-type program) at the entry of `symbol` in `binary`.
pub fn attach(binary: &Path, symbol: &str, prog: &ProgramFd) -> Result<LinkFd, KernelError> {
    let offset = symbol_offset(binary, symbol)?;
    let path = std::ffi::CString::new(binary.as_os_str().as_encoded_bytes())
        .map_err(|_| KernelError::Object("binary path contains a NUL byte".into()))?;
    let mut attr = [0u64; 16];
    attr[0] = u64::from(uprobe_pmu_type()?) | (128u64 << 32); // type, size
    attr[7] = path.as_ptr() as u64; // config1: uprobe_path
    attr[8] = offset; // config2: probe_offset
    let perf = super::perf_event_open(&attr)?;
    // `path` must outlive the syscall above; the link keeps its own reference to the event.
    drop(path);
    crate::link_perf_event(prog, &perf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_libc_function() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !libc.exists() {
            bpfship_test_support::skip(bpfship_test_support::Missing::Setup(format!(
                "no {}",
                libc.display()
            )));
            return;
        }
        let off = symbol_offset(libc, "getpid").unwrap();
        assert!(off > 0 && off < std::fs::metadata(libc).unwrap().len());
        assert!(symbol_offset(libc, "no_such_function_anywhere").is_err());
    }
}
