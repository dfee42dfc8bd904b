//! The control socket: a Unix stream socket speaking newline-delimited JSON
//! (see [`crate::protocol`]), one thread per client so that a slow or stuck
//! client only ever holds up itself.
//!
//! The operator must always get in, however many connections scripts or
//! stuck clients hold. Connections are bounded in number (one thread each),
//! per user other than root, and in time: a request must arrive whole soon
//! after its first byte, and a connection that sends no request is closed
//! after the idle timeout. When every connection is taken, root (or the
//! daemon's own user) closes the one idle longest to get in; one with a
//! request in progress is never closed for it. Users other than root cannot
//! take the last few connections, kept for root, so that requests in progress
//! from the control group cannot fill the table either.
//!
//! Who may connect is decided twice: the socket file's mode and group keep
//! strangers from connecting at all, and the peer's credentials (SO_PEERCRED)
//! are checked on every connection, so a socket left world-writable by
//! mistake still answers only root and the control group.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::unistd::{Gid, Group, Uid, User};

use crate::protocol::{
    decode_request, encode, ErrorCode, Request, Response, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use crate::stats::ControlSocketCounters;

/// Answers requests. Called from many client threads at once.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, peer: &Peer) -> Response;
}

/// The process at the other end of a connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Who may use the socket, besides root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAccess {
    /// Mode of the socket file. Connecting needs write permission on it.
    pub mode: u32,
    /// Members of this group (primary or supplementary) may connect.
    pub group: Option<String>,
}

impl Default for SocketAccess {
    fn default() -> SocketAccess {
        SocketAccess {
            mode: 0o660,
            group: None,
        }
    }
}

/// Bounds that keep clients from exhausting the daemon or locking the
/// operator out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once, each served by a thread of its own.
    pub max_clients: usize,
    /// Connections one user other than root (and the daemon's own user) may
    /// hold at once.
    pub max_clients_per_uid: usize,
    /// Of `max_clients`, the connections only root and the daemon's own user
    /// may take.
    pub reserved_for_root: usize,
    /// A request must arrive whole within this once its first byte has.
    pub request_timeout: Duration,
    /// A connection that sends no request for this long is closed. Only the
    /// wait between requests counts: a request being answered is never idle,
    /// however long its reply takes (a reply that streams events included).
    pub idle_timeout: Duration,
    /// A client that does not read its replies for this long is dropped.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_clients: 64,
            max_clients_per_uid: 8,
            reserved_for_root: 4,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Where connection refusals are reported. The daemon logs to stderr (the
/// journal, under systemd); tests collect the lines.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("a running process (another tollgate?) already answers on the control socket {0}; stop it first, or configure another socket path")]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it: remove it or choose another socket path")]
    NotASocket(PathBuf),
    #[error("the control group {0:?} does not exist: create it (groupadd {0}) or change the configured group")]
    NoSuchGroup(String),
    #[error("cannot look up the control group {group:?}: {source}")]
    GroupLookup { group: String, source: Errno },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ServerError + 'p {
    move |source| ServerError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A bound control socket, not yet answering.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's identity, so shutdown never removes a socket that a
    /// newer daemon has since bound at the same path.
    file_id: (u64, u64),
    group: Option<(String, Gid)>,
    limits: ServerLimits,
    log: LogSink,
}

/// How many refused connections may linger at once (see `refuse`).
const MAX_LINGERING_REFUSALS: usize = 64;
/// How long a refused connection waits for its request before closing.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How long a connection that closed another to get in waits for that one's
/// thread to leave (it is woken at once; this bounds a thread that is not).
const LEAVE_WAIT: Duration = Duration::from_secs(1);
/// Connection events logged one by one per second; past that, one line says
/// the rest are only counted.
const LOG_EVENTS_PER_SECOND: u32 = 10;

