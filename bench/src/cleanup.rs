//! What must not outlive the harness (contender process groups, network namespaces), and the
//! signal handling that removes it on Ctrl-C or SIGTERM.
//!
//! Normal exits and panics are handled by the owners' `Drop`; this registry only covers the
//! signal path, where no destructor runs.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{Result, bail};

#[derive(Default)]
struct Registry {
    process_groups: Vec<i32>,
    namespaces: Vec<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    process_groups: Vec::new(),
    namespaces: Vec::new(),
});

fn with_registry(action: impl FnOnce(&mut Registry)) {
    // A poisoned lock still holds a usable list; cleanup must not give up on it.
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    action(&mut registry);
}

/// Remembers a contender's process group so that a signal can kill it.
pub fn register_process_group(pgid: i32) {
    with_registry(|registry| registry.process_groups.push(pgid));
}

/// Forgets a process group its owner has stopped.
pub fn unregister_process_group(pgid: i32) {
    with_registry(|registry| registry.process_groups.retain(|known| *known != pgid));
}

/// Remembers a network namespace the harness created.
pub fn register_namespace(name: &str) {
    with_registry(|registry| registry.namespaces.push(name.to_owned()));
}

/// Forgets a namespace its owner has deleted.
pub fn unregister_namespace(name: &str) {
    with_registry(|registry| registry.namespaces.retain(|known| known != name));
}

/// Whether the harness created this namespace (and has not deleted it yet).
pub fn is_registered_namespace(name: &str) -> bool {
    let mut known = false;
    with_registry(|registry| known = registry.namespaces.iter().any(|entry| entry == name));
    known
}

/// Deletes a network namespace made with `ip netns add`; its veth ends go with it.
pub fn delete_namespace(name: &str) -> Result<()> {
    let status = Command::new("ip").args(["netns", "del", name]).status()?;
    if !status.success() {
        bail!("`ip netns del {name}` exited with {status}");
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every thread it spawns
/// later) and starts a thread that waits for them, kills what is registered, and exits.
///
/// Must be called before any other thread starts. Children get an empty mask back in
/// `pre_exec` (see [`unblock_signals_in_child`]).
pub fn install_signal_cleanup() -> Result<()> {
    let set = cleanup_signals();
    // An ignored signal is discarded, never pending, so sigwait would not see it (a shell
    // starts background jobs with SIGINT ignored). Blocked, the default action never runs.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_DFL is a valid disposition for these signals.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` and `signal` are valid for the call.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                eprintln!(
                    "uringgost-bench: signal {signal}, stopping contenders and removing namespaces"
                );
                clean_everything();
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

fn cleanup_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only sets bits in it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Gives a freshly forked child an empty signal mask, since exec keeps the blocked set and a
/// daemon that cannot receive SIGTERM would never stop. Only makes a system call, so it is
/// safe between fork and exec.
pub fn unblock_signals_in_child() -> std::io::Result<()> {
    // SAFETY: sigemptyset initialises the zeroed set; sigprocmask only reads it.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn clean_everything() {
    let (groups, namespaces) = {
        let mut taken = (Vec::new(), Vec::new());
        with_registry(|registry| {
            taken = (
                std::mem::take(&mut registry.process_groups),
                std::mem::take(&mut registry.namespaces),
            );
        });
        taken
    };
    for pgid in groups {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names the group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    for name in namespaces {
        if let Err(error) = delete_namespace(&name) {
            eprintln!("uringgost-bench: could not delete namespace {name}: {error:#}");
        }
    }
}
