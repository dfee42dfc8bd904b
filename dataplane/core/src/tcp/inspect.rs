//! The stream inspection hook (issue 4, point 6): the in-order bytes of each direction of a
//! proxied flow pass through an [`Inspector`], which may ask for the connection to be reset.
//!
//! The proxy calls the inspector with each run of bytes as it becomes in-order (after
//! reassembly, before relaying), so an inspector sees each direction's stream exactly once, in
//! order, cut wherever segments happened to end. It keeps what it needs to see across those cuts
//! in a per-flow `State` that the proxy stores beside the flow.
//!
//! The shipped inspector, [`SignatureInspector`], looks for byte patterns from the configuration
//! with one Aho-Corasick automaton for all of them, stepped byte by byte with the automaton's
//! state kept per direction: a pattern split across any number of segments is found without
//! copying a byte, and a flow's state is two state ids whatever the patterns are.

use std::fmt;

use aho_corasick::automaton::{Automaton, Candidate, StateID};
use aho_corasick::{dfa, nfa, Anchored, MatchKind, Span, StartKind};
use serde::Deserialize;

pub use crate::flow::Direction;

/// What the proxy does with the flow after an inspector has seen a run of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Relay the bytes and keep going.
    Continue,
    /// Reset both legs: `signature` (an index into the inspector's signatures) matched. The bytes
    /// of this call must not be relayed, since they complete the match.
    Reset { signature: u32 },
}

/// Looks at each direction's in-order byte stream.
///
/// `inspect` gets every byte of a direction once, in order; `state` is the flow's and starts as
/// `State::default()`. A `State` belongs to the inspector that filled it: a flow keeps the
/// inspector it started with (workers swap configurations by pointer, so the old one lives as
/// long as its flows), since another inspector's automaton would read the state as nonsense.
pub trait Inspector {
    type State: Default;

    fn inspect(&self, state: &mut Self::State, direction: Direction, bytes: &[u8]) -> Verdict;
}

/// A flow holds its inspector by pointer: the worker's current one, kept alive by the flows that
/// started with it after a configuration swap.
impl<T: Inspector + ?Sized> Inspector for &T {
    type State = T::State;

    fn inspect(&self, state: &mut T::State, direction: Direction, bytes: &[u8]) -> Verdict {
        (**self).inspect(state, direction, bytes)
    }
}

impl<T: Inspector + ?Sized> Inspector for std::rc::Rc<T> {
    type State = T::State;

    fn inspect(&self, state: &mut T::State, direction: Direction, bytes: &[u8]) -> Verdict {
        (**self).inspect(state, direction, bytes)
    }
}

impl<T: Inspector + ?Sized> Inspector for std::sync::Arc<T> {
    type State = T::State;

    fn inspect(&self, state: &mut T::State, direction: Direction, bytes: &[u8]) -> Verdict {
        (**self).inspect(state, direction, bytes)
    }
}

/// The inspector of a proxy with nothing to look for: no state, no work.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInspection;

impl Inspector for NoInspection {
    type State = ();

    fn inspect(&self, _state: &mut (), _direction: Direction, _bytes: &[u8]) -> Verdict {
        Verdict::Continue
    }
}

/// One signature as configured:
///
/// ```toml
/// [[signature]]
/// name = "admin-probe"
/// pattern = 'GET /admin\x00'   # a TOML literal string, so the backslash reaches parse_pattern
/// direction = "client-to-server" # or "server-to-client"; absent means both
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// What counters and logs call it; unique.
    pub name: String,
    #[serde(deserialize_with = "deserialize_pattern")]
    pub pattern: Vec<u8>,
    /// Only bytes going this way match; `None` for both ways.
    #[serde(default)]
    pub direction: Option<Direction>,
}

fn deserialize_pattern<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_pattern(&text).map_err(serde::de::Error::custom)
}

/// A pattern string that [`parse_pattern`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the pattern is empty: it would match every byte stream; give at least one byte")]
    Empty,
    #[error(
        "`\\x` at byte {at} needs two hex digits, as in \\x0a; write \\\\ for a literal backslash"
    )]
    BadHexEscape { at: usize },
    #[error(
        "unknown escape `\\{escape}` at byte {at}: use \\xNN for any byte, \\r, \\n, \\t, or \\\\ \
         for a backslash"
    )]
    UnknownEscape { escape: char, at: usize },
    #[error("the pattern ends in a lone backslash; write \\\\ for a literal backslash")]
    TrailingBackslash,
}

