//! Kafka error codes loggate sends, and the code each client era understands.

/// Kafka error codes (`org.apache.kafka.common.protocol.Errors`).
pub mod code {
    pub const NONE: i16 = 0;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;
    pub const INVALID_RECORD: i16 = 87;
}

/// TOPIC_AUTHORIZATION_FAILED, except for requests of version 0 (Produce and Metadata v0
/// are Kafka 0.8's, which knows no authorization code): UNKNOWN_TOPIC_OR_PARTITION.
pub fn topic_authorization_failed(version: i16) -> i16 {
    if version == 0 {
        code::UNKNOWN_TOPIC_OR_PARTITION
    } else {
        code::TOPIC_AUTHORIZATION_FAILED
    }
}

/// Why one partition of a Produce request failed, before era translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceError {
    UnknownTopicOrPartition,
    TopicAuthorizationFailed,
    CorruptMessage,
    InvalidRecord,
    MessageTooLarge,
    InvalidRequiredAcks,
    UnsupportedCompression,
    StorageError,
    TransactionsNotSupported,
    /// Storage did not confirm the write within the request's timeout (it may still land).
    Timeout,
    /// Idempotent producer: a sequence gap or reordering.
    OutOfOrderSequence,
    /// Idempotent producer: a duplicate older than the batches remembered (clients treat
    /// it as success).
    DuplicateSequence,
    /// Idempotent producer: an epoch older than the current one (fenced).
    InvalidProducerEpoch,
    /// Idempotent producer with no state here and a sequence other than 0.
    UnknownProducerId,
}

impl ProduceError {
    /// The error's name, as in Kafka's `Errors` where one exists (a metric label).
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            Self::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            Self::CorruptMessage => "CORRUPT_MESSAGE",
            Self::InvalidRecord => "INVALID_RECORD",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
            Self::UnsupportedCompression => "UNSUPPORTED_COMPRESSION_TYPE",
            Self::StorageError => "KAFKA_STORAGE_ERROR",
            Self::TransactionsNotSupported => "TRANSACTIONS_NOT_SUPPORTED",
            Self::Timeout => "REQUEST_TIMED_OUT",
            Self::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            Self::DuplicateSequence => "DUPLICATE_SEQUENCE_NUMBER",
            Self::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            Self::UnknownProducerId => "UNKNOWN_PRODUCER_ID",
        }
    }

    /// The code to send a client that speaks Produce `version`: never a code its era
    /// does not know, and always one it retries when the failure is transient.
    pub fn code_for(self, version: i16) -> i16 {
        use code::*;
        match self {
            Self::UnknownTopicOrPartition => UNKNOWN_TOPIC_OR_PARTITION,
            Self::TopicAuthorizationFailed => topic_authorization_failed(version),
            Self::CorruptMessage => CORRUPT_MESSAGE,
            Self::InvalidRecord if version < 8 => CORRUPT_MESSAGE,
            Self::InvalidRecord => INVALID_RECORD,
            Self::MessageTooLarge => MESSAGE_TOO_LARGE,
            Self::InvalidRequiredAcks => INVALID_REQUIRED_ACKS,
            Self::UnsupportedCompression => UNSUPPORTED_COMPRESSION_TYPE,
            // KAFKA_STORAGE_ERROR exists from Produce v4; older clients retry NOT_LEADER.
            Self::StorageError if version < 4 => NOT_LEADER_OR_FOLLOWER,
            Self::StorageError => KAFKA_STORAGE_ERROR,
            Self::TransactionsNotSupported => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            Self::Timeout => REQUEST_TIMED_OUT,
            Self::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
            Self::DuplicateSequence => DUPLICATE_SEQUENCE_NUMBER,
            Self::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
            // UNKNOWN_PRODUCER_ID exists from Kafka 1.0 (Produce v5); 0.11 clients know 45.
            Self::UnknownProducerId if version < 5 => OUT_OF_ORDER_SEQUENCE_NUMBER,
            Self::UnknownProducerId => UNKNOWN_PRODUCER_ID,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_clients_get_codes_they_know() {
        assert_eq!(ProduceError::StorageError.code_for(3), code::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(ProduceError::StorageError.code_for(4), code::KAFKA_STORAGE_ERROR);
        assert_eq!(ProduceError::InvalidRecord.code_for(7), code::CORRUPT_MESSAGE);
        assert_eq!(ProduceError::InvalidRecord.code_for(8), code::INVALID_RECORD);
        assert_eq!(ProduceError::TopicAuthorizationFailed.code_for(0), code::UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(ProduceError::TopicAuthorizationFailed.code_for(2), code::TOPIC_AUTHORIZATION_FAILED);
    }
}
