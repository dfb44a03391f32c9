//! Bounds on what decoding may allocate. Patched (kafka-filter): not in upstream 0.18.0, see
//! `PATCHED.md`.
//!
//! Counts and lengths read from the wire never size an allocation by themselves:
//!
//! - an array whose element count exceeds the bytes left in the buffer is refused before anything
//!   is allocated (every element takes at least one byte: Kafka's own decoders refuse the same);
//! - an array is pre-sized to at most [`MAX_PREALLOC_BYTES`] and then grows as its elements
//!   actually decode, at most doubling, never past the count on the wire; a growth the allocator
//!   cannot satisfy fails the decode instead of aborting.
//!
//! That bounds the heap of a decode by the bytes it decoded, but not tightly: one wire byte can
//! become tens of bytes of decoded structure (a struct of empty fields, a map of tagged fields).
//! A caller that decodes untrusted input can bound it in bytes with [`with_decode_budget`]: every
//! heap reservation a decode makes is charged against the budget, and the decode fails with
//! [`DecodeBudgetExceeded`] before a reservation that would pass it.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::{Display, Formatter};
use std::mem::size_of;

use anyhow::{bail, Result};
use bytes::Bytes;

/// The most a decoder reserves up front for a collection, in bytes, whatever count the wire
/// claims. Past it, a collection grows as its elements decode.
pub const MAX_PREALLOC_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: usize,
    left: usize,
    /// A charge was refused: the decode fails, whatever it returns.
    exceeded: bool,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// The error of a decode that would have reserved more heap than the budget set by
/// [`with_decode_budget`]. It is the root cause of the `anyhow::Error` the decode returns:
/// `err.downcast_ref::<DecodeBudgetExceeded>()` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBudgetExceeded {
    /// The budget, in bytes.
    pub limit: usize,
}

impl Display for DecodeBudgetExceeded {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "decoding needs more than its budget of {} heap bytes", self.limit)
    }
}

impl std::error::Error for DecodeBudgetExceeded {}

/// Runs `f` (typically one `Decodable::decode`) with at most `limit` bytes of heap reservations
/// for the decoding it does on this thread. Decoding outside such a call is not charged. Returns
/// what `f` returns, or an error whose root cause is [`DecodeBudgetExceeded`] if a reservation
/// was refused (even if `f` went on to return `Ok`: an unknown tagged field past the budget is
/// dropped, not an error where it is decoded).
///
/// What is charged: every buffer an array decoder reserves (the new block in full at each growth,
/// since the old block is alive while it is copied), each string or byte array copied into a
/// `String` or `Vec<u8>`, each unknown tagged field (a share of a `BTreeMap` node), each record and
/// record header of `RecordBatchDecoder`. Strings and bytes decoded as `StrBytes`/`Bytes` share
/// the memory of a `bytes::Bytes` or `BytesMut` buffer and are not charged; from a `&[u8]` or a
/// `Cursor` they are copied, uncharged, at most once per byte decoded. So the heap a decode from a
/// `Bytes` buffer holds stays within `limit` plus a few small allocations of fixed size (an error
/// value, the shared header of a `Bytes`).
///
/// Calls nest: the inner budget is capped by what is left of the outer one, and what the inner
/// decode reserves is charged to the outer one as well.
pub fn with_decode_budget<R>(limit: usize, f: impl FnOnce() -> Result<R>) -> Result<R> {
    struct Restore(Option<Budget>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.map(|outer| {
                let spent = BUDGET
                    .get()
                    .map_or(0, |inner| inner.limit.saturating_sub(inner.left));
                Budget {
                    left: outer.left.saturating_sub(spent),
                    ..outer
                }
            });
            BUDGET.set(outer);
        }
    }
    let outer = BUDGET.get();
    let limit = outer.map_or(limit, |outer| limit.min(outer.left));
    let _restore = Restore(outer);
    BUDGET.set(Some(Budget {
        limit,
        left: limit,
        exceeded: false,
    }));
    let result = f();
    match BUDGET.get() {
        Some(budget) if budget.exceeded => match result {
            Err(e) if e.downcast_ref::<DecodeBudgetExceeded>().is_some() => Err(e),
            _ => Err(DecodeBudgetExceeded {
                limit: budget.limit,
            }
            .into()),
        },
        _ => result,
    }
}

/// What is left of the budget of the innermost [`with_decode_budget`] running on this thread, or
/// `None` outside one.
pub fn decode_budget_left() -> Option<usize> {
    BUDGET.get().map(|budget| budget.left)
}

