//! Tests of the answer cache: TTLs, refresh, last good answer, SRV weights.

use std::net::IpAddr;
use std::sync::Mutex;

use super::*;
use crate::resolve::{Resolution, Resolving};

#[test]
fn srv_weights_become_shares() {
    assert_eq!(weight_shares(&[1, 3]), [1, 3]);
    assert_eq!(weight_shares(&[10, 30]), [1, 3], "reduced by their divisor");
    assert_eq!(weight_shares(&[0, 0]), [1, 1], "all zero: equal");
    assert_eq!(weight_shares(&[0, 5]), [0, 1], "zero among weighted: none");
    let big = weight_shares(&[1, 65535]);
    assert!(big.iter().sum::<usize>() <= 101 && big[0] == 1, "{big:?}");
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let copies = vec![
        a("1.1.1.1:1"),
        a("1.1.1.1:1"),
        a("1.1.1.1:1"),
        a("2.2.2.2:2"),
    ];
    assert_eq!(
        interleave_copies(copies),
        [
            a("1.1.1.1:1"),
            a("2.2.2.2:2"),
            a("1.1.1.1:1"),
            a("1.1.1.1:1")
        ]
    );
}

/// Answers from a script; an empty script entry is a failure.
struct Scripted(Mutex<Vec<Option<IpAddr>>>);

