//! The control plane's life (see [`super`]): the store opened (retrying
//! while etcd is away), the agent, the recorded tasks, the scheduler and
//! the API started; then, once this agent has reconciled, its predecessor
//! released and the handover socket bound; and the wait for a signal or a
//! successor, after which the API and the loops stop.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::api::{Api, ApiSockets};
use super::hand_over::HandOver;
use super::{AgentArgs, API_GRACE};
use crate::agent::Agent;
use crate::api::server::{router, ApiState};
use crate::handover::{self, Inherited, Listening, Predecessor, Successor};
use crate::model::Node;
use crate::node::{DataPlane, Plane};
use crate::scheduler::Scheduler;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::{parse_url, EtcdStore};
use crate::store::Store;
use crate::tasks::{containers_of, Tasks};
use crate::translate::Local;

/// The store; for the embedded one also a weak handle, to check that it
/// is gone (saved) before a successor opens it.
type Opened = (Arc<dyn Store>, Option<Weak<EmbeddedStore>>);

async fn open_store(a: &AgentArgs, stop: &mut watch::Receiver<bool>) -> Option<Opened> {
    if a.store == "embedded" {
        return match EmbeddedStore::open(&a.state_dir.join("store")) {
            Ok(s) => {
                let weak = Arc::downgrade(&s);
                Some((s, Some(weak)))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the embedded store");
                None
            }
        };
    }
    let endpoints = parse_url(&a.store).ok()?;
    let mut backoff = Duration::from_millis(200);
    loop {
        match EtcdStore::connect(&endpoints, "/shoal/", Duration::from_secs(2)).await {
            Ok(s) => {
                tracing::info!(store = %a.store, "connected to etcd");
                return Some((Arc::new(s), None));
            }
            Err(e) => {
                tracing::warn!(store = %a.store, error = %e, retry_in = ?backoff, "etcd unreachable; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How [`run`] ended.
pub(super) enum Ended {
    /// Stopped by a failure: the exit code.
    Stopped(i32),
    /// Stopped by a signal; the control plane has stopped and the data
    /// plane is to drain.
    Signalled(DataPlane),
    /// A new agent asked to take over; the control plane has stopped.
    HandOver(Box<HandOver>),
}

/// Once this agent has reconciled, listens for its own successor and
/// tells the agent it took over from (if any) that it serves now. The new
/// `handover.sock` is bound first, so the path always leads to a live
/// agent: one that finds nobody answering takes the file for stale.
async fn release_then_listen(
    predecessor: Option<Predecessor>,
    mut reconciled: watch::Receiver<i64>,
    path: PathBuf,
    data: tokio::runtime::Handle,
) -> Option<Listening> {
    // Until this agent has reconciled once, the old one serves alone.
    if predecessor.is_some() && reconciled.changed().await.is_err() {
        // The agent stopped before it ever reconciled.
        return std::future::pending().await;
    }
    let listening = match handover::listen(&path, &data) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot listen for a successor; this agent cannot hand over");
            None
        }
    };
    if let Some(p) = predecessor {
        let pid = p.pid();
        match p.taken().await {
            Ok(()) => tracing::info!(
                pid,
                "took over from the previous agent; it drains and exits"
            ),
            Err(e) => {
                tracing::warn!(pid, error = %e, "could not tell the previous agent that this one serves")
            }
        }
    }
    listening
}

/// The next successor, once listening.
async fn next_successor(listening: &mut Option<Listening>) -> Successor {
    match listening {
        Some(l) => match l.next().await {
            Some(s) => s,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Runs the control plane until a signal, a failure or a successor.
pub(super) async fn run(
    a: &AgentArgs,
    socket: PathBuf,
    token: Option<String>,
    data: tokio::runtime::Handle,
    predecessor: Option<(Predecessor, Inherited)>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let (predecessor, inherited) = match predecessor {
        Some((p, i)) => (Some(p), Arc::new(i)),
        None => (None, Arc::new(Inherited::default())),
    };
    // The control plane's own stop: a signal, or a successor.
    let (halt, halted) = watch::channel(false);
    let Some((store, memory)) = open_store(a, &mut stop.clone()).await else {
        return Ended::Stopped(1);
    };
    match crate::ops::schema::ensure(store.as_ref()).await {
        Ok(_) => {}
        Err(crate::ops::OpError::Unavailable(e)) => {
            tracing::warn!(error = %e, "cannot read the store's schema mark now; going on")
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot use this store");
            return Ended::Stopped(1);
        }
    }
    if memory.is_some() {
        // Nothing else writes the embedded store before the API serves.
        match crate::ops::gc::collect_garbage(store.as_ref()).await {
            Ok(removed) => {
                for what in removed {
                    tracing::warn!(claim = %what, "removed a claim nothing owns (an operation a crash cut short)");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for claims a crash left"),
        }
    }
    let recorded = Tasks::load(&a.state_dir);
    let local = Local {
        node: a.node_name.clone(),
        netns: a.netns.clone(),
        underlay: a.advertise,
        containers: containers_of(&recorded.tasks),
    };
    let node = Node {
        name: a.node_name.clone(),
        advertise: a.advertise,
        lb_addresses: Default::default(),
    };
    let api_sockets = match ApiSockets::claim(a, &socket, &inherited) {
        Ok(s) => s,
        Err(code) => return Ended::Stopped(code),
    };
    let plane = Plane {
        runtime: Some(data.clone()),
        inherited: Arc::clone(&inherited),
    };
    let agent = Agent::start_with(Arc::clone(&store), node, local, a.lease_ttl, plane);
    let data_plane = agent.data_plane.clone();
    let tasks = Tasks::new(
        Arc::clone(&store),
        Arc::clone(&agent.owned),
        Arc::clone(&agent.containers),
        agent.reconciled.clone(),
        &a.state_dir,
    );
    {
        let tasks = tasks.clone();
        tokio::spawn(async move { tasks.restore(recorded).await });
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("netd"));
    let scheduler = Scheduler::new(
        Arc::clone(&store),
        Arc::clone(&agent.owned),
        tasks.clone(),
        exe,
        a.state_dir.join("logs"),
    );
    tokio::spawn(scheduler.run(agent.applied.clone(), halted.clone()));

    let metrics = {
        let lb = Arc::clone(&agent.lb);
        let stats = Arc::clone(&agent.stats);
        let applied = agent.reconciled.clone();
        let tasks = tasks.clone();
        Arc::new(move || {
            let mut out = stats.render(*applied.borrow());
            let mut gauge =
                shoal_lb::metrics::Family::new("netd_tasks", "gauge", "Tasks on this node.");
            gauge.add("", tasks.list().len());
            gauge.write_to(&mut out);
            if let Some(rt) = lb.get() {
                out.push_str(&shoal_lb::metrics::render(&rt.listeners()));
            }
            out
        })
    };
    let state = ApiState {
        store: Arc::clone(&store),
        tasks,
        node: a.node_name.clone(),
        metrics,
        applied: agent.reconciled.clone(),
    };
    let app = router(state);
    let api = match api_sockets.serve(app, token, &halted) {
        Ok(api) => api,
        Err(e) => {
            tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
            agent.stop().await;
            return Ended::Stopped(1);
        }
    };
    let Api {
        file: api_file,
        lent,
        mut servers,
    } = api;
    tracing::info!(node = %a.node_name, api = %socket.display(), store = %a.store, "agent running");

    let mut listening: Option<Listening> = None;
    let ready = release_then_listen(
        predecessor,
        agent.reconciled.clone(),
        a.state_dir.join(handover::SOCKET),
        data,
    );
    tokio::pin!(ready);
    let mut ready_done = false;
    let mut code = 0;
    let successor = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("stopping; the data plane and the tasks stay");
                break None;
            }
            l = &mut ready, if !ready_done => {
                ready_done = true;
                listening = l;
            }
            s = next_successor(&mut listening) => break Some(s),
            Some(r) = servers.join_next() => {
                let e = match r {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
                code = 1;
                break None;
            }
        }
    };
    // The API stops accepting (new connections wait in the queue) and the
    // scheduler stops; requests in hand may finish.
    let _ = halt.send(true);
    let finished = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(API_GRACE, finished).await.is_err() {
        tracing::warn!(grace = ?API_GRACE, "API requests still open; closing them");
        servers.abort_all();
    }
    agent.stop().await;
    match (successor, listening) {
        (Some(successor), Some(listening)) => Ended::HandOver(Box::new(HandOver {
            successor,
            listening,
            data_plane,
            api: lent,
            memory,
        })),
        (_, listening) => {
            api_file.remove_if_ours();
            if let Some(l) = &listening {
                l.file().remove_if_ours();
            }
            if code == 0 {
                Ended::Signalled(data_plane)
            } else {
                Ended::Stopped(code)
            }
        }
    }
}
