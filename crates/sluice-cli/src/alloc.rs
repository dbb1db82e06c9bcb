//! Allocator tuning for a long-running process that allocates and frees large blocks.

/// glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
/// the 8 MiB pieces and the Parquet pages sluice allocates and frees by the thousand end up in
/// the heap, fragmented, and the peak is never given back: converting TPC-H SF1 peaked at
/// 414 MB of RSS, 288 MB with the threshold fixed at 256 KiB. Fixing it here makes large blocks
/// plain mmaps, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn fix_malloc_mmap_threshold() {
    // SAFETY: mallopt only changes a malloc tunable; it is called first thing in main, before
    // any other thread exists, with a documented parameter and a valid value.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn fix_malloc_mmap_threshold() {}

/// Blocks below the mmap threshold are freed into glibc's per-thread arenas, whose free pages
/// stay resident until trimmed. Ten times a second, a thread gives them back (`malloc_trim`
/// releases whole free pages inside every arena, not only at its top). Pieces are typed,
/// written and freed every few tens of milliseconds, and RSS swings by 50-60 MB with them;
/// what a slower trim leaves resident is the top of that swing. Converting ten times TPC-H
/// SF1 peaked at 375 MB without the thread, 324-332 MB trimming once a second, 293 MB every
/// 250 ms and 277 MB every 100 ms, for about 0.25 s more system time per SF1.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim_malloc_arenas_often() {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                // SAFETY: malloc_trim only returns free memory to the system; it takes each
                // arena's lock and is safe to call from any thread at any time.
                #[allow(unsafe_code)]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    // Without the thread sluice works the same, with a higher peak.
    drop(spawned);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim_malloc_arenas_often() {}
