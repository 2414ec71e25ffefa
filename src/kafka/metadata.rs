//! Metadata (key 3) v0-v12: this node is the only broker and leads every shard; the
//! topics are the logstores the connection's project may write.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use uuid::Uuid;

use super::errors::{code, topic_authorization_failed};
use super::{respond, Broker, Reply, RequestHeader, Session};
use crate::ingest::catalog::{Logstore, ValueFormat};
use crate::ingest::ResolveError;

/// Highest Metadata version answered (v10+ carry each logstore's stable topic id).
pub const MAX_VERSION: i16 = 12;

/// Answers Metadata for the requested topics, or all visible ones.
pub fn handle(broker: &Broker, session: &Session, header: &RequestHeader, mut body: Bytes) -> Reply {
    let version = header.api_version;
    if !(0..=MAX_VERSION).contains(&version) {
        return Reply::Close(format!("unsupported Metadata version {version}"));
    }
    // Every count and length checked against the bytes present before decoding.
    if let Err(e) = super::wire::check(super::api_key::METADATA, version, &body) {
        return Reply::Close(format!("malformed Metadata request: {e}"));
    }
    let request = match MetadataRequest::decode(&mut body, version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed Metadata request: {e}")),
    };
    let Some(principal) = session.principal() else {
        return Reply::Close("Metadata before authentication".into());
    };
    let ingest = &broker.ingest;
    let requested: Option<Vec<Requested>> = match request.topics {
        // v0: an empty list means all topics; v1+: null means all.
        Some(list) if !(version == 0 && list.is_empty()) => Some(
            list.into_iter()
                .map(|t| match t.name {
                    Some(name) => Requested::Name(name.0.to_string()),
                    // v10+: a null name asks by topic id.
                    None => Requested::Id(t.topic_id),
                })
                .collect(),
        ),
        _ => None,
    };
    // Loaded once for the request: every logstore is checked against the same keys.
    let (catalog, keys) = (ingest.catalog(), ingest.keys());
    let topics = match requested {
        None if session.sni_conflict => Vec::new(),
        None => catalog
            .logstores(&principal.project)
            .iter()
            .filter(|store| keys.may_write(principal, &store.name))
            // Each logstore once, by its raw name, as in every version (`L.json` is
            // answered when asked for, by name or id).
            .map(|store| topic_entry(broker, &store.name, store, ValueFormat::Raw, version))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|wanted| match wanted {
                Requested::Name(name) => {
                    let resolved =
                        if session.sni_conflict { Err(ResolveError::UnknownTopic) } else { ingest.resolve(principal, &name) };
                    match resolved {
                        Ok(topic) => topic_entry(broker, &name, &topic.logstore, topic.format, version),
                        Err(ResolveError::UnknownTopic) => error_entry(&name, code::UNKNOWN_TOPIC_OR_PARTITION),
                        Err(ResolveError::NotAuthorized) => error_entry(&name, topic_authorization_failed(version)),
                    }
                }
                Requested::Id(id) => {
                    // An id the connection may not write is as unknown as one that names
                    // nothing, so ids reveal no other logstore.
                    let found = if session.sni_conflict { None } else { catalog.topic_by_id(&principal.project, id.as_bytes()) }
                        .filter(|(_, topic)| keys.may_write(principal, &topic.logstore.name));
                    match found {
                        Some((name, topic)) => topic_entry(broker, &name, &topic.logstore, topic.format, version),
                        None => MetadataResponseTopic::default().with_error_code(UNKNOWN_TOPIC_ID).with_name(None).with_topic_id(id),
                    }
                }
            })
            .collect(),
    };
    let brokers = match &broker.cluster {
        None => vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.node_id))
            .with_host(StrBytes::from_string(session.advertised_host().to_string()))
            .with_port(i32::from(session.advertised.port))],
        Some(cluster) => cluster
            .live()
            .into_iter()
            .filter_map(|node| {
                let (host, port) = node.advertised(session.advertised.protocol)?;
                Some(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(node.id))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(i32::from(port)),
                )
            })
            .collect(),
    };
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str("loggate")))
        .with_controller_id(BrokerId(broker.node_id))
        .with_topics(topics);
    respond(header, &response)
}

/// A topic asked for by name, or (v10+) by id.
enum Requested {
    Name(String),
    Id(Uuid),
}

/// UNKNOWN_TOPIC_ID: no topic the connection may see has the requested id.
const UNKNOWN_TOPIC_ID: i16 = 100;

fn topic_entry(broker: &Broker, name: &str, store: &Logstore, format: ValueFormat, version: i16) -> MetadataResponseTopic {
    let live = broker.cluster.as_ref().map(|c| c.live());
    let partitions = (0..store.shards as i32)
        .map(|p| {
            let node = BrokerId(match &live {
                None => broker.node_id,
                Some(live) => crate::cluster::Cluster::leader(live, &store.topic_id, p),
            });
            MetadataResponsePartition::default()
                .with_error_code(code::NONE)
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    let id = match format {
        ValueFormat::Raw => store.topic_id,
        ValueFormat::Json => store.json_topic_id,
    };
    let topic_id = if version >= 10 { Uuid::from_bytes(id) } else { Uuid::nil() };
    MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(topic_id)
        .with_partitions(partitions)
}

fn error_entry(name: &str, error: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
}
