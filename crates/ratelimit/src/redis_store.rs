//! Shared store in Redis: one atomic Lua script per check, so several gateway processes enforce one limit.
//!
//! Invariants: the script is a line-by-line mirror of `gcra::gcra` (same µs integers, all below 2^53 so Lua
//! doubles are exact) and returns what it saw (stored TAT, now); the verdict is then re-derived in Rust with
//! `gcra` and cross-checked against the script's decision. All Redis I/O runs on a dedicated driver thread,
//! so the store works from any runtime, whichever runtime created it and whether or not it is still alive.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod, Script};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::gcra::{gcra, unix_micros, Quota, Verdict, CLOCK_STEP_US, MAX_TIME_US};
use crate::store::{Store, StoreError};

/// KEYS[1] = key; ARGV[1] = T (µs); ARGV[2] = τ (µs); ARGV[3] = caller's now (µs) or -1 for the server's
/// clock; ARGV[4] = CLOCK_STEP_US. Returns {allowed 0/1, stored TAT or -1, now}. Mirrors `gcra::gcra`.
const GCRA_LUA: &str = r#"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local clock_step = tonumber(ARGV[4])
if now < 0 then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
local max_tat = now + tau + t
local tat = now
if stored then
  if stored > max_tat + clock_step then
    tat = max_tat
  elseif stored > now then
    tat = stored
  end
end
local function store(v)
  redis.call('SET', KEYS[1], string.format('%.0f', v), 'PX', string.format('%.0f', math.ceil((v - now) / 1000)))
end
if tat - now > tau then
  if stored ~= tat then store(tat) end
  return {0, stored or -1, now}
end
store(tat + t)
return {1, stored or -1, now}
"#;

/// Whose clock the Redis store uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisClock {
    /// The Redis server's `TIME`: one clock for every gateway process (the default).
    #[default]
    Server,
    /// The `now` passed to [`Store::check`] (for tests with simulated time, or clock-synchronized fleets).
    /// Keys still expire on the server's clock, so a caller clock that steps back may find a key already
    /// gone (that key gets a fresh burst) where the local store would still limit it; and a reading less
    /// than a clock step behind the latest one is judged at its own time, where the local store judges it
    /// at the latest time it has seen.
    Caller,
}

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Upper bound of one check, queueing and round trip included (default 50 ms); past it the check fails
    /// with [`StoreError::Unavailable`].
    pub timeout: Duration,
    /// Upper bound of the initial connection in [`RedisStore::connect`] and of each reconnection attempt
    /// (default 1 s).
    pub connect_timeout: Duration,
    /// Prefix of every Redis key (default `palisade:rl:`).
    pub key_prefix: String,
    /// Whose clock decides (default: the server's).
    pub clock: RedisClock,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "palisade:rl:".to_owned(),
            clock: RedisClock::Server,
        }
    }
}

/// A rate-limit store shared through Redis (plain `redis://` or `unix://`; TLS is not compiled in).
///
/// Cheap to clone (all clones share one multiplexed connection). The connection is re-established in the
/// background after the server goes away; meanwhile checks fail fast with [`StoreError::Unavailable`].
/// Keys expire (`PX`) as soon as their state no longer matters.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: Arc<Script>,
    /// The driver thread's runtime, where every Redis future runs.
    driver: Handle,
    opts: RedisOptions,
    /// Dropping this (with the last clone of the store) stops the driver thread.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may carry a password.
        f.debug_struct("RedisStore").field("opts", &self.inner.opts).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `unix:///path`). Fails with [`StoreError::Unavailable`] if the server cannot be reached within
    /// `opts.connect_timeout`, and with [`StoreError::Config`] for a bad URL. Callable from any tokio
    /// runtime with the time driver enabled; the store does not depend on that runtime afterwards.
    pub async fn connect(url: &str, opts: RedisOptions) -> Result<Self, StoreError> {
        // The URL is never echoed: it may carry a password.
        let client = redis::Client::open(url).map_err(|e| {
            StoreError::Config(format!(
                "invalid Redis URL ({:?}; expected redis://host:port/db or unix:///path)",
                e.kind()
            ))
        })?;
        let (driver, stop) = spawn_driver().await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_response_timeout(Some(opts.timeout))
            // Reconnection: a couple of quick attempts per failed check, then the next check tries again.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let task = driver.spawn(ConnectionManager::new_with_config(client, config));
        let abort = task.abort_handle();
        let conn = match tokio::time::timeout(opts.connect_timeout, task).await {
            Ok(Ok(Ok(conn))) => conn,
            Ok(Ok(Err(e))) => return Err(map_redis_error(&e)),
            Ok(Err(_)) => return Err(StoreError::Unavailable("Redis connection task failed".to_owned())),
            Err(_) => {
                abort.abort();
                return Err(StoreError::Unavailable(format!(
                    "no connection to Redis within {} ms",
                    opts.connect_timeout.as_millis()
                )));
            }
        };
        Ok(Self { inner: Arc::new(Inner { conn, script: Arc::new(Script::new(GCRA_LUA)), driver, opts, _stop: stop }) })
    }
}

