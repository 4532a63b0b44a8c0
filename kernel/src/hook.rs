//! One deployment's hook in the kernel: the link, the dispatcher and the loaded versions, with
//! every transition as one atomic kernel operation, pinned under the deployment's own bpffs
//! directory so a restarted agent adopts exactly what it left.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::instrument::{VERDICT_MAP, VerdictCounting};
use crate::{
    Dispatcher, Hook, HookKind, KernelError, LinkFd, LoadedProgram, MapFd, ProgramFd, SplitMode,
    StatsGuard,
};

const PIN_LINK: &str = "link";
/// A pin bpfship creates in every deployment directory it makes (a one-entry array map named
/// [`OWNER_MAP_NAME`]): start-up cleanup removes only directories that carry it, so another
/// tool's pins under the same root are never touched.
const PIN_OWNER: &str = "bpfship-owner";
const OWNER_MAP_NAME: &str = "bpfship_owner";
const PIN_TRACKER_LINK: &str = "abort_tracker_link";
/// Maps a program pins by name (`LIBBPF_PIN_BY_NAME`): shared by every version so state
/// survives version changes.
pub const MAPS_DIR: &str = "maps";

/// What runs at the hook right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    Nothing,
    Stable,
    Dispatcher,
    Canary,
    Previous,
    Unknown(u32),
}

/// The kernel objects of one deployment.
#[derive(Debug)]
pub struct HookRuntime {
    pub hook: Hook,
    pub pins: PathBuf,
    link: Option<LinkFd>,
    dispatcher: Option<Dispatcher>,
    tracker_link: Option<LinkFd>,
    pub stable: Option<LoadedProgram>,
    pub canary: Option<LoadedProgram>,
    pub previous: Option<LoadedProgram>,
    split: SplitMode,
    salt: u32,
    /// The canary runs at the hook directly, for all of this host's traffic, because the
    /// dispatcher cannot tail-call it (e.g. an `xdp.frags` program): whole-host canary.
    pub whole_host: bool,
    /// Keeps `BPF_ENABLE_STATS` on while a whole-host canary runs (its run count is its
    /// event count).
    stats: Option<StatsGuard>,
    /// Versions are loaded with their verdicts counted (see [`crate::instrument`]).
    pub count_verdicts: bool,
}

/// How a canary was put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanarySplit {
    /// Behind the dispatcher, at the step's share of events.
    Dispatcher,
    /// At the hook for the whole host, with the reason the dispatcher could not split.
    WholeHost(String),
}

fn remove_pin(path: &Path) {
    let _ = std::fs::remove_file(path);
}

impl HookRuntime {
    /// Opens what is pinned in `pins` (a fresh directory is fine): the link, the dispatcher, and
    /// the programs named by `stable`/`canary`/`previous` pin names when they exist.
    pub fn adopt(
        hook: Hook,
        pins: PathBuf,
        split: SplitMode,
        salt: u32,
        versions: [Option<&str>; 3],
    ) -> Result<Self, KernelError> {
        std::fs::create_dir_all(pins.join(MAPS_DIR))
            .map_err(|e| KernelError::Io(pins.clone(), e))?;
        if !Self::is_owned(&pins) {
            MapFd::create(crate::sys::MAP_TYPE_ARRAY, 4, 4, 1, OWNER_MAP_NAME)?
                .pin(&pins.join(PIN_OWNER))?;
        }
        let open = |name: Option<&str>| -> Result<Option<LoadedProgram>, KernelError> {
            match name {
                Some(n) if pins.join(n).exists() => {
                    LoadedProgram::open_pinned(&pins.join(n)).map(Some)
                }
                _ => Ok(None),
            }
        };
        let link = if pins.join(PIN_LINK).exists() {
            Some(LinkFd::open_pinned(&pins.join(PIN_LINK))?)
        } else {
            None
        };
        let tracker_link = if pins.join(PIN_TRACKER_LINK).exists() {
            Some(LinkFd::open_pinned(&pins.join(PIN_TRACKER_LINK))?)
        } else {
            None
        };
        Ok(HookRuntime {
            dispatcher: Dispatcher::open_pinned(&pins, hook.kind())?,
            stable: open(versions[0])?,
            canary: open(versions[1])?,
            previous: open(versions[2])?,
            hook,
            pins,
            link,
            tracker_link,
            split,
            salt,
            whole_host: false,
            stats: None,
            count_verdicts: true,
        })
    }

