//! `cargo bench --bench zerocopy`: does a zero-copy send (MSG_ZEROCOPY) pay for a relay on
//! this machine? One stream over loopback, 64 KiB sends, for a fixed time each way: plain
//! send(2), then MSG_ZEROCOPY with its completions read from the error queue. Prints Gbit/s,
//! sender CPU seconds, and how many completions the kernel marked "copied" (it fell back to
//! copying, as it does for loopback and other local delivery).
//!
//! The relay itself never sends from user memory on its bulk path (splice moves pages
//! between sockets), so this probe only says whether the buffered path would gain.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
const DURATION: Duration = Duration::from_secs(3);

/// From linux/errqueue.h: where a zero-copy completion comes from.
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// From linux/errqueue.h: the kernel copied the data after all.
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

struct Outcome {
    gbits: f64,
    cpu_seconds: f64,
    completions: u64,
    copied: u64,
}

fn main() -> io::Result<()> {
    let plain = run(false)?;
    let zerocopy = run(true)?;
    println!("| send | Gbit/s | sender CPU s | Gbit per CPU-s | completions | copied |");
    println!("|---|---|---|---|---|---|");
    for (name, outcome) in [("plain send", &plain), ("MSG_ZEROCOPY", &zerocopy)] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {} | {} |",
            outcome.gbits,
            outcome.cpu_seconds,
            outcome.gbits * DURATION.as_secs_f64() / outcome.cpu_seconds.max(1e-9),
            outcome.completions,
            outcome.copied
        );
    }
    Ok(())
}

fn run(zerocopy: bool) -> io::Result<Outcome> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0; CHUNK];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(total),
                read => total += read as u64,
            }
        }
    });

    let stream = TcpStream::connect(addr)?;
    let fd = stream.as_raw_fd();
    if zerocopy {
        let one: libc::c_int = 1;
        // SAFETY: `one` outlives the call and its size is passed.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let buf = vec![7u8; CHUNK];
    let (mut completions, mut copied) = (0, 0);
    let cpu_before = thread_cpu();
    let start = Instant::now();
    while start.elapsed() < DURATION {
        let flags = if zerocopy { libc::MSG_ZEROCOPY } else { 0 };
        // SAFETY: `buf` is valid for reads of its length; with MSG_ZEROCOPY the kernel may
        // read it until the completion arrives, and it is neither freed nor written before.
        let sent = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
        if sent < 0 {
            let error = io::Error::last_os_error();
            // Too many completions outstanding: read them, then send again.
            if error.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(error);
            }
        }
        if zerocopy {
            drain_completions(fd, &mut completions, &mut copied);
        }
    }
    let elapsed = start.elapsed();
    let cpu_seconds = thread_cpu() - cpu_before;
    stream.shutdown(std::net::Shutdown::Write)?;
    let received = sink.join().expect("the sink thread panicked")?;
    Ok(Outcome {
        gbits: received as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
        cpu_seconds,
        completions,
        copied,
    })
}

/// Reads the zero-copy completions queued so far. Each covers a range of sends; the
/// "copied" code says the kernel copied them after all.
fn drain_completions(fd: libc::c_int, completions: &mut u64, copied: &mut u64) {
    loop {
        let mut control = [0u64; 16];
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = size_of_val(&control);
        // SAFETY: `message` points at `control`, which outlives the call.
        let read =
            unsafe { libc::recvmsg(fd, &mut message, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if read < 0 {
            return;
        }
        // SAFETY: the kernel filled `control` with `msg_controllen` bytes of cmsgs.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&message) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` points into `control`; an IP_RECVERR cmsg carries a
            // sock_extended_err.
            let error = unsafe { &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err) };
            if error.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                let sends = u64::from(error.ee_data.wrapping_sub(error.ee_info)) + 1;
                *completions += sends;
                if error.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                    *copied += sends;
                }
            }
            // SAFETY: `message` and `cmsg` are the header and cmsg walked above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&message, cmsg) };
        }
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}
