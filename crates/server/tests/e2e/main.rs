//! End-to-end tests of the opsd server: real listeners on port 0, real clients.

mod abuse;
mod auth;
mod crash;
mod faults;
mod feed_history;
mod grpc;
mod history;
mod iam;
mod process;
mod production;
mod rest;
mod support;
mod traces;
