//! One typed error for the library: a kind that says what failed, context that says where.

use std::fmt;

/// What failed, coarse enough to count in metrics and map to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    Io,
    Bind,
    Identity,
    Tls,
    Pairing,
    Store,
    Protocol,
    Admin,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Bind => "bind",
            ErrorKind::Identity => "identity",
            ErrorKind::Tls => "tls",
            ErrorKind::Pairing => "pairing",
            ErrorKind::Store => "store",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub context: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.context)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl Error {
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error { kind, context: context.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error { kind, context: context.into(), source: Some(source.into()) }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a kind and a context to any error: `fs::read(p).or_err(ErrorKind::Io, || format!(..))`.
pub trait ResultExt<T> {
    fn or_err<C: Into<String>>(self, kind: ErrorKind, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn or_err<C: Into<String>>(self, kind: ErrorKind, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::with_source(kind, context(), e))
    }
}

/// The exit statuses of `wolf-rs` (the lifecycle log records the control plane's).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CONFIG: u8 = 3;
    pub const NOT_RUNNING: u8 = 4;
}

impl Error {
    /// The exit status a command that fails with this error ends with.
    pub fn exit_code(&self) -> u8 {
        if self.kind == ErrorKind::Config { exit::CONFIG } else { exit::FAILURE }
    }
}
