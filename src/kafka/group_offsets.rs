//! A consumer group's committed offsets through the admin client
//! (ListConsumerGroupOffsets). The rdkafka crate reads committed offsets
//! only through a consumer of that very group: a new client, with threads
//! and connections of its own, for every group at every measurement.
//! librdkafka's admin call asks for any group on a client already open, so
//! it is reached through its C API.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::TopicPartitionList;
use rdkafka_sys::bindings as rd;

use super::failure::Failure;
use super::native::{answer, text, Owned};
use super::TopicOffsets;

/// `group`'s committed offsets on `partitions`: topic -> partition ->
/// offset, leaving out partitions without one. Blocks for up to `timeout`.
pub fn committed<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    partitions: &TopicPartitionList,
    timeout: Duration,
) -> Result<TopicOffsets, Failure> {
    // librdkafka refuses an empty list (an absent one would mean every
    // partition the group has committed on).
    if partitions.count() == 0 {
        return Ok(TopicOffsets::new());
    }
    let group_id = CString::new(group).map_err(|e| Failure::Refused(e.to_string()))?;
    let rk = client.native_ptr();
    // SAFETY: the request is owned by a guard created right after its
    // constructor (which copies the group and the list, as the call copies
    // the request); `rk` is the live client's handle; the result, its
    // groups and their lists are owned by the event, which outlives their
    // use here.
    unsafe {
        let request = Owned {
            pointer: rd::rd_kafka_ListConsumerGroupOffsets_new(group_id.as_ptr(), partitions.ptr()),
            destroy: rd::rd_kafka_ListConsumerGroupOffsets_destroy,
        };
        let mut requests = [request.pointer];
        let event = answer(
            client,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
            timeout,
            |options, queue| {
                rd::rd_kafka_ListConsumerGroupOffsets(
                    rk,
                    requests.as_mut_ptr(),
                    requests.len(),
                    options,
                    queue,
                )
            },
        )?;
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.pointer);
        if result.is_null() {
            return Err(Failure::Refused(
                "the answer was not a ListConsumerGroupOffsets result".into(),
            ));
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        let mut offsets = TopicOffsets::new();
        for index in 0..count {
            let answered = *groups.add(index);
            let error = rd::rd_kafka_group_result_error(answered);
            if !error.is_null() {
                return Err(Failure::of(
                    rd::rd_kafka_error_code(error).into(),
                    text(rd::rd_kafka_error_string(error)),
                ));
            }
            let list = rd::rd_kafka_group_result_partitions(answered);
            if list.is_null() {
                continue;
            }
            for position in 0..usize::try_from((*list).cnt).unwrap_or(0) {
                let partition = &*(*list).elems.add(position);
                if partition.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    && partition.offset >= 0
                {
                    offsets
                        .entry(text(partition.topic))
                        .or_default()
                        .insert(partition.partition, partition.offset);
                }
            }
        }
        Ok(offsets)
    }
}
