//! A forwarder process the harness started: own process group, pinned CPUs, raised fd limit,
//! optional network namespace; stopped (the whole group) when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::LaunchSpec;
use crate::cleanup;
use crate::system::set_nofile_limit;
use crate::topology::{Endpoint, open_netns};

/// How to start one daemon.
pub struct DaemonCommand {
    /// Program to exec.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Network namespace the process starts in, if not the harness's own.
    pub netns: Option<String>,
    /// A stderr line fragment that means "ready"; without one, readiness is a connect probe.
    pub ready_line: Option<&'static str>,
}

/// How the harness tells that a started forwarder is ready for load.
#[derive(Debug, Clone)]
pub enum Probe {
    /// A TCP connection is accepted (and closed at once).
    Connect(Endpoint),
    /// A datagram sent through the forwarder comes back from the sink's echo: proof that the
    /// forwarder relays replies, not only requests.
    UdpEcho(Endpoint),
}

impl Probe {
    fn attempt(&self) -> Result<()> {
        match self {
            Probe::Connect(endpoint) => probe_connect(endpoint),
            Probe::UdpEcho(endpoint) => {
                endpoint.check_allowed()?;
                crate::sink::udp_echo(endpoint.addr, Duration::from_millis(200))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Probe::Connect(endpoint) => format!("a connection to {}", endpoint.addr),
            Probe::UdpEcho(endpoint) => format!("a UDP echo through {}", endpoint.addr),
        }
    }
}

/// A running daemon; dropping it kills its process group.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    ready_seen: Arc<AtomicBool>,
    name: String,
}

impl Daemon {
    /// Starts `command` in its own process group, pinned to the spec's CPUs and with its fd
    /// limit, logging to `log`.
    pub fn spawn(
        name: &str,
        command: &DaemonCommand,
        spec: &LaunchSpec<'_>,
        log: &Path,
    ) -> Result<Daemon> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let netns = command.netns.as_deref().map(open_netns).transpose()?;
        let mut process = Command::new(&command.program);
        process
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(if command.ready_line.is_some() {
                Stdio::piped()
            } else {
                log_file.into()
            });
        let cpus = spec.cpus.clone();
        let nofile_limit = spec.nofile_limit;
        // SAFETY: the closure runs between fork and exec and only makes system calls
        // (setpgid, sched_setaffinity, setrlimit, sigprocmask, setns); it allocates nothing.
        unsafe {
            process.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                cpus.pin_current()?;
                set_nofile_limit(nofile_limit)?;
                cleanup::unblock_signals_in_child()?;
                if let Some(file) = &netns
                    && libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = process
            .spawn()
            .with_context(|| format!("starting {} ({})", name, command.program.display()))?;
        cleanup::register_process_group(child.id() as i32);

        let ready_seen = Arc::new(AtomicBool::new(false));
        if let (Some(stderr), Some(line)) = (child.stderr.take(), command.ready_line) {
            let mut log_file = File::options().append(true).open(log)?;
            let seen = Arc::clone(&ready_seen);
            std::thread::Builder::new()
                .name(format!("{name} stderr"))
                .spawn(move || {
                    for text in BufReader::new(stderr).lines() {
                        let Ok(text) = text else { break };
                        if text.contains(line) {
                            seen.store(true, Ordering::Relaxed);
                        }
                        let _ = writeln!(log_file, "{text}"); // a lost log line does not matter
                    }
                })?;
        }
        Ok(Daemon {
            child,
            log: log.to_owned(),
            ready_seen,
            name: name.to_owned(),
        })
    }

    /// The process id of the daemon (the root of its process tree).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the daemon says it is ready (if it has a ready line) and `probe` succeeds;
    /// fails with the log's tail when it exits or the timeout passes.
    pub fn wait_ready(
        &mut self,
        command: &DaemonCommand,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up with {status}; log: {}",
                    self.name,
                    self.log_tail()
                );
            }
            let said_ready =
                command.ready_line.is_none() || self.ready_seen.load(Ordering::Relaxed);
            if said_ready && probe.attempt().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waited = match command.ready_line {
                    Some(line) if !said_ready => format!("the line {line:?}"),
                    _ => probe.describe(),
                };
                bail!(
                    "{} not ready after {timeout:?} (waited for {waited}); log: {}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; log: {}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text); // an unreadable log just gives no tail
        }
        let lines: Vec<&str> = text.lines().rev().take(6).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        if tail.is_empty() {
            "(empty)".to_owned()
        } else {
            tail.join(" | ")
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SIGTERM first so that nginx's master takes its workers down; then the whole group
        // (socat's children, anything left) gets SIGKILL.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait(); // reaps the leader; the group's others are reaped by init
        cleanup::unregister_process_group(pgid);
    }
}

/// One connection to `endpoint` from inside its namespace, closed at once.
pub fn probe_connect(endpoint: &Endpoint) -> Result<()> {
    let in_namespace = endpoint.netns.is_some();
    let endpoint = endpoint.clone();
    let attempt = move || -> Result<()> {
        endpoint.enter_netns()?;
        std::net::TcpStream::connect_timeout(&endpoint.addr, Duration::from_millis(500))?;
        Ok(())
    };
    // setns would move the caller's thread for good: a namespace probe gets its own thread.
    if in_namespace {
        std::thread::spawn(attempt)
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    } else {
        attempt()
    }
}
