//! Reading Kafka's primitive types from a run of bytes that may stop short.

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The bytes end before the value does: more are needed.
    Short,
    /// Not a valid encoding.
    Invalid,
}

#[derive(Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self.pos.checked_add(n).ok_or(Stop::Invalid)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Stop::Short)?;
        self.pos = end;
        Ok(bytes)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Stop> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        self.take(N)?.try_into().map_err(|_| Stop::Invalid)
    }

    pub fn i8(&mut self) -> Result<i8, Stop> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16, Stop> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, Stop> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Stop> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn uuid(&mut self) -> Result<[u8; 16], Stop> {
        self.array()
    }

    /// An unsigned varint of at most five bytes.
    pub fn uvarint(&mut self) -> Result<u32, Stop> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?.first().copied().ok_or(Stop::Short)?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Invalid)
    }

    /// An array's element count: int32 (`-1` null: 0 elements), or in flexible versions an
    /// unsigned varint of count + 1 (0 null).
    pub fn count(&mut self, flexible: bool) -> Result<usize, Stop> {
        if flexible {
            let n = self.uvarint()?;
            Ok(n.saturating_sub(1) as usize)
        } else {
            match self.i32()? {
                -1 => Ok(0),
                n => usize::try_from(n).map_err(|_| Stop::Invalid),
            }
        }
    }

    /// A (nullable) STRING or COMPACT_STRING; `None` for null.
    pub fn string(&mut self, flexible: bool) -> Result<Option<&'a str>, Stop> {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16()? {
                -1 => return Ok(None),
                n => usize::try_from(n).map_err(|_| Stop::Invalid)?,
            }
        };
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Stop::Invalid)
    }

    /// A (nullable) BYTES or COMPACT_BYTES length; `None` for null.
    pub fn bytes_len(&mut self, flexible: bool) -> Result<Option<usize>, Stop> {
        if flexible {
            match self.uvarint()? {
                0 => Ok(None),
                n => Ok(Some((n - 1) as usize)),
            }
        } else {
            match self.i32()? {
                -1 => Ok(None),
                n => usize::try_from(n).map(Some).map_err(|_| Stop::Invalid),
            }
        }
    }

    /// A flexible version's tagged fields, skipped.
    pub fn tagged_fields(&mut self) -> Result<(), Stop> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.skip(size)?;
        }
        Ok(())
    }
}
