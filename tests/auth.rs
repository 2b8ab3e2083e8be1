//! Authentication on the upgrade: JWTs through each carrier and algorithm, every way a token
//! can be wrong, anonymous access, the origin allowlist and a custom authenticator.

use std::net::TcpStream;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use shardhub::{Close, Config, Hooks, Identity, Permissions, Reject};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use crate::util::*;

const UNAUTHORIZED: u16 = Close::Unauthorized.code();
const FORBIDDEN: u16 = Close::Forbidden.code();

/// The HMAC secret of the test servers (at least 32 bytes, as the server requires).
pub const SECRET: &str = "shardhub-test-secret-0123456789abcdef";

/// A test key file under tests/keys.
pub fn key(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key(name)).expect("test key")
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token with the test secret.
pub fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encodes")
}

/// An HS256 token for `sub`, valid for a minute, with extra claims merged in.
pub fn token_for(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 60});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    token(claims)
}

/// A server with HS256 JWTs and `tweak` on top.
pub fn jwt_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        tweak(c);
    })
}

/// Upgrades with extra headers; returns the client (welcome read) and the 101's headers.
pub fn connect_with(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, tungstenite::http::HeaderMap), tungstenite::Error> {
    let mut req = s.url(path).into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let tcp = TcpStream::connect(s.addr).expect("tcp connect");
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let (ws, resp) = match tungstenite::client(req, tcp) {
        Ok(x) => x,
        Err(tungstenite::HandshakeError::Failure(e)) => return Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking handshake"),
    };
    Ok((Client::greeted(ws), resp.headers().clone()))
}

/// Connects with a bearer token in the Authorization header.
pub fn connect_token(s: &TestServer, token: &str) -> Client {
    let auth = format!("Bearer {token}");
    connect_with(s, "/ws", &[("Authorization", &auth)])
        .expect("token accepted")
        .0
}

/// The close code and reason a refused upgrade with these extra header lines gets (after its
/// `101`: docs/protocol.md, "Refused upgrades").
fn refused(s: &TestServer, target: &str, headers: &str) -> (u16, String) {
    let (code, reason, _) = refused_upgrade(s.addr, upgrade_request(target, headers).as_bytes());
    (code, reason)
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn a_valid_token_is_accepted_through_each_carrier() {
    let s = jwt_server(|_| {});
    let t = token_for("alice", json!({}));

    let c = connect_token(&s, &t);
    assert_eq!(c.user, "alice");

    let (c, _) = connect_with(&s, &format!("/ws?token={t}"), &[]).expect("query token");
    assert_eq!(c.user, "alice");

    // A browser: new WebSocket(url, ["bearer", token]). The 101 must select `bearer`, or the
    // browser aborts (tungstenite's client checks it too).
    let offer = format!("bearer, {t}");
    let (c, headers) =
        connect_with(&s, "/ws", &[("Sec-WebSocket-Protocol", &offer)]).expect("subprotocol");
    assert_eq!(c.user, "alice");
    assert_eq!(
        headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("bearer")
    );
    // Other carriers do not select a subprotocol.
    let (_, headers) = connect_with(&s, &format!("/ws?token={t}"), &[]).unwrap();
    assert!(headers.get("sec-websocket-protocol").is_none());
}

#[test]
fn with_jwt_the_token_decides_and_user_is_ignored() {
    let s = jwt_server(|_| {});
    let t = token_for("alice", json!({}));
    let (c, _) = connect_with(&s, &format!("/ws?user=mallory&token={t}"), &[]).unwrap();
    assert_eq!(c.user, "alice");
    // Without a token (anonymous access on by default) the client is anonymous, not mallory.
    let (c, _) = connect_with(&s, "/ws?user=mallory", &[]).unwrap();
    assert_eq!(c.user, format!("anon-{}", c.session));
}

#[test]
fn rs256_and_es256_tokens_verify_against_public_key_files() {
    for (alg, public, private) in [
        (Algorithm::RS256, "rsa_public.pem", "rsa_private.pem"),
        (Algorithm::ES256, "ec_public.pem", "ec_private.pem"),
    ] {
        let s = TestServer::start(|c| {
            c.jwt_public_key_file = Some(key(public).into());
            c.jwt_algorithm = Some(format!("{alg:?}"));
        });
        let pem = read_key(private);
        let k = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .unwrap();
        let claims = json!({"sub":"bob","exp":now()+60});
        let t = encode(&Header::new(alg), &claims, &k).unwrap();
        assert_eq!(connect_token(&s, &t).user, "bob", "{alg:?}");

        // The same claims signed with the HMAC secret (or, for RS256, the classic confusion
        // attack: HS256 keyed with the public key) are refused.
        let hs = token(claims.clone());
        let (code, reason) = refused(&s, &format!("/ws?token={hs}"), "");
        assert_eq!(code, UNAUTHORIZED, "{alg:?}: {reason}");
        assert!(reason.contains("algorithm not accepted"), "{reason}");
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&read_key(public)),
        )
        .unwrap();
        let (code, _) = refused(&s, &format!("/ws?token={confused}"), "");
        assert_eq!(code, UNAUTHORIZED);
    }
}