/// Reads a pattern written as text: characters stand for their UTF-8 bytes, `\xNN` for the byte
/// NN (two hex digits, either case), `\r`, `\n`, `\t` and `\\` for what they are in C.
pub fn parse_pattern(text: &str) -> Result<Vec<u8>, PatternError> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            let mut utf8 = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        let byte = match chars.next() {
            None => return Err(PatternError::TrailingBackslash),
            Some((_, 'x')) => {
                let digit = |next: Option<(usize, char)>| next.and_then(|(_, d)| d.to_digit(16));
                match (digit(chars.next()), digit(chars.next())) {
                    (Some(high), Some(low)) => (high * 16 + low) as u8,
                    _ => return Err(PatternError::BadHexEscape { at }),
                }
            }
            Some((_, '\\')) => b'\\',
            Some((_, 'r')) => b'\r',
            Some((_, 'n')) => b'\n',
            Some((_, 't')) => b'\t',
            Some((_, escape)) => return Err(PatternError::UnknownEscape { escape, at }),
        };
        bytes.push(byte);
    }
    if bytes.is_empty() {
        return Err(PatternError::Empty);
    }
    Ok(bytes)
}

/// A signature set that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature {index} has no name; give each signature a unique `name`")]
    NoName { index: usize },
    #[error(
        "two signatures are named {name:?}; names must be unique so counters can tell them apart"
    )]
    DuplicateName { name: String },
    #[error("signature {name:?} has an empty pattern, which would match every flow")]
    EmptyPattern { name: String },
    #[error("{count} signatures are more than the {max} an inspector holds")]
    TooMany { count: usize, max: usize },
    #[error("the signature automaton could not be built: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

/// Up to this many bytes of patterns the automaton is a DFA: one table lookup a byte, with a
/// table of 4 bytes per state (about one state a pattern byte, at most) per byte class (at most
/// 256), so about 32 MiB at worst here and a few MiB for typical sets (500 patterns of 8 to 24
/// bytes: 3.6 MiB). Past it a contiguous NFA, compact but 2 to 4 times slower a byte (figures in
/// the `throughput` test). `aho_corasick::AhoCorasick` switches at 100 patterns, a choice for
/// memory; a data plane that scans every byte would rather pay memory, once per inspector.
const DFA_MAX_PATTERN_BYTES: usize = 32 << 10;

/// [`Verdict::Reset`] carries signature indices as `u32`; a million signatures is already far
/// past what a per-flow byte scan is for.
const MAX_SIGNATURES: usize = 1 << 20;

enum Compiled {
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

/// Byte-pattern signatures matched in each direction's stream, across segment boundaries.
///
/// Matches are reported as soon as a pattern's last byte is seen (Aho-Corasick's standard
/// semantics), including patterns that overlap or contain each other; when several end on the
/// same byte the one configured first wins, so order is priority. The first match of a flow
/// resets it.
pub struct SignatureInspector {
    automaton: Compiled,
    names: Vec<String>,
    /// By pattern id, which aho-corasick numbers in configuration order.
    directions: Vec<Option<Direction>>,
    max_pattern_len: usize,
}

impl fmt::Debug for SignatureInspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureInspector")
            .field("names", &self.names)
            .field("automaton", &self.automaton_kind())
            .field("memory_usage", &self.memory_usage())
            .finish()
    }
}

/// A flow's place in each direction's automaton walk: all the inspector remembers of a flow.
/// `None` until the direction's first byte, so that the default needs no automaton.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureState {
    walk: [Option<StateID>; 2],
}

impl SignatureInspector {
    pub fn new(signatures: &[SignatureConfig]) -> Result<SignatureInspector, SignatureError> {
        SignatureInspector::build(signatures, DFA_MAX_PATTERN_BYTES)
    }

