//! bpfship-kernel: everything bpfship does in the kernel. Loading a version (aya, after the
//! section renamer), the canary dispatcher and its assembler, hook links (XDP, tcx,
//! tracepoints, uprobes), pins, statistics, and `validate --kernel`'s probe. No policy and no
//! network here.
//!
//! The raw `bpf(2)` layer is private: callers get typed descriptors ([`ProgramFd`],
//! [`MapFd`], [`LinkFd`]) and typed map handles ([`maps`]) that check a map's type, key size
//! and value size before any lookup.

pub mod asm;
pub mod dispatcher;
pub mod fd;
pub mod health;
pub mod hook;
pub mod instrument;
pub mod maps;
pub mod probe;
pub mod rename;
mod sys;
pub mod uprobe;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use dispatcher::{DispatchConfig, Dispatcher, HookKind, SlotCounters, SplitMode};
pub use fd::{LinkFd, MapFd, ProgramFd, StatsGuard, loaded_program_ids};
pub use maps::MapShapeError;
pub use sys::{ProgLoadError, SysError};

/// A kernel-side failure, with what the agent was doing.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error(transparent)]
    DispatcherRejected(#[from] sys::ProgLoadError),
    #[error("the kernel verifier rejected program {program}: {reason}")]
    VerifierRejected {
        program: String,
        reason: String,
        verifier_log: String,
    },
    #[error("cannot load the object: {0}")]
    Object(String),
    #[error("program {0} is not in the object")]
    NoSuchProgram(String),
    #[error("program {program} is a {found} program; the hook needs {expected}")]
    WrongProgramType {
        program: String,
        found: String,
        expected: String,
    },
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("tracepoint {0} does not exist (is tracefs mounted at /sys/kernel/tracing?)")]
    NoSuchTracepoint(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{}: what is pinned there is not a {kind}", path.display())]
    NotA { path: PathBuf, kind: &'static str },
    #[error(transparent)]
    MapShape(#[from] MapShapeError),
    #[error(transparent)]
    HealthMap(health::NotHealthMap),
    #[error(
        "the version declares a map named {0}, a name reserved for the agent's verdict counters"
    )]
    ReservedMapName(&'static str),
}

impl KernelError {
    /// The verifier's log when this failure is a verifier rejection.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            KernelError::VerifierRejected { verifier_log, .. } => Some(verifier_log),
            KernelError::DispatcherRejected(e) => Some(&e.verifier_log),
            _ => None,
        }
    }
}

/// One version's program, loaded and verified by the kernel, not attached.
#[derive(Debug)]
pub struct LoadedProgram {
    pub fd: ProgramFd,
    pub id: u32,
    /// Sections renamed so aya could load the object (`tc` → `classifier`…).
    pub renamed: Vec<rename::Renamed>,
    /// How its verdicts are counted; `None` when counting was not asked for.
    pub verdicts: Option<instrument::VerdictCounting>,
}

impl LoadedProgram {
    /// Opens a program pinned at `path`.
    pub fn open_pinned(path: &Path) -> Result<Self, KernelError> {
        let fd = ProgramFd::open_pinned(path)?;
        let id = fd.info()?.id;
        let verdicts = instrument::VerdictMap::of(&fd)?
            .map(|m| m.rewrite())
            .transpose()?
            .map(instrument::VerdictCounting::Instrumented);
        Ok(LoadedProgram {
            fd,
            id,
            renamed: Vec::new(),
            verdicts,
        })
    }

    /// Pins the program at `path` (replacing nothing: the path must be free).
    pub fn pin(&self, path: &Path) -> Result<(), KernelError> {
        self.fd.pin(path)
    }

    /// Kernel statistics for the program (meaningful while stats are enabled).
    pub fn info(&self) -> Result<fd::ProgInfo, KernelError> {
        self.fd.info()
    }

    /// Events per verdict bucket so far (`None` when the version is not instrumented).
    pub fn verdict_counts(&self) -> Option<instrument::VerdictValue> {
        match &self.verdicts {
            Some(instrument::VerdictCounting::Instrumented(_)) => {
                instrument::VerdictMap::of(&self.fd).ok()??.counts().ok()
            }
            _ => None,
        }
    }
}

/// Loads `program` from an ELF object through the kernel verifier, unmodified, with the
/// object's pinned-by-name maps in `map_pin_dir` (never the global bpffs root). The object must
/// already have been checked by the validator: aya-obj is not safe on arbitrary bytes, and a
/// panic in it is caught here and reported as an error.
pub fn load_program(
    elf: &[u8],
    program: &str,
    kind: HookKind,
    map_pin_dir: &Path,
) -> Result<LoadedProgram, KernelError> {
    let (elf, renamed) = for_aya(elf, map_pin_dir)?;
    let fd = load_with_aya(&elf, program, kind, map_pin_dir)?;
    let id = fd.info()?.id;
    Ok(LoadedProgram {
        fd,
        id,
        renamed,
        verdicts: None,
    })
}

