//! What a contender costs, read from /proc and summed over all its processes (nginx workers,
//! socat's forked children): CPU time, memory, threads and file descriptors.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

/// Resource use of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Resources {
    /// Processes in the tree.
    pub processes: u64,
    /// Sum of VmRSS, KiB (counts pages shared between processes once per process).
    pub rss_kib: u64,
    /// Sum of Pss from smaps_rollup, KiB (shared pages divided among their users).
    pub pss_kib: u64,
    /// Threads, including io_uring's io-wq workers, which belong to their process.
    pub threads: u64,
    /// Of those, io-wq workers (`iou-wrk-*`): kernel threads an io_uring parks a blocking
    /// operation on, each with its own kernel stack.
    pub io_wq_threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Pids of `root` and all its live descendants.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(stat) = read_stat(pid) {
                children.entry(stat.parent).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids);
        }
        next += 1;
    }
    tree
}

/// CPU seconds (user + system) the tree has used, including reaped children's time, so that
/// socat's finished per-connection processes still count.
pub fn cpu_seconds(root: i32) -> f64 {
    let ticks: u64 = process_tree(root)
        .into_iter()
        .filter_map(read_stat)
        .map(|stat| stat.user + stat.system + stat.children_user + stat.children_system)
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// Memory, threads and descriptors of the tree now.
pub fn resources(root: i32) -> Resources {
    let mut total = Resources::default();
    for pid in process_tree(root) {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue; // exited between the scan and now: it holds nothing any more
        };
        total.processes += 1;
        total.rss_kib += kib_field(&status, "VmRSS:");
        if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            total.pss_kib += kib_field(&rollup, "Pss:");
        }
        let (threads, io_wq_threads) = count_threads(pid);
        total.threads += threads;
        total.io_wq_threads += io_wq_threads;
        total.fds += count_entries(&format!("/proc/{pid}/fd"));
    }
    total
}

struct Stat {
    parent: i32,
    user: u64,
    system: u64,
    children_user: u64,
    children_system: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    Some(Stat {
        parent: fields.get(1)?.parse().ok()?,
        user: field(14)?,
        system: field(15)?,
        children_user: field(16)?,
        children_system: field(17)?,
    })
}

/// Busy CPU seconds of the whole machine since boot, from the first line of /proc/stat:
/// user, nice, system and steal. Interrupt time is left out because it is not charged to
/// processes either, so the difference to a process tree's time is other processes' work
/// (plus what the hypervisor took).
pub fn machine_busy_seconds() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 7]
        .iter()
        .filter_map(|index| ticks.get(*index))
        .sum();
    busy as f64 / clock_ticks_per_second()
}

/// Datagrams the kernel dropped at UDP sockets bound to `port` in the caller's network
/// namespace (the `drops` column of /proc/net/udp and udp6, summed over every socket on the
/// port: a forwarder's SO_REUSEPORT sockets, say). Drops happen when a socket's receive
/// buffer is full, so this says whose reading fell behind.
pub fn udp_drops_on_port(port: u16) -> u64 {
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
            if local_port == Some(port) {
                drops += fields
                    .last()
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    drops
}

fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Threads of `pid`, and how many of them are io-wq workers (by their `comm`).
fn count_threads(pid: i32) -> (u64, u64) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let (mut threads, mut io_wq) = (0, 0);
    for task in tasks.flatten() {
        threads += 1;
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("iou-wrk") {
            io_wq += 1;
        }
    }
    (threads, io_wq)
}

/// The machine's kernel stacks in KiB (`KernelStack` in /proc/meminfo): every thread has
/// one, io-wq workers included, and no process's RSS or PSS shows them.
pub fn kernel_stack_kib() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    kib_field(&text, "KernelStack:")
}

fn count_entries(dir: &str) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| entries.count() as u64)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_sees_itself() {
        let me = std::process::id() as i32;
        let resources = resources(me);
        assert!(resources.processes >= 1 && resources.threads >= 1 && resources.fds >= 3);
        assert!(resources.rss_kib > 0);
        assert!(cpu_seconds(me) >= 0.0);
    }
}
