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
    Action, Detect, LimitAction, PolicyError, PolicySet, PortSide, Protocol, StallAction,
};
use tollgate_control::protocol::{
    ErrorCode, ExplainQuery, ExplainReply, FlowFilter, FlowTcpState, FlowView, FlowsClearReply,
    FlowsListReply, HandedOver, HealthReply, HealthStatus, IpsecFraming, KeptFlow, KeptReason,
    LegState, LegView, LimitNow, Op, PolicyChangeReply, PolicyCheckReply, PolicyDefaults,
    PolicyListReply, ProxyFlowView, ProxyState, Request, Response, RuleHits, RuleView, StatsReply,
    VersionReply, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use tollgate_control::server::{
    ControlServer, Handler, Peer, ServerError, ServerHandle, ServerLimits, SocketAccess,
};
use tollgate_control::{ControlSocketCounters, LimitCounters, StatsSnapshot};

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
        ingress: PortSide::Inside,
        mode,
        reason: rule.map_or("default for tcp".into(), |r| format!("rule {r}")),
        rule,
        packets_original: 10,
        packets_reply: 8,
        bytes_original: 15_000,
        bytes_reply: 600,
        age_ms: 5_000,
        idle_ms: 1_200,
        tcp_state: Some(FlowTcpState::Established),
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
    filter.matches(f.proto, f.src, f.dst, f.mode, f.rule)
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
                            limit_counters: r.spec.has_limits().then_some(LimitCounters {
                                connections: 3,
                                embryonic: 1,
                                conn_max_hits: 2,
                                embryonic_max_hits: 0,
                                per_client_max_hits: 5,
                                limit_reset: 7,
                                limit_bypassed: 0,
                            }),
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
                        limits: r
                            .spec
                            .conn_max
                            .map(|max| LimitNow {
                                limit: "conn-max".into(),
                                max: max.into(),
                                current: 3,
                                reached: 3 >= max,
                            })
                            .into_iter()
                            .collect(),
                    },
                    None => ExplainReply {
                        action: DEFAULTS.tcp,
                        rule: None,
                        limits: Vec::new(),
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
            // The daemon's outcomes, by mode, without its data plane: a proxied flow is reset
            // (here simply dropped from the list), or handed over unless it is still in its
            // handshake; the others are forgotten.
            Op::FlowsClear { filter, hand_over } => {
                if let Err(e) = filter.check() {
                    return Response::error(seq, ErrorCode::Invalid, e.to_string());
                }
                let mut flows = self.flows.lock().unwrap();
                let mut reply = FlowsClearReply::default();
                flows.retain_mut(|f| {
                    if !matches(&filter, f) {
                        return true;
                    }
                    match f.mode {
                        Action::Proxy
                            if hand_over && f.tcp_state == Some(FlowTcpState::SynSent) =>
                        {
                            reply.proxy.kept += 1;
                            reply.kept.push(KeptFlow {
                                worker: f.worker,
                                proto: f.proto,
                                src: f.src,
                                dst: f.dst,
                                mode: f.mode,
                                reason: KeptReason::HandshakeInProgress,
                            });
                            true
                        }
                        Action::Proxy if hand_over => {
                            reply.proxy.handed_over += 1;
                            f.mode = Action::Bypass;
                            f.handed_over = Some(HandedOver::Operator);
                            true
                        }
                        Action::Proxy => {
                            reply.proxy.reset += 1;
                            false
                        }
                        Action::Bypass => {
                            reply.bypass.forgotten += 1;
                            false
                        }
                        Action::Drop => {
                            reply.drop.forgotten += 1;
                            false
                        }
                    }
                });
                reply.cleared = reply.proxy.reset
                    + reply.proxy.handed_over
                    + reply.bypass.forgotten
                    + reply.drop.forgotten;
                Response::ok(seq, reply)
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
                    status: HealthStatus::Ok,
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

    fn clients(&self) -> usize {
        self.server.as_ref().unwrap().clients()
    }

    fn counters(&self) -> ControlSocketCounters {
        self.server.as_ref().unwrap().counters().snapshot()
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
            ingress: PortSide::Inside,
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
            hand_over: false,
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
                            ingress: PortSide::Inside,
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

/// Whether one of this process's control-client threads is asleep sending to a client of
/// the server at `path`: a client that does not read its replies has filled its socket, and
/// the thread waits for room until the write timeout.
fn stuck_writing_to(path: &Path) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|task| {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        if read("comm").trim() != "control-client" {
            return false;
        }
        // "NR fd buf len ...", only while the thread sleeps in a system call.
        let syscall = read("syscall");
        let mut fields = syscall.split_whitespace();
        use nix::libc::{SYS_sendmsg, SYS_sendto, SYS_write};
        let sending = [SYS_write, SYS_sendto, SYS_sendmsg].map(|nr| nr.to_string());
        if !fields
            .next()
            .is_some_and(|nr| sending.iter().any(|s| s == nr))
        {
            return false;
        }
        let Some(Ok(fd)) = fields
            .next()
            .map(|fd| i32::from_str_radix(fd.trim_start_matches("0x"), 16))
        else {
            return false;
        };
        // An accepted connection's own address is the listening socket's path.
        nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd)
            .ok()
            .and_then(|addr| addr.path().map(Path::to_owned))
            .is_some_and(|p| p == path)
    })
}