#[test]
fn every_bad_token_is_refused_with_3500_and_a_reason() {
    let s = jwt_server(|c| c.allow_anonymous = false);
    let n = now();
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"a","exp":n+60}),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(json!({"sub":"a","exp":n+60}).to_string().as_bytes())
    );
    let good = token_for("a", json!({}));
    // Change the signature's first character (all six of its bits count).
    let sig = good.rfind('.').unwrap() + 1;
    let swap = if good[sig..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{swap}{}", &good[..sig], &good[sig + 1..]);
    let cases = [
        (token(json!({"sub":"a","exp":n-120})), "expired"),
        (
            token(json!({"sub":"a","exp":n+120,"nbf":n+100})),
            "not yet valid",
        ),
        (token(json!({"sub":"a"})), "missing claim exp"),
        (other_secret, "bad signature"),
        (tampered, "bad signature"),
        (alg_none, "invalid token"),
        ("abc.def".to_string(), "invalid token"),
        ("not-a-token".to_string(), "invalid token"),
    ];
    let before = s.hub.stats().auth_failures;
    for (t, why) in &cases {
        let (code, reason) = refused(&s, &format!("/ws?token={t}"), "");
        assert_eq!(code, UNAUTHORIZED, "{t}: {reason}");
        assert!(reason.contains(why), "{t}: wanted {why:?} in {reason}");
    }
    // Missing token with anonymous access off.
    let (code, reason) = refused(&s, "/ws", "");
    assert_eq!(
        (code, reason.as_str()),
        (UNAUTHORIZED, "a bearer token is required")
    );
    // The same refusals through the header carrier.
    let (code, _) = refused(&s, "/ws", "Authorization: Bearer abc.def\r\n");
    assert_eq!(code, UNAUTHORIZED);
    wait_until("the failures are counted", || {
        s.hub.stats().auth_failures == before + cases.len() as u64 + 2
    });
    // Clock skew: a token expired 10 s ago is still inside the 30 s leeway.
    let skewed = token(json!({"sub":"late","exp":n-10}));
    assert_eq!(connect_token(&s, &skewed).user, "late");
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let s = jwt_server(|c| {
        c.jwt_audience = Some("hub".into());
        c.jwt_issuer = Some("https://auth.example.com".into());
    });
    let ok = token_for("a", json!({"aud":"hub","iss":"https://auth.example.com"}));
    assert_eq!(connect_token(&s, &ok).user, "a");
    for (claims, why) in [
        (
            json!({"aud":"other","iss":"https://auth.example.com"}),
            "wrong audience",
        ),
        (
            json!({"aud":"hub","iss":"https://evil.example.com"}),
            "wrong issuer",
        ),
    ] {
        let (code, reason) = refused(&s, &format!("/ws?token={}", token_for("a", claims)), "");
        assert_eq!(code, UNAUTHORIZED);
        assert!(reason.contains(why), "{reason}");
    }
}

#[test]
fn origins_outside_the_allowlist_get_3501() {
    let s = TestServer::start(|c| c.allowed_origins = vec!["https://app.example.com".into()]);
    let (code, reason) = refused(&s, "/ws", "Origin: https://evil.example.com\r\n");
    assert_eq!(
        (code, reason.as_str()),
        (FORBIDDEN, "origin https://evil.example.com is not allowed")
    );
    let (c, _) = connect_with(&s, "/ws?user=web", &[("Origin", "https://app.example.com")])
        .expect("allowed origin");
    assert_eq!(c.user, "web");
    // Not from a browser page: no Origin, no cross-site risk.
    Client::connect(&s, Some("cli"));
    wait_until("the refusal is counted", || {
        s.hub.stats().origin_refusals == 1
    });
}

