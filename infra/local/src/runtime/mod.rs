//! A local Lambda: runs a function's binary as real processes that speak the Lambda
//! Runtime API (2018-06-01), with a pool of instances per function.
//!
//! # Design
//!
//! **One Runtime API listener per instance.** In Lambda every execution environment has its
//! own Runtime API endpoint, and the API itself never says which environment is calling.
//! Giving each instance its own listener on `127.0.0.1:<ephemeral port>` keeps that
//! property: a `next` on a port means "this instance is free", a response on it can only
//! come from the process that was handed the event, and a dead process takes its
//! connections with it. No routing table, no instance ids in URLs, and the function's
//! unmodified `lambda_runtime` client works as it does in AWS. A port per instance is cheap.
//!
//! **One task per instance** (module `instance`) owns the process and the listener's requests and
//! runs the instance's life as a state machine (init, idle, invoked, gone). It is the only
//! place where anything about that instance is decided; it hears everything — the process's
//! requests, a new job, the process's exit, the deadline, shutdown — through one `select!`.
//!
//! **The pool** ([`Function`]) counts the instances that exist against `max_instances`.
//! An invocation takes an idle instance (the most recently used, as Lambda tends to), or
//! the right to start a new one if the limit allows, or else queues. Whoever releases an instance — or the slot of a discarded one — hands it
//! straight to the first waiter, so the queue is FIFO and nobody is woken for nothing.
//! Lambda throttles at once where this queues; the queue is bounded instead: an
//! invocation that waits longer than one instance can hold a job (Lambda's init limit plus
//! the function's timeout) fails with Lambda's throttling error
//! (`TooManyRequestsException: Rate Exceeded.`, as [`InvokeError::Unavailable`](crate::invoke::InvokeError::Unavailable), which the
//! stream trigger retries like a throttle).
//! Instances stay warm after a response or a handler error, and are discarded after a
//! timeout, a crash or a failed init. Idle instances are not reaped: they live until
//! shutdown, and `max_instances` bounds them.
//!
//! **Each invocation runs in its own task**, so an invocation whose caller stops waiting
//! still runs to its end (as in Lambda) and gives its instance back; a dropped future can
//! never leak a slot of the pool.
//!
//! **Processes** (module `spawn`) get a cleared environment with Lambda's variables, and can
//! never outlive the gateway: killed on every way out, `kill_on_drop`, and on Linux
//! `PR_SET_PDEATHSIG`. Their stdout and stderr are forwarded line by line to `tracing`
//! (info and warn), with the function and instance as fields.
//!
//! **Response streaming** (a function URL with `InvokeMode: RESPONSE_STREAM`): a response
//! posted with `Lambda-Runtime-Function-Response-Mode: streaming` is handed to the caller
//! as soon as its metadata prelude has arrived ([`Invoke::invoke_streaming`]), and its body
//! passes on chunk by chunk; the invocation, and the instance, stay busy until the body
//! ends, and the function's timeout still cuts it off.
//!
//! **Log tails** ([`Invoke::invoke_with`], for the Invoke API's `X-Amz-Log-Type: Tail`):
//! an instance runs one invocation at a time, so its output has one current log, set when
//! the pool hands it a job; the forwarders append each line to it only while that
//! invocation asked for a tail (one atomic load per line for the others). Since the pipes
//! are read by tasks of their own, a line written just before the response may be read
//! just after it: the instance goes back to the pool only once its pipes have been read up
//! to the response (at most 50 ms later), and the tail is then framed with Lambda's
//! `START`, `END` and `REPORT` lines and cut to its last 4 KB.
//!
//! Not modelled: memory limits (`memory_mb` is only reported to the function), SnapStart.
//! The init phase has Lambda's 10 s limit, separate from the function's timeout, which
//! starts when a warm instance accepts the invocation, or when a new instance's process
//! fetches it: a runtime that never asks for its next event cannot hold an invocation
//! past it.
//!
//! # Layout
//! - `pool`: [`Function`], the pool of instances and the invocation queue.
//! - `config`: [`FunctionConfig`] and [`FunctionFaults`].
//! - `shared`: what the pool and its instances share, and [`FunctionStats`].
//! - `job`: one invocation handed to an instance, and its outcome.
//! - `instance`: starting an instance (listener, process, log forwarders, task).
//! - `task`: the instance's state machine.
//! - `api`: the Runtime API an instance's process talks to; `stream`: a streamed
//!   response's prelude and body.
//! - `environment`: the process's command line and Lambda's variables.
//! - `spawn`: starting processes so that none outlives the gateway.
//! - `logs`: forwarding a process's output to `tracing`, and its EMF lines to the
//!   metrics registry ([`crate::metrics`]).
//! - `tail`: an invocation's log, for its tail; `drain`: how far a pipe has been read.

mod api;
mod config;
mod drain;
mod environment;
mod instance;
mod job;
mod logs;
mod pool;
mod shared;
mod spawn;
mod stream;
#[cfg(test)]
mod stream_tests;
mod tail;
#[cfg(test)]
mod tail_tests;
mod task;
#[cfg(test)]
pub(crate) mod tests;

pub use config::{FunctionConfig, FunctionFaults};
pub(crate) use job::uuid_v4;
pub use pool::Function;

#[cfg(doc)]
use crate::invoke::Invoke;
pub use shared::FunctionStats;
