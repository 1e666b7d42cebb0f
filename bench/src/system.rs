//! The machine: CPU sets and pinning, file-descriptor limits, and what the report says it ran on.

use std::io;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// The file-descriptor limit the harness wants for itself and every contender: room for
/// 30,000 relayed connections (two sockets each) with margin. Without CAP_SYS_RESOURCE the
/// hard limit caps it (see [`usable_nofile_limit`]).
pub const NOFILE_LIMIT: u64 = 262_144;

/// The highest RLIMIT_NOFILE this process may set: [`NOFILE_LIMIT`], or the current hard
/// limit where raising it is not permitted.
pub fn usable_nofile_limit() -> u64 {
    if set_nofile_limit(NOFILE_LIMIT).is_ok() {
        return NOFILE_LIMIT;
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid rlimit for getrlimit to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) };
    if rc == 0 {
        current.rlim_max.min(NOFILE_LIMIT)
    } else {
        1024
    }
}

/// A set of CPU numbers, as `taskset -c` spells them (`0`, `1-3`, `0,2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet {
    cpus: Vec<usize>,
}

impl CpuSet {
    /// Parses `0`, `1-3` or `0,2-3`.
    pub fn parse(text: &str) -> Result<CpuSet> {
        let mut cpus = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (first, last),
                None => (part, part),
            };
            let first: usize = first
                .parse()
                .with_context(|| format!("bad CPU number in {part:?}"))?;
            let last: usize = last
                .parse()
                .with_context(|| format!("bad CPU number in {part:?}"))?;
            if first > last || last >= libc::CPU_SETSIZE as usize {
                bail!("bad CPU range {part:?}");
            }
            cpus.extend(first..=last);
        }
        if cpus.is_empty() {
            bail!("empty CPU list {text:?}; write e.g. `1` or `0-1`");
        }
        Ok(CpuSet::from_cpus(cpus))
    }

    /// A set of the given CPUs.
    pub fn from_cpus(mut cpus: Vec<usize>) -> CpuSet {
        cpus.sort_unstable();
        cpus.dedup();
        CpuSet { cpus }
    }

    /// The CPU numbers, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Pins the calling thread (and whatever it later spawns or execs) to this set.
    ///
    /// Only makes the `sched_setaffinity` system call, so it is safe between fork and exec.
    pub fn pin_current(&self) -> io::Result<()> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in &self.cpus {
            // SAFETY: `parse` keeps every CPU below CPU_SETSIZE.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl std::fmt::Display for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
        f.write_str(&text.join(","))
    }
}

/// Number of CPUs online (not just those this thread may run on).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// The 1, 5 and 15 minute load averages, to show how busy the shared machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|error| format!("unknown ({error})"))
}

/// Sets RLIMIT_NOFILE (soft and hard) of the calling process.
///
/// Only makes the `setrlimit` system call, so it is safe between fork and exec.
pub fn set_nofile_limit(limit: u64) -> io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `value` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &value) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the results say the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// `uname -a`.
    pub uname: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online.
    pub nproc: usize,
    /// Total memory from /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// Versions of the peers found on this machine.
    pub peer_versions: Vec<String>,
}

impl MachineInfo {
    /// Reads the machine's description; a field that cannot be read says so.
    pub fn collect() -> MachineInfo {
        let uname = command_line_output("uname", &["-a"]);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let peer_versions = vec![
            command_line_output("haproxy", &["-v"]),
            command_line_output("nginx", &["-v"]),
            command_line_output("socat", &["-V"]),
        ]
        .into_iter()
        .map(|text| first_meaningful_line(&text))
        .collect();
        MachineInfo {
            uname,
            cpu_model,
            nproc: online_cpus(),
            memory_mib,
            peer_versions,
        }
    }
}

fn first_meaningful_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("socat by"))
        .unwrap_or("not found")
        .to_owned()
}

/// Stdout and stderr of a short command, or why it could not run.
fn command_line_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.trim().to_owned()
        }
        Err(error) => format!("{program}: {error}"),
    }
}

/// UTC time as `YYYYMMDD-HHMMSS`, for result folder names.
pub fn utc_timestamp() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let (year, month, day) = civil_date(seconds / 86_400);
    let time_of_day = seconds % 86_400;
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        time_of_day / 3600,
        time_of_day / 60 % 60,
        time_of_day % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (the proleptic calendar's 400-year cycle
/// has 146,097 days; shifting the year to start in March puts the leap day last).
fn civil_date(days_since_epoch: u64) -> (u64, u64, u64) {
    let shifted = days_since_epoch + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_set_parses_lists_and_ranges() {
        assert_eq!(CpuSet::parse("0,2-3").unwrap().cpus(), &[0, 2, 3]);
        assert!(CpuSet::parse("3-1").is_err());
        assert!(CpuSet::parse("").is_err());
    }

    #[test]
    fn civil_date_knows_leap_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
    }
}
