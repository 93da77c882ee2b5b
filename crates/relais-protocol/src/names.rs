//! Validation of client and room names.

use crate::MAX_NAME_LEN;

/// Why a name (of a client or a room) is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {0} bytes long, the maximum is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name contains a control character (such as a newline or NUL).
    #[error("name contains a control character")]
    ControlCharacter,
    /// The name is not valid UTF-8.
    #[error("name is not valid UTF-8")]
    InvalidUtf8,
}

/// Checks a client name: 1 to [`MAX_NAME_LEN`] bytes of UTF-8, no control
/// characters.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

/// Checks a room name. Rooms follow the same rules as client names.
pub fn validate_room(room: &str) -> Result<(), NameError> {
    validate_name(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_within_the_rules() {
        assert_eq!(validate_name("alice"), Ok(()));
        assert_eq!(validate_name("élodie 🎮"), Ok(()));
        assert_eq!(validate_name(&"x".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn rejects_names_outside_the_rules() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
        assert_eq!(validate_name("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(validate_name("a\0"), Err(NameError::ControlCharacter));
        assert_eq!(validate_name("\u{7f}"), Err(NameError::ControlCharacter));
    }
}