#[test]
fn a_stuck_client_does_not_delay_the_others() {
    let dir = TestDir::new("stuck");
    // Long enough to outlast the other clients' requests on any machine, short enough for
    // the test to see the stuck client dropped.
    let limits = ServerLimits {
        write_timeout: LIMIT / 2,
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);

    // Half a line, then nothing.
    let mut half = Raw::connect(&daemon.path);
    half.send(b"{\"version\":1,\"op\":");
    // Requests without end, never reading a reply: the server's writes to it fill the socket
    // and block until the write timeout drops it, when the requests meet a closed socket.
    let flooder = UnixStream::connect(&daemon.path).unwrap();
    flooder
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flood = thread::spawn(move || {
        let line = b"{\"version\":1,\"op\":\"stats\"}\n".repeat(1000);
        let deadline = Instant::now() + 2 * LIMIT;
        while Instant::now() < deadline {
            match (&flooder).write(&line) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    });

    wait_until(
        "the server is stuck writing to the client that never reads",
        || stuck_writing_to(&daemon.path),
    );
    let mut c = daemon.client();
    for _ in 0..20 {
        let _: VersionReply = c.call_as(Op::Version {}).unwrap();
    }
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    // It never stopped being stuck (only its write timeout ends that), so the others were
    // answered while it was.
    assert!(
        stuck_writing_to(&daemon.path),
        "the stuck client was dropped (write timeout {:?}) before the others were answered",
        LIMIT / 2
    );
    assert!(
        flood.join().unwrap(),
        "a client that never reads its replies is dropped"
    );
    drop(half);
    daemon.shutdown();
}

#[test]
fn a_request_must_arrive_whole_within_the_request_timeout() {
    let dir = TestDir::new("request-timeout");
    // The idle timeout outlasts the test's own read limit: only the request
    // timeout can close the connection in time.
    let limits = ServerLimits {
        request_timeout: Duration::from_millis(200),
        idle_timeout: 3 * LIMIT,
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);
    let mut raw = Raw::connect(&daemon.path);
    // A whole request first: the connection is served as usual.
    assert!(raw.reply_after(VERSION).ok);
    raw.send(b"{\"version\":1,\"op\":");
    let error = raw.reply().error.expect("an error line before the close");
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.contains(
            "did not arrive whole (a line ending in a newline) within 0.2 s of its first byte (control.request_timeout_secs)"
        ),
        "{}",
        error.message
    );
    assert!(raw.closed());
    wait_until("the slot is freed", || daemon.clients() == 0);
    let counters = daemon.counters();
    assert_eq!(
        (counters.request_timeouts, counters.idle_timeouts),
        (1, 0),
        "{counters:?}"
    );
    assert!(
        daemon.logged().iter().any(|l| l.starts_with("tollgate: control: closed uid ")
            && l.ends_with("): it did not send a whole request within 0.2 s of its first byte (control.request_timeout_secs)")),
        "{:?}",
        daemon.logged()
    );
    daemon.shutdown();
}

