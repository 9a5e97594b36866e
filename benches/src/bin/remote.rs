//! The scale-out over NATS JetStream on loopback (feature `nats`): what the broker costs
//! per chunk, and how CPU-bound chunks scale from one worker process to two.
//!
//! ```text
//! remote                                   # 7 interleaved rounds, about 2 minutes
//! remote --rounds 5 --small-chunks 5000 --large-chunks 500 --cpu-chunks 300 --chunk-ms 5
//! remote --limit 32 --worker-limit 8 --case small      # only the cases whose name holds "small"
//! remote --cpu-worker-limit 2 --worker-threads 1 --case remote --case thread
//! FLOWGATE_NATS_SERVER=/path/to/nats-server remote
//! ```
//!
//! The program starts its own `nats-server` (`FLOWGATE_NATS_SERVER`, default
//! `/tmp/nats-venv/bin/nats-server`) with JetStream on a free loopback port, a temporary
//! store directory and a monitoring port (for its message counts), then its worker
//! processes, by running itself again as `remote worker --nats URL --limit N --threads N
//! --serve SET`. A worker stops when its standard input closes (this process ending,
//! whichever way, closes it). The coordinator is this process: a `multi_thread` runtime
//! with 2 workers, one [`NatsBroker`] connection. Worker processes run a `multi_thread`
//! runtime with `--worker-threads` workers (default 2, what `#[tokio::main]` gives on
//! this machine; 1 means `current_thread`) and serve in its `block_on`, as
//! `#[tokio::main]` and the `wordcount_remote` example do (`--serve-spawned`: in a
//! spawned task, on a runtime worker).
//!
//! Cases, each a fresh job (`map_remote_unordered`, coordinator limit `--limit`, default
//! 32), all against the same long-lived server and workers:
//!
//! - **Throughput, trivial work**: one worker process of limit `--worker-limit` (default 8)
//!   whose task returns its chunk's length (`Worker::task`, an async fn): `--small-chunks`
//!   chunks of 128 `u64` (1 KiB encoded), `--large-chunks` chunks of 32,768 `u64`
//!   (256 KiB encoded), and as many 256 KiB `Vec<u8>` chunks (the wire type of the
//!   `wordcount_remote` example). Every `u64` lies in [2^49, 2^56), so postcard encodes
//!   each in exactly 8 bytes. The small and large `u64` chunks go again to a second
//!   worker process, the same but on a `current_thread` runtime.
//! - **Latency**: ten jobs of one small chunk, one after the other.
//! - **Scaling, CPU-bound chunks**: `--cpu-chunks` chunks of 256 `u64`, each needing
//!   `--chunk-ms` of pure CPU (the benches' integer mix [`busy`] over every item, its round
//!   count calibrated at start-up; `--cpu-rounds N` fixes it), run by
//!   `Worker::task_blocking`: with one worker process of limit `--cpu-worker-limit`
//!   (default 1), and with two of that limit each (separate task names, so each set gets
//!   only its own job). Beside them, in the same rounds, the machine's own ideal (the same
//!   chunks on this thread, and split statically over two `std::thread`s) and flowgate's
//!   local `par_map_unordered(2)`. The workers time each call (its wall and its thread's
//!   CPU) and the gap before the next one, and report them when they stop.
//!
//! Each round runs every case once, one case further on than the last round. Wall time
//! covers the whole job: the job's set-up (its results consumer), every chunk out and
//! back, and the purge of its results at the end. CPU time is taken around each case for
//! every process: this one (`getrusage(RUSAGE_SELF)`), each worker and the server
//! (`/proc/PID/stat`, in clock ticks of 10 ms); idle workers of the other cases are
//! counted too (a pull request a second each). The tables give the median and the min
//! (or the best rate) over the rounds, as markdown.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flowgate::distributed::{Broker, NatsBroker, Task, Worker};
use flowgate::policy::CancellationToken;
use flowgate::prelude::*;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use flowgate_benches::{
    busy, current_thread_runtime, in_task, load_average, multi_thread_runtime, number,
};

const USAGE: &str = "usage: remote [--rounds N] [--limit N] [--worker-limit N] \
    [--cpu-worker-limit N] [--worker-threads N] [--serve-spawned] [--small-chunks N] [--large-chunks N] \
    [--cpu-chunks N] [--chunk-ms N] [--cpu-rounds N] [--case TEXT]...
       remote worker --nats URL --limit N [--threads N] [--spawned] \
    --serve trivial|trivial-current|cpu-one|cpu-two";

/// The server binary, unless `FLOWGATE_NATS_SERVER` names another.
const DEFAULT_SERVER: &str = "/tmp/nats-venv/bin/nats-server";

/// Trivial work: a chunk of `u64` in, its length out.
const TRIVIAL: Task<Vec<u64>, u64> = Task::new("bench-trivial");
/// Trivial work, served by a worker process on a `current_thread` runtime.
const TRIVIAL_CURRENT: Task<Vec<u64>, u64> = Task::new("bench-trivial-current");
/// Trivial work on bytes: a chunk of bytes in, its length out.
const BYTES: Task<Vec<u8>, u64> = Task::new("bench-bytes");
/// CPU-bound chunks, served by the set of one worker process.
const CPU_ONE: Task<CpuChunk, u64> = Task::new("bench-cpu-one");
/// CPU-bound chunks, served by the set of two worker processes.
const CPU_TWO: Task<CpuChunk, u64> = Task::new("bench-cpu-two");

