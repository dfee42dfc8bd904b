//! Ethernet II frames and the 802.1Q / 802.1ad VLAN tags between the source address and the
//! EtherType.
//!
//! The NIC strips the FCS and may hand us frames shorter than the 60-byte minimum (virtual
//! devices do), so neither is checked here.

use super::field::{array, be16};
use super::Malformed;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// 802.1Q customer VLAN tag (C-tag).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1ad service VLAN tag (S-tag), the outer tag of QinQ.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
/// S-tag TPID used before 802.1ad was published; some switches still send it.
pub const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;

/// Destination, source and EtherType, without VLAN tags.
pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
/// QinQ is as deep as the data plane goes; deeper stacks are rejected rather than half-parsed.
pub const MAX_VLAN_TAGS: usize = 2;

/// Offset of the first tag's TPID, or of the EtherType when untagged.
const TYPE_OFFSET: usize = 12;

/// True for the TPIDs that announce a VLAN tag rather than a payload type.
#[inline]
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_LEGACY
    )
}

/// One VLAN tag: the TPID that announced it and its tag control information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN identifier.
    #[inline]
    pub fn id(self) -> u16 {
        self.tci & 0x0fff
    }

    /// Priority code point (802.1p class of service).
    #[inline]
    pub fn priority(self) -> u8 {
        (self.tci >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn drop_eligible(self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// A view of an Ethernet II frame with up to two VLAN tags.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
    vlan_tags: u8,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks that the header and every VLAN tag fit in `buffer`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::EthernetTruncated);
        }
        let mut vlan_tags = 0u8;
        let mut type_offset = TYPE_OFFSET;
        while is_vlan_tpid(be16(bytes, type_offset)) {
            if usize::from(vlan_tags) == MAX_VLAN_TAGS {
                return Err(Malformed::VlanTooManyTags);
            }
            type_offset += VLAN_TAG_LEN;
            if bytes.len() < type_offset + 2 {
                return Err(Malformed::VlanTruncated);
            }
            vlan_tags += 1;
        }
        Ok(EthernetFrame { buffer, vlan_tags })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), 0)
    }

    #[inline]
    pub fn src(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), 6)
    }

    #[inline]
    pub fn vlan_tag_count(&self) -> usize {
        usize::from(self.vlan_tags)
    }

    /// The outermost tag (the S-tag of a QinQ frame).
    #[inline]
    pub fn outer_vlan(&self) -> Option<VlanTag> {
        self.vlan_tag(0)
    }

    /// The second tag of a QinQ frame (its C-tag).
    #[inline]
    pub fn inner_vlan(&self) -> Option<VlanTag> {
        self.vlan_tag(1)
    }

    /// The outermost VLAN identifier, the one the frame was switched on.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.outer_vlan().map(VlanTag::id)
    }

    #[inline]
    fn vlan_tag(&self, index: u8) -> Option<VlanTag> {
        if index >= self.vlan_tags {
            return None;
        }
        let bytes = self.buffer.as_ref();
        let at = TYPE_OFFSET + usize::from(index) * VLAN_TAG_LEN;
        Some(VlanTag {
            tpid: be16(bytes, at),
            tci: be16(bytes, at + 2),
        })
    }

    /// The EtherType after any VLAN tags: what the payload is.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len() - 2)
    }

    /// Bytes before the payload, VLAN tags included: the offset of the layer 3 header.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + usize::from(self.vlan_tags) * VLAN_TAG_LEN
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header and tags, including any padding to the minimum frame size.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[self.header_len()..]
    }
}

/// A MAC address written as six colon-separated pairs of hex digits, e.g. 02:00:00:00:00:01.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("'{s}' is not a MAC address like 02:00:00:00:00:01");
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    bytes.try_into().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_frames::{ethernet, MAC_A, MAC_B};

    #[test]
    fn untagged() {
        let bytes = ethernet(&[], ETHERTYPE_IPV4, &[1, 2, 3]);
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.dst(), MAC_B);
        assert_eq!(frame.src(), MAC_A);
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(frame.vlan_tag_count(), 0);
        assert_eq!(frame.outer_vlan(), None);
        assert_eq!(frame.vlan_id(), None);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload(), &[1, 2, 3]);
    }

    #[test]
    fn single_tag() {
        // PCP 5, DEI set, VID 100.
        let tci = (5 << 13) | 0x1000 | 100;
        let bytes = ethernet(&[(ETHERTYPE_VLAN, tci)], ETHERTYPE_IPV6, &[9]);
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        let tag = frame.outer_vlan().unwrap();
        assert_eq!(tag.tpid, ETHERTYPE_VLAN);
        assert_eq!(tag.id(), 100);
        assert_eq!(tag.priority(), 5);
        assert!(tag.drop_eligible());
        assert_eq!(frame.inner_vlan(), None);
        assert_eq!(frame.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.payload(), &[9]);
    }

    #[test]
    fn double_tag() {
        for outer in [ETHERTYPE_QINQ, ETHERTYPE_QINQ_LEGACY, ETHERTYPE_VLAN] {
            let bytes = ethernet(&[(outer, 10), (ETHERTYPE_VLAN, 20)], ETHERTYPE_ARP, &[]);
            let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
            assert_eq!(frame.vlan_id(), Some(10));
            assert_eq!(frame.outer_vlan().unwrap().tpid, outer);
            assert_eq!(frame.inner_vlan().unwrap().id(), 20);
            assert_eq!(frame.ethertype(), ETHERTYPE_ARP);
            assert_eq!(frame.header_len(), 22);
            assert!(frame.payload().is_empty());
        }
    }

    #[test]
    fn three_tags_rejected() {
        let tags = [
            (ETHERTYPE_QINQ, 1),
            (ETHERTYPE_VLAN, 2),
            (ETHERTYPE_VLAN, 3),
        ];
        let bytes = ethernet(&tags, ETHERTYPE_IPV4, &[0; 40]);
        assert_eq!(
            EthernetFrame::new_checked(&bytes[..]).unwrap_err(),
            Malformed::VlanTooManyTags
        );
    }

    #[test]
    fn truncations() {
        let bytes = ethernet(
            &[(ETHERTYPE_QINQ, 1), (ETHERTYPE_VLAN, 2)],
            ETHERTYPE_IPV4,
            &[],
        );
        for len in 0..bytes.len() {
            let expected = if len < HEADER_LEN {
                Malformed::EthernetTruncated
            } else {
                Malformed::VlanTruncated
            };
            assert_eq!(
                EthernetFrame::new_checked(&bytes[..len]).unwrap_err(),
                expected,
                "{len}"
            );
        }
        assert!(EthernetFrame::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn owned_buffer() {
        let frame = EthernetFrame::new_checked(ethernet(&[], ETHERTYPE_LLDP, &[])).unwrap();
        assert_eq!(frame.ethertype(), ETHERTYPE_LLDP);
        assert_eq!(frame.into_inner().len(), 14);
    }

    #[test]
    fn mac_addresses_parse_as_six_hex_pairs() {
        assert_eq!(parse_mac("02:00:0a:FF:00:01"), Ok([2, 0, 0x0a, 0xff, 0, 1]));
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "",
        ] {
            assert!(
                parse_mac(bad).unwrap_err().contains("is not a MAC address"),
                "{bad}"
            );
        }
    }
}
