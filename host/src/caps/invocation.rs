//! `invocation`: which run, environment, runbook and step the running action belongs to.
//!
//! | | |
//! |---|---|
//! | grants | always available |
//! | manifest | none |
//! | enforced | nothing: it only reads what the host already knows about the action |
//! | audit | not recorded: it reveals nothing the run record does not hold |
//!
//! The names are asked for, not passed with every `run` call: copying four strings into
//! the guest on each call was the largest part of a call's cost, and most actions never
//! read them.

use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::invocation as wit;
use crate::caps::core::{CapCtx, CapData, HostState, Ungranted};

/// The `invocation` capability.
pub struct Invocation;

impl Ungranted for Invocation {
    const NAME: &'static str = "invocation";
    const INTERFACE: &'static str = "runcap:plugin/invocation";
    const WIT: &'static str = include_str!("../../../wit/invocation.wit");
    type State = ();

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

impl wit::Host for CapCtx<'_, Invocation> {
    async fn current(&mut self) -> wasmtime::Result<wit::Names> {
        let action = &self.core.action;
        Ok(wit::Names {
            run_id: action.run_id.clone(),
            environment: action.environment.clone(),
            runbook: action.runbook.clone(),
            step: action.step.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing::action;

    #[tokio::test]
    async fn names_are_the_running_actions() {
        let mut state = action(crate::caps::core::Prepared::default(), false, 1024);
        let names = wit::Host::current(&mut state.view::<Invocation>())
            .await
            .unwrap();
        assert_eq!(
            (
                names.run_id.as_str(),
                names.environment.as_str(),
                names.runbook.as_str(),
                names.step.as_str()
            ),
            ("run-1", "test", "rb", "s")
        );
        assert!(state.core.calls.is_empty(), "asking is not a recorded call");
    }
}
