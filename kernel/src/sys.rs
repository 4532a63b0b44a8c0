//! Thin wrappers over the `bpf(2)` commands the agent drives itself: the dispatcher's maps and
//! program, links, pins, test runs and statistics. User programs are loaded through aya; the
//! plumbing around them is a handful of fixed-layout syscalls kept here in one place.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_OBJ_PIN: u32 = 6;
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_GET_NEXT_ID: u32 = 11;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_UPDATE: u32 = 29;
const BPF_ENABLE_STATS: u32 = 32;
const BPF_LINK_DETACH: u32 = 34;

/// `BPF_F_REPLACE`: a link update only succeeds if the link still runs the expected program.
const BPF_F_REPLACE: u32 = 1 << 2;

/// Kernel program types the agent handles (`enum bpf_prog_type`).
pub const PROG_TYPE_KPROBE: u32 = 2;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_TRACEPOINT: u32 = 5;
pub const PROG_TYPE_XDP: u32 = 6;

/// Attach types used with `BPF_LINK_CREATE` (`enum bpf_attach_type`).
pub const ATTACH_XDP: u32 = 37;
pub const ATTACH_PERF_EVENT: u32 = 41;
pub const ATTACH_TCX_INGRESS: u32 = 46;
pub const ATTACH_TCX_EGRESS: u32 = 47;

/// Map types (`enum bpf_map_type`).
pub const MAP_TYPE_ARRAY: u32 = 2;
pub const MAP_TYPE_PROG_ARRAY: u32 = 3;
pub const MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// A `bpf(2)` failure, naming the command.
#[derive(Debug, thiserror::Error)]
#[error("bpf({op}): {source}")]
pub struct SysError {
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

fn bpf(cmd: u32, attr: &mut [u64; 18], op: &'static str) -> Result<i64, SysError> {
    // SAFETY: attr is a zero-initialised buffer at least as large as every bpf_attr variant used
    // here, and the kernel reads/writes only within the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_long,
        )
    };
    if ret < 0 {
        Err(SysError {
            op,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(ret)
    }
}

fn fd_result(ret: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

/// Writes `value` at byte offset `off` of the attribute buffer (native endian).
fn put32(attr: &mut [u64; 18], off: usize, value: u32) {
    let bytes = attr_bytes(attr);
    bytes[off..off + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put64(attr: &mut [u64; 18], off: usize, value: u64) {
    let bytes = attr_bytes(attr);
    bytes[off..off + 8].copy_from_slice(&value.to_ne_bytes());
}

fn get32(attr: &[u64; 18], off: usize) -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: reading the plain bytes of an initialised u64 array.
    let bytes = unsafe { std::slice::from_raw_parts(attr.as_ptr().cast::<u8>(), 144) };
    b.copy_from_slice(&bytes[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn attr_bytes(attr: &mut [u64; 18]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64; the slice covers exactly the array.
    unsafe { std::slice::from_raw_parts_mut(attr.as_mut_ptr().cast::<u8>(), 144) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let clean: Vec<u8> = name
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .take(15)
        .collect();
    out[..clean.len()].copy_from_slice(&clean);
    out
}

fn put_name(attr: &mut [u64; 18], off: usize, name: &str) {
    let n = name16(name);
    attr_bytes(attr)[off..off + 16].copy_from_slice(&n);
}

/// Creates a map; `name` is truncated to the kernel's 15 characters.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd, SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, map_type);
    put32(&mut attr, 4, key_size);
    put32(&mut attr, 8, value_size);
    put32(&mut attr, 12, max_entries);
    put_name(&mut attr, 28, name);
    bpf(BPF_MAP_CREATE, &mut attr, "map_create").map(fd_result)
}

/// Sets `key` to `value` in a map (`BPF_ANY`).
pub fn map_update(map: &impl AsRawFd, key: &[u8], value: &[u8]) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, key.as_ptr() as u64);
    put64(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr, "map_update_elem").map(drop)
}

/// Reads `key` of a map into `value` (which must be the map's value size, times the number of
/// possible CPUs for per-CPU maps).
pub fn map_lookup(map: &impl AsRawFd, key: &[u8], value: &mut [u8]) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, key.as_ptr() as u64);
    put64(&mut attr, 16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr, "map_lookup_elem").map(drop)
}

/// Removes `key` from a map (for a prog array: empties the slot).
pub fn map_delete(map: &impl AsRawFd, key: &[u8]) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, key.as_ptr() as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr, "map_delete_elem").map(drop)
}

