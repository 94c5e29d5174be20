//! What the admin calls made through librdkafka's C API share: guards that
//! free its objects, its strings, and one request sent and answered on a
//! queue of its own.

use std::ffi::CStr;
use std::os::raw::c_char;
use std::ptr;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka_sys::bindings as rd;

use super::failure::Failure;

/// Frees a librdkafka object when dropped.
pub struct Owned<T> {
    pub pointer: *mut T,
    pub destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.pointer.is_null() {
            // SAFETY: `pointer` came from the matching librdkafka constructor
            // and is destroyed exactly once, here.
            unsafe { (self.destroy)(self.pointer) }
        }
    }
}

/// A string librdkafka returned, copied.
pub fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as
    // the object they belong to, which outlives this call.
    unsafe { CStr::from_ptr(pointer) }
        .to_string_lossy()
        .into_owned()
}

/// Sends one admin request of kind `operation` on `client` through `send`
/// (given the options, with `timeout` as the request timeout, and the queue
/// the answer comes to) and returns the answering event once it reports no
/// error. `send` is to make exactly one admin call of that kind with them.
pub fn answer<C: ClientContext>(
    client: &Client<C>,
    operation: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    send: impl FnOnce(*mut rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
) -> Result<Owned<rd::rd_kafka_event_t>, Failure> {
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live client's handle; the options and the queue
    // are owned by guards created right after their constructors and
    // outlive the call and the poll; the event is owned by the guard
    // returned.
    unsafe {
        let options = Owned {
            pointer: rd::rd_kafka_AdminOptions_new(rk, operation),
            destroy: rd::rd_kafka_AdminOptions_destroy,
        };
        rd::rd_kafka_AdminOptions_set_request_timeout(options.pointer, millis, ptr::null_mut(), 0);
        let queue = Owned {
            pointer: rd::rd_kafka_queue_new(rk),
            destroy: rd::rd_kafka_queue_destroy,
        };
        send(options.pointer, queue.pointer);
        let event = Owned {
            pointer: rd::rd_kafka_queue_poll(queue.pointer, millis.saturating_add(1000)),
            destroy: rd::rd_kafka_event_destroy,
        };
        if event.pointer.is_null() {
            return Err(Failure::timed_out(timeout));
        }
        let error = rd::rd_kafka_event_error(event.pointer);
        if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(Failure::of(
                error.into(),
                text(rd::rd_kafka_event_error_string(event.pointer)),
            ));
        }
        Ok(event)
    }
}
