//! Kafka's two string encodings, read and written in place, for the head-only rewriters
//! (`kafka-protocol` keeps its field encoders private).

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::codec::{read_i16, read_i32, read_uvarint, Varint};

/// The encoded size of a null string.
pub fn null_len(flexible: bool) -> usize {
    if flexible {
        1
    } else {
        2
    }
}

/// A STRING (int16 length) or COMPACT_STRING (unsigned varint length + 1).
pub fn write_string(out: &mut BytesMut, s: &str, flexible: bool) -> Result<(), String> {
    if flexible {
        let mut n = u32::try_from(s.len() + 1).map_err(|_| "name too long")?;
        while n >= 0x80 {
            out.put_u8((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.put_u8(n as u8);
    } else {
        out.put_i16(i16::try_from(s.len()).map_err(|_| "name too long")?);
    }
    out.put_slice(s.as_bytes());
    Ok(())
}

/// A string field, or how many bytes of the buffer reading it needs.
pub enum Str {
    Need(usize),
    Null(usize),
    Value(Range<usize>),
    Invalid,
}

/// A (nullable) STRING or COMPACT_STRING at `at`.
pub fn read_string(buf: &[u8], at: usize, flexible: bool) -> Str {
    let (len, start) = if flexible {
        match read_uvarint(buf, at) {
            Varint::Value(0, end) => return Str::Null(end),
            Varint::Value(n, end) => ((n - 1) as usize, end),
            Varint::Short(need) => return Str::Need(need),
            Varint::Invalid => return Str::Invalid,
        }
    } else {
        match read_i16(buf, at) {
            Some(-1) => return Str::Null(at + 2),
            Some(n) if n >= 0 => (n as usize, at + 2),
            Some(_) => return Str::Invalid,
            None => return Str::Need(at + 2),
        }
    };
    let end = start + len;
    if buf.len() < end {
        Str::Need(end)
    } else {
        Str::Value(start..end)
    }
}

/// An array's length, or how many bytes of the buffer reading it needs.
pub enum Count {
    /// The element count and the position just after the length.
    Value(u32, usize),
    Need(usize),
    /// Malformed, or null (no array the head-only rewriters read may be null).
    Invalid,
}

/// The length of an ARRAY (int32) or COMPACT_ARRAY (unsigned varint length + 1) at `at`.
pub fn read_array_len(buf: &[u8], at: usize, flexible: bool) -> Count {
    if flexible {
        match read_uvarint(buf, at) {
            Varint::Value(0, _) | Varint::Invalid => Count::Invalid,
            Varint::Value(n, end) => Count::Value(n - 1, end),
            Varint::Short(need) => Count::Need(need),
        }
    } else {
        match read_i32(buf, at) {
            Some(n) => match u32::try_from(n) {
                Ok(n) => Count::Value(n, at + 4),
                Err(_) => Count::Invalid,
            },
            None => Count::Need(at + 4),
        }
    }
}

/// An array of topics: how many, where the first one's name starts (its length field), and
/// that name, if there is a first one. Both head-only scanners read one.
pub struct FirstName {
    pub count: u32,
    pub name_at: usize,
    pub name: Option<Range<usize>>,
}

/// The topic array at `at` and its first name; `Err(Some(n))` when the buffer's first `n`
/// bytes are needed, `Err(None)` when it is malformed (topic names are never null).
pub fn read_first_name(buf: &[u8], at: usize, flexible: bool) -> Result<FirstName, Option<usize>> {
    let (count, name_at) = match read_array_len(buf, at, flexible) {
        Count::Value(n, end) => (n, end),
        Count::Need(n) => return Err(Some(n)),
        Count::Invalid => return Err(None),
    };
    let name = if count == 0 {
        None
    } else {
        match read_string(buf, name_at, flexible) {
            Str::Need(n) => return Err(Some(n)),
            Str::Value(r) => Some(r),
            Str::Null(_) | Str::Invalid => return Err(None),
        }
    };
    Ok(FirstName {
        count,
        name_at,
        name,
    })
}

/// Where the tagged-field section at `at` ends (flexible versions), or how many bytes of the
/// buffer finding out needs.
pub fn skip_tagged_fields(buf: &[u8], at: usize) -> Result<usize, Option<usize>> {
    let (count, mut pos) = match read_uvarint(buf, at) {
        Varint::Value(n, end) => (n, end),
        Varint::Short(need) => return Err(Some(need)),
        Varint::Invalid => return Err(None),
    };
    for _ in 0..count {
        pos = match read_uvarint(buf, pos) {
            Varint::Value(_, end) => end,
            Varint::Short(need) => return Err(Some(need)),
            Varint::Invalid => return Err(None),
        };
        let (size, end) = match read_uvarint(buf, pos) {
            Varint::Value(n, end) => (n as usize, end),
            Varint::Short(need) => return Err(Some(need)),
            Varint::Invalid => return Err(None),
        };
        pos = end.checked_add(size).ok_or(None)?;
    }
    if buf.len() < pos {
        return Err(Some(pos));
    }
    Ok(pos)
}
