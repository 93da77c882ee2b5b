//! Fitting the connection limit to the process's open-file limit, so that
//! past it clients get "server full" instead of the accept loop running out
//! of descriptors.

use crate::Config;

/// What [`fit_to_fd_limit`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft open-file limit in force (after raising it if possible).
    pub limit: u64,
    /// Descriptors kept aside for the runtime, listeners and refusals.
    pub reserve: u64,
    /// `max_connections` as configured.
    pub wanted: usize,
    /// `max_connections` as it now is.
    pub granted: usize,
}

impl FdBudget {
    /// Whether the configured connection limit had to be lowered.
    pub fn lowered(&self) -> bool {
        self.granted < self.wanted
    }
}

/// Descriptors kept aside: the runtime's own, listeners, log files, and
/// sockets accepted only to be refused "server full".
pub fn reserve_for(limit: u64) -> u64 {
    32 + limit / 16
}

/// Raises the soft open-file limit to the hard limit, then lowers
/// `config.max_connections` if the limit cannot hold that many sockets plus
/// the reserve. Returns `None` where the limit cannot be read.
pub fn fit_to_fd_limit(config: &mut Config) -> Option<FdBudget> {
    #[cfg(unix)]
    {
        let limit = rlimit::increase_nofile_limit(u64::MAX).ok()?;
        Some(fit(config, limit))
    }
    #[cfg(not(unix))]
    {
        let _ = config;
        None
    }
}

fn fit(config: &mut Config, limit: u64) -> FdBudget {
    let reserve = reserve_for(limit);
    let room = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    let wanted = config.max_connections;
    config.max_connections = wanted.min(room);
    FdBudget {
        limit,
        reserve,
        wanted,
        granted: config.max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_the_connection_limit_only_when_needed() {
        let mut c = Config::default();
        let b = fit(&mut c, 1 << 20);
        assert!(!b.lowered());
        assert_eq!(c.max_connections, 10_000);

        let b = fit(&mut c, 1024);
        assert!(b.lowered());
        assert_eq!(c.max_connections, 1024 - 32 - 64);

        let b = fit(&mut c, 10);
        assert_eq!((b.granted, c.max_connections), (0, 0));
    }
}
