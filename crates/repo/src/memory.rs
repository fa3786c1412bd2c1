//! How the process's allocator should treat the threads a snapshot or restore runs on.

/// Caps glibc's malloc at four arenas; call it once at program start, before other threads
/// exist. It does nothing with another C library.
///
/// A snapshot or restore runs a dozen threads that each allocate and free buffers of up to a
/// chunk's maximum size. glibc gives threads arenas of their own (up to eight per core), and
/// each arena keeps megabytes of what its threads freed, which `malloc_trim` does not give
/// back; every later operation's threads can take new arenas and keep more. In the
/// repository benchmark (three snapshots and three restores of 1 GiB in one process) the
/// first snapshot's peak RSS went from 89-107 MiB to 65-73 MiB with four arenas and the
/// restore's from 134-166 MiB to 69-78 MiB. Two arenas saved a little more (61-68 and 54-71
/// MiB) but cost `runcap serve` more CPU in a probe soak (60 s, two rounds alternating: 1.99
/// and 2.06 CPU-s against 1.93 and 1.81 uncapped; 1.91 and 2.01 with four). Small allocations
/// stay per thread (glibc's thread cache) whatever the cap.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointers; the caller runs before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
