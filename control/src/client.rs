//! A client for the control socket, used by `tollgatectl` and by tests. Its
//! errors are worded for the operator: each says what went wrong and what to
//! do, in one line.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::protocol::{
    encode, ErrorCode, Op, Reply, Request, Response, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use crate::server::{Line, LineReader};

/// Where the daemon listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tollgate/control.sock";
/// How long a request may take, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("is tollgate running? no control socket at {0}")]
    NotRunning(PathBuf),
    /// Refused by the socket's permissions or by the daemon; `detail` is the
    /// daemon's own explanation when it gave one.
    #[error("permission denied: run as root or as a member of the tollgate control group{}", detail_suffix(.detail))]
    PermissionDenied { detail: Option<String> },
    /// The daemon answered with an error.
    #[error("{message} ({code})", code = code_name(*.code))]
    Daemon { code: ErrorCode, message: String },
    #[error("tollgate did not answer within {}s; it may be overloaded or stuck (see its log)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("tollgate closed the control connection without answering")]
    Closed,
    /// An earlier call on this connection failed part-way; a late reply
    /// could be mistaken for the next one's.
    #[error("this control connection is out of step after an earlier failure; connect again")]
    OutOfStep,
    #[error("tollgate sent a reply that this tollgatectl does not understand: {0}")]
    BadReply(String),
    #[error("cannot use the control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// The wire name of an error code, as scripts see it in `--json` output.
pub fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            ClientError::PermissionDenied { .. } => Some(ErrorCode::PermissionDenied),
            _ => None,
        }
    }

    fn from_reply(code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::PermissionDenied => ClientError::PermissionDenied {
                detail: Some(message),
            },
            code => ClientError::Daemon { code, message },
        }
    }
}

/// One connection to the daemon. Requests are answered in order; `call`
/// waits for each reply.
pub struct Client {
    stream: UnixStream,
    lines: LineReader,
    path: PathBuf,
    timeout: Duration,
    next_seq: u64,
    out_of_step: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with_timeout(path, DEFAULT_TIMEOUT)
    }

    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let path = path.as_ref().to_owned();
        let stream = connect(&path, timeout)?;
        Ok(Client {
            stream,
            lines: LineReader::new(MAX_MESSAGE_BYTES),
            path,
            timeout,
            next_seq: 1,
            out_of_step: false,
        })
    }

    /// Sends one operation and returns the daemon's result.
    pub fn call(&mut self, op: Op) -> Result<serde_json::Value, ClientError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let reply = self.request(&Request {
            version: PROTOCOL_VERSION,
            seq: Some(seq),
            op,
        })?;
        // A refusal sent on connect carries no sequence number; any other
        // mismatch means the stream is out of step.
        if reply.ok && reply.seq.is_some_and(|s| s != seq) {
            self.out_of_step = true;
            return Err(ClientError::BadReply(format!(
                "the reply is for request {} but request {seq} was sent",
                reply.seq.unwrap_or_default()
            )));
        }
        match (reply.ok, reply.result, reply.error) {
            (true, Some(result), _) => Ok(result),
            (true, None, _) => Ok(serde_json::Value::Null),
            (false, _, Some(e)) => Err(ClientError::from_reply(e.code, e.message)),
            (false, _, None) => Err(ClientError::BadReply(
                "an error reply without an error".into(),
            )),
        }
    }

    /// [`Client::call`], with the result read as the operation's reply type
    /// ([`Op::reply_kind`]).
    pub fn call_reply(&mut self, op: Op) -> Result<Reply, ClientError> {
        let kind = op.reply_kind();
        let value = self.call(op)?;
        Reply::read(kind, value).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    /// [`Client::call_reply`], as the reply type `T` the caller expects: an operation whose
    /// reply is of another type is refused.
    pub fn call_as<T: TryFrom<Reply, Error = Reply>>(&mut self, op: Op) -> Result<T, ClientError> {
        let kind = op.reply_kind();
        T::try_from(self.call_reply(op)?).map_err(|_| {
            ClientError::BadReply(format!(
                "asked for the wrong reply type: the operation's reply is {kind:?}"
            ))
        })
    }

    /// Sends a request as given (its sequence number included) and returns
    /// the reply, whether it reports success or an error.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        if self.out_of_step {
            return Err(ClientError::OutOfStep);
        }
        let deadline = Instant::now() + self.timeout;
        let reply = self
            .send(&encode(request), deadline)
            .and_then(|()| self.receive(deadline));
        if reply.is_err() {
            self.out_of_step = true;
        }
        reply
    }

    fn send(&mut self, line: &[u8], deadline: Instant) -> Result<(), ClientError> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream
            .set_write_timeout(Some(left))
            .map_err(|e| self.io(e))?;
        match self.stream.write_all(line) {
            Ok(()) => Ok(()),
            // The daemon may have refused the connection and hung up before
            // reading the request; its reply is still waiting to be read.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(e) => Err(self.io(e)),
        }
    }

    fn receive(&mut self, deadline: Instant) -> Result<Response, ClientError> {
        let line = match self.lines.next_line(&self.stream, deadline) {
            Ok(Line::Complete(line)) => line,
            Ok(Line::TooLong) => {
                return Err(ClientError::BadReply(format!(
                    "a reply longer than {MAX_MESSAGE_BYTES} bytes"
                )))
            }
            Ok(Line::TimedOut) => return Err(ClientError::Timeout(self.timeout)),
            Ok(Line::Eof) => return Err(ClientError::Closed),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Closed)
            }
            Err(e) => return Err(self.io(e)),
        };
        let reply: Response = serde_json::from_slice(&line)
            .map_err(|e| ClientError::BadReply(format!("not a reply: {e}")))?;
        if reply.version != PROTOCOL_VERSION {
            return Err(ClientError::BadReply(format!(
                "the daemon speaks protocol version {}, this tollgatectl version {PROTOCOL_VERSION}; use the tollgatectl that came with the daemon",
                reply.version
            )));
        }
        Ok(reply)
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Connects without ever blocking past `timeout`: a blocking connect to a
/// daemon whose accept backlog is full would wait indefinitely.
fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    let io = |source: io::Error| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let addr = UnixAddr::new(path).map_err(|e| io(e.into()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd = sock::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io(e.into()))?;
        match sock::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false).map_err(io)?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(Errno::EAGAIN) => return Err(ClientError::Timeout(timeout)),
            Err(Errno::ENOENT | Errno::ECONNREFUSED | Errno::ENOTDIR) => {
                return Err(ClientError::NotRunning(path.to_owned()))
            }
            Err(Errno::EACCES | Errno::EPERM) => {
                return Err(ClientError::PermissionDenied {
                    detail: Some(format!("no write permission on {}", path.display())),
                })
            }
            Err(e) => return Err(io(e.into())),
        }
    }
}
