//! The compiled classifier: an immutable index over a [`PolicySet`] that finds
//! the first matching rule of a new flow without scanning the rule list. It is
//! built off the fast path (the control thread compiles, workers only read) and
//! agrees exactly with [`PolicySet::first_match`], which stays the reference.
//!
//! # Design
//!
//! Rules are identified by their *position* in the set; a lookup returns the
//! lowest position that matches, so "first match wins" survives any indexing.
//!
//! 1. **Protocol partitions.** One partition per protocol that some rule names,
//!    plus a default partition for all other protocols, which holds the rules
//!    without a protocol. A 256-entry table maps the flow's protocol to its
//!    partition, so no protocol test remains. Rules without a protocol belong
//!    to every partition: up to [`REPLICATE_MAX`] of them are copied into each
//!    (one partition searched per lookup); beyond that they stay in the
//!    default partition, which every lookup then also searches, so that
//!    memory and compile time stay linear in the number of rules.
//! 2. **Destination-port table** (per partition). Rules on one destination
//!    port, and rules whose range spans at most [`NARROW_PORTS`] ports, are
//!    entered under each of their ports in a two-level table (256 blocks of 256
//!    ports, a block allocated only where some rule has a port). Ports with the
//!    same candidates share one bucket. Ranges may take at most
//!    [`RANGE_BUDGET_PER_RULE`] entries per rule (plus [`RANGE_BUDGET_BASE`]),
//!    narrowest first; the others are treated as wide.
//! 3. **Prefix split** (per partition). All other rules (no port match, or a
//!    wide range such as 1024-65535) form one bucket. A bucket holds candidate
//!    positions in ascending order and is scanned with a full match on each;
//!    a bucket of more than [`LIST_MAX`] rules is instead split on a prefix
//!    field, destination or source, whichever leaves the smallest group to
//!    scan: rules without that field in one sub-bucket, the others in
//!    tuple-space search, one hash table per distinct (family, prefix length)
//!    keyed by the network address. Sub-buckets split again on the remaining
//!    field. Port-table buckets are split the same way, so 10k rules on
//!    dst port 443 to 10k servers are a hash probe, not a scan.
//!
//! A lookup takes the port table's bucket for the flow's destination port and
//! the partition's prefix bucket (in one partition, or two), and returns the
//! lowest position any of them finds.
//! Every structure knows the lowest position it holds and candidates are
//! sorted, so a structure (a bucket, a prefix-length table, the rest of a
//! candidate list) is skipped as soon as it cannot beat the best match so far;
//! prefix-length tables are visited in order of their lowest position.
//!
//! # Cost and worst case
//!
//! A lookup is two table reads for the port, then for each split level one
//! hash probe per distinct prefix length of the flow's family (pruned by
//! position), plus a full match of each candidate scanned. Shapes that degrade
//! it, all unrealistic in a bypass policy but stated so nobody is surprised:
//!
//! - **Rules that differ only in fields that are not indexed** (source port,
//!   ingress, VLAN, or the same prefixes with different wide port ranges) share
//!   one bucket and are scanned linearly: 10k tcp rules on dst port 443
//!   differing only by source port measured 10-15 us per lookup.
//! - **Many prefix lengths:** up to 33 (IPv4) or 129 (IPv6) hash probes per
//!   split level, and a split within a split multiplies them; pruning by
//!   position mostly stops early (10k destination prefixes spread over all 33
//!   IPv4 lengths measured about 30 ns).
//! - **Many overlapping narrow port ranges** are expanded per port up to the
//!   budget; each port's candidates then form their own bucket, split on its
//!   own. 10k staggered 64-port ranges, each with its own destination,
//!   compile in about 12 ms into about 5.5 MiB (25 ns a lookup).
//! - **More than [`REPLICATE_MAX`] rules without a protocol** cost a second
//!   partition search per lookup (a few ns when it prunes at once).
//!
//! Compiling the benchmark's realistic 10k-rule mix takes about 2 ms, and the
//! result holds about 2.8 MiB ([`Classifier::heap_bytes`]): 1.3 MiB the copy
//! of the rules that [`Classifier::rule`] hands out, 1.1 MiB their compiled
//! match fields (112 bytes a rule), the index itself about 0.4 MiB.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::policy::{FlowFields, PolicySet, PortSide, Prefix, Rule};

