// SPDX-License-Identifier: Apache-2.0
/*
 * The bench-only tc (clsact ingress) programs of `npm run bench:fastpath`'s one-way runs
 * (bench/fastpath.ts): the sink at the pod's eth0 and the floors measured beside the real paths
 * at the proxy namespace's client-side interface. Compiled by the bench with clang, once per
 * FLOOR_MODE, the addresses it needs passed as -D values:
 *
 *   FLOOR_DROP        drop media (TC_ACT_SHOT): the pod's sink, and "nothing but receive it" at
 *                     the proxy's ingress;
 *   FLOOR_NEIGH       hand media unchanged to REDIR_IFINDEX with bpf_redirect_neigh() and next hop
 *                     REDIR_NEXTHOP (host byte order): the least a tc program that forwards through the neighbour
 *                     table can do (src/fastpath/ebpf/ice_ingress.bpf.c does this plus its lookup,
 *                     rewrite and counters);
 *   FLOOR_REDIRECT    write the MAC addresses REDIR_DMAC / REDIR_SMAC and bpf_redirect() to
 *                     REDIR_IFINDEX: the same without the neighbour lookup.
 *
 * "Media" is what the proxy's kernel paths take: IPv4 UDP to port 10000 whose first payload byte
 * is above 3 (not STUN, RFC 7983 §7); everything else (the generator's STUN handshake) goes on to
 * the stack. Nothing here is part of the proxy.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define FLOOR_DROP 1
#define FLOOR_NEIGH 2
#define FLOOR_REDIRECT 3

#ifndef FLOOR_MODE
#error "FLOOR_MODE must be set (-DFLOOR_MODE=FLOOR_DROP, ...)"
#endif

#define NEED (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + 1)

SEC("tc")
int bench_floor(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + NEED > end)
		return TC_ACT_OK;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	__u8 first = *(__u8 *)(udp + 1);
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    udp->dest != bpf_htons(10000) || first <= 3)
		return TC_ACT_OK;
#if FLOOR_MODE == FLOOR_DROP
	return TC_ACT_SHOT;
#elif FLOOR_MODE == FLOOR_NEIGH
	struct bpf_redir_neigh nh = { .nh_family = 2 /* AF_INET */, .ipv4_nh = bpf_htonl(REDIR_NEXTHOP) };
	return bpf_redirect_neigh(REDIR_IFINDEX, &nh, sizeof(nh), 0);
#elif FLOOR_MODE == FLOOR_REDIRECT
	const __u8 mac[12] = { REDIR_DMAC, REDIR_SMAC };
	__builtin_memcpy(eth, mac, sizeof(mac));
	return bpf_redirect(REDIR_IFINDEX, 0);
#else
#error "unknown FLOOR_MODE"
#endif
}

char LICENSE[] SEC("license") = "Apache-2.0";
