//! Helper macros: serde for types that are raw bytes on the wire but text
//! (bech32, hex) in JSON, and the `Signable` + `Wire` pair of signed types.

/// Implements Serialize/Deserialize for a newtype over `$raw` that also has
/// `Display` and `FromStr`: text for human-readable formats, raw otherwise.
#[macro_export]
#[doc(hidden)]
macro_rules! human_readable_serde {
    ($ty:ident, $raw:ty, $expecting:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.collect_str(self) } else { self.0.serialize(s) }
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <String as serde::Deserialize>::deserialize(d)?;
                    s.parse::<$ty>().map_err(|e| serde::de::Error::custom(format!("expected {}: {e}", $expecting)))
                } else {
                    <$raw as serde::Deserialize>::deserialize(d).map($ty)
                }
            }
        }
    };
}

/// Declares `$body` as signed under `$domain`, and `Signed<$body>` as a wire
/// type (version 1) with its name and size limit.
#[macro_export]
#[doc(hidden)]
macro_rules! signed_wire_type {
    ($body:ty, $domain:expr, $name:literal, $max:expr) => {
        impl $crate::sign::Signable for $body {
            const DOMAIN: $crate::sign::Domain = $domain;
        }

        impl $crate::codec::Wire for $crate::sign::Signed<$body> {
            const NAME: &'static str = $name;
            const VERSION: u8 = 1;
            const MAX_BYTES: usize = $max;
        }
    };
}