/// A program load failure with the verifier's log.
#[derive(Debug, thiserror::Error)]
#[error("the kernel verifier rejected program {name}: {source}")]
pub struct ProgLoadError {
    pub name: String,
    #[source]
    pub source: io::Error,
    pub verifier_log: String,
}

/// Loads raw instructions (8 bytes each) as a GPL program.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[u64],
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    prog_load_with(prog_type, expected_attach_type, insns, name, 0)
}

/// Loads a `fexit` tracing program on the kernel function with BTF id `attach_btf_id`.
pub fn prog_load_tracing(
    insns: &[u64],
    attach_btf_id: u32,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    const PROG_TYPE_TRACING: u32 = 26;
    const TRACE_FEXIT: u32 = 25;
    prog_load_with(PROG_TYPE_TRACING, TRACE_FEXIT, insns, name, attach_btf_id)
}

fn prog_load_with(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[u64],
    name: &str,
    attach_btf_id: u32,
) -> Result<OwnedFd, ProgLoadError> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, prog_type);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1); // log_level
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    put_name(&mut attr, 48, name);
    put32(&mut attr, 68, expected_attach_type);
    put32(&mut attr, 108, attach_btf_id);
    match bpf(BPF_PROG_LOAD, &mut attr, "prog_load") {
        Ok(fd) => Ok(fd_result(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(ProgLoadError {
                name: name.to_string(),
                source: e.source,
                verifier_log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

fn c_path(path: &Path) -> Result<CString, SysError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| SysError {
        op: "path",
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Pins a program, map or link at `path` on bpffs.
pub fn obj_pin(fd: &impl AsRawFd, path: &Path) -> Result<(), SysError> {
    let p = c_path(path)?;
    let mut attr = [0u64; 18];
    put64(&mut attr, 0, p.as_ptr() as u64);
    put32(&mut attr, 8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr, "obj_pin").map(drop)
}

/// Opens a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd, SysError> {
    let p = c_path(path)?;
    let mut attr = [0u64; 18];
    put64(&mut attr, 0, p.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr, "obj_get").map(fd_result)
}

/// Creates a link attaching `prog` (XDP on an ifindex, tcx on an ifindex, or a perf event fd).
pub fn link_create(
    prog: &impl AsRawFd,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd, SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 4, target);
    put32(&mut attr, 8, attach_type);
    put32(&mut attr, 12, flags);
    bpf(BPF_LINK_CREATE, &mut attr, "link_create").map(fd_result)
}

/// Atomically swaps the program a link runs; fails if it no longer runs `expected`.
pub fn link_update(
    link: &impl AsRawFd,
    new_prog: &impl AsRawFd,
    expected: Option<&dyn AsRawFd>,
) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, link.as_raw_fd() as u32);
    put32(&mut attr, 4, new_prog.as_raw_fd() as u32);
    if let Some(old) = expected {
        put32(&mut attr, 8, BPF_F_REPLACE);
        put32(&mut attr, 12, old.as_raw_fd() as u32);
    }
    bpf(BPF_LINK_UPDATE, &mut attr, "link_update").map(drop)
}

/// Detaches a link from its hook (the link object stays valid but inert).
pub fn link_detach(link: &impl AsRawFd) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, link.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr, "link_detach").map(drop)
}

/// The result of `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    pub retval: u32,
    /// Average nanoseconds per run as measured by the kernel.
    pub duration_ns: u32,
}

/// Runs a program on `data` `repeat` times in the kernel.
pub fn prog_test_run(prog: &impl AsRawFd, data: &[u8], repeat: u32) -> Result<TestRun, SysError> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 8, data.len() as u32);
    put32(&mut attr, 12, out.len() as u32);
    put64(&mut attr, 16, data.as_ptr() as u64);
    put64(&mut attr, 24, out.as_mut_ptr() as u64);
    put32(&mut attr, 32, repeat);
    bpf(BPF_PROG_TEST_RUN, &mut attr, "prog_test_run")?;
    Ok(TestRun {
        retval: get32(&attr, 4),
        duration_ns: get32(&attr, 36),
    })
}

