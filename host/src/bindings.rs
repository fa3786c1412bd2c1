//! Host-side bindings of the `runcap:plugin` WIT contract.

wasmtime::component::bindgen!({
    world: "action",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});
