//! The view's index: every agent by id, in a numbered slot; roaring bitmaps
//! of those slots by capability, namespace, type and status (a query's
//! candidates are their intersection, computed over compressed sets rather
//! than by hash lookups per agent); every agent in list order; and per
//! status, in rank order.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use roaring::RoaringBitmap;

use crate::domain::{
    Agent, AgentId, AgentType, Revision, Status,
    query::{DiscoverQuery, ListKey, RankKey, Strategy, list_key, order_discovered},
};

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) revision: Revision,
    /// Each agent's slot: its number in every bitmap.
    slot_of: HashMap<AgentId, u32>,
    /// The agent in each slot; a freed slot is reused.
    slots: Vec<Option<Arc<Agent>>>,
    free: Vec<u32>,
    by_capability: HashMap<String, RoaringBitmap>,
    pub(super) by_namespace: HashMap<String, RoaringBitmap>,
    by_type: HashMap<AgentType, RoaringBitmap>,
    by_status: [RoaringBitmap; 3],
    /// Agents with an active health check: the prober's work list, read
    /// every 100 ms, must not cost a pass over every agent.
    with_check: RoaringBitmap,
    pub(super) by_list_order: BTreeMap<ListKey, Arc<Agent>>,
    /// Per status, every agent's slot in RANKED order: a ranked discover
    /// with many candidates walks its status's partition and stops after
    /// `max_results` matches.
    by_rank: [BTreeMap<RankKey, u32>; 3],
    /// Agents per (type, status), for the population gauges.
    pub(super) population: HashMap<(AgentType, Status), usize>,
}

/// One capability of the catalog: its name, how many agents have it and
/// how many of those are HEALTHY.
pub(super) struct CapabilityCount<'a> {
    pub(super) name: &'a str,
    pub(super) agents: u64,
    pub(super) healthy: u64,
}

/// A ranked discover group with at most this many candidates ranks them
/// all; one with more walks the rank order, where about one entry in
/// (partition / candidates) is a candidate. Ranking reads every
/// candidate's record (a cache miss each, ~100 ns); the walk visits about
/// `max_results × partition / candidates` tree entries at a few ns each and
/// a bitmap test: at 100 000 agents and 5 results they cost the same near
/// 200 candidates.
const RANK_ALL_BELOW: u64 = 192;

/// A rank walk visiting this many entries (or passing this many
/// candidates that other filters reject) without filling the answer falls
/// back to ranking every candidate: it bounds a walk whose candidates all
/// rank low or whose `cluster`/`version`/metadata filter rejects most.
const WALK_BUDGET: usize = 4096;

// === impl Index ===

pub(super) fn rank_slot(status: Status) -> usize {
    match status {
        Status::Healthy => 0,
        Status::Unhealthy => 1,
        Status::Degraded => 2,
    }
}

impl Index {
    /// Number of agents.
    pub(super) fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// One agent.
    pub(super) fn get(&self, id: &AgentId) -> Option<&Arc<Agent>> {
        self.slot_of.get(id).and_then(|&slot| self.slot(slot))
    }

    /// Every agent, in no particular order.
    pub(super) fn agents(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.slots.iter().flatten()
    }

    /// Every agent with an active health check.
    pub(super) fn with_checks(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.with_check.iter().filter_map(|slot| self.slot(slot))
    }

