//! Who may connect and what they may do: the decision taken on every WebSocket upgrade.
//!
//! [`Gate::admit`] is pure: an [`UpgradeRequest`] in, a user id, a permission set and the
//! subprotocol to answer out, or the HTTP refusal. In order:
//!
//! 1. `Origin` against `allowed_origins` (403). Requests without `Origin` are not from a
//!    browser page, so cross-site WebSocket hijacking does not apply to them; they pass.
//! 2. The authenticator: the application's [`Hooks::authenticate`], else the built-in JWT
//!    verifier if configured. Either returns an [`Identity`] or a [`Reject`]. With an
//!    authenticator, `?user=` is ignored: the credential decides who the client is.
//! 3. Without one, `?user=` names the user, as before authentication existed.
//!
//! An identity with an empty user is anonymous: allowed only with `allow_anonymous`, named
//! `anon-<session>` by the shard, and given `default_permissions`. Permission sets equal to
//! the defaults share the defaults' one allocation.
//!
//! [`Hooks::authenticate`]: crate::Hooks::authenticate

pub mod jwt;
pub mod permissions;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::engine::iplimit::IpLimits;
use crate::engine::ratelimit::{self, Bucket, Limits};
use crate::hooks::{AuthenticateFn, Reject};
use crate::http::response::Response;
use crate::http::upgrade::UpgradeRequest;
use crate::protocol::close::Close;
use crate::protocol::envelope;
pub use jwt::JwtVerifier;
pub use permissions::{PermissionSpec, Permissions, RoomRules};

/// Who a client is, as an authenticator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id; empty for an anonymous client (see the module docs).
    pub user: String,
    /// What the session may do.
    pub permissions: Permissions,
}

impl Identity {
    /// A user with these permissions.
    pub fn new(user: impl Into<String>, permissions: Permissions) -> Self {
        Self {
            user: user.into(),
            permissions,
        }
    }

    /// An anonymous client: admitted only with `allow_anonymous`, and always given
    /// `default_permissions`.
    pub fn anonymous() -> Self {
        Self::new("", Permissions::none())
    }
}

/// Where a bearer token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `Sec-WebSocket-Protocol: bearer, <token>` (browsers cannot set headers).
    Subprotocol,
    /// `?token=<token>`.
    Query,
}

/// The subprotocol a browser offers to carry a token; the 101 must name it or the browser
/// aborts the connection.
pub const BEARER_SUBPROTOCOL: &str = "bearer";

/// Whether the client offered the `bearer` subprotocol (then the 101 must select it).
pub fn offers_bearer(req: &UpgradeRequest) -> bool {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(','))
        .any(|p| p.trim() == BEARER_SUBPROTOCOL)
}

/// The request's bearer token, looked for in the `Authorization` header, then the
/// subprotocol list (the element after `bearer`), then `?token=`.
pub fn extract_token(req: &UpgradeRequest) -> Option<(String, Carrier)> {
    if let Some(v) = req.header("authorization") {
        let v = v.trim();
        // RFC 7235: the scheme is case-insensitive.
        if let Some((scheme, t)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() {
                return Some((t.trim().to_string(), Carrier::Header));
            }
        }
    }
    let mut offered = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim);
    if offered.any(|p| p == BEARER_SUBPROTOCOL) {
        if let Some(t) = offered.next().filter(|t| !t.is_empty()) {
            return Some((t.to_string(), Carrier::Subprotocol));
        }
    }
    req.query_param("token")
        .filter(|t| !t.is_empty())
        .map(|t| (t, Carrier::Query))
}

/// The `Origin` allowlist.
#[derive(Debug, Clone)]
pub struct Origins {
    any: bool,
    exact: Box<[Box<str>]>,
}

impl Origins {
    /// From `allowed_origins`: `*`, or exact origins such as `https://app.example.com`.
    pub fn new(list: &[String]) -> Self {
        let any = list.iter().any(|o| o == "*");
        let exact = list
            .iter()
            .filter(|o| *o != "*")
            .map(|o| Box::from(o.trim_end_matches('/').to_ascii_lowercase()))
            .collect();
        Self { any, exact }
    }

