//! How the process's allocator should treat the threads a snapshot or restore runs on.

/// Caps glibc's malloc at two arenas; call it once at program start, before other threads
/// exist. It does nothing with another C library.
///
/// A snapshot or restore runs a dozen threads that each allocate and free buffers of up to a
/// chunk's maximum size. glibc gives threads arenas of their own (up to eight per core), and
/// each arena keeps megabytes of what its threads freed, which `malloc_trim` does not give
/// back; every later operation's threads can take new arenas and keep more. In the
/// repository benchmark (three snapshots and three restores of 1 GiB in one process) the
/// first snapshot's peak RSS went from 89-107 MiB to 61-68 MiB with the cap and the
/// restore's from 134-166 MiB to 54-71 MiB; snapshots alternating with and without it took
/// the same time and CPU. Small allocations stay per thread (glibc's thread cache), so two
/// arenas cost little waiting on locks.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointers; the caller runs before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
