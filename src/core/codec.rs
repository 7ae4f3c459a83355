//! Bincode 2.0.1 (serde) encoding of foca's headers and members, and of the
//! notices that ride foca's custom broadcasts.
//!
//! Owns the byte format of SWIM traffic. Must never panic on input: every
//! decode is bounded and returns an error instead. Notices are bounded by
//! `MAX_ITEM_BYTES`; headers and members by the packet they are read from
//! (see [`decode_swim_prefix`]).

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

/// The same encoding without bincode's decode limit, which costs a check
/// on every primitive read (about a quarter of decoding an `Identity`).
/// Only for types with no length-prefixed field (no string, vector or
/// map): their decode allocates nothing and reads at most the bytes given.
type SwimCfg =
    bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Varint>;

fn swim_cfg() -> SwimCfg {
    bincode::config::standard()
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

/// Decodes one SWIM item (an `Identity`, or foca's `Header` or `Member` of
/// it) from the front of `bytes`, returning it and the number of bytes it
/// used. These types have no length-prefixed field, so the decode is
/// bounded by `bytes` itself (a SWIM packet, at most `max_packet_bytes`)
/// and runs without bincode's limit check.
pub fn decode_swim_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, swim_cfg())?)
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

/// The smallest decode bound [`decode_exact_bounded`] uses (bytes).
pub const MIN_DECODE_BOUND_BYTES: usize = 1 << 10;
/// The largest decode bound it has (512 MiB, the snapshot's limit).
pub const MAX_DECODE_BOUND_BYTES: usize = 1 << 29;
/// bincode counts what a value takes in memory, at most this many times
/// the bytes it was read from (a one-byte varint claims a u64's 8 bytes; a
/// string claims its length plus 8), so a bound of this many times the
/// input never refuses a value that was really encoded.
pub const CLAIM_PER_INPUT_BYTE: usize = 8;

/// Decodes a value that must use every byte of `bytes`, allocating in
/// proportion to them: bincode may reserve, for every length prefix it
/// reads together, at most `CLAIM_PER_INPUT_BYTE` times the input
/// (rounded up to a power of two, at least [`MIN_DECODE_BOUND_BYTES`]),
/// and never more than `limit_bytes` rounded up to a power of two (so less
/// than twice it) nor [`MAX_DECODE_BOUND_BYTES`]. A length claim past that
/// is a decode error, never an allocation.
pub fn decode_exact_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    limit_bytes: usize,
) -> Result<T, CodecError> {
    let pow2 = |n: usize| {
        n.max(MIN_DECODE_BOUND_BYTES)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .min(MAX_DECODE_BOUND_BYTES)
    };
    let cap = pow2(limit_bytes);
    let wanted = pow2(bytes.len().saturating_mul(CLAIM_PER_INPUT_BYTE));
    let bound = wanted.min(cap);
    macro_rules! bounded {
        ($($shift:literal)*) => {
            match bound {
                $(n if n == 1 << $shift => exact_within::<T, { 1 << $shift }>(bytes),)*
                _ => Err(CodecError::Decode(bincode::error::DecodeError::OtherString(format!(
                    "no decode bound for a {limit_bytes}-byte limit"
                )))),
            }
        };
    }
    bounded!(10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29)
}

fn exact_within<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
    let cfg = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, cfg)?;
    if used != bytes.len() {
        return Err(CodecError::Decode(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        ))));
    }
    Ok(value)
}

/// Most elements [`vec_grown_as_read`] reserves before reading them.
pub const VEC_PREALLOC_ELEMENTS: usize = 64;

/// A `#[serde(deserialize_with)]` for vectors in small frames: serde's own
/// `Vec` reserves up to 1 MiB from the length the bytes claim before
/// reading one element, which is more than twice a 64 KiB join frame. This
/// one reserves at most [`VEC_PREALLOC_ELEMENTS`] and grows as elements
/// arrive. Same encoding.
pub fn vec_grown_as_read<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Grown<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Grown<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out =
                Vec::with_capacity(seq.size_hint().unwrap_or(0).min(VEC_PREALLOC_ELEMENTS));
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Grown(std::marker::PhantomData))
}

/// foca's codec, encoding with bincode's standard (varint) configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct BincodeCodec;

/// Most bytes of a typical header or member (two IPv6 identities and a
/// message come to about 100): encoded in a buffer this size first, and
/// only past it in one of `MAX_ITEM_BYTES`, so that the usual case zeroes
/// little stack.
const SMALL_ITEM_BYTES: usize = 192;

fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let mut small = [0u8; SMALL_ITEM_BYTES];
    let mut large;
    let (scratch, len) = match bincode::serde::encode_into_slice(value, &mut small[..], cfg()) {
        Ok(len) => (&small[..], len),
        Err(_) => {
            large = [0u8; MAX_ITEM_BYTES];
            let len = bincode::serde::encode_into_slice(value, &mut large[..], cfg())?;
            (&large[..], len)
        }
    };
    if buf.remaining_mut() < len {
        return Err(CodecError::Encode(bincode::error::EncodeError::UnexpectedEnd));
    }
    buf.put_slice(&scratch[..len]);
    Ok(())
}

