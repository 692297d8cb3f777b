//! The cluster's etcd members: started as one cluster, stopped, started
//! again, cut off, and asked (through etcd's JSON gateway, from inside a
//! member's namespace) who leads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::daemon::{Daemon, Stop};
use super::{http, wait_for, Cluster, ETCD_CLIENT_PORT};

impl Cluster {
    pub(super) fn start_etcd_cluster(&mut self) {
        let prefix = self.prefix().to_string();
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.ip))
            .collect();
        let initial = initial.join(",");
        for m in self.members.clone() {
            let client = format!("http://{}:{ETCD_CLIENT_PORT}", m.ip);
            let peer = format!("http://{}:2380", m.ip);
            let data = self.dir.join("etcd").join(&m.name);
            let args: Vec<String> = [
                "--name",
                &m.name,
                "--data-dir",
                &data.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &prefix,
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let log = self.dir.join(format!("{}.log", m.name));
            let mut d = Daemon::new(&m.name, Path::new("etcd"), args, Vec::new(), log);
            d.start();
            self.etcd.push(d);
        }
    }

    /// Cuts etcd member `j` off the underlay.
    pub fn cut_etcd(&mut self, j: usize) {
        let name = self.members[j].name.clone();
        self.set_port(&name, false);
    }

    /// Puts etcd member `j` back on the underlay.
    pub fn heal_etcd(&mut self, j: usize) {
        let name = self.members[j].name.clone();
        self.set_port(&name, true);
    }

    /// Stops etcd member `j`.
    pub fn stop_etcd(&mut self, j: usize, how: Stop) {
        self.etcd[j].stop(how, Duration::from_secs(10));
    }

    /// Starts etcd member `j` again (same name and data; it rejoins).
    pub fn start_etcd(&mut self, j: usize) {
        self.etcd[j].start();
    }

    /// Whether etcd member `j`'s process runs.
    pub fn etcd_running(&mut self, j: usize) -> bool {
        self.etcd[j].running()
    }

    /// Member `j`'s answer to etcd's `Maintenance/Status` (JSON gateway,
    /// asked from inside its namespace), or `None` if it does not answer.
    pub fn etcd_status(&self, j: usize) -> Option<Value> {
        self.etcd[j].pid()?;
        let m = &self.members[j];
        let to = SocketAddr::new(m.ip.into(), ETCD_CLIENT_PORT);
        let a = http::request_in(&m.name, to, "POST", "/v3/maintenance/status", "{}").ok()?;
        (a.status == 200)
            .then(|| serde_json::from_str(&a.body).ok())
            .flatten()
    }

    /// The member that is leader, by its own and the answering members'
    /// account; `None` while there is none (an election, no quorum).
    pub fn etcd_leader(&self) -> Option<usize> {
        let said: Vec<(usize, String, String)> = (0..self.members.len())
            .filter_map(|j| {
                let s = self.etcd_status(j)?;
                let me = s["header"]["member_id"].as_str()?.to_string();
                let leader = s["leader"].as_str()?.to_string();
                Some((j, me, leader))
            })
            .collect();
        let (j, id, _) = said.iter().find(|(_, me, leader)| me == leader)?;
        // Every answering member agrees.
        said.iter().all(|(_, _, l)| l == id).then_some(*j)
    }

    /// Waits for a leader; returns it and how long it took.
    pub fn wait_etcd_leader(&self, limit: Duration) -> (usize, Duration) {
        let mut leader = None;
        let took = wait_for("an etcd leader", limit, || {
            leader = self.etcd_leader();
            leader.is_some()
        });
        (leader.expect("a leader"), took)
    }

    /// Makes member `j` the leader (etcd's `MoveLeader`, asked of the
    /// current leader) and waits until it is.
    pub fn move_etcd_leader(&self, j: usize, limit: Duration) {
        let target = self
            .etcd_status(j)
            .and_then(|s| s["header"]["member_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("etcd member {j} does not answer"));
        let (leader, _) = self.wait_etcd_leader(limit);
        if leader != j {
            let m = &self.members[leader];
            let to = SocketAddr::new(m.ip.into(), ETCD_CLIENT_PORT);
            let body = format!("{{\"targetID\":\"{target}\"}}");
            let a = http::request_in(
                &m.name,
                to,
                "POST",
                "/v3/maintenance/transfer-leadership",
                &body,
            )
            .unwrap_or_else(|e| panic!("move the etcd leader: {e}"));
            assert_eq!(a.status, 200, "move the etcd leader: {}", a.body);
        }
        wait_for("the etcd leader to move", limit, || {
            self.etcd_leader() == Some(j)
        });
    }

    /// Waits until every member whose process runs answers and all agree
    /// on a leader; returns the leader and how long it took.
    pub fn wait_etcd_ready(&mut self, limit: Duration) -> (usize, Duration) {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|j| self.etcd[*j].running())
            .collect();
        let mut leader = None;
        let took = wait_for("every running etcd member and a leader", limit, || {
            leader = self.etcd_leader();
            leader.is_some() && running.iter().all(|j| self.etcd_status(*j).is_some())
        });
        (leader.expect("a leader"), took)
    }
}
