//! The results as Markdown: the run's circumstances, then one table per test.

use std::fmt::Write;

use super::{Report, Row, Scaling, TestSummary};
use crate::runner::TestCase;

/// A table column.
enum Column {
    /// A median figure: header, key, decimals.
    Figure(&'static str, &'static str, usize),
    /// Primary figure over direct's.
    ToDirect,
    /// Primary figure over the best peer's.
    ToBestPeer,
}

fn columns(test: TestCase) -> Vec<Column> {
    use Column::{Figure, ToBestPeer, ToDirect};
    match test {
        TestCase::Bulk(..) | TestCase::ChainBulk(..) => vec![
            Figure("Gbit/s", "gbps", 2),
            ToDirect,
            ToBestPeer,
            Figure("fwd CPU s", "cpu_s", 2),
            Figure("Gbit per CPU s", "gbit_per_cpu_s", 2),
            Figure("other CPU s", "other_cpu_s", 2),
        ],
        TestCase::ConnectionRate | TestCase::ChainConnectionRate => vec![
            Figure("conn/s", "conn_per_s", 0),
            ToDirect,
            ToBestPeer,
            Figure("p50 µs", "p50_us", 0),
            Figure("p99 µs", "p99_us", 0),
            Figure("fwd CPU µs/conn", "cpu_us_per_conn", 1),
            Figure("errors", "errors", 0),
            Figure("other CPU s", "other_cpu_s", 2),
        ],
        TestCase::Latency => vec![
            Figure("p50 µs", "p50_us", 1),
            Figure("p99 µs", "p99_us", 1),
            ToDirect,
            ToBestPeer,
            Figure("p99.9 µs", "p999_us", 1),
            Figure("max µs", "max_us", 0),
            Figure("req/s", "achieved_per_s", 0),
            Figure("fwd CPU s", "cpu_s", 2),
            Figure("other CPU s", "other_cpu_s", 2),
        ],
        TestCase::Idle => vec![
            Figure("relayed", "relayed", 0),
            Figure("lost up", "lost_up", 0),
            Figure("lost down", "lost_down", 0),
            Figure("PSS KiB/conn", "pss_kib_per_conn", 2),
            ToDirect,
            ToBestPeer,
            Figure("RSS KiB/conn", "rss_kib_per_conn", 2),
            Figure("RSS KiB/conn after 1 B", "after_io_rss_kib_per_conn", 2),
            Figure("RSS MiB", "rss_mib", 1),
            Figure("threads", "threads", 0),
            Figure("iou-wrk", "io_wq_threads", 0),
            Figure("kernel stack KiB/conn", "kernel_stack_kib_per_conn", 1),
            Figure("fds", "fds", 0),
            Figure("procs", "processes", 0),
            Figure("fwd CPU s", "cpu_s", 2),
            Figure("other CPU s", "other_cpu_s", 2),
        ],
        TestCase::Udp(_) => vec![
            Figure("pkt/s sent", "sent_pps", 0),
            Figure("pkt/s received", "pps", 0),
            ToDirect,
            ToBestPeer,
            Figure("loss %", "loss_pct", 1),
            Figure("dropped at fwd %", "fwd_drop_pct", 1),
            Figure("dropped at sink %", "sink_drop_pct", 1),
            Figure("Gbit/s received", "gbps", 3),
            Figure("fwd CPU s", "cpu_s", 2),
            Figure("kpkt per CPU s", "kpps_per_cpu_s", 0),
            Figure("MB per CPU s", "mbyte_per_cpu_s", 0),
            Figure("other CPU s", "other_cpu_s", 2),
        ],
    }
}