/// Widest destination-port range entered port by port; wider ranges go to the
/// prefix split so one `1024-65535` rule costs one entry, not 64,512.
pub const NARROW_PORTS: u32 = 64;
/// Port-table entries that ranges (not single ports) may take in a partition:
/// this many per rule, plus the base.
pub const RANGE_BUDGET_PER_RULE: usize = 4;
pub const RANGE_BUDGET_BASE: usize = 4096;
/// Longest candidate list scanned as is; longer ones are split on a prefix.
pub const LIST_MAX: usize = 8;
/// Most protocol-less rules copied into each protocol's partition. Beyond it
/// they are searched as a partition of their own: copying 10k of them into 20
/// protocols' partitions measured 55 ms to compile and 13 MiB.
pub const REPLICATE_MAX: usize = 64;

const NONE: u32 = u32::MAX;
/// A flow without a VLAN tag: outside the u16 range, so no rule's VLAN equals it.
const NO_VLAN: u32 = 1 << 16;
/// A rule without a VLAN match.
const ANY_VLAN: u32 = u32::MAX;

/// The compiled form of a [`PolicySet`]. Immutable: a policy change compiles a
/// new one.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    compiled: Vec<Compiled>,
    proto_partition: [u16; 256],
    /// Partition 0 holds the rules without a protocol (and serves protocols
    /// no rule names). When there are few, they are also copied into every
    /// other partition so that a lookup searches one partition; when there
    /// are many, every lookup searches partition 0 as well.
    partitions: Vec<Partition>,
    shared_separately: bool,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::compile(&PolicySet::default())
    }
}

impl Classifier {
    pub fn compile(set: &PolicySet) -> Classifier {
        let compiled: Vec<Compiled> = set.rules.iter().map(Compiled::new).collect();
        let mut named = [false; 256];
        for rule in &set.rules {
            if let Some(p) = rule.spec.matches.proto {
                named[p.0 as usize] = true;
            }
        }
        let protocol_less = set
            .rules
            .iter()
            .filter(|r| r.spec.matches.proto.is_none())
            .count();
        let shared_separately = protocol_less > REPLICATE_MAX;
        let mut proto_partition = [0u16; 256];
        let mut members: Vec<Option<u8>> = vec![None];
        for proto in 0..=255u8 {
            if named[proto as usize] {
                proto_partition[proto as usize] = members.len() as u16;
                members.push(Some(proto));
            }
        }
        let partitions = members
            .into_iter()
            .map(|proto| {
                let positions: Vec<u32> = set
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| match (r.spec.matches.proto, proto) {
                        (None, None) => true,
                        (None, Some(_)) => !shared_separately,
                        (Some(p), named) => Some(p.0) == named,
                    })
                    .map(|(i, _)| i as u32)
                    .collect();
                Partition::build(&compiled, &positions)
            })
            .collect();
        Classifier {
            rules: set.rules.clone(),
            compiled,
            proto_partition,
            partitions,
            shared_separately,
        }
    }

    /// The position of the first rule that matches `flow`, as
    /// [`PolicySet::first_match`] would find it.
    #[inline]
    pub fn lookup(&self, flow: &FlowFields) -> Option<u32> {
        let key = FlowKey::new(flow);
        let index = self.proto_partition[flow.proto as usize];
        let mut best = self.partitions[index as usize].first(&self.compiled, &key, NONE);
        if self.shared_separately && index != 0 {
            best = self.partitions[0].first(&self.compiled, &key, best);
        }
        (best != NONE).then_some(best)
    }

    /// The first matching rule itself.
    pub fn lookup_rule(&self, flow: &FlowFields) -> Option<&Rule> {
        self.lookup(flow).map(|i| self.rule(i))
    }

    /// The rule at a position returned by [`Classifier::lookup`]. Panics if
    /// `index` is not below [`Classifier::len`].
    pub fn rule(&self, index: u32) -> &Rule {
        &self.rules[index as usize]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Heap memory held, estimated from capacities (hash tables counted with
    /// their control bytes; allocator overhead not included).
    pub fn heap_bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::capacity);
        self.rules.capacity() * size_of::<Rule>()
            + self
                .rules
                .iter()
                .map(|r| text(&r.spec.name) + text(&r.spec.comment))
                .sum::<usize>()
            + self.compiled.capacity() * size_of::<Compiled>()
            + self.partitions.capacity() * size_of::<Partition>()
            + self
                .partitions
                .iter()
                .map(Partition::heap_bytes)
                .sum::<usize>()
    }
}

