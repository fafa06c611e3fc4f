//! Seats at the workers' door: a bounded set of open connections, and
//! which one gives way when a newcomer finds every seat taken.
//!
//! A cap that simply refuses newcomers hands the door to whoever fills it
//! first: 10,000 idle connections once shut every real worker out. Here a
//! full room makes room instead, by closing the seat that has been quiet
//! longest among those the caller may close (for connections that have
//! not said Hello: any; for hosts: those holding no work). A crowd of
//! strangers then costs each other their seats, not the volunteers.
//!
//! Pure: the QUIC shell (`quic.rs`) closes the connection a decision names.

use std::collections::{BTreeSet, HashMap};

/// Names one seat for as long as it is taken.
pub type SeatId = u64;

/// At most this many seats are looked at for one eviction: a room full of
/// hosts that all hold work refuses the newcomer after a bounded search.
pub const EVICTION_SCAN: usize = 256;

/// What happened to a newcomer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// A free seat.
    Seated(SeatId),
    /// The room was full: `evicted` (quiet longest among the closable,
    /// with its key) lost its seat to `seat`. The caller closes the
    /// evicted seat's connection.
    Replaced { seat: SeatId, evicted: (SeatId, K) },
    /// Full, and nobody the caller may close was found.
    Full,
}

/// A room of at most `cap` seats, each with a key (what the caller needs
/// to judge it: a host id, or nothing) and the time it was last active.
#[derive(Debug)]
pub struct Seats<K> {
    cap: usize,
    next: SeatId,
    seated: HashMap<SeatId, (K, u64)>,
    /// Every seat by (last active, id): the quietest first.
    by_quiet: BTreeSet<(u64, SeatId)>,
}

impl<K> Seats<K> {
    pub fn new(cap: usize) -> Self {
        Seats {
            cap: cap.max(1),
            next: 0,
            seated: HashMap::new(),
            by_quiet: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.seated.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seated.is_empty()
    }

    /// Seats a newcomer with `key` at `now_ms`, making room if the room is
    /// full by evicting the quietest seat whose key `may_evict` accepts
    /// (looking at no more than [`EVICTION_SCAN`] seats).
    pub fn admit(
        &mut self,
        key: K,
        now_ms: u64,
        mut may_evict: impl FnMut(&K) -> bool,
    ) -> Admission<K> {
        let evicted = if self.seated.len() >= self.cap {
            let victim = self
                .by_quiet
                .iter()
                .take(EVICTION_SCAN)
                .map(|&(_, id)| id)
                .find(|id| self.seated.get(id).is_some_and(|(k, _)| may_evict(k)));
            match victim.and_then(|id| Some((id, self.leave(id)?))) {
                Some(evicted) => Some(evicted),
                None => return Admission::Full,
            }
        } else {
            None
        };
        let seat = self.next;
        self.next += 1;
        self.seated.insert(seat, (key, now_ms));
        self.by_quiet.insert((now_ms, seat));
        match evicted {
            Some(evicted) => Admission::Replaced { seat, evicted },
            None => Admission::Seated(seat),
        }
    }

    /// Marks a seat active at `now_ms` (it moves to the back of the
    /// eviction order).
    pub fn touch(&mut self, seat: SeatId, now_ms: u64) {
        if let Some((_, at)) = self.seated.get_mut(&seat) {
            self.by_quiet.remove(&(*at, seat));
            *at = (*at).max(now_ms);
            self.by_quiet.insert((*at, seat));
        }
    }

    /// Frees a seat and gives back its key (`None` if it was already
    /// evicted).
    pub fn leave(&mut self, seat: SeatId) -> Option<K> {
        let (key, at) = self.seated.remove(&seat)?;
        self.by_quiet.remove(&(at, seat));
        Some(key)
    }

    /// The keys of the `n` quietest seats, quietest first.
    pub fn quietest(&self, n: usize) -> impl Iterator<Item = &K> {
        self.by_quiet
            .iter()
            .take(n)
            .filter_map(|(_, id)| self.seated.get(id).map(|(k, _)| k))
    }

    pub fn contains(&self, seat: SeatId) -> bool {
        self.seated.contains_key(&seat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_room_evicts_the_quietest_closable_seat() {
        let mut room = Seats::new(3);
        let Admission::Seated(a) = room.admit("busy", 0, |_| true) else {
            panic!()
        };
        let Admission::Seated(b) = room.admit("idle", 1, |_| true) else {
            panic!()
        };
        let Admission::Seated(c) = room.admit("idle", 2, |_| true) else {
            panic!()
        };
        // `a` is the quietest but may not be closed; `b` is next.
        let got = room.admit("new", 3, |k| *k != "busy");
        let Admission::Replaced { seat: d, evicted } = got else {
            panic!("{got:?}")
        };
        assert_eq!(evicted, (b, "idle"));
        assert!(room.contains(a) && room.contains(c) && room.contains(d));
        assert!(!room.contains(b));
        assert_eq!(room.len(), 3);
    }

    #[test]
    fn activity_moves_a_seat_to_the_back_of_the_order() {
        let mut room = Seats::new(2);
        let Admission::Seated(a) = room.admit((), 0, |_| true) else {
            panic!()
        };
        let Admission::Seated(b) = room.admit((), 1, |_| true) else {
            panic!()
        };
        room.touch(a, 5);
        assert_eq!(
            room.admit((), 6, |_| true),
            Admission::Replaced {
                seat: 2,
                evicted: (b, ())
            }
        );
        // An older touch never moves a seat back in time: seat 2 (active
        // at 6) stays behind `a` (active at 5).
        room.touch(2, 4);
        assert_eq!(
            room.admit((), 7, |_| true),
            Admission::Replaced {
                seat: 3,
                evicted: (a, ())
            }
        );
    }

    #[test]
    fn a_room_of_seats_none_may_lose_refuses_and_frees_on_leave() {
        let mut room = Seats::new(2);
        let Admission::Seated(a) = room.admit((), 0, |_| true) else {
            panic!()
        };
        room.admit((), 0, |_| true);
        assert_eq!(room.admit((), 1, |_| false), Admission::Full);
        room.leave(a);
        room.leave(a);
        assert!(matches!(room.admit((), 2, |_| false), Admission::Seated(_)));
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn the_eviction_search_is_bounded() {
        let mut room = Seats::new(EVICTION_SCAN + 1);
        for i in 0..=EVICTION_SCAN as u64 {
            room.admit(i, i, |_| true);
        }
        let mut looked = 0;
        let got = room.admit(999, 1000, |k| {
            looked += 1;
            *k == EVICTION_SCAN as u64
        });
        // The only closable seat is past the scan: refused, after a bounded look.
        assert_eq!(got, Admission::Full);
        assert_eq!(looked, EVICTION_SCAN);
    }
}
