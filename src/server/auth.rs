//! HS256 JWT authentication: the app's backend signs `{sub, name, exp}` (optionally
//! `nbf`, `iat`, `aud`, `iss`) with a secret it shares with the server. Parsing, the
//! algorithm check, the signature and `aud`/`iss` are the `jsonwebtoken` crate's; the
//! time claims are checked here against the clock the engine hands in, so that a resume
//! can skip them and tests can use a fixed clock.

use crate::engine::server::{AuthError, Authenticator};
use crate::protocol::Peer;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted: HS256 keys shorter than its 32-byte output are guessable
/// offline from a single token.
pub const MIN_SECRET_BYTES: usize = 32;
/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 4096;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// When set, `aud` must be present and contain this value.
    pub audience: Option<String>,
    /// When set, `iss` must be present and equal this value.
    pub issuer: Option<String>,
    /// When set, a token may not be valid for longer than this (`exp − iat`, or
    /// `exp − now` for a token without `iat`), checked at first connect.
    pub max_lifetime_ms: Option<u64>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_ms: u64,
}

impl Default for JwtRules {
    fn default() -> Self {
        Self {
            audience: None,
            issuer: None,
            max_lifetime_ms: None,
            leeway_ms: 5_000,
        }
    }
}

/// Why a JWT configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtConfigError {
    SecretTooShort { len: usize },
}

impl std::fmt::Display for JwtConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtConfigError::SecretTooShort { len } => write!(
                f,
                "the JWT secret is {len} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)"
            ),
        }
    }
}

impl std::error::Error for JwtConfigError {}

/// Verifies HS256 JWTs (and signs them, for tests, the load tool and as an example of
/// what a backend does).
pub struct JwtAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Signature, algorithm, `aud`, `iss` and the presence of `sub` and `exp`.
    validation: Validation,
    rules: JwtRules,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

impl JwtAuth {
    /// A verifier with default rules. Any secret length is taken here (signers in
    /// tests use this too); [`JwtAuth::verifier`] is what the server starts with.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self::with_rules(secret, JwtRules::default())
    }

    /// The server's verifier: refuses secrets under [`MIN_SECRET_BYTES`].
    pub fn verifier(secret: impl AsRef<[u8]>, rules: JwtRules) -> Result<Self, JwtConfigError> {
        let len = secret.as_ref().len();
        if len < MIN_SECRET_BYTES {
            return Err(JwtConfigError::SecretTooShort { len });
        }
        Ok(Self::with_rules(secret, rules))
    }

    fn with_rules(secret: impl AsRef<[u8]>, rules: JwtRules) -> Self {
        let secret = secret.as_ref();
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        // Time claims are checked in `authenticate` with the handed-in clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        match &rules.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Without a configured audience a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            rules,
        }
    }

    /// Signs `{sub, name, exp}`.
    pub fn sign(&self, sub: &str, name: &str, exp_secs: u64) -> String {
        self.sign_claims(&serde_json::json!({ "sub": sub, "name": name, "exp": exp_secs }))
    }

    /// Signs any claims (tests of `nbf`, `iat`, `aud`, `iss`).
    pub fn sign_claims(&self, claims: &serde_json::Value) -> String {
        // HS256 signing of a JSON value cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad token signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "only HS256 tokens are accepted"
        }
        ErrorKind::InvalidAudience => "the token is not for this audience",
        ErrorKind::InvalidIssuer => "the token is not from the expected issuer",
        ErrorKind::MissingRequiredClaim(_) => {
            "the token lacks a required claim (sub, exp, and aud/iss where configured)"
        }
        ErrorKind::Json(_) => "malformed JWT claims (need sub, exp)",
        _ => "token is not a valid JWT",
    }
}