/// Starts the driver thread: a current-thread runtime that runs until the stop sender is dropped.
async fn spawn_driver() -> Result<(Handle, oneshot::Sender<()>), StoreError> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (handle_tx, handle_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("palisade-redis".to_owned())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => {
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    let _ = stop_rx.await;
                });
            }
            Err(e) => {
                let _ = handle_tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| StoreError::Config(format!("cannot start the Redis driver thread: {e}")))?;
    match handle_rx.await {
        Ok(Ok(handle)) => Ok((handle, stop_tx)),
        Ok(Err(e)) => Err(StoreError::Config(format!("cannot start the Redis driver runtime: {e}"))),
        Err(_) => Err(StoreError::Config("the Redis driver thread exited at start".to_owned())),
    }
}

fn map_redis_error(e: &RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
        );
    if transient {
        StoreError::Unavailable(format!("Redis: {e}"))
    } else {
        StoreError::Backend(format!("Redis: {e}"))
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn check(&self, key: &str, quota: &Quota, now: SystemTime) -> Result<Verdict, StoreError> {
        let inner = &self.inner;
        let mut full_key = String::with_capacity(inner.opts.key_prefix.len() + key.len());
        full_key.push_str(&inner.opts.key_prefix);
        full_key.push_str(key);
        let now_arg: i64 = match inner.opts.clock {
            RedisClock::Server => -1,
            RedisClock::Caller => i64::try_from(unix_micros(now)).unwrap_or(-1),
        };
        let (t, tau) = (quota.interval_us(), quota.tolerance_us());
        let mut conn = inner.conn.clone();
        let script = Arc::clone(&inner.script);
        let task = inner.driver.spawn(async move {
            script
                .key(full_key)
                .arg(t)
                .arg(tau)
                .arg(now_arg)
                .arg(CLOCK_STEP_US)
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        });
        let abort = task.abort_handle();
        let (allowed, stored, now) = match tokio::time::timeout(inner.opts.timeout, task).await {
            Ok(Ok(Ok(reply))) => reply,
            Ok(Ok(Err(e))) => return Err(map_redis_error(&e)),
            Ok(Err(_)) => return Err(StoreError::Unavailable("Redis check task failed".to_owned())),
            Err(_) => {
                abort.abort();
                return Err(StoreError::Unavailable(format!(
                    "no answer from Redis within {} ms",
                    inner.opts.timeout.as_millis()
                )));
            }
        };
        verdict_from_reply(allowed, stored, now, quota)
    }
}

/// Re-derives the verdict from what the script saw, with the reference GCRA, and checks the two agree.
fn verdict_from_reply(allowed: i64, stored: i64, now: i64, quota: &Quota) -> Result<Verdict, StoreError> {
    let now = u64::try_from(now)
        .ok()
        .filter(|&n| n < MAX_TIME_US)
        .ok_or_else(|| StoreError::Backend(format!("Redis script returned an out-of-range time {now}")))?;
    let stored = u64::try_from(stored).ok();
    let decision = gcra(stored, now, quota);
    if decision.verdict.is_allowed() != (allowed == 1) {
        return Err(StoreError::Backend("Redis script and reference GCRA disagree (script out of date?)".to_owned()));
    }
    Ok(decision.verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_rederived_and_cross_checked() {
        let quota = Quota::new(10, Duration::from_secs(1), 1).unwrap();
        let now = 1_700_000_000_000_000;
        assert_eq!(
            verdict_from_reply(1, -1, now, &quota),
            Ok(Verdict::Allowed { remaining: 1, reset: Duration::from_millis(100) })
        );
        assert_eq!(
            verdict_from_reply(0, now + 200_000, now, &quota),
            Ok(Verdict::Limited { retry_after: Duration::from_millis(100), reset: Duration::from_millis(200) })
        );
        assert!(matches!(verdict_from_reply(0, -1, now, &quota), Err(StoreError::Backend(_))));
        assert!(matches!(verdict_from_reply(1, -1, -5, &quota), Err(StoreError::Backend(_))));
        assert!(matches!(verdict_from_reply(1, -1, 1 << 60, &quota), Err(StoreError::Backend(_))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_url_is_a_config_error_without_the_url() {
        let err = RedisStore::connect("http://user:hunter2@host/", RedisOptions::default()).await.unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn nothing_listening_is_unavailable_quickly() {
        // Port 1 on loopback: nothing listens there (connection refused).
        let started = std::time::Instant::now();
        let opts = RedisOptions { connect_timeout: Duration::from_millis(300), ..RedisOptions::default() };
        let err = RedisStore::connect("redis://127.0.0.1:1/", opts).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
    }
}