/// Like [`load_program`], with the program's verdicts counted per bucket
/// ([`instrument`]): the instrumented program is loaded when the rewrite applies and the
/// verifier accepts it, else the unmodified one, with the reason in
/// [`LoadedProgram::verdicts`].
pub fn load_program_counting_verdicts(
    elf: &[u8],
    program: &str,
    kind: HookKind,
    map_pin_dir: &Path,
) -> Result<LoadedProgram, KernelError> {
    use instrument::{VerdictCounting, VerdictMap, VerdictSet};
    let (elf, renamed) = for_aya(elf, map_pin_dir)?;
    let counters = VerdictMap::create()?;
    let epilogue = instrument::epilogue(VerdictSet::for_hook(kind), counters.fd());
    let why = match instrument::instrument_elf(&elf, program, &epilogue) {
        Ok((copy, rewrite)) => match load_with_aya(&copy, program, kind, map_pin_dir) {
            Ok(fd) => {
                counters.record(&rewrite)?;
                let id = fd.info()?.id;
                return Ok(LoadedProgram {
                    fd,
                    id,
                    renamed,
                    verdicts: Some(VerdictCounting::Instrumented(rewrite)),
                });
            }
            Err(e) => format!("the instrumented program did not load: {e}"),
        },
        Err(e) => e.to_string(),
    };
    tracing::info!(program, reason = %why, "verdicts not counted: loading unmodified");
    let fd = load_with_aya(&elf, program, kind, map_pin_dir)?;
    let id = fd.info()?.id;
    Ok(LoadedProgram {
        fd,
        id,
        renamed,
        verdicts: Some(VerdictCounting::Unmodified { reason: why }),
    })
}

type Elf<'a> = std::borrow::Cow<'a, [u8]>;

/// The object with its sections renamed for aya when needed.
fn for_aya<'a>(
    elf: &'a [u8],
    map_pin_dir: &Path,
) -> Result<(Elf<'a>, Vec<rename::Renamed>), KernelError> {
    std::fs::create_dir_all(map_pin_dir).map_err(|e| KernelError::Io(map_pin_dir.into(), e))?;
    Ok(match rename::for_aya(elf).map_err(KernelError::Object)? {
        Some((copy, renamed)) => (std::borrow::Cow::Owned(copy), renamed),
        None => (std::borrow::Cow::Borrowed(elf), Vec::new()),
    })
}

fn load_with_aya(
    elf: &[u8],
    program: &str,
    kind: HookKind,
    map_pin_dir: &Path,
) -> Result<ProgramFd, KernelError> {
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        aya::EbpfLoader::new()
            .default_map_pin_directory(map_pin_dir)
            .load(elf)
    }));
    let mut ebpf = match loaded {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(KernelError::Object(error_chain(&e))),
        Err(_) => return Err(KernelError::Object("the ELF parser panicked".into())),
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| KernelError::NoSuchProgram(program.to_string()))?;
    let found = format!("{:?}", prog.prog_type());
    let result = match (kind, prog) {
        (HookKind::Xdp, aya::programs::Program::Xdp(p)) => p.load().map(|_| p.fd().map(dup)),
        (HookKind::Tc, aya::programs::Program::SchedClassifier(p)) => {
            p.load().map(|_| p.fd().map(dup))
        }
        (HookKind::Tracepoint, aya::programs::Program::TracePoint(p)) => {
            p.load().map(|_| p.fd().map(dup))
        }
        (HookKind::Uprobe, aya::programs::Program::UProbe(p)) => p.load().map(|_| p.fd().map(dup)),
        _ => {
            return Err(KernelError::WrongProgramType {
                program: program.to_string(),
                found,
                expected: format!("{kind:?}"),
            });
        }
    };
    let fd = match result {
        Ok(Ok(fd)) => fd?,
        Ok(Err(e)) | Err(e) => {
            return Err(match e {
                aya::programs::ProgramError::LoadError {
                    io_error,
                    verifier_log,
                } => KernelError::VerifierRejected {
                    program: program.to_string(),
                    reason: io_error.to_string(),
                    verifier_log: verifier_log.to_string(),
                },
                other => KernelError::Object(error_chain(&other)),
            });
        }
    };
    // Dropping `ebpf` releases aya's references; the duplicated fd keeps the program and its
    // maps alive.
    Ok(ProgramFd::from_owned(fd))
}

fn dup(fd: &aya::programs::ProgramFd) -> Result<OwnedFd, KernelError> {
    use std::os::fd::AsFd;
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| KernelError::Io("program fd".into(), e))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// XDP attach modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Generic (skb) mode: works on every interface.
    #[default]
    Generic,
    /// Driver (native) mode.
    Driver,
}

/// TC directions (tcx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcDirection {
    Ingress,
    Egress,
}

/// Where a deployment attaches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Hook {
    Xdp {
        interface: String,
        mode: XdpMode,
    },
    Tc {
        interface: String,
        direction: TcDirection,
    },
    Tracepoint {
        category: String,
        name: String,
    },
    /// Entry of `symbol` in the ELF file `binary` (an executable or shared library), every
    /// process.
    Uprobe {
        binary: String,
        symbol: String,
    },
}

