//! A connected client as the application sees it: identity plus a key/value store.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::auth::Permissions;
use crate::engine::ids::SessionId;

/// The permissions of a session before its upgrade decided them: none.
static NO_PERMISSIONS: std::sync::LazyLock<Arc<Permissions>> =
    std::sync::LazyLock::new(|| Arc::new(Permissions::none()));

/// One WebSocket session. Lives on its shard; hooks get it by reference.
///
/// The key/value store is Melody's `Set`/`Get`: per-session application state (a display name,
/// a permission set, a counter) that hooks and handlers read and write on the shard thread.
/// It is allocated on first use, so idle sessions that never store anything pay one pointer.
pub struct Session {
    pub(crate) id: SessionId,
    pub(crate) user: Arc<str>,
    pub(crate) addr: PeerAddr,
    pub(crate) rooms: RoomList,
    /// Shared with every session that has the same set (anonymous ones share the defaults).
    pub(crate) permissions: Arc<Permissions>,
    // Boxed: an empty HashMap is 48 bytes in every session, a None box is 8.
    #[allow(clippy::box_collection)]
    keys: Option<Box<HashMap<String, Box<dyn Any + Send>>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("addr", &self.addr.get())
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(id: SessionId, addr: SocketAddr) -> Self {
        Self {
            id,
            user: Arc::from(""),
            addr: PeerAddr::new(addr),
            rooms: RoomList::default(),
            permissions: NO_PERMISSIONS.clone(),
            keys: None,
        }
    }

    /// The session id, unique for the server's lifetime.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The user id (from `?user=`, a hook, or generated for anonymous clients).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Sets the user id. Only takes effect from `on_connect`, before the session is announced.
    pub fn set_user(&mut self, user: impl Into<Arc<str>>) {
        self.user = user.into();
    }

    /// What the session may do (from its token, the authenticator or `default_permissions`).
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// Replaces the session's permissions (from `on_connect`, or later from a hook).
    pub fn set_permissions(&mut self, permissions: impl Into<Arc<Permissions>>) {
        self.permissions = permissions.into();
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.addr.get()
    }

    /// The shard (reactor thread) the session lives on.
    pub fn shard(&self) -> usize {
        self.id.shard()
    }

    /// Rooms the session is in.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.as_slice().iter().map(|r| &**r)
    }

    /// Records a room joined.
    pub(crate) fn push_room(&mut self, room: Arc<str>) {
        self.rooms.push(room);
    }

    /// Whether the session is in `room`.
    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.as_slice().iter().any(|r| &**r == room)
    }

    /// Stores a value under `key`, replacing any previous one.
    pub fn set<T: Any + Send>(&mut self, key: impl Into<String>, value: T) {
        self.keys
            .get_or_insert_with(Default::default)
            .insert(key.into(), Box::new(value));
    }

    /// The value under `key`, if there is one of type `T`.
    pub fn get<T: Any>(&self, key: &str) -> Option<&T> {
        self.keys.as_ref()?.get(key)?.downcast_ref()
    }

    /// The value under `key` for changing in place, if there is one of type `T`.
    pub fn get_mut<T: Any>(&mut self, key: &str) -> Option<&mut T> {
        self.keys.as_mut()?.get_mut(key)?.downcast_mut()
    }

    /// Removes the value under `key`; returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        self.keys.as_mut().is_some_and(|k| k.remove(key).is_some())
    }
}

/// The rooms a session is in. Most sessions are in one room, which needs no list on the heap
/// (a list of one was a 16-byte allocation per joined connection; tuning.md).
#[derive(Debug, Default)]
pub(crate) enum RoomList {
    #[default]
    None,
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl RoomList {
    pub(crate) fn as_slice(&self) -> &[Arc<str>] {
        match self {
            RoomList::None => &[],
            RoomList::One(room) => std::slice::from_ref(room),
            RoomList::Many(rooms) => rooms,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn push(&mut self, room: Arc<str>) {
        *self = match std::mem::take(self) {
            RoomList::None => RoomList::One(room),
            RoomList::One(first) => RoomList::Many(vec![first, room]),
            RoomList::Many(mut rooms) => {
                rooms.push(room);
                RoomList::Many(rooms)
            }
        };
    }

    pub(crate) fn remove(&mut self, room: &str) {
        match self {
            RoomList::One(r) if **r == *room => *self = RoomList::None,
            RoomList::Many(rooms) => rooms.retain(|r| **r != *room),
            _ => {}
        }
    }
}

/// A peer's address in 18 bytes, where a `SocketAddr` takes 32 (room for an IPv6 flow label
/// and scope id that TCP peers of a server never need): it is in every connection's slot and
/// every directory entry (tuning.md, "Memory per connection"). IPv4 is kept IPv4-mapped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr {
    ip: [u8; 16],
    port: u16,
}

impl PeerAddr {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Self {
            ip: ip.octets(),
            port: addr.port(),
        }
    }

    pub(crate) fn get(self) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        SocketAddr::new(ip, self.port)
    }
}

impl std::fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_typed() {
        let mut s = Session::new(SessionId::new(1, 0, 0), "127.0.0.1:1".parse().unwrap());
        assert!(s.get::<u32>("n").is_none());
        s.set("n", 5u32);
        s.set("name", "al".to_string());
        assert_eq!(s.get::<u32>("n"), Some(&5));
        assert_eq!(s.get::<String>("n"), None, "wrong type reads as absent");
        *s.get_mut::<u32>("n").unwrap() += 1;
        assert_eq!(s.get::<u32>("n"), Some(&6));
        assert!(s.remove("n"));
        assert!(!s.remove("n"));
    }

    #[test]
    fn a_room_list_keeps_rooms_in_order_inline_or_not() {
        let mut l = RoomList::default();
        for r in ["a", "b", "c"] {
            l.push(r.into());
        }
        l.remove("b");
        assert_eq!(l.as_slice(), [Arc::from("a"), Arc::from("c")]);
        let mut one = RoomList::default();
        one.push("x".into());
        one.remove("y");
        assert_eq!(one.len(), 1);
        one.remove("x");
        assert_eq!(one.len(), 0);
        assert_eq!(
            std::mem::size_of::<RoomList>(),
            24,
            "as small as the Vec it replaced"
        );
    }

    #[test]
    fn a_peer_address_reads_back_as_it_was_given() {
        for a in [
            "127.0.0.9:4242",
            "[2001:db8::7]:443",
            "[::1]:1",
            "0.0.0.0:0",
        ] {
            let addr = a.parse().expect("an address");
            assert_eq!(super::PeerAddr::new(addr).get(), addr);
        }
        assert_eq!(std::mem::size_of::<super::PeerAddr>(), 18);
    }
}