    /// The hook family.
    pub fn kind(&self) -> HookKind {
        self.hook.kind()
    }

    /// The directory where versions' pinned-by-name maps live.
    pub fn maps_dir(&self) -> PathBuf {
        self.pins.join(MAPS_DIR)
    }

    /// Loads a version (verifier) and pins it as `pin_name`; not attached.
    pub fn load(
        &self,
        elf: &[u8],
        program: &str,
        pin_name: &str,
    ) -> Result<LoadedProgram, KernelError> {
        let prog = if self.count_verdicts {
            crate::load_program_counting_verdicts(elf, program, self.hook.kind(), &self.maps_dir())?
        } else {
            crate::load_program(elf, program, self.hook.kind(), &self.maps_dir())?
        };
        // A `bpfship_health` map of another shape is refused before anything reads it, and a
        // version's own map may not pose as the agent's verdict counters.
        crate::health::HealthMap::of(&prog.fd)?;
        let instrumented = matches!(prog.verdicts, Some(VerdictCounting::Instrumented(_)));
        if !instrumented && prog.fd.map_named(VERDICT_MAP)?.is_some() {
            return Err(KernelError::ReservedMapName(VERDICT_MAP));
        }
        remove_pin(&self.pins.join(pin_name));
        prog.pin(&self.pins.join(pin_name))?;
        Ok(prog)
    }

    /// What the hook's link runs now.
    pub fn serving(&self) -> Serving {
        let Some(link) = &self.link else {
            return Serving::Nothing;
        };
        let Ok(id) = link.program_id() else {
            return Serving::Nothing;
        };
        let is = |p: &Option<LoadedProgram>| p.as_ref().is_some_and(|p| p.id == id);
        if self.dispatcher.as_ref().is_some_and(|d| d.prog_id == id) {
            Serving::Dispatcher
        } else if is(&self.stable) {
            Serving::Stable
        } else if is(&self.canary) {
            Serving::Canary
        } else if is(&self.previous) {
            Serving::Previous
        } else {
            Serving::Unknown(id)
        }
    }

    /// Tracepoint and uprobe links (perf events) cannot be retargeted: those hooks always run
    /// the dispatcher and switch versions by slot.
    fn dispatcher_always(&self) -> bool {
        matches!(self.hook.kind(), HookKind::Tracepoint | HookKind::Uprobe)
    }

    fn ensure_dispatcher(&mut self) -> Result<&Dispatcher, KernelError> {
        if self.dispatcher.is_none() {
            let d = Dispatcher::create(self.hook.kind(), self.split, self.salt)?;
            Dispatcher::unpin(&self.pins);
            d.pin(&self.pins)?;
            self.dispatcher = Some(d);
        }
        if self.tracker_link.is_none()
            && let Some(d) = &self.dispatcher
            && let Some(link) = crate::attach_abort_tracker(d)?
        {
            remove_pin(&self.pins.join(PIN_TRACKER_LINK));
            link.pin(&self.pins.join(PIN_TRACKER_LINK))?;
            self.tracker_link = Some(link);
        }
        Ok(self.dispatcher.as_ref().expect("created above"))
    }

    fn attach_new_link(&mut self, prog: &ProgramFd) -> Result<(), KernelError> {
        let link = crate::attach(&self.hook, prog)?;
        remove_pin(&self.pins.join(PIN_LINK));
        link.pin(&self.pins.join(PIN_LINK))?;
        self.link = Some(link);
        Ok(())
    }

    /// Makes `prog` the stable version serving everything, attaching the hook if nothing is
    /// attached yet (first install, or after a reboot).
    pub fn install_stable(&mut self, prog: LoadedProgram) -> Result<(), KernelError> {
        if self.dispatcher_always() {
            let d = self.ensure_dispatcher()?;
            d.set_slot(0, &prog.fd)?;
            d.set_canary_share(0)?;
            d.clear_slot(1)?;
            let dfd = d.prog.try_clone()?;
            if self.link.is_none() {
                self.attach_new_link(&dfd)?;
            }
        } else {
            match self.serving() {
                Serving::Nothing => self.attach_new_link(&prog.fd)?,
                _ => {
                    let link = self.link.as_ref().expect("serving something");
                    let current = ProgramFd::by_id(link.program_id()?)?;
                    link.replace(&prog.fd, &current)?;
                }
            }
            if let Some(d) = &self.dispatcher {
                d.set_attached(prog.id)?;
            }
        }
        self.stable = Some(prog);
        Ok(())
    }

