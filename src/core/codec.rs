//! Bincode 2.0.1 (serde) encoding of foca's headers and members, and of the
//! notices that ride foca's custom broadcasts.
//!
//! Owns the byte format of SWIM traffic. Must never panic on input: every
//! decode is bounded by `MAX_ITEM_BYTES` and returns an error instead.

use bytes::{Buf, BufMut};
use foca::{Header, Member};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::identity::Identity;

/// No single header, member or notice may decode from more than this.
pub const MAX_ITEM_BYTES: usize = 1_150;

type Cfg = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_ITEM_BYTES>,
>;

fn cfg() -> Cfg {
    bincode::config::standard().with_limit::<MAX_ITEM_BYTES>()
}

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not decode as the expected type.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value could not be encoded (too big for the item limit).
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Encodes one value with the item limit.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, cfg())?)
}

/// Decodes one value from the front of `bytes`, returning it and the number
/// of bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, cfg())?)
}

/// Decodes one value that must use every byte given (bincode accepts
/// trailing bytes silently, so they are refused here).
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CodecError::Decode(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        ))));
    }
    Ok(value)
}

/// foca's codec, encoding with bincode's standard (varint) configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct BincodeCodec;

fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    // Encoded on the stack: no item is larger than the item limit.
    let mut scratch = [0u8; MAX_ITEM_BYTES];
    let len = bincode::serde::encode_into_slice(value, &mut scratch, cfg())?;
    if buf.remaining_mut() < len {
        return Err(CodecError::Encode(bincode::error::EncodeError::UnexpectedEnd));
    }
    buf.put_slice(&scratch[..len]);
    Ok(())
}

fn take<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

impl foca::Codec<Identity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<Identity>, buf: impl BufMut) -> Result<(), Self::Error> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Identity>, Self::Error> {
        take(buf)
    }

    fn encode_member(&mut self, member: &Member<Identity>, buf: impl BufMut) -> Result<(), Self::Error> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<Identity>, Self::Error> {
        take(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::{NodeId, Role};
    use foca::Codec;

    fn ident() -> Identity {
        Identity { id: NodeId(9), addr: "127.0.0.1:7000".parse().unwrap(), role: Role::Manager, generation: 2 }
    }

    #[test]
    fn header_round_trips() {
        let header = Header { src: ident(), src_incarnation: 4, dst: ident(), message: foca::Message::Ping(3) };
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf).unwrap();
        let back = BincodeCodec.decode_header(&buf[..]).unwrap();
        assert_eq!(back, header);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let header = Header { src: ident(), src_incarnation: 4, dst: ident(), message: foca::Message::Ping(3) };
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(BincodeCodec.decode_header(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(BincodeCodec.decode_header(&[0xff; 64][..]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused_by_decode_exact() {
        let mut bytes = encode(&42u32).unwrap();
        assert_eq!(decode_exact::<u32>(&bytes).unwrap(), 42);
        bytes.push(0);
        assert!(decode_exact::<u32>(&bytes).is_err());
    }
}
