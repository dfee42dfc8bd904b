//! `conn-rate`: short TCP connections per second, one request and one
//! response each (1 KiB / 1 KiB by default), a new connection every time.
//! `scripts/bench proxy` runs the server in the lab's tg-server namespace
//! and the client in tg-client, through tollgate proxied and bypassed.
//!
//! Each client thread loops until the deadline: connect, send the request,
//! read the whole response, read until the server's FIN, close. The server
//! closes first (as HTTP/1.0 does), so TIME-WAIT stays on the server's side
//! and the client's ephemeral ports come free at once. The server listens on
//! a range of ports and the clients spread over them, so even at tens of
//! thousands of connections a client port is rarely reused towards the same
//! server port within a run.
//!
//! The client prints one line on stdout:
//! `conn-rate conns=N errors=E seconds=S conn_per_s=R p50_us=A p99_us=B max_us=C`
//! and the first few errors on stderr. Everything is bounded in time: the
//! client by `--seconds` (plus one connect/IO timeout), the server by
//! `--max-seconds`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Parser, Subcommand};

/// Short TCP connections per second: a request and a response on a new
/// connection each time, from several client threads at once.
#[derive(Parser, Debug)]
#[command(name = "conn-rate", about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Accept connections on every port of --ports: read the request, send
    /// the response, close.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        listen: IpAddr,
        /// Ports, as FIRST-LAST or one port.
        #[arg(long, default_value = "9200-9203", value_parser = parse_ports)]
        ports: (u16, u16),
        /// Accepting threads per port.
        #[arg(long, default_value_t = 16)]
        threads: usize,
        /// Request and response size, bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Exit after this many seconds whatever happens.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Open connections for --seconds from --clients threads; print the rate.
    Client {
        /// The server's address.
        #[arg(long)]
        server: IpAddr,
        /// The server's ports, as FIRST-LAST or one port.
        #[arg(long, default_value = "9200-9203", value_parser = parse_ports)]
        ports: (u16, u16),
        /// Parallel client threads, each with one connection at a time.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long to open connections, seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Request and response size, bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Connect and read/write timeout, milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().map_err(|e| format!("port '{a}': {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("port '{b}': {e}"))?;
    if a == 0 || b < a || b - a >= 64 {
        return Err(format!(
            "'{s}': give FIRST-LAST with 0 < FIRST <= LAST < FIRST+64"
        ));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.role {
        Role::Server {
            listen,
            ports,
            threads,
            size,
            max_seconds,
        } => server(listen, ports, threads, size, max_seconds),
        Role::Client {
            server,
            ports,
            clients,
            seconds,
            size,
            timeout_ms,
        } => client(
            server,
            ports,
            clients,
            seconds,
            size,
            Duration::from_millis(timeout_ms),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conn-rate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn server(
    listen: IpAddr,
    ports: (u16, u16),
    threads: usize,
    size: usize,
    max_seconds: u64,
) -> anyhow::Result<()> {
    ensure!((1..=256).contains(&threads), "--threads: 1 to 256");
    ensure!((1..=1 << 20).contains(&size), "--size: 1 to 1048576 bytes");
    let mut handles = Vec::new();
    for port in ports.0..=ports.1 {
        let l = TcpListener::bind(SocketAddr::new(listen, port))
            .with_context(|| format!("listen on port {port}"))?;
        let l = Arc::new(l);
        for _ in 0..threads {
            let l = Arc::clone(&l);
            handles.push(thread::spawn(move || {
                let mut buf = vec![0u8; size];
                let resp = vec![b'r'; size];
                loop {
                    if let Ok((s, _)) = l.accept() {
                        // A failed exchange is the client's to count.
                        let _ = serve(s, &mut buf, &resp);
                    }
                }
            }));
        }
    }
    eprintln!(
        "conn-rate server: listening on {listen} ports {}-{}",
        ports.0, ports.1
    );
    thread::sleep(Duration::from_secs(max_seconds));
    eprintln!("conn-rate server: --max-seconds {max_seconds} reached, exiting");
    Ok(())
}

fn serve(mut s: TcpStream, buf: &mut [u8], resp: &[u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    s.read_exact(buf)?;
    s.write_all(resp)?;
    // Dropping the stream closes it: the server's FIN goes first.
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_errors: Vec<String>,
    latencies_us: Vec<u32>,
}

fn client(
    server: IpAddr,
    ports: (u16, u16),
    clients: usize,
    seconds: f64,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    ensure!((1..=1024).contains(&clients), "--clients: 1 to 1024");
    ensure!(
        seconds > 0.0 && seconds <= 600.0,
        "--seconds: more than 0, at most 600"
    );
    ensure!((1..=1 << 20).contains(&size), "--size: 1 to 1048576 bytes");
    let nports = usize::from(ports.1 - ports.0) + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut t = Tally::default();
                let req = vec![b'q'; size];
                let mut buf = vec![0u8; size];
                let mut n = i;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let port = ports.0 + (n % nports) as u16;
                    n += 1;
                    let t0 = Instant::now();
                    match exchange(SocketAddr::new(server, port), &req, &mut buf, timeout) {
                        Ok(()) => {
                            t.ok += 1;
                            t.latencies_us
                                .push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        Err(e) => {
                            t.errors += 1;
                            if t.first_errors.len() < 3 {
                                t.first_errors.push(format!("port {port}: {e:#}"));
                            }
                            // Do not spin on an error that repeats at once (no route, no port).
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = match h.join() {
            Ok(t) => t,
            Err(_) => bail!("a client thread panicked"),
        };
        all.ok += t.ok;
        all.errors += t.errors;
        all.first_errors.extend(t.first_errors);
        all.latencies_us.extend(t.latencies_us);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.latencies_us.is_empty() {
            return 0;
        }
        let i = ((all.latencies_us.len() - 1) as f64 * p).round() as usize;
        all.latencies_us[i]
    };
    for e in all.first_errors.iter().take(5) {
        eprintln!("conn-rate client: error: {e}");
    }
    println!(
        "conn-rate conns={} errors={} seconds={:.2} conn_per_s={:.0} p50_us={} p99_us={} max_us={}",
        all.ok,
        all.errors,
        elapsed,
        all.ok as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        all.latencies_us.last().copied().unwrap_or(0)
    );
    Ok(())
}

fn exchange(addr: SocketAddr, req: &[u8], buf: &mut [u8], timeout: Duration) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(req).context("send request")?;
    s.read_exact(buf).context("read response")?;
    let mut one = [0u8; 1];
    match s.read(&mut one).context("read to the server's FIN")? {
        0 => {}
        _ => bail!("more response than --size"),
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}