    /// Puts `canary` beside the stable version behind the dispatcher, at 0% until the first step.
    pub fn start_canary(&mut self, canary: LoadedProgram) -> Result<CanarySplit, KernelError> {
        let stable_fd = match &self.stable {
            Some(s) => s.fd.try_clone()?,
            None => {
                return Err(KernelError::Object(
                    "no stable version to canary against".into(),
                ));
            }
        };
        let always = self.dispatcher_always();
        let d = self.ensure_dispatcher()?;
        d.set_canary_share(0)?;
        let slotted = d
            .set_slot(0, &stable_fd)
            .and_then(|_| d.set_slot(1, &canary.fd));
        if let Err(e) = slotted {
            let incompatible =
                matches!(&e, KernelError::Sys(s) if s.source.raw_os_error() == Some(libc::EINVAL));
            if !incompatible || always {
                return Err(e);
            }
            d.clear_slot(1)?;
            return self.start_whole_host(canary, &stable_fd);
        }
        let (dfd, did) = (d.prog.try_clone()?, d.prog_id);
        d.set_attached(did)?;
        self.canary = Some(canary);
        if !self.dispatcher_always() {
            match self.serving() {
                Serving::Dispatcher => {}
                Serving::Nothing => self.attach_new_link(&dfd)?,
                _ => {
                    let link = self.link.as_ref().expect("serving something");
                    link.replace(&dfd, &stable_fd)?;
                }
            }
        }
        Ok(CanarySplit::Dispatcher)
    }

    /// The canary replaces the stable version at the hook (one link update) for the whole host.
    fn start_whole_host(
        &mut self,
        canary: LoadedProgram,
        stable_fd: &ProgramFd,
    ) -> Result<CanarySplit, KernelError> {
        self.stats = Some(StatsGuard::enable()?);
        let link = self
            .link
            .as_ref()
            .ok_or_else(|| KernelError::Object("nothing attached".into()))?;
        link.replace(&canary.fd, stable_fd)?;
        if let Some(d) = &self.dispatcher {
            d.set_attached(canary.id)?;
        }
        self.canary = Some(canary);
        self.whole_host = true;
        Ok(CanarySplit::WholeHost(
            "the dispatcher cannot tail-call this version (program flags differ, e.g. xdp.frags)"
                .into(),
        ))
    }

    /// After a restart: the recorded whole-host canary is at the hook; keep measuring it.
    pub fn resume_whole_host(&mut self) -> Result<(), KernelError> {
        self.stats = Some(StatsGuard::enable()?);
        self.whole_host = true;
        Ok(())
    }

    /// Sets the canary share (basis points): one map update.
    pub fn set_share(&self, basis_points: u32) -> Result<(), KernelError> {
        match &self.dispatcher {
            Some(d) => d.set_canary_share(basis_points),
            None => Ok(()),
        }
    }

    /// Sends everything back to the stable version and unloads the canary. Returns how long
    /// the switch took (decision to stable serving all traffic).
    pub fn roll_back_canary(&mut self) -> Result<std::time::Duration, KernelError> {
        let started = Instant::now();
        if self.whole_host {
            if let (Some(link), Some(stable), Some(canary)) =
                (&self.link, &self.stable, &self.canary)
            {
                link.replace(&stable.fd, &canary.fd)?;
                if let Some(d) = &self.dispatcher {
                    d.set_attached(stable.id)?;
                }
            }
            self.whole_host = false;
            self.stats = None;
            self.canary = None;
            return Ok(started.elapsed());
        }
        if let Some(d) = &self.dispatcher {
            // One map update: from here on every event goes to the stable slot.
            d.set_canary_share(0)?;
        }
        let took = started.elapsed();
        if !self.dispatcher_always()
            && self.serving() == Serving::Dispatcher
            && let (Some(link), Some(stable), Some(d)) =
                (&self.link, &self.stable, &self.dispatcher)
        {
            link.replace(&stable.fd, &d.prog)?;
            d.set_attached(stable.id)?;
        }
        if let Some(d) = &self.dispatcher {
            d.clear_slot(1)?;
        }
        self.canary = None;
        Ok(took)
    }

