//! A blocking NATS facade over async-nats: one private tokio runtime with a single worker thread
//! keeps the connection alive (pings, reconnects) while callers stay synchronous.

use std::time::Duration;

use futures_util::StreamExt;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NatsError {
    #[error("nats: cannot start runtime: {0}")]
    Runtime(String),
    #[error("nats: cannot connect to {urls}: {message}")]
    Connect { urls: String, message: String },
    #[error("nats: {0}")]
    Io(String),
    #[error("nats: timed out after {0:?}")]
    Timeout(Duration),
}

/// A message received from a subscription.
#[derive(Debug, Clone)]
pub struct NatsMessage {
    pub subject: String,
    pub payload: Vec<u8>,
}

pub struct NatsClient {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    timeout: Duration,
}

pub struct NatsSubscription {
    handle: tokio::runtime::Handle,
    sub: async_nats::Subscriber,
}

impl NatsClient {
    /// Connect to the first reachable of `urls` within `timeout`.
    pub fn connect(
        urls: &[String],
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<NatsClient, NatsError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nats")
            .enable_all()
            .build()
            .map_err(|e| NatsError::Runtime(e.to_string()))?;
        let joined = urls.join(",");
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .name("kaa-iam");
        if !username.is_empty() {
            opts = opts.user_and_password(username.to_string(), password.to_string());
        }
        let connect_err = |e: String| NatsError::Connect {
            urls: joined.clone(),
            message: e,
        };
        let addrs = urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_err(e.to_string()))?;
        let client = rt
            .block_on(async {
                tokio::time::timeout(timeout, opts.connect(addrs))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
                    .map_err(|e| e.to_string())
            })
            .map_err(connect_err)?;
        Ok(NatsClient {
            rt,
            client,
            timeout,
        })
    }

    /// Publish and flush: returns once the server has the message (or an error).
    pub fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<(), NatsError> {
        let client = self.client.clone();
        let subject = subject.to_string();
        let timeout = self.timeout;
        self.rt.block_on(async move {
            tokio::time::timeout(timeout, async {
                client
                    .publish(subject, payload.into())
                    .await
                    .map_err(|e| NatsError::Io(e.to_string()))?;
                client
                    .flush()
                    .await
                    .map_err(|e| NatsError::Io(e.to_string()))
            })
            .await
            .map_err(|_| NatsError::Timeout(timeout))?
        })
    }

    pub fn subscribe(&self, subject: &str) -> Result<NatsSubscription, NatsError> {
        let client = self.client.clone();
        let subject = subject.to_string();
        let sub = self.rt.block_on(async move {
            let sub = client
                .subscribe(subject)
                .await
                .map_err(|e| NatsError::Io(e.to_string()))?;
            // Make sure the server registered the interest before the caller publishes.
            client
                .flush()
                .await
                .map_err(|e| NatsError::Io(e.to_string()))?;
            Ok::<_, NatsError>(sub)
        })?;
        Ok(NatsSubscription {
            handle: self.rt.handle().clone(),
            sub,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl NatsSubscription {
    /// The next message, or `None` after `wait` without one (or when the subscription ended).
    pub fn next_timeout(&mut self, wait: Duration) -> Option<NatsMessage> {
        let sub = &mut self.sub;
        self.handle.block_on(async move {
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(m)) => Some(NatsMessage {
                    subject: m.subject.to_string(),
                    payload: m.payload.to_vec(),
                }),
                _ => None,
            }
        })
    }
}
