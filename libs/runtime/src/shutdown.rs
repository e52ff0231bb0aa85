//! Shutdown: one token that every task of a service watches.
//!
//! `run(config, shutdown)` takes any future; the service turns it into a [`Shutdown`] token so
//! background loops can stop fetching work, finish and ack what they hold, and exit.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown token (cancelled once, observed by many).
pub type Shutdown = CancellationToken;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and docker send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// A token cancelled when `signal` resolves (the future is driven on its own task).
pub fn token_from<F>(signal: F) -> Shutdown
where
    F: Future<Output = ()> + Send + 'static,
{
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal.await;
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_follows_the_signal() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let token = token_from(async move {
            let _ = rx.await;
        });
        assert!(!token.is_cancelled());
        tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), token.cancelled()).await.unwrap();
    }
}
