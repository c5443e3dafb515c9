//! What the RocksDB-backed metadata backends share. Not a backend: it registers nothing.
//!
//! A node that was just crashed or shut down in this process may still be closing its handle
//! on a database directory while the next one opens it (the conformance suite's crashes and
//! restarts do exactly that); RocksDB then refuses the open because the directory's `LOCK`
//! file is held. [`open_retrying`] retries that refusal, and only that one, until a deadline.

use std::time::Duration;

use rocksdb::ErrorKind;

/// How long an open waits, by default, for another handle on the same directory to close.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Whether RocksDB refused to open a database because another handle holds its `LOCK` file:
/// an I/O error (RocksDB reports the lock through `IOError`, with no finer code) about the lock.
pub fn is_lock_held(error: &rocksdb::Error) -> bool {
    error.kind() == ErrorKind::IOError && error.as_ref().to_ascii_lowercase().contains("lock")
}

/// Run `open` on the blocking pool until it succeeds, fails with anything but
/// [`is_lock_held`], or `lock_wait` has passed (then the last refusal is returned). Pauses
/// double from 5 ms up to 100 ms between attempts.
pub async fn open_retrying<T, F>(lock_wait: Duration, open: F) -> Result<T, rocksdb::Error>
where
    T: Send + 'static,
    F: Fn() -> Result<T, rocksdb::Error> + Clone + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + lock_wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let attempt = open.clone();
        let opened = match tokio::task::spawn_blocking(attempt).await {
            Ok(opened) => opened,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        match opened {
            Err(e) if is_lock_held(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rocksdb::{DB, Options};

    use super::*;

    fn open(dir: PathBuf) -> impl Fn() -> Result<DB, rocksdb::Error> + Clone + Send + 'static {
        move || {
            let mut options = Options::default();
            options.create_if_missing(true);
            DB::open(&options, &dir)
        }
    }

    #[tokio::test]
    async fn a_held_lock_is_retried_until_it_is_released() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let held = open(dir.path().to_owned())()?;
        let refused = open(dir.path().to_owned())().err();
        assert!(
            refused.as_ref().is_some_and(is_lock_held),
            "a second handle on the same directory: {refused:?}"
        );
        let waiting = tokio::spawn(open_retrying(LOCK_WAIT, open(dir.path().to_owned())));
        drop(held);
        waiting.await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_lock_held_past_the_deadline_is_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let _held = open(dir.path().to_owned())()?;
        let refused = open_retrying(Duration::from_millis(50), open(dir.path().to_owned()))
            .await
            .err();
        assert!(refused.as_ref().is_some_and(is_lock_held), "{refused:?}");
        Ok(())
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() -> Result<(), Box<dyn std::error::Error>> {
        // A regular file where the database directory should be.
        let file = tempfile::NamedTempFile::new()?;
        let started = tokio::time::Instant::now();
        let refused = open_retrying(LOCK_WAIT, open(file.path().to_owned()))
            .await
            .err();
        assert!(
            refused.as_ref().is_some_and(|e| !is_lock_held(e)),
            "{refused:?}"
        );
        assert!(started.elapsed() < LOCK_WAIT, "it waited for the deadline");
        Ok(())
    }
}
