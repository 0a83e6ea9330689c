//! On-disk layout: how keys and records are encoded. See `docs/storage.md`,
//! which draws each record byte by byte; keep the two in step.

/// Bytes of an object id at the start of every per-object key.
pub(crate) const ID_LEN: usize = 32;

/// The store format, kept under `meta["format"]`. Bump on any change to this
/// file and refuse to open unknown formats.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Value tag: raw bytes follow.
pub(crate) const TAG_BYTES: u8 = 0;
/// Value tag: JSON (serde_json) follows.
pub(crate) const TAG_JSON: u8 = 1;

/// `data` key: object id, then the user key's UTF-8 bytes.
pub(crate) fn data_key(id: &[u8; 32], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ID_LEN + key.len());
    k.extend_from_slice(id);
    k.extend_from_slice(key);
    k
}

/// `alarm_index` key: due time (u64 big-endian ms since the epoch), then the
/// object id, so a cursor walks alarms in (time, id) order.
pub(crate) fn alarm_index_key(at_ms: u64, id: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

/// `alarms` value: due time (u64 big-endian), then the namespace name.
pub(crate) fn alarm_record(at_ms: u64, namespace: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + namespace.len());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(namespace.as_bytes());
    v
}

/// Decodes an `alarms` value into (time, namespace).
pub(crate) fn parse_alarm_record(v: &[u8]) -> Option<(u64, &str)> {
    let (t, ns) = v.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*t), std::str::from_utf8(ns).ok()?))
}

/// `catalog` value: format byte 1, name flag (0/1), u16 big-endian namespace
/// length, namespace bytes, then the name bytes when the flag is 1.
pub(crate) fn catalog_record(namespace: &str, name: Option<&str>) -> Vec<u8> {
    let ns = namespace.as_bytes();
    let ns_len = u16::try_from(ns.len()).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(4 + ns.len() + name.map_or(0, str::len));
    v.push(1);
    v.push(u8::from(name.is_some()));
    v.extend_from_slice(&ns_len.to_be_bytes());
    v.extend_from_slice(&ns[..usize::from(ns_len)]);
    if let Some(n) = name {
        v.extend_from_slice(n.as_bytes());
    }
    v
}

/// Decodes a `catalog` value into (namespace, name).
pub(crate) fn parse_catalog_record(v: &[u8]) -> Option<(&str, Option<&str>)> {
    let [1, flag, a, b, rest @ ..] = v else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    if rest.len() < len {
        return None;
    }
    let ns = std::str::from_utf8(&rest[..len]).ok()?;
    let name = match flag {
        0 => None,
        1 => Some(std::str::from_utf8(&rest[len..]).ok()?),
        _ => return None,
    };
    Some((ns, name))
}

/// The id of a per-object key.
#[cfg(test)]
pub(crate) fn split_id(key: &[u8]) -> Option<([u8; 32], &[u8])> {
    let (id, rest) = key.split_first_chunk::<32>()?;
    Some((*id, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = catalog_record("rooms", Some("general"));
        assert_eq!(parse_catalog_record(&r), Some(("rooms", Some("general"))));
        let r = catalog_record("rooms", None);
        assert_eq!(parse_catalog_record(&r), Some(("rooms", None)));
        assert_eq!(parse_catalog_record(&[1, 2, 0, 0]), None);
        assert_eq!(parse_catalog_record(&[1, 0, 0, 9, b'x']), None);
        let a = alarm_record(42, "rooms");
        assert_eq!(parse_alarm_record(&a), Some((42, "rooms")));
        assert_eq!(parse_alarm_record(&[1, 2]), None);
        let k = alarm_index_key(1, &[9; 32]);
        assert!(alarm_index_key(2, &[0; 32]) > k);
        assert_eq!(
            split_id(&data_key(&[3; 32], b"k")),
            Some(([3; 32], &b"k"[..]))
        );
    }
}
