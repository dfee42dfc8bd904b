//! The counters for other tools: the optional Prometheus endpoint (`stats.prometheus_listen`:
//! `GET /metrics` answers in Prometheus' text format) and commands on DPDK's telemetry socket.
//!
//! The main thread renders the counters at each stats interval and hands the text over; a
//! thread of its own answers scrapes from that copy, one connection at a time, each bounded in
//! time and size. A scraper, slow or hostile, can therefore never hold up the control plane or
//! the workers, and a scrape never costs the workers anything.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dpdk::{register_telemetry as register_telemetry_command, TelemetryValue};
use tollgate_control::StatsSnapshot;

/// The longest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

pub struct MetricsEndpoint {
    addr: SocketAddr,
    latest: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `addr`; the daemon calls it before touching DPDK, so a taken port stops start-up
    /// early with a clear message.
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsEndpoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let latest = Arc::new(Mutex::new(String::from(
            "# tollgate is starting: no counters yet\n",
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (latest, stop) = (latest.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tollgate-metrics".into())
                .spawn(move || serve(listener, &latest, &stop))?
        };
        Ok(MetricsEndpoint {
            addr,
            latest,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (the port the system chose, if the configured one was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The text the next scrapes get.
    pub fn publish(&self, text: String) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = text;
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, latest: &Mutex<String>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A failed exchange is the client's problem: it gets what could be sent.
                let _ = answer(stream, latest);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("stats.prometheus_listen: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    Bad,
}

fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Request::Metrics,
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    }
}

fn answer(mut stream: TcpStream, latest: &Mutex<String>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head_only = head.starts_with(b"HEAD ");
    let (status, kind, body) = match parse_request(&head) {
        Request::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            latest.lock().map(|t| t.clone()).unwrap_or_default(),
        ),
        Request::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "tollgate serves its counters at /metrics\n".to_string(),
        ),
        Request::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_string(),
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "not an HTTP/1.x request\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The counters on DPDK's telemetry socket, from the snapshot the main thread refreshes every
/// stats interval: `/tollgate/stats` (totals, ports, flows, mempool), `/tollgate/drops`,
/// `/tollgate/malformed`, `/tollgate/proxy`, `/tollgate/reassembly` and `/tollgate/rules`. `dpdk-telemetry.py -f
/// <file-prefix>` reads them as it reads DPDK's own `/ethdev/stats`.
pub fn register_telemetry(latest: Arc<Mutex<StatsSnapshot>>) -> dpdk::Result<()> {
    type Section = fn(&StatsSnapshot) -> Vec<(String, TelemetryValue)>;
    let sections: [(&str, &str, Section); 6] = [
        (
            "/tollgate/stats",
            "Returns tollgate's totals, ports, flows and mempool. Takes no parameters",
            telemetry_stats,
        ),
        (
            "/tollgate/drops",
            "Returns the frames tollgate dropped, by reason. Takes no parameters",
            |s| counts(&s.drops),
        ),
        (
            "/tollgate/malformed",
            "Returns the frames that failed parsing, by reason. Takes no parameters",
            |s| counts(&s.malformed),
        ),
        (
            "/tollgate/proxy",
            "Returns the TCP proxy's counters. Takes no parameters",
            |s| numbers("", &s.proxy),
        ),
        (
            "/tollgate/reassembly",
            "Returns the IP reassembly's counters. Takes no parameters",
            |s| numbers("", &s.reassembly),
        ),
        (
            "/tollgate/rules",
            "Returns each policy rule's flows, packets and bytes as <id>/<counter>. Takes no parameters",
            |s| {
                s.rules
                    .iter()
                    .flat_map(|r| {
                        [("flows", r.flows), ("packets", r.packets), ("bytes", r.bytes)]
                            .map(|(what, n)| (format!("{}/{what}", r.id), TelemetryValue::U64(n)))
                    })
                    .collect()
            },
        ),
    ];
    for (command, help, section) in sections {
        let latest = latest.clone();
        register_telemetry_command(command, help, move |_params| {
            latest.lock().ok().map(|s| section(&s))
        })?;
    }
    Ok(())
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> Vec<(String, TelemetryValue)> {
    map.iter()
        .map(|(k, v)| (k.clone(), TelemetryValue::U64(*v)))
        .collect()
}

/// The numeric fields of `group`, serialized, as `<prefix><field>`.
fn numbers(prefix: &str, group: &impl serde::Serialize) -> Vec<(String, TelemetryValue)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(group) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(k, v)| Some((format!("{prefix}{k}"), TelemetryValue::U64(v.as_u64()?))))
        .collect()
}

fn telemetry_stats(s: &StatsSnapshot) -> Vec<(String, TelemetryValue)> {
    let mut out = vec![
        (
            "version".to_string(),
            TelemetryValue::Str(s.version.clone()),
        ),
        (
            "steering".to_string(),
            TelemetryValue::Str(s.steering.clone()),
        ),
        (
            "uptime_secs".to_string(),
            TelemetryValue::U64(s.uptime_secs),
        ),
        (
            "flows_split_across_workers".to_string(),
            TelemetryValue::U64(s.flows_split_across_workers),
        ),
    ];
    out.extend(numbers("", &s.totals));
    out.extend(numbers("mempool/", &s.mempool));
    for (port, counters) in &s.ports {
        out.extend(numbers(&format!("{port}/"), counters));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn telemetry_sections_are_flat_dictionaries_within_dpdk_limits() {
        let mut s = StatsSnapshot {
            version: "0.1.0".into(),
            ..Default::default()
        };
        s.ports.insert("inside".into(), Default::default());
        s.drops.insert("tx_full".into(), 2);
        s.proxy.detected_rfc8229 = 3;
        let stats = telemetry_stats(&s);
        assert!(stats.contains(&("inside/ipackets".into(), TelemetryValue::U64(0))));
        assert!(stats.contains(&("version".into(), TelemetryValue::Str("0.1.0".into()))));
        assert!(stats.contains(&("mempool/in_use".into(), TelemetryValue::U64(0))));
        assert_eq!(
            counts(&s.drops),
            [("tx_full".into(), TelemetryValue::U64(2))]
        );
        let proxy = numbers("", &s.proxy);
        assert!(proxy.contains(&("detected_rfc8229".into(), TelemetryValue::U64(3))));
        // DPDK takes at most 256 entries a dictionary, names of [A-Za-z0-9_/].
        for section in [stats, proxy] {
            assert!(section.len() <= 256);
            for (name, _) in section {
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/'),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn requests_are_read_as_http() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"GET /metrics\r\n\r\n",
            b"GET / SPDY/3\r\n",
        ] {
            assert_eq!(parse_request(bad), Request::Bad, "{bad:?}");
        }
    }

    #[test]
    fn scrapes_get_the_latest_published_text() {
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.addr();
        let first = get(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(first.contains("text/plain; version=0.0.4"), "{first}");
        assert!(first.ends_with("no counters yet\n"), "{first}");
        endpoint.publish("tollgate_uptime_seconds 7\n".into());
        let now = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            now.ends_with("\r\n\r\ntollgate_uptime_seconds 7\n")
                && now.contains("Content-Length: 26\r\n"),
            "{now}"
        );
        assert!(get(addr, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get(addr, "DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(get(addr, "hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        // A client that connects and says nothing is dropped after the timeout, and the
        // endpoint answers the next one.
        let _silent = TcpStream::connect(addr).unwrap();
        let after = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(after.ends_with("tollgate_uptime_seconds 7\n"), "{after}");
        // A taken port is an error at bind.
        assert!(MetricsEndpoint::bind(addr).is_err());
        drop(endpoint);
    }
}