impl Resolve for Scripted {
    fn resolve(&self, _name: &str) -> Resolving {
        let mut script = self.0.lock().unwrap();
        let next = if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        };
        Box::pin(async move {
            next.map(|ip| Resolution::new(vec![ip], None))
                .ok_or_else(|| std::io::Error::other("scripted failure"))
        })
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

#[test]
fn ttl_is_clamped() {
    let p = CachePolicy::default();
    let now = std::time::Instant::now();
    assert_eq!(p.next_refresh(None), Duration::from_secs(30));
    assert_eq!(p.next_refresh(Some(now)), Duration::from_secs(1));
    let far = now + Duration::from_secs(86_400);
    assert_eq!(p.next_refresh(Some(far)), Duration::from_secs(300));
    let mut fixed = p;
    fixed.refresh = Some(Duration::from_secs(7));
    assert_eq!(fixed.next_refresh(Some(far)), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn refreshes_and_keeps_last_good_answer() {
    let script = Scripted(Mutex::new(vec![Some(ip(1)), Some(ip(2)), None]));
    let stats = Arc::new(Stats::default());
    let cache = Arc::new(ResolveCache::new(
        Target::new(Host::Name("svc".into()), 80),
        Arc::new(script),
        CachePolicy::default(),
        stats.clone(),
    ));
    let first = cache.addrs().await.unwrap();
    assert_eq!(&*first, &[SocketAddr::new(ip(1), 80)]);

    let cancel = CancellationToken::new();
    let task = tokio::spawn(cache.clone().run(cancel.clone()));
    // The refresher's first lookup answers 10.0.0.2, then every lookup fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        &*cache.addrs().await.unwrap(),
        &[SocketAddr::new(ip(2), 80)]
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        &*cache.addrs().await.unwrap(),
        &[SocketAddr::new(ip(2), 80)]
    );
    assert!(stats.snapshot().resolve_failures >= 2);
    assert_eq!(stats.snapshot().resolve_refreshes, 2);
    cancel.cancel();
    task.await.unwrap();
}

/// Answers `answer` (or fails, when `None`) after `takes`, recording when each lookup
/// started.
struct Slow {
    takes: Duration,
    answer: Option<IpAddr>,
    started: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Slow {
    fn new(takes: Duration, answer: Option<IpAddr>) -> Self {
        Slow {
            takes,
            answer,
            started: Arc::default(),
        }
    }
}

impl Resolve for Slow {
    fn resolve(&self, _name: &str) -> Resolving {
        self.started
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let (takes, answer) = (self.takes, self.answer);
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            answer
                .map(|ip| Resolution::new(vec![ip], None))
                .ok_or_else(|| std::io::Error::other("timed out"))
        })
    }
}

/// A cache of `svc:80` over `resolver`.
fn svc_cache(resolver: impl Resolve) -> Arc<ResolveCache> {
    Arc::new(ResolveCache::new(
        Target::new(Host::Name("svc".into()), 80),
        Arc::new(resolver),
        CachePolicy::default(),
        Arc::new(Stats::default()),
    ))
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_from_the_end_of_the_failed_lookup() {
    let resolver = Slow::new(Duration::from_secs(15), None);
    let started = resolver.started.clone();
    let cache = svc_cache(resolver);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(cache.run(cancel.clone()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    cancel.cancel();
    task.await.unwrap();
    let started = started.lock().unwrap();
    // Lookups of 15 s, then waits of 1 s, 2 s, 4 s: starts at 0, 16, 33 and 52 s.
    let gaps: Vec<u64> = started
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(gaps, [16, 17, 19], "{started:?}");
}

#[tokio::test(start_paused = true)]
async fn first_lookup_failure_is_a_resolve_error() {
    let cache = svc_cache(Scripted(Mutex::new(vec![None])));
    let e = cache.addrs().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Resolve);
    assert_eq!(e.side(), Side::Upstream);
}

#[tokio::test]
async fn ip_literals_skip_the_resolver() {
    let cache = Arc::new(ResolveCache::new(
        "127.0.0.1:9".parse().unwrap(),
        Arc::new(Scripted(Mutex::new(vec![None]))),
        CachePolicy::default(),
        Arc::new(Stats::default()),
    ));
    assert_eq!(
        &*cache.addrs().await.unwrap(),
        &["127.0.0.1:9".parse().unwrap()]
    );
}

#[tokio::test(start_paused = true)]
async fn one_lookup_in_flight_however_many_wait_or_give_up() {
    let resolver = Slow::new(Duration::from_secs(10), Some(ip(1)));
    let started = resolver.started.clone();
    let lookups = || started.lock().unwrap().len();
    let cache = svc_cache(resolver);
    // 150 connections arriving 50 ms apart, each giving up after 200 ms.
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..150 {
        let cache = cache.clone();
        waiters.spawn(async move {
            cache
                .addrs_by(Instant::now() + Duration::from_millis(200))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut timed_out = 0;
    while let Some(r) = waiters.join_next().await {
        match r.unwrap() {
            Err(e) if e.is_timeout() => timed_out += 1,
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
    }
    assert_eq!(timed_out, 150, "every waiter gave up at its deadline");
    // 7.5 s of arrivals: at most the lookup of the first 10 s.
    assert_eq!(lookups(), 1, "lookups started");
    // The one lookup's answer serves whoever asks once it is in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        &*cache.addrs().await.unwrap(),
        &[SocketAddr::new(ip(1), 80)]
    );
    assert_eq!(lookups(), 1);
    // A refresher joins the lookup in flight rather than starting its own.
    let resolver = Slow::new(Duration::from_secs(10), Some(ip(1)));
    let second = resolver.started.clone();
    let empty = svc_cache(resolver);
    let waiter = {
        let empty = empty.clone();
        tokio::spawn(async move { empty.addrs().await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let cancel = CancellationToken::new();
    let refresher = tokio::spawn(empty.clone().run(cancel.clone()));
    assert_eq!(
        &*waiter.await.unwrap().unwrap(),
        &[SocketAddr::new(ip(1), 80)]
    );
    assert_eq!(
        second.lock().unwrap().len(),
        1,
        "one lookup for the second cache"
    );
    cancel.cancel();
    refresher.await.unwrap();
    // Dropping a cache abandons its lookup: nothing keeps the cache alive.
    let weak = Arc::downgrade(&empty);
    drop(empty);
    assert!(weak.upgrade().is_none());
}
