//! Who is calling: the token check a hello goes through.

use crate::protocol::Peer;

/// Result of checking a hello's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed token or bad signature.
    Invalid(String),
    /// The token's expiry has passed.
    Expired,
}

/// Checks the token in a hello. `check_expiry` is false for a resume: a session outlives
/// the token that opened it.
pub trait Authenticator: Send {
    fn authenticate(&self, token: &str, now_ms: u64, check_expiry: bool)
        -> Result<Peer, AuthError>;
}

/// `--dev` mode: the token *is* the identity (`alice`, or `alice:Alice Smith` to set a
/// display name). Anyone can be anyone: for local use only, and the server says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevAuth;

impl Authenticator for DevAuth {
    fn authenticate(
        &self,
        token: &str,
        _now_ms: u64,
        _check_expiry: bool,
    ) -> Result<Peer, AuthError> {
        let (id, name) = token.split_once(':').unwrap_or((token, token));
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if !valid {
            return Err(AuthError::Invalid(
                "dev identity must be 1-128 characters of [A-Za-z0-9-_.@]".into(),
            ));
        }
        if name.is_empty() || name.len() > 128 {
            return Err(AuthError::Invalid(
                "display name must be 1-128 bytes".into(),
            ));
        }
        Ok(Peer {
            id: id.to_owned(),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(token: &str) -> Result<Peer, AuthError> {
        DevAuth.authenticate(token, 0, true)
    }

    #[test]
    fn dev_token_is_the_identity_with_an_optional_display_name() {
        assert_eq!(
            dev("alice"),
            Ok(Peer {
                id: "alice".into(),
                name: "alice".into()
            })
        );
        assert_eq!(
            dev("bob@example.com:Bob Smith"),
            Ok(Peer {
                id: "bob@example.com".into(),
                name: "Bob Smith".into()
            })
        );
    }

    #[test]
    fn dev_token_refuses_odd_identities_and_empty_names() {
        for bad in ["", "al ice", "a/b", ":Name", "alice:", &"x".repeat(129)] {
            assert!(
                matches!(dev(bad), Err(AuthError::Invalid(_))),
                "{bad:?} was accepted"
            );
        }
        assert!(dev(&"x".repeat(128)).is_ok());
    }
}
