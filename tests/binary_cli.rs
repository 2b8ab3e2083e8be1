//! The `shardhub` binary: configuration from a file, the environment and flags; SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn help_explains_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--listen",
        "--shards",
        "--echo",
        "--config",
        "--max-queue-bytes",
        "--write-delay",
        "--ping-interval",
        "--jwt-secret",
        "--jwt-public-key-file",
        "--jwt-algorithm",
        "--allowed-origins",
        "--rate-messages-per-sec",
        "--max-connections-per-ip",
        "--handshakes-per-ip-per-sec",
        "--max-json-depth",
        "--cluster",
        "--node",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("shardhub-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "shards = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid configuration file"));
}

#[test]
fn bad_jwt_settings_stop_the_server_with_a_clear_error() {
    let key = crate::auth::key("rsa_public.pem");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--jwt-secret", "short"],
            "jwt_secret must be at least 32 bytes",
        ),
        (
            &["--jwt-public-key-file", "/nonexistent/key.pem"],
            "cannot read /nonexistent/key.pem",
        ),
        (
            &["--jwt-public-key-file", &key, "--jwt-algorithm", "ES256"],
            "not a ES256 public key",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
            .args(["--listen", "127.0.0.1:0", "--shards", "1"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn file_env_and_flags_layer_and_sigterm_drains() {
    let dir = std::env::temp_dir().join(format!("shardhub-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.toml");
    // The file disables anonymous access and sets a port the flag overrides.
    std::fs::write(
        &path,
        "allow_anonymous = false\nlisten = \"127.0.0.1:1\"\nshards = 1\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SHARDHUB_MAX_ROOMS_PER_SESSION", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (code, _, _) = refused_upgrade(addr, upgrade_request("/ws", "").as_bytes());
    assert_eq!(
        code,
        shardhub::Close::Unauthorized.code(),
        "the file's allow_anonymous = false applies"
    );

    let url = format!("ws://127.0.0.1:{port}/ws?user=cli");
    let mut ws = connect_raw(&url).unwrap();
    let _welcome = ws.read().unwrap();
    for room in ["a", "b"] {
        ws.send(tungstenite::Message::text(format!(
            r#"{{"type":"join","room":"{room}"}}"#
        )))
        .unwrap();
    }
    let replies: Vec<String> = (0..2)
        .map(|_| ws.read().unwrap().into_text().unwrap().to_string())
        .collect();
    assert!(
        replies[1].contains("too_many_rooms"),
        "the environment's limit applies: {replies:?}"
    );

    // SIGTERM: the client gets 3000 (server shutdown) and the process exits cleanly.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let close = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close, Some(shardhub::Close::Shutdown.code()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn out_of_file_descriptors_clients_get_503_not_a_timeout() {
    let port = free_port();
    // 64 descriptors: the server's own (epoll, eventfd, listener, stdio, ...) and a few dozen
    // clients.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} --listen 127.0.0.1:{port} --shards 1 --log error",
            env!("CARGO_BIN_EXE_shardhub")
        ))
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("the server listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        match connect_raw(&format!("ws://{addr}/ws?user=u{i}")) {
            Ok(ws) => held.push(ws),
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("client {i}: expected an upgrade or a 503, got {e}"),
        }
    }
    assert!(held.len() >= 30, "only {} clients got in", held.len());
    assert!(refused > 0, "all 100 got in under a 64-descriptor limit");
    let _ = child.kill();
    let _ = child.wait();
}

/// A cluster bus that is not there stops the server at once with exit code 1 and a line
/// that names the bus, for either kind of bus; a URL of another kind is a configuration error.
#[test]
fn an_unreachable_cluster_bus_is_a_clear_error() {
    let closed = free_port();
    for url in [
        format!("nats://127.0.0.1:{closed}"),
        format!("redis://127.0.0.1:{closed}"),
        "http://127.0.0.1:1".to_string(),
    ] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
            .args(["--listen", "127.0.0.1:0", "--cluster", &url])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains("127.0.0.1:"), "{url}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: not a hang"
        );
    }
}

