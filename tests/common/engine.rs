//! The engine under test as a child process running inside a test namespace.

use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::netns::Netns;
use super::process::{ChildProcess, Stream};
use super::{STEP_TIMEOUT, TempDir};

/// Path of the binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_uringgost");

/// The line the engine logs once every listener is up.
pub const SERVING: &str = "uringgost is serving";

/// What the engine logs when a reload ends, whichever way.
pub const RELOAD_ENDINGS: [&str; 2] = ["configuration reloaded", "reload failed"];

const CONFIG_FILE: &str = "uringgost.toml";

/// `uringgost --config FILE ARGS...` running in a namespace; killed on drop.
pub struct Engine {
    process: ChildProcess,
    config_dir: TempDir,
}

impl Engine {
    /// Starts the engine in `netns` with `config` and waits until it logs [`SERVING`].
    pub fn start(netns: &Netns, config: &str, args: &[&str]) -> Engine {
        let engine = Engine::spawn(netns, config, args);
        engine.process.wait_for_line(SERVING, STEP_TIMEOUT);
        engine
    }

    /// Starts the engine in `netns` without waiting for anything.
    pub fn spawn(netns: &Netns, config: &str, args: &[&str]) -> Engine {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns.name(), BIN]);
        Engine::launch(command, config, args)
    }

    /// Starts the engine in the test process's own namespace, for tests that stay on
    /// loopback and need no root, and waits until it logs [`SERVING`].
    pub fn start_here(config: &str, args: &[&str]) -> Engine {
        let engine = Engine::launch(Command::new(BIN), config, args);
        engine.process.wait_for_line(SERVING, STEP_TIMEOUT);
        engine
    }

    /// Runs `command` (the engine, or what execs it) with a config file holding `config`.
    fn launch(mut command: Command, config: &str, args: &[&str]) -> Engine {
        let config_dir = TempDir::new();
        let config_file = config_dir.write(CONFIG_FILE, config);
        command.arg("--config").arg(&config_file).args(args);
        command.env("NO_COLOR", "1");
        let process = ChildProcess::spawn("uringgost", command);
        Engine {
            process,
            config_dir,
        }
    }

    /// Replaces the engine's configuration file with `config` and sends it SIGHUP; returns
    /// how many reloads had ended (well or not) before, for [`Engine::wait_reloaded`].
    pub fn reload(&self, config: &str) -> usize {
        let ended = self.reloads_ended();
        self.config_dir.write(CONFIG_FILE, config);
        // SAFETY: kill(2) with a pid this test started and still holds.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(
            sent,
            0,
            "sending SIGHUP: {}",
            std::io::Error::last_os_error()
        );
        ended
    }

    /// Waits until the reload after `before` ended reloads has ended; returns its last line.
    pub fn wait_reloaded(&self, before: usize) -> String {
        let deadline = super::Deadline::after(STEP_TIMEOUT);
        loop {
            let lines = self.reload_endings();
            if lines.len() > before {
                return lines[before].clone();
            }
            let remaining = deadline
                .remaining()
                .unwrap_or_else(|| panic!("the engine did not finish reload {}", before + 1));
            std::thread::sleep(remaining.min(Duration::from_millis(20)));
        }
    }

    fn reloads_ended(&self) -> usize {
        self.reload_endings().len()
    }

    /// The lines that end a reload: success or failure.
    fn reload_endings(&self) -> Vec<String> {
        let stderr = self.process.text(Stream::Stderr);
        stderr
            .lines()
            .filter(|line| RELOAD_ENDINGS.iter().any(|ending| line.contains(ending)))
            .map(str::to_owned)
            .collect()
    }

    /// The engine's process id (`ip netns exec` replaces itself with the engine).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The captured output, to wait on and to read logs from.
    pub fn process(&self) -> &ChildProcess {
        &self.process
    }

    /// Waits for the engine to exit by itself and returns its status and stderr.
    pub fn wait_exit(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.process.wait_exit(timeout);
        (status, self.process.text(Stream::Stderr))
    }
}

/// Result of `uringgost check --config FILE`.
pub struct Checked {
    /// The exit status.
    pub status: ExitStatus,
    /// The compiled routes, when the config is valid.
    pub stdout: String,
    /// The error, when it is not.
    pub stderr: String,
}

/// Runs `uringgost check` on `config`. It opens no socket, so it needs no namespace or root.
pub fn check(config: &str) -> Checked {
    let dir = TempDir::new();
    let config_file = dir.write("uringgost.toml", config);
    check_file(&config_file)
}

/// Runs `uringgost check` on a config file that already exists.
pub fn check_file(config_file: &std::path::Path) -> Checked {
    let mut command = Command::new(BIN);
    command
        .arg("check")
        .arg("--config")
        .arg(config_file)
        .env("NO_COLOR", "1");
    let mut process = ChildProcess::spawn("uringgost check", command);
    let status = process.wait_exit(STEP_TIMEOUT);
    Checked {
        status,
        stdout: process.text(Stream::Stdout),
        stderr: process.text(Stream::Stderr),
    }
}
