//! Parsing of Produce request bodies v0-v9 with the bounded [`Wire`] reader.
//!
//! ```text
//! v0-v2:  acks int16, timeout int32, [topic string, [partition int32, message_set bytes]]
//! v3-v8:  transactional_id nullable string, then as v0-v2 (records: a v2 record batch)
//! v9:     as v3, with compact strings, bytes and arrays and a tagged-field section after
//!         each partition, each topic and the request
//! ```
//! Every array count is checked against the bytes left before anything is reserved for
//! it, and the records stay zero-copy slices of the request.

use bytes::Bytes;

use super::wire::{Wire, WireError, MAX_REQUEST_ENTRIES};

/// One partition's data: its index and record bytes.
pub type PartitionData = (i32, Option<Bytes>);

/// A Produce request body, whatever its version.
#[derive(Debug, PartialEq)]
pub struct ProduceBody {
    pub acks: i16,
    pub timeout_ms: i32,
    /// Whether a non-empty transactional id was sent (v3+): an empty one means none, as
    /// in InitProducerId.
    pub transactional: bool,
    pub topics: Vec<(String, Vec<PartitionData>)>,
}

/// Parses a Produce body of `version` (0-9).
pub fn parse(version: i16, body: Bytes) -> Result<ProduceBody, WireError> {
    let flexible = version >= 9;
    let mut w = Wire::new(body, flexible);
    // Smallest encodings: a topic is an empty name and an empty partition array (and its
    // tagged fields); a partition an index, null records (and its tagged fields).
    let (min_topic, min_partition) = if flexible { (3, 6) } else { (6, 8) };
    let transactional = version >= 3 && w.nullable_string("transactional id")?.is_some_and(|id| !id.is_empty());
    let acks = w.i16("acks")?;
    let timeout_ms = w.i32("timeout")?;
    let topic_count = w.array(min_topic, "topics")?;
    if topic_count > MAX_REQUEST_ENTRIES {
        return Err(WireError::TooManyEntries { what: "topics", count: topic_count });
    }
    let mut topics = Vec::with_capacity(topic_count);
    let mut entries = 0usize;
    for _ in 0..topic_count {
        let name = w.string("topic name")?;
        let partition_count = w.array(min_partition, "partitions")?;
        entries += partition_count;
        if entries > MAX_REQUEST_ENTRIES {
            return Err(WireError::TooManyEntries { what: "partitions", count: entries });
        }
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let index = w.i32("partition index")?;
            let records = w.nullable_bytes("records")?;
            w.tagged_fields("partition tagged fields")?;
            partitions.push((index, records));
        }
        w.tagged_fields("topic tagged fields")?;
        topics.push((name, partitions));
    }
    w.tagged_fields("request tagged fields")?;
    Ok(ProduceBody { acks, timeout_ms, transactional, topics })
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::protocol::Decodable;

    use super::*;

    /// A hand-encoded body of `version` (3-9): two topics, the first with partitions 0-2
    /// (partition 1 null records), the second with a non-ASCII name and one partition;
    /// a tagged field after the first partition when flexible.
    fn encoded(version: i16, transactional: bool) -> Bytes {
        let flexible = version >= 9;
        let mut b = vec![];
        let len = |b: &mut Vec<u8>, n: Option<usize>, wide: bool| match (flexible, n) {
            (true, n) => b.push(n.map_or(0, |n| n + 1) as u8), // all lengths here are < 127
            (false, None) if wide => b.extend((-1i32).to_be_bytes()),
            (false, None) => b.extend((-1i16).to_be_bytes()),
            (false, Some(n)) if wide => b.extend((n as i32).to_be_bytes()),
            (false, Some(n)) => b.extend((n as i16).to_be_bytes()),
        };
        let tags = |b: &mut Vec<u8>, with_one: bool| {
            if flexible {
                b.extend(if with_one { &[1, 5, 2, b'z', b'z'][..] } else { &[0][..] });
            }
        };
        if transactional {
            len(&mut b, Some(2), false);
            b.extend(b"tx");
        } else {
            len(&mut b, None, false);
        }
        b.extend((-1i16).to_be_bytes());
        b.extend(30_000i32.to_be_bytes());
        len(&mut b, Some(2), true);
        for (name, partitions) in [("app", 3), ("äpp.json", 1)] {
            len(&mut b, Some(name.len()), false);
            b.extend(name.as_bytes());
            len(&mut b, Some(partitions), true);
            for i in 0..partitions as i32 {
                b.extend(i.to_be_bytes());
                if i == 1 {
                    len(&mut b, None, true);
                } else {
                    len(&mut b, Some(10 + i as usize), true);
                    b.extend(vec![i as u8; 10 + i as usize]);
                }
                tags(&mut b, i == 0);
            }
            tags(&mut b, false);
        }
        tags(&mut b, false);
        Bytes::from(b)
    }

    #[test]
    fn an_empty_transactional_id_is_none() {
        // v3: transactional id "", acks, timeout, no topics.
        let body = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0x27, 0x10, 0, 0, 0, 0]);
        assert!(!parse(3, body).unwrap().transactional);
        let body = Bytes::from_static(&[0, 1, b't', 0, 1, 0, 0, 0x27, 0x10, 0, 0, 0, 0]);
        assert!(parse(3, body).unwrap().transactional);
    }

    #[test]
    fn parses_v3_to_v9_as_kafka_protocol_does() {
        for version in 3..=9 {
            for transactional in [false, true] {
                let body = encoded(version, transactional);
                let got = parse(version, body.clone()).unwrap_or_else(|e| panic!("v{version}: {e}"));
                let reference = ProduceRequest::decode(&mut body.clone(), version).unwrap();
                assert_eq!(got.acks, reference.acks);
                assert_eq!(got.timeout_ms, reference.timeout_ms);
                assert_eq!(got.transactional, reference.transactional_id.is_some());
                assert_eq!(got.transactional, transactional);
                let reference: Vec<(String, Vec<PartitionData>)> = reference
                    .topic_data
                    .into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_data.into_iter().map(|p| (p.index, p.records)).collect()))
                    .collect();
                assert_eq!(got.topics, reference, "v{version}");
                let names: Vec<_> = got.topics.iter().map(|t| t.0.as_str()).collect();
                assert_eq!(names, ["app", "äpp.json"]);
                assert_eq!(got.topics[0].1[1], (1, None));
                // Records are slices of the request, not copies.
                let records = got.topics[0].1[0].1.as_ref().unwrap();
                assert!(body.as_ptr_range().contains(&records.as_ptr()));
                // Every truncation is an error, never a panic.
                for cut in 0..body.len() {
                    assert!(parse(version, body.slice(..cut)).is_err(), "v{version} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn random_and_mutated_bodies_are_errors_or_parse_like_kafka_protocol() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for version in 0..=9 {
            let base = if version >= 3 { encoded(version, false).to_vec() } else { vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0] };
            for _ in 0..3_000 {
                let mut body = base.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % body.len();
                    body[at] = next() as u8;
                }
                let body = Bytes::from(body);
                let ours = parse(version, body.clone());
                if version >= 3 {
                    // Where ours accepts, kafka-protocol reads the same request.
                    if let Ok(ours) = ours {
                        let reference = ProduceRequest::decode(&mut body.clone(), version).expect("reference accepts");
                        assert_eq!(ours.topics.len(), reference.topic_data.len());
                        assert_eq!(ours.acks, reference.acks);
                    }
                }
            }
        }
    }

    #[test]
    fn parses_v0_to_v2() {
        let mut body = vec![0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 3, b'a', b'p', b'p', 0, 0, 0, 1];
        body.extend([0, 0, 0, 4, 0, 0, 0, 2, b'h', b'i']);
        for version in 0..=2 {
            let got = parse(version, Bytes::from(body.clone())).unwrap();
            assert_eq!(got, ProduceBody {
                acks: 1,
                timeout_ms: 30_000,
                transactional: false,
                topics: vec![("app".into(), vec![(4, Some(Bytes::from_static(b"hi")))])],
            });
        }
    }

    #[test]
    fn count_bombs_are_refused_before_allocating() {
        // v3: null transactional id, acks, timeout, topics count 0x7fffffff (20 bytes).
        let mut v3 = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff];
        v3.extend([0; 8]);
        assert!(matches!(parse(3, Bytes::from(v3)), Err(WireError::Count { what: "topics", .. })));
        // One topic whose partitions count is 0x7fffffff.
        let mut v3 = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 1, b'a', 0x7f, 0xff, 0xff, 0xff];
        v3.extend([0; 8]);
        assert!(matches!(parse(3, Bytes::from(v3)), Err(WireError::Count { what: "partitions", .. })));
        // v9: compact topics count 2^32-2.
        let v9 = vec![0, 0, 1, 0, 0, 0x75, 0x30, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0];
        assert!(matches!(parse(9, Bytes::from(v9)), Err(WireError::Count { .. })));
        // v0: topics count 0x7fffffff.
        let v0 = vec![0, 1, 0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(parse(0, Bytes::from(v0)), Err(WireError::Count { .. })));
        // 10,001 partition entries (all there) over two topics.
        let mut many = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 2];
        for n in [5_000i32, 5_001] {
            many.extend([0, 1, b'a']);
            many.extend(n.to_be_bytes());
            for _ in 0..n {
                many.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
            }
        }
        let err = parse(3, Bytes::from(many.clone())).unwrap_err();
        assert!(matches!(err, WireError::TooManyEntries { what: "partitions", .. }), "{err}");
        // 10,000 are fine.
        many.truncate(many.len() - 8);
        let at = 12 + 3 + 4 + 5_000 * 8 + 3;
        many[at..at + 4].copy_from_slice(&5_000i32.to_be_bytes());
        assert_eq!(parse(3, Bytes::from(many)).unwrap().topics[1].1.len(), 5_000);
        // v9: a tagged-field bomb after the topics.
        let v9 = vec![0, 0, 1, 0, 0, 0x75, 0x30, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        assert!(parse(9, Bytes::from(v9)).is_err());
    }
}
