/*
 * udpbench: the load side of `npm run bench`, in C so that the generator is never the bottleneck
 * of a Node.js relay under test (measured here: a C generator with recvmmsg/sendmmsg reaches
 * ~220k round trips/s direct on this machine, ~10x a Node relay).
 *
 *   udpbench echo IP PORT
 *       Echo server. A STUN Binding Request (type 0x0001) is answered with the same bytes as a
 *       Binding success (type 0x0101, same transaction id): enough for a relay that routes on the
 *       response type, as ice-ingress does (it cannot verify MESSAGE-INTEGRITY anyway). Anything
 *       else is echoed verbatim.
 *   udpbench load IP PORT SESSIONS SIZE SECONDS WINDOW [SETTLE_MS]
 *       SESSIONS sockets (distinct source ports on 127.0.0.1); each first sends a Binding Request
 *       with USERNAME "bNNNNNNN:cli" and a MESSAGE-INTEGRITY attribute (zeros: only its presence
 *       is checked by the relay), then keeps WINDOW datagrams of SIZE bytes in flight for SECONDS.
 *       Prints one JSON line: round trips, rate, RTT percentiles (µs), lost/re-primed windows.
 *       SETTLE_MS (default 0): a pause between the handshake and the load (a kernel fast path
 *       takes the sessions over meanwhile).
 *   udpbench sink IP PORT
 *       Answers Binding Requests like `echo`, drops everything else (the far end of a one-way run).
 *   udpbench blast IP PORT SESSIONS SIZE SECONDS [IFACE NEXTHOP-MAC]
 *       The same handshake as `load`, then sends SIZE-byte datagrams round-robin over the sessions
 *       as fast as sendmmsg allows for SECONDS (one-way). Prints {"sent":N,"seconds":S}.
 *       With IFACE and NEXTHOP-MAC the datagrams (the same 5-tuples, valid IPv4 and UDP
 *       checksums) go out as Ethernet frames on a packet socket (PACKET_QDISC_BYPASS) instead of
 *       the UDP sockets: no UDP, route or neighbour work per datagram, so one core generates more,
 *       and the packet socket's default send buffer bounds the frames in flight (observed: sent =
 *       delivered), so the generator waits for the receiving core instead of overrunning its
 *       backlog, where datagrams dropped after being forwarded would waste that core's work.
 *
 * Only ever talks to the address it is given (127.0.0.1 for `npm run bench`; addresses inside the
 * bench's own network namespaces for `npm run bench:fastpath`). Bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAXSIZE 2048

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int udp_socket(const char *ip, int port, int bind_it) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) { perror("socket"); exit(1); }
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  if (bind_it) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
  }
  return fd;
}

static int run_echo(const char *ip, int port, int sink) {
  int fd = udp_socket(ip, port, 1);
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  static char bufs[BATCH][MAXSIZE];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_in addrs[BATCH];
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = MAXSIZE;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    int keep = 0;
    for (int i = 0; i < n; i++) {
      iov[i].iov_len = msgs[i].msg_len;
      int stun = msgs[i].msg_len >= 20 && bufs[i][0] == 0x00 && bufs[i][1] == 0x01;
      if (stun) bufs[i][0] = 0x01;
      if (sink && !stun) continue;
      if (keep != i) {
        /* Compact the answers to send (sink mode sends only the Binding successes). */
        memcpy(bufs[keep], bufs[i], msgs[i].msg_len);
        iov[keep].iov_len = msgs[i].msg_len;
        addrs[keep] = addrs[i];
        msgs[keep].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
      }
      keep++;
    }
    int sent = 0;
    while (sent < keep) {
      int m = sendmmsg(fd, msgs + sent, keep - sent, 0);
      if (m <= 0) break;
      sent += m;
    }
  }
  return 0;
}

