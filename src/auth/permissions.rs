//! What a session may do: the room patterns it may join, publish to and read presence of, and
//! whether it may broadcast or message users directly.
//!
//! Pure data and matching, checked on the shard thread for each client request. A session holds
//! its set behind an `Arc` (8 bytes per connection); every anonymous session, and every token
//! whose claims grant exactly the defaults, shares the server's one default set.
//!
//! A pattern is a room name (`lobby`, exact match), a prefix ending in `*` (`chat:*` matches
//! `chat:` and every room starting with it), or `*` alone (every room). Matching is linear in
//! the number of patterns; sets are short, so that beats anything cleverer.

use serde::Deserialize;

/// The rooms one action is allowed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomRules {
    /// `*` was among the patterns: every room.
    all: bool,
    /// Exact room names.
    exact: Box<[Box<str>]>,
    /// Prefixes (patterns without their trailing `*`).
    prefixes: Box<[Box<str>]>,
}

impl RoomRules {
    /// Every room.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// No room.
    pub fn none() -> Self {
        Self::default()
    }

    /// Rules from patterns: exact names, `prefix*`, or `*`. An empty pattern matches nothing.
    pub fn from_patterns<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        let mut all = false;
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            match p.strip_suffix('*') {
                Some("") => all = true,
                Some(prefix) => prefixes.push(Box::from(prefix)),
                None if p.is_empty() => {}
                None => exact.push(Box::from(p)),
            }
        }
        if all {
            // Nothing else can widen `*`; keep the set as small as it can be.
            return Self::all();
        }
        Self {
            all,
            exact: exact.into(),
            prefixes: prefixes.into(),
        }
    }

    /// Whether `room` is allowed.
    #[inline]
    pub fn allows(&self, room: &str) -> bool {
        self.all
            || self.exact.iter().any(|e| **e == *room)
            || self.prefixes.iter().any(|p| room.starts_with(&**p))
    }

    /// Whether every room is allowed (the cheap case on delivery paths).
    #[inline]
    pub fn allows_all(&self) -> bool {
        self.all
    }
}

/// What a session may do. Client requests outside it are answered with `forbidden`; the
/// application's own actions (hooks, [`Hub`](crate::Hub)) are not restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Rooms the session may join.
    pub join: RoomRules,
    /// Rooms the session may publish to (it must also have joined them).
    pub publish: RoomRules,
    /// Rooms whose members (`members`) and presence events (`joined`/`left`) it may see.
    pub presence: RoomRules,
    /// Whether it may send broadcasts.
    pub broadcast: bool,
    /// Whether it may send direct messages to users.
    pub send: bool,
}

impl Default for Permissions {
    /// Everything, as before permissions existed.
    fn default() -> Self {
        Self::all()
    }
}

impl Permissions {
    /// Everything: any room, broadcasts and direct messages.
    pub fn all() -> Self {
        Self {
            join: RoomRules::all(),
            publish: RoomRules::all(),
            presence: RoomRules::all(),
            broadcast: true,
            send: true,
        }
    }

    /// Nothing at all (a session that may only ping and read what the application sends it).
    pub fn none() -> Self {
        Self {
            join: RoomRules::none(),
            publish: RoomRules::none(),
            presence: RoomRules::none(),
            broadcast: false,
            send: false,
        }
    }
}

/// The permission part of the configuration (`[default_permissions]`) and of token claims:
/// pattern lists and flags, each optional so that claims can leave some to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPatterns {
    /// Patterns of rooms the session may join.
    pub join: Option<Vec<String>>,
    /// Patterns of rooms the session may publish to.
    pub publish: Option<Vec<String>>,
    /// Patterns of rooms whose members and presence the session may see.
    pub presence: Option<Vec<String>>,
}

/// Permissions as written in configuration or claims: `rooms` patterns, `broadcast`, `send`.
/// Whatever is absent comes from the defaults it is applied to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionSpec {
    /// Room patterns per action.
    pub rooms: RoomPatterns,
    /// Whether broadcasts are allowed.
    pub broadcast: Option<bool>,
    /// Whether direct messages are allowed.
    pub send: Option<bool>,
}

impl PermissionSpec {
    /// The spec with everything allowed (the default of `default_permissions`).
    pub fn allow_all() -> Self {
        let all = || Some(vec!["*".to_string()]);
        Self {
            rooms: RoomPatterns {
                join: all(),
                publish: all(),
                presence: all(),
            },
            broadcast: Some(true),
            send: Some(true),
        }
    }

    /// Whether nothing is specified (every field falls back to the defaults).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These permissions, with absent parts taken from `base`.
    pub fn resolve(&self, base: &Permissions) -> Permissions {
        let rules = |p: &Option<Vec<String>>, b: &RoomRules| {
            p.as_ref()
                .map_or_else(|| b.clone(), RoomRules::from_patterns)
        };
        Permissions {
            join: rules(&self.rooms.join, &base.join),
            publish: rules(&self.rooms.publish, &base.publish),
            presence: rules(&self.rooms.presence, &base.presence),
            broadcast: self.broadcast.unwrap_or(base.broadcast),
            send: self.send.unwrap_or(base.send),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_prefixes_and_everything() {
        let r = RoomRules::from_patterns(["lobby", "chat:*", ""]);
        assert!(r.allows("lobby"));
        assert!(!r.allows("lobby2"), "exact names are exact");
        assert!(!r.allows("lobb"));
        assert!(r.allows("chat:"));
        assert!(r.allows("chat:general"));
        assert!(!r.allows("chat"), "the prefix includes the colon");
        assert!(!r.allows("xchat:a"));
        assert!(!r.allows(""));
        assert!(!r.allows_all());

        let all = RoomRules::from_patterns(["a", "*"]);
        assert!(all.allows_all() && all.allows("anything"));
        assert_eq!(all, RoomRules::all(), "`*` swallows the rest");

        let none = RoomRules::from_patterns(Vec::<String>::new());
        assert!(!none.allows("lobby"));
    }

    #[test]
    fn a_star_inside_a_name_is_literal() {
        let r = RoomRules::from_patterns(["a*b"]);
        assert!(r.allows("a*b"));
        assert!(!r.allows("axb"));
    }

    #[test]
    fn absent_claims_fall_back_to_the_base() {
        let base = Permissions {
            broadcast: false,
            ..Permissions::all()
        };
        let spec: PermissionSpec =
            serde_json::from_str(r#"{"rooms":{"join":["chat:*"]},"send":false}"#).unwrap();
        let p = spec.resolve(&base);
        assert!(p.join.allows("chat:x") && !p.join.allows("lobby"));
        assert!(p.publish.allows("lobby"), "publish was not claimed");
        assert!(!p.broadcast, "from the base");
        assert!(!p.send, "claimed");
        assert_eq!(PermissionSpec::default().resolve(&base), base);
        assert!(PermissionSpec::default().is_empty());
        assert_eq!(
            PermissionSpec::allow_all().resolve(&Permissions::none()),
            Permissions::all()
        );
    }
}
