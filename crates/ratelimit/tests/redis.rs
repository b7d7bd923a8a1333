//! RedisStore against a real `redis-server` started per test on a free loopback port (no persistence, in a
//! temporary directory). These tests FAIL when `redis-server` is not installed: a silently skipped shared
//! store test would hide a broken limiter.

// The server harness below is test code outside `#[test]` fns: a panic there is a test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_ratelimit::{LocalStore, Quota, RedisClock, RedisOptions, RedisStore, Store, StoreError, Verdict};

struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("palisade-ratelimit-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self { child: None, port, dir };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `redis-server` ({e}): the Redis store tests need a real server on PATH \
                     (Debian: apt-get install -y redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on port {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn opts(timeout_ms: u64, clock: RedisClock) -> RedisOptions {
    RedisOptions { timeout: Duration::from_millis(timeout_ms), clock, ..RedisOptions::default() }
}

/// Two stores (two gateway processes) on one server enforce one limit, on the server's clock.
#[tokio::test(flavor = "current_thread")]
async fn two_stores_share_one_limit() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), opts(1000, RedisClock::Server)).await.unwrap();
    let b = RedisStore::connect(&server.url(), opts(1000, RedisClock::Server)).await.unwrap();
    let quota = Quota::new(10, Duration::from_secs(3600), 9).unwrap();
    let mut remaining = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { &a } else { &b };
        match store.check("client-1", &quota, SystemTime::UNIX_EPOCH).await.unwrap() {
            Verdict::Allowed { remaining: r, reset } => {
                remaining.push(r);
                // reset = (i + 1) intervals of 360 s, minus the few ms elapsed since the first request.
                let full = Duration::from_secs(360 * (i + 1));
                assert!(reset <= full && reset > full - Duration::from_secs(5), "{reset:?}");
            }
            Verdict::Limited { retry_after, reset } => {
                assert!(i >= 10, "limited at request {i}");
                assert!(retry_after <= Duration::from_secs(360) && retry_after > Duration::from_secs(355));
                assert!(reset <= Duration::from_secs(3600) && reset > Duration::from_secs(3595));
            }
        }
    }
    assert_eq!(remaining, vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    // Another key is independent, and the caller's `now` is ignored on the server clock.
    assert_eq!(
        a.check("client-2", &quota, SystemTime::UNIX_EPOCH).await.unwrap(),
        Verdict::Allowed { remaining: 9, reset: Duration::from_secs(360) }
    );
}