/// Turns on run-time statistics (`run_time_ns`, `run_cnt`) for as long as the fd is open.
pub fn enable_stats() -> Result<OwnedFd, SysError> {
    let mut attr = [0u64; 18];
    bpf(BPF_ENABLE_STATS, &mut attr, "enable_stats").map(fd_result)
}

/// What the agent reads back about a loaded program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub name: String,
}

/// Reads a program's id and statistics.
pub fn prog_info(prog: &impl AsRawFd) -> Result<ProgInfo, SysError> {
    let mut info = [0u8; 232];
    obj_info(prog, &mut info)?;
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().unwrap_or_default());
    Ok(ProgInfo {
        prog_type: u32_at(0),
        id: u32_at(4),
        run_time_ns: u64_at(192),
        run_cnt: u64_at(200),
        name: {
            let n = &info[64..80];
            let end = n.iter().position(|b| *b == 0).unwrap_or(16);
            String::from_utf8_lossy(&n[..end]).into_owned()
        },
    })
}

fn obj_info(fd: &impl AsRawFd, info: &mut [u8]) -> Result<(), SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, fd.as_raw_fd() as u32);
    put32(&mut attr, 4, info.len() as u32);
    put64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, "obj_get_info_by_fd").map(drop)
}

/// Ids of the maps a program uses.
pub fn prog_map_ids(prog: &impl AsRawFd) -> Result<Vec<u32>, SysError> {
    let mut ids = vec![0u32; 64];
    let mut info = [0u8; 232];
    info[52..56].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    info[56..64].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    obj_info(prog, &mut info)?;
    let n = u32::from_ne_bytes(info[52..56].try_into().unwrap_or_default()) as usize;
    ids.truncate(n.min(64));
    Ok(ids)
}

/// Opens a map by id.
pub fn map_by_id(id: u32) -> Result<OwnedFd, SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, id);
    bpf(BPF_MAP_GET_FD_BY_ID, &mut attr, "map_get_fd_by_id").map(fd_result)
}

/// A map's definition as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: String,
}

/// Reads a map's definition.
pub fn map_info(map: &impl AsRawFd) -> Result<MapDef, SysError> {
    let mut info = [0u8; 96];
    obj_info(map, &mut info)?;
    let w = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap_or_default());
    let name = &info[24..40];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(MapDef {
        map_type: w(0),
        key_size: w(8),
        value_size: w(12),
        max_entries: w(16),
        map_flags: w(20),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// The id of the program a link currently runs.
pub fn link_prog_id(link: &impl AsRawFd) -> Result<u32, SysError> {
    let mut info = [0u8; 64];
    obj_info(link, &mut info)?;
    Ok(u32::from_ne_bytes(
        info[8..12].try_into().unwrap_or_default(),
    ))
}

/// Ids of every program loaded in the kernel.
pub fn loaded_prog_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    let mut start = 0u32;
    loop {
        let mut attr = [0u64; 18];
        put32(&mut attr, 0, start);
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr, "prog_get_next_id").is_err() {
            return ids;
        }
        start = get32(&attr, 4);
        ids.push(start);
    }
}

/// Opens a program by id.
pub fn prog_by_id(id: u32) -> Result<OwnedFd, SysError> {
    let mut attr = [0u64; 18];
    put32(&mut attr, 0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr, "prog_get_fd_by_id").map(fd_result)
}

/// Number of CPUs the kernel may bring up: per-CPU map values come in this many copies.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or(1)
}

fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut max = 0usize;
    for part in list.split(',') {
        let last = part.rsplit('-').next()?;
        max = max.max(last.trim().parse::<usize>().ok()? + 1);
    }
    Some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_parsing() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn names_are_sanitised_and_truncated() {
        assert_eq!(
            &name16("bpfship/dispatch-xdp-long-name")[..15],
            b"bpfshipdispatch"
        );
    }
}
