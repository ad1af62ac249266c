// SPDX-License-Identifier: Apache-2.0
/*
 * ice-ingress kernel path v2 (docs/fast-path.md, "eBPF"): a tc (clsact) ingress program that
 * forwards established media of the proxy's sessions without the IP stack. Node decides which
 * sessions are established and writes one `flows` entry per session and direction
 * (src/fastpath/ebpf/map-layout.ts is the userspace side of every layout below); the program
 * rewrites the datagram to what Node's sockets would have sent, fixes both checksums
 * incrementally and hands it to the next hop with bpf_redirect_neigh(). Everything else (a miss,
 * STUN, fragments, zero UDP checksums, IP options, TTL 1, GSO packets, non-IPv4) goes to the
 * stack untouched (TC_ACT_OK), i.e. to Node.
 *
 * Build: `npm run build:bpf` (clang -O2 -g -target bpf). The layouts are checked against the
 * TypeScript side by the _Static_asserts at the end and by test/fastpath/ebpf-layout.test.ts.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif

/* A datagram's UDP 4-tuple as it arrives (network byte order): the key of both directions. */
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

/* What one direction of a session rewrites the datagram to, and where it goes. */
struct flow_value {
	/* The new addresses and ports (network byte order). */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	/*
	 * Checksum differences (__wsum, host byte order, as the kernel's csum helpers take them),
	 * constant per session and direction because the key fixes the old values (RFC 1624):
	 * l3_diff: the IPv4 header's (both addresses, and the TTL decremented by one);
	 * addr_diff: the UDP pseudo-header's (both addresses);
	 * port_diff: the UDP header's (both ports; 0 when neither changes).
	 */
	__u32 l3_diff;
	__u32 addr_diff;
	__u32 port_diff;
	/* The next hop (network byte order) and the interface it is reached on. */
	__be32 nexthop;
	__u32 ifindex;
	/* This direction's entry of `counts`. */
	__u32 slot;
	__u32 flags;
};

/* flow_value.flags: the client -> backend direction (its counter's time feeds idle expiry). */
#define FLOW_UP 1

/*
 * One direction's counters. A 64-byte entry of its own, so the two directions of a session
 * (often handled by two CPUs) never share a cache line; the array is BPF_F_MMAPABLE (its values
 * start page-aligned) and Node reads it through a mapping, without a system call.
 */
struct counter {
	__u64 packets;
	__u64 bytes; /* UDP payload bytes, as Node counts them. */
	/*
	 * bpf_ktime_get_coarse_ns() of the last datagram: CLOCK_MONOTONIC_COARSE, CLOCK_MONOTONIC
	 * as of the last timer tick (behind it by less than one tick), which is all idle expiry
	 * needs and costs less per datagram than bpf_ktime_get_ns() (docs/fast-path.md).
	 */
	__u64 last_ns;
	__u64 pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 65536); /* set by the loader from --max-sessions */
} ice_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 65536); /* set by the loader from --max-sessions */
	__uint(map_flags, BPF_F_MMAPABLE);
} ice_counts SEC(".maps");

#define IP_OFF sizeof(struct ethhdr)
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define UDP_CSUM_OFF (UDP_OFF + offsetof(struct udphdr, check))
/* Ethernet + IPv4 without options + UDP + the first payload byte. */
#define NEED (UDP_OFF + sizeof(struct udphdr) + 1)

/*
 * csum_replace_by_diff() of include/net/checksum.h (what bpf_l3_csum_replace(skb, off, 0, diff, 0)
 * runs), here without the helper call: csum_fold(csum_add(diff, ~csum_unfold(check))). The IPv4
 * header checksum has no skb->csum to keep in step (a header change and its checksum's change
 * cancel in a ones'-complement sum over the packet), so nothing else is due.
 */
