//! One deployment's reconcile loop: poll the tag, verify and fetch a new digest, load it beside
//! the stable version, canary it step by step under analysis, and promote or roll back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bpfship_registry::{Client, ErrorClass, Reference, RegistryError};
use bpfship_trust::content::Findings;
use bpfship_trust::verify::{self as trust_verify, TrustSource, VerifyError};
use bpfship_verifier::policy::Policy;

use crate::analysis::{self, AnalysisRun, ExternalSource, Outcome, Record, Verdict, VersionSample};
use crate::audit::{AuditEvent, AuditLog};
use crate::awaiting::Awaiting;
use crate::config::{DeploymentSpec, VerdictsSetting, fleet_bucket};
use crate::hook::{HookRuntime, Serving};
use crate::kernel::instrument::{VerdictSet, VerdictValue};
use crate::kernel::{HookKind, LoadedProgram, MapFd, health::HealthMap};
use crate::policy_watch::PolicyWatch;
use crate::state::{self, DeploymentState, Phase, Rejection, VersionRecord};
use crate::store::ContentStore;
use crate::text::clip;
use crate::{reverify, text};

/// What every deployment shares.
pub struct Context {
    pub client: Client,
    /// The policy in force, read again from its file every few seconds.
    pub policy: PolicyWatch,
    pub store: ContentStore,
    pub audit: AuditLog,
    pub state_dir: PathBuf,
    pub pin_root: PathBuf,
    pub host_id: String,
    pub poll_interval: Duration,
    pub external: Box<dyn ExternalSource + Send + Sync>,
}

pub use bpfship_control::{DeploymentStatus, VerificationStatus};

/// Operator commands, from the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Promote,
    Abort,
    Pause,
    Resume,
    /// Take this digest instead of the tag's, even if it was promoted before (a deliberate
    /// downgrade) or refused before.
    Pin(String),
    /// Follow the tag again.
    Unpin,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A reference Ethernet/IPv4/UDP frame for `BPF_PROG_TEST_RUN` cost measurements.
fn reference_frame() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 17;
    f
}

/// Reads a version's `bpfship_health` map (key 0 good, key 1 bad) if it declares one.
fn health_counts(prog: &LoadedProgram) -> Option<(u64, u64)> {
    HealthMap::of(&prog.fd).ok()??.counts().ok()
}

/// Counter snapshot at the start of a measurement interval.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    runs: [u64; 2],
    aborts: [u64; 2],
    health: [(u64, u64); 2],
    /// Verdict counters of stable and canary (`None`: not counted).
    verdicts: [Option<VerdictValue>; 2],
    /// The canary's own run count (`BPF_ENABLE_STATS`), for a whole-host canary.
    canary_run_cnt: u64,
}

/// A deployment's loop.
pub struct Deployment {
    spec: DeploymentSpec,
    ctx: Arc<Context>,
    status: Arc<Mutex<DeploymentStatus>>,
    state: DeploymentState,
    state_path: PathBuf,
    reference: Reference,
    hook: HookRuntime,
    step_started: Instant,
    last_measure: Instant,
    analysis: AnalysisRun,
    snapshot: Snapshot,
    next_poll: Instant,
    backoff: Duration,
    salt: String,
    /// Digests whose signatures did not verify yet (never rejected for good: anyone who can
    /// push can write signature metadata, and signing follows pushing).
    awaiting: Awaiting,
    /// The policy digest the recorded versions were last judged by.
    judged_policy: String,
}

impl Deployment {
    /// Adopts what a previous run left (state file and pins) and settles it.
    pub fn start(
        spec: DeploymentSpec,
        ctx: Arc<Context>,
        status: Arc<Mutex<DeploymentStatus>>,
    ) -> Result<Self, String> {
        let state_path = state::state_path(&ctx.state_dir, &spec.name);
        let state = state::load(&state_path)?;
        let reference = Reference::parse(&spec.artifact).map_err(|e| e.to_string())?;
        let salt = spec
            .rollout
            .salt
            .clone()
            .unwrap_or_else(|| spec.name.clone());
        let salt32 = dispatcher_salt(&spec.name, &salt);
        let names = [&state.stable, &state.canary, &state.previous]
            .map(|v| v.as_ref().map(|v| v.pin_name()));
        let mut hook = HookRuntime::adopt(
            spec.hook.clone(),
            ctx.pin_root.join(&spec.name),
            spec.rollout.split,
            salt32,
            [
                names[0].as_deref(),
                names[1].as_deref(),
                names[2].as_deref(),
            ],
        )
        .map_err(|e| format!("{}: adopting pins: {e}", spec.name))?;
        hook.count_verdicts = spec.verdicts == VerdictsSetting::Instrument;
        let mut d = Deployment {
            spec,
            ctx,
            status,
            state,
            state_path,
            reference,
            hook,
            step_started: Instant::now(),
            last_measure: Instant::now(),
            analysis: AnalysisRun::default(),
            snapshot: Snapshot::default(),
            next_poll: Instant::now(),
            backoff: Duration::ZERO,
            salt,
            awaiting: Awaiting::default(),
            judged_policy: String::new(),
        };
        d.hold_state_content();
        d.settle();
        d.judge_recorded_versions();
        d.publish("started");
        Ok(d)
    }

