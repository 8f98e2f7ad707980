//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Shorthand for returning a [`BadInput`] error.
pub fn bad_input<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(BadInput(message.into()).into())
}

/// The exit code for an error: engine errors know theirs; marked input errors are 2.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<engine::Error>() {
            return e.exit_code() as u8;
        }
        if cause.downcast_ref::<BadInput>().is_some() {
            return 2;
        }
    }
    1
}

/// The error and its causes, leaving out causes whose text the message already contains
/// (library errors often embed their source).
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
