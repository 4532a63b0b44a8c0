//! The root-only control socket: one JSON request per connection, one JSON answer.
//! `bpfship agent status|promote|abort|pause|resume|pin|unpin [DEPLOYMENT [DIGEST]]` is the
//! client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bpfship_control::Command as Wire;
pub use bpfship_control::{Request, RequestKind, Response, request};

use crate::deployment::{Command, DeploymentStatus};

/// What the server needs from the running agent.
pub struct Registry {
    pub statuses: BTreeMap<String, Arc<Mutex<DeploymentStatus>>>,
    pub commands: BTreeMap<String, Sender<Command>>,
}

fn statuses(reg: &Registry, only: Option<&str>) -> Vec<DeploymentStatus> {
    reg.statuses
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n.as_str()))
        .map(|(_, s)| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect()
}

/// Answers one request.
pub fn handle(reg: &Registry, req: &Request) -> Response {
    let fail = Response::refused;
    if let Some(d) = &req.deployment
        && !reg.statuses.contains_key(d)
    {
        return fail(format!("no deployment named {d}"));
    }
    let command: Command = match req.command {
        RequestKind::Status => {
            return Response {
                ok: true,
                error: None,
                deployments: statuses(reg, req.deployment.as_deref()),
            };
        }
        RequestKind::Command(c) => match c {
            Wire::Promote => Command::Promote,
            Wire::Abort => Command::Abort,
            Wire::Pause => Command::Pause,
            Wire::Resume => Command::Resume,
            Wire::Pin => match &req.digest {
                Some(d) if bpfship_registry::reference::is_sha256(d) => Command::Pin(d.clone()),
                Some(d) => {
                    return fail(format!(
                        "pin: {} is not a sha256:<64 hex> digest",
                        crate::text::clip_to(d, 80)
                    ));
                }
                None => return fail("pin needs a digest".into()),
            },
            Wire::Unpin => Command::Unpin,
        },
    };
    let Some(name) = &req.deployment else {
        return fail(format!("{command:?} needs a deployment name"));
    };
    if reg.commands[name].send(command).is_err() {
        return fail(format!("deployment {name} is not running"));
    }
    // Give the deployment loop a moment so the answer shows the effect.
    std::thread::sleep(Duration::from_millis(150));
    Response {
        ok: true,
        error: None,
        deployments: statuses(reg, Some(name)),
    }
}

/// Binds the socket (mode 0600, replacing a stale one) and serves it on a thread.
pub fn serve(path: &Path, reg: Arc<Registry>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let reg = reg.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve_one(stream, &reg));
            }
        })?;
    Ok(())
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred/len describe a valid ucred buffer.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

fn serve_one(stream: UnixStream, reg: &Registry) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let response = if peer_uid(&stream) != Some(0) {
        Response::refused("the control socket is root-only".into())
    } else {
        let mut line = String::new();
        // Requests are tiny: cap what a client can make the agent buffer.
        let mut reader = BufReader::new(std::io::Read::take(&stream, 64 * 1024));
        match reader.read_line(&mut line) {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(reg, &req),
                Err(e) => Response::refused(format!("bad request: {e}")),
            },
            Err(e) => Response::refused(format!("read: {e}")),
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
}