    /// The deployment's name in the configuration.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The shared status (a poisoned lock still holds the last status: use it).
    fn status(&self) -> std::sync::MutexGuard<'_, DeploymentStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry failed mid-way: nothing changes, the next poll retries. The failure is
    /// classified once (see [`ErrorClass`]): an integrity failure (a digest or size mismatch) is
    /// audited and shown as such, never as "registry unavailable".
    fn registry_failed(&mut self, digest: &str, e: &RegistryError) {
        let class = e.class();
        let reason = clip(&e.to_string());
        if class == ErrorClass::Integrity {
            self.audit("integrity_failure", Some(digest), &reason);
        }
        let mut s = self.status();
        s.registry = format!("{}: {reason}; will retry", class.as_str());
        s.registry_failure = Some(class);
        *s.registry_failures.entry(class).or_default() += 1;
        drop(s);
        self.next_poll = Instant::now() + self.ctx.poll_interval;
    }

    fn audit(&self, action: &str, digest: Option<&str>, reason: &str) {
        let reason = clip(reason);
        tracing::info!(deployment = %self.spec.name, action, digest, reason);
        self.ctx.audit.record(&AuditEvent {
            deployment: &self.spec.name,
            action,
            digest,
            policy_digest: Some(&self.ctx.policy.current().digest),
            reason: &reason,
        });
    }

    fn save(&self) {
        if let Err(e) = state::save(&self.state_path, &self.state) {
            tracing::error!(deployment = %self.spec.name, error = %e, "cannot save state");
            return;
        }
        // Once saved, content the state no longer names can go (unless another deployment
        // holds it).
        self.hold_state_content();
    }

    /// After a restart: make the kernel match the state file, finishing interrupted
    /// transitions; re-establish the stable version from the content store after a reboot.
    fn settle(&mut self) {
        let serving = self.hook.serving();
        // A stable version is recorded but not loaded (reboot, or pins removed): reload it from
        // the local store, checking its digest and the policy again.
        if let Some(stable) = self.state.stable.clone()
            && self.hook.stable.is_none()
        {
            match self.reload(&stable) {
                Ok(prog) => match self.hook.install_stable(prog) {
                    Ok(()) => self.audit(
                        "restored",
                        Some(&stable.digest),
                        "re-established the stable version from the local store",
                    ),
                    Err(e) => self.audit("restore_failed", Some(&stable.digest), &e.to_string()),
                },
                Err(e) => {
                    self.audit("restore_failed", Some(&stable.digest), &e);
                    self.state.stable = None;
                    self.state.phase = Phase::Empty;
                }
            }
        }
        match (self.state.phase, serving) {
            // A whole-host canary at the hook: keep measuring it from the start of its step.
            (Phase::Canary | Phase::Paused, Serving::Canary) if self.state.whole_host.is_some() => {
                if let Err(e) = self.hook.resume_whole_host() {
                    self.roll_back(&format!("cannot resume the canary: {e}"), "attach_error");
                    return;
                }
                self.enter_step(self.state.step.min(self.spec.rollout.steps.len() - 1));
                self.audit(
                    "resumed",
                    self.state.canary.as_ref().map(|c| c.digest.as_str()),
                    "whole-host canary resumed after restart",
                );
            }
            // Killed after promoting in the kernel but before saving: finish the promotion.
            (Phase::Canary | Phase::Paused, Serving::Canary) => {
                let _ = self.hook.promote();
                self.finish_promotion("promotion completed after restart");
            }
            // A canary is recorded and loaded: resume it from the start of its step.
            (Phase::Canary | Phase::Paused, _) if self.hook.canary.is_some() => {
                if let Some(c) = self.hook.canary.take() {
                    match self.hook.start_canary(c) {
                        Ok(split) => self.record_split(split),
                        Err(e) => {
                            self.roll_back(
                                &format!("cannot resume the canary: {e}"),
                                "attach_error",
                            );
                            return;
                        }
                    }
                }
                self.enter_step(self.state.step.min(self.spec.rollout.steps.len() - 1));
                self.audit(
                    "resumed",
                    self.state.canary.as_ref().map(|c| c.digest.as_str()),
                    "canary resumed after restart",
                );
            }
            // A canary is recorded but its program is gone: back to stable.
            (Phase::Canary | Phase::Paused, _) => {
                let _ = self.hook.roll_back_canary();
                self.state.canary = None;
                self.state.phase = if self.state.stable.is_some() {
                    Phase::Stable
                } else {
                    Phase::Empty
                };
            }
            // Stable, but the dispatcher still sits at the hook (killed mid-rollback).
            (_, Serving::Dispatcher) if self.hook.kind() != HookKind::Tracepoint => {
                let _ = self.hook.roll_back_canary();
            }
            // Killed during a late rollback: the previous version already serves.
            (_, Serving::Previous) => {
                self.state.stable = self.state.previous.take();
                self.hook.stable = self.hook.previous.take();
            }
            _ => {}
        }
        if self.state.previous.is_some() && self.hook.previous.is_none() {
            self.state.previous = None;
        }
        let keep: Vec<String> = [&self.state.stable, &self.state.canary, &self.state.previous]
            .into_iter()
            .flatten()
            .map(|v| v.pin_name())
            .collect();
        for removed in self.hook.remove_unused_versions(&keep) {
            self.audit("removed", None, &format!("unused pinned program {removed}"));
        }
        self.save();
    }

