//! Child processes (the engine, tinyproxy) whose output is collected line by line, killed on
//! drop, and dumped when the test fails.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::Deadline;

/// Which output stream a line came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error, where the engine logs.
    Stderr,
}

/// A running child process whose stdout and stderr are read into memory as they come.
pub struct ChildProcess {
    name: String,
    child: Child,
    output: Arc<Output>,
}

struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutputState {
    lines: Vec<(Stream, String)>,
    open_streams: usize,
}

impl ChildProcess {
    /// Starts `command` with stdin closed and both output streams captured.
    pub fn spawn(name: &str, mut command: Command) -> ChildProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name} ({command:?}): {error}"));
        let output = Arc::new(Output {
            state: Mutex::new(OutputState {
                lines: Vec::new(),
                open_streams: 2,
            }),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        collect(name, Stream::Stdout, stdout, Arc::clone(&output));
        collect(name, Stream::Stderr, stderr, Arc::clone(&output));
        ChildProcess {
            name: name.to_owned(),
            child,
            output,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line containing `needle` appears and returns it; panics if the child
    /// exits first or `timeout` passes (dropping the child then prints all it printed).
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_count(needle, 1, timeout);
        let state = self.state();
        let (_, line) = state
            .lines
            .iter()
            .find(|(_, line)| line.contains(needle))
            .unwrap();
        line.clone()
    }

    /// Waits until at least `count` lines contain `needle`; panics like [`Self::wait_for_line`].
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Deadline::after(timeout);
        let mut state = self.state();
        loop {
            let seen = state
                .lines
                .iter()
                .filter(|(_, line)| line.contains(needle))
                .count();
            if seen >= count {
                return;
            }
            let why = if state.open_streams == 0 {
                "it exited"
            } else if let Some(left) = deadline.remaining() {
                state = self.output.changed.wait_timeout(state, left).unwrap().0;
                continue;
            } else {
                "the time ran out"
            };
            drop(state);
            panic!(
                "{} printed {seen} of {count} lines containing {needle:?} before {why} \
                 (waited up to {timeout:?}); its output follows",
                self.name
            );
        }
    }

    /// Waits for the child to exit (both streams closed) and returns its status; panics with
    /// its output if that takes longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Deadline::after(timeout);
        let mut state = self.state();
        while state.open_streams > 0 {
            let Some(left) = deadline.remaining() else {
                drop(state);
                panic!(
                    "{} still runs after {timeout:?}; its output follows",
                    self.name
                );
            };
            state = self.output.changed.wait_timeout(state, left).unwrap().0;
        }
        drop(state);
        self.child
            .wait()
            .expect("waiting for a child whose output has closed")
    }

    /// Everything printed so far on `stream`, one line per line.
    pub fn text(&self, stream: Stream) -> String {
        let state = self.state();
        let lines = state.lines.iter().filter(|(from, _)| *from == stream);
        lines.map(|(_, line)| format!("{line}\n")).collect()
    }

    /// How many lines printed so far contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.state()
            .lines
            .iter()
            .filter(|(_, line)| line.contains(needle))
            .count()
    }

    /// The lines printed so far, labelled with the stream, for failure messages.
    pub fn dump(&self) -> String {
        let state = self.state();
        let mut text = format!("----- output of {} -----\n", self.name);
        for (stream, line) in &state.lines {
            let label = if *stream == Stream::Stdout {
                "out"
            } else {
                "err"
            };
            text.push_str(&format!("{label}| {line}\n"));
        }
        text.push_str("----- end -----");
        text
    }

    fn state(&self) -> MutexGuard<'_, OutputState> {
        self.output
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Killing a child that has already exited fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

fn collect(name: &str, stream: Stream, source: impl Read + Send + 'static, output: Arc<Output>) {
    let spawned = thread::Builder::new()
        .name(format!("{name} {stream:?}"))
        .spawn(move || {
            let mut reader = BufReader::new(source);
            let mut raw = Vec::new();
            // A read error ends the stream just like EOF does: the child is gone either way.
            while reader.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
                let line = strip_ansi(&String::from_utf8_lossy(&raw));
                let mut state = output.state.lock().unwrap_or_else(|p| p.into_inner());
                state.lines.push((stream, line.trim_end().to_owned()));
                output.changed.notify_all();
                drop(state);
                raw.clear();
            }
            let mut state = output.state.lock().unwrap_or_else(|p| p.into_inner());
            state.open_streams -= 1;
            output.changed.notify_all();
        });
    spawned.expect("spawning an output reader thread");
}

/// Removes terminal colour sequences, so that `executor=1` matches however the log is styled.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a byte in '@'..='~'.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