#[test]
fn a_connection_without_a_request_is_closed_after_the_idle_timeout() {
    let dir = TestDir::new("idle");
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(200),
        request_timeout: 3 * LIMIT,
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);
    // One that was answered, then went quiet; one that never said anything.
    let mut answered = Raw::connect(&daemon.path);
    assert!(answered.reply_after(VERSION).ok);
    let mut silent = Raw::connect(&daemon.path);
    for raw in [&mut answered, &mut silent] {
        let error = raw.reply().error.expect("an error line before the close");
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(
            error.message.contains(
                "after 0.2 s without a request (control.idle_timeout_secs); connect again"
            ),
            "{}",
            error.message
        );
        assert!(raw.closed());
    }
    wait_until("both slots are freed", || daemon.clients() == 0);
    // A request in progress is not idle, however long it takes to arrive
    // (the request timeout bounds it): this one outlasts the idle timeout
    // three times over.
    let mut slow = Raw::connect(&daemon.path);
    slow.send(b"{\"version\":1,");
    wait_until("the request is in progress", || {
        daemon.counters().requests_in_progress == 1
    });
    thread::sleep(3 * limits.idle_timeout);
    assert!(slow.reply_after(b"\"op\":\"version\"}\n").ok);
    let counters = daemon.counters();
    assert_eq!(
        (counters.idle_timeouts, counters.request_timeouts),
        (2, 0),
        "{counters:?}"
    );
    assert!(
        daemon
            .logged()
            .iter()
            .any(|l| l.ends_with("): no request for 0.2 s (control.idle_timeout_secs)")),
        "{:?}",
        daemon.logged()
    );
    assert!(ServerLimits::default().idle_timeout < Duration::from_secs(300));
    daemon.shutdown();
}

const VERSION: &[u8] = b"{\"version\":1,\"op\":\"version\"}\n";

