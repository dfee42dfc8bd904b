//! The control socket: a Unix stream socket speaking newline-delimited JSON
//! (see [`crate::protocol`]), one thread per client so that a slow or stuck
//! client only ever holds up itself.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd::{Gid, Group, Uid, User};

use crate::protocol::{
    decode_request, encode, ErrorCode, Request, Response, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};

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

/// Bounds that keep one client from exhausting the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Clients connected at once; more are refused with `unavailable`.
    pub max_clients: usize,
    /// A client that has not sent a complete line for this long is dropped,
    /// which also bounds how long half a line can hold a slot.
    pub idle_timeout: Duration,
    /// A client that does not read its replies for this long is dropped.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_clients: 64,
            idle_timeout: Duration::from_secs(300),
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
            lingering: AtomicUsize::new(0),
            group: self.group,
            limits: self.limits,
            log: self.log,
            own_uid: Uid::effective().as_raw(),
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
    /// Each connected client's socket, to shut down when the server stops.
    clients: Mutex<HashMap<u64, UnixStream>>,
    lingering: AtomicUsize,
    group: Option<(String, Gid)>,
    limits: ServerLimits,
    log: LogSink,
    own_uid: u32,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, UnixStream>> {
        // A client thread that panicked while holding the lock leaves the
        // map itself intact.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, line: &str) {
        (self.log)(line);
    }
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
        for (_, stream) in self.shared.clients().drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
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
        let mut clients = shared.clients();
        if clients.len() >= shared.limits.max_clients {
            drop(clients);
            let max = shared.limits.max_clients;
            shared.log(&format!(
                "tollgate: control: refused uid {} (pid {}): {max} clients already connected",
                peer.uid, peer.pid
            ));
            let reply = Response::error(
                None,
                ErrorCode::Unavailable,
                format!("tollgate already has {max} control clients connected; try again when one has finished"),
            );
            refuse(stream, &reply, &shared);
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
                    serve_client(stream, peer, &shared, handler.as_ref());
                    shared.clients().remove(&id);
                })
        };
        // The new thread removes its slot only after taking the lock this
        // thread holds, so the slot is always inserted first.
        if thread.is_ok() {
            clients.insert(id, registered);
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

fn serve_client(stream: UnixStream, peer: Peer, shared: &Arc<Shared>, handler: &dyn Handler) {
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
        shared.log(&format!(
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
    let _ = serve_requests(stream, &peer, &shared.limits, handler);
}

/// The request loop. Returns when the client hangs up, idles out, stops
/// reading, breaks framing, or the server shuts its socket down.
fn serve_requests(
    mut stream: UnixStream,
    peer: &Peer,
    limits: &ServerLimits,
    handler: &dyn Handler,
) -> io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let mut lines = LineReader::new(MAX_MESSAGE_BYTES);
    loop {
        let deadline = Instant::now() + limits.idle_timeout;
        let line = match lines.next_line(&mut stream, deadline)? {
            Line::Complete(line) => line,
            Line::TooLong => {
                let reply = Response::error(
                    None,
                    ErrorCode::TooLarge,
                    format!(
                        "request is longer than {MAX_MESSAGE_BYTES} bytes; closing the connection"
                    ),
                );
                stream.write_all(&encode(&reply))?;
                return Ok(());
            }
            Line::Eof | Line::TimedOut => return Ok(()),
        };
        // Blank lines are not requests: an operator pressing enter in socat
        // gets nothing back rather than an error.
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match decode_request(&line) {
            Ok(request) => {
                let seq = request.seq;
                let mut reply = catch_unwind(AssertUnwindSafe(|| handler.handle(request, peer)))
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
        stream.write_all(&out)?;
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

    pub(crate) fn next_line(
        &mut self,
        stream: &mut UnixStream,
        deadline: Instant,
    ) -> io::Result<Line> {
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Line::TimedOut);
            }
            stream.set_read_timeout(Some(left))?;
            let have = self.buf.len();
            self.buf.resize(have + READ_CHUNK, 0);
            let read = stream.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Ok(Line::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Line::TimedOut)
                }
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

    #[test]
    fn lines_are_split_bounded_and_pipelined() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let deadline = || Instant::now() + Duration::from_secs(5);
        let mut r = LineReader::new(8);
        b.write_all(b"one\ntwo\r\nthree").unwrap();
        assert_eq!(
            r.next_line(&mut a, deadline()).unwrap(),
            Line::Complete(b"one".to_vec())
        );
        assert_eq!(
            r.next_line(&mut a, deadline()).unwrap(),
            Line::Complete(b"two\r".to_vec())
        );
        b.write_all(b"\n1234567\n").unwrap();
        assert_eq!(
            r.next_line(&mut a, deadline()).unwrap(),
            Line::Complete(b"three".to_vec())
        );
        // Seven bytes and the newline make eight: exactly the limit.
        assert_eq!(
            r.next_line(&mut a, deadline()).unwrap(),
            Line::Complete(b"1234567".to_vec())
        );
        b.write_all(b"12345678\n").unwrap();
        assert_eq!(r.next_line(&mut a, deadline()).unwrap(), Line::TooLong);
        let mut r = LineReader::new(8);
        b.write_all(b"half").unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(r.next_line(&mut a, soon).unwrap(), Line::TimedOut);
        drop(b);
        assert_eq!(r.next_line(&mut a, deadline()).unwrap(), Line::Eof);
    }
}