#[test]
fn the_origin_is_checked_before_the_token() {
    let s = jwt_server(|c| c.allowed_origins = vec!["https://app.example.com".into()]);
    let t = token_for("a", json!({}));
    let (code, _) = refused(
        &s,
        &format!("/ws?token={t}"),
        "Origin: https://evil.example.com\r\n",
    );
    assert_eq!(code, FORBIDDEN);
}

#[test]
fn an_application_authenticator_replaces_jwt_and_runs_before_on_connect() {
    let hooks = Hooks::default()
        .authenticate(|req| match req.header("x-api-key") {
            Some("k1") => Ok(Identity::new(
                "service",
                Permissions {
                    broadcast: false,
                    ..Permissions::all()
                },
            )),
            Some(_) => Err(Reject::with_status(401, "unknown api key")),
            None => Ok(Identity::anonymous()),
        })
        .on_connect(|_, session| {
            // The authenticator has already named the session.
            let user = session.user().to_string();
            session.set("seen-by-on-connect", user);
            Ok(())
        })
        .handle("whoami", |ctx, _| {
            let seen = ctx
                .session()
                .get::<String>("seen-by-on-connect")
                .cloned()
                .unwrap_or_default();
            ctx.send_text(&json!({"type":"me","seen":seen}).to_string());
        });
    let s = TestServer::with_hooks(hooks, |c| {
        c.jwt_secret = Some(SECRET.into());
        c.allow_anonymous = false;
    });
    let (mut c, _) = connect_with(&s, "/ws?user=x", &[("X-Api-Key", "k1")]).unwrap();
    assert_eq!(c.user, "service");
    c.send_json(json!({"type":"whoami"}));
    assert_eq!(c.expect("me")["seen"], "service");
    c.send_json(json!({"type":"broadcast","data":1,"id":1}));
    assert_eq!(c.expect("error")["code"], "forbidden");

    let (code, reason) = refused(&s, "/ws", "X-Api-Key: nope\r\n");
    assert_eq!((code, reason.as_str()), (UNAUTHORIZED, "unknown api key"));
    // A JWT is no use: the application's scheme replaced it.
    let (code, _) = refused(&s, &format!("/ws?token={}", token_for("a", json!({}))), "");
    assert_eq!(code, UNAUTHORIZED, "anonymous is off");
}

/// What a browser needs (it cannot read the status of a failed upgrade): a WebSocket client
/// refused for its token completes the upgrade and reads a close of the do-not-reconnect class,
/// with the reason. tungstenite's client, like a browser, fails a `101` that does not select
/// the subprotocol it offered, so this also checks that the refusal selects `bearer`.
#[test]
fn a_websocket_client_reads_why_its_token_was_refused() {
    let s = jwt_server(|c| c.allow_anonymous = false);
    let expired = token(json!({"sub":"a","exp":now() - 120}));
    for headers in [
        vec![("Authorization", format!("Bearer {expired}"))],
        vec![("Sec-WebSocket-Protocol", format!("bearer, {expired}"))],
    ] {
        let mut req = s.url("/ws").into_client_request().unwrap();
        for (k, v) in &headers {
            req.headers_mut()
                .insert(*k, HeaderValue::from_str(v).unwrap());
        }
        let tcp = TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        let (mut ws, _) = tungstenite::client(req, tcp).expect("the upgrade completes");
        // The close is the first and only message: no welcome.
        let frame = match ws.read() {
            Ok(tungstenite::Message::Close(f)) => f.expect("a close code"),
            Ok(other) => panic!("{headers:?}: only the close may come, got {other:?}"),
            Err(e) => panic!("{headers:?}: no close frame: {e}"),
        };
        assert_eq!(u16::from(frame.code), UNAUTHORIZED, "{headers:?}");
        assert_eq!(frame.reason.as_str(), "invalid token: expired");
        assert!(!Close::Unauthorized.reconnect());
    }
    assert_eq!(s.hub.session_count(), 0);
    wait_until("both are counted", || s.hub.stats().auth_failures == 2);
    assert_eq!(s.hub.stats().handshakes, 0);
}