    /// Makes the canary the stable version: the hook runs it directly (dispatcher out of the
    /// path); the old stable becomes `previous`, still loaded and pinned.
    pub fn promote(&mut self) -> Result<(), KernelError> {
        let Some(canary) = self.canary.take() else {
            return Ok(());
        };
        if self.whole_host {
            // Already at the hook: only the bookkeeping changes.
            if let Some(d) = &self.dispatcher {
                d.set_attached(canary.id)?;
            }
            self.whole_host = false;
            self.stats = None;
            self.previous = self.stable.take();
            self.stable = Some(canary);
            return Ok(());
        }
        let always = self.dispatcher_always();
        let d = self.ensure_dispatcher()?;
        if always {
            d.set_slot(0, &canary.fd)?;
            d.set_canary_share(0)?;
            d.clear_slot(1)?;
        } else {
            let dfd = d.prog.try_clone()?;
            d.set_attached(canary.id)?;
            match self.serving() {
                Serving::Canary => {}
                Serving::Nothing => self.attach_new_link(&canary.fd)?,
                _ => {
                    let link = self.link.as_ref().expect("serving something");
                    link.replace(&canary.fd, &dfd)?;
                }
            }
            if let Some(d) = &self.dispatcher {
                d.clear_slot(1)?;
                d.set_slot(0, &canary.fd)?;
            }
        }
        self.previous = self.stable.take();
        self.stable = Some(canary);
        Ok(())
    }

    /// Within the rollback window: puts the previous version back (one link update).
    pub fn roll_back_to_previous(&mut self) -> Result<std::time::Duration, KernelError> {
        let started = Instant::now();
        let (Some(prev), Some(cur)) = (&self.previous, &self.stable) else {
            return Err(KernelError::Object("no previous version is loaded".into()));
        };
        if self.dispatcher_always() {
            if let Some(d) = &self.dispatcher {
                d.set_slot(0, &prev.fd)?;
            }
        } else if let Some(link) = &self.link {
            link.replace(&prev.fd, &cur.fd)?;
            if let Some(d) = &self.dispatcher {
                d.set_attached(prev.id)?;
                d.set_slot(0, &prev.fd)?;
            }
        }
        let took = started.elapsed();
        self.stable = self.previous.take();
        Ok(took)
    }

    /// Events and aborts per slot since the dispatcher was created (zero without one).
    pub fn counters(&self) -> crate::SlotCounters {
        self.dispatcher
            .as_ref()
            .and_then(|d| d.counters().ok())
            .unwrap_or_default()
    }

    /// The canary share the dispatcher applies now (basis points).
    pub fn share(&self) -> u32 {
        self.dispatcher
            .as_ref()
            .and_then(|d| d.config().ok())
            .map(|c| c.canary_basis_points)
            .unwrap_or(0)
    }

    /// Removes every pin not named in `keep` among version pins (`v-…`), so nothing the agent
    /// owns lingers; returns the names removed.
    pub fn remove_unused_versions(&self, keep: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.pins) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("v-") && !keep.contains(&name) {
                    remove_pin(&e.path());
                    removed.push(name);
                }
            }
        }
        removed
    }

    /// Whether `pins` is a deployment directory bpfship made (it carries the owner pin).
    pub fn is_owned(pins: &Path) -> bool {
        MapFd::open_pinned(&pins.join(PIN_OWNER)).is_ok_and(|m| m.def().name == OWNER_MAP_NAME)
    }

    /// Detaches everything and removes the deployment's pins (deployment removed from config).
    pub fn remove_all(pins: &Path) {
        for pin in [PIN_LINK, PIN_TRACKER_LINK] {
            if let Ok(link) = LinkFd::open_pinned(&pins.join(pin)) {
                let _ = link.detach();
            }
        }
        let _ = std::fs::remove_dir_all(pins);
    }

    /// Ids of the programs this deployment holds (for status and tests).
    pub fn program_ids(&self) -> Vec<u32> {
        [&self.stable, &self.canary, &self.previous]
            .into_iter()
            .flatten()
            .map(|p| p.id)
            .chain(self.dispatcher.as_ref().map(|d| d.prog_id))
            .collect()
    }
}
