//! Where traffic goes and where it comes from: parsing `ws://` URLs and `--source` ranges, and
//! the loopback-only rule. Host names other than `localhost` are refused rather than resolved, so
//! no DNS answer can ever point this tool at another machine.

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
}