/// An address as a top-aligned 128-bit number (IPv4 in the top 32 bits), so
/// one mask expression serves both families. Family 4 or 6; 0 means "any".
fn top_aligned(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (4, u128::from(u32::from(a)) << 96),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddrMatch {
    mask: u128,
    /// The prefix's address as written. Host bits, if someone built a
    /// `Prefix` with them, make it match nothing, as in `Prefix::contains`.
    net: u128,
    family: u8,
    len: u8,
}

impl AddrMatch {
    const ANY: AddrMatch = AddrMatch {
        mask: 0,
        net: 0,
        family: 0,
        len: 0,
    };

    fn new(prefix: Option<Prefix>) -> AddrMatch {
        let Some(p) = prefix else {
            return AddrMatch::ANY;
        };
        let (family, net) = top_aligned(p.addr);
        let len = p.len.min(if family == 4 { 32 } else { 128 });
        AddrMatch {
            mask: mask(len),
            net,
            family,
            len,
        }
    }

    #[inline]
    fn matches(&self, family: u8, addr: u128) -> bool {
        self.family == 0 || (self.family == family && addr & self.mask == self.net)
    }
}

/// A rule reduced to what matching needs. The protocol is absent: partitions
/// have already settled it.
#[derive(Debug, Clone, Copy)]
struct Compiled {
    src: AddrMatch,
    dst: AddrMatch,
    src_port: (u16, u16),
    dst_port: (u16, u16),
    vlan: u32,
    ingress: u8,
}

impl Compiled {
    fn new(rule: &Rule) -> Compiled {
        let m = &rule.spec.matches;
        let ports =
            |r: Option<crate::policy::PortRange>| r.map_or((0, u16::MAX), |r| (r.first, r.last));
        Compiled {
            src: AddrMatch::new(m.src),
            dst: AddrMatch::new(m.dst),
            src_port: ports(m.src_port),
            dst_port: ports(m.dst_port),
            vlan: m.vlan.map_or(ANY_VLAN, u32::from),
            ingress: m.ingress.map_or(0, ingress_code),
        }
    }

    #[inline]
    fn matches(&self, k: &FlowKey) -> bool {
        self.dst_port.0 <= k.dst_port
            && k.dst_port <= self.dst_port.1
            && self.src_port.0 <= k.src_port
            && k.src_port <= self.src_port.1
            && (self.ingress == 0 || self.ingress == k.ingress)
            && (self.vlan == ANY_VLAN || self.vlan == k.vlan)
            && self.dst.matches(k.dst_family, k.dst)
            && self.src.matches(k.src_family, k.src)
    }

    fn addr(&self, field: Field) -> &AddrMatch {
        match field {
            Field::Src => &self.src,
            Field::Dst => &self.dst,
        }
    }
}

fn ingress_code(i: PortSide) -> u8 {
    match i {
        PortSide::Inside => 1,
        PortSide::Outside => 2,
    }
}

/// A flow in the compiled rules' terms, computed once per lookup.
struct FlowKey {
    src: u128,
    dst: u128,
    vlan: u32,
    src_port: u16,
    dst_port: u16,
    src_family: u8,
    dst_family: u8,
    ingress: u8,
}

impl FlowKey {
    #[inline]
    fn new(f: &FlowFields) -> FlowKey {
        let (src_family, src) = top_aligned(f.src);
        let (dst_family, dst) = top_aligned(f.dst);
        FlowKey {
            src,
            dst,
            vlan: f.vlan.map_or(NO_VLAN, u32::from),
            src_port: f.src_port,
            dst_port: f.dst_port,
            src_family,
            dst_family,
            ingress: ingress_code(f.ingress),
        }
    }

    #[inline]
    fn addr(&self, field: Field) -> (u8, u128) {
        match field {
            Field::Src => (self.src_family, self.src),
            Field::Dst => (self.dst_family, self.dst),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Src,
    Dst,
}

#[derive(Debug, Clone)]
struct Partition {
    ports: Option<PortTable>,
    rest: Bucket,
}

impl Partition {
    fn build(rules: &[Compiled], positions: &[u32]) -> Partition {
        let mut by_port: Vec<(u16, u32)> = Vec::new();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut rest = Vec::new();
        for &p in positions {
            let (first, last) = rules[p as usize].dst_port;
            if first == last {
                by_port.push((first, p));
            } else if first < last && u32::from(last - first) < NARROW_PORTS {
                ranges.push((u32::from(last - first) + 1, p));
            } else {
                rest.push(p);
            }
        }
        // Thousands of overlapping ranges give thousands of distinct long
        // candidate lists, each split on its own: 10k staggered 64-port
        // ranges measured 211 ms and 42 MiB that way. Past the budget,
        // ranges go to the prefix split instead, narrowest kept first.
        let mut budget = RANGE_BUDGET_PER_RULE * positions.len() + RANGE_BUDGET_BASE;
        ranges.sort_by_key(|&(width, _)| width);
        for (width, p) in ranges {
            if width as usize <= budget {
                budget -= width as usize;
                let (first, last) = rules[p as usize].dst_port;
                by_port.extend((first..=last).map(|port| (port, p)));
            } else {
                rest.push(p);
            }
        }
        rest.sort_unstable();
        Partition {
            ports: (!by_port.is_empty()).then(|| PortTable::build(rules, by_port)),
            rest: Bucket::build(rules, rest, &[Field::Dst, Field::Src]),
        }
    }

    #[inline]
    fn first(&self, rules: &[Compiled], key: &FlowKey, mut best: u32) -> u32 {
        if let Some(bucket) = self.ports.as_ref().and_then(|t| t.get(key.dst_port)) {
            best = bucket.first(rules, key, best);
        }
        self.rest.first(rules, key, best)
    }

    fn heap_bytes(&self) -> usize {
        self.ports.as_ref().map_or(0, PortTable::heap_bytes) + self.rest.heap_bytes()
    }
}

/// Destination port -> bucket, in two levels so a set with a few ports costs
/// a few KiB rather than a 64k-entry array per protocol.
#[derive(Debug, Clone)]
struct PortTable {
    blocks: Box<[u32; 256]>,
    slots: Vec<[u32; 256]>,
    buckets: Vec<Bucket>,
}

impl PortTable {
    /// `entries` holds (port, position) pairs, positions ascending.
    fn build(rules: &[Compiled], mut entries: Vec<(u16, u32)>) -> PortTable {
        entries.sort_unstable();
        let mut table = PortTable {
            blocks: Box::new([NONE; 256]),
            slots: Vec::new(),
            buckets: Vec::new(),
        };
        // Neighbouring ports of one narrow range mostly share their candidates.
        let mut shared: HashMap<Vec<u32>, u32> = HashMap::new();
        for group in entries.chunk_by(|a, b| a.0 == b.0) {
            let port = group[0].0;
            let positions: Vec<u32> = group.iter().map(|&(_, p)| p).collect();
            let bucket = match shared.get(&positions) {
                Some(&b) => b,
                None => {
                    let b = table.buckets.len() as u32;
                    table.buckets.push(Bucket::build(
                        rules,
                        positions.clone(),
                        &[Field::Dst, Field::Src],
                    ));
                    shared.insert(positions, b);
                    b
                }
            };
            let block = &mut table.blocks[usize::from(port >> 8)];
            if *block == NONE {
                *block = table.slots.len() as u32;
                table.slots.push([NONE; 256]);
            }
            table.slots[*block as usize][usize::from(port & 0xff)] = bucket;
        }
        table
    }

    #[inline]
    fn get(&self, port: u16) -> Option<&Bucket> {
        let block = self.blocks[usize::from(port >> 8)];
        if block == NONE {
            return None;
        }
        let bucket = self.slots[block as usize][usize::from(port & 0xff)];
        (bucket != NONE).then(|| &self.buckets[bucket as usize])
    }

    fn heap_bytes(&self) -> usize {
        size_of::<[u32; 256]>() * (1 + self.slots.capacity())
            + self.buckets.capacity() * size_of::<Bucket>()
            + self.buckets.iter().map(Bucket::heap_bytes).sum::<usize>()
    }
}

/// Candidates for a lookup, lowest position first.
#[derive(Debug, Clone)]
enum Bucket {
    List(Box<[u32]>),
    Split(Box<Split>),
}

/// Candidates split on one prefix field (tuple-space search).
#[derive(Debug, Clone)]
struct Split {
    field: Field,
    /// Lowest position anywhere below, to skip the whole split.
    min: u32,
    /// Rules with no prefix on `field`.
    any: Bucket,
    v4: Box<[Tuple]>,
    v6: Box<[Tuple]>,
}

/// All rules of a split with one prefix length, by network address.
#[derive(Debug, Clone)]
struct Tuple {
    mask: u128,
    min: u32,
    by_net: HashMap<u128, Bucket, BuildHasherDefault<NetHasher>>,
}

impl Bucket {
    fn build(rules: &[Compiled], positions: Vec<u32>, fields: &[Field]) -> Bucket {
        if positions.len() <= LIST_MAX {
            return Bucket::List(positions.into());
        }
        // Choose the field that leaves the least to scan in the worst case:
        // its wildcard rules plus the largest group sharing one prefix.
        let mut choice: Option<(usize, usize)> = None;
        for (i, &field) in fields.iter().enumerate() {
            let mut wild = 0;
            let mut groups: HashMap<(u8, u8, u128), usize> = HashMap::new();
            for &p in &positions {
                let a = rules[p as usize].addr(field);
                if a.family == 0 {
                    wild += 1;
                } else {
                    *groups.entry((a.family, a.len, a.net)).or_default() += 1;
                }
            }
            let cost = wild + groups.values().copied().max().unwrap_or(0);
            if cost < positions.len() && choice.is_none_or(|(c, _)| cost < c) {
                choice = Some((cost, i));
            }
        }
        let Some((_, chosen)) = choice else {
            return Bucket::List(positions.into());
        };
        let field = fields[chosen];
        let remaining: Vec<Field> = fields.iter().copied().filter(|&f| f != field).collect();

        let min = positions[0];
        let mut any = Vec::new();
        // (family, len) -> net -> positions, each list ascending because
        // `positions` is.
        let mut tuples: HashMap<(u8, u8), HashMap<u128, Vec<u32>>> = HashMap::new();
        for &p in &positions {
            let a = rules[p as usize].addr(field);
            if a.family == 0 {
                any.push(p);
            } else {
                tuples
                    .entry((a.family, a.len))
                    .or_default()
                    .entry(a.net)
                    .or_default()
                    .push(p);
            }
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ((family, len), nets) in tuples {
            let mut by_net: HashMap<u128, Bucket, BuildHasherDefault<NetHasher>> =
                HashMap::default();
            by_net.reserve(nets.len());
            let mut tuple_min = NONE;
            for (net, list) in nets {
                tuple_min = tuple_min.min(list[0]);
                by_net.insert(net, Bucket::build(rules, list, &remaining));
            }
            let tuple = Tuple {
                mask: mask(len),
                min: tuple_min,
                by_net,
            };
            if family == 4 {
                v4.push(tuple);
            } else {
                v6.push(tuple);
            }
        }
        v4.sort_unstable_by_key(|t| t.min);
        v6.sort_unstable_by_key(|t| t.min);
        Bucket::Split(Box::new(Split {
            field,
            min,
            any: Bucket::build(rules, any, &remaining),
            v4: v4.into(),
            v6: v6.into(),
        }))
    }

    /// The lowest matching position below `best`, else `best`.
    fn first(&self, rules: &[Compiled], key: &FlowKey, mut best: u32) -> u32 {
        match self {
            Bucket::List(positions) => {
                for &p in positions.iter() {
                    if p >= best {
                        break;
                    }
                    if rules[p as usize].matches(key) {
                        return p;
                    }
                }
                best
            }
            Bucket::Split(split) => {
                if split.min >= best {
                    return best;
                }
                best = split.any.first(rules, key, best);
                let (family, addr) = key.addr(split.field);
                let tuples = match family {
                    4 => &split.v4,
                    _ => &split.v6,
                };
                for tuple in tuples.iter() {
                    if tuple.min >= best {
                        break;
                    }
                    if let Some(bucket) = tuple.by_net.get(&(addr & tuple.mask)) {
                        best = bucket.first(rules, key, best);
                    }
                }
                best
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Bucket::List(positions) => positions.len() * size_of::<u32>(),
            Bucket::Split(split) => {
                size_of::<Split>()
                    + split.any.heap_bytes()
                    + split
                        .v4
                        .iter()
                        .chain(split.v6.iter())
                        .map(|t| {
                            size_of::<Tuple>()
                                + t.by_net.capacity() * (size_of::<(u128, Bucket)>() + 1)
                                + t.by_net.values().map(Bucket::heap_bytes).sum::<usize>()
                        })
                        .sum::<usize>()
            }
        }
    }
}

/// Network addresses are rule data, not attacker input (a flow can only probe
/// the tables, never shape them), so a fixed multiply-fold hash is enough and
/// far cheaper than SipHash.
#[derive(Default)]
struct NetHasher(u64);

fn fold_multiply(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Hasher for NetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = fold_multiply(
                self.0 ^ u64::from(b) ^ 0x243f_6a88_85a3_08d3,
                0x9e37_79b9_7f4a_7c15,
            );
        }
    }

    #[inline]
    fn write_u128(&mut self, v: u128) {
        let high = fold_multiply(
            (v >> 64) as u64 ^ 0x243f_6a88_85a3_08d3,
            0x9e37_79b9_7f4a_7c15,
        );
        self.0 = fold_multiply(
            high ^ v as u64 ^ 0x1319_8a2e_0370_7344,
            0xbf58_476d_1ce4_e5b9,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleSpec;

    fn set(rules: &[&str]) -> PolicySet {
        let mut set = PolicySet::default();
        for r in rules {
            set.add(serde_json::from_str::<RuleSpec>(r).unwrap())
                .unwrap();
        }
        set
    }

    fn flow(proto: u8, src: &str, dst: &str, dst_port: u16) -> FlowFields {
        FlowFields {
            proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            dst_port,
            ingress: PortSide::Inside,
            vlan: None,
        }
    }

    #[test]
    fn empty_set_matches_nothing() {
        let c = Classifier::compile(&PolicySet::default());
        assert!(c.is_empty());
        assert_eq!(c.lookup(&flow(6, "198.18.0.1", "198.18.0.2", 80)), None);
        assert_eq!(c.lookup(&flow(58, "2001:2::1", "2001:2::2", 0)), None);
    }

    #[test]
    fn first_match_wins_across_structures() {
        let s = set(&[
            r#"{"match":{"proto":"tcp","dst":"198.18.0.0/15"},"action":"proxy"}"#,
            r#"{"match":{"proto":"tcp","dst_port":10000},"action":"bypass"}"#,
            r#"{"match":{"dst":"0.0.0.0/0"},"action":"drop"}"#,
            r#"{"action":"bypass"}"#,
        ]);
        let c = Classifier::compile(&s);
        assert_eq!(c.lookup(&flow(6, "10.0.0.1", "198.18.0.9", 10000)), Some(0));
        assert_eq!(
            c.lookup(&flow(6, "10.0.0.1", "203.0.113.9", 10000)),
            Some(1)
        );
        assert_eq!(
            c.lookup(&flow(17, "10.0.0.1", "203.0.113.9", 10000)),
            Some(2)
        );
        // An IPv6 flow misses the IPv4 /0 and falls to the catch-all.
        assert_eq!(
            c.lookup(&flow(17, "2001:2::1", "2001:2::2", 10000)),
            Some(3)
        );
        assert_eq!(c.rule(1).spec.action, crate::policy::Action::Bypass);
    }

    #[test]
    fn long_buckets_split_and_still_agree() {
        let mut rules = Vec::new();
        for i in 0..200u32 {
            rules.push(format!(
                r#"{{"match":{{"proto":"tcp","dst_port":443,"dst":"198.18.{}.{}/32"}},"action":"bypass"}}"#,
                i / 256,
                i % 256
            ));
        }
        rules.push(r#"{"match":{"proto":"tcp","dst_port":443},"action":"drop"}"#.into());
        let s = set(&rules.iter().map(String::as_str).collect::<Vec<_>>());
        let c = Classifier::compile(&s);
        let table = c.partitions[c.proto_partition[6] as usize]
            .ports
            .as_ref()
            .unwrap();
        assert!(matches!(table.get(443), Some(Bucket::Split(_))));
        for i in 0..210u32 {
            let f = flow(
                6,
                "10.0.0.1",
                &format!("198.18.{}.{}", i / 256, i % 256),
                443,
            );
            assert_eq!(
                c.lookup(&f),
                s.first_match(&f)
                    .map(|r| s.rules.iter().position(|x| x == r).unwrap() as u32)
            );
        }
    }

    #[test]
    fn many_protocol_less_rules_are_searched_once_not_copied() {
        let mut rules = Vec::new();
        for i in 0..100u32 {
            rules.push(format!(
                r#"{{"match":{{"dst":"10.0.{i}.0/24"}},"action":"bypass"}}"#
            ));
            rules.push(format!(
                r#"{{"match":{{"proto":"tcp","dst":"10.0.{i}.0/25"}},"action":"drop"}}"#
            ));
        }
        let s = set(&rules.iter().map(String::as_str).collect::<Vec<_>>());
        let c = Classifier::compile(&s);
        assert!(c.shared_separately);
        assert_eq!(c.lookup(&flow(6, "192.0.2.1", "10.0.7.1", 80)), Some(14));
        assert_eq!(c.lookup(&flow(17, "192.0.2.1", "10.0.7.1", 80)), Some(14));
        assert_eq!(c.lookup(&flow(6, "192.0.2.1", "10.0.7.200", 80)), Some(14));
        assert_eq!(c.lookup(&flow(6, "192.0.2.1", "10.0.200.1", 80)), None);
    }

    #[test]
    fn hasher_spreads_ipv4_networks() {
        // IPv4 networks differ only in the top 32 bits; they must not collide
        // in the low bits the table indexes with.
        let mut low = std::collections::HashSet::new();
        for i in 0..4096u128 {
            let mut h = NetHasher::default();
            h.write_u128(i << 104);
            low.insert(h.finish() & 0xfff);
        }
        assert!(low.len() > 2000, "{}", low.len());
    }
}