fn take<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = decode_swim_prefix(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

impl foca::Codec<Identity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<Identity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Identity>, Self::Error> {
        take(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<Identity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
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
        Identity {
            id: NodeId(9),
            addr: "127.0.0.1:7000".parse().unwrap(),
            role: Role::Manager,
            generation: 2,
        }
    }

    /// A 13-byte input claiming a 1 MiB string is refused before any
    /// allocation (its bound is 1 KiB, not the 1 MiB limit), while a real
    /// value of many tiny numbers, which claims 8 bytes per byte read,
    /// decodes whole.
    #[test]
    fn bounded_decode_allocates_in_proportion_to_the_input() {
        let mut claim = vec![0xFC];
        claim.extend_from_slice(&(1u32 << 20).to_le_bytes());
        claim.extend_from_slice(b"abcdefgh");
        assert!(decode_exact_bounded::<String>(&claim, 1 << 20).is_err());
        let numbers: Vec<u64> = (0..10_000).map(|i| i % 100).collect();
        let bytes = bincode::serde::encode_to_vec(&numbers, bincode::config::standard()).unwrap();
        assert_eq!(decode_exact_bounded::<Vec<u64>>(&bytes, 1 << 20).unwrap(), numbers);
        let text = "x".repeat(5_000);
        let bytes = bincode::serde::encode_to_vec(&text, bincode::config::standard()).unwrap();
        assert_eq!(decode_exact_bounded::<String>(&bytes, 1 << 20).unwrap(), text);
        assert!(
            decode_exact_bounded::<String>(&bytes, 4096).is_err(),
            "over the limit's power of two"
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_exact_bounded::<String>(&trailing, 1 << 20).is_err());
    }

    #[test]
    fn header_round_trips() {
        let header = Header {
            src: ident(),
            src_incarnation: 4,
            dst: ident(),
            message: foca::Message::Ping(3),
        };
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf).unwrap();
        let back = BincodeCodec.decode_header(&buf[..]).unwrap();
        assert_eq!(back, header);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let header = Header {
            src: ident(),
            src_incarnation: 4,
            dst: ident(),
            message: foca::Message::Ping(3),
        };
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(BincodeCodec.decode_header(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(BincodeCodec.decode_header(&[0xff; 64][..]).is_err());
    }

    #[test]
    fn an_item_that_does_not_fit_is_an_error() {
        let header = Header {
            src: ident(),
            src_incarnation: 4,
            dst: ident(),
            message: foca::Message::Ping(3),
        };
        let mut whole = Vec::new();
        BincodeCodec.encode_header(&header, &mut whole).unwrap();
        for room in 0..whole.len() {
            let mut buf = Vec::new();
            let limited = (&mut buf).limit(room);
            assert!(BincodeCodec.encode_header(&header, limited).is_err(), "room {room}");
        }
        let mut exact = Vec::new();
        BincodeCodec.encode_header(&header, (&mut exact).limit(whole.len())).unwrap();
        assert_eq!(exact, whole);
    }

    #[test]
    fn items_past_the_small_buffer_still_encode_up_to_the_limit() {
        let mut buf = Vec::new();
        put(&vec![7u8; 500], &mut buf).unwrap();
        assert_eq!(decode_exact::<Vec<u8>>(&buf).unwrap(), vec![7u8; 500]);
        let mut buf = Vec::new();
        assert!(put(&vec![7u8; MAX_ITEM_BYTES], &mut buf).is_err());
        assert!(buf.is_empty(), "nothing is written on an error");
    }

    /// Headers and members decode the same with and without the limit, on
    /// valid input and on every truncation and corruption of it.
    #[test]
    fn the_swim_decode_agrees_with_the_limited_one() {
        let target = Identity {
            id: NodeId(u64::MAX),
            addr: "[fe80::1]:65535".parse().unwrap(),
            role: Role::Agent,
            generation: u64::MAX,
        };
        let header = Header {
            src: ident(),
            src_incarnation: u16::MAX,
            dst: target.clone(),
            message: foca::Message::PingReq { target, probe_number: 255 },
        };
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf).unwrap();
        BincodeCodec
            .encode_member(&Member::new(ident(), 7, foca::State::Suspect), &mut buf)
            .unwrap();
        for cut in 0..=buf.len() {
            for flip in 0..=buf.len().min(cut) {
                let mut bytes = buf[..cut].to_vec();
                if flip < bytes.len() {
                    bytes[flip] ^= 0xa5;
                }
                let ours = decode_swim_prefix::<Header<Identity>>(&bytes).ok();
                let limited = decode_prefix::<Header<Identity>>(&bytes).ok();
                assert_eq!(ours, limited, "cut {cut} flip {flip}");
                let ours = decode_swim_prefix::<Member<Identity>>(&bytes).ok();
                let limited = decode_prefix::<Member<Identity>>(&bytes).ok();
                assert_eq!(ours, limited, "cut {cut} flip {flip}");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused_by_decode_exact() {
        let mut bytes = encode(&42u32).unwrap();
        assert_eq!(decode_exact::<u32>(&bytes).unwrap(), 42);
        bytes.push(0);
        assert!(decode_exact::<u32>(&bytes).is_err());
    }
}
