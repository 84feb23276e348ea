//! Errors with their causes, for messages and logs that say what actually
//! went wrong (`cache disk is full while writing a body: No space left on
//! device (os error 28)`).

/// `err` followed by each of its sources, `: `-separated. A source whose
/// text the message already holds (`#[error("cache: {0}")]` over its
/// `#[source]`) is not repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Outer {
        message: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn causes_follow_the_message_once() {
        let disk = || std::io::Error::other("No space left on device");
        let err = Outer {
            message: "cache disk is full while writing a body".into(),
            source: disk(),
        };
        assert_eq!(
            chain(&err),
            "cache disk is full while writing a body: No space left on device"
        );
        let err = Outer {
            message: "cache: No space left on device".into(),
            source: disk(),
        };
        assert_eq!(chain(&err), "cache: No space left on device");
    }
}