/// `u64` per small chunk: 1 KiB encoded.
const SMALL_ITEMS: usize = 128;
/// `u64` per large chunk: 256 KiB encoded.
const LARGE_ITEMS: usize = 32 * 1024;
/// Bytes per large `Vec<u8>` chunk.
const LARGE_BYTES: usize = 256 * 1024;
/// `u64` per CPU-bound chunk.
const CPU_ITEMS: usize = 256;

/// A chunk whose work is `rounds` rounds of [`busy`] on each item.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CpuChunk {
    rounds: u64,
    items: Vec<u64>,
}

/// The CPU-bound work of one chunk, the same wherever it runs.
fn cpu_work(chunk: &CpuChunk) -> u64 {
    chunk.items.iter().map(|&x| busy(x, chunk.rounds)).sum()
}

/// A `u64` that postcard encodes in exactly 8 bytes: in [2^49, 2^56).
fn eight_bytes(i: u64) -> u64 {
    (1 << 49) | (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 49) - 1))
}

fn cpu_chunks(count: usize, rounds: u64) -> Vec<CpuChunk> {
    (0..count)
        .map(|c| CpuChunk {
            rounds,
            items: (0..CPU_ITEMS)
                .map(|i| eight_bytes((c * CPU_ITEMS + i) as u64))
                .collect(),
        })
        .collect()
}

/// The round count that makes a chunk of [`CPU_ITEMS`] take about `target` on this
/// thread (the fastest of several timings, so a busy co-tenant shrinks it little), and
/// the time it takes now.
fn calibrate(target: Duration) -> (u64, Duration) {
    let time = |rounds: u64| {
        let chunk = &cpu_chunks(1, rounds)[0];
        (0..7)
            .map(|_| {
                let started = Instant::now();
                black_box(cpu_work(black_box(chunk)));
                started.elapsed()
            })
            .min()
            .expect("timed at least once")
    };
    let mut rounds = 1_000u64;
    for _ in 0..4 {
        let ratio = target.as_secs_f64() / time(rounds).as_secs_f64();
        rounds = ((rounds as f64) * ratio).round().max(1.0) as u64;
    }
    (rounds, time(rounds))
}

// ---------------------------------------------------------------------------------------
// The worker processes.
// ---------------------------------------------------------------------------------------

