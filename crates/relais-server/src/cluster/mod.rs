//! Cluster mode: relais nodes sharing rooms through a NATS server
//! (ARCHITECTURE.md, "Cluster").
//!
//! - **Name claims** are keys of a JetStream key-value bucket
//!   ([`wire::NAMES_BUCKET`], in memory), created only if absent: exactly
//!   one of any number of concurrent claims wins. A claim names the node
//!   that holds it; a claim of a node that is gone (unheard for
//!   [`DEAD_AFTER`]) is taken over by compare-and-set.
//! - **Room events** (`JOINED`, `LEFT`, messages) of a node go, in order and
//!   numbered, to the room's subject; a node subscribes to a room's subject
//!   only while it has members there, so a message crosses NATS once to the
//!   server and once to each node with members in the room. Each node
//!   applies the others' streams to its [`Relay`] ([`Relay::remote_event`]),
//!   where latest-wins and the slow-consumer rules work as for local senders.
//! - **Snapshots**: a node that opens a room, finds a gap in a stream, hears
//!   a node come back, or gets NATS back asks for the other nodes' members
//!   of the room and their latest messages, and holds their events until
//!   the answer.
//! - **Liveness**: every node publishes a heartbeat each [`HEARTBEAT`]; one
//!   unheard for [`DEAD_AFTER`] is gone: its members leave every room with
//!   "connection lost", and its names can be claimed.
//!
//! While NATS is out of reach a node keeps relaying among its own members,
//! and refuses joins ([`RefuseReason::ClusterUnavailable`]): it cannot check
//! that a name is free.

pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use relais_protocol::{name_key, CloseReason, RefuseReason, RoomInfo};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::outbox::Outbox;
use crate::relay::{lock, JoinError, Membership, Relay, RoomHandle, Seat};
use crate::ServerContext;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node unheard for this long is gone. A node takes over a name claim of
/// a node it has not heard only once it has itself listened this long.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);
/// After connecting (or reconnecting) a node listens this long (one and a
/// half heartbeat periods) before it takes joins, so that a join's room
/// snapshot asks the nodes that are up.
pub const SETTLE: Duration = Duration::from_millis(750);
/// How long a join waits for the other nodes' snapshots of a room it opens;
/// a snapshot still missing is asked for again this often.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);
/// How long a room list waits for the other nodes' answers.
pub const ROOMS_WAIT: Duration = Duration::from_millis(500);
/// Every request to JetStream (a claim, its check) gives up after this.
pub const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// Room events waiting to be published; past it they are dropped (the
/// other nodes see the gap and ask for a snapshot). Name releases have a
/// queue of their own, never dropped (one per leave).
pub const MAX_QUEUED_EVENTS: usize = 65_536;
/// Snapshots being put together from chunks, at most.
const MAX_PARTIAL_SNAPSHOTS: usize = 1024;

/// The relay's side of the cluster: where its room events go, and which
/// names this node holds. Calls never block.
#[derive(Debug)]
pub struct Link {
    node: u64,
    out: mpsc::Sender<Out>,
    /// Claims to delete: (key, revision).
    releases: mpsc::UnboundedSender<(String, u64)>,
    /// The names this node's members hold (or are claiming: revision 0),
    /// by claim key, with the claim's revision in the bucket.
    claims: Mutex<HashMap<String, u64>>,
}

#[derive(Debug)]
enum Out {
    Publish(async_nats::Subject, Bytes),
    /// Everything before it has been handed to NATS.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

impl Link {
    /// This node's id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Publishes a room's event (encoded by [`wire`]) on its `subject`.
    pub(crate) fn publish_room_event(&self, subject: async_nats::Subject, event: Bytes) {
        if self.out.try_send(Out::Publish(subject, event)).is_err() {
            debug!("cluster queue full: a room event dropped");
        }
    }

    /// A member of `room` with name key `key` has left: its claim goes.
    pub(crate) fn release_name(&self, room: &str, key: &str) {
        let key = wire::claim_key(room, key);
        if let Some(revision) = lock(&self.claims).remove(&key) {
            self.release(key, revision);
        }
    }