static __always_inline __u16 csum_replace_by_diff(__u16 check, __u32 diff)
{
	__u64 s = (__u64)diff + (__u32)~(__u32)check;
	s = (s & 0xffffffff) + (s >> 32); /* csum_add: the end-around carry */
	s = (s & 0xffff) + (s >> 16);     /* csum_fold */
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("tc")
int ice_ingress(struct __sk_buff *skb)
{
	/* Cheap exits first: not for this host, not IPv4, a GSO aggregate (its headers are
	 * rewritten per segment later: not ours to touch), too short for the headers we read. */
	if (skb->pkt_type != PACKET_HOST || skb->protocol != bpf_htons(ETH_P_IP) ||
	    skb->gso_size != 0 || skb->len < NEED)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + NEED > end) {
		/* Headers not all in the linear part: pull them (a no-op cost when they are). */
		if (bpf_skb_pull_data(skb, NEED) < 0)
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		if (data + NEED > end)
			return TC_ACT_OK;
	}
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	__u8 first = *((__u8 *)data + UDP_OFF + sizeof(struct udphdr));
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	/*
	 * Never on the kernel path:
	 * - IP fragments (MF or an offset): only the first carries the ports; the stack reassembles
	 *   them for Node;
	 * - a zero UDP checksum ("none", RFC 768): an incremental update would turn it into a
	 *   wrong one;
	 * - STUN, first payload byte 0-3 (RFC 7983 §7): consent checks, rebinding and ICE restart
	 *   are Node's;
	 * - TTL 1 or 0: forwarding would have to drop it and send an ICMP error; the stack delivers
	 *   it to Node, which relays it as a new datagram.
	 */
	if ((ip->frag_off & bpf_htons(0x3fff)) != 0 || udp->check == 0 || first <= 3 || ip->ttl <= 1)
		return TC_ACT_OK;

	struct flow_key key = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = udp->source,
		.dport = udp->dest,
	};
	struct flow_value *v = bpf_map_lookup_elem(&ice_flows, &key);
	if (!v)
		return TC_ACT_OK; /* not a kernel-path session: the stack, Node */
	__u32 slot = v->slot;
	struct counter *c = bpf_map_lookup_elem(&ice_counts, &slot);
	if (!c)
		return TC_ACT_OK; /* never: the loader sizes the array for every slot it hands out */
	__u64 payload = (__u64)bpf_ntohs(ip->tot_len) - sizeof(struct iphdr) - sizeof(struct udphdr);

	/* The new header fields, written in place (the verifier made the head writable). */
	ip->saddr = v->saddr;
	ip->daddr = v->daddr;
	ip->ttl--;
	ip->check = csum_replace_by_diff(ip->check, v->l3_diff);
	udp->source = v->sport;
	udp->dest = v->dport;
	/*
	 * Checksums, by difference (RFC 1624): the IPv4 header's by l3_diff (above, in the program);
	 * the UDP checksum by the pseudo-header's difference (BPF_F_PSEUDO_HDR: for a datagram whose checksum is still to be
	 * completed, CHECKSUM_PARTIAL, only that seed moves, and for CHECKSUM_COMPLETE skb->csum
	 * follows) and by the ports' (not in the pseudo-header: nothing for a seed). A result of 0 is
	 * written as 0xffff (BPF_F_MARK_MANGLED_0; RFC 768). A helper fails only on a packet it cannot
	 * write, and this one is half rewritten by then: drop it rather than deliver it corrupt.
	 */
	if (bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, v->addr_diff,
				BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) < 0)
		return TC_ACT_SHOT;
	if (v->port_diff != 0 &&
	    bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, v->port_diff, BPF_F_MARK_MANGLED_0) < 0)
		return TC_ACT_SHOT;

	/* One direction's entry, so the two directions rarely touch one line: atomic adds. */
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, payload);
	if (v->flags & FLOW_UP)
		c->last_ns = bpf_ktime_get_coarse_ns();

	/* To the next hop: its L2 address from the neighbour table, as a routed packet's would be. */
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = v->nexthop };
	return bpf_redirect_neigh(v->ifindex, &nh, sizeof(nh), 0);
}

/*
 * The layouts src/fastpath/ebpf/map-layout.ts writes and reads (test/fastpath/ebpf-layout.test.ts
 * reads these lines and compares them with the TypeScript constants).
 */
_Static_assert(sizeof(struct flow_key) == 12, "flow_key size");
_Static_assert(sizeof(struct flow_value) == 40, "flow_value size");
_Static_assert(offsetof(struct flow_value, l3_diff) == 12, "flow_value.l3_diff");
_Static_assert(offsetof(struct flow_value, addr_diff) == 16, "flow_value.addr_diff");
_Static_assert(offsetof(struct flow_value, port_diff) == 20, "flow_value.port_diff");
_Static_assert(offsetof(struct flow_value, nexthop) == 24, "flow_value.nexthop");
_Static_assert(offsetof(struct flow_value, ifindex) == 28, "flow_value.ifindex");
_Static_assert(offsetof(struct flow_value, slot) == 32, "flow_value.slot");
_Static_assert(offsetof(struct flow_value, flags) == 36, "flow_value.flags");
_Static_assert(sizeof(struct counter) == 64, "counter size");
_Static_assert(offsetof(struct counter, bytes) == 8, "counter.bytes");
_Static_assert(offsetof(struct counter, last_ns) == 16, "counter.last_ns");

char LICENSE[] SEC("license") = "Apache-2.0";
