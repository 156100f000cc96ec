//! End-to-end tests of the opsd server: real listeners on port 0, real clients.

mod abuse;
mod auth;
mod grpc;
mod rest;
mod support;