impl ControlServer {
    /// Binds the socket at `path`: creates the parent directory if missing,
    /// replaces a stale socket left by a daemon that died, and refuses to
    /// take over one that a live daemon still answers on.
    pub fn bind(path: &Path, access: &SocketAccess) -> Result<ControlServer, ServerError> {
        let group = match &access.group {
            None => None,
            Some(name) => Some((name.clone(), lookup_group(name)?)),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io_error("create the directory", dir))?;
            }
        }
        remove_stale_socket(path)?;
        let listener =
            UnixListener::bind(path).map_err(io_error("bind the control socket", path))?;
        // chown before chmod: a group member must never find the socket
        // writable while it still has the wrong group.
        if let Some((_, gid)) = &group {
            nix::unistd::chown(path, None, Some(*gid)).map_err(|e| ServerError::Io {
                what: "change the group of",
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(access.mode))
            .map_err(io_error("set the mode of", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            file_id: (meta.dev(), meta.ino()),
            group,
            limits: ServerLimits::default(),
            log: Arc::new(|line: &str| eprintln!("{line}")),
        })
    }

    pub fn with_limits(mut self, limits: ServerLimits) -> ControlServer {
        self.limits = limits;
        self
    }

    pub fn with_log(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> ControlServer {
        self.log = Arc::new(log);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts answering: an accept thread plus one thread per client.
    /// Returns at once.
    pub fn serve(self, handler: Arc<dyn Handler>) -> ServerHandle {
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            left: Condvar::new(),
            lingering: AtomicUsize::new(0),
            group: self.group,
            limits: self.limits,
            log: self.log,
            log_budget: Mutex::new((Instant::now(), 0)),
            own_uid: Uid::effective().as_raw(),
            counters: Counters::default(),
        });
        let listener = self.listener;
        // A second descriptor for the same socket, so shutdown can wake the
        // accept thread from outside it.
        let waker = listener.try_clone().ok();
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("control-accept".into())
                .spawn(move || accept_loop(listener, shared, handler))
                .ok()
        };
        ServerHandle {
            path: self.path,
            file_id: self.file_id,
            shared,
            waker,
            accept,
        }
    }
}

/// The control group's id, by name or number: what [`ControlServer::bind`] looks up, for a
/// configuration check to ask before binding.
pub fn lookup_group(name: &str) -> Result<Gid, ServerError> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        // A numeric group works too, for hosts where the group has no name.
        Ok(None) => name
            .parse::<u32>()
            .map(Gid::from_raw)
            .map_err(|_| ServerError::NoSuchGroup(name.to_owned())),
        Err(source) => Err(ServerError::GroupLookup {
            group: name.to_owned(),
            source,
        }),
    }
}

/// Removes `path` if it is a socket nobody answers on.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_owned()));
    }
    match probe(path) {
        Probe::Live => Err(ServerError::AlreadyRunning(path.to_owned())),
        Probe::Gone => Ok(()),
        Probe::Stale => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove the stale socket", path)(e)),
        },
        Probe::Unknown(source) => Err(ServerError::Io {
            what: "check whether a daemon still answers on",
            path: path.to_owned(),
            source,
        }),
    }
}

enum Probe {
    Live,
    Stale,
    Gone,
    Unknown(io::Error),
}

/// Tries to connect without blocking: a live daemon whose backlog is full
/// would otherwise hang the new daemon's start-up.
fn probe(path: &Path) -> Probe {
    let fd = match sock::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => fd,
        Err(e) => return Probe::Unknown(e.into()),
    };
    let addr = match UnixAddr::new(path) {
        Ok(a) => a,
        Err(e) => return Probe::Unknown(e.into()),
    };
    match sock::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Probe::Live,
        Err(Errno::ECONNREFUSED) => Probe::Stale,
        Err(Errno::ENOENT) => Probe::Gone,
        Err(e) => Probe::Unknown(e.into()),
    }
}

struct Shared {
    stopping: AtomicBool,
    /// Every connection being served, by id.
    clients: Mutex<HashMap<u64, Slot>>,
    /// Signalled whenever a client thread gives up its slot.
    left: Condvar,
    lingering: AtomicUsize,
    group: Option<(String, Gid)>,
    limits: ServerLimits,
    log: LogSink,
    /// The current second and the connection events logged in it.
    log_budget: Mutex<(Instant, u32)>,
    own_uid: u32,
    counters: Counters,
}

/// One connection in the table.
struct Slot {
    occupant: Occupant,
    /// The connection's socket, to wake its thread (eviction, shutdown).
    stream: UnixStream,
}

/// What admission needs to know of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Occupant {
    uid: u32,
    pid: i32,
    /// Since when the connection has waited for a request; `None` while one
    /// is arriving or being answered.
    idle_since: Option<Instant>,
    /// Closed to make room for root; its thread is on its way out.
    evicted: bool,
}

