//! A local anvil node: found in the project's `.tools/`, started on a free port, stopped
//! gracefully so that its state file is written.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::EvmError;

/// How to start anvil.
#[derive(Debug, Clone)]
pub struct AnvilOptions {
    /// The anvil binary.
    pub binary: PathBuf,
    /// Chain id to report.
    pub chain_id: u64,
    /// Port; 0 lets the OS choose.
    pub port: u16,
    /// Where to load state from and dump it to (kept across runs); `None` for a throwaway chain.
    pub state_file: Option<PathBuf>,
    /// Seconds between blocks; `None` mines a block per transaction.
    pub block_time: Option<u64>,
}

/// A running anvil process.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
    port: u16,
    chain_id: u64,
}

const BINARY_IN_TOOLS: &str = ".tools/bin/anvil";

/// Finds the anvil binary: `$COFFER_ANVIL`, else `.tools/bin/anvil` in the current directory or
/// any parent, else next to the running executable's ancestors, else `anvil` on `PATH`.
pub fn locate_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COFFER_ANVIL") {
        return Some(PathBuf::from(path));
    }
    let search = |start: &Path| {
        start
            .ancestors()
            .map(|dir| dir.join(BINARY_IN_TOOLS))
            .find(|candidate| candidate.is_file())
    };
    std::env::current_dir()
        .ok()
        .and_then(|dir| search(&dir))
        .or_else(|| std::env::current_exe().ok().and_then(|exe| search(&exe)))
        .or_else(on_path)
}

/// `anvil` on `PATH`, where a Foundry user has it.
fn on_path() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("anvil"))
        .find(|candidate| candidate.is_file())
}

impl Anvil {
    /// Starts anvil and waits until it listens.
    ///
    /// # Errors
    /// [`EvmError::Process`] when the binary cannot run or does not report a listening address
    /// within 30 seconds.
    pub async fn start(options: &AnvilOptions) -> Result<Self, EvmError> {
        let mut command = Command::new(&options.binary);
        command
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(options.port.to_string())
            .arg("--chain-id")
            .arg(options.chain_id.to_string())
            .arg("--accounts")
            .arg("10")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(state) = &options.state_file {
            command
                .arg("--state")
                .arg(state)
                .arg("--state-interval")
                .arg("2");
        }
        if let Some(seconds) = options.block_time {
            command.arg("--block-time").arg(seconds.to_string());
        }
        let mut child = command.spawn().map_err(|error| EvmError::Process {
            what: "starting anvil",
            detail: format!("{}: {error}", options.binary.display()),
        })?;
        let stdout = child.stdout.take().ok_or_else(|| EvmError::Process {
            what: "starting anvil",
            detail: "no stdout".to_owned(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(address) = line.strip_prefix("Listening on ") {
                    return address
                        .trim()
                        .rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok());
                }
            }
            None
        };
        let port = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| EvmError::Process {
                what: "starting anvil",
                detail: "it did not report a listening address within 30 s".to_owned(),
            })?;
        // Keep draining stdout so anvil never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            chain_id: options.chain_id,
        })
    }

    /// The HTTP RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The chain id it reports.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Kills the process at once, without dumping state: a simulated crash.
    ///
    /// # Errors
    /// [`EvmError::Process`] if the process cannot be signalled.
    pub async fn kill(mut self) -> Result<(), EvmError> {
        self.child.kill().await.map_err(|error| EvmError::Process {
            what: "killing anvil",
            detail: error.to_string(),
        })
    }

    /// Asks anvil to exit (SIGTERM, so it writes its state file) and waits up to 10 seconds
    /// before killing it.
    ///
    /// # Errors
    /// [`EvmError::Process`] if the process cannot be signalled.
    pub async fn stop(mut self) -> Result<(), EvmError> {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.kill().await
    }
}
