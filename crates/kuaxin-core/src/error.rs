//! One error type for the libraries; messages name the file, node or tensor at fault.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The model or an input is malformed or inconsistent.
    Invalid,
    /// Valid, but not supported by kuaxin (op, dtype, attribute value).
    Unsupported,
    /// A back end failed (device missing, out of memory, compile error).
    Backend,
    /// Reading or writing a file failed.
    Io,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Invalid,
            message: msg.into(),
        }
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Unsupported,
            message: msg.into(),
        }
    }
    pub fn backend(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Backend,
            message: msg.into(),
        }
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Io,
            message: msg.into(),
        }
    }
    /// Prefixes the message with where it happened ("node 'x' (Conv)").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
    pub fn is_unsupported(&self) -> bool {
        self.kind == ErrorKind::Unsupported
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Adds context to a `Result`'s error.
pub trait ResultExt<T> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(ctx))
    }
    fn with_ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[macro_export]
macro_rules! bail_invalid {
    ($($t:tt)*) => { return Err($crate::Error::invalid(format!($($t)*))) };
}
#[macro_export]
macro_rules! bail_unsupported {
    ($($t:tt)*) => { return Err($crate::Error::unsupported(format!($($t)*))) };
}
