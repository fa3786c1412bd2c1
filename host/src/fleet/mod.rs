//! A fleet: `runcap agent` on every host and a controller (`runcap serve` with
//! `[serve] fleet`), coordinated over NATS JetStream, with the controller's history in
//! PostgreSQL. A capability is local by nature, so each agent's own manifest stays the
//! authority on what runs on its host and with which grants; the controller schedules,
//! dispatches and records.
//!
//! - [`config`]: the fleet file.
//! - [`protocol`]: subjects, streams, messages, and the NATS permissions that hold
//!   each agent to its own subjects.
//! - [`agent`]: taking jobs, reporting runs, presence and signed audit checkpoints.
//! - [`controller`]: dispatching, recording every agent's runs in PostgreSQL, lost runs,
//!   audit across hosts, and the fleet's HTTP API.

pub mod agent;
pub mod api;
pub mod config;
pub mod controller;
pub mod protocol;
