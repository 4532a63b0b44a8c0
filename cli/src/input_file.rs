//! The bytes of a local file that `validate` and `inspect` read. A large file (a 40 MB WASM
//! module) is mapped read-only instead of copied: copying it, and faulting in and zeroing the
//! buffer it is copied into, cost more CPU than anything but the body validation itself.
//!
//! A mapped file can still be changed by another process while it is read. Two guards keep that
//! from ever producing a crash or a verdict on bytes that were not the file's:
//! * a truncation makes reading past the new end raise `SIGBUS`; a handler names the file on
//!   stderr and exits with 2 (I/O error) instead of the default core dump;
//! * [`InputFile::changed`] compares the file's size and times with those taken when it was
//!   opened, so a verdict on a file rewritten meanwhile is replaced by an error.
//!
//! `push` does not use this: what it uploads and hashes must be one stable copy.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Files at least this big are mapped; smaller ones are read (a mapping costs two system calls
/// and a slot in the `SIGBUS` table).
pub const MAP_MIN: u64 = 1 << 20;

/// The most read from something that is not a regular file (a pipe, a device): `/dev/zero` never
/// ends.
pub const STREAM_MAX: u64 = 256 << 20;

/// A file's bytes: read into memory, or mapped.
pub struct InputFile {
    bytes: Bytes,
    file: File,
    opened: Metadata,
}

enum Bytes {
    Read(Vec<u8>),
    Mapped(Mapping),
}

impl InputFile {
    /// Opens `path` and reads or maps all of it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let opened = file.metadata()?;
        let map_len = usize::try_from(opened.len())
            .ok()
            .filter(|_| opened.is_file() && opened.len() >= MAP_MIN);
        let mapped = map_len.and_then(|len| Mapping::new(&file, len, path));
        let bytes = match mapped {
            Some(m) => Bytes::Mapped(m),
            None => Bytes::Read(read_open(&mut file, &opened)?),
        };
        Ok(Self {
            bytes,
            file,
            opened,
        })
    }

    /// Whether the bytes are a mapping of the file rather than a copy.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }

    /// Whether a mapped file was modified since it was opened (size, modification or change
    /// time differ), so that what was read may not be what the file holds. A copy never changes.
    pub fn changed(&self) -> io::Result<bool> {
        if !self.is_mapped() {
            return Ok(false);
        }
        let now = self.file.metadata()?;
        let stamp = |m: &Metadata| {
            (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        };
        Ok(stamp(&now) != stamp(&self.opened))
    }
}

impl std::ops::Deref for InputFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m.bytes(),
        }
    }
}

/// Reads all of a file into memory, as `std::fs::read` does, except that something other than a
/// regular file (a pipe, a device) is read up to [`STREAM_MAX`] only: `/dev/zero` never ends.
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    read_open(&mut file, &meta)
}

fn read_open(file: &mut File, meta: &Metadata) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if meta.is_file() {
        file.read_to_end(&mut buf)?;
        return Ok(buf);
    }
    file.take(STREAM_MAX + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > STREAM_MAX {
        return Err(io::Error::other(format!(
            "more than {} MiB to read from something that is not a regular file",
            STREAM_MAX >> 20
        )));
    }
    Ok(buf)
}