impl Authenticator for JwtAuth {
    fn authenticate(
        &self,
        token: &str,
        now_ms: u64,
        check_expiry: bool,
    ) -> Result<Peer, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too long"));
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| invalid(describe(e.kind())))?
            .claims;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(invalid("sub must be 1-256 bytes"));
        }
        if check_expiry {
            let leeway = self.rules.leeway_ms;
            if claims.exp.saturating_mul(1000).saturating_add(leeway) <= now_ms {
                return Err(AuthError::Expired);
            }
            if claims
                .nbf
                .is_some_and(|nbf| nbf.saturating_mul(1000) > now_ms.saturating_add(leeway))
            {
                return Err(invalid("the token is not valid yet (nbf)"));
            }
            if let Some(max) = self.rules.max_lifetime_ms {
                let from_ms = claims.iat.map_or(now_ms, |iat| iat.saturating_mul(1000));
                let lifetime = claims.exp.saturating_mul(1000).saturating_sub(from_ms);
                if lifetime > max.saturating_add(leeway) {
                    return Err(invalid(
                        "the token is valid for longer than this server allows",
                    ));
                }
            }
        }
        let name = claims
            .name
            .filter(|n| !n.is_empty() && n.len() <= 256)
            .unwrap_or_else(|| claims.sub.clone());
        Ok(Peer {
            id: claims.sub,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    const NOW: u64 = 1_700_000_000_000;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_token_is_accepted() {
        let auth = JwtAuth::new(SECRET);
        let t = auth.sign("alice", "Alice", NOW / 1000 + 60);
        let peer = auth.authenticate(&t, NOW, true).unwrap();
        assert_eq!(
            peer,
            Peer {
                id: "alice".into(),
                name: "Alice".into()
            }
        );
    }

    #[test]
    fn forged_and_expired_tokens_are_refused() {
        let auth = JwtAuth::new(SECRET);
        let other = JwtAuth::new("not-the-secret-not-the-secret-xx");
        let forged = other.sign("alice", "Alice", NOW / 1000 + 60);
        assert!(matches!(
            auth.authenticate(&forged, NOW, true),
            Err(AuthError::Invalid(_))
        ));
        let expired = auth.sign("alice", "Alice", NOW / 1000 - 6);
        assert_eq!(
            auth.authenticate(&expired, NOW, true),
            Err(AuthError::Expired)
        );
        // Within the leeway a clock a little behind the backend's is forgiven.
        let just_expired = auth.sign("alice", "Alice", NOW / 1000 - 1);
        assert!(auth.authenticate(&just_expired, NOW, true).is_ok());
        // At resume, expiry is not checked.
        assert!(auth.authenticate(&expired, NOW, false).is_ok());
        assert!(matches!(
            auth.authenticate("garbage", NOW, true),
            Err(AuthError::Invalid(_))
        ));
        // A payload swapped under a valid signature fails.
        let good = auth.sign("alice", "Alice", NOW / 1000 + 60);
        let evil = auth.sign("mallory", "M", NOW / 1000 + 60);
        let g: Vec<&str> = good.split('.').collect();
        let e: Vec<&str> = evil.split('.').collect();
        let swapped = format!("{}.{}.{}", g[0], e[1], g[2]);
        assert!(matches!(
            auth.authenticate(&swapped, NOW, true),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let auth = JwtAuth::new(SECRET);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":99999999999}"#);
        let t = format!("{header}.{payload}.");
        assert!(matches!(
            auth.authenticate(&t, NOW, true),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn short_secrets_are_refused_at_start() {
        let err = JwtAuth::verifier("s3cret", JwtRules::default())
            .err()
            .unwrap();
        assert_eq!(err, JwtConfigError::SecretTooShort { len: 6 });
        assert!(err.to_string().contains("at least 32"));
        assert!(JwtAuth::verifier(SECRET, JwtRules::default()).is_ok());
    }

    #[test]
    fn nbf_is_honoured_with_leeway() {
        let auth = JwtAuth::new(SECRET);
        let exp = NOW / 1000 + 600;
        let later =
            auth.sign_claims(&serde_json::json!({"sub": "a", "exp": exp, "nbf": NOW / 1000 + 60}));
        assert!(matches!(
            auth.authenticate(&later, NOW, true),
            Err(AuthError::Invalid(_))
        ));
        let skewed =
            auth.sign_claims(&serde_json::json!({"sub": "a", "exp": exp, "nbf": NOW / 1000 + 2}));
        assert!(auth.authenticate(&skewed, NOW, true).is_ok());
    }

    #[test]
    fn audience_issuer_and_lifetime_can_be_required() {
        let rules = JwtRules {
            audience: Some("holdfast".into()),
            issuer: Some("https://app.example".into()),
            max_lifetime_ms: Some(3_600_000),
            ..JwtRules::default()
        };
        let auth = JwtAuth::verifier(SECRET, rules).unwrap();
        let exp = NOW / 1000 + 600;
        let good = serde_json::json!({"sub": "a", "exp": exp, "aud": "holdfast", "iss": "https://app.example"});
        assert!(auth
            .authenticate(&auth.sign_claims(&good), NOW, true)
            .is_ok());
        for bad in [
            serde_json::json!({"sub": "a", "exp": exp, "iss": "https://app.example"}),
            serde_json::json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://app.example"}),
            serde_json::json!({"sub": "a", "exp": exp, "aud": "holdfast"}),
            serde_json::json!({"sub": "a", "exp": exp, "aud": "holdfast", "iss": "https://evil.example"}),
            // Valid for a day: longer than the hour allowed.
            serde_json::json!({"sub": "a", "exp": NOW / 1000 + 86_400, "aud": "holdfast", "iss": "https://app.example"}),
            serde_json::json!({"sub": "a", "iat": NOW / 1000 - 10, "exp": NOW / 1000 + 86_400, "aud": "holdfast", "iss": "https://app.example"}),
        ] {
            assert!(
                matches!(
                    auth.authenticate(&auth.sign_claims(&bad), NOW, true),
                    Err(AuthError::Invalid(_))
                ),
                "accepted {bad}"
            );
        }
    }
}
