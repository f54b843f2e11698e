//! The executor's one error type.
//!
//! The variants of [`Error`] are grouped by what the caller should do about them.
//! [`Error::class`] gives the [`ErrorClass`] the control plane retries, alerts and triages by;
//! [`Error::exit_code`] is the status `cohort segment run` exits with (2 invalid model or
//! segment, or schema mismatch; 3 memory; 1 anything else). An engine error is classified by
//! its root cause (`Error::from_datafusion`); a Ballista job's, by its text
//! (`distributed::classify`).

use datafusion::error::DataFusionError;

/// What can go wrong while loading a model, checking a segment or running it.
///
/// The variants are grouped by what the caller should do about them: `InvalidModel`,
/// `InvalidSegment` and `SchemaMismatch` will fail the same way every time (do not retry);
/// `ResourcesExhausted` may succeed with a larger memory grant; `Source` may be transient;
/// `Internal` is a bug in Cohort.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data model breaks a rule of the spec. `place` is a JSON path such as
    /// `objects[2].fields[0].type`.
    #[error("invalid model: {}{message}", at(place))]
    InvalidModel {
        /// Where in the model document the problem is.
        place: String,
        /// What is wrong, for a person.
        message: String,
    },
    /// The segment breaks a rule of the spec (language, types, paths or guardrails).
    /// `place` is a JSON path such as `filter.and[2].related.where.field`.
    #[error("invalid segment: {}{message}", at(place))]
    InvalidSegment {
        /// Where in the segment document the problem is.
        place: String,
        /// What is wrong, for a person.
        message: String,
    },
    /// A source's real schema does not agree with the model (a declared field is missing
    /// from the data, or has another type): the data cannot match the model.
    #[error("schema mismatch: {place}: {message}")]
    SchemaMismatch {
        /// The object and field, as `objects[i].fields[j]` or the object's name.
        place: String,
        /// What the model says and what the data has.
        message: String,
    },
    /// A source could not be listed or read (missing file, permission, I/O, a value that
    /// does not parse as its declared type).
    #[error("source {object:?} unreadable: {message}")]
    Source {
        /// The object whose source failed.
        object: String,
        /// What the reader said.
        message: String,
    },
    /// The run needed more memory than its pool allows.
    #[error("memory limit of {limit_bytes} bytes was not enough: {message}")]
    ResourcesExhausted {
        /// The size of the memory pool the run had.
        limit_bytes: usize,
        /// The engine's account of which operator asked for how much.
        message: String,
    },
    /// Anything the engine reported while executing that is not one of the above.
    #[error("execution failed: {0}")]
    Execution(String),
    /// A model or segment file could not be read at all.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// A bug in Cohort: an invariant that should hold did not.
    #[error("internal error (a bug in Cohort): {0}")]
    Internal(String),
}

/// `place: ` before a message, or nothing for the document as a whole.
fn at(place: &str) -> String {
    if place.is_empty() { String::new() } else { format!("{place}: ") }
}

/// The executor's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The failure class the control plane retries and alerts by.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidModel { .. } | Error::InvalidSegment { .. } => ErrorClass::Invalid,
            Error::SchemaMismatch { .. } => ErrorClass::SchemaMismatch,
            Error::Source { .. } | Error::Unreadable { .. } => ErrorClass::SourceUnavailable,
            Error::ResourcesExhausted { .. } => ErrorClass::ResourcesExhausted,
            Error::Execution(_) => ErrorClass::Execution,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// The exit status `cohort segment run` uses for this error (spec: 2 invalid, 3 memory,
    /// 1 anything else).
    pub fn exit_code(&self) -> u8 {
        match self.class() {
            ErrorClass::Invalid | ErrorClass::SchemaMismatch => 2,
            ErrorClass::ResourcesExhausted => 3,
            _ => 1,
        }
    }

    pub(crate) fn invalid_segment(place: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidSegment { place: place.into(), message: message.into() }
    }

    /// An invalid model, `place` naming where in its document.
    pub fn invalid_model(place: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidModel { place: place.into(), message: message.into() }
    }

    /// Classifies an engine error raised while executing a plan under a pool of `limit_bytes`.
    pub(crate) fn from_datafusion(error: DataFusionError, limit_bytes: usize) -> Self {
        let root = error.find_root();
        match root {
            DataFusionError::ResourcesExhausted(message) => Error::ResourcesExhausted { limit_bytes, message: message.clone() },
            DataFusionError::ObjectStore(e) => Error::Source { object: String::new(), message: e.to_string() },
            DataFusionError::IoError(e) => Error::Source { object: String::new(), message: e.to_string() },
            DataFusionError::ArrowError(e, _) => match e.as_ref() {
                datafusion::arrow::error::ArrowError::ParseError(m) | datafusion::arrow::error::ArrowError::CsvError(m) => {
                    Error::Source { object: String::new(), message: m.clone() }
                }
                datafusion::arrow::error::ArrowError::IoError(m, _) => Error::Source { object: String::new(), message: m.clone() },
                other => Error::Execution(other.to_string()),
            },
            DataFusionError::ParquetError(e) => Error::Source { object: String::new(), message: e.to_string() },
            DataFusionError::Internal(m) => Error::Internal(m.clone()),
            _ => Error::Execution(error.to_string()),
        }
    }
}

/// The classes of failure, as the control plane, alerting and triage see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The model or segment is invalid: retrying cannot help.
    Invalid,
    /// The data does not match the model: retrying cannot help until the data changes.
    SchemaMismatch,
    /// A source could not be read: may be transient.
    SourceUnavailable,
    /// The memory grant was too small: retry with a larger grant.
    ResourcesExhausted,
    /// The engine failed for another reason.
    Execution,
    /// A bug.
    Internal,
}
