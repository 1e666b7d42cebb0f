//! Fixture shared by the integration tests: namespaces the tests own, the engine as a child
//! process, traffic that checks every byte, and stand-ins for the proxies a chain goes through.
//!
//! Network rules every helper keeps: traffic goes only to loopback or to addresses inside
//! namespaces the test created, and every thread or process that sends it runs inside one.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

pub mod configs;
pub mod engine;
pub mod netns;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod traffic;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Environment variable that turns every skip into a failure (CI sets it to `1`).
pub const REQUIRE_ENV: &str = "UG_REQUIRE_NETNS";

/// How long any single step of a test (a start, a transfer, a join) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A name no other test of any test process uses: `ug{pid}t{counter}{role}`.
///
/// Kept short because namespace names show up in interface listings and error messages.
pub fn unique_name(role: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("ug{}t{counter}{role}", std::process::id())
}

/// Whether this test may create network namespaces (root, `ip` present, and the right to
/// create one: a container's root may lack CAP_SYS_ADMIN).
///
/// Prints `SKIP` and returns false when it may not, unless [`REQUIRE_ENV`] is `1`: then a
/// missing prerequisite fails the test, so that CI never passes by skipping.
pub fn netns_available(test: &str) -> bool {
    let missing = if !is_root() {
        Some("not running as root")
    } else if !command_exists("ip", &["-V"]) {
        Some("the `ip` command (iproute2) is missing")
    } else if !may_create_namespaces() {
        Some("network namespaces cannot be created here (no CAP_SYS_ADMIN?)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) => skip(test, reason),
    }
}

/// Creates and deletes a probe namespace, once per test process.
fn may_create_namespaces() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        let probe = unique_name("probe");
        let created = std::process::Command::new("ip")
            .args(["netns", "add", &probe])
            .output()
            .is_ok_and(|output| output.status.success());
        if created {
            // Best effort: a failure here leaves only an empty namespace behind.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &probe])
                .output();
        }
        created
    })
}

/// The tinyproxy binary, or `None` after printing `SKIP` (a failure under [`REQUIRE_ENV`]).
pub fn tinyproxy_binary(test: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file());
    if found.is_none() {
        skip(
            test,
            "tinyproxy is not installed (apt-get install tinyproxy)",
        );
    }
    found
}

fn skip(test: &str, reason: &str) -> bool {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{test}: {reason}, and {REQUIRE_ENV}=1 forbids skipping");
    }
    // Written to the descriptor itself: the test harness captures eprintln! of passing tests,
    // and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {reason}");
    false
}

fn is_root() -> bool {
    // The effective uid is the second field of `Uid:`; reading it needs no unsafe call.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

fn command_exists(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique_name("dir"));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
        TempDir { path }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let file = self.path.join(name);
        std::fs::write(&file, contents)
            .unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
        file
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Nothing is left to clean up if the directory is already gone.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A point in time after which a waiting loop gives up.
#[derive(Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }

    /// Time left, or `None` once it has passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}
