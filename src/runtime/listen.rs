//! The HTTP/1 connection layer of `runtime serve`, under the axum [`Router`].
//!
//! axum::serve has neither a header-read timeout nor a connection cap: 629 connections that
//! never finished their headers used up a 512-descriptor limit, and /health and runs timed out
//! until the clients gave up. Here each connection is served by hyper's HTTP/1 builder with a
//! timer, so one that does not send its request headers within `header_timeout` is closed,
//! and at most `max_connections` are open at once. A new connection beyond the cap closes the
//! oldest connection that is not in a request (a slow client, or an idle keep-alive one) to
//! make room, rather than waiting behind them: the newest client is the one most likely to
//! be a real request.

use crate::error::Chain;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Descriptors kept free of connections: the server's own (runtime, logs, listener) and
/// those of each run (code memfd, three pipes, the uid lock, pidfd...).
fn reserved_fds(max_workers: usize) -> u64 {
    64 + 16 * max_workers as u64
}

/// Raise the soft RLIMIT_NOFILE to the hard one (connections are descriptors; runs set their
/// own limit) and return the connection cap that fits under it, with a warning when
/// `wanted` had to be lowered.
pub fn fit_connections(wanted: usize, max_workers: usize) -> (usize, Option<String>) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => return (wanted, None),
    };
    let fit = usize::try_from(soft.saturating_sub(reserved_fds(max_workers)))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > fit {
        let why = format!(
            "limits.connections {wanted} does not fit the descriptor limit {soft} (with {} kept for the server and {max_workers} workers); using {fit}",
            reserved_fds(max_workers)
        );
        (fit, Some(why))
    } else {
        (wanted, None)
    }
}

pub struct Options {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Slot {
    /// Requests of this connection inside the router now.
    busy: AtomicUsize,
    /// Whether a request ever reached the router (its headers were complete).
    served: AtomicBool,
    /// Asked to close already (eviction or shutdown).
    closing: AtomicBool,
    close: Notify,
}

impl Slot {
    fn ask_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // notify_one keeps the wake-up for a task not yet waiting.
        self.close.notify_one();
    }
}

/// Marks a request inside the router for its lifetime.
struct Busy(Arc<Slot>);

impl Busy {
    fn enter(slot: &Arc<Slot>) -> Busy {
        slot.served.store(true, Ordering::SeqCst);
        slot.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Open connections by age (ids only grow).
#[derive(Default)]
struct Registry {
    next: u64,
    slots: BTreeMap<u64, Arc<Slot>>,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ask the oldest connection that is not in a request to close; false when every one is.
fn evict_oldest_idle(reg: &Shared) -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let r = lock(reg);
    let Some(slot) = r
        .slots
        .values()
        .find(|s| s.busy.load(Ordering::SeqCst) == 0 && !s.closing.load(Ordering::SeqCst))
    else {
        return false;
    };
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            open = r.slots.len(),
            "connection limit reached: closing the oldest connections that are not in a request to make room (logged once)"
        );
    }
    slot.ask_close();
    true
}

/// Close a connection whose exchange is over: FIN first, then read and discard what the client
/// still sends, for a short while. Closing a socket with unread data sends a reset, which
/// can destroy the response before the client reads it: a 401 or 413 answered without
/// reading the body would reach a client still sending that body as "broken pipe".
async fn linger(mut io: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if io.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 << 10];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// How long [`linger`] waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(2);

/// What [`serve`] leaves when asked to stop: the connections still finishing.
pub struct Draining {
    conns: Arc<Semaphore>,
    cap: usize,
}

impl Draining {
    /// Resolves once every connection is closed.
    pub async fn closed(&self) {
        let n = u32::try_from(self.cap).unwrap_or(u32::MAX);
        let _ = self.conns.acquire_many(n).await;
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting and ask every
/// connection to close after its current response (one with no request yet closes at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Draining {
    let cap = opts.max_connections.max(1);
    let conns = Arc::new(Semaphore::new(cap));
    let reg: Shared = Arc::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    tokio::pin!(shutdown);
    'accept: loop {
        let stream = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (the cap keeps us under the limit, but runs use some
                    // too) or a connection reset before accept: transient, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = loop {
            if let Ok(p) = Arc::clone(&conns).try_acquire_owned() {
                break p;
            }
            // At the cap: make room. When every connection is in a request, wait for one
            // to end (or to finish its request, which makes it evictable: hence the retry).
            evict_oldest_idle(&reg);
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'accept,
                p = Arc::clone(&conns).acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => break 'accept,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        };
        let slot = Arc::new(Slot::default());
        let id = {
            let mut r = lock(&reg);
            let id = r.next;
            r.next += 1;
            r.slots.insert(id, Arc::clone(&slot));
            id
        };
        let inner = TowerToHyperService::new(app.clone());
        let svc_slot = Arc::clone(&slot);
        let svc = hyper::service::service_fn(move |req| {
            let busy = Busy::enter(&svc_slot);
            let fut = hyper::service::Service::call(&inner, req);
            // Boxed, so the connection is Unpin and can be taken apart for `linger`.
            Box::pin(async move {
                let r = fut.await;
                drop(busy);
                r
            })
        });
        let conn_reg = Arc::clone(&reg);
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut closing = false;
            let done = loop {
                tokio::select! {
                    r = std::future::poll_fn(|cx| std::pin::Pin::new(&mut conn).poll_without_shutdown(cx)) => {
                        match r {
                            Ok(()) => break true,
                            Err(e) => {
                                tracing::debug!(error = %Chain(&e), "connection ended with an error");
                                break false;
                            }
                        }
                    }
                    _ = slot.close.notified(), if !closing => {
                        // Nothing of a request has reached the router: drop it now. Otherwise
                        // let hyper finish the response it is writing, then close.
                        if !slot.served.load(Ordering::SeqCst) && slot.busy.load(Ordering::SeqCst) == 0 {
                            break false;
                        }
                        std::pin::Pin::new(&mut conn).graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if done {
                linger(conn.into_parts().io.into_inner()).await;
            }
            lock(&conn_reg).slots.remove(&id);
        });
    }
    drop(listener);
    for slot in lock(&reg).slots.values() {
        slot.ask_close();
    }
    Draining { conns, cap }
}