    /// A link whose queue the caller reads: what the relay publishes.
    #[cfg(test)]
    pub(crate) fn for_tests(node: u64) -> (Arc<Self>, mpsc::Receiver<impl std::fmt::Debug>) {
        let (out, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
        let (releases, _) = mpsc::unbounded_channel();
        let link = Self {
            node,
            out,
            releases,
            claims: Mutex::default(),
        };
        (Arc::new(link), rx)
    }

    fn release(&self, key: String, revision: u64) {
        if revision != 0 {
            let _ = self.releases.send((key, revision));
        }
    }
}

/// A cluster node's connection to the others.
#[derive(Debug)]
pub struct Cluster {
    link: Arc<Link>,
    client: async_nats::Client,
    kv: kv::Store,
    /// Up: connected, and settled since. Joins are refused while not.
    up: AtomicBool,
    /// Nodes heard from, and when last.
    peers: Mutex<HashMap<u64, Instant>>,
    /// Nodes declared gone: one heard again is resynchronised.
    gone: Mutex<HashSet<u64>>,
    /// Since when this node has been connected (the last reconnect).
    listening_since: Mutex<Instant>,
    /// Claims whose delete did not reach NATS: deleted after a reconnect.
    unreleased: Mutex<Vec<(String, u64)>>,
    stop: CancellationToken,
    /// The server this node serves (it owns the cluster: no cycle).
    ctx: Weak<ServerContext>,
}

impl ClusterError {
    fn bucket(reason: &dyn std::fmt::Display) -> Self {
        Self::Bucket {
            bucket: wire::NAMES_BUCKET,
            reason: reason.to_string(),
        }
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS server did not answer.
    #[error("cannot reach NATS at {url}: {reason}")]
    Connect {
        /// The address given.
        url: String,
        /// What failed.
        reason: String,
    },
    /// JetStream is off or refused the bucket.
    #[error("cannot open the JetStream key-value bucket {bucket} (is JetStream on? nats-server -js): {reason}")]
    Bucket {
        /// The bucket's name.
        bucket: &'static str,
        /// What failed.
        reason: String,
    },
}

impl Cluster {
    /// Connects the server of `ctx` to the cluster at `url` (a NATS
    /// address), and returns once it has heard the other nodes: from then
    /// on it takes joins. Sets the relay's [`Link`].
    pub async fn start(ctx: Arc<ServerContext>, url: &str) -> Result<Arc<Self>, ClusterError> {
        let node = loop {
            let n = rand_u64();
            if n != 0 {
                break n;
            }
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let options = async_nats::ConnectOptions::new()
            .name(format!("relais-{node:016x}"))
            .no_echo()
            .max_reconnects(None)
            .connection_timeout(KV_TIMEOUT)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 << attempts.min(4)).min(Duration::from_secs(1))
            })
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            });
        let connect_error = |e: &dyn std::fmt::Display| ClusterError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let client = tokio::time::timeout(KV_TIMEOUT * 2, options.connect(url))
            .await
            .map_err(|e| connect_error(&e))?
            .map_err(|e| connect_error(&e))?;
        let kv = open_bucket(&client).await?;
        let (out_tx, out_rx) = mpsc::channel(MAX_QUEUED_EVENTS);
        let (releases_tx, releases) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            node,
            out: out_tx,
            releases: releases_tx,
            claims: Mutex::default(),
        });
        let cluster = Arc::new(Self {
            link: link.clone(),
            client: client.clone(),
            kv,
            up: AtomicBool::new(false),
            peers: Mutex::default(),
            gone: Mutex::default(),
            listening_since: Mutex::new(Instant::now()),
            unreleased: Mutex::default(),
            stop: CancellationToken::new(),
            ctx: Arc::downgrade(&ctx),
        });
        ctx.relay.set_link(link);
        ctx.set_cluster(cluster.clone());
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| connect_error(&e))
            }
        };
        let heartbeats = subscribe(wire::NODE_SUBJECT.into()).await?;
        let syncs = subscribe(wire::SYNC_SUBJECTS.into()).await?;
        let snapshots = subscribe(wire::snap_subject(node)).await?;
        let room_lists = subscribe(wire::ROOMS_SUBJECT.into()).await?;
        tokio::spawn(cluster.clone().publish(out_rx));
        tokio::spawn(cluster.clone().release(releases));
        tokio::spawn(cluster.clone().liveness(ctx.clone(), heartbeats));
        tokio::spawn(cluster.clone().answer_syncs(ctx.clone(), syncs));
        tokio::spawn(cluster.clone().take_snapshots(ctx.clone(), snapshots));
        tokio::spawn(cluster.clone().answer_room_lists(ctx.clone(), room_lists));
        let watcher = cluster.clone();
        let wctx = ctx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                watcher.connection_event(&wctx, event).await;
            }
        });
        tokio::time::sleep(SETTLE).await;
        cluster.up.store(true, Ordering::Release);
        info!(node = %format!("{node:016x}"), url, "joined the cluster");
        Ok(cluster)
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.link.node
    }

    /// Whether the node takes joins: NATS is reachable.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Registers `name` in `room` as [`Relay::join`] does, once the name is
    /// claimed in the whole cluster and the room's members on the other
    /// nodes are known.
    pub async fn join(
        &self,
        relay: &Relay,
        room: &str,
        name: &str,
        seat: Seat,
        outbox: Arc<Outbox>,
    ) -> Result<Membership, RefuseReason> {
        if !self.is_up() {
            return Err(RefuseReason::ClusterUnavailable);
        }
        let claim = self.claim(room, name).await?;
        loop {
            let opened = Opened {
                relay,
                room: relay.open_room(room),
            };
            self.open(relay, &opened.room).await?;
            match relay.join_room(&opened.room, name, seat, outbox.clone()) {
                Ok(membership) => {
                    claim.keep();
                    return Ok(membership);
                }
                Err(JoinError::Closed) => continue,
                Err(JoinError::Refused(reason)) => return Err(reason),
            }
        }
    }

    /// Claims `name` in `room` for this node, or says why not.
    async fn claim(&self, room: &str, name: &str) -> Result<Claim<'_>, RefuseReason> {
        let key = wire::claim_key(room, &name_key(name));
        {
            let mut claims = lock(&self.link.claims);
            if claims.contains_key(&key) {
                return Err(RefuseReason::NameTaken);
            }
            claims.insert(key.clone(), 0);
        }
        let claim = Claim {
            link: &self.link,
            key,
            kept: false,
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "name claim failed");
            RefuseReason::ClusterUnavailable
        };
        let value = wire::claim_value(self.node());
        // A few rounds: a release or another taker may land between reading
        // a claim and taking it over.
        for _ in 0..3 {
            let created =
                tokio::time::timeout(KV_TIMEOUT, self.kv.create(&claim.key, value.clone()))
                    .await
                    .map_err(|e| unavailable(&e))?;
            let revision = match created {
                Ok(revision) => revision,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let entry = tokio::time::timeout(KV_TIMEOUT, self.kv.entry(&claim.key))
                        .await
                        .map_err(|e| unavailable(&e))?
                        .map_err(|e| unavailable(&e))?;
                    let Some(entry) = entry else {
                        continue; // Released meanwhile.
                    };
                    if entry.operation == kv::Operation::Put
                        && !self.may_take_over(wire::claim_holder(&entry.value))
                    {
                        return Err(RefuseReason::NameTaken);
                    }
                    let updated = tokio::time::timeout(
                        KV_TIMEOUT,
                        self.kv.update(&claim.key, value.clone(), entry.revision),
                    )
                    .await
                    .map_err(|e| unavailable(&e))?;
                    match updated {
                        Ok(revision) => revision,
                        Err(_) => continue, // Changed meanwhile: read it again.
                    }
                }
                Err(e) => return Err(unavailable(&e)),
            };
            if let Some(r) = lock(&self.link.claims).get_mut(&claim.key) {
                *r = revision;
            }
            return Ok(claim);
        }
        Err(RefuseReason::NameTaken)
    }

    /// Whether a claim held by `holder` may be taken over: the holder is
    /// this node (the claim is not among its members': a leftover), or it
    /// was declared gone, or this node has listened [`DEAD_AFTER`] since
    /// it (re)connected and has not heard it.
    fn may_take_over(&self, holder: Option<u64>) -> bool {
        let Some(holder) = holder else {
            return true; // Not a claim this software wrote.
        };
        holder == self.node()
            || self.is_gone(holder)
            || (!self.is_alive(holder) && lock(&self.listening_since).elapsed() >= DEAD_AFTER)
    }

    fn is_gone(&self, node: u64) -> bool {
        lock(&self.gone).contains(&node)
    }

    fn is_alive(&self, node: u64) -> bool {
        lock(&self.peers).contains_key(&node)
    }

    fn peers(&self) -> Vec<u64> {
        lock(&self.peers).keys().copied().collect()
    }

    /// Subscribes to `room` once, and waits (at most [`SNAPSHOT_WAIT`])
    /// for the other nodes' snapshots of it.
    async fn open(&self, relay: &Relay, room: &RoomHandle) -> Result<(), RefuseReason> {
        let init = || async {
            let ctx = self.ctx.upgrade().ok_or(RefuseReason::ClusterUnavailable)?;
            let events = self.client.subscribe(room.0.subject()).await.map_err(|e| {
                warn!(error = %e, "cannot subscribe to a room");
                RefuseReason::ClusterUnavailable
            })?;
            tokio::spawn(follow_room(ctx, room.clone(), events));
            let peers = self.peers();
            self.resync(relay, room, &peers, 0).await;
            let deadline = Instant::now() + SNAPSHOT_WAIT;
            loop {
                let applied = room.0.snapshot_applied.notified();
                tokio::pin!(applied);
                applied.as_mut().enable();
                if !relay.awaits_snapshot(room, &peers) {
                    break;
                }
                tokio::select! {
                    () = applied => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            Ok(())
        };
        room.0.synced.get_or_try_init(init).await.map(|_| ())
    }

    /// Makes `room` hold the events of `nodes` until their snapshots come,
    /// and asks node `target` (0: every node) for its snapshot.
    async fn resync(&self, relay: &Relay, room: &RoomHandle, nodes: &[u64], target: u64) {
        for &node in nodes {
            relay.expect_snapshot(room, node);
        }
        self.ask_snapshot(room.name(), target).await;
    }

    /// Asks node `target` (0: every node) for its snapshot of `room`.
    async fn ask_snapshot(&self, room: &str, target: u64) {
        let request = wire::sync_request(target, self.node(), room);
        let publish = self.client.publish(wire::sync_subject(room), request);
        // Bounded: the liveness task asks too.
        let _ = tokio::time::timeout(HEARTBEAT, publish).await;
    }

    /// The cluster's rooms with their member counts: this node's and every
    /// other node's that answers within [`ROOMS_WAIT`].
    pub async fn rooms(&self, relay: &Relay) -> Vec<RoomInfo> {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for r in relay.rooms() {
            *counts.entry(r.name).or_default() += r.members;
        }
        let expected = lock(&self.peers).len();
        let inbox = self.client.new_inbox();
        if let Ok(mut answers) = self.client.subscribe(inbox.clone()).await {
            let asked = self
                .client
                .publish_with_reply(wire::ROOMS_SUBJECT, inbox, Bytes::new())
                .await;
            let deadline = Instant::now() + ROOMS_WAIT;
            let mut heard = 0;
            while asked.is_ok() && heard < expected {
                let answer = tokio::select! {
                    a = answers.next() => a,
                    () = tokio::time::sleep_until(deadline) => None,
                };
                let Some(answer) = answer else { break };
                heard += 1;
                match wire::decode_rooms_answer(answer.payload) {
                    Ok(rooms) => {
                        for r in rooms {
                            *counts.entry(r.name).or_default() += r.members;
                        }
                    }
                    Err(e) => debug!(error = %e, "bad room list answer"),
                }
            }
        }
        let mut rooms: Vec<RoomInfo> = counts
            .into_iter()
            .map(|(name, members)| RoomInfo { name, members })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// Hands everything queued so far to NATS, says this node is leaving,
    /// and flushes: a clean shutdown's `LEFT`s reach the other nodes.
    /// Bounded: with NATS out of reach it gives up after a few seconds.
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flushed = async {
            if self.link.out.send(Out::Flushed(tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        let _ = tokio::time::timeout(KV_TIMEOUT, flushed).await;
        self.stop.cancel();
        let bye = async {
            let beat = wire::heartbeat(self.node(), false);
            let _ = self.client.publish(wire::NODE_SUBJECT, beat).await;
            let _ = self.client.flush().await;
        };
        let _ = tokio::time::timeout(KV_TIMEOUT, bye).await;
    }

    /// Deletes the claims of members who left (only if unchanged since this
    /// node wrote them); one whose delete fails while NATS is out of reach
    /// is deleted after the reconnect.
    async fn release(self: Arc<Self>, mut releases: mpsc::UnboundedReceiver<(String, u64)>) {
        while let Some((key, revision)) = releases.recv().await {
            let deleted = tokio::time::timeout(
                KV_TIMEOUT,
                self.kv.delete_expect_revision(&key, Some(revision)),
            )
            .await;
            if !matches!(deleted, Ok(Ok(()))) {
                if self.client.connection_state() == async_nats::connection::State::Connected {
                    // Taken over meanwhile: not ours to delete.
                    debug!(key, "name claim not released: no longer this node's");
                } else {
                    lock(&self.unreleased).push((key, revision));
                }
            }
        }
    }

    /// Publishes the room events the relay queues.
    async fn publish(self: Arc<Self>, mut out: mpsc::Receiver<Out>) {
        while let Some(item) = out.recv().await {
            match item {
                Out::Publish(subject, payload) => {
                    let _ = self.client.publish(subject, payload).await;
                }
                Out::Flushed(done) => {
                    let _ = self.client.flush().await;
                    let _ = done.send(());
                }
            }
        }
    }

    /// Sends heartbeats, hears the other nodes', and declares gone those
    /// unheard for [`DEAD_AFTER`].
    async fn liveness(
        self: Arc<Self>,
        ctx: Arc<ServerContext>,
        mut heartbeats: async_nats::Subscriber,
    ) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(HEARTBEAT / 2);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = beat.tick() => {
                    // Bounded: while NATS is out of reach the others'
                    // silence must still be noticed.
                    let beat = wire::heartbeat(self.node(), true);
                    let _ = tokio::time::timeout(
                        HEARTBEAT / 2,
                        self.client.publish(wire::NODE_SUBJECT, beat),
                    )
                    .await;
                }
                _ = check.tick() => self.check_peers(&ctx.relay).await,
                heard = heartbeats.next() => {
                    let Some(heard) = heard else { return };
                    match wire::decode_heartbeat(heard.payload) {
                        Ok((node, _)) if node == self.node() => {}
                        Ok((node, true)) => self.heard(&ctx.relay, node).await,
                        Ok((node, false)) => {
                            // Leaving: its members' LEFTs, published before
                            // this, are applied by the rooms' own tasks;
                            // whoever is still there in half a second goes.
                            if let Some(heard) = lock(&self.peers).get_mut(&node) {
                                *heard = Instant::now() - DEAD_AFTER + HEARTBEAT;
                            }
                        }
                        Err(e) => debug!(error = %e, "bad heartbeat"),
                    }
                }
            }
        }
    }

    async fn heard(&self, relay: &Relay, node: u64) {
        let new = lock(&self.peers).insert(node, Instant::now()).is_none();
        // Not while reconnecting: the reconnect resynchronises every room.
        if new && lock(&self.gone).remove(&node) && self.is_up() {
            info!(node = %format!("{node:016x}"), "node back: resynchronising");
            for room in relay.room_handles() {
                self.resync(relay, &room, &[node], node).await;
            }
        }
    }

    async fn check_peers(&self, relay: &Relay) {
        let dead: Vec<u64> = {
            let mut peers = lock(&self.peers);
            let dead: Vec<u64> = peers
                .iter()
                .filter(|(_, heard)| heard.elapsed() >= DEAD_AFTER)
                .map(|(n, _)| *n)
                .collect();
            for n in &dead {
                peers.remove(n);
            }
            dead
        };
        for node in dead {
            warn!(node = %format!("{node:016x}"), "node unheard for {DEAD_AFTER:?}: its members leave");
            lock(&self.gone).insert(node);
            relay.node_gone(node);
        }
        let peers = self.peers();
        for (room, node) in relay.overdue_snapshots(SNAPSHOT_WAIT) {
            if peers.contains(&node) {
                self.ask_snapshot(room.name(), node).await;
            }
        }
    }

    /// Answers snapshot requests with this node's members of the room.
    async fn answer_syncs(
        self: Arc<Self>,
        ctx: Arc<ServerContext>,
        mut requests: async_nats::Subscriber,
    ) {
        while let Some(request) = requests.next().await {
            let Ok((target, requester, room)) = wire::decode_sync_request(request.payload) else {
                continue;
            };
            // Not while reconnecting: this node's rooms may still hold
            // members whose names were claimed elsewhere meanwhile (see
            // `reclaim`); the asker asks again when the answer is overdue.
            if (target != 0 && target != self.node()) || requester == self.node() || !self.is_up() {
                continue;
            }
            let snapshot = ctx.relay.local_snapshot(&room, self.node());
            for chunk in wire::snapshot_chunks(&room, &snapshot) {
                let _ = self
                    .client
                    .publish(wire::snap_subject(requester), chunk)
                    .await;
            }
        }
    }

    /// Applies the snapshots other nodes send this one.
    async fn take_snapshots(
        self: Arc<Self>,
        ctx: Arc<ServerContext>,
        mut chunks: async_nats::Subscriber,
    ) {
        let mut partial: HashMap<(String, u64), wire::RemoteSnapshot> = HashMap::new();
        while let Some(chunk) = chunks.next().await {
            let (room, last, part) = match wire::decode_snapshot_chunk(chunk.payload) {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "bad snapshot");
                    continue;
                }
            };
            if self.is_gone(part.node) {
                continue;
            }
            let key = (room, part.node);
            if partial.len() >= MAX_PARTIAL_SNAPSHOTS {
                partial.clear(); // Abandoned ones: asked again when overdue.
            }
            let snapshot = match partial.remove(&key) {
                Some(mut s) if (s.epoch, s.seq) == (part.epoch, part.seq) => {
                    s.members.extend(part.members);
                    s
                }
                _ => part,
            };
            if !last {
                partial.insert(key, snapshot);
                continue;
            }
            let (room, node) = key;
            let Some(handle) = ctx.relay.room(&room) else {
                continue;
            };
            if ctx.relay.remote_snapshot(&handle, snapshot) {
                self.ask_snapshot(&room, node).await;
            }
        }
    }

    /// Answers room list requests with this node's rooms.
    async fn answer_room_lists(
        self: Arc<Self>,
        ctx: Arc<ServerContext>,
        mut requests: async_nats::Subscriber,
    ) {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let answer = wire::rooms_answer(&ctx.relay.rooms());
                let _ = self.client.publish(reply, answer).await;
            }
        }
    }

    async fn connection_event(&self, ctx: &ServerContext, event: async_nats::Event) {
        use async_nats::connection::State;
        match event {
            async_nats::Event::Disconnected => {
                if self.up.swap(false, Ordering::AcqRel) {
                    warn!("NATS out of reach: refusing joins, relaying among local members");
                }
            }
            async_nats::Event::Connected => {
                info!("NATS reachable: resynchronising");
                *lock(&self.listening_since) = Instant::now();
                tokio::time::sleep(SETTLE).await;
                // Joins wait until this node's names are claimed again.
                while self.client.connection_state() == State::Connected {
                    match self.reclaim(&ctx.relay).await {
                        Ok(()) => break,
                        Err(e) => {
                            warn!(error = %e, "cannot claim this node's names again; retrying");
                            tokio::time::sleep(SNAPSHOT_WAIT).await;
                        }
                    }
                }
                if self.client.connection_state() != State::Connected {
                    return;
                }
                let peers = self.peers();
                for room in ctx.relay.room_handles() {
                    self.resync(&ctx.relay, &room, &peers, 0).await;
                }
                self.up.store(true, Ordering::Release);
            }
            other => debug!(event = %other, "NATS"),
        }
    }

    /// After NATS comes back (it may have lost the in-memory bucket): deletes
    /// the claims whose release did not reach it, and claims this node's
    /// names again. A name claimed by another node meanwhile (this node was
    /// cut off, and declared gone) is that node's now: this node's member
    /// of that name is removed ("connection lost"), so a name stays one
    /// player.
    async fn reclaim(&self, relay: &Relay) -> Result<(), ClusterError> {
        let kv = open_bucket(&self.client).await?;
        let unreleased = std::mem::take(&mut *lock(&self.unreleased));
        for (key, revision) in unreleased {
            let _ =
                tokio::time::timeout(KV_TIMEOUT, kv.delete_expect_revision(&key, Some(revision)))
                    .await;
        }
        let held: Vec<String> = lock(&self.link.claims)
            .iter()
            .filter(|(_, r)| **r != 0)
            .map(|(k, _)| k.clone())
            .collect();
        let value = wire::claim_value(self.node());
        for key in held {
            let created = tokio::time::timeout(KV_TIMEOUT, kv.create(&key, value.clone()))
                .await
                .map_err(|e| ClusterError::bucket(&e))?;
            let revision = match created {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let entry = tokio::time::timeout(KV_TIMEOUT, kv.entry(&key))
                        .await
                        .map_err(|e| ClusterError::bucket(&e))?
                        .map_err(|e| ClusterError::bucket(&e))?;
                    match entry {
                        Some(e) if wire::claim_holder(&e.value) == Some(self.node()) => {
                            Some(e.revision)
                        }
                        _ => None,
                    }
                }
                Err(e) => return Err(ClusterError::bucket(&e)),
            };
            let mut claims = lock(&self.link.claims);
            match (revision, claims.get_mut(&key)) {
                (Some(r), Some(held)) => *held = r,
                // Left while this ran: its release went with the old
                // revision; this one goes too.
                (Some(r), None) => {
                    drop(claims);
                    self.link.release(key, r);
                }
                (None, Some(_)) => {
                    claims.remove(&key);
                    drop(claims);
                    warn!(key, "a name of this node was claimed elsewhere while it was cut off: its member here leaves");
                    if let Some((room, name_key)) = wire::parse_claim_key(&key) {
                        relay.evict(&room, &name_key, CloseReason::ConnectionLost);
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// Follows `room`'s subject until the room is removed: the other nodes'
/// events, applied in order.
async fn follow_room(
    ctx: Arc<ServerContext>,
    room: RoomHandle,
    mut events: async_nats::Subscriber,
) {
    let Some(cluster) = ctx.cluster().cloned() else {
        return;
    };
    loop {
        let event = tokio::select! {
            () = room.0.removed.cancelled() => break,
            e = events.next() => e,
        };
        let Some(event) = event else { break };
        match wire::decode_event(event.payload) {
            // Reconnecting (every room is resynchronised once this node is
            // up again), from a node declared gone (it is resynchronised
            // when heard again), or this node's own.
            Ok((stamp, _))
                if !cluster.is_up()
                    || cluster.is_gone(stamp.node)
                    || stamp.node == cluster.node() => {}
            Ok((stamp, event)) => {
                if ctx.relay.remote_event(&room, stamp, event) {
                    cluster.ask_snapshot(room.name(), stamp.node).await;
                }
            }
            Err(e) => debug!(error = %e, "bad room event"),
        }
    }
    let _ = events.unsubscribe().await;
}

/// A room opened for a join: removed again if the join does not complete
/// and nobody else of this node is in it.
struct Opened<'a> {
    relay: &'a Relay,
    room: RoomHandle,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.relay.close_if_unused(&self.room);
    }
}

/// A claim being made: released if the join does not complete.
struct Claim<'a> {
    link: &'a Link,
    key: String,
    kept: bool,
}

impl Claim<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(revision) = lock(&self.link.claims).remove(&self.key) {
            self.link.release(std::mem::take(&mut self.key), revision);
        }
    }
}

async fn open_bucket(client: &async_nats::Client) -> Result<kv::Store, ClusterError> {
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(KV_TIMEOUT);
    if let Ok(kv) = js.get_key_value(wire::NAMES_BUCKET).await {
        return Ok(kv);
    }
    js.create_key_value(kv::Config {
        bucket: wire::NAMES_BUCKET.into(),
        description: "relais: which node holds each name of each room".into(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::bucket(&e))
}

/// A random node id, from the operating system's generator.
fn rand_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random generator works");
    u64::from_be_bytes(b)
}