static size_t binding_request(unsigned char *b, int session) {
  /* RFC 8489 header + USERNAME + MESSAGE-INTEGRITY (20 zero bytes). */
  char user[32];
  int ulen = snprintf(user, sizeof user, "b%07d:cli", session);
  size_t upad = (ulen + 3) & ~3;
  size_t len = 20 + 4 + upad + 4 + 20;
  memset(b, 0, len);
  b[0] = 0x00; b[1] = 0x01;
  b[2] = (len - 20) >> 8; b[3] = (len - 20) & 0xff;
  b[4] = 0x21; b[5] = 0x12; b[6] = 0xa4; b[7] = 0x42;
  for (int i = 8; i < 20; i++) b[i] = (unsigned char)(rand() & 0xff);
  b[20] = 0x00; b[21] = 0x06; b[22] = 0; b[23] = ulen;
  memcpy(b + 24, user, ulen);
  size_t mi = 24 + upad;
  b[mi] = 0x00; b[mi + 1] = 0x08; b[mi + 2] = 0; b[mi + 3] = 20;
  return len;
}

/* RFC 1071 ones'-complement sum over n bytes, folded, added to `sum`. */
static uint32_t sum16(const uint8_t *b, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(b[i] << 8 | b[i + 1]);
  if (n & 1) sum += (uint32_t)(b[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

/* One-way over a packet socket: one prebuilt Ethernet/IPv4/UDP frame per session (the session
   socket's own address and port as the source), sent round-robin with sendmmsg. */
static int blast_raw(const char *ifname, const char *mac, const int *fds, int sessions,
                     const struct sockaddr_in *to, int size, double seconds) {
  unsigned m[6];
  if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
    printf("{\"error\":\"bad MAC %s\"}\n", mac);
    return 1;
  }
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) { printf("{\"error\":\"packet socket: %s\"}\n", strerror(errno)); return 1; }
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  /* 200000 (doubled by the kernel): ~500 frames of 142 B in flight, half of the receiving core's
     backlog (net.core.netdev_max_backlog 1000), so none is dropped there; the default (~280)
     left core 0 idle between bursts. UDPBENCH_SNDBUF overrides it. */
  int sb = getenv("UDPBENCH_SNDBUF") != NULL ? atoi(getenv("UDPBENCH_SNDBUF")) : 200000;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { printf("{\"error\":\"no interface %s\"}\n", ifname); return 1; }
  int ifindex = ifr.ifr_ifindex;
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { printf("{\"error\":\"no MAC of %s\"}\n", ifname); return 1; }
  struct sockaddr_ll ll = {0};
  ll.sll_family = AF_PACKET;
  ll.sll_ifindex = ifindex;
  ll.sll_halen = 6;
  for (int i = 0; i < 6; i++) ll.sll_addr[i] = (unsigned char)m[i];
  size_t flen = 14 + 20 + 8 + (size_t)size;
  uint8_t *frames = calloc((size_t)sessions, flen);
  for (int s = 0; s < sessions; s++) {
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(fds[s], (struct sockaddr *)&me, &len);
    uint8_t *f = frames + (size_t)s * flen, *ip = f + 14, *udp = ip + 20;
    for (int i = 0; i < 6; i++) { f[i] = (uint8_t)m[i]; f[6 + i] = (uint8_t)ifr.ifr_hwaddr.sa_data[i]; }
    f[12] = 0x08; f[13] = 0x00;
    ip[0] = 0x45; ip[2] = (uint8_t)((20 + 8 + size) >> 8); ip[3] = (uint8_t)(20 + 8 + size);
    ip[6] = 0x40; /* DF */ ip[8] = 64; ip[9] = 17;
    memcpy(ip + 12, &me.sin_addr, 4);
    memcpy(ip + 16, &to->sin_addr, 4);
    uint16_t c = (uint16_t)~sum16(ip, 20, 0);
    ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
    memcpy(udp, &me.sin_port, 2);
    memcpy(udp + 2, &to->sin_port, 2);
    udp[4] = (uint8_t)((8 + size) >> 8); udp[5] = (uint8_t)(8 + size);
    memset(udp + 8, 0x80, (size_t)size); /* RTP-looking first byte (RFC 7983) */
    uint8_t pseudo[12] = {0};
    memcpy(pseudo, ip + 12, 8);
    pseudo[9] = 17; pseudo[10] = udp[4]; pseudo[11] = udp[5];
    c = (uint16_t)~sum16(udp, 8 + (size_t)size, sum16(pseudo, 12, 0));
    if (c == 0) c = 0xffff;
    udp[6] = (uint8_t)(c >> 8); udp[7] = (uint8_t)c;
  }
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  for (int i = 0; i < BATCH; i++) {
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &ll;
    msgs[i].msg_hdr.msg_namelen = sizeof ll;
    iov[i].iov_len = flen;
  }
  uint64_t sent = 0, t0 = now_ns(), stop = t0 + (uint64_t)(seconds * 1e9);
  int s = 0;
  while (now_ns() < stop) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = frames + (size_t)s * flen;
      s = (s + 1) % sessions;
    }
    /* Non-blocking, retried at once: a full send buffer (the in-flight window above) makes the
       generator spin on core 1 rather than sleep until the kernel wakes it. On a VM a sleeping
       vCPU wakes late, and core 0 went idle meanwhile (72-86 % busy in both plain routing and
       the kernel path), so the rates were partly the generator's, not the path's. */
    int k = sendmmsg(fd, msgs, BATCH, MSG_DONTWAIT);
    if (k > 0) sent += (uint64_t)k;
  }
  printf("{\"sent\":%llu,\"seconds\":%.3f}\n", (unsigned long long)sent, (now_ns() - t0) / 1e9);
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int run_load(const char *ip, int port, int sessions, int size, double seconds, int window, int blast,
                    int settle_ms, const char *raw_if, const char *raw_mac) {
  if (size < 16) size = 16;
  if (size > MAXSIZE) size = MAXSIZE;
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, ip, &to.sin_addr);
  int *fds = calloc(sessions, sizeof(int));
  uint64_t *last_rx = calloc(sessions, sizeof(uint64_t));
  int ep = epoll_create1(0);
  unsigned char pkt[MAXSIZE];
  /* Handshake: every session's first datagram is a Binding Request; wait for its answer. */
  for (int s = 0; s < sessions; s++) {
    fds[s] = udp_socket("0.0.0.0", 0, 1);
    if (connect(fds[s], (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[s], &ev);
  }
  int established = 0;
  char *done = calloc(sessions, 1);
  for (int attempt = 0; attempt < 20 && established < sessions; attempt++) {
    for (int s = 0; s < sessions; s++) {
      if (done[s]) continue;
      size_t len = binding_request(pkt, s);
      send(fds[s], pkt, len, 0);
    }
    uint64_t until = now_ns() + 100000000ull;
    struct epoll_event evs[256];
    while (now_ns() < until && established < sessions) {
      int n = epoll_wait(ep, evs, 256, 20);
      for (int i = 0; i < n; i++) {
        int s = (int)evs[i].data.u32;
        while (recv(fds[s], pkt, sizeof pkt, 0) > 0) {
          if (!done[s] && pkt[0] == 0x01 && pkt[1] == 0x01) { done[s] = 1; established++; }
        }
      }
    }
  }
  if (established < sessions) {
    printf("{\"error\":\"only %d of %d sessions answered the handshake\"}\n", established, sessions);
    return 1;
  }
  if (settle_ms > 0) {
    struct timespec ts = {.tv_sec = settle_ms / 1000, .tv_nsec = (long)(settle_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (blast && raw_if != NULL) return blast_raw(raw_if, raw_mac, fds, sessions, &to, size, seconds);
  if (blast) {
    /* One-way: sendmmsg batches round-robin over the connected sockets, nothing awaited. */
    memset(pkt, 0x80, sizeof pkt);
    struct mmsghdr msgs[BATCH];
    struct iovec iov = {.iov_base = pkt, .iov_len = (size_t)size};
    for (int i = 0; i < BATCH; i++) {
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov;
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t sent = 0, t0 = now_ns(), stop = t0 + (uint64_t)(seconds * 1e9);
    int s = 0;
    while (now_ns() < stop) {
      int m = sendmmsg(fds[s], msgs, BATCH, 0);
      if (m > 0) sent += (uint64_t)m;
      s = (s + 1) % sessions;
    }
    printf("{\"sent\":%llu,\"seconds\":%.3f}\n", (unsigned long long)sent, (now_ns() - t0) / 1e9);
    return 0;
  }
  /* Load: keep at most WINDOW datagrams in flight per session; payload carries the send time.
     A receipt frees one slot; a session silent for 100 ms is taken to have lost its window
     and is re-primed. In-flight never exceeds WINDOW, so late arrivals cannot grow the load. */
  size_t cap = 1 << 22;
  uint32_t *rtts = malloc(cap * sizeof(uint32_t));
  int *inflight = calloc(sessions, sizeof(int));
  size_t nrtt = 0;
  uint64_t count = 0, reprimed = 0;
  memset(pkt, 0x80, sizeof pkt); /* RTP-looking first byte (RFC 7983) */
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  for (int s = 0; s < sessions; s++) {
    while (inflight[s] < window) {
      uint64_t t = now_ns();
      memcpy(pkt + 8, &t, 8);
      send(fds[s], pkt, size, 0);
      inflight[s]++;
    }
    last_rx[s] = start;
  }
  struct epoll_event evs[256];
  uint64_t next_check = start + 20000000ull;
  while (1) {
    uint64_t t = now_ns();
    if (t >= end) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int i = 0; i < n; i++) {
      int s = (int)evs[i].data.u32;
      unsigned char in[MAXSIZE];
      ssize_t r;
      while ((r = recv(fds[s], in, sizeof in, 0)) > 0) {
        uint64_t now = now_ns();
        uint64_t sent;
        memcpy(&sent, in + 8, 8);
        if (nrtt < cap) rtts[nrtt++] = (uint32_t)((now - sent) / 1000);
        count++;
        last_rx[s] = now;
        if (inflight[s] > 0) inflight[s]--;
        while (inflight[s] < window) {
          memcpy(pkt + 8, &now, 8);
          send(fds[s], pkt, size, 0);
          inflight[s]++;
        }
      }
    }
    t = now_ns();
    if (t >= next_check) {
      for (int s = 0; s < sessions; s++) {
        if (t > last_rx[s] && t - last_rx[s] > 100000000ull) {
          inflight[s] = 0;
          while (inflight[s] < window) {
            memcpy(pkt + 8, &t, 8);
            send(fds[s], pkt, size, 0);
            inflight[s]++;
          }
          last_rx[s] = t;
          reprimed++;
        }
      }
      next_check = t + 20000000ull;
    }
  }
  double elapsed = (now_ns() - start) / 1e9;
  qsort(rtts, nrtt, sizeof(uint32_t), cmp_u32);
  uint32_t p50 = nrtt ? rtts[nrtt / 2] : 0, p99 = nrtt ? rtts[(size_t)(nrtt * 0.99)] : 0;
  printf("{\"roundTrips\":%llu,\"seconds\":%.3f,\"roundTripsPerSec\":%.0f,\"p50us\":%u,\"p99us\":%u,\"reprimed\":%llu}\n",
         (unsigned long long)count, elapsed, count / elapsed, p50, p99, (unsigned long long)reprimed);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "echo") == 0) return run_echo(argv[2], atoi(argv[3]), 0);
  if (argc >= 4 && strcmp(argv[1], "sink") == 0) return run_echo(argv[2], atoi(argv[3]), 1);
  if (argc >= 8 && strcmp(argv[1], "load") == 0) {
    double secs = atof(argv[6]);
    if (secs <= 0 || secs > 60) secs = 3;
    int settle = argc >= 9 ? atoi(argv[8]) : 0;
    if (settle < 0 || settle > 10000) settle = 0;
    return run_load(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), secs, atoi(argv[7]), 0, settle, NULL, NULL);
  }
  if (argc >= 7 && strcmp(argv[1], "blast") == 0) {
    double secs = atof(argv[6]);
    if (secs <= 0 || secs > 60) secs = 3;
    const char *raw_if = argc >= 9 ? argv[7] : NULL, *raw_mac = argc >= 9 ? argv[8] : NULL;
    return run_load(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), secs, 1, 1, 500, raw_if, raw_mac);
  }
  fprintf(stderr, "usage: udpbench echo|sink IP PORT | udpbench load IP PORT SESSIONS SIZE SECONDS WINDOW |"
                  " udpbench blast IP PORT SESSIONS SIZE SECONDS [IFACE NEXTHOP-MAC]\n");
  return 2;
}
