//! The one codec for everything that crosses the wire or reaches the disk:
//! a version byte followed by bincode 2 (fixed-width little-endian integers).
//! Sizes are checked before any decoding, trailing bytes are refused, and a
//! decode may never claim more memory than `MAX_DECODE_BYTES`.

use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::limits::MAX_DECODE_BYTES;

/// The bincode configuration of every agora encoding. Changing it changes
/// every byte on the wire: the pinned test vectors guard it.
type Config = Configuration<LittleEndian, Fixint, Limit<MAX_DECODE_BYTES>>;

const fn config() -> Config {
    config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<MAX_DECODE_BYTES>()
}

/// A type with its own wire identity: a name for errors, a version carried as
/// the first byte of its encoding, and a hard size limit.
pub trait Wire: Serialize + DeserializeOwned {
    const NAME: &'static str;
    const VERSION: u8;
    const MAX_BYTES: usize;
}

/// `VERSION || bincode(value)`, refused if it would exceed `MAX_BYTES`.
pub fn encode<T: Wire>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![T::VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| Error::Encode { type_name: T::NAME, reason: e.to_string() })?;
    if out.len() > T::MAX_BYTES {
        return Err(Error::TooLarge { type_name: T::NAME, len: out.len(), max: T::MAX_BYTES });
    }
    Ok(out)
}

/// The length `encode` would return, without building the bytes (the mempool
/// and the block builder size every transaction they see); the same error
/// when it would exceed `MAX_BYTES`.
pub fn encoded_len<T: Wire>(value: &T) -> Result<usize, Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(1);
    bincode::serde::encode_into_std_write(value, &mut count, config())
        .map_err(|e| Error::Encode { type_name: T::NAME, reason: e.to_string() })?;
    if count.0 > T::MAX_BYTES {
        return Err(Error::TooLarge { type_name: T::NAME, len: count.0, max: T::MAX_BYTES });
    }
    Ok(count.0)
}

/// Decodes bytes produced by `encode`, checking the size limit first, then
/// the version, then that the value uses every byte.
pub fn decode<T: Wire>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > T::MAX_BYTES {
        return Err(Error::TooLarge { type_name: T::NAME, len: bytes.len(), max: T::MAX_BYTES });
    }
    let (&version, body) = bytes.split_first().ok_or(Error::Empty { type_name: T::NAME })?;
    if version != T::VERSION {
        return Err(Error::Version { type_name: T::NAME, found: version, expected: T::VERSION });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| Error::Malformed { type_name: T::NAME, reason: e.to_string() })?;
    if used != body.len() {
        return Err(Error::TrailingBytes { type_name: T::NAME, extra: body.len() - used });
    }
    Ok(value)
}

/// Encodes a value without a version byte, for hashing and signing only.
pub(crate) fn encode_body<T: Serialize>(value: &T, type_name: &'static str) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| Error::Encode { type_name, reason: e.to_string() })
}

/// The canonical bytes of any serializable value, for hashing (state roots,
/// tx roots). Not a wire format: nothing ever decodes these.
pub fn canonical_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    encode_body(value, "canonical")
}

/// Writes the canonical bytes of `value` to `out` (a buffer or a hasher).
pub fn canonical_into<T: Serialize, W: std::io::Write>(value: &T, out: &mut W) -> Result<(), Error> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| Error::Encode { type_name: "canonical", reason: e.to_string() })
}
