//! HS256 JWT authentication: the app's backend signs `{sub, name, exp}` with a secret
//! it shares with the server.

use crate::engine::server::{AuthError, Authenticator};
use crate::protocol::Peer;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Verifies HS256 JWTs.
pub struct JwtAuth {
    secret: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    exp: Option<u64>,
}

impl JwtAuth {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// Signs claims (for tests, the load tool and examples of what a backend does).
    pub fn sign(&self, sub: &str, name: &str, exp_secs: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({ "sub": sub, "name": name, "exp": exp_secs });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

impl Authenticator for JwtAuth {
    fn authenticate(
        &self,
        token: &str,
        now_ms: u64,
        check_expiry: bool,
    ) -> Result<Peer, AuthError> {
        if token.len() > 4096 {
            return Err(invalid("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("token is not a JWT (header.payload.signature)"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed JWT header"))?;
        if header.alg != "HS256" {
            return Err(invalid("only HS256 tokens are accepted"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| invalid("malformed JWT signature"))?;
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&sig)
            .map_err(|_| invalid("bad token signature"))?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed JWT claims (need sub, exp)"))?;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(invalid("sub must be 1-256 bytes"));
        }
        let Some(exp) = claims.exp else {
            return Err(invalid("the token has no exp"));
        };
        if check_expiry && exp.saturating_mul(1000) <= now_ms {
            return Err(AuthError::Expired);
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

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn valid_token_is_accepted() {
        let auth = JwtAuth::new("s3cret");
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
        let auth = JwtAuth::new("s3cret");
        let other = JwtAuth::new("not-the-secret");
        let forged = other.sign("alice", "Alice", NOW / 1000 + 60);
        assert!(matches!(
            auth.authenticate(&forged, NOW, true),
            Err(AuthError::Invalid(_))
        ));
        let expired = auth.sign("alice", "Alice", NOW / 1000 - 1);
        assert_eq!(
            auth.authenticate(&expired, NOW, true),
            Err(AuthError::Expired)
        );
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
        let auth = JwtAuth::new("s3cret");
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":99999999999}"#);
        let t = format!("{header}.{payload}.");
        assert!(matches!(
            auth.authenticate(&t, NOW, true),
            Err(AuthError::Invalid(_))
        ));
    }
}
