//! Link settings for the runcap binary.

fn main() {
    // Pack the binary's relative relocations (DT_RELR, glibc 2.36 and later): the dynamic
    // loader then applies about 100,000 of them from a table of a few kilobytes rather
    // than 2.3 MB, which is a measurable part of a short command's start.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
