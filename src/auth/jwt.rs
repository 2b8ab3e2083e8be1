//! The built-in JWT scheme: verifies a bearer token and turns its claims into an [`Identity`].
//!
//! It is an ordinary authenticator (the same signature as [`Hooks::authenticate`]), installed by
//! the server when `jwt_secret` or `jwt_public_key_file` is configured and the application did
//! not set its own. Keys are loaded and checked once at startup, so a bad key file stops the
//! server rather than refusing every client.
//!
//! Accepted: exactly the configured algorithm (HS256/384/512 with a shared secret; RS*, PS*,
//! ES256/384 or EdDSA with a PEM public key). `alg: none` and every other algorithm fail, as do
//! tokens without `exp`, expired or not yet valid (`nbf`) tokens beyond `jwt_leeway`, and,
//! when configured, a wrong `aud` or `iss`. `sub` becomes the user id.
//!
//! [`Hooks::authenticate`]: crate::Hooks::authenticate

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::permissions::{PermissionSpec, Permissions, RoomPatterns};
use super::Identity;
use crate::config::{Config, ConfigError};
use crate::hooks::Reject;

/// The claims shardhub reads; others (`iat`, `jti`, application claims) are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    rooms: RoomPatterns,
    #[serde(default)]
    broadcast: Option<bool>,
    #[serde(default)]
    send: Option<bool>,
}

/// A configured verifier: key, algorithm and claim checks.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    defaults: Arc<Permissions>,
    max_name_bytes: usize,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// The verifier the configuration asks for, `None` if JWT is not configured.
    pub fn from_config(
        cfg: &Config,
        defaults: Arc<Permissions>,
    ) -> Result<Option<Self>, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(m);
        let (secret, file) = (
            cfg.jwt_secret.as_deref(),
            cfg.jwt_public_key_file.as_deref(),
        );
        let alg = match (&cfg.jwt_algorithm, secret, file) {
            (_, None, None) => return Ok(None),
            (_, Some(_), Some(_)) => {
                return Err(bad("set jwt_secret or jwt_public_key_file, not both".into()))
            }
            (Some(a), _, _) => Algorithm::from_str(a)
                .map_err(|_| bad(format!("jwt_algorithm: unknown algorithm {a}")))?,
            (None, Some(_), None) => Algorithm::HS256,
            (None, None, Some(_)) => Algorithm::RS256,
        };
        use Algorithm::*;
        let key = match (alg, secret, file) {
            (HS256 | HS384 | HS512, Some(s), _) => {
                if s.len() < 32 {
                    // RFC 7518 3.2: an HMAC key at least as long as the hash output.
                    return Err(bad("jwt_secret must be at least 32 bytes".into()));
                }
                DecodingKey::from_secret(s.as_bytes())
            }
            (HS256 | HS384 | HS512, None, _) => {
                return Err(bad(format!("jwt_algorithm {alg:?} needs jwt_secret")))
            }
            (_, _, None) => {
                return Err(bad(format!(
                    "jwt_algorithm {alg:?} needs jwt_public_key_file"
                )))
            }
            (_, _, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| ConfigError::Io(path.into(), e))?;
                let key = match alg {
                    RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                        DecodingKey::from_rsa_pem(&pem)
                    }
                    ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
                    EdDSA => DecodingKey::from_ed_pem(&pem),
                    HS256 | HS384 | HS512 => unreachable!("matched above"),
                };
                key.map_err(|e| {
                    bad(format!(
                        "jwt_public_key_file {}: not a {alg:?} public key: {e}",
                        path.display()
                    ))
                })?
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &cfg.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &cfg.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Some(Self {
            key,
            validation,
            defaults,
            max_name_bytes: cfg.max_name_bytes,
        }))
    }

    /// Verifies a token; the error is the short reason sent with the 401.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| describe(e.kind()))?;
        let c = data.claims;
        let sub = c.sub.ok_or("missing claim sub")?;
        if sub.is_empty() || sub.len() > self.max_name_bytes {
            return Err(format!("token sub must be 1-{} bytes", self.max_name_bytes));
        }
        let spec = PermissionSpec {
            rooms: c.rooms,
            broadcast: c.broadcast,
            send: c.send,
        };
        Ok(Identity {
            user: sub,
            permissions: spec.resolve(&self.defaults),
        })
    }

    /// Verifies the token of a request, if it carries one.
    pub(crate) fn authenticate(&self, token: Option<&str>) -> Result<Identity, Reject> {
        match token {
            None => Err(Reject::with_status(401, "a bearer token is required")),
            Some(t) => self
                .verify(t)
                .map_err(|r| Reject::with_status(401, format!("invalid token: {r}"))),
        }
    }
}

