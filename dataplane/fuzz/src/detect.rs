//! The `detect` target: the payloads of a proxied flow's first segments, each way, through
//! IPsec-over-TCP detection.
//!
//! An input is a list of payloads, each a byte (bit 7: from the server; bits 0-6: length, 127
//! meaning a 16-bit length follows) and the payload. What detection promises: an answer from
//! each payload alone and the state before it, nothing learnt from an empty payload, and a
//! decision within a handful of segments, so a flow is not watched for ever.

use tollgate_core::detect::{Detection, IpsecDetector, IpsecFraming};

use crate::cursor::Cursor;

/// Payload segments detection may look at without deciding (its `MAX_SEGMENTS`).
const MAX_UNDECIDED: usize = 8;

/// One payload of the script: `(from the client, bytes)`.
pub fn encode(payloads: &[(bool, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(from_client, payload) in payloads {
        let direction = if from_client { 0 } else { 0x80 };
        if payload.len() < 127 {
            out.push(direction | payload.len() as u8);
        } else {
            out.push(direction | 127);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
    }
    out
}

/// Runs one input; returns the decision, if one came.
pub fn check(data: &[u8]) -> Option<Detection> {
    let mut cursor = Cursor::new(data);
    let mut detector = IpsecDetector::default();
    let mut looked_at = 0;
    while !cursor.is_empty() {
        let head = cursor.u8();
        let from_client = head & 0x80 == 0;
        let len = match head & 0x7f {
            127 => usize::from(cursor.u16()),
            n => usize::from(n),
        };
        let payload = cursor.bytes(len);
        let before = detector;
        let detection = detector.on_payload(from_client, payload);
        let mut replay = before;
        assert_eq!(
            replay.on_payload(from_client, payload),
            detection,
            "the same payload in the same state decides differently"
        );
        if payload.is_empty() {
            assert_eq!(detection, Detection::Undecided);
            assert_eq!(detector, before, "an empty payload changed the state");
            continue;
        }
        looked_at += 1;
        match detection {
            Detection::Undecided => assert!(
                looked_at < MAX_UNDECIDED,
                "{looked_at} payloads and still undecided"
            ),
            Detection::IpsecOverTcp(framing) => {
                assert_eq!(IpsecFraming::from_code(framing as u8), Some(framing));
                assert!(!framing.name().is_empty());
                // The data plane stops looking once it knows.
                return Some(detection);
            }
            Detection::NotIpsec => return Some(detection),
        }
    }
    None
}
