//! Named crash points: places in the money paths where a test can make the process die, as a
//! `kill -9` would, at an exact step rather than at a random moment.
//!
//! A crash point is compiled in only with the `crash-points` feature, which the binary's own
//! test build turns on (through a dev-dependency) and a release build never does; without it
//! [`crash_point!`](crate::crash_point) expands to nothing. With it, a point fires when the
//! `FAILPOINTS` environment variable (read once by [`arm`], in the `fail` crate's syntax)
//! gives it the action `return`, e.g. `FAILPOINTS=settle.after_journal=return`, or
//! `settle.after_journal=1*off->return` to fire on the second pass. A fired point writes one
//! line to standard error and exits with [`CRASH_EXIT_CODE`] at once: no destructor runs, no
//! buffered work is flushed, no transaction is committed.
//!
//! The points, in the order money moves through them:
//! - `settle.after_claim`: an x402 settlement is claimed in the journal, nothing signed;
//! - `settle.after_journal`: its transaction is signed and journaled, not yet sent;
//! - `settle.after_broadcast`: the transaction was handed to the node, its outcome not
//!   recorded;
//! - `watcher.after_fetch`: the watcher read a block range's transfers, nothing committed;
//! - `dispatcher.after_send`: a webhook was delivered, its delivery not recorded.

/// The exit status of a process stopped at a crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

/// Whether crash points are compiled into this build.
pub const COMPILED_IN: bool = cfg!(feature = "crash-points");

#[cfg(feature = "crash-points")]
#[doc(hidden)]
pub use fail;

/// Arms the crash points named in `FAILPOINTS`; call once at start-up. Does nothing in a
/// build without crash points.
///
/// # Panics
/// When `FAILPOINTS` is set but malformed (only in a build with crash points).
pub fn arm() {
    #[cfg(feature = "crash-points")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Stops the process at crash point `name`.
#[doc(hidden)]
pub fn stop_at(name: &str) -> ! {
    eprintln!("crash point {name}: the process stops here");
    std::process::exit(CRASH_EXIT_CODE)
}

/// A named crash point (see the [module](crate::crash)); nothing in a build without them.
#[cfg(feature = "crash-points")]
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        $crate::crash::fail::fail_point!($name, |_| $crate::crash::stop_at($name))
    };
}

/// A named crash point (see the [module](crate::crash)); nothing in a build without them.
#[cfg(not(feature = "crash-points"))]
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {};
}
