//! The daemon's control plane as an operator meets it: the real `tollgate`
//! binary on ring devices, spoken to over its Unix socket in the wire
//! protocol (newline-delimited JSON), restarted to prove its policy persists.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tg-dctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two idle ring devices: the ports of every test but the memif one.
const RINGS: [&str; 2] = ["net_ring0", "net_ring1"];

/// The daemon on two ports (inside, outside), one worker, no hugepages.
fn tollgate_on(ports: [&str; 2]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.args(["--inside", ports[0], "--outside", ports[1], "--cores", "0"]);
    c.args(["--no-huge", "--memory", "256"]);
    c
}

fn tollgate() -> Command {
    tollgate_on(RINGS)
}

fn spawn(dir: &Path, tag: &str, ports: [&str; 2], extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap();
    tollgate_on(ports)
        .args(extra)
        .args([
            "--mbufs",
            "8191",
            "--flow-capacity",
            "1024",
            "--idle-sleep-us",
            "100",
        ])
        .arg("--file-prefix")
        .arg(format!("tg-dctl-{}-{tag}", std::process::id()))
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .arg("--state-file")
        .arg(dir.join("policy.json"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Daemon {
    fn start(dir: &Path, tag: &str) -> Daemon {
        Daemon::start_with(dir, tag, &[])
    }

    fn start_with(dir: &Path, tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_on(dir, tag, RINGS, extra)
    }

    fn start_on(dir: &Path, tag: &str, ports: [&str; 2], extra: &[&str]) -> Daemon {
        let child = spawn(dir, tag, ports, extra);
        let d = Daemon {
            child,
            socket: dir.join("control.sock"),
            log: dir.join(format!("{tag}.log")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&d.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "no control socket; log:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// What became of the daemon, for a failure message: whether it still runs or how it ended
    /// (the child is left unreaped, so `Drop` still reaps it), and its log.
    fn post_mortem(&self) -> String {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let state = match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => "still runs".to_string(),
            Ok(status) => format!("has ended: {status:?}"),
            Err(e) => format!("is in an unknown state ({e})"),
        };
        format!(
            "tollgate {state}; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn call(&self, request: Value) -> Value {
        let mut stream = UnixStream::connect(&self.socket).unwrap_or_else(|e| {
            panic!(
                "cannot connect to {}: {e}; {}",
                self.socket.display(),
                self.post_mortem()
            )
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        stream.write_all(&line).unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
    }

    fn ok(&self, request: Value) -> Value {
        let reply = self.call(request.clone());
        assert_eq!(reply["ok"], true, "{request} -> {reply}");
        reply["result"].clone()
    }

    fn stop(mut self) -> String {
        let status = signal_and_wait(&mut self.child, Signal::SIGTERM)
            .unwrap_or_else(|| panic!("tollgate did not stop on SIGTERM"));
        assert!(status.success(), "tollgate exited with {status}");
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `signal` to `child` and waits up to 20 s for it to exit; `None` if it is still running.
fn signal_and_wait(child: &mut Child, signal: Signal) -> Option<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rule(dst_port: u16, action: &str, name: &str) -> Value {
    json!({"match": {"proto": "tcp", "dst_port": dst_port}, "action": action, "name": name})
}

#[test]
fn policies_apply_explain_persist_across_a_restart_and_a_corrupt_state_stops_start_up() {
    let dir = scratch("persist");
    let d = Daemon::start(&dir, "first");

    let v = d.ok(json!({"version": 1, "op": "version"}));
    assert_eq!(v["protocol"], 1);
    assert!(v["dpdk"].as_str().unwrap().contains("22.11"), "{v}");
    let h = d.ok(json!({"version": 1, "op": "health"}));
    assert_eq!(h["workers_responding"], 1, "{h}");

    // Adds, measured: a change is answered once every worker runs it.
    let mut in_force = Vec::new();
    let mut ids = Vec::new();
    for (port, action) in [(10000, "bypass"), (22, "drop"), (443, "proxy")] {
        let r = d.ok(json!({"version": 1, "op": "policy.add", "rule": rule(port, action, &format!("r{port}"))}));
        ids.push(r["id"].as_u64().unwrap());
        in_force.push(r["in_force_us"].as_u64().unwrap());
    }
    eprintln!("policy change in force on every worker after {in_force:?} us");
    // Insert first, then delete, then explain what a flow would get.
    let first = d.ok(json!({"version": 1, "op": "policy.add", "position": 0, "rule": rule(10000, "drop", "shadow")}));
    let list = d.ok(json!({"version": 1, "op": "policy.list"}));
    assert_eq!(list["rules"][0]["name"], "shadow");
    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "tcp", "src": "198.18.0.1:40000", "dst": "198.18.0.2:10000"}));
    assert_eq!(e["action"], "drop", "{e}");
    d.ok(json!({"version": 1, "op": "policy.delete", "id": first["id"]}));
    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "tcp", "src": "198.18.0.1:40000", "dst": "198.18.0.2:10000"}));
    assert_eq!(e["action"], "bypass", "{e}");
    assert!(e["explanation"].as_str().unwrap().contains("r10000"), "{e}");
    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "udp", "src": "198.18.0.1:5000", "dst": "198.18.0.2:53"}));
    assert_eq!(e["action"], "bypass");
    assert!(e["rule"].is_null());
    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "tcp", "src": "198.18.0.1:5000", "dst": "198.18.0.2:80"}));
    assert_eq!(e["action"], "proxy", "the default for tcp: {e}");

    // Bad requests are refused, and change nothing.
    let before = d.ok(json!({"version": 1, "op": "policy.list"}));
    for bad in [
        json!({"version": 1, "op": "policy.add", "rule": {"match": {"proto": "icmp", "dst_port": 80}, "action": "bypass"}}),
        json!({"version": 1, "op": "policy.delete", "id": 999}),
        json!({"version": 1, "op": "policy.replace", "rules": [{"action": "bypass"}, {"match": {"vlan": 9999}, "action": "drop"}]}),
        json!({"version": 2, "op": "stats"}),
    ] {
        let r = d.call(bad.clone());
        assert_eq!(r["ok"], false, "{bad} -> {r}");
    }
    assert_eq!(
        d.ok(json!({"version": 1, "op": "policy.list"}))["rules"],
        before["rules"]
    );
    let check = d.ok(json!({"version": 1, "op": "policy.check", "rules": [{"action": "bypass"}]}));
    assert_eq!(check["rules"], 1);
    assert_eq!(
        d.ok(json!({"version": 1, "op": "policy.list"}))["rules"],
        before["rules"],
        "check applies nothing"
    );
    let stats = d.ok(json!({"version": 1, "op": "stats"}));
    assert_eq!(stats["flows_split_across_workers"], 0);
    let names: Vec<&str> = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["r10000", "r22", "r443"],
        "stats carry the rules and their hits"
    );
    let flows = d.ok(json!({"version": 1, "op": "flows.list"}));
    assert_eq!(flows["total"], 0);
    let cleared = d.ok(json!({"version": 1, "op": "flows.clear", "filter": {"port": 10000}}));
    assert_eq!(cleared["cleared"], 0);
    let bad_page = d.call(json!({"version": 1, "op": "flows.list", "page_size": 0}));
    assert_eq!(bad_page["error"]["code"], "invalid", "{bad_page}");

    let log = d.stop();
    assert!(
        log.contains("rule 1 added"),
        "policy changes are logged:\n{log}"
    );

    // The policy comes back after a restart, ids and order intact.
    let d = Daemon::start(&dir, "second");
    let after = d.ok(json!({"version": 1, "op": "policy.list"}));
    assert_eq!(
        after["rules"].as_array().unwrap(),
        &before["rules"]
            .clone()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["hits"] = json!({"flows": 0, "packets": 0, "bytes": 0});
                r
            })
            .collect::<Vec<_>>()
    );
    // Replace is all or nothing, and persists.
    d.ok(json!({"version": 1, "op": "policy.replace", "rules": [rule(10000, "bypass", "ctcp")]}));
    assert_eq!(
        d.ok(json!({"version": 1, "op": "policy.list"}))["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // kill -9 right after a confirmed change loses nothing: the change was on disk (fsync,
    // rename) before the daemon confirmed it.
    d.ok(json!({"version": 1, "op": "policy.add", "rule": rule(22, "bypass", "ssh")}));
    drop(d);
    let d = Daemon::start(&dir, "after-kill-9");
    let names: Vec<String> = d.ok(json!({"version": 1, "op": "policy.list"}))["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ctcp", "ssh"], "the policy after kill -9");
    d.stop();

    // A corrupt state file stops start-up with a clear line, untouched.
    let state = dir.join("policy.json");
    std::fs::write(&state, "{\"format\": 1, \"policy\": {\"rules\": [").unwrap();
    let out = tollgate()
        .arg("--check")
        .arg("--state-file")
        .arg(&state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("policy.json"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"format\": 1, \"policy\": {\"rules\": ["
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rule's connection limits through the real daemon: validated, listed with their
/// counters, explained, in the stats, and restored after a restart.
#[test]
fn connection_limits_are_listed_explained_counted_and_persist_across_a_restart() {
    let dir = scratch("limits");
    let d = Daemon::start(&dir, "limits-first");
    let limited = json!({"match": {"proto": "tcp", "dst_port": 443}, "action": "proxy",
        "conn_max": 3, "embryonic_max": 2, "per_client_max": 1, "on_limit": "bypass", "name": "web"});
    let id = d.ok(json!({"version": 1, "op": "policy.add", "rule": limited}))["id"].clone();
    d.ok(json!({"version": 1, "op": "policy.add", "rule": rule(80, "proxy", "plain")}));
    let bad = d.call(
        json!({"version": 1, "op": "policy.add", "rule": {"action": "bypass", "conn_max": 3}}),
    );
    assert_eq!(bad["error"]["code"], "invalid", "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("conn_max: connection limits count the connections a rule proxies"),
        "{bad}"
    );

    let zero = json!({"connections": 0, "embryonic": 0, "conn_max_hits": 0, "embryonic_max_hits": 0,
        "per_client_max_hits": 0, "limit_reset": 0, "limit_bypassed": 0});
    let list = d.ok(json!({"version": 1, "op": "policy.list"}));
    let rules = list["rules"].as_array().unwrap();
    assert_eq!(rules[0]["id"], id);
    for (field, value) in [
        ("conn_max", json!(3)),
        ("embryonic_max", json!(2)),
        ("per_client_max", json!(1)),
        ("on_limit", json!("bypass")),
    ] {
        assert_eq!(rules[0][field], value, "{field}: {list}");
    }
    assert_eq!(rules[0]["limit_counters"], zero, "{list}");
    assert!(rules[1].get("limit_counters").is_none(), "{list}");

    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "tcp", "src": "198.18.0.1:40000", "dst": "198.18.0.2:443"}));
    assert_eq!(e["action"], "proxy", "{e}");
    assert_eq!(
        e["limits"],
        json!([
            {"limit": "conn-max", "max": 3, "current": 0, "reached": false},
            {"limit": "embryonic-max", "max": 2, "current": 0, "reached": false},
            {"limit": "per-client-max", "max": 1, "current": 0, "reached": false}
        ]),
        "{e}"
    );
    assert_eq!(e["explanation"], "rule 1 (web) matches: proxy", "{e}");
    let e = d.ok(json!({"version": 1, "op": "explain", "proto": "tcp", "src": "198.18.0.1:40000", "dst": "198.18.0.2:80"}));
    assert!(e.get("limits").is_none(), "{e}");

    let stats = d.ok(json!({"version": 1, "op": "stats"}));
    assert_eq!(stats["rules"][0]["limits"], zero, "{stats}");
    assert!(stats["rules"][1].get("limits").is_none(), "{stats}");
    d.stop();

    // Saved with the policy: back after a restart.
    let state = std::fs::read_to_string(dir.join("policy.json")).unwrap();
    assert!(state.contains("\"per_client_max\": 1"), "{state}");
    let d = Daemon::start(&dir, "limits-second");
    let after = d.ok(json!({"version": 1, "op": "policy.list"}));
    assert_eq!(after["rules"], list["rules"]);
    d.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--prometheus-listen`, the counters (ports, workers, rules, the proxy) are served at
/// /metrics in Prometheus' text format, refreshed every stats interval; DPDK's telemetry socket
/// answers `/tollgate/...` commands from the same snapshot.
#[test]
fn the_counters_are_served_to_prometheus_and_dpdk_telemetry() {
    let dir = scratch("prometheus");
    let d = Daemon::start_with(
        &dir,
        "prom",
        &[
            "--prometheus-listen",
            "127.0.0.1:0",
            "--stats-interval",
            "1",
        ],
    );
    d.ok(json!({"version": 1, "op": "policy.add", "rule": rule(10000, "bypass", "ctcp")}));
    let log = std::fs::read_to_string(&d.log).unwrap();
    let url = log
        .lines()
        .find_map(|l| l.strip_prefix("tollgate: Prometheus counters at http://"))
        .unwrap_or_else(|| panic!("no endpoint in the log:\n{log}"));
    let addr = url.strip_suffix("/metrics").unwrap().to_string();
    let scrape = || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    // The rule shows up once the next refresh (1 s) has run.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let out = scrape();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        if out.contains("tollgate_rule_flows_total{rule=\"1\",name=\"ctcp\",action=\"bypass\"} 0") {
            break out;
        }
        assert!(Instant::now() < deadline, "the rule never appeared:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for expected in [
        "# TYPE tollgate_port_ipackets_total counter",
        "tollgate_port_ipackets_total{port=\"inside\"} 0",
        "tollgate_worker_flow_capacity{worker=\"0\",core=\"0\"} 1024",
        "tollgate_proxy_connections_active 0",
        "tollgate_drops_total{reason=\"tx_full\"} 0",
    ] {
        assert!(body.contains(expected), "{expected:?} missing:\n{body}");
    }

    // The same counters on DPDK's telemetry socket, as dpdk-telemetry.py asks for them.
    let telemetry = format!(
        "/var/run/dpdk/tg-dctl-{}-prom/dpdk_telemetry.v2",
        std::process::id()
    );
    let ask = |command: &str| -> Value {
        use nix::sys::socket::{
            connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &UnixAddr::new(telemetry.as_str()).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{telemetry}: {e}"));
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(raw, &mut buf, MsgFlags::empty()).unwrap();
        let greeting: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert!(
            greeting["version"]
                .as_str()
                .unwrap()
                .starts_with("DPDK 22.11"),
            "{greeting}"
        );
        send(raw, command.as_bytes(), MsgFlags::empty()).unwrap();
        let n = recv(raw, &mut buf, MsgFlags::empty()).unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    };
    let stats = ask("/tollgate/stats");
    assert_eq!(stats["/tollgate/stats"]["flow_capacity"], 1024, "{stats}");
    assert_eq!(stats["/tollgate/stats"]["inside/ipackets"], 0, "{stats}");
    let rules = ask("/tollgate/rules");
    assert_eq!(rules["/tollgate/rules"]["1/flows"], 0, "{rules}");
    let drops = ask("/tollgate/drops");
    assert_eq!(drops["/tollgate/drops"]["tx_full"], 0, "{drops}");
    let proxy = ask("/tollgate/proxy");
    assert_eq!(proxy["/tollgate/proxy"]["detected_ctcp_ike"], 0, "{proxy}");
    d.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port's counters outlast its peer. memif reads zero once the process at the far end of its
/// links disconnects (Pktgen quitting at the end of a lab run); what the ports received before
/// is still what `stats` and the final counters report.
#[test]
fn port_counters_outlast_a_memif_peer_that_leaves() {
    let dir = scratch("memif");
    let link = |n: usize, role: &str| {
        let socket = dir.join(format!("link{n}.sock"));
        format!(
            "net_memif{n},role={role},id=0,socket={},socket-abstract=no",
            socket.display()
        )
    };
    let (inside, outside) = (link(0, "server"), link(1, "server"));
    let d = Daemon::start_on(&dir, "memif", [inside.as_str(), outside.as_str()], &[]);
    let inside_port = |stats: &Value| stats["ports"]["inside"].clone();

    // The peer: DPDK's testpmd as the memif client of both links, sending until interrupted.
    let log = std::fs::File::create(dir.join("testpmd.log")).unwrap();
    let mut peer = Command::new("dpdk-testpmd")
        .args(["-l", "0,1", "--no-huge", "-m", "512", "--no-pci"])
        .arg("--file-prefix")
        .arg(format!("tg-dctl-{}-peer", std::process::id()))
        .args(["--vdev", &link(0, "client"), "--vdev", &link(1, "client")])
        .args(["--", "--forward-mode=txonly", "--nb-cores=1"])
        .args(["--total-num-mbufs=8192", "--stats-period", "1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("dpdk-testpmd (Debian's dpdk package; scripts/setup installs it)");
    let peer_log = || std::fs::read_to_string(dir.join("testpmd.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let port = inside_port(&d.ok(json!({"version": 1, "op": "stats"})));
        if port["ipackets"].as_u64().unwrap() >= 10_000 {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "no frames from the peer: {port}\n{}",
            peer_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    if signal_and_wait(&mut peer, Signal::SIGINT).is_none() {
        let _ = peer.kill();
        let _ = peer.wait();
        panic!("testpmd did not stop on SIGINT:\n{}", peer_log());
    }
    // Its sockets closed when it exited; tollgate's interrupt thread takes the links down,
    // after which memif itself reads zero: the counters are read once health says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = d.ok(json!({"version": 1, "op": "health"}));
        let links = health["links_up"].as_array().unwrap();
        if links.iter().all(|link| link[1] == false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the memif links are still up 20 s after the peer left: {health}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The driver unmapped the links' rings on its interrupt thread, and only once the
    // worker was between bursts: without that wait it could fault mid-copy.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .contains("unmapped port memory after the workers left their bursts")
    {
        assert!(
            Instant::now() < deadline,
            "the rings were not unmapped through tollgate's wait for its workers:\n{}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let after = inside_port(&d.ok(json!({"version": 1, "op": "stats"})));
    for counter in ["ipackets", "ibytes"] {
        assert!(
            after[counter].as_u64() >= received[counter].as_u64(),
            "{counter} fell after the peer left: {received} then {after}"
        );
    }
    let log = d.stop();
    let final_inside = log
        .lines()
        .find_map(|l| l.strip_prefix("inside "))
        .unwrap_or_else(|| panic!("no final inside counters:\n{log}"));
    let ipackets: u64 = final_inside
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ipackets >= received["ipackets"].as_u64().unwrap(),
        "final counters: {final_inside}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
