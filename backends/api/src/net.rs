//! Robustness helpers every listener shares — the broker's Kafka listener and each backend's
//! cluster port: accepting connections without spinning when the process runs out of file
//! descriptors, and warnings a peer can trigger at will written at most once per interval.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How often a throttled warning may be written.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Longest pause after a failed accept; the pause doubles from 10 ms up to this.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Lets one line through per interval and counts the ones it held back, so a log that a
/// client can trigger in a loop stays one line per interval with a count.
#[derive(Debug)]
pub struct LogThrottle {
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle that has let nothing through yet.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(ThrottleState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many were held back since the
    /// last one; `None` (and one more held back) otherwise.
    pub fn allow(&self, interval: Duration) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match state.last {
            Some(last) if now.duration_since(last) < interval => {
                state.suppressed = state.suppressed.saturating_add(1);
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!` at most once per [`WARN_INTERVAL`] per call site, with a `suppressed`
/// field counting the lines held back since the last one written.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::net::LogThrottle = $crate::net::LogThrottle::new();
        if let Some(suppressed) = THROTTLE.allow($crate::net::WARN_INTERVAL) {
            $crate::net::__tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// `tracing::error!` at most once per [`WARN_INTERVAL`] per call site, like
/// [`warn_throttled!`].
#[macro_export]
macro_rules! error_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::net::LogThrottle = $crate::net::LogThrottle::new();
        if let Some(suppressed) = THROTTLE.allow($crate::net::WARN_INTERVAL) {
            $crate::net::__tracing::error!(suppressed, $($arg)+);
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

/// Accept the next connection. A failed accept — typically `EMFILE` when the process is out
/// of file descriptors — is warned about at most once per interval and followed by a pause
/// that doubles up to a second, so the loop neither spins nor floods the log while the
/// connections already open go on being served and closing.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    static THROTTLE: LogThrottle = LogThrottle::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                if let Some(suppressed) = THROTTLE.allow(WARN_INTERVAL) {
                    tracing::warn!(
                        %error,
                        listener = what,
                        suppressed,
                        backoff_ms = backoff.as_millis(),
                        "accepting a connection failed; pausing before the next accept"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::new();
        let interval = Duration::from_secs(10);
        assert_eq!(throttle.allow(interval), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(interval), None);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(throttle.allow(interval), Some(5));
        assert_eq!(throttle.allow(interval), None);
    }
}
