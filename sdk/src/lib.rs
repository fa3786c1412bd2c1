//! Write a runcap plugin as one function.
//!
//! ```ignore
//! use runcap_sdk::{Context, Outcome, ActionError};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Params { url: String }
//!
//! fn check(ctx: &Context, params: Params) -> Result<Outcome, ActionError> {
//!     let resp = ctx.http(&runcap_sdk::HttpRequest::get(&params.url))?;
//!     Ok(Outcome::ok(format!("{} answered {}", params.url, resp.status)))
//! }
//!
//! runcap_sdk::plugin!(name: "my-check", description: "Is it up?", run: check);
//! ```
//!
//! The function sees capabilities only through [`Context`], which talks to the runcap host
//! when compiled for `wasm32-wasip2` and to a [`testing::MockHost`] in native unit tests, so
//! a plugin's logic is tested with plain `cargo test`.

extern crate self as runcap_sdk;

mod backup;
mod context;
mod duration;
mod exec;
mod faults;
pub mod files;
mod http;
mod logs;
mod notify;
mod outcome;
mod services;
mod system;
pub mod testing;
mod wasm;

pub use backup::{
    BackupError, CompareReport, ForgetItem, ForgetPolicy, ForgetReport, PlannedItem, QueryResult,
    RestoreReport, RestoreRequest, SnapshotInfo, SnapshotReport, VerifyReport,
};
pub use context::{Context, Host, Level, Names};
pub use duration::HumanDuration;
pub use exec::{CommandResult, ExecError};
pub use faults::{Fault, FaultError, FaultKind, FaultSpec};
pub use files::{FileReader, FileWriter};
pub use http::{HttpError, HttpRequest, HttpResponse, Method};
pub use logs::{LogLines, LogQuery, LogsError};
pub use notify::{Notification, NotifyError, Severity};
pub use outcome::{ActionError, Outcome, Status};
pub use services::{ServiceError, ServiceState, ServiceStatus, Verb};
pub use system::{
    CertificateInfo, DiskUse, Fact, FactValue, FileHandles, Load, Memory, PidFileState,
    PortListener, ProcessDetail, ProcessInfo, SystemError, Zombie,
};

/// Everything a plugin usually imports.
pub mod prelude {
    pub use crate::{ActionError, Context, HttpRequest, Outcome, Status};
    pub use serde_json::json;
}

/// The generated guest bindings of the `runcap:plugin` world. Plugins never use them
/// directly; [`plugin!`] wires a function to them.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "action",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_action",
        default_bindings_module: "runcap_sdk::bindings",
        runtime_path: "runcap_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wasm::{__describe, __run, __validate};
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Turns one function into a runcap plugin.
///
/// The function takes `&Context` and a params type that implements
/// `serde::Deserialize` and `schemars::JsonSchema`, and returns
/// `Result<Outcome, ActionError>`. The plugin's version is the crate's version.
#[macro_export]
macro_rules! plugin {
    (name: $name:expr, description: $description:expr, run: $run:path $(,)?) => {
        #[doc(hidden)]
        pub struct __RuncapPlugin;

        impl $crate::bindings::Guest for __RuncapPlugin {
            fn describe() -> $crate::bindings::runcap::plugin::types::Descriptor {
                $crate::__describe($run, $name, env!("CARGO_PKG_VERSION"), $description)
            }
            fn validate(params: String) -> Result<(), String> {
                $crate::__validate($run, &params)
            }
            fn run(
                ctx: $crate::bindings::runcap::plugin::types::Context,
                params: String,
            ) -> Result<
                $crate::bindings::runcap::plugin::types::Outcome,
                $crate::bindings::runcap::plugin::types::ActionError,
            > {
                $crate::__run($run, ctx, &params)
            }
        }

        $crate::bindings::__export_action!(__RuncapPlugin with_types_in $crate::bindings);
    };
}
