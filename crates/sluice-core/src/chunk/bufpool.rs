//! Recycled buffers for message bodies.
//!
//! A body is a megabyte or more. malloc serves a block that large with a fresh mapping (the
//! threshold is set to 256 KiB in `sluice`'s `main`), and the kernel then faults in and zeroes
//! every 4 KiB page of it on first touch: for `sluice run`, about 190,000 faults per GB of CSV
//! for each place a body is built. In one process the same few buffers go round instead: the
//! producer builds a body in one, the embedded queue hands it back once the body is in its file,
//! takes one to read a body into, and the consumer hands that back once the body is decoded.
//!
//! At most `KEPT_BYTES` are kept. Buffers under `MIN_BYTES` (served from malloc's heap
//! without faults) or over `MAX_BYTES` are not kept.

use std::sync::Mutex;

/// Smallest buffer kept: malloc's mmap threshold.
pub(crate) const MIN_BYTES: usize = 256 * 1024;
/// Largest buffer kept.
pub(crate) const MAX_BYTES: usize = 16 << 20;
/// Most bytes kept, all buffers together.
pub(crate) const KEPT_BYTES: usize = 16 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer of at least `capacity` bytes: a kept one if one is large enough.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity >= MIN_BYTES {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        // The smallest that fits, so a large buffer is not spent on a small body.
        if let Some(i) = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= capacity)
            .min_by_key(|&i| pool[i].capacity())
        {
            return pool.swap_remove(i);
        }
    }
    // Rounded up, so that a buffer serves the slightly larger bodies that follow.
    Vec::with_capacity(capacity.next_multiple_of(64 * 1024))
}

/// An empty string of at least `capacity` bytes (see [`take`]).
pub(crate) fn take_string(capacity: usize) -> String {
    String::from_utf8(take(capacity)).expect("an empty buffer is valid UTF-8")
}

/// Hands a buffer back for reuse; it is dropped if it is outside the kept sizes or the pool
/// is full.
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(MIN_BYTES..=MAX_BYTES).contains(&cap) {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let kept: usize = pool.iter().map(Vec::capacity).sum();
    if kept + cap <= KEPT_BYTES {
        pool.push(buf);
    }
}

/// Hands a string's buffer back (see [`give`]).
pub(crate) fn give_string(s: String) {
    give(s.into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_go_round_within_the_bounds() {
        // The pool is shared by every test of this process: work with sizes only this test
        // uses and count on nothing but their own round trip.
        let a = take(3 * MIN_BYTES + 1);
        assert!(a.capacity() > 3 * MIN_BYTES && a.is_empty());
        let ptr = a.as_ptr();
        let mut a = a;
        a.extend_from_slice(b"old contents");
        give(a);
        let b = take(3 * MIN_BYTES);
        assert_eq!(b.as_ptr(), ptr, "the kept buffer is reused");
        assert!(b.is_empty(), "a reused buffer comes back empty");
        let s = take_string(3 * MIN_BYTES);
        assert_ne!(s.as_ptr(), ptr, "a buffer is handed out once");
        give_string(s);
        give(b);

        // Small and huge buffers are not kept, and the pool stays within its bound.
        give(Vec::with_capacity(1000));
        give(Vec::with_capacity(MAX_BYTES + 1));
        for _ in 0..2 * KEPT_BYTES / MAX_BYTES {
            give(Vec::with_capacity(MAX_BYTES));
        }
        let pool = POOL.lock().unwrap();
        assert!(
            pool.iter()
                .all(|b| (MIN_BYTES..=MAX_BYTES).contains(&b.capacity()))
        );
        assert!(pool.iter().map(Vec::capacity).sum::<usize>() <= KEPT_BYTES);
    }
}
