//! The one error type of this crate.

use crate::Compression;

/// Why a Produce partition's record bytes were refused.
///
/// The server maps these to Kafka error codes: [`RecordError::Corrupt`] to
/// `CORRUPT_MESSAGE`, [`RecordError::Invalid`] to `INVALID_RECORD` (or its era's
/// equivalent), [`RecordError::UnsupportedCompression`] to
/// `UNSUPPORTED_COMPRESSION_TYPE`, and the two limits to `MESSAGE_TOO_LARGE` or
/// `INVALID_RECORD` as it sees fit.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes are damaged: CRC mismatch, truncated entry, bad length or varint,
    /// undecodable compressed data, trailing garbage.
    #[error("corrupt records: {0}")]
    Corrupt(String),
    /// The bytes are intact but break a format rule: unknown magic, codec 5-7, zstd in
    /// magic 0/1, compressed inner message, inconsistent record count, ...
    #[error("invalid records: {0}")]
    Invalid(String),
    /// The codec is valid but disabled by [`crate::DecodeOptions`].
    #[error("unsupported compression: {0:?}")]
    UnsupportedCompression(Compression),
    /// Decompressing would produce more than `limit` bytes.
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The configured [`crate::DecodeOptions::max_decompressed_bytes`].
        limit: usize,
    },
    /// The input holds more than `limit` records.
    #[error("more than {limit} records")]
    TooManyRecords {
        /// The configured [`crate::DecodeOptions::max_records`].
        limit: usize,
    },
}

impl RecordError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        RecordError::Corrupt(msg.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        RecordError::Invalid(msg.into())
    }
}