    /// Judges a recorded version by the policy in force, from the local store alone: its stored
    /// signature material must still verify and its content must still pass the policy's
    /// rules. Returns the content.
    fn judge(&self, v: &VersionRecord, policy: &Policy) -> Result<Vec<u8>, String> {
        reverify::check(&self.ctx.store, v, &self.reference, policy).map_err(|e| {
            format!("its signatures no longer verify under the policy in force: {e}")
        })?;
        let bytes = self.ctx.store.get(&v.content_digest)?;
        let inspection =
            bpfship_trust::content::inspect(&bytes, Some(policy)).map_err(|e| e.to_string())?;
        if !inspection.is_valid() {
            return Err(format!(
                "the policy now refuses it: {}",
                inspection.refusals().join("; ")
            ));
        }
        Ok(bytes)
    }

    /// Loads a recorded version from the local store after judging it again.
    fn reload(&self, v: &VersionRecord) -> Result<LoadedProgram, String> {
        let bytes = self.judge(v, &self.ctx.policy.current())?;
        self.hook
            .load(&bytes, &self.spec.program, &v.pin_name())
            .map_err(|e| e.to_string())
    }

    /// Judges every recorded version again by the policy in force (at start-up and whenever
    /// the policy changes) and withdraws what no longer passes: a canary is rolled back; a
    /// previous version is unloaded; a stable version is replaced by the previous one when that
    /// still passes, and otherwise detached — nothing the policy no longer admits keeps running.
    fn judge_recorded_versions(&mut self) {
        let policy = self.ctx.policy.current();
        if policy.digest == self.judged_policy {
            return;
        }
        self.judged_policy = policy.digest.clone();
        // A key may have been added: what awaits a valid signature is checked at once.
        self.awaiting.retry_all_now(Instant::now());
        if let Some(c) = self.state.canary.clone()
            && let Err(why) = self.judge(&c, &policy)
        {
            self.roll_back(&format!("withdrawn: {why}"), "policy");
        }
        let previous_passes = match self.state.previous.clone() {
            Some(p) => match self.judge(&p, &policy) {
                Ok(_) => true,
                Err(why) => {
                    self.release_previous();
                    self.audit(
                        "withdrawn",
                        Some(&p.digest),
                        &format!("previous version: {why}"),
                    );
                    false
                }
            },
            None => false,
        };
        let Some(stable) = self.state.stable.clone() else {
            return;
        };
        let Err(why) = self.judge(&stable, &policy) else {
            return;
        };
        self.count_rollback("policy");
        if previous_passes && self.hook.roll_back_to_previous().is_ok() {
            self.state.stable = self.state.previous.take();
            let _ = std::fs::remove_file(self.hook.pins.join(stable.pin_name()));
            self.reject(
                &stable.digest,
                "withdrawn",
                &format!("{why}; the previous version, which still passes, serves again"),
            );
            return;
        }
        self.detach_everything();
        self.reject(
            &stable.digest,
            "withdrawn",
            &format!("{why}; detached (no recorded version passes)"),
        );
    }

    /// Takes the deployment out of the kernel entirely: nothing recorded may run.
    fn detach_everything(&mut self) {
        HookRuntime::remove_all(&self.hook.pins);
        match HookRuntime::adopt(
            self.spec.hook.clone(),
            self.hook.pins.clone(),
            self.spec.rollout.split,
            dispatcher_salt(&self.spec.name, &self.salt),
            [None, None, None],
        ) {
            Ok(h) => {
                self.hook = h;
                self.hook.count_verdicts = self.spec.verdicts == VerdictsSetting::Instrument;
            }
            Err(e) => {
                tracing::error!(deployment = %self.spec.name, error = %e, "cannot recreate the pin directory")
            }
        }
        self.state.stable = None;
        self.state.canary = None;
        self.state.previous = None;
        self.state.whole_host = None;
        self.state.phase = Phase::Empty;
        self.save();
    }

