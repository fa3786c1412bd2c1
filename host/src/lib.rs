//! runcap: runs operational-runbook actions as sandboxed, capability-limited
//! WebAssembly components, composed per environment from a TOML manifest.
//!
//! - [`manifest`]: TOML → validated [`manifest::Environment`], with located diagnostics.
//! - [`engine`]: wasmtime engine, compile cache, plugin loading and import checks.
//! - [`caps`]: one module per capability (grant, checks, host implementation, audit),
//!   each implementing [`caps::Capability`] and listed once in [`caps::REGISTRY`].
//! - [`services`], [`secrets`], [`chaos`]: what the environment declares and runcap drives
//!   (supervised services, secret values, faults and drill proxies), which capabilities use.
//! - [`lockfile`]: `runcap.lock`, what each environment may do as last approved, and diffs.
//! - [`policy`]: ceilings on what any plugin may be granted per environment.
//! - [`runner`]: one action in a fresh instance, classified however it ends.
//! - [`redaction`]: what is stored or printed carries no personal data or secret value.
//! - [`runbook`]: steps in order.
//! - [`cli`]: the `runcap` command.

pub mod bindings;
pub mod caps;
pub mod chaos;
pub mod cli;
pub mod diagnostics;
pub mod engine;
pub mod fleet;
pub mod lockfile;
pub mod manifest;
pub mod net;
pub mod policy;
pub mod procinfo;
pub mod redaction;
pub mod runbook;
pub mod runner;
pub mod secrets;
pub mod serve;
pub mod services;
pub mod signing;
pub mod stamps;
pub mod store;