/// Same pseudo-random sequence (keys, time steps, clock steps back) on the Redis and the local store, with
/// simulated time: identical verdicts, value for value.
#[tokio::test(flavor = "current_thread")]
async fn redis_and_local_stores_agree_exactly() {
    let server = RedisServer::start();
    let redis = RedisStore::connect(&server.url(), opts(1000, RedisClock::Caller)).await.unwrap();
    let local = LocalStore::new(1000);
    let quotas = [
        Quota::new(10, Duration::from_secs(1), 3).unwrap(),
        Quota::new(3, Duration::from_secs(1), 0).unwrap(),
        Quota::new(7, Duration::from_millis(100), 20).unwrap(),
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let mut now_us: u64 = 1_700_000_000_000_000;
    let (mut allowed, mut limited) = (0, 0);
    for step in 0..600 {
        let r = next();
        // Forward steps only here: keys expire in Redis on the server's clock (PX), so a caller clock that
        // jumps back would find keys that the local store still has (see the clock-step test below).
        now_us = match r % 50 {
            0 => now_us + 5_000_000, // idle: keys expire
            _ => now_us + 1_000 + (r % 97) * 200,
        };
        let quota = &quotas[(r / 7 % 3) as usize];
        let key = format!("q{}-k{}", r / 7 % 3, r / 31 % 2);
        let now = UNIX_EPOCH + Duration::from_micros(now_us);
        let expected = local.check(&key, quota, now).await.unwrap();
        let got = redis.check(&key, quota, now).await.unwrap();
        assert_eq!(got, expected, "step {step}, key {key}");
        if got.is_allowed() {
            allowed += 1;
        } else {
            limited += 1;
        }
    }
    // The sequence exercises both outcomes substantially.
    assert!(allowed > 100 && limited > 100, "allowed {allowed}, limited {limited}");
}

/// The caller's clock steps back: more than 1 s is clamped in both stores alike (a long quota, so that
/// no key expires in Redis's real time meanwhile). Less than 1 s behind is a stale reading: Redis (with
/// the caller's clock) judges it at its own time, the local store at the latest time it has seen.
#[tokio::test(flavor = "current_thread")]
async fn clock_steps_back_identically() {
    let server = RedisServer::start();
    let redis = RedisStore::connect(&server.url(), opts(1000, RedisClock::Caller)).await.unwrap();
    let local = LocalStore::new(100);
    let quota = Quota::new(1, Duration::from_secs(3600), 2).unwrap();
    let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let steps_ms: [i64; 9] = [0, 0, 0, -500, -2_000_000, -2_000_000, 3_599_000, 3_600_000, 3_600_000];
    let mut expected = Vec::new();
    for (i, offset) in steps_ms.iter().enumerate() {
        let now = if *offset >= 0 {
            base + Duration::from_millis(offset.unsigned_abs())
        } else {
            base - Duration::from_millis(offset.unsigned_abs())
        };
        let want = redis.check("k", &quota, now).await.unwrap();
        let got = local.check("k", &quota, now).await.unwrap();
        if i == 3 {
            // Judged at base (the latest reading): 3 h ahead, 1 h over τ.
            assert_eq!(
                got,
                Verdict::Limited { retry_after: Duration::from_secs(3600), reset: 3 * Duration::from_secs(3600) }
            );
        } else {
            assert_eq!(got, want, "step {i}");
        }
        expected.push(want);
    }
    let h = Duration::from_secs(3600);
    assert_eq!(
        expected,
        vec![
            Verdict::Allowed { remaining: 2, reset: h },
            Verdict::Allowed { remaining: 1, reset: 2 * h },
            Verdict::Allowed { remaining: 0, reset: 3 * h },
            // 0.5 s behind: judged at its own time by Redis with the caller's clock.
            Verdict::Limited { retry_after: h + Duration::from_millis(500), reset: 3 * h + Duration::from_millis(500) },
            // 2000 s behind: clamped to now + τ + T (and stored), so it costs one interval.
            Verdict::Limited { retry_after: h, reset: 3 * h },
            Verdict::Limited { retry_after: h, reset: 3 * h },
            // TAT is now base - 2000 s + 3 h: at base + 3599 s, 5201 s ahead <= τ (2 h).
            Verdict::Allowed { remaining: 0, reset: Duration::from_secs(8801) },
            Verdict::Limited { retry_after: Duration::from_secs(1600), reset: Duration::from_secs(8800) },
            Verdict::Limited { retry_after: Duration::from_secs(1600), reset: Duration::from_secs(8800) },
        ]
    );
}

/// A key whose state no longer matters is gone from Redis (PX), and the prefix is applied.
#[tokio::test(flavor = "current_thread")]
async fn keys_expire_and_carry_the_prefix() {
    let server = RedisServer::start();
    let options = RedisOptions { key_prefix: "test:".to_owned(), ..opts(1000, RedisClock::Server) };
    let store = RedisStore::connect(&server.url(), options).await.unwrap();
    let quota = Quota::new(10, Duration::from_secs(1), 1).unwrap();
    store.check("k", &quota, SystemTime::now()).await.unwrap();
    store.check("k", &quota, SystemTime::now()).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg("test:k").query_async(&mut conn).await.unwrap();
    assert!((150..=200).contains(&ttl), "PTTL {ttl}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let exists: i64 = redis::cmd("EXISTS").arg("test:k").query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0);
}

/// The server dies: checks fail with Unavailable within the timeout (no hang); it comes back on the same
/// port: the store reconnects by itself.
#[tokio::test(flavor = "current_thread")]
async fn lost_server_is_unavailable_fast_and_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let store = RedisStore::connect(&server.url(), opts(100, RedisClock::Server)).await.unwrap();
    let quota = Quota::new(1000, Duration::from_secs(1), 10).unwrap();
    assert!(store.check("k", &quota, SystemTime::now()).await.unwrap().is_allowed());

    server.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let result = store.check("k", &quota, SystemTime::now()).await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert!(elapsed < timeout + Duration::from_millis(100), "took {elapsed:?}");
    }

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let verdict = loop {
        match store.check("k", &quota, SystemTime::now()).await {
            Ok(verdict) => break verdict,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    };
    // The restarted server has no state (no persistence): full burst again.
    assert_eq!(verdict, Verdict::Allowed { remaining: 10, reset: Duration::from_millis(1) });
}

/// The store is created on a runtime that is then dropped, and used from two other single-threaded
/// runtimes on two threads at once (like gateway workers): it works, and the shared count is exact.
#[test]
fn usable_from_other_runtimes_after_the_creating_one_is_gone() {
    let server = RedisServer::start();
    let url = server.url();
    let store = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(RedisStore::connect(&url, opts(1000, RedisClock::Server))).unwrap()
    })
    .join()
    .unwrap();
    let store = Arc::new(store);
    let quota = Quota::new(1, Duration::from_secs(3600), 49).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let mut allowed = 0;
                    for _ in 0..100 {
                        if store.check("shared", &quota, SystemTime::now()).await.unwrap().is_allowed() {
                            allowed += 1;
                        }
                    }
                    allowed
                })
            })
        })
        .collect();
    let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 50);
}