    fn build(
        signatures: &[SignatureConfig],
        dfa_max_pattern_bytes: usize,
    ) -> Result<SignatureInspector, SignatureError> {
        if signatures.len() > MAX_SIGNATURES {
            return Err(SignatureError::TooMany {
                count: signatures.len(),
                max: MAX_SIGNATURES,
            });
        }
        let mut names = Vec::with_capacity(signatures.len());
        for (index, signature) in signatures.iter().enumerate() {
            if signature.name.is_empty() {
                return Err(SignatureError::NoName { index });
            }
            if signature.pattern.is_empty() {
                return Err(SignatureError::EmptyPattern {
                    name: signature.name.clone(),
                });
            }
            if names.contains(&signature.name) {
                return Err(SignatureError::DuplicateName {
                    name: signature.name.clone(),
                });
            }
            names.push(signature.name.clone());
        }
        let patterns = signatures.iter().map(|signature| &signature.pattern);
        let pattern_bytes: usize = signatures.iter().map(|s| s.pattern.len()).sum();
        let automaton = if pattern_bytes <= dfa_max_pattern_bytes {
            Compiled::Dfa(
                dfa::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .start_kind(StartKind::Unanchored)
                    .build(patterns)?,
            )
        } else {
            Compiled::Nfa(
                nfa::contiguous::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .build(patterns)?,
            )
        };
        Ok(SignatureInspector {
            automaton,
            names,
            directions: signatures.iter().map(|s| s.direction).collect(),
            max_pattern_len: signatures
                .iter()
                .map(|s| s.pattern.len())
                .max()
                .unwrap_or(0),
        })
    }

    /// Signature names, by the index [`Verdict::Reset`] carries.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, signature: u32) -> Option<&str> {
        self.names.get(signature as usize).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Heap bytes of the automaton, shared by all flows (each flow only adds its
    /// [`SignatureState`]).
    pub fn memory_usage(&self) -> usize {
        match &self.automaton {
            Compiled::Dfa(dfa) => dfa.memory_usage(),
            Compiled::Nfa(nfa) => nfa.memory_usage(),
        }
    }

    #[cfg(test)]
    fn has_prefilter(&self) -> bool {
        match &self.automaton {
            Compiled::Dfa(dfa) => dfa.prefilter().is_some(),
            Compiled::Nfa(nfa) => nfa.prefilter().is_some(),
        }
    }

    fn automaton_kind(&self) -> &'static str {
        match self.automaton {
            Compiled::Dfa(_) => "dfa",
            Compiled::Nfa(_) => "contiguous nfa",
        }
    }

    fn scan<A: Automaton>(
        &self,
        automaton: &A,
        walk: &mut Option<StateID>,
        direction: Direction,
        bytes: &[u8],
    ) -> Verdict {
        let Ok(start) = automaton.start_state(Anchored::No) else {
            // Both builders make unanchored automata; one that is not could match nothing.
            return Verdict::Continue;
        };
        let mut state = walk.unwrap_or(start);
        // A match may start in the last (longest pattern - 1) bytes and end in a later call, so
        // the prefilter, which only vouches for matches inside `bytes`, may not skip those.
        let keep_from = bytes
            .len()
            .saturating_sub(self.max_pattern_len.saturating_sub(1));
        let prefilter = automaton.prefilter();
        let skip = |at: usize| -> usize {
            let Some(prefilter) = prefilter else {
                return at;
            };
            if at >= keep_from {
                return at;
            }
            let span = Span {
                start: at,
                end: bytes.len(),
            };
            let candidate = match prefilter.find_in(bytes, span) {
                Candidate::None => keep_from,
                Candidate::Match(found) => found.start().min(keep_from),
                Candidate::PossibleStartOfMatch(found) => found.min(keep_from),
            };
            candidate.max(at)
        };

        let mut at = if state == start { skip(0) } else { 0 };
        while let Some(&byte) = bytes.get(at) {
            state = automaton.next_state(Anchored::No, state, byte);
            at += 1;
            // Start states are special only when a prefilter is active, so without one this
            // branch is taken on matches alone.
            if automaton.is_special(state) {
                if automaton.is_match(state) {
                    // Several patterns can end on this byte; the first configured wins, whatever
                    // order the automaton keeps them in.
                    let signature = (0..automaton.match_len(state))
                        .map(|index| automaton.match_pattern(state, index))
                        .filter(|pattern| {
                            self.directions
                                .get(pattern.as_usize())
                                .is_some_and(|only| only.is_none_or(|only| only == direction))
                        })
                        .min();
                    if let Some(signature) = signature {
                        *walk = Some(state);
                        return Verdict::Reset {
                            signature: signature.as_u32(),
                        };
                    }
                } else if state == start {
                    at = skip(at);
                }
            }
        }
        *walk = Some(state);
        Verdict::Continue
    }
}