fn worker_main(mut argv: impl Iterator<Item = String>) -> ExitCode {
    let (mut url, mut limit, mut serve) = (None, None, None);
    let mut threads = 2;
    let mut spawned = false;
    while let Some(arg) = argv.next() {
        let parsed = match arg.as_str() {
            "--nats" => argv.next().map(|v| url = Some(v)),
            "--spawned" => {
                spawned = true;
                Some(())
            }
            "--threads" => number(argv.next()).map(|n| threads = n as usize),
            "--limit" => number(argv.next()).map(|n| limit = Some(n as usize)),
            "--serve" => argv.next().map(|v| serve = Some(v)),
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("remote worker: bad argument {arg:?} (or its value)\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let (Some(url), Some(limit), Some(serve)) = (url, limit, serve) else {
        eprintln!("remote worker: --nats, --limit and --serve are required\n{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = if threads == 1 {
        current_thread_runtime()
    } else {
        multi_thread_runtime(threads)
    };
    let set = serve.clone();
    let outcome = runtime.block_on(async move {
        let broker = NatsBroker::connect(&url).await?;
        let worker = Worker::new(broker.clone(), limit);
        let (worker, names) = match set.as_str() {
            "trivial" => (
                worker
                    .task(TRIVIAL, |chunk: Vec<u64>| async move {
                        Ok::<_, String>(chunk.len() as u64)
                    })
                    .task(BYTES, |chunk: Vec<u8>| async move {
                        Ok::<_, String>(chunk.len() as u64)
                    }),
                vec![TRIVIAL.name(), BYTES.name()],
            ),
            "trivial-current" => (
                worker.task(TRIVIAL_CURRENT, |chunk: Vec<u64>| async move {
                    Ok::<_, String>(chunk.len() as u64)
                }),
                vec![TRIVIAL_CURRENT.name()],
            ),
            "cpu-one" => (
                worker.task_blocking(CPU_ONE, timed_cpu_work),
                vec![CPU_ONE.name()],
            ),
            "cpu-two" => (
                worker.task_blocking(CPU_TWO, timed_cpu_work),
                vec![CPU_TWO.name()],
            ),
            other => {
                return Err(flowgate::distributed::BrokerError::new(format!(
                    "no worker set named {other:?}"
                )))
            }
        };
        // The consumers exist before the coordinator is told the worker is ready.
        for name in names {
            broker.prepare_worker(name).await?;
        }
        println!("ready");
        std::io::stdout().flush().ok();
        let stop = CancellationToken::new();
        let on_eof = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            on_eof.cancel();
        });
        if spawned {
            // On a runtime worker, as a pipeline inside a tokio application runs.
            in_task(worker.serve(stop)).await
        } else {
            // In `block_on`, as `#[tokio::main] async fn main` and the example run it.
            worker.serve(stop).await
        }
    });
    match outcome {
        Ok(report) => {
            eprintln!(
                "remote worker {serve} (pid {}, limit {limit}): {report:?}",
                std::process::id()
            );
            // The coordinator reads this line once it has closed this worker's input.
            println!("{}", call_summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("remote worker {serve}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One call of the CPU-bound task in a worker process.
#[derive(Debug, Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    /// The calling thread's CPU time during the call.
    cpu: Duration,
}

/// Every CPU-bound call this worker process made.
static CALLS: std::sync::Mutex<Vec<Call>> = std::sync::Mutex::new(Vec::new());

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPU-bound task of the worker processes, timed.
fn timed_cpu_work(chunk: CpuChunk) -> Result<u64, String> {
    let (start, cpu) = (Instant::now(), thread_cpu());
    let result = cpu_work(&chunk);
    let call = Call {
        start,
        end: Instant::now(),
        cpu: thread_cpu() - cpu,
    };
    CALLS.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    Ok(result)
}

/// Gaps between calls longer than this lie between jobs, not inside one.
const BETWEEN_JOBS: Duration = Duration::from_millis(100);

/// One line on the calls: how many, each call's wall and CPU time (median), and the
/// gap from the end of one call to the start of the next inside a job (median, 90th
/// percentile, how many): with limit 1, the time a chunk's result, its acknowledgement
/// and the next chunk take through the broker.
fn call_summary() -> String {
    let mut calls = CALLS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    calls.sort_by_key(|call| call.start);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut gaps: Vec<f64> = calls
        .windows(2)
        .map(|pair| pair[1].start.saturating_duration_since(pair[0].end))
        .filter(|gap| *gap < BETWEEN_JOBS)
        .map(us)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        gaps.get(((gaps.len() as f64 * q) as usize).min(gaps.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let median_of = |f: &dyn Fn(&Call) -> f64| {
        let mut values: Vec<f64> = calls.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    format!(
        "calls {} wall {:.0} cpu {:.0} gaps {} gap {:.0} gap90 {:.0}",
        calls.len(),
        median_of(&|call| us(call.end - call.start)),
        median_of(&|call| us(call.cpu)),
        gaps.len(),
        quantile(0.5),
        quantile(0.9)
    )
}

/// Worker processes of this program, stopped (their standard input closed) on drop.
struct Workers {
    children: Vec<Child>,
    /// Whether the workers serve as a spawned task rather than in `block_on`.
    spawned: bool,
    /// Each worker's set and its standard output, after its first line.
    outputs: Vec<(String, BufReader<std::process::ChildStdout>)>,
}

impl Workers {
    fn spawn(&mut self, url: &str, limit: usize, threads: usize, serve: &str) -> u32 {
        let exe = std::env::current_exe().expect("the path of this program");
        let mut command = Command::new(exe);
        command
            .args(["worker", "--nats", url, "--limit", &limit.to_string()])
            .args(["--threads", &threads.to_string(), "--serve", serve]);
        if self.spawned {
            command.arg("--spawned");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a worker process");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        stdout
            .read_line(&mut line)
            .expect("reading a worker's first line");
        assert_eq!(line.trim(), "ready", "the worker {serve} did not start");
        let pid = child.id();
        self.children.push(child);
        self.outputs.push((format!("{serve} (pid {pid})"), stdout));
        pid
    }

    /// Stops the workers and returns what each printed last: its set and its line.
    fn stop(&mut self) -> Vec<(String, String)> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        self.outputs
            .drain(..)
            .map(|(name, mut stdout)| {
                let mut rest = String::new();
                let _ = stdout.read_to_string(&mut rest);
                (name, rest.trim().to_owned())
            })
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------------

/// A nats-server with JetStream on a loopback port, its store in a temporary directory;
/// killed and its directory removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
    /// The monitoring port (`-m`), for the message counts of `/varz`.
    monitor: u16,
}

impl Server {
    fn start(binary: &str) -> Server {
        let mut last = String::new();
        for attempt in 0..3 {
            // Free ports, released just before the server binds them.
            let free = || {
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("a free loopback port")
                    .port()
            };
            let (port, monitor) = (free(), free());
            let dir = std::env::temp_dir().join(format!(
                "flowgate-remote-bench-{}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("creating the store directory");
            let mut child = Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .args(["-m", &monitor.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| panic!("starting {binary}: {error}"));
            let stderr = child.stderr.take().expect("piped");
            let (ready, told) = mpsc::channel();
            // Reads the server's log to its end, so the server never blocks on it.
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("Server is ready") {
                        let _ = ready.send(Ok(()));
                    }
                    lines.push(line);
                }
                let _ = ready.send(Err(lines.join("\n")));
            });
            match told.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(())) => {
                    return Server {
                        child,
                        dir,
                        url: format!("nats://127.0.0.1:{port}"),
                        monitor,
                    }
                }
                Ok(Err(log)) => last = log,
                Err(_) => last = "no \"Server is ready\" within 20 s".to_owned(),
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("{binary} did not start:\n{last}");
    }
}

/// Messages into and out of the server so far (`in_msgs`, `out_msgs` of `/varz`): every
/// client message, JetStream's acknowledgements, pull requests and their status replies
/// included.
fn server_messages(monitor: u16) -> (u64, u64) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", monitor))
        .expect("connecting to the server's monitoring port");
    stream
        .write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("asking for /varz");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("reading /varz");
    let field = |name: &str| {
        let key = format!("\"{name}\":");
        let at = body
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in /varz"))
            + key.len();
        body[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /varz is not a count"))
    };
    (field("in_msgs"), field("out_msgs"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// CPU time of every process.
// ---------------------------------------------------------------------------------------

/// User and system CPU time, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.system
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }

    /// This process: `getrusage(RUSAGE_SELF)`, every thread, microseconds.
    fn own() -> Cpu {
        // SAFETY: `rusage` is plain old data, for which all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Cpu {
            user: seconds(ru.ru_utime),
            system: seconds(ru.ru_stime),
        }
    }

    /// Another process: `utime` and `stime` of `/proc/PID/stat`, in clock ticks (every
    /// thread, live or ended).
    fn of(pid: u32) -> Cpu {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|error| panic!("reading /proc/{pid}/stat: {error}"));
        // The command name may hold spaces: the fields after it start at its `)`.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split_whitespace()
            .collect();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let field = |i: usize| fields[i].parse::<f64>().expect("a tick count") / ticks;
        // Fields 14 and 15 of the line; the state (field 3) is the first here.
        Cpu {
            user: field(11),
            system: field(12),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------

/// What a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Chunks per second with trivial work.
    Throughput,
    /// Start to end of a job of one small chunk.
    Latency,
    /// Wall time of the CPU-bound chunks.
    Scaling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Small,
    SmallCurrent,
    Large,
    LargeCurrent,
    LargeBytes,
    OneChunkJobs,
    RemoteOne,
    RemoteTwo,
    ParMap,
    Sequential,
    TwoThreads,
}

/// Jobs of one small chunk, one after the other, per run of [`Case::OneChunkJobs`].
const ONE_CHUNK_JOBS: u64 = 10;

impl Case {
    const ALL: [Case; 11] = [
        Case::Small,
        Case::SmallCurrent,
        Case::Large,
        Case::LargeCurrent,
        Case::LargeBytes,
        Case::OneChunkJobs,
        Case::RemoteOne,
        Case::RemoteTwo,
        Case::ParMap,
        Case::Sequential,
        Case::TwoThreads,
    ];

    fn name(self, s: &Settings) -> String {
        let w = s.worker_limit;
        match self {
            Case::Small => format!("small chunks (128 u64, 1 KiB), 1 worker of limit {w}"),
            Case::SmallCurrent => {
                format!("small chunks, 1 worker of limit {w} on current_thread")
            }
            Case::Large => format!("large chunks (32,768 u64, 256 KiB), 1 worker of limit {w}"),
            Case::LargeCurrent => {
                format!("large chunks, 1 worker of limit {w} on current_thread")
            }
            Case::LargeBytes => format!("large chunks (256 KiB Vec<u8>), 1 worker of limit {w}"),
            Case::OneChunkJobs => {
                format!("{ONE_CHUNK_JOBS} jobs of 1 small chunk, one after the other")
            }
            Case::RemoteOne => {
                let c = s.cpu_worker_limit;
                format!("map_remote_unordered, 1 worker process (limit {c})")
            }
            Case::RemoteTwo => {
                let c = s.cpu_worker_limit;
                format!("map_remote_unordered, 2 worker processes (limit {c} each)")
            }
            Case::ParMap => "local par_map_unordered(2), no broker".to_owned(),
            Case::Sequential => "sequential, 1 std::thread".to_owned(),
            Case::TwoThreads => "ideal: split over 2 std::threads".to_owned(),
        }
    }

    fn kind(self) -> Kind {
        match self {
            Case::Small
            | Case::SmallCurrent
            | Case::Large
            | Case::LargeCurrent
            | Case::LargeBytes => Kind::Throughput,
            Case::OneChunkJobs => Kind::Latency,
            _ => Kind::Scaling,
        }
    }

    /// Chunks per run (jobs for [`Case::OneChunkJobs`]).
    fn chunks(self, s: &Settings) -> u64 {
        match self {
            Case::Small | Case::SmallCurrent => s.small_chunks,
            Case::Large | Case::LargeCurrent | Case::LargeBytes => s.large_chunks,
            Case::OneChunkJobs => ONE_CHUNK_JOBS,
            _ => s.cpu_chunks,
        }
    }

    /// Items per chunk (bytes for [`Case::LargeBytes`]).
    fn items(self) -> u64 {
        match self {
            Case::Small | Case::SmallCurrent | Case::OneChunkJobs => SMALL_ITEMS as u64,
            Case::Large | Case::LargeCurrent => LARGE_ITEMS as u64,
            Case::LargeBytes => LARGE_BYTES as u64,
            _ => CPU_ITEMS as u64,
        }
    }

    /// Encoded bytes per chunk (the length prefix aside).
    fn bytes(self) -> u64 {
        match self {
            Case::LargeBytes => LARGE_BYTES as u64,
            _ => self.items() * 8,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: usize,
    limit: usize,
    worker_limit: usize,
    /// The CPU-bound cases' limit per worker process.
    cpu_worker_limit: usize,
    /// Runtime workers of each worker process (1: a `current_thread` runtime).
    worker_threads: usize,
    /// Whether the worker processes serve as a spawned task rather than in `block_on`.
    serve_spawned: bool,
    small_chunks: u64,
    large_chunks: u64,
    cpu_chunks: u64,
    chunk_ms: u64,
    cpu_rounds: Option<u64>,
}

/// What the cases share: the coordinator's runtime and broker, the processes to
/// measure, the CPU-bound chunks.
struct Bench {
    settings: Settings,
    runtime: Runtime,
    broker: NatsBroker,
    server: u32,
    monitor: u16,
    workers: Vec<u32>,
    chunks: Arc<Vec<CpuChunk>>,
    /// The sum of the CPU-bound chunks' results, from the first case that ran them.
    cpu_sum: Option<u64>,
}

/// One run of one case.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    own: Cpu,
    workers: Cpu,
    server: Cpu,
    /// Messages into the server, and out of it, during the run.
    messages_in: u64,
    messages_out: u64,
}

impl Sample {
    fn cpu(&self) -> f64 {
        self.own.total() + self.workers.total() + self.server.total()
    }
}

/// Fails a remote job that takes this long (a worker gone, a server stuck).
const PATIENCE: Duration = Duration::from_secs(300);

async fn remote<T, F>(
    broker: NatsBroker,
    task: Task<T, u64>,
    count: u64,
    make: F,
    limit: usize,
) -> u64
where
    T: Serialize + Send + 'static,
    F: Fn(u64) -> T + Send + 'static,
{
    let job = futures::stream::iter(0..count)
        .map(make)
        .map_remote_unordered(broker, task, limit)
        .fold(0u64, |total, result| async move {
            total + result.unwrap_or_else(|error| panic!("a chunk failed: {error}"))
        });
    tokio::time::timeout(PATIENCE, job)
        .await
        .unwrap_or_else(|_| panic!("a job of {count} chunks took over {PATIENCE:?}"))
}

impl Bench {
    fn usage(&self) -> (Cpu, Cpu, Cpu) {
        let workers = self
            .workers
            .iter()
            .fold(Cpu::default(), |sum, &pid| sum.add(Cpu::of(pid)));
        (Cpu::own(), workers, Cpu::of(self.server))
    }

    /// Runs `case` over `count` chunks and returns what it sums (lengths, or the CPU
    /// work's results).
    fn run(&self, case: Case, count: u64) -> u64 {
        let broker = self.broker.clone();
        let limit = self.settings.limit;
        let chunks = self.chunks.clone();
        let n = (count as usize).min(chunks.len());
        let cpu_chunk = move |i: u64| chunks[i as usize].clone();
        match case {
            Case::Small | Case::SmallCurrent | Case::Large | Case::LargeCurrent => {
                let template: Vec<u64> = (0..case.items()).map(eight_bytes).collect();
                let make = move |_| template.clone();
                let task = match case {
                    Case::Small | Case::Large => TRIVIAL,
                    _ => TRIVIAL_CURRENT,
                };
                self.runtime
                    .block_on(in_task(remote(broker, task, count, make, limit)))
            }
            Case::LargeBytes => {
                let template: Vec<u8> = (0..LARGE_BYTES).map(|i| (i * 131 % 251) as u8).collect();
                let make = move |_| template.clone();
                self.runtime
                    .block_on(in_task(remote(broker, BYTES, count, make, limit)))
            }
            Case::OneChunkJobs => {
                let template: Vec<u64> = (0..SMALL_ITEMS as u64).map(eight_bytes).collect();
                self.runtime.block_on(in_task(async move {
                    let mut total = 0;
                    for _ in 0..count {
                        let make = {
                            let template = template.clone();
                            move |_| template.clone()
                        };
                        total += remote(broker.clone(), TRIVIAL, 1, make, limit).await;
                    }
                    total
                }))
            }
            Case::RemoteOne => self
                .runtime
                .block_on(in_task(remote(broker, CPU_ONE, n as u64, cpu_chunk, limit))),
            Case::RemoteTwo => self
                .runtime
                .block_on(in_task(remote(broker, CPU_TWO, n as u64, cpu_chunk, limit))),
            Case::ParMap => self.runtime.block_on(in_task(async move {
                futures::stream::iter(0..n as u64)
                    .map(cpu_chunk)
                    .par_map_unordered(2, |chunk| cpu_work(&chunk))
                    .fold(0u64, |total, x| async move { total + x })
                    .await
            })),
            Case::Sequential => self.chunks[..n].iter().map(cpu_work).sum(),
            Case::TwoThreads => {
                let halves = self.chunks[..n].split_at(n / 2);
                std::thread::scope(|scope| {
                    let first = scope.spawn(|| halves.0.iter().map(cpu_work).sum::<u64>());
                    let second = halves.1.iter().map(cpu_work).sum::<u64>();
                    first.join().expect("the other thread panicked") + second
                })
            }
        }
    }

    fn measure(&mut self, case: Case) -> Sample {
        let count = case.chunks(&self.settings);
        let (in_before, out_before) = server_messages(self.monitor);
        let (own, workers, server) = self.usage();
        let started = Instant::now();
        let sum = self.run(case, count);
        let wall = started.elapsed().as_secs_f64();
        let (own_after, workers_after, server_after) = self.usage();
        let (in_after, out_after) = server_messages(self.monitor);
        if case.kind() == Kind::Scaling {
            let expected = *self.cpu_sum.get_or_insert(sum);
            assert_eq!(sum, expected, "{case:?} summed differently");
        } else {
            assert_eq!(sum, count * case.items(), "{case:?} lost chunks");
        }
        Sample {
            wall,
            own: own_after.since(own),
            workers: workers_after.since(workers),
            server: server_after.since(server),
            // The monitoring request itself is one connection, no messages.
            messages_in: in_after - in_before,
            messages_out: out_after - out_before,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reporting.
// ---------------------------------------------------------------------------------------

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn min(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::INFINITY, f64::min)
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// Thousands separated by commas.
fn grouped(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report_throughput(cases: &[Case], samples: &[Vec<Sample>], s: &Settings) {
    println!(
        "\n**Throughput, trivial work** (`map_remote_unordered({})`, 1 worker process of limit {}; \
         rates: median, best in brackets; CPU µs per chunk: medians)\n",
        s.limit, s.worker_limit
    );
    println!(
        "| chunks | count | wall ms median | min | chunks/s | items/s | MiB/s | wall µs/chunk \
         | CPU µs/chunk: coordinator | worker | server | total | server messages/chunk in, out |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, runs) in cases.iter().zip(samples) {
        if case.kind() != Kind::Throughput || runs.is_empty() {
            continue;
        }
        let n = case.chunks(s) as f64;
        let wall = median(runs.iter().map(|r| r.wall));
        let best = min(runs.iter().map(|r| r.wall));
        let per = |f: fn(&Sample) -> f64| median(runs.iter().map(f)) / n * 1e6;
        let mib = (case.bytes() as f64) / (1024.0 * 1024.0);
        let label = match case {
            Case::Small => "128 u64 (1 KiB)",
            Case::SmallCurrent => "128 u64 (1 KiB), worker on `current_thread`",
            Case::Large => "32,768 u64 (256 KiB)",
            Case::LargeCurrent => "32,768 u64 (256 KiB), worker on `current_thread`",
            _ => "256 KiB `Vec<u8>`",
        };
        println!(
            "| {label} | {} | {:.0} | {:.0} | {} ({}) | {} ({}) | {:.0} ({:.0}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}, {:.2} |",
            grouped(n),
            wall * 1e3,
            best * 1e3,
            grouped(n / wall),
            grouped(n / best),
            grouped(n * case.items() as f64 / wall),
            grouped(n * case.items() as f64 / best),
            n * mib / wall,
            n * mib / best,
            wall / n * 1e6,
            per(|r| r.own.total()),
            per(|r| r.workers.total()),
            per(|r| r.server.total()),
            per(Sample::cpu),
            median(runs.iter().map(|r| r.messages_in as f64)) / n,
            median(runs.iter().map(|r| r.messages_out as f64)) / n,
        );
    }
    let systems: Vec<String> = cases
        .iter()
        .zip(samples)
        .filter(|(case, runs)| case.kind() == Kind::Throughput && !runs.is_empty())
        .map(|(case, runs)| {
            let share = |f: fn(&Sample) -> Cpu| {
                let system = median(runs.iter().map(|r| f(r).system));
                let total = median(runs.iter().map(|r| f(r).total()));
                100.0 * system / total.max(1e-9)
            };
            format!(
                "{case:?}: coordinator {:.0}%, worker {:.0}%, server {:.0}%",
                share(|r| r.own),
                share(|r| r.workers),
                share(|r| r.server)
            )
        })
        .collect();
    println!(
        "\nSystem time's share of each process's CPU (medians): {}",
        systems.join("; ")
    );
    if let Some(k) = cases.iter().position(|&case| case == Case::OneChunkJobs) {
        let runs = &samples[k];
        let per_job = |wall: f64| wall / ONE_CHUNK_JOBS as f64 * 1e3;
        println!(
            "\nA job of one small chunk, start to end (its results consumer set up, the chunk \
             out and back, its results purged), {ONE_CHUNK_JOBS} jobs one after the other: \
             **{:.2} ms per job** (median; min {:.2}), CPU {:.2} ms per job across the \
             processes, server messages {:.1} in and {:.1} out per job.",
            per_job(median(runs.iter().map(|r| r.wall))),
            per_job(min(runs.iter().map(|r| r.wall))),
            per_job(median(runs.iter().map(Sample::cpu))),
            median(runs.iter().map(|r| r.messages_in as f64)) / ONE_CHUNK_JOBS as f64,
            median(runs.iter().map(|r| r.messages_out as f64)) / ONE_CHUNK_JOBS as f64,
        );
    }
}

fn report_scaling(cases: &[Case], samples: &[Vec<Sample>], s: &Settings, chunk: Duration) {
    let find = |wanted: Case| {
        cases
            .iter()
            .position(|&case| case == wanted)
            .map(|k| &samples[k])
            .filter(|runs| !runs.is_empty())
    };
    let scaling: Vec<Case> = cases
        .iter()
        .copied()
        .filter(|c| c.kind() == Kind::Scaling)
        .collect();
    if scaling.is_empty() {
        return;
    }
    println!(
        "\n**Scaling, CPU-bound chunks**: {} chunks of {CPU_ITEMS} u64, {:.2} ms of CPU each \
         (calibrated, this thread); `map_remote_unordered({})`, workers of limit {} \
         (`task_blocking`). Speedups are medians of the per-round ratios to the \
         sequential run of the same round.\n",
        s.cpu_chunks,
        chunk.as_secs_f64() * 1e3,
        s.limit,
        s.cpu_worker_limit
    );
    println!(
        "| case | wall ms median | min | speedup | of ideal | CPU ms, all processes | \
         CPU µs/chunk beyond the work |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let sequential = find(Case::Sequential);
    let ideal = find(Case::TwoThreads);
    let ratio = |over: &[Sample], under: &[Sample]| {
        median(over.iter().zip(under).map(|(a, b)| a.wall / b.wall))
    };
    let ideal_speedup = match (sequential, ideal) {
        (Some(seq), Some(two)) => Some(ratio(seq, two)),
        _ => None,
    };
    for case in &scaling {
        let runs = find(*case).expect("ran");
        let wall = median(runs.iter().map(|r| r.wall));
        let speedup = sequential.map(|seq| ratio(seq, runs));
        let of_ideal = match (speedup, ideal_speedup) {
            (Some(x), Some(ideal)) if !matches!(case, Case::Sequential | Case::RemoteOne) => {
                format!("{:.2}", x / ideal)
            }
            _ => String::new(),
        };
        let cpu = median(runs.iter().map(Sample::cpu));
        let beyond = match sequential {
            Some(seq) => {
                let work = median(seq.iter().map(Sample::cpu));
                format!("{:.0}", (cpu - work) / s.cpu_chunks as f64 * 1e6)
            }
            None => String::new(),
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {of_ideal} | {:.0} | {beyond} |",
            case.name(s),
            wall * 1e3,
            min(runs.iter().map(|r| r.wall)) * 1e3,
            speedup.map_or(String::new(), |x| format!("{x:.2}")),
            cpu * 1e3,
        );
    }
    if let (Some(one), Some(two)) = (find(Case::RemoteOne), find(Case::RemoteTwo)) {
        let per_round: Vec<f64> = one.iter().zip(two).map(|(a, b)| a.wall / b.wall).collect();
        let scale = median(per_round.iter().copied());
        let by_min = min(one.iter().map(|r| r.wall)) / min(two.iter().map(|r| r.wall));
        print!(
            "\nSpeedup from 1 worker process to 2: {scale:.2} (median of rounds; {:.2}–{:.2} \
             across rounds; {by_min:.2} from the minimums)",
            min(per_round.iter().copied()),
            max(per_round.iter().copied())
        );
        match (sequential, ideal, ideal_speedup) {
            (Some(seq), Some(two_threads), Some(ideal)) => {
                let ideal_by_min =
                    min(seq.iter().map(|r| r.wall)) / min(two_threads.iter().map(|r| r.wall));
                println!(
                    "; the machine's ideal in the same rounds {ideal:.2} ({ideal_by_min:.2} from \
                     the minimums): **{:.2} of the ideal** ({:.2} from the minimums; target 0.85).",
                    scale / ideal,
                    by_min / ideal_by_min
                );
            }
            _ => println!("."),
        }
    }
}

fn report_calls(calls: &[(String, String)]) {
    let rows: Vec<(&String, Vec<&str>)> = calls
        .iter()
        .filter(|(name, _)| name.starts_with("cpu"))
        .map(|(name, line)| (name, line.split_whitespace().collect()))
        .collect();
    if rows.iter().all(|(_, fields)| fields.get(1) == Some(&"0")) {
        return;
    }
    println!(
        "\n**Inside the worker processes** (every CPU-bound call, warm-up included; medians; a \
         gap is from the end of one call to the start of the next in the same process, \
         inside a job: its result out, its acknowledgement, the next chunk in)\n"
    );
    println!("| worker | calls | call wall µs | call CPU µs | gaps | gap µs median | gap µs p90 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, fields) in rows {
        // `calls N wall W cpu C gaps G gap M gap90 P`
        let field = |key: &str| {
            fields
                .iter()
                .position(|f| *f == key)
                .and_then(|i| fields.get(i + 1))
                .copied()
                .unwrap_or("?")
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            field("calls"),
            field("wall"),
            field("cpu"),
            field("gaps"),
            field("gap"),
            field("gap90")
        );
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("worker") {
        argv.next();
        return worker_main(argv);
    }
    let mut s = Settings {
        rounds: 7,
        limit: 32,
        worker_limit: 8,
        cpu_worker_limit: 1,
        worker_threads: 2,
        serve_spawned: false,
        small_chunks: 5_000,
        large_chunks: 500,
        cpu_chunks: 300,
        chunk_ms: 5,
        cpu_rounds: None,
    };
    let mut filters: Vec<String> = Vec::new();
    while let Some(arg) = argv.next() {
        let parsed = match arg.as_str() {
            "--rounds" => number(argv.next()).map(|n| s.rounds = n as usize),
            "--limit" => number(argv.next()).map(|n| s.limit = n as usize),
            "--worker-limit" => number(argv.next()).map(|n| s.worker_limit = n as usize),
            "--cpu-worker-limit" => number(argv.next()).map(|n| s.cpu_worker_limit = n as usize),
            "--worker-threads" => number(argv.next()).map(|n| s.worker_threads = n as usize),
            "--serve-spawned" => {
                s.serve_spawned = true;
                Some(())
            }
            "--small-chunks" => number(argv.next()).map(|n| s.small_chunks = n),
            "--large-chunks" => number(argv.next()).map(|n| s.large_chunks = n),
            "--cpu-chunks" => number(argv.next()).map(|n| s.cpu_chunks = n),
            "--chunk-ms" => number(argv.next()).map(|n| s.chunk_ms = n),
            "--cpu-rounds" => number(argv.next()).map(|n| s.cpu_rounds = Some(n)),
            "--case" => argv.next().map(|text| filters.push(text)),
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("bad argument {arg:?} (or its value)\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let mut cases: Vec<Case> = Case::ALL.to_vec();
    if !filters.is_empty() {
        cases.retain(|case| {
            let name = format!("{} {case:?}", case.name(&s)).to_lowercase();
            filters
                .iter()
                .any(|text| name.contains(&text.to_lowercase()))
        });
        if cases.is_empty() {
            eprintln!("no case matches {filters:?}");
            return ExitCode::from(2);
        }
    }

    // Calibrate first, on a machine this program does not load yet.
    let (rounds, chunk) = match s.cpu_rounds {
        Some(rounds) => {
            let chunk = &cpu_chunks(1, rounds)[0];
            let started = Instant::now();
            black_box(cpu_work(chunk));
            (rounds, started.elapsed())
        }
        None => calibrate(Duration::from_millis(s.chunk_ms)),
    };
    eprintln!(
        "calibration: {rounds} rounds of the integer mix per item, {:.2} ms per chunk of \
         {CPU_ITEMS} items (--cpu-rounds {rounds} repeats it)",
        chunk.as_secs_f64() * 1e3
    );

    let binary = std::env::var("FLOWGATE_NATS_SERVER").unwrap_or_else(|_| DEFAULT_SERVER.into());
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|error| format!("{binary}: {error}"));
    let server = Server::start(&binary);
    eprintln!(
        "{version} at {} (store {})",
        server.url,
        server.dir.display()
    );
    let mut workers = Workers {
        children: Vec::new(),
        spawned: s.serve_spawned,
        outputs: Vec::new(),
    };
    let pids = [
        workers.spawn(&server.url, s.worker_limit, s.worker_threads, "trivial"),
        workers.spawn(&server.url, s.worker_limit, 1, "trivial-current"),
        workers.spawn(&server.url, s.cpu_worker_limit, s.worker_threads, "cpu-one"),
        workers.spawn(&server.url, s.cpu_worker_limit, s.worker_threads, "cpu-two"),
        workers.spawn(&server.url, s.cpu_worker_limit, s.worker_threads, "cpu-two"),
    ];
    eprintln!(
        "server pid {}; worker pids: trivial {}, trivial-current {}, cpu-one {}, cpu-two {} and {}",
        server.child.id(),
        pids[0],
        pids[1],
        pids[2],
        pids[3],
        pids[4]
    );

    let runtime = multi_thread_runtime(2);
    let broker = runtime
        .block_on(NatsBroker::connect(&server.url))
        .unwrap_or_else(|error| panic!("{error}"));
    let mut bench = Bench {
        settings: s,
        runtime,
        broker,
        server: server.child.id(),
        monitor: server.monitor,
        workers: workers.pids(),
        chunks: Arc::new(cpu_chunks(s.cpu_chunks as usize, rounds)),
        cpu_sum: None,
    };

    // Warm up every path (connections, consumers, the blocking threads), unmeasured.
    for &case in &cases {
        let count = match case.kind() {
            Kind::Throughput => 20,
            Kind::Latency => 2,
            Kind::Scaling => 4,
        };
        bench.run(case, count);
    }

    let load_before = load_average();
    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for round in 0..s.rounds {
        // Each round starts one case further on, so no case always runs first.
        for k in (0..cases.len()).map(|i| (i + round) % cases.len()) {
            let sample = bench.measure(cases[k]);
            eprintln!(
                "round {}  {:<62} {:8.1} ms wall {:8.1} ms CPU (own {:.1}, workers {:.1}, server {:.1})",
                round + 1,
                cases[k].name(&s),
                sample.wall * 1e3,
                sample.cpu() * 1e3,
                sample.own.total() * 1e3,
                sample.workers.total() * 1e3,
                sample.server.total() * 1e3,
            );
            samples[k].push(sample);
        }
    }
    let load_after = load_average();

    let runtime = if s.worker_threads == 1 {
        "current_thread runtime".to_owned()
    } else {
        format!("multi_thread runtime with {} workers", s.worker_threads)
    };
    let serving = if s.serve_spawned {
        "in a spawned task"
    } else {
        "in block_on"
    };
    println!(
        "{version}, loopback, store on {}; coordinator: multi_thread runtime with 2 workers; \
         worker processes: {runtime}, serving {serving}; {} interleaved rounds in {:.0} s; \
         load average {load_before} before, {load_after} after",
        std::env::temp_dir().display(),
        s.rounds,
        started.elapsed().as_secs_f64()
    );
    drop(bench);
    let calls = workers.stop();
    report_throughput(&cases, &samples, &s);
    report_scaling(&cases, &samples, &s, chunk);
    report_calls(&calls);
    drop(workers);
    drop(server);
    ExitCode::SUCCESS
}
