//! The control server, client and `tollgatectl` against a real Unix socket,
//! with a small in-memory daemon behind it. (The daemon's own handler is
//! tested end to end in the dataplane crate.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_control::client::{Client, ClientError};
use tollgate_control::policy::{
    Action, Detect, Ingress, PolicyError, PolicySet, Protocol, StallAction,
};
use tollgate_control::protocol::{
    ErrorCode, ExplainQuery, ExplainReply, FlowFilter, FlowView, FlowsClearReply, FlowsListReply,
    HealthReply, LegView, Op, PolicyChangeReply, PolicyCheckReply, PolicyDefaults, PolicyListReply,
    ProxyFlowView, Request, Response, RuleHits, RuleView, StatsReply, VersionReply,
    MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use tollgate_control::server::{
    ControlServer, Handler, Peer, ServerError, ServerHandle, ServerLimits, SocketAccess,
};
use tollgate_control::StatsSnapshot;

const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// An in-memory daemon: a policy set and a fixed flow table.

struct MemoryDaemon {
    state: Mutex<(PolicySet, u64)>,
    flows: Mutex<Vec<FlowView>>,
}

const DEFAULTS: PolicyDefaults = PolicyDefaults {
    tcp: Action::Proxy,
    udp: Action::Bypass,
    other: Action::Bypass,
};

fn flow(worker: u16, src: &str, dst: &str, mode: Action, rule: Option<u32>) -> FlowView {
    FlowView {
        worker,
        proto: Protocol::TCP,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ingress: Ingress::Inside,
        mode,
        reason: rule.map_or("default for tcp".into(), |r| format!("rule {r}")),
        rule,
        packets_original: 10,
        packets_reply: 8,
        bytes_original: 15_000,
        bytes_reply: 600,
        age_ms: 5_000,
        idle_ms: 1_200,
        tcp_state: Some("established".into()),
        proxy: None,
        handed_over: None,
        detected: None,
    }
}

impl MemoryDaemon {
    fn new() -> Arc<MemoryDaemon> {
        Arc::new(MemoryDaemon {
            state: Mutex::new((PolicySet::default(), 1)),
            flows: Mutex::new(vec![
                flow(
                    0,
                    "198.18.0.1:40000",
                    "198.19.0.1:10000",
                    Action::Bypass,
                    Some(1),
                ),
                flow(1, "198.18.0.2:40001", "198.19.0.1:443", Action::Proxy, None),
                flow(
                    1,
                    "198.18.0.3:40002",
                    "198.19.0.2:5201",
                    Action::Proxy,
                    None,
                ),
            ]),
        })
    }
}

fn policy_error(seq: Option<u64>, e: PolicyError) -> Response {
    let code = match e {
        PolicyError::NoSuchRule(_) => ErrorCode::NotFound,
        _ => ErrorCode::Invalid,
    };
    Response::error(seq, code, e.to_string())
}

fn matches(filter: &FlowFilter, f: &FlowView) -> bool {
    filter
        .port
        .is_none_or(|p| f.src.port() == p || f.dst.port() == p)
        && filter
            .prefix
            .is_none_or(|p| p.contains(f.src.ip()) || p.contains(f.dst.ip()))
        && filter.proto.is_none_or(|p| p == f.proto)
        && filter.mode.is_none_or(|m| m == f.mode)
        && filter.rule.is_none_or(|r| f.rule == Some(r))
}

impl Handler for MemoryDaemon {
    fn handle(&self, request: Request, _peer: &Peer) -> Response {
        let seq = request.seq;
        let change = |generation: u64, id: Option<u32>, switched: Option<u64>| PolicyChangeReply {
            id,
            generation,
            in_force_us: 42,
            flows_switched: switched,
        };
        let mut state = self.state.lock().unwrap();
        let (set, generation) = &mut *state;
        match request.op {
            Op::PolicyAdd {
                rule,
                position,
                apply_existing,
            } => match set.insert(position.unwrap_or(set.rules.len()), rule) {
                Ok(id) => {
                    *generation += 1;
                    Response::ok(
                        seq,
                        change(*generation, Some(id), apply_existing.then_some(1)),
                    )
                }
                Err(e) => policy_error(seq, e),
            },
            Op::PolicyDelete { id } => match set.delete(id) {
                Ok(_) => {
                    *generation += 1;
                    Response::ok(seq, change(*generation, None, None))
                }
                Err(e) => policy_error(seq, e),
            },
            Op::PolicyList {} => Response::ok(
                seq,
                PolicyListReply {
                    generation: *generation,
                    rules: set
                        .rules
                        .iter()
                        .map(|r| RuleView {
                            rule: r.clone(),
                            hits: RuleHits {
                                flows: 1,
                                packets: 2,
                                bytes: 3000,
                            },
                        })
                        .collect(),
                    defaults: DEFAULTS,
                },
            ),
            Op::PolicyReplace {
                rules,
                apply_existing,
            } => match set.replace(rules) {
                Ok(()) => {
                    *generation += 1;
                    Response::ok(seq, change(*generation, None, apply_existing.then_some(0)))
                }
                Err(e) => policy_error(seq, e),
            },
            Op::PolicyCheck { rules } => match PolicySet::check(&rules) {
                Ok(()) => Response::ok(seq, PolicyCheckReply { rules: rules.len() }),
                Err(e) => policy_error(seq, e),
            },
            Op::Explain(q) => {
                let fields = q.flow_fields();
                let reply = match set.first_match(&fields) {
                    Some(r) => ExplainReply {
                        action: r.spec.action,
                        rule: Some(r.clone()),
                        explanation: format!("rule {} matches: {}", r.id, r.spec.action),
                    },
                    None => ExplainReply {
                        action: DEFAULTS.tcp,
                        rule: None,
                        explanation: format!(
                            "no rule matches: the default for {} is {}",
                            q.proto, DEFAULTS.tcp
                        ),
                    },
                };
                Response::ok(seq, reply)
            }
            Op::FlowsList {
                filter,
                page,
                page_size,
            } => {
                let flows = self.flows.lock().unwrap();
                let all: Vec<&FlowView> = flows.iter().filter(|f| matches(&filter, f)).collect();
                Response::ok(
                    seq,
                    FlowsListReply {
                        total: all.len() as u64,
                        page,
                        page_size,
                        flows: all
                            .into_iter()
                            .skip((page * page_size) as usize)
                            .take(page_size as usize)
                            .cloned()
                            .collect(),
                    },
                )
            }
            Op::FlowsClear { filter } => {
                let mut flows = self.flows.lock().unwrap();
                let before = flows.len();
                flows.retain(|f| !matches(&filter, f));
                Response::ok(
                    seq,
                    FlowsClearReply {
                        cleared: (before - flows.len()) as u64,
                    },
                )
            }
            Op::Stats {} => Response::ok(
                seq,
                StatsSnapshot {
                    version: "test".into(),
                    steering: "software".into(),
                    ..Default::default()
                },
            ),
            Op::Health {} => Response::ok(
                seq,
                HealthReply {
                    status: "ok".into(),
                    workers: 2,
                    workers_responding: 2,
                    links_up: vec![("inside".into(), true), ("outside".into(), true)],
                    uptime_secs: 3725,
                },
            ),
            Op::Version {} => Response::ok(
                seq,
                VersionReply {
                    tollgate: "test".into(),
                    protocol: PROTOCOL_VERSION,
                    dpdk: "DPDK 22.11".into(),
                },
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

/// A fresh directory per test, removed when the test ends.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let dir =
            std::env::temp_dir().join(format!("tollgate-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Unprivileged test clients must reach the socket inside.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Log = Arc<Mutex<Vec<String>>>;

struct Running {
    server: Option<ServerHandle>,
    log: Log,
    daemon: Arc<MemoryDaemon>,
    path: PathBuf,
}

impl Running {
    fn logged(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn client(&self) -> Client {
        Client::connect(&self.path).unwrap()
    }

    fn shutdown(mut self) {
        self.server.take().unwrap().shutdown();
    }
}

fn start_with(path: &Path, access: &SocketAccess, limits: ServerLimits) -> Running {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let daemon = MemoryDaemon::new();
    let server = ControlServer::bind(path, access)
        .unwrap()
        .with_limits(limits)
        .with_log(move |line| sink.lock().unwrap().push(line.to_owned()))
        .serve(daemon.clone());
    Running {
        server: Some(server),
        log,
        daemon,
        path: path.to_owned(),
    }
}

fn start(path: &Path) -> Running {
    start_with(path, &SocketAccess::default(), ServerLimits::default())
}

/// A connection speaking raw lines, for what the client library never sends.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_write_timeout(Some(LIMIT)).unwrap();
        Raw {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).unwrap();
    }

    fn reply(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "no complete reply line: {line:?}");
        serde_json::from_str(&line).unwrap()
    }

    fn code(&mut self, line: &[u8]) -> ErrorCode {
        self.send(line);
        self.reply().error.expect("an error reply").code
    }

    /// Whether the server has closed the connection (EOF or reset).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

struct Ctl {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `tollgatectl` with a time limit, optionally as another user.
fn ctl_as(user: Option<(u32, u32)>, socket: &Path, args: &[&str]) -> Ctl {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgatectl"));
    cmd.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("TOLLGATE_SOCKET");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    run_limited(cmd)
}

fn ctl(socket: &Path, args: &[&str]) -> Ctl {
    ctl_as(None, socket, args)
}

fn run_limited(mut cmd: Command) -> Ctl {
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("tollgatectl {cmd:?} did not finish within {LIMIT:?}");
        }
    };
    Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A failure is exactly one line on stderr, prefixed with the program name.
fn one_error_line(c: &Ctl) -> &str {
    let lines: Vec<&str> = c.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {:?}",
        c.stderr
    );
    assert!(lines[0].starts_with("tollgatectl: "), "{:?}", lines[0]);
    lines[0]
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn add(rule: Value) -> Op {
    Op::PolicyAdd {
        rule: serde_json::from_value(rule).unwrap(),
        position: None,
        apply_existing: false,
    }
}

// ---------------------------------------------------------------------------
// The protocol over the socket.

#[test]
fn every_operation_round_trips() {
    let dir = TestDir::new("round-trips");
    let daemon = start(&dir.path("control.sock"));
    let mut c = daemon.client();

    let added: PolicyChangeReply = c.call_as(add(json!({"match": {"proto": "tcp", "dst_port": 10000}, "action": "bypass", "name": "ctcp"}))).unwrap();
    let ctcp = added.id.unwrap();
    let first: PolicyChangeReply = c
        .call_as(Op::PolicyAdd {
            rule: serde_json::from_value(json!({"match": {"proto": "udp"}, "action": "drop"}))
                .unwrap(),
            position: Some(0),
            apply_existing: true,
        })
        .unwrap();
    assert_eq!(first.flows_switched, Some(1));
    let list: PolicyListReply = c.call_as(Op::PolicyList {}).unwrap();
    assert_eq!(
        list.rules.iter().map(|r| r.rule.id).collect::<Vec<_>>(),
        vec![first.id.unwrap(), ctcp]
    );
    assert_eq!(list.rules[1].rule.spec.name.as_deref(), Some("ctcp"));
    assert_eq!(list.rules[1].hits.bytes, 3000);

    let explain: ExplainReply = c
        .call_as(Op::Explain(ExplainQuery {
            proto: Protocol::TCP,
            src: "198.18.0.1:40000".parse().unwrap(),
            dst: "198.19.0.1:10000".parse().unwrap(),
            ingress: Ingress::Inside,
            vlan: None,
        }))
        .unwrap();
    assert_eq!(
        (explain.action, explain.rule.map(|r| r.id)),
        (Action::Bypass, Some(ctcp))
    );

    let check: PolicyCheckReply = c.call_as(Op::PolicyCheck { rules: vec![] }).unwrap();
    assert_eq!(check.rules, 0);
    let replaced: PolicyChangeReply = c
        .call_as(Op::PolicyReplace {
            rules: vec![serde_json::from_value(json!({"action": "proxy"})).unwrap()],
            apply_existing: false,
        })
        .unwrap();
    assert!(replaced.generation > first.generation);
    let err = c.call(Op::PolicyDelete { id: ctcp }).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");

    let page: FlowsListReply = c
        .call_as(Op::FlowsList {
            filter: FlowFilter {
                port: Some(10000),
                ..Default::default()
            },
            page: 0,
            page_size: 10,
        })
        .unwrap();
    assert_eq!((page.total, page.flows[0].mode), (1, Action::Bypass));
    let cleared: FlowsClearReply = c
        .call_as(Op::FlowsClear {
            filter: FlowFilter {
                mode: Some(Action::Proxy),
                ..Default::default()
            },
        })
        .unwrap();
    assert_eq!(cleared.cleared, 2);
    let stats: StatsReply = c.call_as(Op::Stats {}).unwrap();
    assert_eq!(stats.steering, "software");
    let health: HealthReply = c.call_as(Op::Health {}).unwrap();
    assert_eq!(health.workers_responding, 2);
    let version: VersionReply = c.call_as(Op::Version {}).unwrap();
    assert_eq!(version.protocol, PROTOCOL_VERSION);
    daemon.shutdown();
}

#[test]
fn bad_requests_get_their_error_and_the_connection_stays_usable() {
    let dir = TestDir::new("bad-requests");
    let daemon = start(&dir.path("control.sock"));
    let mut raw = Raw::connect(&daemon.path);
    assert_eq!(raw.code(b"{not json\n"), ErrorCode::BadRequest);
    assert_eq!(
        raw.code(b"{\"version\":2,\"op\":\"stats\"}\n"),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        raw.code(b"{\"version\":1,\"op\":\"reboot\"}\n"),
        ErrorCode::BadRequest
    );
    assert_eq!(
        raw.code(b"{\"version\":1,\"op\":\"policy.add\",\"rule\":{\"action\":\"allow\"}}\n"),
        ErrorCode::BadRequest
    );
    // Blank lines are skipped, and CRLF is fine, as typed into socat.
    raw.send(b"\n  \r\n{\"version\":1,\"seq\":7,\"op\":\"version\"}\r\n");
    let ok = raw.reply();
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.seq, Some(7));
    // Rule validation failures are the handler's, reported as `invalid`.
    assert_eq!(
        raw.code(b"{\"version\":1,\"op\":\"policy.add\",\"rule\":{\"match\":{\"proto\":\"icmp\",\"dst_port\":80},\"action\":\"bypass\"}}\n"),
        ErrorCode::Invalid
    );
    daemon.shutdown();
}

#[test]
fn requests_sent_together_are_answered_in_order() {
    let dir = TestDir::new("pipelined");
    let daemon = start(&dir.path("control.sock"));
    let mut raw = Raw::connect(&daemon.path);
    let mut batch = Vec::new();
    for seq in 1..=20u64 {
        let op = if seq % 2 == 0 {
            Op::Version {}
        } else {
            Op::Health {}
        };
        batch.extend(tollgate_control::protocol::encode(&Request {
            version: 1,
            seq: Some(seq),
            op,
        }));
    }
    raw.send(&batch);
    for seq in 1..=20u64 {
        let r = raw.reply();
        assert!(r.ok);
        assert_eq!(r.seq, Some(seq));
    }
    daemon.shutdown();
}

#[test]
fn an_oversize_request_gets_too_large_and_the_connection_closes() {
    let dir = TestDir::new("oversize");
    let daemon = start(&dir.path("control.sock"));
    let mut raw = Raw::connect(&daemon.path);
    let mut writer = raw.writer.try_clone().unwrap();
    // The server stops reading at the limit, so the rest of the write may
    // fail; write from another thread so the reply can be read meanwhile.
    let sender = thread::spawn(move || {
        let mut big = vec![b'x'; MAX_MESSAGE_BYTES + 1];
        big.push(b'\n');
        let _ = writer.write_all(&big);
    });
    let reply = raw.reply();
    assert_eq!(reply.error.unwrap().code, ErrorCode::TooLarge);
    assert!(raw.closed(), "framing is lost, so the server hangs up");
    sender.join().unwrap();

    // A line of exactly the limit, newline included, is still accepted (and
    // fails only as JSON).
    let mut raw = Raw::connect(&daemon.path);
    let mut writer = raw.writer.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut big = vec![b' '; MAX_MESSAGE_BYTES - 1];
        big[0] = b'{';
        big.push(b'\n');
        writer.write_all(&big).unwrap();
    });
    assert_eq!(raw.reply().error.unwrap().code, ErrorCode::BadRequest);
    sender.join().unwrap();
    assert!(raw.reply_after(b"{\"version\":1,\"op\":\"version\"}\n").ok);
    daemon.shutdown();
}

impl Raw {
    fn reply_after(&mut self, line: &[u8]) -> Response {
        self.send(line);
        self.reply()
    }
}

#[test]
fn many_clients_at_once_are_all_answered_correctly() {
    let dir = TestDir::new("concurrent");
    let daemon = start(&dir.path("control.sock"));
    let mut c = daemon.client();
    for port in 0..32u16 {
        let _: PolicyChangeReply = c
            .call_as(add(json!({"match": {"proto": "tcp", "dst_port": 20000 + port}, "action": "bypass", "name": format!("t{port}")})))
            .unwrap();
    }
    let ids: Vec<u32> = c
        .call_as::<PolicyListReply>(Op::PolicyList {})
        .unwrap()
        .rules
        .iter()
        .map(|r| r.rule.id)
        .collect();
    let path = daemon.path.clone();
    let started = Instant::now();
    let threads: Vec<_> = (0..32u16)
        .map(|t| {
            let path = path.clone();
            let expected = ids[t as usize];
            thread::spawn(move || {
                let mut c = Client::connect(&path).unwrap();
                for i in 0..50u16 {
                    let dst: SocketAddr = format!("198.19.0.1:{}", 20000 + t).parse().unwrap();
                    let src: SocketAddr = format!("198.18.0.1:{}", 30000 + i).parse().unwrap();
                    let r: ExplainReply = c
                        .call_as(Op::Explain(ExplainQuery {
                            proto: Protocol::TCP,
                            src,
                            dst,
                            ingress: Ingress::Inside,
                            vlan: None,
                        }))
                        .unwrap();
                    assert_eq!(r.rule.map(|r| r.id), Some(expected));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        started.elapsed() < LIMIT,
        "1600 requests took {:?}",
        started.elapsed()
    );
    daemon.shutdown();
}

#[test]
fn a_stuck_client_does_not_delay_the_others() {
    let dir = TestDir::new("stuck");
    let limits = ServerLimits {
        write_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);

    // Half a line, then nothing.
    let mut half = Raw::connect(&daemon.path);
    half.send(b"{\"version\":1,\"op\":");
    // Requests without end, never reading a reply: the server's writes to it
    // fill the socket buffer and block until the write timeout drops it.
    let flooder = UnixStream::connect(&daemon.path).unwrap();
    flooder
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let flood = thread::spawn(move || {
        let line = b"{\"version\":1,\"op\":\"stats\"}\n".repeat(1000);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if (&flooder).write_all(&line).is_err() {
                return true;
            }
        }
        false
    });

    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut c = daemon.client();
    for _ in 0..20 {
        let _: VersionReply = c.call_as(Op::Version {}).unwrap();
    }
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "other clients took {:?}",
        started.elapsed()
    );
    assert!(
        flood.join().unwrap(),
        "a client that never reads its replies is dropped"
    );
    drop(half);
    daemon.shutdown();
}

#[test]
fn an_idle_client_is_dropped() {
    let dir = TestDir::new("idle");
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(200),
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);
    let mut raw = Raw::connect(&daemon.path);
    raw.send(b"{\"version\":1,");
    let started = Instant::now();
    assert!(raw.closed());
    assert!(started.elapsed() < LIMIT);
    wait_until("the idle client's slot is freed", || {
        daemon.server.as_ref().unwrap().clients() == 0
    });
    daemon.shutdown();
}

#[test]
fn the_65th_client_is_refused_as_unavailable() {
    let dir = TestDir::new("max-clients");
    let daemon = start(&dir.path("control.sock"));
    let mut held: Vec<Raw> = (0..64).map(|_| Raw::connect(&daemon.path)).collect();
    // Prove all 64 are being served.
    for raw in held.iter_mut() {
        assert!(raw.reply_after(b"{\"version\":1,\"op\":\"version\"}\n").ok);
    }
    let mut extra = Raw::connect(&daemon.path);
    let refusal = extra.reply();
    assert_eq!(refusal.error.unwrap().code, ErrorCode::Unavailable);
    assert!(extra.closed());
    assert!(
        daemon
            .logged()
            .iter()
            .any(|l| l.contains("64 clients already connected")),
        "{:?}",
        daemon.logged()
    );
    // The client library reports it as a daemon error, not a hang.
    let err = Client::connect(&daemon.path)
        .unwrap()
        .call(Op::Version {})
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");

    held.pop();
    wait_until("a slot is freed", || {
        daemon.server.as_ref().unwrap().clients() < 64
    });
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    drop(held);
    daemon.shutdown();
}

/// Holds `stats` requests inside the handler until released, like a daemon
/// whose main thread is busy.
struct Gated {
    inner: Arc<MemoryDaemon>,
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Handler for Gated {
    fn handle(&self, request: Request, peer: &Peer) -> Response {
        if matches!(request.op, Op::Stats {}) {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self.release.lock().unwrap().recv_timeout(LIMIT);
        }
        self.inner.handle(request, peer)
    }
}

#[test]
fn a_slow_handler_times_the_client_out_and_does_not_hold_up_shutdown() {
    let dir = TestDir::new("slow-handler");
    let path = dir.path("control.sock");
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let handler = Arc::new(Gated {
        inner: MemoryDaemon::new(),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let server = ControlServer::bind(&path, &SocketAccess::default())
        .unwrap()
        .serve(handler);

    let mut c = Client::connect_with_timeout(&path, Duration::from_millis(200)).unwrap();
    let err = c.call(Op::Stats {}).unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("tollgate did not answer within 0.2s"),
        "{err}"
    );
    // The late reply must not be taken for the next one's.
    assert!(matches!(
        c.call(Op::Version {}).unwrap_err(),
        ClientError::OutOfStep
    ));
    entered.recv_timeout(LIMIT).unwrap();
    release.send(()).unwrap();

    // Other clients are served while one request sits in the handler.
    let mut waiting = Raw::connect(&path);
    waiting.send(b"{\"version\":1,\"op\":\"stats\"}\n");
    entered.recv_timeout(LIMIT).unwrap();
    let _: VersionReply = Client::connect(&path)
        .unwrap()
        .call_as(Op::Version {})
        .unwrap();

    // Shutdown does not wait for the handler (the daemon's handler may be
    // waiting for the very thread that shuts down).
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    let finished = done.recv_timeout(LIMIT).is_ok();
    release.send(()).unwrap();
    assert!(finished, "shutdown waited for a request inside the handler");
    assert!(waiting.closed());
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------
// The socket file.

#[test]
fn the_socket_is_0660_and_removed_on_shutdown() {
    let dir = TestDir::new("mode");
    let path = dir.path("run/tollgate/control.sock");
    let daemon = start(&path);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(
        parent.permissions().mode() & 0o777,
        0o755,
        "a missing parent directory is created 0755"
    );

    let mut idle = Raw::connect(&path);
    let started = Instant::now();
    daemon.shutdown();
    assert!(started.elapsed() < LIMIT);
    assert!(!path.exists(), "the socket file is removed");
    assert!(idle.closed(), "connected clients are disconnected");
    assert!(matches!(
        Client::connect(&path).unwrap_err(),
        ClientError::NotRunning(_)
    ));
}

#[test]
fn the_socket_gets_the_configured_group() {
    if !is_root() {
        eprintln!("skipped: changing a socket's group to another group needs root");
        return;
    }
    let dir = TestDir::new("group");
    let path = dir.path("control.sock");
    let access = SocketAccess {
        mode: 0o660,
        group: Some("nogroup".into()),
    };
    let daemon = start_with(&path, &access, ServerLimits::default());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), 65534);
    daemon.shutdown();

    let unknown = SocketAccess {
        mode: 0o660,
        group: Some("no-such-group-tollgate".into()),
    };
    let err = ControlServer::bind(&path, &unknown).err().unwrap();
    assert!(matches!(err, ServerError::NoSuchGroup(_)), "{err}");
    assert!(err.to_string().contains("groupadd"), "{err}");
}

#[test]
fn binding_over_a_live_socket_fails_and_over_a_stale_one_succeeds() {
    let dir = TestDir::new("rebind");
    let path = dir.path("control.sock");
    let daemon = start(&path);
    let err = ControlServer::bind(&path, &SocketAccess::default())
        .err()
        .expect("a live daemon's socket is not taken over");
    assert!(matches!(err, ServerError::AlreadyRunning(_)), "{err}");
    assert!(
        err.to_string()
            .contains("already answers on the control socket"),
        "{err}"
    );
    // The live daemon is unaffected.
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    daemon.shutdown();

    // A daemon that died leaves its socket file behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert!(matches!(
        Client::connect(&path).unwrap_err(),
        ClientError::NotRunning(_)
    ));
    let daemon = start(&path);
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    daemon.shutdown();

    // Anything that is not a socket is left alone.
    std::fs::write(&path, "precious").unwrap();
    let err = ControlServer::bind(&path, &SocketAccess::default())
        .err()
        .unwrap();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

// ---------------------------------------------------------------------------
// Who may connect.

#[test]
fn a_peer_with_the_wrong_uid_is_refused_and_logged() {
    if !is_root() {
        eprintln!("skipped: running a client as uid 65534 needs root");
        return;
    }
    let dir = TestDir::new("wrong-uid");
    let path = dir.path("control.sock");
    // World-writable, so only the credential check stands in the way.
    let access = SocketAccess {
        mode: 0o666,
        group: Some("root".into()),
    };
    let daemon = start_with(&path, &access, ServerLimits::default());
    let out = ctl_as(Some((65534, 65534)), &path, &["policy", "list"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = one_error_line(&out);
    assert!(line.starts_with("tollgatectl: permission denied: run as root or as a member of the tollgate control group"), "{line}");
    assert!(
        line.contains("group root"),
        "the refusal names the group to join: {line}"
    );
    assert!(out.stdout.is_empty());
    let log = daemon.logged();
    assert!(
        log.iter().any(
            |l| l.starts_with("tollgate: control: refused uid 65534 (pid ")
                && l.ends_with("): not root or in group root")
        ),
        "{log:?}"
    );
    // The refused connection did not take a client slot.
    wait_until("the refused client is gone", || {
        daemon.server.as_ref().unwrap().clients() == 0
    });
    // Root still gets in.
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    daemon.shutdown();
}

#[test]
fn a_member_of_the_control_group_is_allowed() {
    if !is_root() {
        eprintln!("skipped: running a client as uid 65534 needs root");
        return;
    }
    let dir = TestDir::new("group-member");
    let path = dir.path("control.sock");
    // 65534's primary group: the socket's group permission lets it connect.
    let access = SocketAccess {
        mode: 0o660,
        group: Some("nogroup".into()),
    };
    let daemon = start_with(&path, &access, ServerLimits::default());
    let out = ctl_as(Some((65534, 65534)), &path, &["version"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("tollgate test"), "{}", out.stdout);
    assert!(daemon.logged().is_empty(), "{:?}", daemon.logged());
    daemon.shutdown();
}

/// The systemd unit's runtime directory (`/run/tollgate`, made by systemd as root:root with
/// `RuntimeDirectoryMode`) must let a member of the control group reach the socket inside, as
/// the README promises.
#[test]
fn the_units_runtime_directory_lets_a_control_group_member_in() {
    if !is_root() {
        eprintln!("skipped: running a client as uid 65534 needs root");
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tollgate.service");
    let unit = std::fs::read_to_string(unit).unwrap();
    let mode = unit
        .lines()
        .find_map(|l| l.strip_prefix("RuntimeDirectoryMode="))
        .expect("the unit sets RuntimeDirectoryMode");
    let mode = u32::from_str_radix(mode.trim(), 8).unwrap();
    let dir = TestDir::new("runtime-directory");
    let runtime = dir.path("tollgate");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(mode)).unwrap();
    let path = runtime.join("control.sock");
    let access = SocketAccess {
        mode: 0o660,
        group: Some("nogroup".into()),
    };
    let daemon = start_with(&path, &access, ServerLimits::default());
    let out = ctl_as(Some((65534, 65534)), &path, &["version"]);
    assert_eq!(out.code, 0, "RuntimeDirectoryMode={mode:o}: {}", out.stderr);
    daemon.shutdown();
}

#[test]
fn a_socket_the_user_cannot_open_is_permission_denied() {
    if !is_root() {
        eprintln!("skipped: running a client as uid 65534 needs root");
        return;
    }
    let dir = TestDir::new("eacces");
    let path = dir.path("control.sock");
    let daemon = start(&path);
    let out = ctl_as(Some((65534, 65534)), &path, &["stats"]);
    assert_eq!(out.code, 1);
    let line = one_error_line(&out);
    assert!(line.starts_with("tollgatectl: permission denied: run as root or as a member of the tollgate control group"), "{line}");
    daemon.shutdown();
}

// ---------------------------------------------------------------------------
// tollgatectl.

#[test]
fn tollgatectl_without_a_daemon_asks_whether_it_runs() {
    let dir = TestDir::new("ctl-no-daemon");
    let path = dir.path("control.sock");
    let out = ctl(&path, &["policy", "list"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        one_error_line(&out),
        format!(
            "tollgatectl: is tollgate running? no control socket at {}",
            path.display()
        )
    );
    // A stale socket file reads the same.
    drop(UnixListener::bind(&path).unwrap());
    let out = ctl(&path, &["stats"]);
    assert_eq!(out.code, 1);
    assert!(one_error_line(&out).contains("is tollgate running?"));

    // TOLLGATE_SOCKET stands in for --socket.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgatectl"));
    cmd.arg("health")
        .env("TOLLGATE_SOCKET", dir.path("elsewhere.sock"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_limited(cmd);
    assert!(
        one_error_line(&out).ends_with("elsewhere.sock"),
        "{}",
        out.stderr
    );
}

#[test]
fn tollgatectl_rejects_an_invalid_rule_before_connecting() {
    let dir = TestDir::new("ctl-invalid");
    let path = dir.path("control.sock");
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--proto",
            "icmp",
            "--dst-port",
            "80",
            "--action",
            "bypass",
        ],
    );
    assert_eq!(out.code, 1);
    let line = one_error_line(&out);
    assert!(
        line.contains("match.proto")
            && line.contains("--proto")
            && line.contains("icmp has no ports"),
        "{line}"
    );
    let out = ctl(
        &path,
        &["policy", "add", "--vlan", "5000", "--action", "bypass"],
    );
    assert!(
        one_error_line(&out).contains("match.vlan (--vlan)"),
        "{}",
        out.stderr
    );
    // A value that does not parse is a command-line error: exit 2, one line.
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--src",
            "198.18.0.1/15",
            "--action",
            "bypass",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        one_error_line(&out).contains("did you mean 198.18.0.0/15"),
        "{}",
        out.stderr
    );
    let out = ctl(&path, &["policy", "add", "--proto", "tcp"]);
    assert_eq!(out.code, 2);
    assert!(one_error_line(&out).contains("--action"), "{}", out.stderr);
    let out = ctl(&path, &["policy"]);
    assert_eq!(out.code, 2);
    one_error_line(&out);
    let out = ctl(
        &path,
        &[
            "explain",
            "--proto",
            "tcp",
            "--src",
            "198.18.0.1",
            "--dst",
            "198.19.0.1:80",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out).contains("--src 198.18.0.1:0 needs a port"),
        "{}",
        out.stderr
    );
}

#[test]
fn tollgatectl_manages_the_policy() {
    let dir = TestDir::new("ctl-policy");
    let path = dir.path("control.sock");
    let daemon = start(&path);

    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--proto",
            "tcp",
            "--dst-port",
            "10000",
            "--action",
            "bypass",
            "--name",
            "ctcp",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("added rule 1 (policy generation 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("--apply-existing"),
        "new rules apply to new flows only, and say so: {}",
        out.stdout
    );
    let out = ctl(
        &path,
        &[
            "policy",
            "insert",
            "1",
            "--proto",
            "udp",
            "--dst",
            "198.18.0.0/15",
            "--action",
            "drop",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--position",
            "2",
            "--proto",
            "tcp",
            "--dst-port",
            "5201",
            "--action",
            "bypass",
            "--apply-existing",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("switched 1 live flow\n"),
        "{}",
        out.stdout
    );

    let out = ctl(&path, &["policy", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID  POS  ACTION  MATCH"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with(" 2    1  drop    proto udp dst 198.18.0.0/15"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with(" 3    2  bypass  proto tcp dst-port 5201"),
        "{}",
        out.stdout
    );
    assert!(
        lines[3].contains("ctcp") && lines[3].contains("2.9K"),
        "{}",
        out.stdout
    );
    assert!(
        lines[4].contains("flows matching no rule: tcp proxy, udp bypass"),
        "{}",
        out.stdout
    );

    let out = ctl(&path, &["--json", "policy", "list"]);
    let listed: PolicyListReply = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        listed.rules.iter().map(|r| r.rule.id).collect::<Vec<_>>(),
        vec![2, 3, 1]
    );
    // --json works after the subcommand too, as in `policy list --json`.
    assert_eq!(ctl(&path, &["policy", "list", "--json"]).stdout, out.stdout);

    let out = ctl(
        &path,
        &[
            "explain",
            "--proto",
            "tcp",
            "--src",
            "198.18.0.9:40000",
            "--dst",
            "198.19.0.1:10000",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("rule 1 matches: bypass\n  rule 1: proto tcp dst-port 10000 -> bypass"),
        "{}",
        out.stdout
    );

    let out = ctl(&path, &["policy", "delete", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("deleted rule 1"), "{}", out.stdout);
    let out = ctl(&path, &["policy", "delete", "1"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        one_error_line(&out),
        "tollgatectl: no rule with id 1 (not_found)"
    );
    let out = ctl(&path, &["policy", "insert", "9", "--action", "drop"]);
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out).contains("no position 9"),
        "{}",
        out.stderr
    );
    daemon.shutdown();
}

#[test]
fn tollgatectl_replaces_and_checks_rule_files() {
    let dir = TestDir::new("ctl-files");
    let path = dir.path("control.sock");
    let daemon = start(&path);
    let good = dir.path("good.json");
    std::fs::write(
        &good,
        r#"{"rules": [
  {"match": {"proto": "tcp", "dst_port": 10000}, "action": "bypass", "name": "ctcp"},
  {"match": {"proto": "udp", "dst_port": "4500"}, "action": "bypass"}
]}"#,
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "check", "--file", good.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.ends_with("good.json: 2 rules, all valid\n"),
        "{}",
        out.stdout
    );
    let out = ctl(
        &path,
        &["policy", "replace", "--file", good.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(daemon.daemon.state.lock().unwrap().0.rules.len(), 2);

    // A saved listing restores.
    let saved = dir.path("saved.json");
    std::fs::write(&saved, ctl(&path, &["--json", "policy", "list"]).stdout).unwrap();
    let out = ctl(
        &path,
        &[
            "policy",
            "replace",
            "--file",
            saved.to_str().unwrap(),
            "--apply-existing",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("switched 0 live flows"),
        "{}",
        out.stdout
    );
    let names: Vec<_> = daemon
        .daemon
        .state
        .lock()
        .unwrap()
        .0
        .rules
        .iter()
        .map(|r| r.spec.name.clone())
        .collect();
    assert_eq!(names, vec![Some("ctcp".to_owned()), None]);

    let broken = dir.path("broken.json");
    std::fs::write(
        &broken,
        "[\n  {\"match\": {\"proto\": \"tcp\"},\n   \"action\": \"bypas\"}\n]\n",
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "replace", "--file", broken.to_str().unwrap()],
    );
    assert_eq!(out.code, 1);
    let line = one_error_line(&out);
    assert!(
        line.contains("broken.json:3:") && line.contains("bypas"),
        "{line}"
    );
    let typo = dir.path("typo.json");
    std::fs::write(
        &typo,
        "{\"rules\": [{\"match\": {\"prot\": \"tcp\"}, \"action\": \"drop\"}]}",
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "check", "--file", typo.to_str().unwrap()],
    );
    assert!(
        one_error_line(&out).contains("typo.json:1:") && out.stderr.contains("prot"),
        "{}",
        out.stderr
    );
    let invalid = dir.path("invalid.json");
    std::fs::write(
        &invalid,
        r#"[{"action": "drop"}, {"match": {"vlan": 5000}, "action": "bypass", "name": "second"}]"#,
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "replace", "--file", invalid.to_str().unwrap()],
    );
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out).contains("invalid.json: rule 2 (second): match.vlan"),
        "{}",
        out.stderr
    );
    let out = ctl(
        &path,
        &[
            "policy",
            "check",
            "--file",
            dir.path("missing.json").to_str().unwrap(),
        ],
    );
    assert!(
        one_error_line(&out).contains("cannot read"),
        "{}",
        out.stderr
    );
    // Nothing failed was applied.
    assert_eq!(daemon.daemon.state.lock().unwrap().0.rules.len(), 2);
    daemon.shutdown();
}

#[test]
fn tollgatectl_shows_flows_stats_health_and_version() {
    let dir = TestDir::new("ctl-show");
    let path = dir.path("control.sock");
    let daemon = start(&path);

    let out = ctl(&path, &["flows", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("WORKER  PROTO  FLOW"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("198.18.0.1:40000 -> 198.19.0.1:10000  bypass  rule 1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("flows 1-3 of 3"), "{}", out.stdout);
    let out = ctl(
        &path,
        &[
            "flows",
            "list",
            "--mode",
            "proxy",
            "--page-size",
            "1",
            "--page",
            "2",
        ],
    );
    assert!(
        out.stdout.contains("198.18.0.3:40002") && out.stdout.contains("flows 2-2 of 2"),
        "{}",
        out.stdout
    );
    let out = ctl(&path, &["--json", "flows", "list", "--port", "443"]);
    let page: FlowsListReply = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(page.total, 1);
    let out = ctl(&path, &["flows", "clear", "--port", "443"]);
    assert_eq!(out.stdout, "cleared 1 flow\n");
    let out = ctl(&path, &["flows", "list", "--port", "443"]);
    assert_eq!(out.stdout, "no flows match\n");

    let out = ctl(&path, &["stats"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("tollgate test"), "{}", out.stdout);
    let out = ctl(&path, &["stats", "--json"]);
    assert_eq!(
        serde_json::from_str::<StatsReply>(&out.stdout)
            .unwrap()
            .steering,
        "software"
    );
    let out = ctl(&path, &["stats", "--prometheus"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("# HELP tollgate_info ")
            && out
                .stdout
                .contains("tollgate_info{version=\"test\",steering=\"software\"} 1\n"),
        "{}",
        out.stdout
    );
    let out = ctl(&path, &["stats", "--prometheus", "--json"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        one_error_line(&out),
        "tollgatectl: --json and --prometheus are two output formats: pick one"
    );
    let out = ctl(&path, &["health"]);
    assert!(
        out.stdout.contains("status   ok")
            && out.stdout.contains("inside up, outside up")
            && out.stdout.contains("1h02m"),
        "{}",
        out.stdout
    );
    let out = ctl(&path, &["version"]);
    assert!(
        out.stdout
            .ends_with("\ntollgate test (control protocol 1, DPDK 22.11)\n"),
        "{}",
        out.stdout
    );
    daemon.shutdown();
}

#[test]
fn tollgatectl_help_is_complete() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgatectl"));
    cmd.arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_limited(cmd);
    assert_eq!(out.code, 0);
    for word in [
        "policy",
        "explain",
        "flows",
        "stats",
        "health",
        "version",
        "--socket",
        "--json",
        "TOLLGATE_SOCKET",
    ] {
        assert!(
            out.stdout.contains(word),
            "--help lacks {word}: {}",
            out.stdout
        );
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgatectl"));
    cmd.args(["policy", "add", "--help"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_limited(cmd);
    for flag in [
        "--action",
        "--proto",
        "--src ",
        "--dst ",
        "--src-port",
        "--dst-port",
        "--ingress",
        "--vlan",
        "--idle-timeout",
        "--on-stall",
        "--name",
        "--comment",
        "--position",
        "--apply-existing",
    ] {
        assert!(
            out.stdout.contains(flag),
            "policy add --help lacks {flag}: {}",
            out.stdout
        );
    }
    // Each on-stall choice is explained where it is chosen.
    for what in [
        "wait",
        "as an ASA does",
        "reset",
        "Reset both legs",
        "bypass",
        "pass-through",
        "needs --action proxy",
    ] {
        assert!(
            out.stdout.contains(what),
            "policy add --help does not say {what:?}: {}",
            out.stdout
        );
    }
    // Every protocol whose flows have ports, in whatever lines the help wraps it.
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(
        words
            .join(" ")
            .contains("needs --proto tcp, udp, sctp, dccp or udplite"),
        "policy add --help does not name every protocol with ports: {}",
        out.stdout
    );
}

#[test]
fn tollgatectl_sets_on_stall_for_proxied_flows() {
    let dir = TestDir::new("ctl-on-stall");
    let path = dir.path("control.sock");
    let daemon = start(&path);

    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--proto",
            "tcp",
            "--dst-port",
            "443",
            "--action",
            "proxy",
            "--on-stall",
            "reset",
            "--name",
            "web",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ctl(
        &path,
        &["policy", "add", "--proto", "tcp", "--action", "proxy"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    {
        let state = daemon.daemon.state.lock().unwrap();
        let rules = &state.0.rules;
        assert_eq!(rules[0].spec.on_stall, Some(StallAction::Reset));
        assert_eq!(rules[1].spec.on_stall, None);
    }

    // The JSON carries it as the rule files and the state file spell it.
    let out = ctl(&path, &["--json", "policy", "list"]);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed["rules"][0]["on_stall"], "reset", "{listed}");
    assert!(
        listed["rules"][1].get("on_stall").is_none(),
        "unset is left out: {listed}"
    );

    let out = ctl(&path, &["policy", "list"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID  POS  ACTION  MATCH") && lines[0].contains("IDLE  ON-STALL  NAME"),
        "{}",
        out.stdout
    );
    let column = lines[0].find("ON-STALL").unwrap();
    assert!(
        lines[1][column..].starts_with("reset     web"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2][column..].starts_with("-         -"),
        "no on-stall shows as -: {}",
        out.stdout
    );

    let out = ctl(
        &path,
        &[
            "explain",
            "--proto",
            "tcp",
            "--src",
            "198.18.0.9:40000",
            "--dst",
            "198.19.0.1:443",
        ],
    );
    assert!(
        out.stdout
            .contains("  rule 1: proto tcp dst-port 443 -> proxy, on-stall reset\n"),
        "{}",
        out.stdout
    );

    // Anything but proxy is refused, here before connecting, and by the
    // daemon for clients that skip the check.
    for action in ["bypass", "drop"] {
        let out = ctl(
            &path,
            &["policy", "add", "--action", action, "--on-stall", "wait"],
        );
        assert_eq!(out.code, 1);
        assert_eq!(
            one_error_line(&out),
            format!(
                "tollgatectl: invalid rule: on_stall (--on-stall): only proxied flows stall; \
                 this rule's action is {action}: drop on_stall or use action proxy"
            )
        );
    }
    let e = daemon
        .client()
        .call(add(json!({"action": "bypass", "on_stall": "bypass"})))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Daemon { code: ErrorCode::Invalid, message }
            if message.starts_with("on_stall: only proxied flows stall")),
        "{e:?}"
    );
    let out = ctl(
        &path,
        &["policy", "add", "--action", "proxy", "--on-stall", "retry"],
    );
    assert_eq!(out.code, 2);
    let line = one_error_line(&out);
    assert!(
        line.contains("retry") && line.contains("wait") && line.contains("bypass"),
        "{line}"
    );

    // Rule files take it too, and say which rule is wrong.
    let file = dir.path("stall.json");
    std::fs::write(
        &file,
        r#"[{"match": {"proto": "tcp"}, "action": "proxy", "on_stall": "bypass"}]"#,
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "replace", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        daemon.daemon.state.lock().unwrap().0.rules[0].spec.on_stall,
        Some(StallAction::Bypass)
    );
    std::fs::write(
        &file,
        r#"[{"action": "proxy"}, {"action": "drop", "on_stall": "reset", "name": "junk"}]"#,
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "check", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out).contains("stall.json: rule 2 (junk): on_stall: only proxied flows stall; this rule's action is drop"),
        "{}",
        out.stderr
    );
    std::fs::write(&file, r#"[{"action": "proxy", "on_stall": "later"}]"#).unwrap();
    let out = ctl(
        &path,
        &["policy", "check", "--file", file.to_str().unwrap()],
    );
    assert!(
        one_error_line(&out).contains("stall.json:1:") && out.stderr.contains("later"),
        "{}",
        out.stderr
    );
    daemon.shutdown();
}

#[test]
fn tollgatectl_sets_detection_for_proxied_flows() {
    let dir = TestDir::new("ctl-detect");
    let path = dir.path("control.sock");
    let daemon = start(&path);

    for args in [
        &[
            "--dst-port",
            "4443",
            "--detect",
            "ipsec-over-tcp",
            "--name",
            "vpn",
        ][..],
        &[
            "--dst-port",
            "10000",
            "--detect",
            "off",
            "--on-stall",
            "bypass",
        ][..],
    ] {
        let mut argv = vec!["policy", "add", "--proto", "tcp", "--action", "proxy"];
        argv.extend_from_slice(args);
        let out = ctl(&path, &argv);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    {
        let state = daemon.daemon.state.lock().unwrap();
        let rules = &state.0.rules;
        assert_eq!(rules[0].spec.detect, Some(Detect::IpsecOverTcp));
        assert_eq!(rules[1].spec.detect, Some(Detect::Off));
    }
    let out = ctl(&path, &["--json", "policy", "list"]);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed["rules"][0]["detect"], "ipsec-over-tcp", "{listed}");
    assert_eq!(listed["rules"][1]["detect"], "off", "{listed}");

    let out = ctl(&path, &["policy", "list"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("IDLE  ON-STALL  DETECT          NAME"),
        "{}",
        out.stdout
    );
    let column = lines[0].find("DETECT").unwrap();
    assert!(
        lines[1][column..].starts_with("ipsec-over-tcp  vpn"),
        "{}",
        out.stdout
    );
    assert!(lines[2][column..].starts_with("off "), "{}", out.stdout);

    let out = ctl(
        &path,
        &[
            "explain",
            "--proto",
            "tcp",
            "--src",
            "198.18.0.9:40000",
            "--dst",
            "198.19.0.1:10000",
        ],
    );
    assert!(
        out.stdout
            .contains("  rule 2: proto tcp dst-port 10000 -> proxy, on-stall bypass, detect off\n"),
        "{}",
        out.stdout
    );

    // Only proxied flows are watched: anything else is refused, by tollgatectl and by the
    // daemon; an unknown detection is refused naming the known ones.
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--action",
            "bypass",
            "--detect",
            "ipsec-over-tcp",
        ],
    );
    assert_eq!(out.code, 1);
    assert_eq!(
        one_error_line(&out),
        "tollgatectl: invalid rule: detect (--detect): detection watches proxied flows; \
         this rule's action is bypass: drop detect or use action proxy"
    );
    let e = daemon
        .client()
        .call(add(json!({"action": "drop", "detect": "off"})))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Daemon { code: ErrorCode::Invalid, message }
            if message.starts_with("detect: detection watches proxied flows")),
        "{e:?}"
    );
    let out = ctl(
        &path,
        &["policy", "add", "--action", "proxy", "--detect", "ssh"],
    );
    assert_eq!(out.code, 2);
    let line = one_error_line(&out);
    assert!(
        line.contains("ssh") && line.contains("ipsec-over-tcp") && line.contains("off"),
        "{line}"
    );
    daemon.shutdown();
}

#[test]
fn tollgatectl_shows_both_legs_of_proxied_flows() {
    let dir = TestDir::new("ctl-proxy-flows");
    let path = dir.path("control.sock");
    let daemon = start(&path);
    {
        let mut flows = daemon.daemon.flows.lock().unwrap();
        flows[1].proxy = Some(ProxyFlowView {
            state: "relaying".into(),
            client_leg: Some(LegView {
                state: "ESTABLISHED".into(),
                retransmissions: 0,
                srtt_ms: Some(1),
                rto_ms: 200,
                cwnd: 14_600,
                send_buffered: 0,
                out_of_order_received: 0,
            }),
            server_leg: Some(LegView {
                state: "ESTABLISHED".into(),
                retransmissions: 7,
                srtt_ms: Some(42),
                rto_ms: 250,
                cwnd: 29_200,
                send_buffered: 65_536,
                out_of_order_received: 3,
            }),
            buffered_client_to_server: 65_536,
            buffered_server_to_client: 0,
            stalls: 1,
            handed_over: None,
        });
        flows[2].proxy = Some(ProxyFlowView {
            state: "connecting".into(),
            client_leg: None,
            server_leg: Some(LegView {
                state: "SYN-SENT".into(),
                retransmissions: 2,
                srtt_ms: None,
                rto_ms: 4000,
                ..LegView::default()
            }),
            ..ProxyFlowView::default()
        });
        flows.push(FlowView {
            proxy: Some(ProxyFlowView {
                state: "pass-through".into(),
                stalls: 2,
                handed_over: Some("stall".into()),
                ..ProxyFlowView::default()
            }),
            ..flow(0, "198.18.0.4:40003", "198.19.0.3:22", Action::Proxy, None)
        });
        // Handed over on detection: the proxy holds nothing for it any more.
        flows.push(FlowView {
            handed_over: Some("detection".into()),
            detected: Some("ctcp-ike".into()),
            ..flow(
                1,
                "198.18.0.5:40004",
                "198.19.0.3:10000",
                Action::Bypass,
                None,
            )
        });
    }

    let out = ctl(&path, &["flows", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // A bypassed flow has no proxy line; a proxied one has its line right under it.
    assert!(lines[1].contains("198.18.0.1:40000"), "{}", out.stdout);
    assert!(lines[2].contains("198.18.0.2:40001"), "{}", out.stdout);
    let indent = "        ";
    assert_eq!(
        lines[3],
        format!(
            "{indent}proxy relaying | client leg ESTABLISHED retx 0 srtt 1ms | \
             server leg ESTABLISHED retx 7 srtt 42ms out-of-order 3 | buffered >64.0K <0B | stalls 1"
        ),
        "{}",
        out.stdout
    );
    assert!(lines[4].contains("198.18.0.3:40002"), "{}", out.stdout);
    assert_eq!(
        lines[5],
        format!(
            "{indent}proxy connecting | client leg not open | server leg SYN-SENT retx 2 srtt - | \
             buffered >0B <0B | stalls 0"
        ),
        "{}",
        out.stdout
    );
    assert!(lines[6].contains("198.18.0.4:40003"), "{}", out.stdout);
    assert!(
        lines[7].starts_with(&format!("{indent}proxy pass-through | client leg not open"))
            && lines[7].ends_with("| stalls 2 | handed over to pass-through: stall"),
        "{}",
        out.stdout
    );
    assert!(lines[8].contains("198.18.0.5:40004"), "{}", out.stdout);
    assert_eq!(
        lines[9],
        format!("{indent}handed over to pass-through: detection (ipsec-over-tcp, ctcp-ike)"),
        "{}",
        out.stdout
    );
    assert!(lines[10].starts_with("flows 1-5 of 5"), "{}", out.stdout);
    // The detail lines do not widen the columns.
    let width = lines[0].len();
    assert!(
        lines[1].len() <= width + 20,
        "{} vs {width}: {}",
        lines[1].len(),
        out.stdout
    );

    let out = ctl(&path, &["--json", "flows", "list", "--port", "443"]);
    let page: FlowsListReply = serde_json::from_str(&out.stdout).unwrap();
    let proxy = page.flows[0].proxy.as_ref().unwrap();
    assert_eq!(proxy.server_leg.as_ref().unwrap().retransmissions, 7);
    daemon.shutdown();
}
