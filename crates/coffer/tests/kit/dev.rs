//! `coffer dev` in a test: started, its summary read, stopped with Ctrl-C.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coffer::dev::Summary;
use tokio::process::{Child, Command};

/// `coffer dev`, stopped with Ctrl-C when dropped, so that it stops its chains itself (a
/// failing test too).
pub struct Dev {
    /// The process.
    pub child: Child,
    /// The summary it wrote.
    pub summary: Summary,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
            // Give it time to stop its chains before the child is killed outright (it is
            // spawned with kill_on_drop): a failing test must not leave anvil nodes behind.
            for _ in 0..200 {
                if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Dev {
    /// Starts `coffer dev` with its data in `data_dir` (free ports for the API and the chains,
    /// the summary at `data_dir/out/summary.json`), plus the `extra` arguments; returns it once
    /// it has written its summary, with the banner it printed.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> (Dev, String) {
        let summary_path = data_dir.join("out/summary.json");
        let _ = std::fs::remove_file(&summary_path);
        let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["dev", "--port", "0", "--rpc-ports-from", "0", "--data-dir"])
            .arg(data_dir)
            .arg("--summary")
            .arg(&summary_path)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("COFFER_MASTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("coffer dev starts");
        let mut dev = Dev::when_summarised(child, &summary_path).await;
        let banner = read_banner(&mut dev.child).await;
        (dev, banner)
    }

    /// Waits up to 60 s for `child`, a starting `coffer dev`, to write its summary to
    /// `summary_path`.
    pub async fn when_summarised(mut child: Child, summary_path: &Path) -> Dev {
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(summary_path) {
                let summary: Summary = serde_json::from_str(&text).expect("summary is JSON");
                return Dev { child, summary };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("coffer dev exited early with {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("coffer dev wrote no summary within 60 s");
    }

    /// Stops `coffer dev` with Ctrl-C and waits until it and its chains are gone.
    pub async fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("coffer dev stops within 30 s")
            .unwrap();
        assert!(status.success(), "coffer dev exited with {status}");
    }
}

async fn read_banner(child: &mut Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut banner = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
    {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // Keep reading, as a terminal would, so coffer dev never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    banner
}