/// The counters of [`ControlSocketCounters`] that are not read off the table.
#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    refused_full: AtomicU64,
    refused_uid_limit: AtomicU64,
    refused_not_permitted: AtomicU64,
    evicted_idle: AtomicU64,
    idle_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    requests_too_large: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // A client thread that panicked while holding the lock leaves the
        // map itself intact.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, line: &str) {
        (self.log)(line);
    }

    /// Logs one connection event, unless more than `LOG_EVENTS_PER_SECOND`
    /// came this second: a flood of connections must not become a flood of
    /// log lines. The counters have every event.
    fn log_event(&self, line: &str) {
        let logged = {
            let mut budget = self.log_budget.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if now.duration_since(budget.0) >= Duration::from_secs(1) {
                *budget = (now, 0);
            }
            budget.1 = budget.1.saturating_add(1);
            budget.1
        };
        if logged <= LOG_EVENTS_PER_SECOND {
            self.log(line);
        } else if logged == LOG_EVENTS_PER_SECOND + 1 {
            self.log("tollgate: control: more connection events than the log takes one by one this second; the control_socket counters (tollgatectl stats) have them all");
        }
    }

    /// The connection's request has begun: it can no longer be evicted.
    /// False if it was evicted already.
    fn begin_request(&self, id: u64) -> bool {
        match self.clients().get_mut(&id) {
            Some(slot) if !slot.occupant.evicted => {
                slot.occupant.idle_since = None;
                true
            }
            _ => false,
        }
    }

    /// The connection waits for its next request from now on.
    fn end_request(&self, id: u64) {
        if let Some(slot) = self.clients().get_mut(&id) {
            slot.occupant.idle_since = Some(Instant::now());
        }
    }

    fn evicted(&self, id: u64) -> bool {
        self.clients()
            .get(&id)
            .is_some_and(|slot| slot.occupant.evicted)
    }

    fn leave(&self, id: u64) {
        self.clients().remove(&id);
        self.left.notify_all();
    }

    fn snapshot(&self) -> ControlSocketCounters {
        let (connections, requests_in_progress) = {
            let clients = self.clients();
            let busy = clients
                .values()
                .filter(|s| s.occupant.idle_since.is_none() && !s.occupant.evicted)
                .count();
            (clients.len() as u64, busy as u64)
        };
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ControlSocketCounters {
            connections,
            requests_in_progress,
            connections_accepted: get(&c.connections_accepted),
            refused_full: get(&c.refused_full),
            refused_uid_limit: get(&c.refused_uid_limit),
            refused_not_permitted: get(&c.refused_not_permitted),
            evicted_idle: get(&c.evicted_idle),
            idle_timeouts: get(&c.idle_timeouts),
            request_timeouts: get(&c.request_timeouts),
            write_timeouts: get(&c.write_timeouts),
            requests_too_large: get(&c.requests_too_large),
        }
    }
}

/// Reads the control socket's counters, also after the server has stopped.
#[derive(Clone)]
pub struct ServerCounters(Arc<Shared>);

impl ServerCounters {
    pub fn snapshot(&self) -> ControlSocketCounters {
        self.0.snapshot()
    }
}

/// What becomes of a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Admit,
    /// Close this idle connection, then ask again.
    Evict(u64),
    /// A connection closed to make room is still leaving: ask again once it
    /// has.
    WaitForLeaver,
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Root, with every connection in the middle of a request.
    Busy,
    /// Another user, with every connection it may take taken.
    Full,
    /// Another user, holding `max_clients_per_uid` connections already.
    UidLimit,
}