#[test]
fn root_closes_the_connection_idle_longest_to_get_in_but_none_with_a_request_in_progress() {
    let dir = TestDir::new("evict");
    let limits = ServerLimits {
        max_clients: 4,
        request_timeout: 3 * LIMIT,
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);
    // Answered in this order, so c[0] has been idle longest, then c[1]. A
    // connection is idle once its thread has sent the reply and noted the
    // time, which the client cannot see: wait for that before the next.
    let mut c: Vec<Raw> = (0..4).map(|_| Raw::connect(&daemon.path)).collect();
    for raw in c.iter_mut() {
        assert!(raw.reply_after(VERSION).ok);
        wait_until("the connection is idle", || {
            daemon.counters().requests_in_progress == 0
        });
    }
    // c[1] begins a request: no longer idle, so not to be closed.
    c[1].send(b"{\"version\":1,");
    wait_until("c[1]'s request is in progress", || {
        daemon.counters().requests_in_progress == 1
    });

    let mut first = Raw::connect(&daemon.path);
    assert!(first.reply_after(VERSION).ok, "root gets in");
    let error = c[0].reply().error.expect("c[0] is told why");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("to make room for root"),
        "{}",
        error.message
    );
    assert!(c[0].closed());
    let mut second = Raw::connect(&daemon.path);
    assert!(second.reply_after(VERSION).ok, "root gets in again");
    assert!(
        c[2].reply().error.is_some() && c[2].closed(),
        "c[2] was next"
    );
    // c[1], idle longer than c[2] before its request began, finishes it.
    assert!(c[1].reply_after(b"\"op\":\"version\"}\n").ok);
    assert!(c[3].reply_after(VERSION).ok, "c[3] is untouched");
    let counters = daemon.counters();
    assert_eq!(counters.evicted_idle, 2, "{counters:?}");
    assert!(counters.connections <= 4, "{counters:?}");
    assert!(
        daemon
            .logged()
            .iter()
            .any(|l| l.starts_with("tollgate: control: closed uid 0 (pid ")
                && l.contains(", idle ")
                && l.contains(") to make room for uid 0 (pid ")
                && l.ends_with("): all 4 connections were taken (control.max_clients)")),
        "{:?}",
        daemon.logged()
    );

    // Every connection in the middle of a request: nothing to close, so even
    // root is refused (until the request timeout frees one).
    for raw in c
        .iter_mut()
        .skip(1)
        .step_by(2)
        .chain([&mut first, &mut second])
    {
        raw.send(b"{\"version\":1,");
    }
    wait_until("four requests are in progress", || {
        daemon.counters().requests_in_progress == 4
    });
    let mut refused = Raw::connect(&daemon.path);
    let error = refused.reply().error.expect("a refusal");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error
            .message
            .contains("all 4 of tollgate's control connections have a request in progress"),
        "{}",
        error.message
    );
    assert!(refused.closed());
    let counters = daemon.counters();
    assert_eq!(
        (counters.refused_full, counters.evicted_idle),
        (1, 2),
        "{counters:?}"
    );
    daemon.shutdown();
}