/// A read-only private mapping of a whole file, registered with the `SIGBUS` guard while it lives.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    slot: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` into it across threads
// is what the validators' worker threads do.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len > 0` bytes of `file`; `None` when the kernel refuses (the caller reads instead)
    /// or every guard slot is taken.
    fn new(file: &File, len: usize, path: &Path) -> Option<Self> {
        install_sigbus_guard();
        // SAFETY: a fresh read-only private mapping of an open file; no Rust object aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let message = format!(
            "bpfship: error: {}: the file was truncated while it was being read; nothing was \
             validated\n",
            path.display()
        );
        match GUARDS.register(ptr as usize, len, message) {
            Some(slot) => Some(Self { ptr, len, slot }),
            None => {
                // SAFETY: unmapping the mapping made above, which nothing references.
                unsafe { libc::munmap(ptr, len) };
                None
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for as long as `self` lives. Another process
        // can still change the file underneath; `InputFile::changed` reports that, and the
        // `SIGBUS` guard handles a truncation.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        GUARDS.unregister(self.slot);
        // SAFETY: the slice borrowed from this mapping cannot outlive `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// How many files can be mapped at once; beyond that, files are read.
const SLOTS: usize = 64;

/// The live mappings, readable from a signal handler: address range and the message to print.
struct Guards {
    start: [AtomicUsize; SLOTS],
    len: [AtomicUsize; SLOTS],
    message: [AtomicPtr<String>; SLOTS],
}

static GUARDS: Guards = Guards {
    start: [const { AtomicUsize::new(0) }; SLOTS],
    len: [const { AtomicUsize::new(0) }; SLOTS],
    message: [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS],
};

impl Guards {
    fn register(&self, start: usize, len: usize, message: String) -> Option<usize> {
        let message = Box::into_raw(Box::new(message));
        for slot in 0..SLOTS {
            if self.message[slot]
                .compare_exchange(
                    std::ptr::null_mut(),
                    message,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.len[slot].store(len, Ordering::Release);
                self.start[slot].store(start, Ordering::Release);
                return Some(slot);
            }
        }
        // SAFETY: `message` came from `Box::into_raw` above and was never shared.
        drop(unsafe { Box::from_raw(message) });
        None
    }

    fn unregister(&self, slot: usize) {
        self.start[slot].store(0, Ordering::Release);
        self.len[slot].store(0, Ordering::Release);
        let message = self.message[slot].swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !message.is_null() {
            // SAFETY: the pointer came from `Box::into_raw` in `register`, and the slot no longer
            // hands it out. A handler that read it before the swap runs on a thread that is
            // faulting on this very mapping, which `Mapping::drop` cannot be unmapping meanwhile.
            drop(unsafe { Box::from_raw(message) });
        }
    }

    /// The message for the mapping holding `addr`.
    fn message_for(&self, addr: usize) -> Option<&String> {
        (0..SLOTS).find_map(|slot| {
            let start = self.start[slot].load(Ordering::Acquire);
            let len = self.len[slot].load(Ordering::Acquire);
            if start == 0 || addr < start || addr - start >= len {
                return None;
            }
            let message = self.message[slot].load(Ordering::Acquire);
            // SAFETY: non-null messages stay allocated while their slot is registered.
            (!message.is_null()).then(|| unsafe { &*message })
        })
    }
}

fn install_sigbus_guard() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: installs a handler that only does async-signal-safe things (atomic loads,
        // write(2), _exit(2), restoring the default action).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

/// A `SIGBUS` inside a mapped input file: the file shrank under us. Says so and exits with 2;
/// any other `SIGBUS` gets the default action when the faulting access is retried.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    match GUARDS.message_for(addr) {
        Some(message) => {
            // SAFETY: write(2) and _exit(2) are async-signal-safe.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(2);
            }
        }
        None => {
            // SAFETY: restoring the default action is async-signal-safe.
            unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        f
    }

    #[test]
    fn small_files_are_read_and_large_ones_mapped_with_the_same_bytes() {
        let small = file_of(100);
        let input = InputFile::open(small.path()).unwrap();
        assert!(!input.is_mapped());
        assert_eq!(&input[..], &std::fs::read(small.path()).unwrap()[..]);
        let large = file_of(MAP_MIN as usize + 4097);
        let input = InputFile::open(large.path()).unwrap();
        assert!(input.is_mapped());
        assert_eq!(&input[..], &std::fs::read(large.path()).unwrap()[..]);
        assert!(!input.changed().unwrap());
    }

    #[test]
    fn a_rewrite_while_mapped_is_reported_as_a_change() {
        let large = file_of(MAP_MIN as usize);
        let input = InputFile::open(large.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(large.path())
            .unwrap();
        std::io::Write::write_all(&mut f, b"rewritten").unwrap();
        drop(f);
        assert!(input.changed().unwrap());
    }

    #[test]
    fn every_slot_is_freed_when_its_mapping_is_dropped() {
        let large = file_of(MAP_MIN as usize);
        for _ in 0..SLOTS * 2 {
            assert!(InputFile::open(large.path()).unwrap().is_mapped());
        }
    }

    /// The child half of the next test: maps a file, truncates it, then reads past the new end.
    #[test]
    fn sigbus_child() {
        let Some(path) = std::env::var_os("BPFSHIP_SIGBUS_CHILD") else {
            return;
        };
        let input = InputFile::open(Path::new(&path)).unwrap();
        assert!(input.is_mapped());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let sum: u64 = input.iter().map(|&b| u64::from(b)).sum();
        panic!("read {sum} from a truncated mapping without SIGBUS");
    }

    #[test]
    fn a_truncation_while_mapped_exits_with_2_naming_the_file() {
        let large = file_of(MAP_MIN as usize * 2);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "input_file::tests::sigbus_child", "--nocapture"])
            .env("BPFSHIP_SIGBUS_CHILD", large.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}: the file was truncated while it was being read",
                large.path().display()
            )),
            "stderr: {stderr}"
        );
    }
}
