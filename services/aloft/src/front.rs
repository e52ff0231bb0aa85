//! The front door of `aloft up`: one port for the Flyte admin gRPC API and the console.
//!
//! pyflyte prints console links on the admin endpoint itself
//! (`http://localhost:30080/console/...`), so that port must answer a browser's HTTP/1.1 GET as
//! well as gRPC. gRPC clients open with the HTTP/2 connection preface (`PRI * HTTP/2.0`), which
//! no HTTP/1 request line starts with: each connection is peeked at and relayed, unchanged, to the
//! embedded metadata gRPC server or to the console's HTTP server, both on loopback ports of their
//! own. Relaying whole connections keeps metadata's server exactly as a deployment runs it.

use std::net::SocketAddr;
use std::time::Duration;

use aloft_runtime::Shutdown;
use tokio::net::{TcpListener, TcpStream};

/// The HTTP/2 client connection preface starts with these bytes (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI ";
/// A client that connects and says nothing this long is dropped.
const FIRST_BYTES: Duration = Duration::from_secs(30);
/// After shutdown, connections the backends have not closed yet get this long to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Where a connection goes, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// HTTP/2 with prior knowledge: gRPC.
    Grpc,
    /// Anything else: HTTP/1.1 for the console.
    Http,
}

/// Decides from the first bytes; `None` while too few have arrived to tell.
pub fn route(first: &[u8]) -> Option<Route> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(Route::Http)
    } else if n == H2_PREFACE.len() {
        Some(Route::Grpc)
    } else {
        None
    }
}

/// Accepts on `listener` until `shutdown`, relaying each connection to `grpc` or `http`.
pub async fn serve(listener: TcpListener, grpc: SocketAddr, http: SocketAddr, shutdown: Shutdown) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like pass; keep serving the connections already open.
                    tracing::warn!(error = %e, "front door: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let relay = relay(stream, grpc, http);
            tokio::select! {
                r = relay => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "front door: connection ended with an error");
                },
                () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN).await } => {}
            }
        });
    }
}

async fn relay(mut client: TcpStream, grpc: SocketAddr, http: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut buf = [0u8; 4];
    let to = tokio::time::timeout(FIRST_BYTES, async {
        loop {
            let n = client.peek(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(r) = route(&buf[..n]) {
                return Ok::<_, std::io::Error>(Some(r));
            }
            // Fewer bytes than the preface so far: wait for the rest.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 30 s"))??;
    let Some(route) = to else { return Ok(()) };
    let mut backend = TcpStream::connect(if route == Route::Grpc { grpc } else { http }).await?;
    // Without TCP_NODELAY small gRPC responses wait for delayed ACKs (~40 ms a call).
    backend.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_h2_preface_is_grpc_and_anything_else_http() {
        assert_eq!(route(b"PRI * HTTP/2.0\r\n"), Some(Route::Grpc));
        assert_eq!(route(b"PRI "), Some(Route::Grpc));
        assert_eq!(route(b"PR"), None);
        assert_eq!(route(b"GET / HTTP/1.1"), Some(Route::Http));
        assert_eq!(route(b"G"), Some(Route::Http));
        assert_eq!(route(b"POST"), Some(Route::Http));
    }
}
