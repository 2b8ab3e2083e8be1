//! Where traffic goes and where it comes from: parsing `ws://` URLs and `--source` ranges, the
//! loopback-only rule, and which connection goes to which URL when a run has several
//! ([`Targets`]). Host names other than `localhost` are refused rather than resolved, so no DNS
//! answer can ever point this tool at another machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::error::ConfigError;

/// A validated WebSocket target on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given, for reports.
    pub url: String,
    /// The loopback socket address to connect to.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The request target: path and query, at least `/`.
    pub resource: String,
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH[?QUERY]]`. HOST is an IP literal (`[::1]` for IPv6) or
    /// `localhost`; the address must be loopback.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let rest = if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if url.starts_with("wss://") {
            return Err(ConfigError::BadUrl(format!(
                "{url}: TLS (wss://) is not supported"
            )));
        } else {
            return Err(ConfigError::BadUrl(format!(
                "{url}: expected ws://HOST:PORT/PATH"
            )));
        };
        let (authority, resource) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(ConfigError::BadUrl(format!(
                "{url}: missing or unsupported host"
            )));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| ConfigError::BadUrl(format!("{url}: bad host or port")))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| {
                ConfigError::NotLoopback(format!(
                    "{host} (only IP literals and localhost are accepted)"
                ))
            })?
        };
        if !is_loopback(ip) {
            return Err(ConfigError::NotLoopback(ip.to_string()));
        }
        Ok(Self {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            resource,
        })
    }
}

/// Every URL of a run and the rule that assigns connections to them.
///
/// The rule, deterministic and independent of how the run is split into threads and processes
/// (it uses the global indices that [`crate::plan::Plan::thread_share`] hands out), n being the
/// number of `--url`s:
/// * connection *i* of `connect`, `echo` and `direct` goes to `--url` number `i % n`;
/// * fan-out subscribers (`fanout`, `churn`, `max-rate`) round-robin over the URLs within their
///   room: subscriber *i* is member `i / rooms` of `room-(i % rooms)`, and member *k* of every
///   room goes to URL `k % n`, so every room spans every URL (plain `i % n` would put each room
///   on one node whenever the number of rooms is a multiple of n, e.g. the default 10 rooms over
///   2 URLs, and no fan-out would cross nodes); with one room it is `i % n`;
/// * every publisher goes to `--publisher-url` (default: the first `--url`), which need not be
///   one of the `--url`s;
/// * churn connections, numbered per thread, are subscribers of their rooms by the same rule.
///
/// Two URLs with the same address and path are the same node: giving one twice as `--url` is
/// refused (it would silently weigh it double), and a `--publisher-url` equal to a `--url` is
/// that entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// The `--url`s in order, then the publishers' URL if it is not one of them.
    all: Vec<Target>,
    /// How many of `all` (the first ones) connections are spread over: the `--url`s.
    spread: usize,
    /// Index in `all` of the publishers' URL.
    publisher: usize,
}

impl Targets {
    /// One URL for everything.
    pub fn single(t: Target) -> Self {
        Self {
            all: vec![t],
            spread: 1,
            publisher: 0,
        }
    }

    /// Connections spread over `urls` (at least one, no two the same node); publishers on
    /// `publisher`, or on the first of `urls` if `None`.
    pub fn new(urls: Vec<Target>, publisher: Option<Target>) -> Result<Self, ConfigError> {
        if urls.is_empty() {
            return Err(ConfigError::BadUrl("no URL given".into()));
        }
        for (i, t) in urls.iter().enumerate() {
            if let Some(o) = urls[..i].iter().find(|o| o.same_node(t)) {
                return Err(ConfigError::BadUrl(format!(
                    "{} and {} are the same node; give each URL once",
                    o.url, t.url
                )));
            }
        }
        let spread = urls.len();
        let mut all = urls;
        let publisher = match publisher {
            None => 0,
            Some(p) => match all.iter().position(|t| t.same_node(&p)) {
                Some(i) => i,
                None => {
                    all.push(p);
                    all.len() - 1
                }
            },
        };
        Ok(Self {
            all,
            spread,
            publisher,
        })
    }

    /// Parses every `--url` and the `--publisher-url`, each by the loopback rule of
    /// [`Target::parse`], into [`Targets::new`].
    pub fn parse(urls: &[String], publisher: Option<&str>) -> Result<Self, ConfigError> {
        let urls = urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let publisher = publisher.map(Target::parse).transpose()?;
        Self::new(urls, publisher)
    }

    /// Index (in [`Targets::all`]) of the URL of connection `i` (global index).
    pub fn conn(&self, i: usize) -> usize {
        i % self.spread
    }

    /// Index (in [`Targets::all`]) of the URL of fan-out subscriber `i` (global index) among
    /// `rooms` rooms (subscriber *i* in `room-(i % rooms)`): round-robin within each room.
    pub fn subscriber(&self, i: usize, rooms: usize) -> usize {
        (i / rooms.max(1)) % self.spread
    }

    /// Index (in [`Targets::all`]) of the publishers' URL.
    pub fn publisher(&self) -> usize {
        self.publisher
    }

    /// The publishers' URL.
    pub fn publisher_target(&self) -> &Target {
        &self.all[self.publisher]
    }

    /// Every URL of the run: the `--url`s in order, then the publishers' if not among them.
    pub fn all(&self) -> &[Target] {
        &self.all
    }

    /// The `--url`s, over which connections are spread (the first entries of [`Targets::all`]).
    pub fn spread(&self) -> &[Target] {
        &self.all[..self.spread]
    }

    /// The first `--url`: the run's `url` in reports.
    pub fn first(&self) -> &Target {
        &self.all[0]
    }

    /// Whether the run talks to more than one URL.
    pub fn is_multi(&self) -> bool {
        self.all.len() > 1
    }
}

impl Target {
    /// Same address and request target: the same node, however the URL is spelled.
    pub fn same_node(&self, other: &Target) -> bool {
        self.addr == other.addr && self.resource == other.resource
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']')?;
        let host = &v6[..end];
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((authority, 80)),
    }
}

/// Most source addresses one `--source` may expand to; far more than ephemeral-port exhaustion
/// ever needs (each address gives ~28k ports per destination).
const MAX_SOURCES: usize = 4096;

/// Parses `--source`: `IP`, `IPv4-IPv4` (inclusive range) or a comma list of those. Every address
/// must be loopback.
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadSource(format!("{a}: not an IPv4 address")))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadSource(format!("{b}: not an IPv4 address")))?;
            let (lo, hi) = (u32::from(a), u32::from(b));
            if lo > hi {
                return Err(ConfigError::BadSource(format!("{part}: range is reversed")));
            }
            if (hi - lo) as usize >= MAX_SOURCES {
                return Err(ConfigError::BadSource(format!(
                    "{part}: more than {MAX_SOURCES} addresses"
                )));
            }
            for v in lo..=hi {
                out.push(IpAddr::V4(Ipv4Addr::from(v)));
            }
        } else {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| ConfigError::BadSource(format!("{part}: not an IP address")))?;
            out.push(ip);
        }
        if out.len() > MAX_SOURCES {
            return Err(ConfigError::BadSource(format!(
                "more than {MAX_SOURCES} addresses"
            )));
        }
    }
    if out.is_empty() {
        return Err(ConfigError::BadSource(format!("{spec:?}: no address")));
    }
    if let Some(bad) = out.iter().find(|ip| !is_loopback(**ip)) {
        return Err(ConfigError::NotLoopback(bad.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?user=a").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.resource, "/ws?user=a");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = Target::parse("ws://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(t.resource, "/");
        let t = Target::parse("ws://localhost:1?x").unwrap();
        assert_eq!(t.resource, "/?x");
        assert_eq!(Target::parse("ws://127.9.9.9").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_other_targets() {
        for url in [
            "ws://10.0.0.1:80/ws",
            "ws://192.168.1.1/",
            "ws://8.8.8.8/",
            "ws://example.com/ws",
            "ws://[::2]:80/",
        ] {
            assert!(
                matches!(Target::parse(url), Err(ConfigError::NotLoopback(_))),
                "{url} must be refused"
            );
        }
        assert!(matches!(
            Target::parse("http://127.0.0.1/"),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            Target::parse("wss://127.0.0.1/"),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            Target::parse("ws://127.0.0.1:x/"),
            Err(ConfigError::BadUrl(_))
        ));
    }

    #[test]
    fn source_ranges() {
        let s = parse_sources("127.0.0.1-127.0.0.20").unwrap();
        assert_eq!(s.len(), 20);
        assert_eq!(s[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[19], "127.0.0.20".parse::<IpAddr>().unwrap());
        let s = parse_sources("127.0.0.5, 127.0.1.1-127.0.1.2,::1").unwrap();
        assert_eq!(s.len(), 4);
        assert!(matches!(
            parse_sources("127.0.0.9-127.0.0.1"),
            Err(ConfigError::BadSource(_))
        ));
        assert!(matches!(
            parse_sources("10.0.0.1"),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_sources("126.255.255.255-127.0.0.1"),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_sources("127.0.0.0-127.1.0.0"),
            Err(ConfigError::BadSource(_))
        ));
        assert!(matches!(parse_sources(""), Err(ConfigError::BadSource(_))));
    }

    fn targets(urls: &[&str], publisher: Option<&str>) -> Result<Targets, ConfigError> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        Targets::parse(&urls, publisher)
    }

    #[test]
    fn connections_round_robin_over_the_urls() {
        let t = targets(
            &[
                "ws://127.0.0.1:8081/ws",
                "ws://127.0.0.1:8082/ws",
                "ws://127.0.0.1:8083/ws",
            ],
            None,
        )
        .unwrap();
        let urls: Vec<usize> = (0..7).map(|i| t.conn(i)).collect();
        assert_eq!(urls, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(t.publisher(), 0, "publishers default to the first URL");
        assert_eq!(t.all().len(), 3);
        assert_eq!(t.spread().len(), 3);
        assert!(t.is_multi());
        // The rule uses global indices: thread shares of 9 connections over 2 threads (0..4,
        // 4..9) land where one thread would have put them.
        let split: Vec<usize> = (0..4).chain(4..9).map(|i| t.conn(i)).collect();
        assert_eq!(split, (0..9).map(|i| i % 3).collect::<Vec<_>>());
        // Subscribers in 2 rooms over 3 URLs: each room's members go round the URLs.
        let subs: Vec<(usize, usize)> = (0..8).map(|i| (i % 2, t.subscriber(i, 2))).collect();
        assert_eq!(
            subs,
            [
                (0, 0),
                (1, 0),
                (0, 1),
                (1, 1),
                (0, 2),
                (1, 2),
                (0, 0),
                (1, 0)
            ]
        );
        let one_room: Vec<usize> = (0..4).map(|i| t.subscriber(i, 1)).collect();
        assert_eq!(one_room, [0, 1, 2, 0], "one room: plain round-robin");
        let one = Targets::single(Target::parse("ws://127.0.0.1:1/").unwrap());
        assert_eq!(
            (one.conn(5), one.publisher(), one.is_multi()),
            (0, 0, false)
        );
    }

    #[test]
    fn the_publisher_url_is_one_of_the_urls_or_an_extra_one() {
        let (a, b, c) = (
            "ws://127.0.0.1:8081/ws",
            "ws://127.0.0.1:8082/ws",
            "ws://127.0.0.1:8083/ws",
        );
        let t = targets(&[a, b], Some(b)).unwrap();
        assert_eq!((t.publisher(), t.all().len()), (1, 2));
        // Spelled differently, the same node.
        let t = targets(&[a, b], Some("ws://localhost:8082/ws")).unwrap();
        assert_eq!((t.publisher(), t.all().len()), (1, 2));
        // Not a subscriber URL: listed after them, and never given a connection.
        let t = targets(&[a, b], Some(c)).unwrap();
        assert_eq!(t.publisher(), 2);
        assert_eq!(t.all()[2].url, c);
        assert_eq!(t.spread().len(), 2);
        assert!((0..10).all(|i| t.conn(i) < 2));
        assert_eq!(t.first().url, a);
    }

    #[test]
    fn every_url_is_checked() {
        assert!(matches!(
            targets(&["ws://127.0.0.1:1/ws", "ws://10.0.0.1:1/ws"], None),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            targets(&["ws://127.0.0.1:1/ws"], Some("ws://8.8.8.8/ws")),
            Err(ConfigError::NotLoopback(_))
        ));
        assert!(matches!(
            targets(&["ws://127.0.0.1:1/ws", "ws://localhost:1/ws"], None),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(targets(&[], None), Err(ConfigError::BadUrl(_))));
        assert!(targets(&["ws://127.0.0.1:1/a", "ws://127.0.0.1:1/b"], None).is_ok());
    }
}
