//! Serde helpers: types that are raw bytes on the wire but text (bech32, hex)
//! in JSON, chosen by the serializer's `is_human_readable`.

/// Implements Serialize/Deserialize for a newtype over `$raw` that also has
/// `Display` and `FromStr`: text for human-readable formats, raw otherwise.
#[macro_export]
#[doc(hidden)]
macro_rules! human_readable_serde {
    ($ty:ident, $raw:ty, $expecting:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <String as serde::Deserialize>::deserialize(d)?;
                    s.parse::<$ty>().map_err(|e| {
                        serde::de::Error::custom(format!("expected {}: {e}", $expecting))
                    })
                } else {
                    <$raw as serde::Deserialize>::deserialize(d).map($ty)
                }
            }
        }
    };
}
