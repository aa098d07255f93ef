//! Exit codes, and how an error says which one it ends the program with.
//!
//! Every error type implements [`Coded`], with an exhaustive `match` over
//! its variants, so a new variant cannot be added without deciding its
//! code; a wrapping variant asks the error it wraps. `crate::exit_code`
//! asks the outermost error of a chain that knows its code, and a test
//! checks that every error type in the source is known there.
//!
//! The codes follow restic where it has one (11: the lock is held, 12:
//! the key is wrong), so scripts and the npm wrapper can tell "busy" and
//! "wrong key" from "broken" without reading the message.

/// How the program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything as asked.
    Success,
    /// Failed (the message says what to check), or a check failed.
    Failure,
    /// Invalid configuration or usage.
    Usage,
    /// Done, with warnings.
    Warnings,
    /// Another cofre process holds the lock (or another daemon runs).
    Locked,
    /// No key opens the archive: none given, or the wrong one.
    NoKey,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Warnings => 3,
            Exit::Locked => 11,
            Exit::NoKey => 12,
        }
    }
}

/// An error that knows the exit code it ends the program with.
pub trait Coded {
    /// The exit code.
    fn exit(&self) -> Exit;
}
