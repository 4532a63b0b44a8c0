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

use serde::{Deserialize, Serialize};

use crate::deployment::{Command, DeploymentStatus};

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `status`, `promote`, `abort`, `pause`, `resume`, `pin` or `unpin`.
    pub command: String,
    /// The deployment; `None` means all (status) — other commands need one.
    pub deployment: Option<String>,
    /// The digest to pin (`pin` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub error: Option<String>,
    pub deployments: Vec<serde_json::Value>,
}

/// What the server needs from the running agent.
pub struct Registry {
    pub statuses: BTreeMap<String, Arc<Mutex<DeploymentStatus>>>,
    pub commands: BTreeMap<String, Sender<Command>>,
}

fn statuses(reg: &Registry, only: Option<&str>) -> Vec<serde_json::Value> {
    reg.statuses
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n.as_str()))
        .map(|(_, s)| {
            serde_json::to_value(&*s.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default()
        })
        .collect()
}

/// Answers one request.
pub fn handle(reg: &Registry, req: &Request) -> Response {
    let fail = |e: String| Response {
        ok: false,
        error: Some(e),
        deployments: vec![],
    };
    if let Some(d) = &req.deployment
        && !reg.statuses.contains_key(d)
    {
        return fail(format!("no deployment named {d}"));
    }
    let command = match req.command.as_str() {
        "status" => {
            return Response {
                ok: true,
                error: None,
                deployments: statuses(reg, req.deployment.as_deref()),
            };
        }
        "promote" => Command::Promote,
        "abort" => Command::Abort,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "pin" => match &req.digest {
            Some(d) if bpfship_registry::reference::is_sha256(d) => Command::Pin(d.clone()),
            Some(d) => {
                return fail(format!(
                    "pin: {} is not a sha256:<64 hex> digest",
                    crate::text::clip_to(d, 80)
                ));
            }
            None => return fail("pin needs a digest".into()),
        },
        "unpin" => Command::Unpin,
        other => {
            return fail(format!(
                "unknown command {}",
                crate::text::clip_to(other, 80)
            ));
        }
    };
    let Some(name) = &req.deployment else {
        return fail(format!("{} needs a deployment name", req.command));
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
        Response {
            ok: false,
            error: Some("the control socket is root-only".into()),
            deployments: vec![],
        }
    } else {
        let mut line = String::new();
        // Requests are tiny: cap what a client can make the agent buffer.
        let mut reader = BufReader::new(std::io::Read::take(&stream, 64 * 1024));
        match reader.read_line(&mut line) {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(reg, &req),
                Err(e) => Response {
                    ok: false,
                    error: Some(format!("bad request: {e}")),
                    deployments: vec![],
                },
            },
            Err(e) => Response {
                ok: false,
                error: Some(format!("read: {e}")),
                deployments: vec![],
            },
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
}

/// Sends a request to the agent at `socket` (the CLI side).
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("{}: cannot reach the agent: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&stream, 16 * 1024 * 1024))
        .read_line(&mut answer)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    serde_json::from_str(&answer)
        .map_err(|e| format!("{}: bad answer from the agent: {e}", socket.display()))
}
