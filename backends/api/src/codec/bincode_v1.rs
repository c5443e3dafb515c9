//! A reader of format version 1: serde values as bincode 2.0 wrote them in its standard
//! configuration (little endian, variable-length integers). Data directories and peers written
//! before format version 2 hold it; nothing writes it any more, so only decoding is here.
//!
//! The format, as this reader takes it:
//! - `u8`, `i8`: one byte; `bool`: one byte, 0 or 1.
//! - other integers (and lengths): a variable-length unsigned integer — a first byte below 251
//!   is the value; 251, 252, 253, 254 announce a little-endian `u16`, `u32`, `u64`, `u128`
//!   that follows; 255 is invalid. Signed integers are zigzag-encoded first.
//! - `f32`, `f64`: little-endian IEEE 754.
//! - `char`: its UTF-8 bytes; strings and byte arrays: length, then the bytes.
//! - `Option`: a byte, 0 (none) or 1 (some, then the value).
//! - sequences and maps: length, then the elements (key, value for maps); tuples and structs:
//!   the fields in order, no length; newtypes: the inner value; units: nothing.
//! - enums: the variant index as a variable-length `u32`, then the variant's content.
//!
//! Values are never self-describing, so `deserialize_any` is refused, as bincode refused it.

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

/// Why a version-1 body did not decode.
#[derive(Debug, thiserror::Error)]
pub(super) enum LegacyError {
    /// The input ended inside a value.
    #[error("unexpected end of input: {0} more bytes needed")]
    Eof(usize),
    /// A variable-length integer started with 255, or does not fit the type asked for.
    #[error("invalid integer: {0}")]
    Integer(&'static str),
    /// A byte that must be 0 or 1 was neither.
    #[error("invalid {what} tag {tag}")]
    Tag {
        /// What was being read.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// Bytes of a string or char are not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,
    /// The type asked for a self-describing read.
    #[error("format version 1 is not self-describing")]
    NotSelfDescribing,
    /// The value's own `Deserialize` refused the input.
    #[error("{0}")]
    Custom(String),
}

impl de::Error for LegacyError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Self::Custom(message.to_string())
    }
}

type Result<T> = std::result::Result<T, LegacyError>;

/// Reads one value from the front of a byte slice.
pub(super) struct Reader<'de> {
    input: &'de [u8],
}

impl<'de> Reader<'de> {
    pub(super) fn new(input: &'de [u8]) -> Self {
        Self { input }
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.input.len()
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if self.input.len() < n {
            return Err(LegacyError::Eof(n - self.input.len()));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn varint(&mut self) -> Result<u128> {
        Ok(match self.byte()? {
            small @ 0..=250 => u128::from(small),
            251 => u128::from(u16::from_le_bytes(self.array()?)),
            252 => u128::from(u32::from_le_bytes(self.array()?)),
            253 => u128::from(u64::from_le_bytes(self.array()?)),
            254 => u128::from_le_bytes(self.array()?),
            _ => return Err(LegacyError::Integer("marker byte 255")),
        })
    }

    fn unsigned<T: TryFrom<u128>>(&mut self) -> Result<T> {
        T::try_from(self.varint()?).map_err(|_| LegacyError::Integer("too large for its type"))
    }

    fn signed<T: TryFrom<i128>>(&mut self) -> Result<T> {
        let raw = self.varint()?;
        // Zigzag: 0 → 0, 1 → -1, 2 → 1, 3 → -2, …
        let magnitude = (raw >> 1) as i128;
        let value = if raw & 1 == 0 {
            magnitude
        } else {
            -magnitude - 1
        };
        T::try_from(value).map_err(|_| LegacyError::Integer("out of range for its type"))
    }

    fn len(&mut self) -> Result<usize> {
        self.unsigned()
    }

    fn bytes(&mut self) -> Result<&'de [u8]> {
        let len = self.len()?;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'de str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| LegacyError::Utf8)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(LegacyError::Tag { what, tag }),
        }
    }

    fn char(&mut self) -> Result<char> {
        let first = self.byte()?;
        let width = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return Err(LegacyError::Utf8),
        };
        let mut buf = [first, 0, 0, 0];
        buf[1..width].copy_from_slice(self.take(width - 1)?);
        let text = std::str::from_utf8(&buf[..width]).map_err(|_| LegacyError::Utf8)?;
        text.chars().next().ok_or(LegacyError::Utf8)
    }
}

/// `len` elements read one after another (a sequence, tuple, struct or map).
struct Elements<'a, 'de> {
    reader: &'a mut Reader<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = LegacyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> MapAccess<'de> for Elements<'_, 'de> {
    type Error = LegacyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> EnumAccess<'de> for &mut Reader<'de> {
    type Error = LegacyError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index: u32 = self.unsigned()?;
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for &mut Reader<'de> {
    type Error = LegacyError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements {
            reader: self,
            left: len,
        })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.tuple_variant(fields.len(), visitor)
    }
}

macro_rules! unsigned {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(self.unsigned::<$ty>()?)
        }
    )*};
}

macro_rules! signed {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(self.signed::<$ty>()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = LegacyError;

    unsigned!(
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_u128 visit_u128 u128
    );
    signed!(
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_i128 visit_i128 i128
    );

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(LegacyError::NotSelfDescribing)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(LegacyError::NotSelfDescribing)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(self.flag("bool")?)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.byte()?)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(i8::from_le_bytes(self.array()?))
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_char(self.char()?)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.flag("option")? {
            visitor.visit_some(self)
        } else {
            visitor.visit_none()
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_seq(Elements { reader: self, left })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Elements {
            reader: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Elements { reader: self, left })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.unsigned()?)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}
