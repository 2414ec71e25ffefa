//! The table loggate writes: its DDL, and dropping expired partitions.
//!
//! One row per log. The statements use only what ClickHouse 18.16 (Debian's) has, and run
//! unchanged on current releases: no DateTime64 (millisecond times are Int64 columns beside
//! DateTime ones), no Map (fields and headers are parallel arrays), no TTL (retention drops
//! whole partitions, see [`expired_partitions`]).

use super::http::ident;

/// The column list of the logs table, in table order.
pub const COLUMNS: &str = "\
    project String,
    logstore String,
    shard UInt32,
    event_time DateTime,
    event_time_ms Int64,
    arrival_time DateTime,
    arrival_time_ms Int64,
    retention_hours UInt32,
    node_id UInt16,
    insert_id UInt64,
    batch_id UInt64,
    position UInt32,
    producer_id Int64,
    producer_epoch Int16,
    producer_lane UInt32,
    sequence_first Int32,
    sequence_last Int32,
    client String,
    key Nullable(String),
    header_keys Array(String),
    header_values Array(Nullable(String)),
    field_names Array(String),
    field_values Array(String),
    content String";

/// The statements that create the database and the logs table if absent.
///
/// Partitioned by (retention, arrival day): each logstore's retention is one of the
/// partition key's values, so an expired day of one retention is one partition to drop.
/// Ordered by (project, logstore, event_time): a time-range query of one logstore reads
/// only its part of the primary key.
pub fn create_statements(database: &str, table: &str) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {}", ident(database)),
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n    {COLUMNS}\n) ENGINE = MergeTree()\n\
             PARTITION BY (retention_hours, toYYYYMMDD(arrival_time))\n\
             ORDER BY (project, logstore, event_time)",
            ident(database),
            ident(table)
        ),
    ]
}

/// A partition of the logs table: `(retention_hours, yyyymmdd)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub retention_hours: u32,
    pub day: u32,
}

impl Partition {
    /// Parses `system.parts.partition` text: `(168,20261201)`.
    pub fn parse(text: &str) -> Option<Self> {
        let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
        let (hours, day) = inner.split_once(',')?;
        Some(Partition { retention_hours: hours.trim().parse().ok()?, day: day.trim().trim_matches('\'').parse().ok()? })
    }

    /// Whether every log in it is older than its retention at `now_ms` (0 hours: kept
    /// forever). A day's logs arrived before its end.
    pub fn expired(&self, now_ms: i64) -> bool {
        if self.retention_hours == 0 {
            return false;
        }
        let Some(day_end_ms) = day_start_ms(self.day).map(|s| s + 86_400_000) else {
            return false;
        };
        day_end_ms + i64::from(self.retention_hours) * 3_600_000 <= now_ms
    }

    /// The `ALTER TABLE ... DROP PARTITION` statement for it.
    pub fn drop_statement(&self, database: &str, table: &str) -> String {
        format!(
            "ALTER TABLE {}.{} DROP PARTITION ({}, {})",
            ident(database),
            ident(table),
            self.retention_hours,
            self.day
        )
    }
}

/// The partitions among `parts` (texts of `system.parts.partition`) that have expired.
pub fn expired_partitions<'a>(parts: impl IntoIterator<Item = &'a str>, now_ms: i64) -> Vec<Partition> {
    let mut out: Vec<Partition> = parts.into_iter().filter_map(Partition::parse).filter(|p| p.expired(now_ms)).collect();
    out.sort_by_key(|p| (p.retention_hours, p.day));
    out.dedup();
    out
}

/// Milliseconds since the epoch at 00:00 UTC of `yyyymmdd`.
fn day_start_ms(yyyymmdd: u32) -> Option<i64> {
    let (y, m, d) = (i64::from(yyyymmdd / 10000), i64::from(yyyymmdd / 100 % 100), i64::from(yyyymmdd % 100));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (proleptic Gregorian), H. Hinnant's well-known method.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_and_expire_by_their_retention() {
        assert_eq!(Partition::parse("(24,20261201)"), Some(Partition { retention_hours: 24, day: 20261201 }));
        assert_eq!(Partition::parse("(0, 20261201)").unwrap().retention_hours, 0);
        assert_eq!(Partition::parse("20261201"), None);
        assert_eq!(day_start_ms(19700101), Some(0));
        assert_eq!(day_start_ms(20000301), Some(951_868_800_000));
        let dec1 = day_start_ms(20261201).unwrap();
        let p = Partition { retention_hours: 24, day: 20261201 };
        // The day ends at Dec 2 00:00; its logs expire 24 h later.
        assert!(!p.expired(dec1 + 2 * 86_400_000 - 1));
        assert!(p.expired(dec1 + 2 * 86_400_000));
        assert!(!Partition { retention_hours: 0, day: 19700101 }.expired(dec1));
        let parts = ["(24,20261201)", "(24,20261201)", "(0,19700101)", "(1,20261130)", "junk"];
        assert_eq!(expired_partitions(parts, dec1 + 2 * 86_400_000).len(), 2);
        assert_eq!(p.drop_statement("loggate", "logs"), "ALTER TABLE `loggate`.`logs` DROP PARTITION (24, 20261201)");
    }
}
