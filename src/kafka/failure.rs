//! Why a call to a cluster failed, in the two kinds the operator acts on
//! differently: no broker answered (the cluster is unreachable: its client
//! is made again, and the caller retries with back-off), or an answer that
//! refused the request (the client is fine; the request is what to look at).

use std::time::Duration;

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

/// A failed call, in librdkafka's or the broker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No broker answered: nothing within the timeout, or no connection.
    NoAnswer(String),
    /// librdkafka or the broker refused the request.
    Refused(String),
}

impl Failure {
    /// The failure a librdkafka error code stands for.
    pub fn of(code: RDKafkaErrorCode, message: String) -> Self {
        if gave_no_answer(code) {
            Failure::NoAnswer(message)
        } else {
            Failure::Refused(message)
        }
    }

    /// No answer at all within `timeout`.
    pub fn timed_out(timeout: Duration) -> Self {
        Failure::NoAnswer(format!("no answer within {timeout:?}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAnswer(message) | Failure::Refused(message) => f.write_str(message),
        }
    }
}

impl From<RdKafkaError> for Failure {
    fn from(error: RdKafkaError) -> Self {
        let code = match &error {
            RdKafkaError::AdminOp(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        match code {
            Some(code) => Failure::of(code, error.to_string()),
            // A call cancelled or a client that could not be made: what is
            // known is only that nothing answered.
            None => Failure::NoAnswer(error.to_string()),
        }
    }
}

/// Whether `code` means that no broker gave an answer: the connection
/// failed, the request timed out, or the broker to ask is not there (yet).
fn gave_no_answer(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | AllBrokersDown
            | OperationTimedOut
            | TimedOutQueue
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | BrokerNotAvailable
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_timeout_codes_are_no_answer_and_refusals_are_refused() {
        use RDKafkaErrorCode::*;
        let no_answer = [
            RdKafkaError::MetadataFetch(BrokerTransportFailure),
            RdKafkaError::MetadataFetch(OperationTimedOut),
            RdKafkaError::GroupListFetch(AllBrokersDown),
            RdKafkaError::AdminOp(CoordinatorNotAvailable),
            RdKafkaError::Canceled,
        ];
        let refused = [
            RdKafkaError::AdminOp(InvalidArgument),
            RdKafkaError::OffsetFetch(UnknownTopicOrPartition),
            RdKafkaError::ConsumerCommit(GroupAuthorizationFailed),
        ];
        let cases = no_answer
            .into_iter()
            .map(|e| (e, true))
            .chain(refused.into_iter().map(|e| (e, false)));
        for (error, unanswered) in cases {
            let words = error.to_string();
            let failure = Failure::from(error);
            assert_eq!(
                matches!(failure, Failure::NoAnswer(_)),
                unanswered,
                "{words}: {failure:?}"
            );
            assert_eq!(failure.to_string(), words);
        }
    }
}