/// Charges `bytes` to the current budget, if any, or fails with [`DecodeBudgetExceeded`].
pub(crate) fn charge(bytes: usize) -> Result<()> {
    match take(bytes) {
        None => Ok(()),
        Some(exceeded) => Err(exceeded.into()),
    }
}

/// Takes `bytes` from the current budget, if any; `Some` (and the budget marked exceeded) if
/// they are not left.
fn take(bytes: usize) -> Option<DecodeBudgetExceeded> {
    let budget = BUDGET.get()?;
    if bytes <= budget.left {
        BUDGET.set(Some(Budget {
            left: budget.left - bytes,
            ..budget
        }));
        None
    } else {
        BUDGET.set(Some(Budget {
            exceeded: true,
            ..budget
        }));
        Some(DecodeBudgetExceeded {
            limit: budget.limit,
        })
    }
}

/// An empty `Vec` for `count` elements read from the wire, with `remaining` bytes left in the
/// buffer: refused if `count > remaining`. Sized for `count` elements if a budget is set and what
/// is left of it pays for them (so that a valid array is reserved once, not grown), else to at
/// most [`MAX_PREALLOC_BYTES`] (and what is left of the budget).
pub(crate) fn vec_for_count<T>(count: usize, remaining: usize) -> Result<Vec<T>> {
    if count > remaining {
        bail!(
            "Tried to allocate a collection of size {count}, but there are only {remaining} bytes remaining."
        );
    }
    let size = size_of::<T>().max(1);
    let left = decode_budget_left();
    let capacity = match (left, count.checked_mul(size)) {
        (Some(left), Some(bytes)) if bytes <= left => count,
        _ => count.min(MAX_PREALLOC_BYTES.min(left.unwrap_or(usize::MAX)) / size),
    };
    let mut v = Vec::new();
    grow(&mut v, capacity)?;
    Ok(v)
}

/// Pushes `item` onto `v`, which holds fewer than `count` elements: when `v` is full it grows by
/// its capacity (at least 4, at most up to `count`), charged to the budget.
pub(crate) fn push_bounded<T>(v: &mut Vec<T>, count: usize, item: T) -> Result<()> {
    if v.len() == v.capacity() {
        let additional = v
            .capacity()
            .max(4)
            .min(count.saturating_sub(v.len()))
            .max(1);
        grow(v, additional)?;
    }
    v.push(item);
    Ok(())
}

fn grow<T>(v: &mut Vec<T>, additional: usize) -> Result<()> {
    if additional == 0 || size_of::<T>() == 0 {
        return Ok(());
    }
    // The new block in full: the old one is alive while it is copied.
    let new_capacity = v.capacity().saturating_add(additional);
    charge(new_capacity.saturating_mul(size_of::<T>()))?;
    if v.try_reserve_exact(additional).is_err() {
        bail!(
            "Cannot allocate {new_capacity} elements of {} bytes",
            size_of::<T>()
        );
    }
    Ok(())
}

/// A `Vec<u8>` of `len` zero bytes, for a string or byte array of that length read from the wire,
/// with `remaining` bytes left: refused if `len > remaining`, charged to the budget.
pub(crate) fn zeroed_bytes(len: usize, remaining: usize) -> Result<Vec<u8>> {
    if len > remaining {
        bail!("Length {len} exceeds the {remaining} bytes left");
    }
    charge(len)?;
    let mut v = Vec::new();
    if v.try_reserve_exact(len).is_err() {
        bail!("Cannot allocate {len} bytes");
    }
    v.resize(len, 0);
    Ok(v)
}

/// What one `BTreeMap<i32, Bytes>` node takes (an internal node: keys, values, edges and header).
const TAGGED_FIELDS_NODE_BYTES: usize =
    16 + 11 * (size_of::<i32>() + size_of::<Bytes>()) + 12 * size_of::<usize>();