/// The binary serves the dashboard at /dashboard unless `--dashboard false` (or
/// `SHARDHUB_DASHBOARD=false`) turns it off.
#[test]
fn the_dashboard_is_served_unless_switched_off() {
    // (flags, environment, status of GET /dashboard)
    type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        u16,
    );
    let cases: [Case; 4] = [
        (&[], &[], 200),
        (&["--dashboard", "false"], &[], 404),
        (&[], &[("SHARDHUB_DASHBOARD", "false")], 404),
        (&["--dashboard", "true", "--demo", "true"], &[], 200),
    ];
    for (args, env, want) in cases {
        let (mut child, addr) = start_binary("127.0.0.1", args, env);
        let r = http(addr, "GET", "/dashboard", None);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(r.status, want, "{args:?} {env:?}");
        if want == 200 {
            assert_eq!(r.header("content-type"), Some(shardhub::pages::HTML));
            assert_eq!(r.text(), shardhub::pages::DASHBOARD);
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--dashboard") && help.contains("--demo"),
        "{help}"
    );
}

/// The demo chat at `/` and the client it imports at `/shardhub-client.js`: served by default
/// on a loopback address, not on another one unless `--demo true`, and never with
/// `--demo false` (or `SHARDHUB_DEMO=false`).
#[test]
fn the_demo_is_served_on_loopback_by_default_and_switches_off() {
    // (listen address, flags, environment, served)
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        bool,
    );
    let cases: [Case; 5] = [
        ("127.0.0.1", &[], &[], true),
        ("127.0.0.1", &["--demo", "false"], &[], false),
        ("127.0.0.1", &[], &[("SHARDHUB_DEMO", "false")], false),
        // Not loopback (the API then needs a key): off unless asked for.
        ("0.0.0.0", &["--api-key", "k"], &[], false),
        ("0.0.0.0", &["--api-key", "k", "--demo", "true"], &[], true),
    ];
    for (host, args, env, served) in cases {
        let (mut child, addr) = start_binary(host, args, env);
        let page = http(addr, "GET", "/", None);
        let client = http(addr, "GET", "/shardhub-client.js", None);
        let dashboard = http(addr, "GET", "/dashboard", None);
        let _ = child.kill();
        let _ = child.wait();
        let what = format!("{host} {args:?} {env:?}");
        // The switch is the demo's alone.
        assert_eq!(dashboard.status, 200, "{what}");
        if served {
            assert_eq!(page.status, 200, "{what}");
            assert_eq!(page.header("content-type"), Some(shardhub::pages::HTML));
            assert_eq!(page.text(), shardhub::pages::DEMO);
            assert_eq!(client.status, 200, "{what}");
            assert_eq!(
                client.header("content-type"),
                Some("text/javascript; charset=utf-8")
            );
            assert_eq!(client.text(), shardhub::pages::CLIENT);
        } else {
            assert_eq!(page.status, 404, "{what}");
            assert_eq!(client.status, 404, "{what}");
        }
    }
}

/// The configuration example of README.md, as written, starts the binary (on a free port
/// instead of 8080; the address stays non-loopback, so the API key it sets is what lets it
/// start), with the API behind that key and the demo off.
#[test]
fn the_readme_configuration_example_starts() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = &readme[readme
        .find("\n## Configuration")
        .expect("a Configuration section")..];
    let start = section.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    assert!(example.contains("listen = \"0.0.0.0:8080\""), "{example}");
    let key = example
        .lines()
        .find_map(|l| l.strip_prefix("api_key = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("the example sets api_key");

    let dir = std::env::temp_dir().join(format!("shardhub-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.toml");
    std::fs::write(&path, example).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", &format!("0.0.0.0:{port}"), "--shards", "1"])
        .args(["--pin-cores", "false"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let without_key = http(addr, "GET", "/api/v1/stats", None);
    let with_key = HttpConn::connect(addr).request(
        "GET",
        "/api/v1/stats",
        &[("authorization", &format!("Bearer {key}"))],
        None,
    );
    let demo = http(addr, "GET", "/", None);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(without_key.status, 401);
    assert_eq!(with_key.status, 200);
    assert_eq!(demo.status, 404, "no demo on a non-loopback address");

    // Without its api_key the same example refuses to start, saying why.
    let bare: String = example
        .lines()
        .filter(|l| !l.starts_with("api_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, bare).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .arg("--config")
        .arg(&path)
        .args([
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
            "--shards",
            "1",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set api_key"));
}

/// The binary on `host` and a free port (one shard, unpinned) with `args` and `env`, once it
/// listens; the address to reach it on loopback.
fn start_binary(
    host: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, std::net::SocketAddr) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardhub"))
        .args(["--listen", &format!("{host}:{port}"), "--shards", "1"])
        .args(["--pin-cores", "false"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    (child, format!("127.0.0.1:{port}").parse().unwrap())
}
