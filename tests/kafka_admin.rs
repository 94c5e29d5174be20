//! The operator's Kafka client ([`RdKafkaAdmin`]) against a real Tansu
//! broker: what it measures for a consumer pipeline's lag and a snapshot
//! (committed offsets of every group, one group's offsets, end offsets, a
//! record's timestamp, offsets by time) is what the broker holds, and
//! measuring again and again reuses the connection's clients instead of
//! opening new ones for each group and each record read.

mod common;

use std::collections::BTreeMap;

use common::kafka::{commit_offsets, produce};
use common::link::Link;
use common::replay::create_topic;
use common::Testbed;
use kappa_operator::kafka::rdkafka_admin::RdKafkaAdmin;
use kappa_operator::kafka::{ClusterConnection, KafkaAdmin};

const TOPIC: &str = "measured";
const GROUPS: [&str; 3] = ["reader-a", "reader-b", "reader-c"];
/// Measurements, as a pipeline's lag is measured every 15 s: 20 of them
/// are five minutes of one pipeline, or 15 s of 20 pipelines on one cluster.
const ROUNDS: usize = 20;

#[tokio::test]
async fn measurements_read_what_the_broker_holds_over_the_same_connections() {
    let broker = &Testbed::with_brokers().brokers[0];
    create_topic(broker, TOPIC, 4).await;
    let before_records = now_ms();
    produce(broker, TOPIC, 40).await;
    let after_records = now_ms();
    // Each group has read a different number of records of each partition.
    let ends = RdKafkaAdmin::default()
        .end_offsets(&ClusterConnection::plaintext(broker.as_str()), TOPIC)
        .await
        .expect("end offsets");
    assert_eq!(ends.values().sum::<i64>(), 40, "{ends:?}");
    let mut expected = BTreeMap::new();
    for (index, group) in GROUPS.iter().enumerate() {
        let offsets: BTreeMap<i32, i64> = ends
            .iter()
            .map(|(partition, end)| (*partition, (end - index as i64).max(0)))
            .collect();
        let as_strings = offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        commit_offsets(broker, group, TOPIC, &as_strings);
        expected.insert(group.to_string(), offsets);
    }

    let link = Link::to(broker.parse().expect("the broker's address"));
    let connection = ClusterConnection::plaintext(link.address.to_string());
    let admin = RdKafkaAdmin::default();
    // Named twice, as a set's drained segments name a topic once per move.
    let topics = [TOPIC.to_string(), TOPIC.to_string()];
    // The clients are made by the first round; the others add none.
    let mut after_first = 0;
    for round in 0..ROUNDS {
        let committed = admin
            .committed_offsets(&connection, &topics)
            .await
            .expect("committed offsets of every group");
        for (group, offsets) in &expected {
            assert_eq!(
                committed.get(group).and_then(|t| t.get(TOPIC)),
                Some(offsets),
                "{group}, as committed"
            );
        }
        let one = admin
            .group_offsets(&connection, GROUPS[1], &topics)
            .await
            .expect("one group's offsets");
        assert_eq!(one.get(TOPIC), expected.get(GROUPS[1]), "{}", GROUPS[1]);
        assert_eq!(
            admin
                .end_offsets(&connection, TOPIC)
                .await
                .expect("end offsets"),
            ends
        );
        // The first record each group has not read, where there is one.
        for (partition, offset) in &expected[GROUPS[2]] {
            if offset == &ends[partition] {
                continue;
            }
            let time = admin
                .record_time(&connection, TOPIC, *partition, *offset)
                .await
                .expect("record time")
                .expect("a record at the group's offset");
            assert!(
                (before_records..=after_records).contains(&time),
                "partition {partition} at {offset}: written at {time}, between {before_records} and {after_records}"
            );
        }
        let at = admin
            .offsets_at(&connection, TOPIC, before_records)
            .await
            .expect("offsets by time");
        for (partition, end) in &ends {
            let first = (*end > 0).then_some(0);
            assert_eq!(
                at.get(partition),
                Some(&first),
                "partition {partition}'s first record is its first at or after that time: {at:?}"
            );
        }
        if round == 0 {
            after_first = link.accepted();
        }
    }
    let opened = link.accepted() - after_first;
    println!(
        "{ROUNDS} rounds of measurements ({} groups, a record read per partition): {after_first} connections in the first round, {opened} in the {} others",
        GROUPS.len(),
        ROUNDS - 1
    );
    assert!(
        after_first <= 4,
        "an admin client and a reader, with their bootstrap connections: {after_first}"
    );
    assert_eq!(opened, 0, "measurements after the first opened connections");
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}
