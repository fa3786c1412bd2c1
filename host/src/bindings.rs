//! Host-side bindings of the `runcap:plugin` WIT contract.

wasmtime::component::bindgen!({
    world: "action",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    // `runcap call --record/--replay` keeps capability calls and answers as JSON; tests
    // compare answers.
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});