    /// Whether a request with this `Origin` header (or none) may connect.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.any => true,
            None => true,
            // Scheme and host are case-insensitive (RFC 6454 serializes them lowercase).
            Some(o) => self.exact.iter().any(|e| e.eq_ignore_ascii_case(o.trim())),
        }
    }
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` is not in `allowed_origins` (403).
    Origin(String),
    /// No acceptable credential (401): missing, invalid, or anonymous while that is off.
    Unauthenticated(String),
    /// Refused by the authenticator with its own status.
    Rejected(Reject),
    /// The request itself is malformed (400), e.g. a bad `?user=`.
    BadRequest(String),
}

impl Refusal {
    /// The HTTP response that says so.
    pub fn response(&self) -> Response {
        match self {
            Self::Origin(o) => Response::refusal(403, &not_allowed(o)),
            Self::Unauthenticated(r) => {
                Response::refusal(401, r).with_header("WWW-Authenticate", "Bearer")
            }
            Self::Rejected(r) if r.status == 401 => {
                Response::refusal(401, &r.reason).with_header("WWW-Authenticate", "Bearer")
            }
            Self::Rejected(r) => Response::refusal(r.status, &r.reason),
            Self::BadRequest(r) => Response::refusal(400, r),
        }
    }

    /// The close that refuses a WebSocket upgrade instead of the response, with its reason;
    /// `None` for a malformed request, which keeps its HTTP status. See `docs/protocol.md`,
    /// "Refused upgrades": a browser cannot read the status of a failed upgrade, but it can
    /// read a close code, and the code's class tells it whether to try again.
    pub fn close(&self) -> Option<(Close, String)> {
        match self {
            Self::Origin(o) => Some((Close::Forbidden, not_allowed(o))),
            Self::Unauthenticated(r) => Some((Close::Unauthorized, r.clone())),
            Self::Rejected(r) => Some((Close::for_refusal(r.status), r.reason.clone())),
            Self::BadRequest(_) => None,
        }
    }
}

fn not_allowed(origin: &str) -> String {
    format!("origin {origin} is not allowed")
}

/// An admitted client.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The user id; `None` for anonymous (the shard names it `anon-<session>`).
    pub user: Option<Arc<str>>,
    /// Its permissions.
    pub permissions: Arc<Permissions>,
    /// The subprotocol to select in the 101 response.
    pub subprotocol: Option<&'static str>,
}

/// The server's admission policy, built once from the configuration and the hooks, with the
/// abuse limits the shards apply to every connection.
pub struct Gate {
    /// Per-address connection and handshake limits, shared by all shards.
    pub(crate) ip: IpLimits,
    /// Per-connection message and byte rates.
    pub(crate) rates: Limits,
    /// The clock origin of `ip` and `rates` (nanoseconds since it), the same for every shard.
    pub(crate) epoch: Instant,
    origins: Origins,
    authenticator: Option<Arc<AuthenticateFn>>,
    defaults: Arc<Permissions>,
    allow_anonymous: bool,
    max_name_bytes: usize,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("origins", &self.origins)
            .field("authenticator", &self.authenticator.is_some())
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// The policy for this configuration. The application's authenticator wins over the
    /// built-in JWT one; the JWT key is loaded here, so a bad key fails startup.
    pub fn new(cfg: &Config, custom: Option<Arc<AuthenticateFn>>) -> Result<Self, ConfigError> {
        let defaults = Arc::new(cfg.default_permissions.resolve(&Permissions::all()));
        let jwt = JwtVerifier::from_config(cfg, defaults.clone())?;
        let authenticator = custom.or_else(|| {
            jwt.map(|v| {
                let anon = cfg.allow_anonymous;
                let f: Arc<AuthenticateFn> =
                    Arc::new(move |req: &UpgradeRequest| match extract_token(req) {
                        None if anon => Ok(Identity::anonymous()),
                        t => v.authenticate(t.as_ref().map(|(t, _)| t.as_str())),
                    });
                f
            })
        });
        Ok(Self {
            ip: IpLimits::new(
                cfg.max_connections_per_ip,
                Bucket::new(cfg.handshakes_per_ip_per_sec, cfg.handshakes_per_ip_burst),
            ),
            rates: Limits {
                messages: Bucket::new(cfg.rate_messages_per_sec, cfg.rate_burst_messages),
                // A message larger than the burst could never pass: the burst is raised to
                // max_message_bytes rather than refusing a configuration that only raised it.
                bytes: Bucket::new(
                    cfg.rate_bytes_per_sec,
                    cfg.rate_burst_bytes.max(cfg.max_message_bytes as u64),
                ),
                close_after: cfg.rate_limit_close_after.as_nanos().min(u64::MAX as u128) as u64,
                // One notice a second tells the client without feeding a flood of our own.
                notice_every: ratelimit::seconds(1),
            },
            epoch: Instant::now(),
            origins: Origins::new(&cfg.allowed_origins),
            authenticator,
            defaults,
            allow_anonymous: cfg.allow_anonymous || cfg.echo,
            max_name_bytes: cfg.max_name_bytes,
        })
    }

    /// The permissions of anonymous sessions (`default_permissions`).
    pub fn defaults(&self) -> &Arc<Permissions> {
        &self.defaults
    }

    /// Decides an upgrade; see the module docs for the order of checks.
    pub fn admit(&self, req: &UpgradeRequest) -> Result<Admitted, Refusal> {
        let origin = req.header("origin");
        if !self.origins.allows(origin) {
            return Err(Refusal::Origin(origin.unwrap_or_default().to_string()));
        }
        let subprotocol = offers_bearer(req).then_some(BEARER_SUBPROTOCOL);
        let identity = match &self.authenticator {
            Some(auth) => auth(req).map_err(|r| match r.status {
                401 => Refusal::Unauthenticated(r.reason),
                _ => Refusal::Rejected(r),
            })?,
            None => self.user_from_query(req)?,
        };
        if identity.user.is_empty() {
            if !self.allow_anonymous {
                let why = if self.authenticator.is_some() {
                    "a bearer token is required"
                } else {
                    "a user is required (?user=…)"
                };
                return Err(Refusal::Unauthenticated(why.into()));
            }
            return Ok(Admitted {
                user: None,
                permissions: self.defaults.clone(),
                subprotocol,
            });
        }
        if let Err(e) = envelope::check_name("user", &identity.user, self.max_name_bytes) {
            return Err(Refusal::BadRequest(e.0));
        }
        let permissions = if identity.permissions == *self.defaults {
            self.defaults.clone()
        } else {
            Arc::new(identity.permissions)
        };
        Ok(Admitted {
            user: Some(identity.user.into()),
            permissions,
            subprotocol,
        })
    }

    /// `?user=` without an authenticator: whoever the client says, with the defaults.
    fn user_from_query(&self, req: &UpgradeRequest) -> Result<Identity, Refusal> {
        match req.query_param("user") {
            // An empty `?user=` is a name that breaks the rules, not a request for anonymity.
            Some(u) if u.is_empty() => Err(Refusal::BadRequest("user must not be empty".into())),
            Some(u) => Ok(Identity::new(u, Permissions::clone(&self.defaults))),
            None if req
                .query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("user="))) =>
            {
                Err(Refusal::BadRequest(
                    "user is not valid percent-encoded UTF-8".into(),
                ))
            }
            None => Ok(Identity::anonymous()),
        }
    }
}

/// Checks the authentication and limit settings (part of [`Config::validate`]).
pub(crate) fn validate_config(cfg: &Config) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if cfg.jwt_secret.is_some() && cfg.jwt_public_key_file.is_some() {
        return bad("set jwt_secret or jwt_public_key_file, not both".into());
    }
    let jwt = cfg.jwt_secret.is_some() || cfg.jwt_public_key_file.is_some();
    if !jwt
        && (cfg.jwt_algorithm.is_some() || cfg.jwt_audience.is_some() || cfg.jwt_issuer.is_some())
    {
        // Most likely a forgotten key: refuse rather than run without authentication.
        return bad(
            "jwt_algorithm, jwt_audience and jwt_issuer need jwt_secret or jwt_public_key_file"
                .into(),
        );
    }
    if cfg.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
        return bad("jwt_secret must be at least 32 bytes".into());
    }
    for o in &cfg.allowed_origins {
        if o != "*" && o != "null" && !o.contains("://") {
            return bad(format!(
                "allowed_origins: {o:?} is not an origin (scheme://host[:port]) or *"
            ));
        }
    }
    for (name, v) in [
        ("rate_messages_per_sec", cfg.rate_messages_per_sec),
        ("rate_burst_messages", cfg.rate_burst_messages),
        ("rate_bytes_per_sec", cfg.rate_bytes_per_sec),
        ("rate_burst_bytes", cfg.rate_burst_bytes),
        ("handshakes_per_ip_per_sec", cfg.handshakes_per_ip_per_sec),
        ("handshakes_per_ip_burst", cfg.handshakes_per_ip_burst),
    ] {
        if v > ratelimit::MAX_RATE {
            return bad(format!("{name} must be at most {}", ratelimit::MAX_RATE));
        }
    }
    if cfg.rate_messages_per_sec > 0 && cfg.rate_burst_messages == 0 {
        return bad("rate_burst_messages must be positive when rate_messages_per_sec is".into());
    }
    if cfg.handshakes_per_ip_per_sec > 0 && cfg.handshakes_per_ip_burst == 0 {
        return bad("handshakes_per_ip_burst must be positive when the rate is".into());
    }
    if cfg.rate_limit_close_after.is_zero() {
        return bad("rate_limit_close_after must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse, Limits, Parsed};
    use crate::http::upgrade::validate;

    fn req(target: &str, headers: &str) -> UpgradeRequest {
        let text = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        );
        let limits = Limits {
            max_header_bytes: 8192,
            max_body_bytes: 0,
        };
        match parse(text.as_bytes(), limits) {
            Parsed::Complete(r, _) => validate(r, &["/ws"]).expect("a valid upgrade"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jwt_settings_without_a_key_are_invalid() {
        let c = Config {
            jwt_audience: Some("hub".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            allowed_origins: vec!["app.example.com".into()],
            ..Config::default()
        };
        assert!(c.validate().is_err(), "an origin has a scheme");
        let c = Config {
            max_message_bytes: 16 << 20,
            ..Config::default()
        };
        c.validate()
            .expect("raising the message size alone is valid: the byte burst follows it");
    }

    #[test]
    fn tokens_come_from_each_carrier_in_order() {
        let t = |target, headers| extract_token(&req(target, headers));
        assert_eq!(
            t("/ws", "Authorization: bearer abc\r\n"),
            Some(("abc".into(), Carrier::Header))
        );
        assert_eq!(
            t("/ws", "Sec-WebSocket-Protocol: bearer, a.b.c\r\n"),
            Some(("a.b.c".into(), Carrier::Subprotocol))
        );
        assert_eq!(
            t("/ws?token=a%2Eb", ""),
            Some(("a.b".into(), Carrier::Query))
        );
        assert_eq!(
            t("/ws?token=q", "Authorization: Bearer h\r\n"),
            Some(("h".into(), Carrier::Header)),
            "the header wins"
        );
        assert_eq!(t("/ws", "Authorization: Basic eDp5\r\n"), None);
        assert_eq!(t("/ws", "Sec-WebSocket-Protocol: bearer\r\n"), None);
        assert_eq!(t("/ws", "Sec-WebSocket-Protocol: chat, v2\r\n"), None);
        assert_eq!(t("/ws?token=", ""), None);
        assert!(offers_bearer(&req(
            "/ws",
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: bearer, x\r\n"
        )));
        assert!(!offers_bearer(&req(
            "/ws",
            "Sec-WebSocket-Protocol: bearers\r\n"
        )));
    }

    #[test]
    fn origins_are_exact_and_absent_origins_pass() {
        let o = Origins::new(&["https://app.example.com/".into()]);
        assert!(o.allows(Some("https://app.example.com")));
        assert!(o.allows(Some("HTTPS://APP.example.com")));
        assert!(!o.allows(Some("https://app.example.com.evil.io")));
        assert!(!o.allows(Some("http://app.example.com")));
        assert!(!o.allows(Some("null")));
        assert!(o.allows(None));
        assert!(Origins::new(&["*".into()]).allows(Some("https://x")));
    }

    #[test]
    fn without_an_authenticator_the_query_names_the_user() {
        let cfg = Config::default();
        let g = Gate::new(&cfg, None).unwrap();
        let a = g.admit(&req("/ws?user=al%20ice", "")).unwrap();
        assert_eq!(a.user.as_deref(), Some("al ice"));
        assert!(Arc::ptr_eq(&a.permissions, g.defaults()), "shared defaults");
        let anon = g.admit(&req("/ws", "")).unwrap();
        assert_eq!(anon.user, None);
        assert!(matches!(
            g.admit(&req("/ws?user=%ff", "")),
            Err(Refusal::BadRequest(_))
        ));
        let closed = Gate::new(
            &Config {
                allow_anonymous: false,
                ..Config::default()
            },
            None,
        )
        .unwrap();
        assert!(matches!(
            closed.admit(&req("/ws", "")),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_custom_authenticator_decides_and_query_users_are_ignored() {
        let f: Arc<AuthenticateFn> = Arc::new(|r: &UpgradeRequest| match r.header("x-key") {
            Some("k") => Ok(Identity::new("keyed", Permissions::none())),
            Some(_) => Err(Reject::forbidden("bad key")),
            None => Ok(Identity::anonymous()),
        });
        let g = Gate::new(&Config::default(), Some(f)).unwrap();
        let a = g.admit(&req("/ws?user=mallory", "X-Key: k\r\n")).unwrap();
        assert_eq!(a.user.as_deref(), Some("keyed"));
        assert!(!a.permissions.send);
        assert!(matches!(
            g.admit(&req("/ws", "X-Key: nope\r\n")),
            Err(Refusal::Rejected(Reject { status: 403, .. }))
        ));
        let anon = g.admit(&req("/ws?user=mallory", "")).unwrap();
        assert_eq!(anon.user, None, "?user= does not bypass the authenticator");
    }
}
