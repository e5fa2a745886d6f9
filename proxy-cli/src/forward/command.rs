//! The command `proxy forward -- CMD` runs: passing signals on, and its exit status as
//! proxy's.

use std::fmt;
#[cfg(unix)]
use std::io;
use std::process::{ExitCode, ExitStatus};

/// `proxy forward -- CMD` ended with CMD's status; proxy exits with [`code`](Self::code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandExit {
    /// The exit code: CMD's, 128+N when signal N ended it.
    pub code: u8,
}

// ===== running =====

/// Passes a signal proxy received on to CMD: SIGTERM always, SIGINT unless the terminal
/// sent it to the whole foreground process group, CMD included.
pub(super) fn pass_on(name: &str, pid: Option<u32>, command: &str) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = match name {
            "SIGTERM" => Signal::TERM,
            "SIGINT" if from_terminal() => {
                tracing::info!(
                    signal = name,
                    "the terminal sent it to `{command}` too; forwarding until it exits"
                );
                return;
            }
            "SIGINT" => Signal::INT,
            _ => return,
        };
        let Some(pid) = pid.and_then(|p| Pid::from_raw(p.cast_signed())) else {
            return;
        };
        match kill_process(pid, signal) {
            Ok(()) => tracing::info!(
                signal = name,
                "passed the signal on to `{command}`; forwarding until it exits"
            ),
            // The command has just exited: its status comes next.
            Err(e) => tracing::debug!(signal = name, error = %e, "cannot signal the command"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        tracing::info!(signal = name, "forwarding until `{command}` exits");
    }
}

/// Whether proxy's terminal has proxy's process group in the foreground: a SIGINT then
/// came from Ctrl-C, which the terminal sends to the command as well.
#[cfg(unix)]
fn from_terminal() -> bool {
    use std::os::fd::AsFd;
    let ours = rustix::process::getpgrp();
    let foreground = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::termios::tcgetpgrp(fd).is_ok_and(|group| group == ours)
    };
    foreground(io::stdin().as_fd()) || foreground(io::stdout().as_fd()) || {
        foreground(io::stderr().as_fd())
    }
}

/// The exit code for CMD's status: its code, or 128+N when signal N ended it.
pub(super) fn exit_code_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from((128 + signal) & 0xff).unwrap_or(1);
        }
    }
    1
}

/// The exit code for an error from [`run`](super::run) that carries CMD's status; `None` for other
/// errors. Such an error is no failure of proxy's: print nothing and exit with the code.
pub fn command_exit_code(error: &anyhow::Error) -> Option<ExitCode> {
    error
        .downcast_ref::<CommandExit>()
        .map(|exit| ExitCode::from(exit.code))
}

impl fmt::Display for CommandExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the command exited with code {}", self.code)
    }
}

impl std::error::Error for CommandExit {}
