//! CPU placement: each server under test on a core of its own, the load generator on the
//! others.
//!
//! On a small machine the load generator and the server compete for the same cores, and
//! the kernel shares them per thread: a server with more threads than the other (coturn
//! starts one per core plus listeners) would win CPU from the load generator, not by
//! being faster. Confining the server to one core and the bench to the rest gives both
//! servers the same budget, and "per core" figures mean what they say.

use std::process::Command;

/// The core a server runs on: the last one. `None` on a single-core machine (nothing to
/// separate) or when `taskset` is missing.
pub fn server_core() -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return None;
    }
    let have_taskset = Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    have_taskset.then_some(cores - 1)
}

/// Keeps this process (and the threads it starts from now on) off `core`.
#[allow(unsafe_code)] // sched_setaffinity(2), see the SAFETY note
pub fn avoid(core: usize) -> std::io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; the pointer
    // and size passed to sched_setaffinity describe it exactly.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for c in (0..cores).filter(|&c| c != core) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `program` to be run on `core` only (through `taskset -c`), or as is without one.
pub fn command_on(core: Option<usize>, program: &std::ffi::OsStr) -> Command {
    match core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}