impl Hook {
    /// The hook family.
    pub fn kind(&self) -> HookKind {
        match self {
            Hook::Xdp { .. } => HookKind::Xdp,
            Hook::Tc { .. } => HookKind::Tc,
            Hook::Tracepoint { .. } => HookKind::Tracepoint,
            Hook::Uprobe { .. } => HookKind::Uprobe,
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Xdp { interface, mode } => write!(f, "xdp/{interface} ({mode:?})"),
            Hook::Tc {
                interface,
                direction,
            } => write!(f, "tc/{interface}/{direction:?}"),
            Hook::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Hook::Uprobe { binary, symbol } => write!(f, "uprobe/{binary}:{symbol}"),
        }
    }
}

fn ifindex(name: &str) -> Result<u32, KernelError> {
    let c = std::ffi::CString::new(name).map_err(|_| KernelError::NoSuchInterface(name.into()))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(KernelError::NoSuchInterface(name.into()))
    } else {
        Ok(idx)
    }
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Attaches `prog` at `hook` with a kernel link.
pub fn attach(hook: &Hook, prog: &ProgramFd) -> Result<LinkFd, KernelError> {
    match hook {
        Hook::Xdp { interface, mode } => {
            let flags = match mode {
                XdpMode::Generic => XDP_FLAGS_SKB_MODE,
                XdpMode::Driver => XDP_FLAGS_DRV_MODE,
            };
            link_create(prog, ifindex(interface)?, sys::ATTACH_XDP, flags)
        }
        Hook::Tc {
            interface,
            direction,
        } => {
            let t = match direction {
                TcDirection::Ingress => sys::ATTACH_TCX_INGRESS,
                TcDirection::Egress => sys::ATTACH_TCX_EGRESS,
            };
            link_create(prog, ifindex(interface)?, t, 0)
        }
        Hook::Tracepoint { category, name } => attach_tracepoint(category, name, prog),
        Hook::Uprobe { binary, symbol } => uprobe::attach(Path::new(binary), symbol, prog),
    }
}

fn link_create(
    prog: &ProgramFd,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> Result<LinkFd, KernelError> {
    Ok(LinkFd::from_owned(sys::link_create(
        prog,
        target,
        attach_type,
        flags,
    )?))
}

/// Attaches `prog` to the perf event `perf` (tracepoints, uprobes); the link keeps its own
/// reference to the event.
fn link_perf_event(prog: &ProgramFd, perf: &OwnedFd) -> Result<LinkFd, KernelError> {
    link_create(prog, perf.as_raw_fd() as u32, sys::ATTACH_PERF_EVENT, 0)
}

/// Attaches a tracepoint program through a perf event link.
pub fn attach_tracepoint(
    category: &str,
    name: &str,
    prog: &ProgramFd,
) -> Result<LinkFd, KernelError> {
    let id = tracepoint_id(category, name)?;
    let perf = perf_event_open_tracepoint(id)?;
    link_perf_event(prog, &perf)
}

fn tracepoint_id(category: &str, name: &str) -> Result<u64, KernelError> {
    let bad = |s: &str| s.is_empty() || s.contains('/') || s.contains("..");
    if bad(category) || bad(name) {
        return Err(KernelError::NoSuchTracepoint(format!("{category}:{name}")));
    }
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let p = Path::new(root)
            .join("events")
            .join(category)
            .join(name)
            .join("id");
        if let Ok(s) = std::fs::read_to_string(&p)
            && let Ok(id) = s.trim().parse()
        {
            return Ok(id);
        }
    }
    Err(KernelError::NoSuchTracepoint(format!("{category}:{name}")))
}

fn perf_event_open_tracepoint(id: u64) -> Result<OwnedFd, KernelError> {
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    let mut attr = [0u64; 16];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (128u64 << 32); // type, size
    attr[1] = id; // config
    attr[2] = 1; // sample_period
    perf_event_open(&attr)
}

/// `perf_event_open(attr, pid = -1, cpu = 0)`: every process (what BPF perf links need).
pub(crate) fn perf_event_open(attr: &[u64; 16]) -> Result<OwnedFd, KernelError> {
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // SAFETY: attr is a zeroed perf_event_attr of the declared size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(KernelError::Sys(sys::SysError {
            op: "perf_event_open",
            source: std::io::Error::last_os_error(),
        }));
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the dispatcher's XDP exception tracker to `xdp:xdp_exception`.
pub fn attach_abort_tracker(dispatcher: &Dispatcher) -> Result<Option<LinkFd>, KernelError> {
    match dispatcher.tracker() {
        Some(t) => attach_tracepoint("xdp", "xdp_exception", t).map(Some),
        None => Ok(None),
    }
}

/// Whether this process can use BPF at all (root, or CAP_BPF + CAP_NET_ADMIN).
pub fn bpf_available() -> Result<(), String> {
    match maps::Array::<u32>::create("bpfship_probe", 1) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
