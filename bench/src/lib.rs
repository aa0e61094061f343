//! Shared bits of the echo benchmark binaries: argument parsing and socket setup.
//!
//! The servers (`echo-wsx`, `echo-tungstenite`, `echo-fastws`) differ only in the WebSocket
//! library; each uses the same multi-thread tokio runtime, binds 127.0.0.1, and sets
//! `TCP_NODELAY` on every accepted socket. See `bench/README.md`.
//!
//! The load generators (`loadgen`, `fanout`) share the rest: an epoll wrapper and the CPU and
//! memory readings from `/proc`.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// The value of `--name VALUE` (or `--name=VALUE`) in the process arguments, if present.
pub fn arg(name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == flag {
            return args.next();
        }
        if let Some(v) = a.strip_prefix(&flag).and_then(|rest| rest.strip_prefix('=')) {
            return Some(v.to_owned());
        }
    }
    None
}

/// `--name` parsed as `T`, or `default` when absent; exits with a message when malformed.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match arg(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("invalid value for --{name}: {v:?}");
            std::process::exit(2)
        }),
    }
}

/// The address a server listens on: 127.0.0.1 and `--port` (default 9001).
pub fn listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], arg_or("port", 9001u16)))
}

/// A process's resident set size in KiB (`VmRSS` in `/proc/PID/status`).
pub fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many file descriptors a process has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU clocks at one instant.
#[derive(Default)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Option<Instant>,
    /// This process's CPU time.
    pub self_cpu: Duration,
    /// The server's CPU time, given its process id.
    pub server_cpu: Option<Duration>,
    /// Machine-wide task time (user + nice + system) and softirq time, all CPUs.
    pub machine: Option<(Duration, Duration)>,
    /// Time this process's threads, and the server's, spent runnable but waiting for a CPU.
    pub self_wait: Option<Duration>,
    /// See `self_wait`.
    pub server_wait: Option<Duration>,
}

impl Snapshot {
    /// The clocks now (`at`), with the server's if `server_pid` is given.
    pub fn take(at: Instant, server_pid: Option<u32>) -> Self {
        Self {
            at: Some(at),
            self_cpu: self_cpu(),
            server_cpu: server_pid.and_then(process_cpu),
            machine: machine_cpu(),
            self_wait: run_queue_wait(std::process::id()),
            server_wait: server_pid.and_then(run_queue_wait),
        }
    }
}

/// Clock ticks (USER_HZ) as a duration.
pub fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(n * 1_000_000_000 / hz.max(1))
}

/// Task time (user + nice + system) and softirq time summed over all CPUs, from `/proc/stat`.
/// Task time minus the server's and our own is what other processes used: a measure of how
/// disturbed the run was.
pub fn machine_cpu() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // Fields: user nice system idle iowait irq softirq steal guest guest_nice (proc(5)).
    Some((ticks(v.first()? + v.get(1)? + v.get(2)?), ticks(*v.get(6)?)))
}

/// This process's user + system CPU time (getrusage).
pub fn self_cpu() -> Duration {
    // SAFETY: `rusage` is plain old data, so all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call's duration.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// How long a process's threads have waited on a run queue, runnable but not running, summed
/// over its threads (the second field of `/proc/PID/task/TID/schedstat`). On a machine shared
/// with other work this is the wall-clock time a closed loop loses to it.
pub fn run_queue_wait(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A process's user + system CPU time over all its threads, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14 and stime 15 (proc(5)).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ticks(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
}

/// A minimal epoll wrapper: level-triggered, a `u64` token per file descriptor.
pub struct Epoll {
    fd: i32,
}

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(Self { fd }) }
    }

    fn ctl(&self, op: i32, fd: i32, token: u64, out: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if out {
            flags |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event { events: flags as u32, u64: token };
        // SAFETY: `ev` is a valid event for the call's duration; the kernel validates the fds.
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watch `fd` for reading under `token`.
    pub fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, false)
    }

    /// Watch `fd` for reading, and for writing if `out`.
    pub fn modify(&self, fd: i32, token: u64, out: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, out)
    }

    /// Stop watching `fd`.
    pub fn delete(&self, fd: i32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, false)
    }

    /// Wait up to `timeout_ms` for events; returns how many of `events` were filled.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is valid for writes of `max` entries for the call's duration.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: `fd` is an epoll descriptor this value owns and closes once.
        unsafe { libc::close(self.fd) };
    }
}

/// The fastwebsockets echo of `echo-fastws` and `echo-axum-fastws`: once the upgrade completes,
/// echo each text or binary frame through a `FragmentCollector` (auto-close and auto-pong on)
/// until the peer closes.
pub async fn fastws_echo(fut: fastwebsockets::upgrade::UpgradeFut) -> Result<(), fastwebsockets::WebSocketError> {
    use fastwebsockets::OpCode;
    let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}