impl Inspector for SignatureInspector {
    type State = SignatureState;

    fn inspect(&self, state: &mut SignatureState, direction: Direction, bytes: &[u8]) -> Verdict {
        if self.names.is_empty() {
            return Verdict::Continue;
        }
        let walk = &mut state.walk[direction.index()];
        match &self.automaton {
            Compiled::Dfa(dfa) => self.scan(dfa, walk, direction, bytes),
            Compiled::Nfa(nfa) => self.scan(nfa, walk, direction, bytes),
        }
    }
}

/// Matches per signature, for the worker's counters (`stats`): one slot per signature of the
/// inspector it was made for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureHits {
    hits: Vec<u64>,
}

impl SignatureHits {
    pub fn new(inspector: &SignatureInspector) -> SignatureHits {
        SignatureHits {
            hits: vec![0; inspector.len()],
        }
    }

    /// Counts a reset verdict against its signature; `Continue` counts nothing.
    pub fn record(&mut self, verdict: Verdict) {
        if let Verdict::Reset { signature } = verdict {
            if let Some(hits) = self.hits.get_mut(signature as usize) {
                *hits += 1;
            }
        }
    }

    /// By signature index, in the order of [`SignatureInspector::names`].
    pub fn hits(&self) -> &[u64] {
        &self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng as Rng;
    use Direction::{ClientToServer, ServerToClient};

    fn signature(name: &str, pattern: &[u8], direction: Option<Direction>) -> SignatureConfig {
        SignatureConfig {
            name: name.to_string(),
            pattern: pattern.to_vec(),
            direction,
        }
    }

    /// The same signatures compiled as a DFA and as a contiguous NFA.
    fn both_kinds(configs: &[SignatureConfig]) -> [SignatureInspector; 2] {
        let dfa = SignatureInspector::build(configs, usize::MAX).unwrap();
        let nfa = SignatureInspector::build(configs, 0).unwrap();
        assert_eq!(
            [dfa.automaton_kind(), nfa.automaton_kind()],
            ["dfa", "contiguous nfa"]
        );
        [dfa, nfa]
    }

    fn inspector(signatures: &[(&str, &[u8])]) -> SignatureInspector {
        let configs: Vec<_> = signatures
            .iter()
            .map(|(name, pattern)| signature(name, pattern, None))
            .collect();
        SignatureInspector::new(&configs).unwrap()
    }

    /// Feeds `chunks` in one direction of a fresh flow; the first verdict that is not
    /// `Continue`, with the index of the chunk that produced it.
    fn feed(
        inspector: &SignatureInspector,
        direction: Direction,
        chunks: &[&[u8]],
    ) -> Option<(usize, u32)> {
        let mut state = SignatureState::default();
        for (i, chunk) in chunks.iter().enumerate() {
            if let Verdict::Reset { signature } = inspector.inspect(&mut state, direction, chunk) {
                return Some((i, signature));
            }
        }
        None
    }

    #[test]
    fn match_within_one_segment() {
        let signatures = inspector(&[("probe", b"GET /admin")]);
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"xxGET /admin HTTP/1.1"]),
            Some((0, 0))
        );
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"GET /admin"]),
            Some((0, 0))
        );
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"GET /index HTTP/1.1"]),
            None
        );
    }

    #[test]
    fn match_split_across_two_segments_at_every_position() {
        let pattern = b"\x16\x03\x01evil-sni.example";
        let mut stream = b"some leading bytes ".to_vec();
        stream.extend_from_slice(pattern);
        stream.extend_from_slice(b" and trailing ones");
        let first = stream.len() - pattern.len() - 18;
        for signatures in both_kinds(&[signature("sni", pattern, None)]) {
            for cut in 0..=stream.len() {
                let (head, tail) = stream.split_at(cut);
                let expected_chunk = if cut >= first + pattern.len() { 0 } else { 1 };
                assert_eq!(
                    feed(&signatures, ServerToClient, &[head, tail]),
                    Some((expected_chunk, 0)),
                    "{signatures:?}: cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn match_split_across_three_segments_at_every_pair_of_positions() {
        let pattern = b"abcabd";
        // A near miss ("abcab" then 'c') right before the match exercises the failure links.
        let stream = b"xxabcabcabdyy";
        for signatures in both_kinds(&[signature("p", pattern, None)]) {
            for first in 0..=stream.len() {
                for second in first..=stream.len() {
                    let chunks = [&stream[..first], &stream[first..second], &stream[second..]];
                    let verdict = feed(&signatures, ClientToServer, &chunks);
                    let expected_chunk = if second < 11 {
                        2
                    } else if first < 11 {
                        1
                    } else {
                        0
                    };
                    assert_eq!(verdict, Some((expected_chunk, 0)), "cuts {first}, {second}");
                }
            }
            // Every byte its own segment.
            let singles: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(feed(&signatures, ClientToServer, &singles), Some((10, 0)));
        }
    }

    #[test]
    fn near_misses_do_not_match() {
        let configs = [
            signature("p", b"abcabd", None),
            signature("q", b"\x00\xffz", None),
        ];
        for signatures in both_kinds(&configs) {
            near_misses_do_not_match_in(&signatures);
        }
    }

    fn near_misses_do_not_match_in(signatures: &SignatureInspector) {
        let near: [&[u8]; 7] = [
            b"abcab",
            b"bcabd",
            b"abcabcabc",
            b"abcaBd",
            b"abc abd",
            b"\x00\xff",
            b"\xffz\x00\xff\x00z",
        ];
        for miss in near {
            assert_eq!(feed(signatures, ClientToServer, &[miss]), None, "{miss:?}");
            let halves = miss.split_at(miss.len() / 2);
            assert_eq!(
                feed(signatures, ClientToServer, &[halves.0, halves.1]),
                None
            );
        }
        // A prefix at the end of one call and the rest after unrelated bytes is no match either.
        assert_eq!(feed(signatures, ClientToServer, &[b"..abc", b"-abd"]), None);
    }

    #[test]
    fn directions_are_separate_streams_and_filters_apply() {
        let signatures = SignatureInspector::new(&[
            signature("upload", b"secret-upload", Some(ClientToServer)),
            signature("banner", b"EvilServer/1.0", Some(ServerToClient)),
            signature("both", b"nasty", None),
        ])
        .unwrap();
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"a secret-upload"]),
            Some((0, 0))
        );
        assert_eq!(
            feed(&signatures, ServerToClient, &[b"a secret-upload"]),
            None
        );
        assert_eq!(
            feed(&signatures, ServerToClient, &[b"Server: EvilServer/1.0"]),
            Some((0, 1))
        );
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"Server: EvilServer/1.0"]),
            None
        );
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"so nasty"]),
            Some((0, 2))
        );
        assert_eq!(
            feed(&signatures, ServerToClient, &[b"so nasty"]),
            Some((0, 2))
        );

        // Half a pattern each way does not add up to a match: each direction walks on its own.
        let mut state = SignatureState::default();
        let halves = [b"nas".as_slice(), b"ty".as_slice()];
        assert_eq!(
            signatures.inspect(&mut state, ClientToServer, halves[0]),
            Verdict::Continue
        );
        assert_eq!(
            signatures.inspect(&mut state, ServerToClient, halves[1]),
            Verdict::Continue
        );
        assert_eq!(
            signatures.inspect(&mut state, ClientToServer, halves[1]),
            Verdict::Reset { signature: 2 }
        );
    }

    #[test]
    fn a_filtered_pattern_does_not_hide_one_ending_on_the_same_byte() {
        // "xabc" (server to client only) and "bc" (both) end on the same byte; going client to
        // server only the second applies. Going server to client both do, and the one
        // configured first wins, in either order.
        let long = signature("long", b"xabc", Some(ServerToClient));
        let short = signature("short", b"bc", None);
        for signatures in both_kinds(&[long.clone(), short.clone()]) {
            let chunks: [&[u8]; 2] = [b"--xa", b"bc"];
            assert_eq!(feed(&signatures, ClientToServer, &chunks), Some((1, 1)));
            assert_eq!(feed(&signatures, ServerToClient, &chunks), Some((1, 0)));
        }
        for signatures in both_kinds(&[short, long]) {
            let chunks: [&[u8]; 2] = [b"--xa", b"bc"];
            assert_eq!(feed(&signatures, ClientToServer, &chunks), Some((1, 0)));
            assert_eq!(feed(&signatures, ServerToClient, &chunks), Some((1, 0)));
        }
    }

    #[test]
    fn several_signatures_report_the_one_that_matched() {
        let signatures = inspector(&[
            ("one", b"alpha"),
            ("two", b"beta"),
            ("three", b"gamma"),
            ("contains-two", b"alphabetagamma"),
        ]);
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"...beta..."]),
            Some((0, 1))
        );
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"...gam", b"ma"]),
            Some((1, 2))
        );
        // The earliest ending match wins: "alpha" ends long before the long pattern.
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"alphabetagamma"]),
            Some((0, 0))
        );
        assert_eq!(signatures.name(2), Some("three"));
        assert_eq!(signatures.name(9), None);
        assert_eq!(signatures.len(), 4);
    }

    #[test]
    fn matches_agree_with_a_naive_search_for_random_streams_and_cuts() {
        // Small alphabets so that partial matches, overlaps and failure transitions are common.
        let mut rng = Rng::new(42);
        for (round, count) in [1usize, 3, 40, 150]
            .into_iter()
            .cycle()
            .take(80)
            .enumerate()
        {
            let configs: Vec<_> = (0..count)
                .map(|i| {
                    let len = 1 + rng.index(if i % 5 == 0 { 12 } else { 4 });
                    let pattern: Vec<u8> = (0..len).map(|_| b'a' + rng.below(4) as u8).collect();
                    let direction = match rng.below(3) {
                        0 => Some(ClientToServer),
                        1 => Some(ServerToClient),
                        _ => None,
                    };
                    signature(&format!("s{i}"), &pattern, direction)
                })
                .collect();
            for signatures in both_kinds(&configs) {
                for _ in 0..20 {
                    let direction = if rng.chance(50) {
                        ClientToServer
                    } else {
                        ServerToClient
                    };
                    let len = rng.index(80);
                    let stream: Vec<u8> = (0..len).map(|_| b'a' + rng.below(6) as u8).collect();
                    let mut chunks = Vec::new();
                    let mut at = 0;
                    while at < stream.len() {
                        let end = (at + rng.index(9)).min(stream.len());
                        chunks.push(&stream[at..end]);
                        at = end;
                    }
                    // The earliest end of an applicable pattern, and the first configured
                    // pattern ending there.
                    let expected = (1..=stream.len()).find_map(|end| {
                        let signature = configs.iter().position(|c| {
                            c.direction.is_none_or(|d| d == direction)
                                && stream[..end].ends_with(&c.pattern)
                        })?;
                        Some((end, signature as u32))
                    });
                    let verdict = feed(&signatures, direction, &chunks);
                    let reported = verdict.map(|(chunk, signature)| {
                        let chunk_end: usize = chunks[..=chunk].iter().map(|c| c.len()).sum();
                        (chunk_end - chunks[chunk].len(), chunk_end, signature)
                    });
                    match (expected, reported) {
                        (None, None) => {}
                        (Some((end, signature)), Some((chunk_start, chunk_end, reported))) => {
                            assert_eq!(reported, signature, "round {round}: {stream:?}");
                            assert!(
                                chunk_start < end && end <= chunk_end,
                                "round {round}: reported in the wrong call"
                            );
                        }
                        _ => panic!(
                            "round {round}, {:?}: expected {expected:?}, got {reported:?} for \
                             {stream:?} in {chunks:?}",
                            signatures.automaton_kind()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn long_runs_without_candidates_keep_their_tail() {
        // The prefilter may skip what cannot start a match, but never the last bytes of a call,
        // where a pattern can begin and end in the next one.
        let mut filler = vec![b'z'; 4096];
        filler.extend_from_slice(b"\x00\x01\x02");
        let rare = signature("rare", b"\x00\x01\x02\x03\x04\x05\x06\x07", None);
        for signatures in both_kinds(&[rare]) {
            assert!(
                signatures.has_prefilter(),
                "{signatures:?}: nothing to skip with"
            );
            assert_eq!(
                feed(
                    &signatures,
                    ClientToServer,
                    &[&filler, &[3, 4], &[5, 6, 7, 8]]
                ),
                Some((2, 0))
            );
            assert_eq!(
                feed(&signatures, ClientToServer, &[&filler, &[3, 4, 9, 5, 6, 7]]),
                None
            );
        }
    }

    #[test]
    fn no_signatures_never_match() {
        let signatures = SignatureInspector::new(&[]).unwrap();
        assert!(signatures.is_empty());
        assert_eq!(
            feed(&signatures, ClientToServer, &[b"anything at all"]),
            None
        );
        let mut unit = ();
        assert_eq!(
            NoInspection.inspect(&mut unit, ServerToClient, b"x"),
            Verdict::Continue
        );
    }

    #[test]
    fn per_flow_state_is_two_state_ids() {
        // Two `Option<StateID>` (a u32 and a tag each): 16 bytes per flow for any signature set,
        // against a tail buffer of (longest pattern - 1) bytes per direction.
        assert_eq!(std::mem::size_of::<SignatureState>(), 16);
        assert_eq!(std::mem::size_of::<<NoInspection as Inspector>::State>(), 0);
    }

    #[test]
    fn parse_pattern_reads_escapes() {
        assert_eq!(parse_pattern("GET /").unwrap(), b"GET /");
        assert_eq!(parse_pattern(r"\x00\xff\xAb").unwrap(), [0x00, 0xff, 0xab]);
        assert_eq!(parse_pattern(r"a\\b\r\n\t").unwrap(), b"a\\b\r\n\t");
        assert_eq!(parse_pattern("é").unwrap(), "é".as_bytes());
        assert_eq!(parse_pattern(r"\x41\x42C").unwrap(), b"ABC");
    }

    #[test]
    fn parse_pattern_explains_errors() {
        assert_eq!(parse_pattern(""), Err(PatternError::Empty));
        assert_eq!(
            parse_pattern(r"ab\x4"),
            Err(PatternError::BadHexEscape { at: 2 })
        );
        assert_eq!(
            parse_pattern(r"\xg0"),
            Err(PatternError::BadHexEscape { at: 0 })
        );
        assert_eq!(
            parse_pattern(r"\x"),
            Err(PatternError::BadHexEscape { at: 0 })
        );
        assert_eq!(
            parse_pattern(r"a\qb"),
            Err(PatternError::UnknownEscape { escape: 'q', at: 1 })
        );
        assert_eq!(parse_pattern("abc\\"), Err(PatternError::TrailingBackslash));
        let message = parse_pattern(r"\x4").unwrap_err().to_string();
        assert!(message.contains("two hex digits"), "{message}");
        let message = parse_pattern(r"\d").unwrap_err().to_string();
        assert!(
            message.contains(r"`\d`") && message.contains(r"\xNN"),
            "{message}"
        );
    }

    #[test]
    fn configuration_is_read_and_checked() {
        #[derive(Deserialize)]
        struct File {
            signature: Vec<SignatureConfig>,
        }
        let file: File = toml::from_str(
            r#"
            [[signature]]
            name = "admin-probe"
            pattern = 'GET /admin\x00'
            direction = "client-to-server"

            [[signature]]
            name = "anywhere"
            pattern = "plain"
            "#,
        )
        .unwrap();
        assert_eq!(
            file.signature,
            [
                signature("admin-probe", b"GET /admin\x00", Some(ClientToServer)),
                signature("anywhere", b"plain", None),
            ]
        );

        let bad = toml::from_str::<File>("[[signature]]\nname = \"x\"\npattern = 'a\\q'\n");
        let message = bad.err().unwrap().to_string();
        assert!(message.contains("unknown escape"), "{message}");

        let duplicate = [signature("x", b"a", None), signature("x", b"b", None)];
        assert!(matches!(
            SignatureInspector::new(&duplicate),
            Err(SignatureError::DuplicateName { name }) if name == "x"
        ));
        assert!(matches!(
            SignatureInspector::new(&[signature("", b"a", None)]),
            Err(SignatureError::NoName { index: 0 })
        ));
        assert!(matches!(
            SignatureInspector::new(&[signature("e", b"", None)]),
            Err(SignatureError::EmptyPattern { .. })
        ));
    }

    #[test]
    fn hits_are_counted_per_signature() {
        let signatures = inspector(&[("a", b"aaa"), ("b", b"bbb")]);
        let mut hits = SignatureHits::new(&signatures);
        for stream in [b"xbbb".as_slice(), b"aaa", b"bbbb", b"none"] {
            let mut state = SignatureState::default();
            hits.record(signatures.inspect(&mut state, ClientToServer, stream));
        }
        hits.record(Verdict::Reset { signature: 7 }); // not ours: ignored
        assert_eq!(hits.hits(), [1, 2]);
    }

    /// A sanity figure, not a benchmark: `cargo test --release -p tollgate-core --lib
    /// inspect::tests::throughput -- --ignored --nocapture`. 64 MiB in 1448-byte segments, one
    /// core of this machine (2-vCPU AMD EPYC VM), release build, in GB/s:
    ///
    /// | signatures                        | automaton          | random bytes | HTTP-like text |
    /// |-----------------------------------|--------------------|--------------|----------------|
    /// | 20 random, 8-24 bytes             | DFA, 138 KiB       | 0.64         | 0.64           |
    /// | 500 random                        | DFA, 3.6 MiB       | 0.53         | 0.64           |
    /// | 5000 random                       | contiguous NFA, 2.3 MiB | 0.13    | 0.25           |
    /// | 3 whose first bytes are common    | DFA and prefilter  | 2.9          | 0.40           |
    ///
    /// The DFA walk costs one dependent load a byte (about 1.5 ns). The prefilter (memchr on
    /// first bytes) lifts the last row from 0.60 to 2.9 on bytes where its candidates are rare,
    /// and still edges out the plain walk (0.37) on text where they are everywhere.
    #[test]
    #[ignore = "prints throughput figures; run it in release"]
    fn throughput() {
        let mut rng = Rng::new(1);
        let random: Vec<u8> = (0..64 << 20).map(|_| rng.u32() as u8).collect();
        let words = [
            "GET ",
            "/index.html ",
            "HTTP/1.1\r\n",
            "Host: ",
            "example.com ",
            "Accept: ",
            "*/* ",
        ];
        let mut text = Vec::with_capacity(64 << 20);
        while text.len() < 64 << 20 {
            text.extend_from_slice(words[rng.index(words.len())].as_bytes());
        }
        // Random printable patterns (no prefilter: too many different first bytes), then three
        // whose first bytes are common in the text (a memchr3 prefilter that keeps stopping).
        let mut sets: Vec<Vec<SignatureConfig>> = [20, 500, 5000]
            .into_iter()
            .map(|count| {
                (0..count)
                    .map(|i| {
                        let pattern: Vec<u8> = (0..8 + rng.index(16))
                            .map(|_| b' ' + rng.below(95) as u8)
                            .collect();
                        signature(&format!("s{i}"), &pattern, None)
                    })
                    .collect()
            })
            .collect();
        sets.push(vec![
            signature("host", b"Host: evil.example", None),
            signature("admin", b"GET /admin", None),
            signature("dots", b"example.com/../", None),
        ]);
        for configs in sets {
            let count = configs.len();
            let signatures = SignatureInspector::new(&configs).unwrap();
            for (kind, stream) in [("random bytes", &random), ("http-like text", &text)] {
                let mut state = SignatureState::default();
                let started = std::time::Instant::now();
                let mut resets = 0;
                for segment in stream.chunks(1448) {
                    if signatures.inspect(&mut state, ClientToServer, segment) != Verdict::Continue
                    {
                        resets += 1;
                        state = SignatureState::default();
                    }
                }
                let elapsed = started.elapsed();
                println!(
                    "{count} signatures, {} of {} KiB{}, {kind}: {:.2} GB/s, {resets} matches",
                    signatures.automaton_kind(),
                    signatures.memory_usage() >> 10,
                    if signatures.has_prefilter() {
                        " with a prefilter"
                    } else {
                        ""
                    },
                    stream.len() as f64 / elapsed.as_secs_f64() / 1e9
                );
            }
        }
    }
}