/// Renders the whole report.
pub fn render(report: &Report) -> String {
    let run = &report.run;
    let mut text = String::new();
    let _ = writeln!(text, "# uringgost-bench results, {} UTC\n", run.started_utc);
    let _ = writeln!(text, "- command: `{}`", run.command_line);
    let _ = writeln!(
        text,
        "- suite {:?}, {} round(s), medians; {} thread(s) per forwarder on CPU(s) {}; \
         load generators and sinks on CPU(s) {}",
        run.suite,
        run.rounds,
        run.threads_text(),
        run.forwarder_cpus,
        run.load_cpus
    );
    let machine = &run.machine;
    let _ = writeln!(
        text,
        "- machine: {} ({} CPUs, {} MiB)",
        machine.cpu_model, machine.nproc, machine.memory_mib
    );
    let _ = writeln!(text, "- kernel: `{}`", machine.uname);
    let _ = writeln!(text, "- peers: {}", machine.peer_versions.join("; "));
    for note in &run.notes {
        let _ = writeln!(text, "- {note}");
    }
    let _ = writeln!(
        text,
        "\n`× direct` and `× best peer` divide each test's primary figure (the column just \
         before them) by the no-forwarder figure and by the best of HAProxy, nginx and socat; \
         for latency and memory, lower is better.\n"
    );
    for test in &report.tests {
        render_test(&mut text, test);
    }
    if !report.scaling.is_empty() {
        render_scaling(&mut text, &report.run.threads, &report.scaling);
    }
    text
}

fn render_scaling(text: &mut String, threads: &[u32], lines: &[Scaling]) {
    let base = threads[0];
    let _ = writeln!(
        text,
        "## scaling\n\nEach test's primary figure (median) per thread count, and each count's \
         over {base} thread(s): ideal is the thread count for throughput, 1.0 or lower for \
         latency and memory. Where the forwarder's CPUs overlap the load generators' (see the \
         notes), the load generators lose CPU as the forwarder gains it.\n"
    );
    let mut header = vec![
        "test".to_owned(),
        "contender".to_owned(),
        "figure".to_owned(),
    ];
    header.extend(threads.iter().map(|count| format!("{count}t")));
    header.extend(
        threads[1..]
            .iter()
            .map(|count| format!("{count}t / {base}t")),
    );
    let _ = writeln!(text, "| {} |", header.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(header.len()));
    for line in lines {
        let mut cells = vec![
            line.test.clone(),
            line.contender.clone(),
            line.figure.to_owned(),
        ];
        cells.extend(
            line.by_threads.iter().map(|(_, value)| {
                value.map_or_else(|| "-".to_owned(), |value| format!("{value:.2}"))
            }),
        );
        cells.extend(line.ratios.iter().map(|(_, ratio)| ratio_text(*ratio)));
        let _ = writeln!(text, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(text);
}

fn render_test(text: &mut String, test: &TestSummary) {
    let _ = writeln!(text, "## {}\n\n{}\n", test.name, test.description);
    let columns = columns(test.test);
    let mut header = vec!["contender".to_owned()];
    for column in &columns {
        header.push(match column {
            Column::Figure(name, ..) => (*name).to_owned(),
            Column::ToDirect => "× direct".to_owned(),
            Column::ToBestPeer => "× best peer".to_owned(),
        });
    }
    header.push("status".to_owned());
    let _ = writeln!(text, "| {} |", header.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(header.len()));
    for row in &test.rows {
        let mut cells = vec![row.label.clone()];
        for column in &columns {
            cells.push(match column {
                Column::Figure(_, key, decimals) => figure(row, key, *decimals),
                Column::ToDirect => ratio_text(row.to_direct),
                Column::ToBestPeer => ratio_text(row.to_best_peer),
            });
        }
        cells.push(status(row));
        let _ = writeln!(text, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(text);
}

fn figure(row: &Row, key: &str, decimals: usize) -> String {
    match row.medians.get(key) {
        Some(value) => format!("{value:.decimals$}"),
        None => "-".to_owned(),
    }
}

fn ratio_text(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.2}"))
}

fn status(row: &Row) -> String {
    let mut cell = row.status.to_owned();
    if let Some(note) = &row.note {
        let mut note: String = note.replace('|', "/").replace('\n', " ");
        if note.chars().count() > 160 {
            note = note.chars().take(160).collect::<String>() + "…";
        }
        cell = format!("{cell}: {note}");
    }
    cell
}
