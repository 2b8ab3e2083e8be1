//! Typed errors. `ConfigError` is everything wrong with what the user asked for (reported before
//! any socket is opened); `RunError` is what stopped a run that had started.

use std::fmt;
use std::io;

/// The user's request cannot be run as given; nothing was sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not `ws://HOST[:PORT][/PATH]`.
    BadUrl(String),
    /// The target or a source address is outside 127.0.0.0/8 and ::1. This tool only ever sends
    /// traffic to this machine.
    NotLoopback(String),
    /// `--source` is not `A`, `A-B` or a comma list of those.
    BadSource(String),
    /// Any other invalid option combination, with the reason.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(s) => write!(f, "bad URL: {s}"),
            Self::NotLoopback(s) => write!(
                f,
                "refusing to target {s}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
            ),
            Self::BadSource(s) => write!(f, "bad --source: {s}"),
            Self::Invalid(s) => write!(f, "invalid options: {s}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A run could not complete.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The request was invalid; see [`ConfigError`].
    Config(ConfigError),
    /// A system call outside any single connection failed (creating the poller, spawning a
    /// thread or a worker process, writing an output file).
    Io(io::Error),
    /// A worker thread or process failed or returned something unreadable.
    Worker(String),
    /// A stored run (JSON or serialized histogram) could not be decoded.
    Decode(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Worker(s) => write!(f, "worker failed: {s}"),
            Self::Decode(s) => write!(f, "cannot decode: {s}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}