#[test]
fn the_operator_gets_in_past_200_idle_and_10_half_request_connections() {
    let dir = TestDir::new("operator");
    let limits = ServerLimits {
        request_timeout: 3 * LIMIT,
        ..ServerLimits::default()
    };
    let daemon = start_with(&dir.path("control.sock"), &SocketAccess::default(), limits);
    let started = Instant::now();
    let mut idle: Vec<Raw> = (0..200).map(|_| Raw::connect(&daemon.path)).collect();
    let mut half: Vec<Raw> = (0..10).map(|_| Raw::connect(&daemon.path)).collect();
    for raw in half.iter_mut() {
        raw.send(b"{\"version\":1,");
    }
    wait_until("the 10 half requests are in progress", || {
        daemon.counters().requests_in_progress == 10
    });
    for _ in 0..20 {
        let stats: StatsReply = daemon.client().call_as(Op::Stats {}).unwrap();
        assert_eq!(stats.steering, "software");
    }
    let out = ctl(&daemon.path, &["stats"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = daemon.counters();
    assert!(counters.connections <= 64, "{counters:?}");
    assert!(counters.evicted_idle >= 200 + 10 - 64, "{counters:?}");
    assert_eq!(counters.requests_in_progress, 10, "{counters:?}");
    // The half requests were never closed for the operator.
    for raw in half.iter_mut() {
        assert!(raw.reply_after(b"\"op\":\"version\"}\n").ok);
    }
    // Of the idle ones, the longest idle were closed; the newest stayed.
    assert!(idle[0].reply().error.is_some() && idle[0].closed());
    assert!(idle[199].reply_after(VERSION).ok);
    // A flood of connection events is not a flood of log lines: ten a
    // second, then one line saying the rest are only counted.
    let logged = daemon.logged();
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        logged.len() as u64 <= 11 * seconds,
        "{} lines in {seconds} s",
        logged.len()
    );
    assert!(
        logged.len() as u64 >= counters.evicted_idle
            || logged
                .iter()
                .any(|l| l.contains("more connection events than the log takes one by one")),
        "{logged:?}"
    );
    daemon.shutdown();
}

/// A connection held by `socat` running as another user: what the test
/// sends goes to the socket, and what tollgate answers comes back line by
/// line.
struct Held {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Held {
    fn connect(path: &Path, uid: u32, gid: u32) -> Held {
        let mut child = Command::new("socat")
            .arg("STDIO")
            .arg(format!("UNIX-CONNECT:{}", path.display()))
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat, which scripts/setup installs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Held {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    fn reply_after(&mut self, line: &[u8]) -> Response {
        self.send(line);
        let line = self
            .lines
            .recv_timeout(LIMIT)
            .expect("a reply line within the limit");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket as a member of the control group finds it: 65534 is in
/// `nogroup`, its primary group.
fn start_for_nobody(path: &Path, limits: ServerLimits) -> Running {
    let access = SocketAccess {
        mode: 0o660,
        group: Some("nogroup".into()),
    };
    start_with(path, &access, limits)
}

#[test]
fn a_user_other_than_root_is_held_to_the_per_uid_limit() {
    if !is_root() {
        eprintln!("skipped: running clients as uid 65534 needs root");
        return;
    }
    let dir = TestDir::new("per-uid");
    let limits = ServerLimits {
        max_clients_per_uid: 2,
        ..ServerLimits::default()
    };
    let daemon = start_for_nobody(&dir.path("control.sock"), limits);
    let mut first = Held::connect(&daemon.path, 65534, 65534);
    let mut second = Held::connect(&daemon.path, 65534, 65534);
    assert!(first.reply_after(VERSION).ok);
    assert!(second.reply_after(VERSION).ok);
    let refused = Held::connect(&daemon.path, 65534, 65534).reply_after(VERSION);
    let error = refused.error.expect("the third is refused");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert_eq!(
        error.message,
        "uid 65534 already has 2 control connections open, the most one user may (control.max_clients_per_uid 2); close one, or wait for one to finish"
    );
    assert!(
        daemon.logged().iter().any(
            |l| l.starts_with("tollgate: control: refused uid 65534 (pid ")
                && l.ends_with(
                    "): it already has 2 connections open (control.max_clients_per_uid 2)"
                )
        ),
        "{:?}",
        daemon.logged()
    );
    // Root has no such limit, and the user gets a connection back once one
    // of theirs closes.
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    drop(first);
    wait_until("the closed connection leaves", || daemon.clients() == 1);
    assert!(
        Held::connect(&daemon.path, 65534, 65534)
            .reply_after(VERSION)
            .ok
    );
    assert_eq!(daemon.counters().refused_uid_limit, 1);
    drop(second);
    daemon.shutdown();
}

#[test]
fn users_other_than_root_cannot_take_the_connections_kept_for_root() {
    if !is_root() {
        eprintln!("skipped: running clients as uid 65534 needs root");
        return;
    }
    let dir = TestDir::new("reserved");
    let limits = ServerLimits {
        max_clients: 3,
        reserved_for_root: 1,
        request_timeout: 3 * LIMIT,
        ..ServerLimits::default()
    };
    let daemon = start_for_nobody(&dir.path("control.sock"), limits);
    // Two requests in progress from the control group: nothing root could
    // close.
    let mut held: Vec<Held> = (0..2)
        .map(|_| Held::connect(&daemon.path, 65534, 65534))
        .collect();
    for h in held.iter_mut() {
        assert!(h.reply_after(VERSION).ok);
        h.send(b"{\"version\":1,");
    }
    wait_until("two requests are in progress", || {
        daemon.counters().requests_in_progress == 2
    });
    let error = Held::connect(&daemon.path, 65534, 65534)
        .reply_after(VERSION)
        .error
        .expect("the third is refused");
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error
            .message
            .contains("(2 open; the last 1 of 3 are kept for root)"),
        "{}",
        error.message
    );
    let _: VersionReply = daemon.client().call_as(Op::Version {}).unwrap();
    let counters = daemon.counters();
    assert_eq!(
        (counters.refused_full, counters.evicted_idle),
        (1, 0),
        "{counters:?}"
    );
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
    assert_eq!(
        out.stdout,
        "cleared 1 flow\n  proxy   1 reset at both ends (entries kept closed a few seconds, for segments in flight)\n"
    );
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
        "--conn-max",
        "--embryonic-max",
        "--per-client-max",
        "--on-limit",
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
        // How the connection limits count, said where they are set.
        "over all workers together",
        "TIME-WAIT not counted",
        "RST and keeps no",
        "forwards it unproxied",
        "16,384 buckets",
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
            state: ProxyState::Relaying,
            client_leg: Some(LegView {
                state: LegState::Established,
                retransmissions: 0,
                srtt_ms: Some(1),
                rto_ms: 200,
                cwnd: 14_600,
                send_buffered: 0,
                out_of_order_received: 0,
                ecn: false,
            }),
            server_leg: Some(LegView {
                state: LegState::Established,
                retransmissions: 7,
                srtt_ms: Some(42),
                rto_ms: 250,
                cwnd: 29_200,
                send_buffered: 65_536,
                out_of_order_received: 3,
                ecn: true,
            }),
            buffered_client_to_server: 65_536,
            buffered_server_to_client: 0,
            stalls: 1,
            handed_over: None,
        });
        flows[2].proxy = Some(ProxyFlowView {
            state: ProxyState::Connecting,
            client_leg: None,
            server_leg: Some(LegView {
                state: LegState::SynSent,
                retransmissions: 2,
                srtt_ms: None,
                rto_ms: 4000,
                ..LegView::default()
            }),
            ..ProxyFlowView::default()
        });
        flows.push(FlowView {
            proxy: Some(ProxyFlowView {
                state: ProxyState::PassThrough,
                stalls: 2,
                handed_over: Some(HandedOver::Stall),
                ..ProxyFlowView::default()
            }),
            ..flow(0, "198.18.0.4:40003", "198.19.0.3:22", Action::Proxy, None)
        });
        // Handed over on detection: the proxy holds nothing for it any more.
        flows.push(FlowView {
            handed_over: Some(HandedOver::Detection),
            detected: Some(IpsecFraming::CtcpIke),
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
             server leg ESTABLISHED retx 7 srtt 42ms out-of-order 3 ecn | buffered >64.0K <0B | stalls 1"
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

#[test]
fn tollgatectl_sets_connection_limits_on_proxied_flows() {
    let dir = TestDir::new("ctl-limits");
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
            "--conn-max",
            "3",
            "--embryonic-max",
            "2",
            "--per-client-max",
            "1",
            "--on-limit",
            "bypass",
            "--name",
            "web",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--proto",
            "tcp",
            "--action",
            "proxy",
            "--per-client-max",
            "9",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ctl(
        &path,
        &["policy", "add", "--proto", "udp", "--action", "bypass"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    {
        let state = daemon.daemon.state.lock().unwrap();
        let rules = &state.0.rules;
        let limits = |i: usize| {
            let s = &rules[i].spec;
            (s.conn_max, s.embryonic_max, s.per_client_max, s.on_limit)
        };
        assert_eq!(
            limits(0),
            (Some(3), Some(2), Some(1), Some(LimitAction::Bypass))
        );
        assert_eq!(limits(1), (None, None, Some(9), None));
        assert_eq!(limits(2), (None, None, None, None));
    }

    // JSON: the fields as rule files and the state file spell them, and the counters.
    let out = ctl(&path, &["--json", "policy", "list"]);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    let first = &listed["rules"][0];
    assert_eq!(
        (
            &first["conn_max"],
            &first["embryonic_max"],
            &first["per_client_max"],
            &first["on_limit"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!("bypass")),
        "{listed}"
    );
    assert_eq!(first["limit_counters"]["connections"], 3, "{listed}");
    assert_eq!(first["limit_counters"]["conn_max_hits"], 2, "{listed}");
    assert!(
        listed["rules"][2].get("limit_counters").is_none(),
        "{listed}"
    );
    assert!(listed["rules"][2].get("on_limit").is_none(), "{listed}");
    // A listing saved as a file replaces the policy as it was, limits and all.
    let saved = dir.path("listing.json");
    std::fs::write(&saved, &out.stdout).unwrap();
    let out = ctl(
        &path,
        &["policy", "replace", "--file", saved.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        daemon.daemon.state.lock().unwrap().0.rules[0].spec.on_limit,
        Some(LimitAction::Bypass)
    );

    // The table: a LIMITS column in policy add's words, the counters under the rule.
    let out = ctl(&path, &["policy", "list"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].contains("IDLE  LIMITS"), "{}", out.stdout);
    let column = lines[0].find("LIMITS").unwrap();
    assert!(
        lines[1][column..]
            .starts_with("conn-max 3 embryonic-max 2 per-client-max 1 on-limit bypass  web"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[2].trim(),
        "limits: 3 connections open (1 embryonic); new flows past a limit: 2 at conn-max, \
         0 at embryonic-max, 5 at per-client-max; 7 reset, 0 bypassed",
        "{}",
        out.stdout
    );
    assert!(
        lines[3][column..].starts_with("per-client-max 9 on-limit reset"),
        "reset when the rule does not say: {}",
        out.stdout
    );
    assert!(lines[5][column..].starts_with("-"), "{}", out.stdout);

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
        out.stdout.contains(
            "  rule 4: proto tcp dst-port 443 -> proxy, conn-max 3 embryonic-max 2 per-client-max 1 on-limit bypass\n  conn-max 3: 3 now, reached\n"
        ),
        "{}",
        out.stdout
    );

    // Refused here before connecting, and by the daemon for clients that skip the check.
    for (args, message) in [
        (
            &["--action", "bypass", "--conn-max", "3"][..],
            "tollgatectl: invalid rule: conn_max (--conn-max): connection limits count the \
             connections a rule proxies; this rule's action is bypass: drop conn_max or use action proxy",
        ),
        (
            &["--action", "proxy", "--per-client-max", "0"][..],
            "tollgatectl: invalid rule: per_client_max (--per-client-max): 0 is outside 1..=65535",
        ),
        (
            &["--action", "proxy", "--conn-max", "2", "--embryonic-max", "5"][..],
            "tollgatectl: invalid rule: embryonic_max (--embryonic-max): 5 is above conn_max 2, \
             which it counts among, so it could never be reached: lower it or raise conn_max",
        ),
        (
            &["--action", "proxy", "--on-limit", "reset"][..],
            "tollgatectl: invalid rule: on_limit (--on-limit): the rule sets no limit to act on: \
             add conn_max, embryonic_max or per_client_max, or drop on_limit",
        ),
    ] {
        let mut argv = vec!["policy", "add"];
        argv.extend_from_slice(args);
        let out = ctl(&path, &argv);
        assert_eq!(out.code, 1, "{args:?}");
        assert_eq!(one_error_line(&out), message);
    }
    let out = ctl(
        &path,
        &[
            "policy",
            "add",
            "--action",
            "proxy",
            "--conn-max",
            "1",
            "--on-limit",
            "drop",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        one_error_line(&out).contains("reset, bypass"),
        "{}",
        out.stderr
    );
    let e = daemon
        .client()
        .call(add(json!({"action": "drop", "embryonic_max": 4})))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Daemon { code: ErrorCode::Invalid, message }
            if message.starts_with("embryonic_max: connection limits count")),
        "{e:?}"
    );
    let file = dir.path("limits.json");
    std::fs::write(
        &file,
        r#"[{"action": "proxy"}, {"action": "bypass", "per_client_max": 2, "name": "junk"}]"#,
    )
    .unwrap();
    let out = ctl(
        &path,
        &["policy", "check", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out)
            .contains("limits.json: rule 2 (junk): per_client_max: connection limits count"),
        "{}",
        out.stderr
    );
    daemon.shutdown();
}

#[test]
fn tollgatectl_clears_one_connection_by_its_endpoints_and_hands_over_on_request() {
    let dir = TestDir::new("ctl-clear");
    let path = dir.path("control.sock");
    let daemon = start(&path);
    daemon.daemon.flows.lock().unwrap()[2].tcp_state = Some(FlowTcpState::SynSent);

    // Named from the responder's side: the same connection.
    let out = ctl(
        &path,
        &[
            "--json",
            "flows",
            "clear",
            "--proto",
            "tcp",
            "--src",
            "198.19.0.1:443",
            "--dst",
            "198.18.0.2:40001",
            "--hand-over",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reply: FlowsClearReply = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (reply.cleared, reply.proxy.handed_over),
        (1, 1),
        "{reply:?}"
    );
    let listed = daemon.daemon.flows.lock().unwrap().clone();
    assert_eq!(listed.len(), 3, "nothing else was touched");
    assert_eq!(listed[1].handed_over, Some(HandedOver::Operator));

    let out = ctl(&path, &["flows", "clear", "--port", "5201", "--hand-over"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "cleared 0 flows\n  proxy   1 kept unchanged\n  kept: tcp 198.18.0.3:40002 -> 198.19.0.2:5201 (proxy, worker 1): handshake in progress, cannot be handed over yet: still proxied\n"
    );
    let out = ctl(&path, &["flows", "clear", "--mode", "bypass"]);
    assert_eq!(
        out.stdout, "cleared 2 flows\n  bypass  2 forgotten\n",
        "the one handed over is bypass now"
    );

    // Mistakes are caught before anything is sent.
    let out = ctl(&path, &["flows", "clear", "--src", "198.18.0.2:40001"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(one_error_line(&out).contains("--dst"), "{}", out.stderr);
    for (args, says) in [
        (
            [
                "--src",
                "198.18.0.2:40001",
                "--dst",
                "[2001:2::1]:443",
                "--proto",
                "tcp",
            ],
            "different address families",
        ),
        (
            [
                "--src",
                "198.18.0.2",
                "--dst",
                "198.19.0.1:443",
                "--proto",
                "tcp",
            ],
            "--src 198.18.0.2:0 has no port, and tcp flows have ports",
        ),
        (
            [
                "--src",
                "198.18.0.2:1",
                "--dst",
                "198.19.0.1",
                "--proto",
                "icmp",
            ],
            "--src 198.18.0.2:1 has a port, and icmp flows have none",
        ),
    ] {
        let mut argv = vec!["flows", "clear"];
        argv.extend(args);
        let out = ctl(&path, &argv);
        assert_eq!(out.code, 1, "{argv:?}: {}", out.stderr);
        assert!(
            one_error_line(&out).contains(says),
            "{argv:?}: {}",
            out.stderr
        );
    }
    let out = ctl(
        &path,
        &[
            "flows",
            "clear",
            "--src",
            "nowhere:1",
            "--dst",
            "198.19.0.1:443",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        one_error_line(&out).contains("is not an address and port"),
        "{}",
        out.stderr
    );
    assert_eq!(
        daemon.daemon.flows.lock().unwrap().len(),
        1,
        "no refused command cleared anything"
    );

    // The help says what clearing does to each mode.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgatectl"));
    cmd.args(["flows", "clear", "--help"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_limited(cmd);
    assert_eq!(out.code, 0);
    for what in [
        "--hand-over",
        "--src",
        "--dst",
        "either direction",
        "both ends are reset",
        "stays, closed",
        "handed over to pass-through",
        "cannot be handed over",
        "bypass  The entry is forgotten",
        "drop    The entry is forgotten",
    ] {
        assert!(
            out.stdout.contains(what),
            "flows clear --help does not say {what:?}: {}",
            out.stdout
        );
    }
}
