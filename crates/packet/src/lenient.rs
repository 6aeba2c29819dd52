//! Decoding the header, tolerating what a newer minor version appended (`SPEC.md` §6).
//!
//! Format 1 encodes structs as positional arrays. A newer minor version may append fields to
//! any struct; rmp-serde on its own refuses arrays longer than the struct. For packets of a
//! newer minor version the header is therefore decoded through a wrapping deserializer that,
//! after a struct (or tuple) has taken the fields it knows, skips the remaining array elements.
//! Packets of this or an older minor version are decoded strictly.

use crate::error::DecodeError;
use crate::format::{FormatVersion, FORMAT_MINOR};
use crate::wire;

/// Decodes header bytes of a packet of format `version`.
pub(crate) fn decode_header(
    bytes: &[u8],
    version: FormatVersion,
) -> Result<wire::Header, DecodeError> {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let h: wire::Header = if version.minor > FORMAT_MINOR {
        serde::Deserialize::deserialize(skip::Lenient(&mut de))
    } else {
        serde::Deserialize::deserialize(&mut de)
    }
    .map_err(|source| DecodeError::msgpack("header", source))?;
    drop(de);
    if version.minor < crate::format::MINOR_SIGNED && crate::sign::uses_signed_fields(&h) {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "header fields of minor version 1.2 in an older packet",
        ));
    }
    if version.minor < crate::format::MINOR_SNAPSHOT && h.snapshot != 0 {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "a snapshot creation header (minor version 1.4) in an older packet",
        ));
    }
    if version.minor < crate::format::MINOR_FORK_DECISIONS && !h.fork_decisions.is_empty() {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "fork repair decisions (minor version 1.3) in an older packet",
        ));
    }
    if version.minor < crate::format::MINOR_REPORTS && crate::sign::uses_reports(&h) {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "signed reports (minor version 1.4) in an older packet",
        ));
    }
    if version.minor < crate::format::MINOR_RECIPIENTS && crate::sign::uses_recipients(&h) {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "age recipients (minor version 1.4) in an older packet",
        ));
    }
    if version.minor < crate::format::MINOR_SIGNED_DECISIONS
        && crate::sign::uses_decision_signatures(&h)
    {
        return Err(DecodeError::malformed(
            crate::format::ENVELOPE_LEN as u64,
            "signed fork repair decisions (minor version 1.5) in an older packet",
        ));
    }
    let rest = rest.len();
    if rest != 0 {
        return Err(DecodeError::malformed(
            (crate::format::ENVELOPE_LEN + bytes.len() - rest) as u64,
            "bytes after the header's value",
        ));
    }
    Ok(h)
}

/// The wrapping deserializer: every visitor handed to the inner deserializer is wrapped so that
/// sequences are drained after the visitor returns, at every depth.
mod skip {
    use serde::de::{
        DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess,
        Visitor,
    };
    use std::fmt;

    pub(super) struct Lenient<D>(pub D);
    struct Wrap<V>(V);
    struct Seq<'a, A>(&'a mut A);
    struct Map<A>(A);
    struct Enum<A>(A);
    struct Variant<A>(A);
    struct Seed<T>(T);

    macro_rules! forward_de {
        ($($m:ident),*) => {$(
            fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
                self.0.$m(Wrap(v))
            }
        )*};
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Lenient<D> {
        type Error = D::Error;
        forward_de!(
            deserialize_any,
            deserialize_bool,
            deserialize_i8,
            deserialize_i16,
            deserialize_i32,
            deserialize_i64,
            deserialize_i128,
            deserialize_u8,
            deserialize_u16,
            deserialize_u32,
            deserialize_u64,
            deserialize_u128,
            deserialize_f32,
            deserialize_f64,
            deserialize_char,
            deserialize_str,
            deserialize_string,
            deserialize_bytes,
            deserialize_byte_buf,
            deserialize_option,
            deserialize_unit,
            deserialize_seq,
            deserialize_map,
            deserialize_identifier,
            deserialize_ignored_any
        );
        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_unit_struct(name, Wrap(v))
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_newtype_struct(name, Wrap(v))
        }
        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple(len, Wrap(v))
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple_struct(name, len, Wrap(v))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_struct(name, fields, Wrap(v))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_enum(name, variants, Wrap(v))
        }
        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    }

    macro_rules! forward_visit {
        ($($m:ident: $t:ty),*) => {$(
            fn $m<E: serde::de::Error>(self, v: $t) -> Result<Self::Value, E> {
                self.0.$m(v)
            }
        )*};
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
        type Value = V::Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
        forward_visit!(
            visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64,
            visit_i128: i128, visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64,
            visit_u128: u128, visit_f32: f32, visit_f64: f64, visit_char: char,
            visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
            visit_bytes: &[u8], visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>
        );
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_none()
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.0.visit_unit()
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.visit_some(Lenient(d))
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.visit_newtype_struct(Lenient(d))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let v = self.0.visit_seq(Seq(&mut seq))?;
            // Skip the elements the visitor did not take: fields appended by a newer minor
            // version.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(v)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            self.0.visit_map(Map(map))
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.0.visit_enum(Enum(data))
        }
    }

    impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
        type Error = A::Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, A::Error> {
            self.0.next_element_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            self.0.next_key_seed(Seed(seed))
        }
        fn next_value_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.next_value_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
        type Error = A::Error;
        type Variant = Variant<A::Variant>;
        fn variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<(T::Value, Self::Variant), A::Error> {
            let (v, rest) = self.0.variant_seed(Seed(seed))?;
            Ok((v, Variant(rest)))
        }
    }

    impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
        type Error = A::Error;
        fn unit_variant(self) -> Result<(), A::Error> {
            self.0.unit_variant()
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.newtype_variant_seed(Seed(seed))
        }
        fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
            self.0.tuple_variant(len, Wrap(v))
        }
        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, A::Error> {
            self.0.struct_variant(fields, Wrap(v))
        }
    }

    impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<T> {
        type Value = T::Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
            self.0.deserialize(Lenient(d))
        }
    }
}
