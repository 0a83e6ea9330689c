//! Object ids: 256 bits, 16 bytes of identity and a 16-byte namespace MAC.
//!
//! Layout (as in workerd): `id[0..16]` is a keyed hash of the name, or 16
//! random bytes for unique ids; `id[16..32]` is a keyed hash of `id[0..16]`
//! under the namespace key. Parsing recomputes the MAC, so an id minted by
//! another namespace (or forged) is refused rather than silently mapped to a
//! new object.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Errors from parsing or minting ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string is not exactly 64 hex digits.
    #[error("invalid object id: must be 64 hex digits")]
    Malformed,
    /// The id is well formed but was not minted by this namespace.
    #[error("object id is not valid for namespace {0:?}")]
    ForeignNamespace(String),
    /// The operating system's random source failed.
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// The id of one object: 32 bytes, shown as 64 lowercase hex digits.
///
/// Equality and hashing use the bytes only; the name, when the id came from
/// [`Namespace::id_from_name`](crate::Namespace::id_from_name), rides along so
/// the object can learn it.
#[derive(Clone)]
pub struct ObjectId {
    bytes: [u8; 32],
    name: Option<Arc<str>>,
}

impl ObjectId {
    pub(crate) fn from_parts(bytes: [u8; 32], name: Option<Arc<str>>) -> Self {
        ObjectId { bytes, name }
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The name this id was derived from, if it came from a name (or the name
    /// was recorded in storage when the object first wrote data).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn with_name(mut self, name: Option<Arc<str>>) -> Self {
        if self.name.is_none() {
            self.name = name;
        }
        self
    }

    /// Hex form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl PartialEq for ObjectId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for ObjectId {}
impl Hash for ObjectId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}
impl PartialOrd for ObjectId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ObjectId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "ObjectId({}.., {n:?})", &self.to_hex()[..12]),
            None => write!(f, "ObjectId({}..)", &self.to_hex()[..12]),
        }
    }
}

/// How logs name an object: the first 12 hex digits of its id. Enough to
/// tell objects apart and to find one in the inspector, without writing a
/// private object's whole id (a capability, for chat rooms) into the logs.
pub(crate) fn log_label(id: &[u8; 32]) -> String {
    id[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (either case) into 32 bytes, without any namespace
/// check.
pub(crate) fn parse_hex(s: &str) -> Result<[u8; 32], IdError> {
    let raw = s.as_bytes();
    if raw.len() != 64 {
        return Err(IdError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or(IdError::Malformed)?;
        let lo = hex_val(pair[1]).ok_or(IdError::Malformed)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Mints and checks the ids of one namespace. Pure: the key is derived from
/// the runtime secret and the namespace name, so ids are stable across
/// restarts as long as the secret is (it is kept in the data dir).
#[derive(Clone)]
pub(crate) struct IdMinter {
    namespace: Arc<str>,
    key: [u8; 32],
}

impl IdMinter {
    pub(crate) fn new(secret: &[u8; 32], namespace: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("objects 2026 namespace key v1");
        hasher.update(secret);
        hasher.update(namespace.as_bytes());
        IdMinter {
            namespace: Arc::from(namespace),
            key: *hasher.finalize().as_bytes(),
        }
    }

    fn mac(&self, identity: &[u8; 16]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"mac:");
        h.update(identity);
        first16(h.finalize().as_bytes())
    }

    fn assemble(&self, identity: [u8; 16], name: Option<Arc<str>>) -> ObjectId {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&identity);
        bytes[16..].copy_from_slice(&self.mac(&identity));
        ObjectId::from_parts(bytes, name)
    }

    pub(crate) fn for_name(&self, name: &str) -> ObjectId {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"name:");
        h.update(name.as_bytes());
        self.assemble(first16(h.finalize().as_bytes()), Some(Arc::from(name)))
    }

    pub(crate) fn unique(&self) -> Result<ObjectId, IdError> {
        let mut identity = [0u8; 16];
        getrandom::fill(&mut identity).map_err(|e| IdError::Random(e.to_string()))?;
        Ok(self.assemble(identity, None))
    }

    pub(crate) fn check(&self, bytes: [u8; 32]) -> Result<ObjectId, IdError> {
        let mut identity = [0u8; 16];
        identity.copy_from_slice(&bytes[..16]);
        // Constant-time compare is not needed for a MAC check on public ids,
        // but it costs nothing here.
        let expected = self.mac(&identity);
        let diff = expected
            .iter()
            .zip(&bytes[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(IdError::ForeignNamespace(self.namespace.to_string()));
        }
        Ok(ObjectId::from_parts(bytes, None))
    }

    pub(crate) fn parse(&self, hex: &str) -> Result<ObjectId, IdError> {
        self.check(parse_hex(hex)?)
    }
}

fn first16(b: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minter(ns: &str) -> IdMinter {
        IdMinter::new(&[7u8; 32], ns)
    }

    #[test]
    fn logs_name_an_object_by_a_prefix_of_its_id() {
        let id = minter("rooms").unique().expect("random");
        let label = log_label(id.as_bytes());
        assert_eq!(label.len(), 12);
        assert!(id.to_hex().starts_with(&label));
    }

    #[test]
    fn name_ids_are_deterministic_and_per_namespace() {
        let a = minter("rooms");
        assert_eq!(a.for_name("general"), minter("rooms").for_name("general"));
        assert_ne!(a.for_name("general"), a.for_name("general2"));
        assert_ne!(a.for_name("general"), minter("limits").for_name("general"));
        assert_ne!(
            a.for_name("general"),
            IdMinter::new(&[8u8; 32], "rooms").for_name("general")
        );
        assert_eq!(a.for_name("general").name(), Some("general"));
    }

    #[test]
    fn hex_round_trip_and_checks() {
        let a = minter("rooms");
        let id = a.for_name("x");
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a.parse(&hex), Ok(id.clone()));
        assert_eq!(a.parse(&hex.to_uppercase()), Ok(id));
        let foreign = minter("limits").for_name("x").to_hex();
        assert_eq!(
            a.parse(&foreign),
            Err(IdError::ForeignNamespace("rooms".into()))
        );
        for bad in [
            "",
            "abc",
            &hex[..63],
            &format!("{hex}0"),
            &hex.replace('a', "g"),
        ] {
            if bad.len() == 64 && bad.bytes().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            assert_eq!(a.parse(bad), Err(IdError::Malformed), "{bad:?}");
        }
        // A flipped bit anywhere breaks the MAC.
        let mut bytes = *a.for_name("y").as_bytes();
        bytes[3] ^= 1;
        assert!(a.check(bytes).is_err());
    }

    #[test]
    fn unique_ids_differ_and_parse() {
        let a = minter("rooms");
        let x = a.unique().expect("os random");
        let y = a.unique().expect("os random");
        assert_ne!(x, y);
        assert_eq!(a.parse(&x.to_hex()), Ok(x.clone()));
        assert!(minter("other").parse(&x.to_hex()).is_err());
        assert_eq!(x.name(), None);
    }

    #[test]
    fn multibyte_hex_lookalikes_are_rejected() {
        // 64 bytes but not 64 ASCII hex digits.
        let s = "é".repeat(32);
        assert_eq!(s.len(), 64);
        assert_eq!(parse_hex(&s), Err(IdError::Malformed));
    }
}
