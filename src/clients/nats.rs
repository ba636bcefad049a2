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

    /// Publish every message, then confirm that the server has them all: a marker published
    /// after them on the same connection to a subscription of ours comes back only once the
    /// server has read everything before it (it handles one connection's messages in order).
    /// A flush alone says only that the bytes left this process: a connection cut at that moment
    /// loses them. A reconnect while the batch was on its way makes the batch unconfirmed (its
    /// messages may be lost with the old connection): an error, so the caller sends it again.
    pub fn publish_confirmed(&self, msgs: Vec<(String, Vec<u8>)>) -> Result<(), NatsError> {
        use std::sync::atomic::Ordering;
        let client = self.client.clone();
        let timeout = self.timeout;
        let io = |e: String| NatsError::Io(e);
        self.rt.block_on(async move {
            tokio::time::timeout(timeout, async {
                let connects = || client.statistics().connects.load(Ordering::SeqCst);
                let before = connects();
                let inbox = client.new_inbox();
                let mut marker = client
                    .subscribe(inbox.clone())
                    .await
                    .map_err(|e| io(e.to_string()))?;
                for (subject, payload) in msgs {
                    client
                        .publish(subject, payload.into())
                        .await
                        .map_err(|e| io(e.to_string()))?;
                }
                client
                    .publish(inbox, bytes::Bytes::new())
                    .await
                    .map_err(|e| io(e.to_string()))?;
                client.flush().await.map_err(|e| io(e.to_string()))?;
                marker
                    .next()
                    .await
                    .ok_or_else(|| io("the confirmation subscription ended".into()))?;
                let _ = marker.unsubscribe().await;
                if connects() != before {
                    return Err(io("reconnected while publishing: not confirmed".into()));
                }
                Ok(())
            })
            .await
            .map_err(|_| NatsError::Timeout(timeout))?
        })
    }

    /// Publish and flush: returns once the message left this process (or an error); see
    /// [`NatsClient::publish_confirmed`] for a publication the server confirms.
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

    /// Subscribe, and return once the server has registered the interest: messages published
    /// (by anyone) after this returns reach the subscription. A flush alone says only that the
    /// subscription left this process; a marker sent after it to an inbox of ours comes back
    /// only once the server has read everything before it on this connection.
    pub fn subscribe(&self, subject: &str) -> Result<NatsSubscription, NatsError> {
        let client = self.client.clone();
        let subject = subject.to_string();
        let timeout = self.timeout;
        let io = |e: String| NatsError::Io(e);
        let sub = self.rt.block_on(async move {
            tokio::time::timeout(timeout, async {
                let sub = client
                    .subscribe(subject)
                    .await
                    .map_err(|e| io(e.to_string()))?;
                let inbox = client.new_inbox();
                let mut marker = client
                    .subscribe(inbox.clone())
                    .await
                    .map_err(|e| io(e.to_string()))?;
                client
                    .publish(inbox, bytes::Bytes::new())
                    .await
                    .map_err(|e| io(e.to_string()))?;
                client.flush().await.map_err(|e| io(e.to_string()))?;
                marker
                    .next()
                    .await
                    .ok_or_else(|| io("the confirmation subscription ended".into()))?;
                let _ = marker.unsubscribe().await;
                Ok::<_, NatsError>(sub)
            })
            .await
            .map_err(|_| NatsError::Timeout(timeout))?
        })?;
        Ok(NatsSubscription {
            handle: self.rt.handle().clone(),
            sub,
        })
    }

    /// How many times this client has connected so far (1 after the first connection; each
    /// reconnect adds one). Subscriptions are renewed on every reconnect.
    pub fn connects(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::SeqCst)
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