    /// Every capability some agent has, in no particular order.
    pub(super) fn capability_counts(&self) -> impl Iterator<Item = CapabilityCount<'_>> {
        let healthy = &self.by_status[rank_slot(Status::Healthy)];
        self.by_capability
            .iter()
            .map(move |(name, slots)| CapabilityCount {
                name,
                agents: slots.len(),
                healthy: slots.intersection_len(healthy),
            })
    }

    fn slot(&self, slot: u32) -> Option<&Arc<Agent>> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub(super) fn insert(&mut self, agent: Arc<Agent>) {
        let Some(&slot) = self.slot_of.get(&agent.id) else {
            let slot = self.allocate();
            self.slot_of.insert(agent.id, slot);
            self.index(slot, agent);
            return;
        };
        let Some(old) = self.slot(slot).cloned() else {
            self.index(slot, agent);
            return;
        };
        if old.capabilities == agent.capabilities
            && old.namespace == agent.namespace
            && old.agent_type == agent.agent_type
            && old.status == agent.status
            && list_key(&old) == list_key(&agent)
        {
            // The common case (a keep-alive, a telemetry report): only the
            // rank position may move; every other index holds the same key.
            self.replace(slot, &old, agent);
            return;
        }
        self.unindex(slot, &old);
        self.index(slot, agent);
    }

    pub(super) fn remove(&mut self, id: AgentId) {
        let Some(slot) = self.slot_of.remove(&id) else {
            return;
        };
        if let Some(old) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.unindex(slot, &old);
        }
        self.free.push(slot);
    }

    /// A free slot. Slots are `u32`, as roaring bitmaps hold them: the
    /// process runs out of memory long before it holds 2³² agents.
    fn allocate(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(None);
        slot
    }

    /// Puts `agent` in `slot` and in every secondary index.
    fn index(&mut self, slot: u32, agent: Arc<Agent>) {
        for cap in &agent.capabilities {
            insert_into(&mut self.by_capability, cap, slot);
        }
        insert_into(&mut self.by_namespace, &agent.namespace, slot);
        self.by_type
            .entry(agent.agent_type)
            .or_default()
            .insert(slot);
        self.by_status[rank_slot(agent.status)].insert(slot);
        self.mark_check(slot, &agent);
        self.by_list_order.insert(list_key(&agent), agent.clone());
        self.by_rank[rank_slot(agent.status)].insert(RankKey::of(&agent), slot);
        *self
            .population
            .entry((agent.agent_type, agent.status))
            .or_insert(0) += 1;
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            *entry = Some(agent);
        }
    }

    /// Puts `agent` in the place of `old` (in `slot`), whose capabilities,
    /// namespace, type, status and list key are the same.
    fn replace(&mut self, slot: u32, old: &Agent, agent: Arc<Agent>) {
        if let Some(entry) = self.by_list_order.get_mut(&list_key(&agent)) {
            *entry = agent.clone();
        }
        let (before, after) = (RankKey::of(old), RankKey::of(&agent));
        if before != after {
            let ranks = &mut self.by_rank[rank_slot(agent.status)];
            ranks.remove(&before);
            ranks.insert(after, slot);
        }
        self.mark_check(slot, &agent);
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            *entry = Some(agent);
        }
    }

    /// Whether `slot` is in the set of agents with a check, as `agent` says.
    fn mark_check(&mut self, slot: u32, agent: &Agent) {
        if agent.health_check.is_some() {
            self.with_check.insert(slot);
        } else {
            self.with_check.remove(slot);
        }
    }

    /// Drops `old` (in `slot`) from every secondary index.
    fn unindex(&mut self, slot: u32, old: &Agent) {
        for cap in &old.capabilities {
            remove_from(&mut self.by_capability, cap, slot);
        }
        remove_from(&mut self.by_namespace, &old.namespace, slot);
        if let Some(slots) = self.by_type.get_mut(&old.agent_type) {
            slots.remove(slot);
            if slots.is_empty() {
                self.by_type.remove(&old.agent_type);
            }
        }
        self.by_status[rank_slot(old.status)].remove(slot);
        self.with_check.remove(slot);
        self.by_list_order.remove(&list_key(old));
        self.by_rank[rank_slot(old.status)].remove(&RankKey::of(old));
        if let Some(n) = self.population.get_mut(&(old.agent_type, old.status)) {
            *n = n.saturating_sub(1);
        }
    }

    /// The slots of the agents with all of `caps`, in `namespace` and of
    /// `agent_type` (each when given): the intersection of their bitmaps,
    /// the smallest first. `None`: no restriction, every agent.
    fn select(
        &self,
        caps: &[String],
        namespace: Option<&str>,
        agent_type: Option<AgentType>,
    ) -> Option<Cow<'_, RoaringBitmap>> {
        let none = || Some(Cow::Owned(RoaringBitmap::new()));
        let mut sets = Vec::with_capacity(caps.len() + 2);
        for cap in caps {
            match self.by_capability.get(cap) {
                Some(slots) => sets.push(slots),
                None => return none(),
            }
        }
        if let Some(ns) = namespace {
            match self.by_namespace.get(ns) {
                Some(slots) => sets.push(slots),
                None => return none(),
            }
        }
        if let Some(t) = agent_type {
            match self.by_type.get(&t) {
                Some(slots) => sets.push(slots),
                None => return none(),
            }
        }
        sets.sort_by_key(|slots| slots.len());
        let mut sets = sets.into_iter();
        let mut selected = Cow::Borrowed(sets.next()?);
        for other in sets {
            if selected.is_empty() {
                break;
            }
            selected = Cow::Owned(selected.as_ref() & other);
        }
        Some(selected)
    }

    /// RANKED discover: for `HEALTHY`, the HEALTHY group, then the DEGRADED
    /// fallback; otherwise that status only. Each group's candidates are
    /// the selection's bitmap within the status's; few are ranked whole,
    /// many are found by walking the status's rank order.
    pub(super) fn discover_ranked(&self, query: &DiscoverQuery, status: Status) -> Vec<Arc<Agent>> {
        let filter = &query.filter;
        let selection = self.select(
            &query.capabilities,
            filter.namespace.as_deref(),
            filter.agent_type,
        );
        let groups: &[Status] = match status {
            Status::Healthy => &[Status::Healthy, Status::Degraded],
            Status::Degraded => &[Status::Degraded],
            Status::Unhealthy => &[Status::Unhealthy],
        };
        let mut out = Vec::with_capacity(query.max_results.min(64));
        for group in groups {
            let room = query.max_results.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let in_status = &self.by_status[rank_slot(*group)];
            let selected = selection.as_deref();
            let count = selected.map_or(in_status.len(), |s| s.intersection_len(in_status));
            if count == 0 {
                continue;
            }
            if count > RANK_ALL_BELOW
                && let Some(found) = self.walk_ranks(*group, selected, query, room)
            {
                out.extend(found);
                continue;
            }
            let candidates = match selected {
                None => Cow::Borrowed(in_status),
                Some(slots) => Cow::Owned(slots & in_status),
            };
            let matching: Vec<&Arc<Agent>> = candidates
                .iter()
                .filter_map(|slot| self.slot(slot))
                .filter(|a| filter.matches_unindexed(a))
                .collect();
            out.extend(
                order_discovered(matching, Strategy::Ranked, room, 0)
                    .into_iter()
                    .cloned(),
            );
        }
        out
    }

    /// The first `room` agents of `group`'s rank order whose slot is
    /// `selected` (any, when `None`) and which pass the query's other
    /// filters; `None` when the walk exceeded [`WALK_BUDGET`] first.
    fn walk_ranks(
        &self,
        group: Status,
        selected: Option<&RoaringBitmap>,
        query: &DiscoverQuery,
        room: usize,
    ) -> Option<Vec<Arc<Agent>>> {
        let mut out = Vec::with_capacity(room);
        for (visited, &slot) in self.by_rank[rank_slot(group)].values().enumerate() {
            if visited >= WALK_BUDGET {
                return None;
            }
            if selected.is_some_and(|slots| !slots.contains(slot)) {
                continue;
            }
            if let Some(agent) = self.slot(slot)
                && query.filter.matches_unindexed(agent)
            {
                out.push(agent.clone());
                if out.len() == room {
                    break;
                }
            }
        }
        Some(out)
    }

    /// Agents having every capability in `caps` (and in `namespace`, when
    /// given), in no particular order: only the matches' records are read.
    pub(super) fn with_capabilities<'a>(
        &'a self,
        caps: &'a [String],
        namespace: Option<&str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Agent>> + 'a> {
        match self.select(caps, namespace, None) {
            None => Box::new(self.agents()),
            Some(Cow::Borrowed(slots)) => Box::new(slots.iter().filter_map(|slot| self.slot(slot))),
            Some(Cow::Owned(slots)) => {
                Box::new(slots.into_iter().filter_map(|slot| self.slot(slot)))
            }
        }
    }
}

fn insert_into(sets: &mut HashMap<String, RoaringBitmap>, key: &str, slot: u32) {
    match sets.get_mut(key) {
        Some(slots) => {
            slots.insert(slot);
        }
        None => {
            sets.insert(key.to_owned(), RoaringBitmap::from_iter([slot]));
        }
    }
}

fn remove_from(sets: &mut HashMap<String, RoaringBitmap>, key: &str, slot: u32) {
    if let Some(slots) = sets.get_mut(key) {
        slots.remove(slot);
        if slots.is_empty() {
            sets.remove(key);
        }
    }
}