/// Decides on a connection from `uid`, given the connections open.
fn admit(
    open: impl IntoIterator<Item = (u64, Occupant)>,
    uid: u32,
    privileged: bool,
    limits: &ServerLimits,
) -> Admission {
    let mut total = 0;
    let mut leaving = false;
    let mut same_uid = 0;
    // The connection idle longest, the one to close if root needs room.
    let mut longest_idle: Option<(Instant, u64)> = None;
    for (id, o) in open {
        total += 1;
        leaving |= o.evicted;
        if o.evicted {
            continue;
        }
        if o.uid == uid {
            same_uid += 1;
        }
        if let Some(since) = o.idle_since {
            if longest_idle.is_none_or(|(oldest, _)| since < oldest) {
                longest_idle = Some((since, id));
            }
        }
    }
    if !privileged {
        return if same_uid >= limits.max_clients_per_uid {
            Admission::Refuse(Refusal::UidLimit)
        } else if total >= limits.max_clients.saturating_sub(limits.reserved_for_root) {
            Admission::Refuse(Refusal::Full)
        } else {
            Admission::Admit
        };
    }
    if total < limits.max_clients {
        Admission::Admit
    } else if leaving {
        Admission::WaitForLeaver
    } else if let Some((_, id)) = longest_idle {
        Admission::Evict(id)
    } else {
        Admission::Refuse(Refusal::Busy)
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A running control server. Dropping it shuts it down too.
pub struct ServerHandle {
    path: PathBuf,
    file_id: (u64, u64),
    shared: Arc<Shared>,
    waker: Option<UnixListener>,
    accept: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clients connected right now.
    pub fn clients(&self) -> usize {
        self.shared.clients().len()
    }

    /// The control socket's counters, for the daemon's stats.
    pub fn counters(&self) -> ServerCounters {
        ServerCounters(Arc::clone(&self.shared))
    }

    /// Stops accepting, disconnects every client and removes the socket
    /// file. Returns without waiting for requests already inside the
    /// handler: the handler may be waiting on the very thread that calls
    /// shutdown. Their replies are discarded.
    pub fn shutdown(self) {
        // Drop does the work, so a handle dropped on an error path cleans
        // up just the same.
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.file_id {
                let _ = fs::remove_file(&self.path);
            }
        }
        // On Linux, shutting down a listening socket makes a blocked
        // accept() return at once.
        // Without a waker (no descriptor was left to make one) the accept
        // thread is left to exit at its next connection.
        let woken = self
            .waker
            .as_ref()
            .is_some_and(|w| sock::shutdown(w.as_raw_fd(), sock::Shutdown::Both).is_ok());
        if let Some(accept) = self.accept.take().filter(|_| woken) {
            let _ = accept.join();
        }
        // Shutting a client's socket down wakes its thread from a read or
        // write at once; a thread inside the handler finds the socket closed
        // when it returns.
        for (_, slot) in self.shared.clients().drain() {
            let _ = slot.stream.shutdown(std::net::Shutdown::Both);
        }
        self.shared.left.notify_all();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, handler: Arc<dyn Handler>) {
    let mut next_id: u64 = 0;
    let mut failing = false;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or memory: back off rather than spin
                // (the condition clears as clients leave), and log once per
                // episode rather than ten times a second.
                if !failing {
                    shared.log(&format!(
                        "tollgate: control: cannot accept connections: {e}"
                    ));
                }
                failing = true;
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        failing = false;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                shared.log(&format!(
                    "tollgate: control: refused a connection: cannot read its credentials: {e}"
                ));
                continue;
            }
        };
        let limits = &shared.limits;
        let privileged = peer.uid == 0 || peer.uid == shared.own_uid;
        let deadline = Instant::now() + LEAVE_WAIT;
        let mut clients = shared.clients();
        let refusal = loop {
            let open = clients.iter().map(|(id, slot)| (*id, slot.occupant));
            match admit(open, peer.uid, privileged, limits) {
                Admission::Admit => break None,
                Admission::Refuse(why) => break Some(why),
                Admission::Evict(id) => {
                    let Some(slot) = clients.get_mut(&id) else {
                        continue;
                    };
                    slot.occupant.evicted = true;
                    // Wakes the thread from its read; it tells its client why
                    // and leaves.
                    let _ = slot.stream.shutdown(std::net::Shutdown::Read);
                    count(&shared.counters.evicted_idle);
                    let idle = slot
                        .occupant
                        .idle_since
                        .map(|since| {
                            secs(Duration::from_millis(since.elapsed().as_millis() as u64))
                        })
                        .unwrap_or_default();
                    let line = format!(
                        "tollgate: control: closed uid {} (pid {}, idle {idle}) to make room for uid {} (pid {}): all {} connections were taken (control.max_clients)",
                        slot.occupant.uid, slot.occupant.pid, peer.uid, peer.pid, limits.max_clients
                    );
                    drop(clients);
                    shared.log_event(&line);
                    clients = shared.clients();
                }
                Admission::WaitForLeaver => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Some(Refusal::Busy);
                    }
                    clients = shared
                        .left
                        .wait_timeout(clients, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        };
        if let Some(why) = refusal {
            let open = clients.len();
            let same_uid = clients
                .values()
                .filter(|slot| slot.occupant.uid == peer.uid && !slot.occupant.evicted)
                .count();
            drop(clients);
            let max = limits.max_clients;
            let (counter, logged, told) = match why {
                Refusal::Busy => (
                    &shared.counters.refused_full,
                    format!("all {max} connections have a request in progress (control.max_clients)"),
                    format!("all {max} of tollgate's control connections have a request in progress; try again in a moment"),
                ),
                Refusal::Full => (
                    &shared.counters.refused_full,
                    format!(
                        "{open} connections open, the most users other than root may take (control.max_clients {max} less control.reserved_for_root {})",
                        limits.reserved_for_root
                    ),
                    format!(
                        "tollgate's control connections are all taken ({open} open; the last {} of {max} are kept for root); try again when one has finished",
                        limits.reserved_for_root
                    ),
                ),
                Refusal::UidLimit => (
                    &shared.counters.refused_uid_limit,
                    format!(
                        "it already has {same_uid} connections open (control.max_clients_per_uid {})",
                        limits.max_clients_per_uid
                    ),
                    format!(
                        "uid {} already has {same_uid} control connections open, the most one user may (control.max_clients_per_uid {}); close one, or wait for one to finish",
                        peer.uid, limits.max_clients_per_uid
                    ),
                ),
            };
            count(counter);
            shared.log_event(&format!(
                "tollgate: control: refused uid {} (pid {}): {logged}",
                peer.uid, peer.pid
            ));
            refuse(
                stream,
                &Response::error(None, ErrorCode::Unavailable, told),
                &shared,
            );
            continue;
        }
        next_id += 1;
        let id = next_id;
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let thread = {
            let shared = Arc::clone(&shared);
            let handler = Arc::clone(&handler);
            thread::Builder::new()
                .name("control-client".into())
                .spawn(move || {
                    serve_client(stream, peer, id, &shared, handler.as_ref());
                    shared.leave(id);
                })
        };
        // The new thread touches its slot only after taking the lock this
        // thread holds, so the slot is always inserted first.
        if thread.is_ok() {
            count(&shared.counters.connections_accepted);
            clients.insert(
                id,
                Slot {
                    occupant: Occupant {
                        uid: peer.uid,
                        pid: peer.pid,
                        idle_since: Some(Instant::now()),
                        evicted: false,
                    },
                    stream: registered,
                },
            );
        }
    }
}

fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let c = sock::getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(Peer {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Sends one error reply and closes. The reply is written without blocking
/// (a fresh socket's buffer always has room for it), then the connection
/// lingers briefly so that a client that sends its request first still
/// reads the reply rather than a broken pipe. Lingering happens off the
/// accept thread and is bounded, so refusals cannot pile up.
fn refuse(stream: UnixStream, reply: &Response, shared: &Arc<Shared>) {
    let line = encode(reply);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    if (&stream).write_all(&line).is_err() {
        return;
    }
    if shared.lingering.fetch_add(1, Ordering::SeqCst) >= MAX_LINGERING_REFUSALS {
        shared.lingering.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let lingerer = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("control-refused".into())
        .spawn(move || {
            linger(stream);
            lingerer.lingering.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        shared.lingering.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Half-closes and discards whatever the client sends until it hangs up or
/// the linger time runs out. Closing a Unix socket with unread data makes
/// the peer's next read fail with ECONNRESET, which would hide the reply.
fn linger(mut stream: UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let deadline = Instant::now() + REFUSAL_LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0usize;
    while discarded <= MAX_MESSAGE_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// Root, the daemon's own user, or a member of the control group.
fn is_allowed(
    peer: &Peer,
    own_uid: u32,
    group: Option<Gid>,
    supplementary: impl FnOnce() -> Vec<Gid>,
) -> bool {
    if peer.uid == 0 || peer.uid == own_uid {
        return true;
    }
    match group {
        None => false,
        Some(g) => peer.gid == g.as_raw() || supplementary().contains(&g),
    }
}

/// The groups the peer's user belongs to, from the group database. The
/// kernel reports only the peer's effective gid, and the user database is
/// what `usermod -aG` changes, which is what an operator expects to count.
fn groups_of(uid: u32, primary: u32) -> Vec<Gid> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(primary)).unwrap_or_default()
}

fn serve_client(
    stream: UnixStream,
    peer: Peer,
    id: u64,
    shared: &Arc<Shared>,
    handler: &dyn Handler,
) {
    let group_gid = shared.group.as_ref().map(|(_, g)| *g);
    if !is_allowed(&peer, shared.own_uid, group_gid, || {
        groups_of(peer.uid, peer.gid)
    }) {
        let (why, advice) = match &shared.group {
            Some((name, _)) => (
                format!("not root or in group {name}"),
                format!("run as root, or add the user to group {name} (usermod -aG {name} USER) and log in again"),
            ),
            None => ("not root".to_owned(), "run as root (no control group is configured)".to_owned()),
        };
        count(&shared.counters.refused_not_permitted);
        shared.log_event(&format!(
            "tollgate: control: refused uid {} (pid {}): {why}",
            peer.uid, peer.pid
        ));
        let reply = Response::error(
            None,
            ErrorCode::PermissionDenied,
            format!("uid {} is {why}: {advice}", peer.uid),
        );
        refuse(stream, &reply, shared);
        return;
    }
    let limits = &shared.limits;
    let closed = |counter: &AtomicU64, why: String| {
        count(counter);
        shared.log_event(&format!(
            "tollgate: control: closed uid {} (pid {}): {why}",
            peer.uid, peer.pid
        ));
    };
    let told = match serve_requests(&stream, &peer, id, shared, handler) {
        End::HungUp => None,
        End::TooLarge => {
            count(&shared.counters.requests_too_large);
            None
        }
        End::WriteTimeout => {
            closed(
                &shared.counters.write_timeouts,
                format!("it did not read its reply within {}", secs(limits.write_timeout)),
            );
            None
        }
        // Counted and logged by the accept thread, which chose it.
        End::Evicted => Some(Response::error(
            None,
            ErrorCode::Unavailable,
            format!("tollgate closed this idle control connection to make room for root: all {} were taken; connect again", limits.max_clients),
        )),
        End::IdleTimeout => {
            closed(
                &shared.counters.idle_timeouts,
                format!("no request for {} (control.idle_timeout_secs)", secs(limits.idle_timeout)),
            );
            Some(Response::error(
                None,
                ErrorCode::Unavailable,
                format!("tollgate closed this control connection after {} without a request (control.idle_timeout_secs); connect again", secs(limits.idle_timeout)),
            ))
        }
        End::RequestTimeout => {
            closed(
                &shared.counters.request_timeouts,
                format!("it did not send a whole request within {} of its first byte (control.request_timeout_secs)", secs(limits.request_timeout)),
            );
            Some(Response::error(
                None,
                ErrorCode::BadRequest,
                format!("the request did not arrive whole (a line ending in a newline) within {} of its first byte (control.request_timeout_secs); closing the connection", secs(limits.request_timeout)),
            ))
        }
    };
    if let Some(reply) = told {
        close_with(&stream, &reply);
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client hung up, or the connection failed, or the server stopped.
    HungUp,
    Evicted,
    IdleTimeout,
    RequestTimeout,
    WriteTimeout,
    TooLarge,
}

fn ended_by(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::WriteTimeout,
        _ => End::HungUp,
    }
}

/// The request loop: waits up to the idle timeout for a request's first
/// byte, then up to the request timeout for the rest of its line, answers
/// it, and again. Returns how the connection ended.
fn serve_requests(
    mut stream: &UnixStream,
    peer: &Peer,
    id: u64,
    shared: &Shared,
    handler: &dyn Handler,
) -> End {
    let limits = &shared.limits;
    if stream
        .set_write_timeout(Some(limits.write_timeout))
        .is_err()
    {
        return End::HungUp;
    }
    let mut lines = LineReader::new(MAX_MESSAGE_BYTES);
    loop {
        // Requests sent together: the next one has begun already.
        if lines.is_empty() {
            match lines.read_more(stream, Instant::now() + limits.idle_timeout) {
                Ok(None) => {}
                Ok(Some(Line::TimedOut)) => return End::IdleTimeout,
                Ok(Some(_)) | Err(_) if shared.evicted(id) => return End::Evicted,
                Ok(Some(_)) | Err(_) => return End::HungUp,
            }
        }
        if !shared.begin_request(id) {
            return End::Evicted;
        }
        let line = match lines.next_line(stream, Instant::now() + limits.request_timeout) {
            Ok(Line::Complete(line)) => line,
            Ok(Line::TooLong) => {
                let reply = Response::error(
                    None,
                    ErrorCode::TooLarge,
                    format!(
                        "request is longer than {MAX_MESSAGE_BYTES} bytes; closing the connection"
                    ),
                );
                return match stream.write_all(&encode(&reply)) {
                    Ok(()) => End::TooLarge,
                    Err(e) => ended_by(&e),
                };
            }
            Ok(Line::TimedOut) => return End::RequestTimeout,
            Ok(Line::Eof) | Err(_) => return End::HungUp,
        };
        // Blank lines are not requests: an operator pressing enter in socat
        // gets nothing back rather than an error.
        if !line.iter().all(u8::is_ascii_whitespace) {
            let reply = match decode_request(&line) {
                Ok(request) => {
                    let seq = request.seq;
                    let mut reply =
                        catch_unwind(AssertUnwindSafe(|| handler.handle(request, peer)))
                            .unwrap_or_else(|_| {
                                Response::error(
                                    seq,
                                    ErrorCode::Internal,
                                    "the daemon failed while answering this request; see its log",
                                )
                            });
                    reply.seq = seq;
                    reply.version = PROTOCOL_VERSION;
                    reply
                }
                Err(reply) => reply,
            };
            let mut out = encode(&reply);
            if out.len() > MAX_MESSAGE_BYTES {
                let too_large = Response::error(
                    reply.seq,
                    ErrorCode::TooLarge,
                    format!("the reply would be longer than {MAX_MESSAGE_BYTES} bytes; ask for less (a smaller page or a filter)"),
                );
                out = encode(&too_large);
            }
            if let Err(e) = stream.write_all(&out) {
                return ended_by(&e);
            }
        }
        if lines.is_empty() {
            shared.end_request(id);
        }
    }
}

/// Tells the client why its connection is being closed, without waiting:
/// one that does not read finds its socket closed all the same. What it sent
/// and nobody read is discarded first, since closing a Unix socket with
/// unread data makes the peer's next read fail with ECONNRESET, which would
/// hide the reason.
fn close_with(stream: &UnixStream, reply: &Response) {
    let _ = sock::send(
        stream.as_raw_fd(),
        &encode(reply),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded <= MAX_MESSAGE_BYTES {
        match sock::recv(stream.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// What reading one line gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// One line, newline removed.
    Complete(Vec<u8>),
    /// No newline within the limit: framing is lost.
    TooLong,
    /// The peer hung up (a partial last line is discarded).
    Eof,
    TimedOut,
}

/// Splits a byte stream into lines of bounded length, with a deadline per
/// line rather than per read, so that a peer trickling bytes cannot keep a
/// line open forever.
pub(crate) struct LineReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    /// Longest line, newline included.
    limit: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl LineReader {
    pub(crate) fn new(limit: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            scanned: 0,
            limit,
        }
    }

    /// Whether no byte of a next line has arrived yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn next_line(&mut self, stream: &UnixStream, deadline: Instant) -> io::Result<Line> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + at;
                if end + 1 > self.limit {
                    return Ok(Line::TooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                return Ok(Line::Complete(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() >= self.limit {
                return Ok(Line::TooLong);
            }
            if let Some(end) = self.read_more(stream, deadline)? {
                return Ok(end);
            }
        }
    }

    /// Reads what has arrived, waiting for it until `deadline`: `None` once
    /// some bytes came, else why none will (`Eof` or `TimedOut`).
    pub(crate) fn read_more(
        &mut self,
        mut stream: &UnixStream,
        deadline: Instant,
    ) -> io::Result<Option<Line>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Some(Line::TimedOut));
            }
            stream.set_read_timeout(Some(left))?;
            let have = self.buf.len();
            self.buf.resize(have + READ_CHUNK, 0);
            let read = stream.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Ok(Some(Line::Eof)),
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { pid: 1, uid, gid }
    }

    #[test]
    fn root_and_the_daemons_own_user_are_always_allowed() {
        assert!(is_allowed(&peer(0, 0), 0, None, Vec::new));
        assert!(is_allowed(&peer(1000, 1000), 1000, None, Vec::new));
        assert!(!is_allowed(&peer(1000, 1000), 0, None, Vec::new));
    }

    #[test]
    fn group_membership_counts_by_primary_or_supplementary_gid() {
        let control = Some(Gid::from_raw(990));
        assert!(is_allowed(&peer(1000, 990), 0, control, Vec::new));
        assert!(is_allowed(&peer(1000, 1000), 0, control, || vec![
            Gid::from_raw(1000),
            Gid::from_raw(990)
        ]));
        assert!(!is_allowed(&peer(1000, 1000), 0, control, || vec![
            Gid::from_raw(1000),
            Gid::from_raw(27)
        ]));
    }

    fn limits(max: usize, per_uid: usize, reserved: usize) -> ServerLimits {
        ServerLimits {
            max_clients: max,
            max_clients_per_uid: per_uid,
            reserved_for_root: reserved,
            ..ServerLimits::default()
        }
    }

    /// Connections of `uid`, idle since `idle` seconds after `t0` (None: a
    /// request in progress).
    fn open(t0: Instant, conns: &[(u32, Option<u64>, bool)]) -> Vec<(u64, Occupant)> {
        conns
            .iter()
            .enumerate()
            .map(|(i, &(uid, idle, evicted))| {
                let occupant = Occupant {
                    uid,
                    pid: 1,
                    idle_since: idle.map(|s| t0 + Duration::from_secs(s)),
                    evicted,
                };
                (i as u64 + 1, occupant)
            })
            .collect()
    }

    #[test]
    fn root_closes_the_connection_idle_longest_and_never_one_in_a_request() {
        let t0 = Instant::now();
        let l = limits(4, 8, 1);
        // The longest idle is connection 2; 1 has a request in progress.
        let full = open(
            t0,
            &[
                (0, None, false),
                (1000, Some(1), false),
                (0, Some(5), false),
                (0, Some(3), false),
            ],
        );
        assert_eq!(admit(full.clone(), 0, true, &l), Admission::Evict(2));
        // Other users never close anyone.
        assert_eq!(
            admit(full.clone(), 1000, false, &l),
            Admission::Refuse(Refusal::Full)
        );
        // Once one is on its way out, root waits for it rather than closing a second.
        let mut leaving = full.clone();
        leaving[1].1.evicted = true;
        assert_eq!(admit(leaving, 0, true, &l), Admission::WaitForLeaver);
        // Nothing idle: refused.
        let busy = open(t0, &[(0, None, false); 4]);
        assert_eq!(admit(busy, 0, true, &l), Admission::Refuse(Refusal::Busy));
        // With room, anyone may come in.
        assert_eq!(admit(full[..2].to_vec(), 1000, false, &l), Admission::Admit);
        assert_eq!(admit(full[..3].to_vec(), 0, true, &l), Admission::Admit);
    }

    #[test]
    fn other_users_leave_the_reserved_slots_to_root_and_keep_to_their_own_limit() {
        let t0 = Instant::now();
        let l = limits(4, 2, 1);
        let three = open(
            t0,
            &[
                (1000, None, false),
                (1001, None, false),
                (1002, None, false),
            ],
        );
        assert_eq!(
            admit(three.clone(), 1003, false, &l),
            Admission::Refuse(Refusal::Full)
        );
        assert_eq!(admit(three, 0, true, &l), Admission::Admit);
        let two = open(t0, &[(1000, Some(0), false), (1000, None, false)]);
        assert_eq!(
            admit(two.clone(), 1000, false, &l),
            Admission::Refuse(Refusal::UidLimit)
        );
        assert_eq!(admit(two.clone(), 1001, false, &l), Admission::Admit);
        // Root and the daemon's own user have no per-uid limit.
        assert_eq!(
            admit(open(t0, &[(0, None, false); 3]), 0, true, &l),
            Admission::Admit
        );
        // A connection on its way out no longer counts against its user.
        let mut leaving = two;
        leaving[0].1.evicted = true;
        assert_eq!(admit(leaving, 1000, false, &l), Admission::Admit);
    }

    #[test]
    fn lines_are_split_bounded_and_pipelined() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let deadline = || Instant::now() + Duration::from_secs(5);
        let mut r = LineReader::new(8);
        b.write_all(b"one\ntwo\r\nthree").unwrap();
        assert_eq!(
            r.next_line(&a, deadline()).unwrap(),
            Line::Complete(b"one".to_vec())
        );
        assert_eq!(
            r.next_line(&a, deadline()).unwrap(),
            Line::Complete(b"two\r".to_vec())
        );
        b.write_all(b"\n1234567\n").unwrap();
        assert_eq!(
            r.next_line(&a, deadline()).unwrap(),
            Line::Complete(b"three".to_vec())
        );
        // Seven bytes and the newline make eight: exactly the limit.
        assert_eq!(
            r.next_line(&a, deadline()).unwrap(),
            Line::Complete(b"1234567".to_vec())
        );
        b.write_all(b"12345678\n").unwrap();
        assert_eq!(r.next_line(&a, deadline()).unwrap(), Line::TooLong);
        let mut r = LineReader::new(8);
        b.write_all(b"half").unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(r.next_line(&a, soon).unwrap(), Line::TimedOut);
        drop(b);
        assert_eq!(r.next_line(&a, deadline()).unwrap(), Line::Eof);
    }
}
