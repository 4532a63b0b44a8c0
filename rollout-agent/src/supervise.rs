//! Supervision of the deployment threads. A deployment loop never ends on its own; one that
//! panics or returns would otherwise leave its status frozen while the agent looks healthy. The
//! supervisor reports the first thread that ends, with its panic message, and the agent exits
//! non-zero so the service manager restarts it (`Restart=on-failure`); the restarted agent
//! adopts the pinned programs, which kept running in the kernel meanwhile.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};

/// A supervised thread that ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("thread {thread} {how}")]
pub struct Ended {
    pub thread: String,
    /// `panicked: <message>`, or `returned`.
    pub how: String,
}

/// Starts threads and reports the first that ends.
pub struct Supervisor {
    tx: Sender<Ended>,
    rx: Receiver<Ended>,
}

impl Default for Supervisor {
    fn default() -> Self {
        let (tx, rx) = channel();
        Supervisor { tx, rx }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Supervisor {
    /// Runs `body` on a thread named `name`; its end, however it ends, is reported.
    pub fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let tx = self.tx.clone();
        let thread = name.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            let how = match catch_unwind(AssertUnwindSafe(body)) {
                Ok(()) => "returned".to_string(),
                Err(p) => format!("panicked: {}", panic_message(p.as_ref())),
            };
            let _ = tx.send(Ended { thread, how });
        })?;
        Ok(())
    }

    /// Blocks until a supervised thread ends and returns how (forever if none was started).
    pub fn first_end(self) -> Ended {
        // Our own sender stays alive: with no threads this waits forever, never disconnects.
        let Supervisor { tx: _sender, rx } = self;
        loop {
            if let Ok(ended) = rx.recv() {
                return ended;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_is_reported_with_its_message() {
        let s = Supervisor::default();
        s.spawn("deploy-calm".into(), || {
            std::thread::sleep(std::time::Duration::from_secs(3600))
        })
        .unwrap();
        s.spawn("deploy-edge".into(), || {
            let steps: Vec<u32> = Vec::new();
            let i = steps.len() + 3;
            let _ = steps[i];
        })
        .unwrap();
        let ended = s.first_end();
        assert_eq!(ended.thread, "deploy-edge");
        assert!(
            ended.how.starts_with("panicked: index out of bounds"),
            "{ended}"
        );
    }

    #[test]
    fn a_thread_that_returns_is_reported_too() {
        let s = Supervisor::default();
        s.spawn("deploy-done".into(), || {}).unwrap();
        assert_eq!(
            s.first_end(),
            Ended {
                thread: "deploy-done".into(),
                how: "returned".into()
            }
        );
    }
}
