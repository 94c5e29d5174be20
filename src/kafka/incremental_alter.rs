//! IncrementalAlterConfigs (KIP-339) for one topic. The rdkafka crate only
//! wraps the older AlterConfigs, which replaces a topic's whole
//! configuration and which some brokers (Tansu among them) do not serve;
//! librdkafka has the incremental call, so it is reached through its C API.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka_sys::bindings as rd;

use super::failure::Failure;
use super::native::{answer, text, Owned};

/// Sets `entries` on `topic`, leaving its other settings alone. Blocks for
/// up to `timeout`.
pub fn set_topic_config<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    entries: &[(String, String)],
    timeout: Duration,
) -> Result<(), Failure> {
    let refused = |e: std::ffi::NulError| Failure::Refused(e.to_string());
    let name = CString::new(topic).map_err(refused)?;
    let rk = client.native_ptr();
    // SAFETY: every pointer passed below is either owned by an `Owned` guard
    // created right after its constructor, or borrowed from a live `CString`
    // or from the event that owns it; `rk` is the live client's handle.
    unsafe {
        let resource = Owned {
            pointer: rd::rd_kafka_ConfigResource_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
            ),
            destroy: rd::rd_kafka_ConfigResource_destroy,
        };
        for (key, value) in entries {
            let key = CString::new(key.as_str()).map_err(refused)?;
            let value = CString::new(value.as_str()).map_err(refused)?;
            let error = rd::rd_kafka_ConfigResource_add_incremental_config(
                resource.pointer,
                key.as_ptr(),
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                value.as_ptr(),
            );
            if !error.is_null() {
                let message = text(rd::rd_kafka_error_string(error));
                rd::rd_kafka_error_destroy(error);
                return Err(Failure::Refused(message));
            }
        }
        let mut resources = [resource.pointer];
        let event = answer(
            client,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
            timeout,
            |options, queue| {
                rd::rd_kafka_IncrementalAlterConfigs(
                    rk,
                    resources.as_mut_ptr(),
                    resources.len(),
                    options,
                    queue,
                )
            },
        )?;
        let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event.pointer);
        if result.is_null() {
            return Err(Failure::Refused(
                "the answer was not an IncrementalAlterConfigs result".into(),
            ));
        }
        let mut count = 0usize;
        let answered = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
        for index in 0..count {
            let resource = *answered.add(index);
            let error = rd::rd_kafka_ConfigResource_error(resource);
            if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(Failure::of(
                    error.into(),
                    text(rd::rd_kafka_ConfigResource_error_string(resource)),
                ));
            }
        }
        Ok(())
    }
}