    /// Runs until `commands` disconnects.
    pub fn run(mut self, commands: Receiver<Command>) {
        #[cfg(debug_assertions)]
        injected_panic(&self.spec.name);
        loop {
            // A running canary is measured closely; otherwise the loop only has polls and the
            // rollback window to watch (commands still wake it at once).
            let wait = if self.state.phase == Phase::Canary {
                Duration::from_millis(50)
            } else {
                self.ctx.poll_interval.min(Duration::from_millis(500))
            };
            match commands.recv_timeout(wait) {
                Ok(c) => self.command(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.tick();
        }
    }

    /// One step of the loop: poll when due, drive the canary, release the previous version.
    pub fn tick(&mut self) {
        if self.ctx.policy.refresh().digest != self.judged_policy {
            self.judge_recorded_versions();
        }
        if Instant::now() >= self.next_poll
            && !matches!(self.state.phase, Phase::Canary | Phase::Paused)
        {
            self.poll();
        }
        if self.state.phase == Phase::Canary {
            self.drive_canary();
        }
        if self.state.previous.is_some() && now_unix() >= self.state.previous_until_unix {
            self.release_previous();
        }
        self.publish_counters();
        self.refresh();
    }

    fn poll(&mut self) {
        let resolved = match &self.state.pinned {
            Some(pinned) => Ok(pinned.clone()),
            None => self.ctx.client.resolve(&self.reference).map(|d| d.digest),
        };
        let target = match resolved {
            Ok(d) => d,
            Err(e) => {
                self.backoff =
                    (self.backoff * 2).clamp(self.ctx.poll_interval, Duration::from_secs(300));
                self.next_poll = Instant::now() + self.backoff;
                let msg = format!(
                    "{e}; retrying in {:.1}s, the stable version keeps serving",
                    self.backoff.as_secs_f64()
                );
                let mut s = self.status();
                s.registry = clip(&msg);
                s.registry_failure = Some(e.class());
                *s.registry_failures.entry(e.class()).or_default() += 1;
                return;
            }
        };
        self.backoff = Duration::ZERO;
        self.next_poll = Instant::now() + self.ctx.poll_interval;
        let mut s = self.status();
        s.registry = "ok".into();
        s.registry_failure = None;
        drop(s);
        let known = [&self.state.stable, &self.state.canary]
            .into_iter()
            .flatten()
            .any(|v| v.digest == target);
        if known
            || self.state.rejection(&target).is_some()
            || !self.awaiting.due(&target, Instant::now())
        {
            return;
        }
        // Re-pointing the tag at a digest promoted before is a downgrade anyone with push
        // access can do: refused unless the operator chose that digest (a pin, or a config
        // that names the digest).
        if let Err(reason) = self.downgrade_check(&target, None) {
            return self.reject(&target, "downgrade_refused", &reason);
        }
        let bucket = fleet_bucket(&self.salt, &self.ctx.host_id);
        let limit = (self.spec.rollout.fleet_percent * 100.0).round() as u32;
        if self.state.stable.is_some() && bucket >= limit {
            self.publish(&format!(
                "{target} held: this host's fleet bucket {bucket} is not under {limit} (fleet_percent {})",
                self.spec.rollout.fleet_percent
            ));
            return;
        }
        // Going back to the version still loaded for the rollback window (a pin): it is
        // unloaded first and taken like any new version.
        if self
            .state
            .previous
            .as_ref()
            .is_some_and(|p| p.digest == target)
        {
            self.release_previous();
        }
        self.take(&target);
        release_freed_memory();
    }

    /// Refuses a digest promoted before, or a signed version below one promoted before, unless
    /// the operator chose that digest (a pin, or a config that names the digest).
    fn downgrade_check(&self, digest: &str, version: Option<u64>) -> Result<(), String> {
        let chosen =
            self.state.pinned.as_deref() == Some(digest) || self.reference.digest().is_some();
        if chosen {
            return Ok(());
        }
        self.state
            .history
            .check(digest, version)
            .map_err(|downgrade| {
                format!(
                    "{downgrade}; `bpfship agent pin {} {digest}` to go back deliberately",
                    self.spec.name
                )
            })
    }

    fn reject(&mut self, digest: &str, action: &str, reason: &str) {
        let reason = &clip(reason);
        self.audit(action, Some(digest), reason);
        self.state.rejected.push(Rejection {
            digest: digest.to_string(),
            reason: reason.to_string(),
            at_unix: now_unix(),
        });
        self.save();
        let mut s = self.status();
        s.last_verification = Some(VerificationStatus {
            digest: digest.to_string(),
            ok: action != "refused",
            detail: reason.to_string(),
        });
        drop(s);
        self.publish(&format!("{action} {digest}: {reason}"));
    }

    /// Verify → fetch → validate → load → install or canary, for a new digest.
    fn take(&mut self, digest: &str) {
        let seen = Instant::now();
        self.publish(&format!("verifying {digest}"));
        let by_digest = self.reference.with_digest(digest);
        let policy = self.ctx.policy.current();
        let trust = TrustSource::policy(&policy);
        let verified = match trust_verify::verify(&self.ctx.client, &by_digest, trust) {
            Ok(v) => v,
            Err(VerifyError::Registry(e)) => return self.registry_failed(digest, &e),
            // Signature metadata is written by whoever can push — before the real signer, or
            // beside it — and signing follows pushing (`bpfship push --key`, cosign): a digest
            // without a valid signature is refused for now, audited once, and checked again
            // with back-off, never rejected for good.
            Err(e @ (VerifyError::Unsigned { .. } | VerifyError::NoValidSignature { .. })) => {
                let reason = clip(&e.to_string());
                let first =
                    self.awaiting
                        .failed(digest, &reason, self.ctx.poll_interval, Instant::now());
                if first {
                    self.audit("refused", Some(digest), &reason);
                }
                self.status().last_verification = Some(VerificationStatus {
                    digest: digest.to_string(),
                    ok: false,
                    detail: reason.clone(),
                });
                self.publish(&format!(
                    "refused {digest} for now: {reason}; checking its signatures again later"
                ));
                return;
            }
            Err(e) => return self.reject(digest, "refused", &e.to_string()),
        };
        self.awaiting.settled(digest);
        // The signed version is known only now: a release signed with a lower version than one
        // promoted before is a downgrade too, whatever its digest.
        if let Err(reason) = self.downgrade_check(digest, verified.version) {
            return self.reject(digest, "downgrade_refused", &reason);
        }
        let content = match trust_verify::fetch_content(&self.ctx.client, &verified, Some(&policy))
        {
            Ok(c) => c,
            Err(VerifyError::Registry(e)) => return self.registry_failed(digest, &e),
            Err(e) => return self.reject(digest, "refused", &e.to_string()),
        };
        let Findings::Ebpf(report) = &content.inspection.findings else {
            return self.reject(
                digest,
                "refused",
                "not an eBPF object (WASM handlers are not deployed by this agent yet)",
            );
        };
        let Some(program) = report.programs.iter().find(|p| p.name == self.spec.program) else {
            return self.reject(
                digest,
                "refused",
                &format!("the object has no program named {}", self.spec.program),
            );
        };
        let want = match self.hook.kind() {
            HookKind::Xdp => "xdp",
            HookKind::Tc => "sched_cls",
            HookKind::Tracepoint => "tracepoint",
            HookKind::Uprobe => "kprobe",
        };
        if program.program_type.as_deref() != Some(want) {
            return self.reject(
                digest,
                "refused",
                &format!(
                    "program {} is {} but the hook {} needs {want}",
                    program.name,
                    program.program_type.as_deref().unwrap_or("of unknown type"),
                    self.spec.hook
                ),
            );
        }
        if let Err(diff) = self.check_pinned_maps(report) {
            return self.reject(digest, "refused", &diff);
        }
        let stored = self
            .ctx
            .store
            .put(&content.bytes, &self.spec.name)
            .and_then(|content_digest| {
                let material = reverify::store_material(
                    &self.ctx.store,
                    &verified.signatures,
                    &self.spec.name,
                )?;
                Ok((content_digest, material))
            });
        let (content_digest, material) = match stored {
            Ok(d) => d,
            Err(e) => {
                self.publish(&format!("cannot store {digest} locally: {e}; will retry"));
                return;
            }
        };
        self.status().last_verification = Some(VerificationStatus {
            digest: digest.to_string(),
            ok: true,
            detail: clip(&format!(
                "signed by {}",
                verified
                    .signatures
                    .iter()
                    .map(|s| format!("{} ({})", s.key_hint, s.layout))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        });
        let record = VersionRecord {
            digest: digest.to_string(),
            content_digest,
            policy_digest: verified.policy_digest.clone(),
            signers: verified
                .signatures
                .iter()
                .map(|s| s.key_hint.clone())
                .collect(),
            signatures: Some(material),
            version: verified.version,
        };
        let prog = match self
            .hook
            .load(&content.bytes, &self.spec.program, &record.pin_name())
        {
            Ok(p) => p,
            Err(e) => {
                let log = e.verifier_log().map(tail);
                self.status().verifier_log = log;
                self.count_rollback("load_error");
                return self.reject(
                    digest,
                    "rolled_back",
                    &format!("load failed, stable untouched: {e}"),
                );
            }
        };
        if !prog.renamed.is_empty() {
            let list: Vec<String> = prog
                .renamed
                .iter()
                .map(|r| format!("{} → {}", r.from, r.to))
                .collect();
            self.audit(
                "normalised",
                Some(digest),
                &format!("sections renamed for the loader: {}", list.join(", ")),
            );
        }
        // Audit names who signed it: key hints, or keyless identities (`identity SUBJECT (issuer
        // ISSUER)`).
        let signed_by = if record.signers.is_empty() {
            "unsigned, allowed by the policy".to_owned()
        } else {
            format!("signed by {}", record.signers.join(", "))
        };
        if self.state.stable.is_none() {
            if let Err(e) = self.hook.install_stable(prog) {
                self.count_rollback("attach_error");
                let _ = std::fs::remove_file(self.hook.pins.join(record.pin_name()));
                return self.reject(digest, "rolled_back", &format!("attach failed: {e}"));
            }
            self.state
                .history
                .record(digest, record.version, now_unix());
            self.state.stable = Some(record);
            self.state.phase = Phase::Stable;
            self.save();
            self.audit(
                "installed",
                Some(digest),
                &format!("first version: attached directly; {signed_by}"),
            );
            self.publish("installed");
            return;
        }
        self.state.canary = Some(record);
        self.state.phase = Phase::Canary;
        self.state.step = 0;
        self.save();
        match self.hook.start_canary(prog) {
            Ok(split) => self.record_split(split),
            Err(e) => {
                self.roll_back(&format!("attach failed: {e}"), "attach_error");
                return;
            }
        }
        self.enter_step(0);
        self.status().last_canary_start_ms = Some(seen.elapsed().as_secs_f64() * 1000.0);
        self.audit(
            "canary",
            Some(digest),
            &format!(
                "canary started at {}%; {signed_by}",
                self.spec.rollout.steps[0].percent
            ),
        );
    }

    /// Refuses a version whose pinned-by-name maps differ from the ones already pinned for
    /// this deployment (aya would silently reuse them).
    fn check_pinned_maps(&self, report: &bpfship_verifier::ebpf::EbpfReport) -> Result<(), String> {
        for m in report.maps.iter().filter(|m| m.pinning == "by_name") {
            let path = self.hook.maps_dir().join(&m.name);
            let Ok(map) = MapFd::open_pinned(&path) else {
                continue;
            };
            let def = map.def();
            let pinned_type = bpfship_verifier::ebpf::map_type_name(def.map_type);
            let mut diffs = Vec::new();
            if pinned_type != m.map_type {
                diffs.push(format!("type {} → {}", pinned_type, m.map_type));
            }
            for (what, old, new) in [
                ("key_size", def.key_size, m.key_size),
                ("value_size", def.value_size, m.value_size),
                ("max_entries", def.max_entries, m.max_entries),
                ("map_flags", def.map_flags, m.map_flags),
            ] {
                if let Some(new) = new
                    && new != old
                {
                    diffs.push(format!("{what} {old} → {new}"));
                }
            }
            if !diffs.is_empty() {
                return Err(format!(
                    "pinned map {} would change incompatibly: {}",
                    m.name,
                    diffs.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn enter_step(&mut self, step: usize) {
        self.state.step = step;
        let bp = self.spec.rollout.steps[step].basis_points();
        if let Err(e) = self.hook.set_share(bp) {
            self.roll_back(&format!("cannot set the canary share: {e}"), "attach_error");
            return;
        }
        self.step_started = Instant::now();
        self.last_measure = Instant::now();
        self.analysis = AnalysisRun::default();
        self.snapshot = self.take_snapshot();
        self.save();
    }

    /// Records how the canary was put in place (a whole-host canary is said in status and audit).
    fn record_split(&mut self, split: crate::hook::CanarySplit) {
        self.state.whole_host = match split {
            crate::hook::CanarySplit::Dispatcher => None,
            crate::hook::CanarySplit::WholeHost(why) => {
                self.audit(
                    "whole_host",
                    self.state.canary.as_ref().map(|c| c.digest.as_str()),
                    &format!("canary on the whole host: {why}"),
                );
                Some(why)
            }
        };
        self.save();
    }

    fn take_snapshot(&self) -> Snapshot {
        let c = self.hook.counters();
        let h = |p: &Option<LoadedProgram>| p.as_ref().and_then(health_counts).unwrap_or_default();
        Snapshot {
            runs: c.runs,
            aborts: c.aborts,
            health: [h(&self.hook.stable), h(&self.hook.canary)],
            verdicts: [&self.hook.stable, &self.hook.canary]
                .map(|p| p.as_ref().and_then(LoadedProgram::verdict_counts)),
            canary_run_cnt: self
                .hook
                .canary
                .as_ref()
                .and_then(|p| p.info().ok())
                .map_or(0, |i| i.run_cnt),
        }
    }

    fn sample(&self, now: &Snapshot) -> [VersionSample; 2] {
        let cost = |p: &Option<LoadedProgram>| {
            let wants_cost = self
                .spec
                .checks
                .iter()
                .any(|c| c.kind == crate::config::CheckKind::Cost);
            if !wants_cost || !self.hook.kind().has_flows() {
                return None;
            }
            let p = p.as_ref()?;
            p.fd.test_run(&reference_frame(), 2000)
                .ok()
                .map(|r| f64::from(r.duration_ns))
        };
        let mk = |slot: usize, p: &Option<LoadedProgram>| VersionSample {
            runs: now.runs[slot].saturating_sub(self.snapshot.runs[slot]),
            aborts: now.aborts[slot].saturating_sub(self.snapshot.aborts[slot]),
            good: now.health[slot]
                .0
                .saturating_sub(self.snapshot.health[slot].0),
            bad: now.health[slot]
                .1
                .saturating_sub(self.snapshot.health[slot].1),
            cost_ns: cost(p),
            verdicts: self.verdict_delta(now, slot),
        };
        if self.hook.whole_host {
            // Every event goes to the canary; its aborts are attributed to the program at the
            // hook (slot 0). There is no concurrent stable baseline on this host.
            let mut canary = mk(0, &self.hook.canary);
            canary.runs = now
                .canary_run_cnt
                .saturating_sub(self.snapshot.canary_run_cnt);
            canary.good = now.health[1].0.saturating_sub(self.snapshot.health[1].0);
            canary.bad = now.health[1].1.saturating_sub(self.snapshot.health[1].1);
            canary.verdicts = self.verdict_delta(now, 1);
            return [VersionSample::default(), canary];
        }
        [mk(0, &self.hook.stable), mk(1, &self.hook.canary)]
    }

    /// The verdicts version `slot` (0 stable, 1 canary) gave since the interval began, by name.
    fn verdict_delta(&self, now: &Snapshot, slot: usize) -> BTreeMap<String, u64> {
        match (now.verdicts[slot], self.snapshot.verdicts[slot]) {
            (Some(now), Some(then)) => self.verdict_set().named(&now, Some(&then)),
            _ => BTreeMap::new(),
        }
    }

    fn verdict_set(&self) -> VerdictSet {
        VerdictSet::for_hook(self.hook.kind())
    }

    fn drive_canary(&mut self) {
        let interval = Duration::from_secs_f64(self.spec.analysis.interval_seconds);
        if self.last_measure.elapsed() >= interval {
            self.last_measure = Instant::now();
            let now = self.take_snapshot();
            let [stable, canary] = self.sample(&now);
            self.snapshot = now;
            let outcomes: Vec<Outcome> = self
                .spec
                .checks
                .iter()
                .map(|c| analysis::measure(c, &canary, &stable, self.ctx.external.as_ref()))
                .collect();
            {
                let mut s = self.status();
                s.stable_sample = stable.clone();
                s.canary_sample = canary.clone();
            }
            match self
                .analysis
                .record(&self.spec.analysis, &self.spec.checks, outcomes)
            {
                Verdict::Continue => {}
                Verdict::Pause(why) => {
                    self.state.phase = Phase::Paused;
                    self.save();
                    self.audit(
                        "paused",
                        self.state.canary.as_ref().map(|c| c.digest.as_str()),
                        &why,
                    );
                    self.publish(&format!("paused: {why}"));
                    return;
                }
                Verdict::RollBack(why) => {
                    self.roll_back(&why, "analysis");
                    return;
                }
            }
        }
        let step = self.spec.rollout.steps[self.state.step];
        let baked = self.step_started.elapsed() >= Duration::from_secs_f64(step.bake_seconds);
        let measured = match self.spec.analysis.count {
            Some(count) => self.analysis.measurements >= count,
            None => {
                self.analysis.measurements > 0
                    || self.spec.checks.is_empty()
                    || step.bake_seconds == 0.0
            }
        };
        if baked && measured {
            if self.state.step + 1 < self.spec.rollout.steps.len() {
                let next = self.state.step + 1;
                self.enter_step(next);
                self.audit(
                    "step",
                    self.state.canary.as_ref().map(|c| c.digest.as_str()),
                    &format!(
                        "analysis passed; canary at {}%",
                        self.spec.rollout.steps[next].percent
                    ),
                );
            } else {
                self.promote("all steps passed analysis");
            }
        }
    }

    fn promote(&mut self, why: &str) {
        if let Err(e) = self.hook.promote() {
            self.roll_back(&format!("promotion failed: {e}"), "attach_error");
            return;
        }
        self.finish_promotion(why);
    }

    fn finish_promotion(&mut self, why: &str) {
        if let Some(old) = self.state.previous.take() {
            self.forget_version(&old);
        }
        self.state.previous = self.state.stable.take();
        self.state.previous_until_unix =
            now_unix() + self.spec.rollout.rollback_window().ceil() as u64;
        self.state.stable = self.state.canary.take();
        if let Some(s) = &self.state.stable {
            self.state.history.record(&s.digest, s.version, now_unix());
        }
        self.state.phase = Phase::Stable;
        self.state.whole_host = None;
        self.save();
        let d = self.state.stable.as_ref().map(|v| v.digest.clone());
        self.audit("promoted", d.as_deref(), why);
        self.publish(&format!("promoted: {why}"));
        self.next_poll = Instant::now();
    }

    fn count_rollback(&self, reason: &str) {
        *self
            .status()
            .rollbacks
            .entry(reason.to_string())
            .or_default() += 1;
    }

    /// Sends all traffic back to stable and never retries the canary's digest.
    fn roll_back(&mut self, why: &str, reason_kind: &str) {
        let took = self.hook.roll_back_canary();
        if let Ok(t) = &took {
            self.status().last_rollback_latency_us = Some(t.as_secs_f64() * 1e6);
        }
        self.count_rollback(reason_kind);
        self.state.whole_host = None;
        let canary = self.state.canary.take();
        self.state.phase = if self.state.stable.is_some() {
            Phase::Stable
        } else {
            Phase::Empty
        };
        if let Some(c) = &canary {
            let _ = std::fs::remove_file(self.hook.pins.join(c.pin_name()));
            self.reject(&c.digest, "rolled_back", why);
        } else {
            self.save();
        }
        if let Err(e) = took {
            self.publish(&format!("rollback incomplete: {e}"));
        }
    }

    fn forget_version(&mut self, v: &VersionRecord) {
        let _ = std::fs::remove_file(self.hook.pins.join(v.pin_name()));
    }

    /// Tells the content store that this deployment holds what its state names, and only that.
    fn hold_state_content(&self) {
        let s = &self.state;
        let held = [&s.stable, &s.canary, &s.previous]
            .into_iter()
            .flatten()
            .flat_map(|v| [Some(&v.content_digest), v.signatures.as_ref()])
            .flatten()
            .map(String::as_str);
        self.ctx.store.hold_only(&self.spec.name, held);
    }

    fn release_previous(&mut self) {
        if let Some(prev) = self.state.previous.take() {
            self.hook.previous = None;
            self.forget_version(&prev);
            self.save();
            self.audit(
                "released",
                Some(&prev.digest),
                "rollback window closed: previous version unloaded",
            );
        }
    }

    fn command(&mut self, c: Command) {
        let digest = self.state.canary.as_ref().map(|v| v.digest.clone());
        let handled = format!("{c:?} handled");
        match (c, self.state.phase) {
            (Command::Pin(pinned), _) => {
                self.state.rejected.retain(|r| r.digest != pinned);
                self.awaiting.settled(&pinned);
                self.state.pinned = Some(pinned.clone());
                self.save();
                self.audit(
                    "pinned",
                    Some(&pinned),
                    "pinned by the operator: taken instead of the tag's digest, even if promoted or refused before",
                );
                self.next_poll = Instant::now();
            }
            (Command::Unpin, _) => {
                let was = self.state.pinned.take();
                self.save();
                self.audit("unpinned", was.as_deref(), "following the tag again");
                self.next_poll = Instant::now();
            }
            (Command::Promote, Phase::Canary | Phase::Paused) => {
                self.promote("promoted by the operator")
            }
            (Command::Abort, Phase::Canary | Phase::Paused) => {
                self.roll_back("aborted by the operator", "operator")
            }
            (Command::Abort, Phase::Stable) if self.state.previous.is_some() => {
                match self.hook.roll_back_to_previous() {
                    Ok(t) => {
                        self.status().last_rollback_latency_us = Some(t.as_secs_f64() * 1e6);
                        self.count_rollback("operator");
                        let bad = self.state.stable.take();
                        self.state.stable = self.state.previous.take();
                        if let Some(b) = bad {
                            let _ = std::fs::remove_file(self.hook.pins.join(b.pin_name()));
                            self.reject(
                                &b.digest,
                                "rolled_back",
                                "rolled back by the operator within the rollback window",
                            );
                        }
                    }
                    Err(e) => self.publish(&format!("rollback failed: {e}")),
                }
            }
            (Command::Pause, Phase::Canary) => {
                self.state.phase = Phase::Paused;
                self.save();
                self.audit("paused", digest.as_deref(), "paused by the operator");
            }
            (Command::Resume, Phase::Paused) => {
                self.state.phase = Phase::Canary;
                self.enter_step(self.state.step);
                self.audit("resumed", digest.as_deref(), "resumed by the operator");
            }
            _ => {}
        }
        self.publish(&handled);
    }

    fn publish_counters(&self) {
        let c = self.hook.counters();
        let share = self.hook.share();
        let mut s = self.status();
        s.runs = c.runs;
        s.aborts = c.aborts;
        s.canary_percent = if self.hook.whole_host {
            100.0
        } else if self.state.canary.is_some() {
            f64::from(share) / 100.0
        } else {
            0.0
        };
    }

    /// Each loaded version: how its verdicts are counted and its counts so far.
    fn version_statuses(&self) -> Vec<bpfship_control::VersionStatus> {
        use crate::kernel::instrument::VerdictCounting;
        use bpfship_control::{VerdictCounting as Shown, VersionStatus};
        let roles = [
            ("stable", &self.state.stable, &self.hook.stable),
            ("canary", &self.state.canary, &self.hook.canary),
            ("previous", &self.state.previous, &self.hook.previous),
        ];
        roles
            .into_iter()
            .filter_map(|(role, record, prog)| {
                let (record, prog) = (record.as_ref()?, prog.as_ref()?);
                let verdict_counting = match &prog.verdicts {
                    Some(VerdictCounting::Instrumented(r)) => Shown::Instrumented {
                        exits: r.exits,
                        added_instructions: r.added_instructions,
                    },
                    Some(VerdictCounting::Unmodified { reason }) => Shown::Unmodified {
                        reason: reason.clone(),
                    },
                    None if self.hook.count_verdicts => Shown::Unmodified {
                        reason: "adopted from its pin without verdict counters".into(),
                    },
                    None => Shown::Off,
                };
                Some(VersionStatus {
                    role: role.into(),
                    digest: record.digest.clone(),
                    program_id: prog.id,
                    verdict_counting,
                    verdicts: prog
                        .verdict_counts()
                        .map(|c| self.verdict_set().named(&c, None))
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Updates the shared status from the state, with a new message.
    fn publish(&self, message: &str) {
        self.status().message = clip(message);
        self.refresh();
    }

    /// Updates the shared status from the state.
    fn refresh(&self) {
        let mut s = self.status();
        s.name = self.spec.name.clone();
        s.artifact = self.spec.artifact.clone();
        s.hook = self.spec.hook.to_string();
        s.phase = self.state.phase;
        s.stable = self.state.stable.as_ref().map(|v| v.digest.clone());
        s.canary = self.state.canary.as_ref().map(|v| v.digest.clone());
        s.previous = self.state.previous.as_ref().map(|v| v.digest.clone());
        s.step = self.state.canary.as_ref().map(|_| self.state.step);
        s.steps = self.spec.rollout.steps.len();
        s.split = match (self.spec.rollout.split, self.hook.kind().has_flows()) {
            _ if self.state.whole_host.is_some() => format!(
                "whole-host canary: {}",
                self.state.whole_host.as_deref().unwrap_or_default()
            ),
            (crate::kernel::SplitMode::FlowHash, true) => "flow_hash".into(),
            (crate::kernel::SplitMode::FlowHash, false) => {
                "random (tracepoint and uprobe events carry no flow: per-event split)".into()
            }
            (crate::kernel::SplitMode::Random, _) => "random".into(),
        };
        s.fleet_bucket = fleet_bucket(&self.salt, &self.ctx.host_id);
        s.in_fleet_cohort = f64::from(s.fleet_bucket) < self.spec.rollout.fleet_percent * 100.0;
        s.analysis = self.analysis.clone();
        s.program_ids = self.hook.program_ids();
        s.versions = self.version_statuses();
        s.rejected = self.state.rejected.clone();
        s.awaiting_signature = self.awaiting.status(Instant::now());
        s.pinned = self.state.pinned.clone();
        s.history = self.state.history.promotions().to_vec();
        s.policy = match self.ctx.policy.error() {
            Some(e) => format!(
                "{} (policy file: {})",
                self.ctx.policy.current().digest,
                clip(&e)
            ),
            None => self.ctx.policy.current().digest.clone(),
        };
    }
}

/// Debug builds only (release builds do not contain it): `BPFSHIP_AGENT_TEST_PANIC=<name>` makes
/// that deployment's loop panic as it starts, so tests can show the supervision end to end.
#[cfg(debug_assertions)]
fn injected_panic(name: &str) {
    if std::env::var("BPFSHIP_AGENT_TEST_PANIC").is_ok_and(|v| v == name) {
        panic!("injected test panic in deployment {name} (BPFSHIP_AGENT_TEST_PANIC)");
    }
}

/// The dispatcher's per-deployment hash salt.
fn dispatcher_salt(name: &str, salt: &str) -> u32 {
    fleet_bucket(salt, "dispatcher") ^ (fleet_bucket(name, salt) << 16)
}

/// The last lines of a verifier log (status keeps the tail, the full log can be megabytes),
/// each line made safe and bounded.
fn tail(log: &str) -> String {
    let lines: Vec<String> = log.lines().map(|l| text::clip_to(l, 256)).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Returns memory freed after a pull (artifact bytes, parsed objects) to the system, so an idle
/// agent's resident size reflects what it keeps, not its last peak (glibc keeps freed memory in
/// per-thread arenas otherwise).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
