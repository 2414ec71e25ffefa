//! The file-descriptor budget: RLIMIT_NOFILE raised at start, `max_connections` held to
//! what it allows, and connections refused at accept before the process runs out.

use std::os::fd::RawFd;

/// The process's RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current RLIMIT_NOFILE.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every target
pub fn nofile_limit() -> std::io::Result<NofileLimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NofileLimit { soft: lim.rlim_cur as u64, hard: lim.rlim_max as u64 })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (bounded by the kernel's
/// `fs.nr_open` when the hard limit is unlimited); returns the limits before and after.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every target
pub fn raise_nofile_limit() -> std::io::Result<(NofileLimit, NofileLimit)> {
    let before = nofile_limit()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let mut target = before.hard;
    if before.hard == libc::RLIM_INFINITY as u64 {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok());
        target = nr_open.unwrap_or(1 << 20);
    }
    let lim = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: before.hard as libc::rlim_t };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, nofile_limit()?))
}

/// How many descriptors the process has open (entries of /proc/self/fd, minus the one
/// the listing itself uses); None where /proc is not mounted.
pub fn open_descriptors() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count().saturating_sub(1))
}

/// Descriptors a new connection may not eat into.
#[derive(Debug, Clone, Copy)]
pub struct FdBudget {
    /// The soft RLIMIT_NOFILE.
    pub limit: usize,
    /// Descriptors kept free (`reserved_fds`).
    pub reserved: usize,
}

impl FdBudget {
    /// Whether an accepted connection whose descriptor is `fd` leaves too few free. Linux
    /// hands out the lowest free number, so every descriptor below `fd` is open: `fd + 1`
    /// is a lower bound on what the process holds, known without a system call.
    pub fn exhausted_by(&self, fd: RawFd) -> bool {
        let open = usize::try_from(fd).unwrap_or(0).saturating_add(1);
        open.saturating_add(self.reserved) > self.limit
    }

    /// How many connections fit beside `open_now` descriptors (those open at start:
    /// storage, listeners, the runtime) and the reserve.
    pub fn connections_allowed(&self, open_now: usize) -> usize {
        self.limit.saturating_sub(open_now).saturating_sub(self.reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_arithmetic() {
        let b = FdBudget { limit: 1024, reserved: 256 };
        assert!(!b.exhausted_by(766));
        assert!(b.exhausted_by(768));
        assert!(!b.exhausted_by(-1));
        assert_eq!(b.connections_allowed(24), 744);
        assert_eq!(b.connections_allowed(2000), 0);
    }

    #[test]
    fn limits_can_be_read_and_raised() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(after.soft >= before.soft && after.hard == before.hard);
        assert!(open_descriptors().unwrap() >= 3);
    }
}
