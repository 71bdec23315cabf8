//! smoltcp's checksum, as patched to add 32-bit words (third_party/smoltcp,
//! PATCHES.md round 3), against RFC 1071's 16-bit reference: IPv4 and TCP
//! packets of every length parity and random contents, built by smoltcp,
//! must carry the checksums the reference computes.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

/// RFC 1071, 16-bit words, the sum's complement.
fn reference(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = 0;
    for w in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn tcp_and_ip_checksums_match_the_16_bit_reference() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (src, dst) = (
        Ipv4Address::new(10, 77, 0, 2),
        Ipv4Address::new(10, 77, 0, 3),
    );
    for case in 0..3000 {
        let len = match case {
            0..=63 => case,
            _ => (rng.next() % 1381) as usize,
        };
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Extreme bytes too: the 64-bit sum's carries.
        let payload = if case % 7 == 0 {
            vec![0xff; len]
        } else {
            payload
        };
        let tcp = TcpRepr {
            src_port: rng.next() as u16,
            dst_port: 22,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(rng.next() as i32),
            ack_number: Some(TcpSeqNumber(rng.next() as i32)),
            window_len: rng.next() as u16,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(&mut buf);
        ip.emit(&mut packet, &caps);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &caps,
        );

        let header_len = ip.buffer_len();
        let mut header = buf[..header_len].to_vec();
        header[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(
            u16::from_be_bytes([buf[10], buf[11]]),
            reference(&[&header]),
            "IPv4 header checksum, case {case}"
        );
        let segment = &buf[header_len..];
        let mut zeroed = segment.to_vec();
        zeroed[16..18].copy_from_slice(&[0, 0]);
        let seg_len = (segment.len() as u16).to_be_bytes();
        let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, 6], &seg_len[..]].concat();
        assert_eq!(
            u16::from_be_bytes([segment[16], segment[17]]),
            reference(&[&pseudo, &zeroed]),
            "TCP checksum, {len}-byte payload, case {case}"
        );
        // And smoltcp's own verification agrees.
        let packet = Ipv4Packet::new_checked(&buf[..]).expect("valid");
        assert!(packet.verify_checksum(), "case {case}");
        let segment = TcpPacket::new_checked(packet.payload()).expect("valid");
        assert!(
            segment.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)),
            "case {case}"
        );
    }
}