/// Inserts an unknown tagged field read from the wire. The first entry of a map costs a whole
/// node; a node holds at least 5 entries, so later ones are charged a quarter of a node each.
/// Past the budget the field is dropped and the budget marked exceeded, so that
/// [`with_decode_budget`] fails: this is called from hundreds of places in the generated
/// decoders, each of which would otherwise need an error path.
pub(crate) fn insert_unknown_tagged_field(
    fields: &mut BTreeMap<i32, Bytes>,
    tag: u32,
    value: Bytes,
) -> Result<()> {
    // A tag above i32::MAX would be kept under a negative key, which the encoders count but do
    // not write (they write keys from 0): the re-encoded message would then claim one field
    // more than follows, and a broker would read the next bytes as it. Found by fuzzing the
    // filter (a tenant could shift a rewritten request into names of its choosing).
    let Ok(key) = i32::try_from(tag) else {
        bail!("tagged field tag {tag} is larger than {}", i32::MAX);
    };
    let cost = if fields.is_empty() {
        TAGGED_FIELDS_NODE_BYTES
    } else {
        TAGGED_FIELDS_NODE_BYTES / 4
    };
    if take(cost).is_none() {
        fields.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    #[test]
    fn tags_above_i32_max_are_refused() {
        let mut fields = BTreeMap::new();
        insert_unknown_tagged_field(&mut fields, 7, Bytes::new()).unwrap();
        insert_unknown_tagged_field(&mut fields, i32::MAX as u32, Bytes::new()).unwrap();
        assert!(insert_unknown_tagged_field(&mut fields, 1 << 31, Bytes::new()).is_err());
        assert!(insert_unknown_tagged_field(&mut fields, u32::MAX, Bytes::new()).is_err());
        assert_eq!(fields.len(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_only_inside_a_budget() {
        assert_eq!(decode_budget_left(), None);
        charge(usize::MAX).unwrap();
        let err = with_decode_budget(100, || {
            charge(60).unwrap();
            assert_eq!(decode_budget_left(), Some(40));
            let err = charge(41).unwrap_err();
            assert_eq!(
                err.downcast_ref::<DecodeBudgetExceeded>(),
                Some(&DecodeBudgetExceeded { limit: 100 })
            );
            assert_eq!(decode_budget_left(), Some(40));
            Ok(())
        })
        .unwrap_err();
        assert!(err.is::<DecodeBudgetExceeded>());
        assert_eq!(decode_budget_left(), None);
    }

    #[test]
    fn nested_budgets_are_capped_and_charged_to_the_outer_one() {
        with_decode_budget(100, || {
            charge(30)?;
            with_decode_budget(1000, || {
                assert_eq!(decode_budget_left(), Some(70));
                charge(20)
            })?;
            assert_eq!(decode_budget_left(), Some(50));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn vec_for_count_refuses_counts_past_the_bytes_left() {
        assert!(vec_for_count::<u64>(11, 10).is_err());
        let v = vec_for_count::<[u8; 1024]>(1 << 20, 1 << 20).unwrap();
        assert_eq!(v.capacity(), MAX_PREALLOC_BYTES / 1024);
        // Within a budget that pays for them, the elements are reserved at once.
        with_decode_budget(1 << 20, || {
            let v = vec_for_count::<[u8; 1024]>(1000, 1 << 20)?;
            assert_eq!(v.capacity(), 1000);
            assert_eq!(decode_budget_left(), Some((1 << 20) - 1000 * 1024));
            let v = vec_for_count::<[u8; 1024]>(1000, 1 << 20)?;
            assert_eq!(v.capacity(), 24);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn push_bounded_grows_within_the_count_and_the_budget() {
        let count = 100;
        let mut v = vec_for_count::<u32>(count, 1000).unwrap();
        for i in 0..count {
            push_bounded(&mut v, count, i as u32).unwrap();
        }
        assert_eq!(v.capacity(), count);

        // 4 then 8 elements: blocks of 32 and 64 bytes.
        with_decode_budget(96, || {
            let mut v = Vec::<u64>::new();
            (0..8).try_for_each(|i| push_bounded(&mut v, 1000, i))
        })
        .unwrap();
        let err = with_decode_budget(95, || {
            let mut v = Vec::<u64>::new();
            (0..8).try_for_each(|i| push_bounded(&mut v, 1000, i))
        });
        assert!(err.unwrap_err().is::<DecodeBudgetExceeded>());
    }

    #[test]
    fn tagged_fields_past_the_budget_are_dropped_and_fail_the_decode() {
        let mut fields = BTreeMap::new();
        let err = with_decode_budget(TAGGED_FIELDS_NODE_BYTES, || {
            insert_unknown_tagged_field(&mut fields, 1, Bytes::new()).unwrap();
            insert_unknown_tagged_field(&mut fields, 2, Bytes::new()).unwrap();
            Ok(())
        })
        .unwrap_err();
        assert!(err.is::<DecodeBudgetExceeded>());
        assert_eq!(fields.len(), 1);
    }
}
