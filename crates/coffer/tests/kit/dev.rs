//! `coffer dev` in a test: started, its summary read, stopped with Ctrl-C.

use std::path::Path;
use std::time::Duration;

use coffer::dev::Summary;
use tokio::process::Child;

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
        }
    }
}

impl Dev {
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