/// A short, safe description of why a token failed (no key material, no claim values).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted".into()
        }
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("malformed claim {c}"),
        ErrorKind::Json(_) => "malformed header or claims".into(),
        _ => "malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(tweak: impl FnOnce(&mut Config)) -> JwtVerifier {
        let mut cfg = Config {
            jwt_secret: Some(SECRET.into()),
            ..Config::default()
        };
        tweak(&mut cfg);
        JwtVerifier::from_config(&cfg, Arc::new(Permissions::all()))
            .unwrap()
            .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn claims_become_the_identity() {
        let v = verifier(|_| {});
        let t = token(
            json!({"sub":"alice","exp":now()+60,"rooms":{"join":["chat:*"]},"broadcast":false}),
        );
        let id = v.verify(&t).unwrap();
        assert_eq!(id.user, "alice");
        assert!(id.permissions.join.allows("chat:1"));
        assert!(!id.permissions.join.allows("lobby"));
        assert!(!id.permissions.broadcast);
        assert!(id.permissions.send, "absent: from the defaults");
    }

    #[test]
    fn every_bad_token_has_its_reason() {
        let v = verifier(|c| {
            c.jwt_audience = Some("hub".into());
            c.jwt_leeway = std::time::Duration::from_secs(5);
        });
        let n = now();
        let cases = [
            (json!({"sub":"a","exp":n-60,"aud":"hub"}), "expired"),
            (
                json!({"sub":"a","exp":n+60,"nbf":n+60,"aud":"hub"}),
                "not yet valid",
            ),
            (json!({"sub":"a","aud":"hub"}), "missing claim exp"),
            (json!({"exp":n+60,"aud":"hub"}), "missing claim sub"),
            (
                json!({"sub":"a","exp":n+60,"aud":"other"}),
                "wrong audience",
            ),
            (json!({"sub":"","exp":n+60,"aud":"hub"}), "sub must be"),
            (
                json!({"sub":"a","exp":n+60,"aud":"hub","rooms":{"jion":[]}}),
                "malformed",
            ),
        ];
        for (claims, want) in cases {
            let err = v.verify(&token(claims.clone())).unwrap_err();
            assert!(err.contains(want), "{claims}: {err}");
        }
        // Within the leeway an expired token still passes.
        assert!(v
            .verify(&token(json!({"sub":"a","exp":n-2,"aud":"hub"})))
            .is_ok());
        assert!(v.verify("not.a.token").is_err());
    }

    #[test]
    fn bad_key_configurations_are_refused_at_startup() {
        let perms = || Arc::new(Permissions::all());
        let short = Config {
            jwt_secret: Some("short".into()),
            ..Config::default()
        };
        assert!(JwtVerifier::from_config(&short, perms()).is_err());
        let rs_without_key = Config {
            jwt_secret: Some(SECRET.into()),
            jwt_algorithm: Some("RS256".into()),
            ..Config::default()
        };
        assert!(JwtVerifier::from_config(&rs_without_key, perms()).is_err());
        let unknown = Config {
            jwt_secret: Some(SECRET.into()),
            jwt_algorithm: Some("none".into()),
            ..Config::default()
        };
        assert!(JwtVerifier::from_config(&unknown, perms()).is_err());
        assert!(JwtVerifier::from_config(&Config::default(), perms())
            .unwrap()
            .is_none());
    }
}
