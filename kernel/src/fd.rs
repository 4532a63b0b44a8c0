//! Typed descriptors for the three kinds of kernel object the agent holds: programs, maps and
//! links. Each wraps an owned file descriptor the kernel returned for that kind of object, so a
//! map cannot be passed where a program is expected, and every operation is one `bpf(2)`
//! command with a layout fixed in [`crate::sys`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use crate::KernelError;
use crate::sys;

pub use crate::sys::{MapDef, ProgInfo, TestRun};

macro_rules! descriptor {
    ($name:ident) => {
        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }
        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }
        impl $name {
            /// Pins the object at `path` on bpffs (the path must be free).
            pub fn pin(&self, path: &Path) -> Result<(), KernelError> {
                Ok(sys::obj_pin(&self.0, path)?)
            }

            /// A second descriptor for the same kernel object.
            pub fn try_clone(&self) -> Result<Self, KernelError> {
                self.0
                    .try_clone()
                    .map($name)
                    .map_err(|e| KernelError::Io(stringify!($name).into(), e))
            }
        }
    };
}

/// A loaded BPF program.
#[derive(Debug)]
pub struct ProgramFd(OwnedFd);
descriptor!(ProgramFd);

/// A BPF map, with the definition the kernel reported when it was opened.
#[derive(Debug)]
pub struct MapFd(OwnedFd, MapDef);
impl AsFd for MapFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl AsRawFd for MapFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A BPF link: a program attached to a hook, pinnable and atomically retargetable.
#[derive(Debug)]
pub struct LinkFd(OwnedFd);
descriptor!(LinkFd);

impl ProgramFd {
    /// Wraps a descriptor the kernel (or aya) returned for a program.
    pub(crate) fn from_owned(fd: OwnedFd) -> Self {
        ProgramFd(fd)
    }

    /// Opens a program pinned at `path`; refuses anything pinned there that is not a program.
    pub fn open_pinned(path: &Path) -> Result<Self, KernelError> {
        let fd = sys::obj_get(path)?;
        sys::prog_info(&fd).map_err(|_| KernelError::NotA {
            path: path.into(),
            kind: "program",
        })?;
        Ok(ProgramFd(fd))
    }

    /// Loads raw instructions (8 bytes each) as a GPL program; a refusal carries the verifier's
    /// log.
    pub fn load(
        prog_type: u32,
        expected_attach_type: u32,
        insns: &[u64],
        name: &str,
    ) -> Result<Self, KernelError> {
        Ok(ProgramFd(sys::prog_load(
            prog_type,
            expected_attach_type,
            insns,
            name,
        )?))
    }

    /// Opens a loaded program by id.
    pub fn by_id(id: u32) -> Result<Self, KernelError> {
        Ok(ProgramFd(sys::prog_by_id(id)?))
    }

    /// The program's id, type, name and run-time statistics.
    pub fn info(&self) -> Result<ProgInfo, KernelError> {
        Ok(sys::prog_info(&self.0)?)
    }

    /// Runs the program `repeat` times on `data` in the kernel (`BPF_PROG_TEST_RUN`).
    pub fn test_run(&self, data: &[u8], repeat: u32) -> Result<TestRun, KernelError> {
        Ok(sys::prog_test_run(&self.0, data, repeat)?)
    }

    /// The maps the program uses, each opened with its definition.
    pub fn maps(&self) -> Result<Vec<MapFd>, KernelError> {
        sys::prog_map_ids(&self.0)?
            .into_iter()
            .map(MapFd::by_id)
            .collect()
    }

    /// The map named `name` among the program's maps, if it uses one.
    pub fn map_named(&self, name: &str) -> Result<Option<MapFd>, KernelError> {
        Ok(self.maps()?.into_iter().find(|m| m.def().name == name))
    }
}

/// Ids of every program loaded in the kernel.
pub fn loaded_program_ids() -> Vec<u32> {
    sys::loaded_prog_ids()
}

impl MapFd {
    fn new(fd: OwnedFd) -> Result<Self, KernelError> {
        let def = sys::map_info(&fd)?;
        Ok(MapFd(fd, def))
    }

    /// Opens a map pinned at `path`; refuses anything pinned there that is not a map.
    pub fn open_pinned(path: &Path) -> Result<Self, KernelError> {
        let fd = sys::obj_get(path)?;
        MapFd::new(fd).map_err(|_| KernelError::NotA {
            path: path.into(),
            kind: "map",
        })
    }

    /// Opens a map by id.
    pub fn by_id(id: u32) -> Result<Self, KernelError> {
        MapFd::new(sys::map_by_id(id)?)
    }

    /// Creates a map.
    pub(crate) fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<Self, KernelError> {
        MapFd::new(sys::map_create(
            map_type,
            key_size,
            value_size,
            max_entries,
            name,
        )?)
    }

    /// The map's definition (type, key and value size, entries, flags, name).
    pub fn def(&self) -> &MapDef {
        &self.1
    }

    /// Pins the map at `path` on bpffs (the path must be free).
    pub fn pin(&self, path: &Path) -> Result<(), KernelError> {
        Ok(sys::obj_pin(&self.0, path)?)
    }
}

impl LinkFd {
    pub(crate) fn from_owned(fd: OwnedFd) -> Self {
        LinkFd(fd)
    }

    /// Opens a link pinned at `path`; refuses anything pinned there that is not a link.
    pub fn open_pinned(path: &Path) -> Result<Self, KernelError> {
        let fd = sys::obj_get(path)?;
        sys::link_prog_id(&fd).map_err(|_| KernelError::NotA {
            path: path.into(),
            kind: "link",
        })?;
        Ok(LinkFd(fd))
    }

    /// The id of the program the link runs now.
    pub fn program_id(&self) -> Result<u32, KernelError> {
        Ok(sys::link_prog_id(&self.0)?)
    }

    /// Atomically makes the link run `new`; fails (and changes nothing) unless it still runs
    /// `expected`.
    pub fn replace(&self, new: &ProgramFd, expected: &ProgramFd) -> Result<(), KernelError> {
        Ok(sys::link_update(&self.0, &new.0, Some(&expected.0))?)
    }

    /// Detaches the link from its hook (the link object stays valid but inert).
    pub fn detach(&self) -> Result<(), KernelError> {
        Ok(sys::link_detach(&self.0)?)
    }
}

/// Keeps `BPF_ENABLE_STATS` on (run time and run count per program) while it lives.
#[derive(Debug)]
pub struct StatsGuard {
    _fd: OwnedFd,
}

impl StatsGuard {
    /// Turns run-time statistics on.
    pub fn enable() -> Result<Self, KernelError> {
        Ok(StatsGuard {
            _fd: sys::enable_stats()?,
        })
    }
}
