//! A gRPC connection to a running Hallmark, for the commands that act as
//! its clients.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::pb::signer_service_client::SignerServiceClient;

/// Environment variable naming the server that `sign` and `verify` call.
pub const ENV_TARGET: &str = "HALLMARK_TARGET";

/// A server address: `unix:PATH`, `HOST:PORT` or `http://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket path.
    Unix(String),
    /// An `http://` URI for a TCP address.
    Tcp(String),
}

impl Target {
    /// Parses a server address.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "{text:?} names no socket path; write unix:/path/to/socket"
                ));
            }
            return Ok(Self::Unix(path.to_owned()));
        }
        let address = text.strip_prefix("http://").unwrap_or(text);
        if address.is_empty() || address.contains('/') || !address.contains(':') {
            return Err(format!(
                "{text:?} is not a server address; write unix:/path/to/socket or host:port"
            ));
        }
        Ok(Self::Tcp(format!("http://{address}")))
    }

    /// Connects, waiting at most `timeout` for the connection.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<SignerServiceClient<Channel>, tonic::transport::Error> {
        let channel = match self {
            Self::Unix(path) => {
                let path = path.clone();
                // The URI is a placeholder that only sets :authority; the
                // connector ignores it and dials the socket.
                Endpoint::from_static("http://localhost")
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await?
            }
            Self::Tcp(uri) => {
                Endpoint::from_shared(uri.clone())?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect()
                    .await?
            }
        };
        Ok(SignerServiceClient::new(channel))
    }
}

/// Runs a future on a single-threaded runtime, for commands that make a
/// few calls and exit.
pub fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("unix:/run/hallmark.sock"),
            Ok(Target::Unix("/run/hallmark.sock".into()))
        );
        assert_eq!(
            Target::parse("unix:///run/hallmark.sock"),
            Ok(Target::Unix("/run/hallmark.sock".into()))
        );
        assert_eq!(
            Target::parse("127.0.0.1:50051"),
            Ok(Target::Tcp("http://127.0.0.1:50051".into()))
        );
        assert_eq!(
            Target::parse("http://[::1]:50051"),
            Ok(Target::Tcp("http://[::1]:50051".into()))
        );
        assert!(Target::parse("unix:").is_err());
        assert!(Target::parse("localhost").is_err());
        assert!(Target::parse("https://host:1/x").is_err());
    }
}
