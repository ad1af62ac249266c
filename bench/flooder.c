/*
 * flooder: the attacker of `npm run bench:flood` (bench/flood.ts), in C so that it can send several
 * times what one proxy core handles without being the bottleneck.
 *
 * Every datagram is a forged first packet of a new ICE flow, as an attacker on the Internet could
 * make it: a STUN Binding Request (RFC 8489 §6) with
 *   USERNAME "<server ufrag>:<client ufrag>"  (RFC 8445 §7.2.2) — a fresh random server ufrag
 *            (ice4j style: base-32 [0-9a-v], 14 characters, optionally after a given prefix token)
 *            and a fresh random 4-character client ufrag (RFC 8839 ice-chars, Chrome's length);
 *   PRIORITY and ICE-CONTROLLED (random tie-breaker), like a browser's check;
 *   MESSAGE-INTEGRITY: 20 random bytes (the key is unknown to an attacker, so it cannot be valid;
 *            the proxy cannot verify it either, only the backend can);
 *   FINGERPRINT: valid (CRC-32 of the message before it, XOR 0x5354554e, RFC 8489 §14.7);
 * and a fresh random transaction id.
 *
 *   flooder --target IP:PORT --rate N --seconds S [--sources N] [--ports N]
 *           [--source-ip IP] [--source-net A.B] [--token PREFIX] [--media-share PCT] [--max N]
 *
 *   --rate      datagrams per second, paced in 1 ms steps (default 30000, at most 2,000,000)
 *   --seconds   how long (default 8, at most 3600)
 *   --sources   distinct source addresses 127.1.X.Y (default 250, at most 65,000)
 *   --ports     source ports in total, spread evenly over the sources (default 2000, at most 20,000;
 *               one socket each, port chosen by the kernel)
 *   --source-ip every socket binds this one address instead (the victims' own address: an attacker
 *               behind the same NAT as the legitimate clients); --sources is then ignored
 *   --source-net sources are A.B.X.Y instead of 127.1.X.Y (the tier bench's attacker namespace,
 *               which can bind any address of its /16)
 *   --token     every server ufrag starts with this prefix token (a flood that carries a valid token)
 *   --media-share this percentage of the datagrams is not a check but RTP-looking media (first byte
 *               0x80, 100 random bytes): datagrams of unknown 5-tuples (default 0)
 *   --max       stop after this many datagrams (default rate × seconds)
 *
 * Safety: the target and every source address must be in 127.0.0.0/8, or, only when the flooder
 * runs in a named network namespace (`ip netns exec`), in 198.18.0.0/15 (RFC 2544's benchmarking
 * range, which the namespace benches use and nothing routes); the run is bounded by
 * --seconds, --max and an alarm(2) a few seconds later. Prints "ready" once every socket is bound,
 * then one JSON line at the end: datagrams sent, send errors, elapsed seconds, achieved rate, and
 * the flooder's own CPU time (so the bench can say what the load generator cost its core).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xoshiro256** seeded from /dev/urandom: fast, and every run differs. */
static uint64_t rs[4];
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rnd(void) {
  uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
  rs[2] ^= rs[0]; rs[3] ^= rs[1]; rs[1] ^= rs[2]; rs[0] ^= rs[3]; rs[2] ^= t; rs[3] = rotl(rs[3], 45);
  return r;
}
static void seed(void) {
  FILE *f = fopen("/dev/urandom", "rb");
  if (f == NULL || fread(rs, sizeof rs, 1, f) != 1) {
    for (int i = 0; i < 4; i++) rs[i] = now_ns() * (i + 0x9e3779b97f4a7c15ull);
  }
  if (f != NULL) fclose(f);
}

/* CRC-32 (ISO-HDLC, reflected 0xEDB88320), as zlib's crc32() and RFC 8489 §14.7 use. */
static uint32_t crc_table[256];
static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}
static uint32_t crc32(const unsigned char *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static void put16(unsigned char *b, uint16_t v) { b[0] = v >> 8; b[1] = v & 0xff; }
static void put32(unsigned char *b, uint32_t v) { b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v; }
static void put_random(unsigned char *b, size_t n) {
  while (n > 0) {
    uint64_t r = rnd();
    for (int i = 0; i < 8 && n > 0; i++, n--) { *b++ = r & 0xff; r >>= 8; }
  }
}

static const char BASE32[] = "0123456789abcdefghijklmnopqrstuv";
static const char ICE_CHARS[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* One forged check into b; returns its length. */
static size_t forge(unsigned char *b, const char *token, size_t token_len) {
  char user[96];
  size_t u = 0;
  memcpy(user, token, token_len);
  u += token_len;
  uint64_t r = rnd();
  for (int i = 0; i < 14; i++, r >>= 5) user[u++] = BASE32[r & 31];
  user[u++] = ':';
  r = rnd();
  for (int i = 0; i < 4; i++, r >>= 6) user[u++] = ICE_CHARS[r & 63];
  size_t upad = (u + 3) & ~(size_t)3;

  size_t o = 20;
  put16(b + o, 0x0006); put16(b + o + 2, (uint16_t)u);       /* USERNAME */
  memcpy(b + o + 4, user, u);
  memset(b + o + 4 + u, 0, upad - u);
  o += 4 + upad;
  put16(b + o, 0x0024); put16(b + o + 2, 4);                 /* PRIORITY: peer-reflexive UDP */
  put32(b + o + 4, 1853824767u);
  o += 8;
  put16(b + o, 0x8029); put16(b + o + 2, 8);                 /* ICE-CONTROLLED: tie-breaker */
  put_random(b + o + 4, 8);
  o += 12;
  put16(b + o, 0x0008); put16(b + o + 2, 20);                /* MESSAGE-INTEGRITY: unknowable key */
  put_random(b + o + 4, 20);
  o += 24;
  size_t fp = o;
  size_t len = fp + 8;

  put16(b, 0x0001);                                          /* Binding Request */
  put16(b + 2, (uint16_t)(len - 20));                        /* length includes FINGERPRINT */
  put32(b + 4, 0x2112A442u);                                 /* magic cookie */
  put_random(b + 8, 12);                                     /* transaction id */
  put16(b + fp, 0x8028); put16(b + fp + 2, 4);
  put32(b + fp + 4, crc32(b, fp) ^ 0x5354554eu);
  return len;
}

/* One RTP-looking datagram (RFC 3550 version 2, payload type 96) of 100 random bytes. */
static size_t forge_media(unsigned char *b) {
  put_random(b, 100);
  b[0] = 0x80;
  b[1] = 0x60;
  return 100;
}

/* In a named network namespace (`ip netns add`, bound under /run/netns): the benchmarking range is ours. */
static int own_netns(void) {
  struct stat self, named;
  if (stat("/proc/self/ns/net", &self) != 0) return 0;
  DIR *d = opendir("/run/netns");
  if (d == NULL) return 0;
  int found = 0;
  char path[512];
  for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/run/netns/%s", e->d_name);
    found = stat(path, &named) == 0 && named.st_dev == self.st_dev && named.st_ino == self.st_ino;
  }
  closedir(d);
  return found;
}

static int allowed(const char *ip) {
  struct in_addr a;
  if (inet_pton(AF_INET, ip, &a) != 1) return 0;
  uint32_t h = ntohl(a.s_addr);
  if ((h >> 24) == 127) return 1;
  return (h >> 17) == (198u << 7 | 18u >> 1) && own_netns(); /* 198.18.0.0/15 */
}

static void usage(const char *why) {
  fprintf(stderr, "flooder: %s\nusage: flooder --target IP:PORT [--rate N] [--seconds S] [--sources N] "
                  "[--ports N] [--source-ip IP] [--source-net A.B] [--token PREFIX] [--media-share PCT] [--max N]\n", why);
  exit(2);
}

static long num(const char *s, long lo, long hi, const char *flag) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == 0 || *end != 0 || v < lo || v > hi) {
    fprintf(stderr, "flooder: %s: expected %ld..%ld, got %s\n", flag, lo, hi, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  const char *target = NULL, *source_ip = NULL, *source_net = "127.1", *token = "";
  long rate = 30000, seconds = 8, sources = 250, ports = 2000, max = -1, media_share = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage("every flag needs a value");
    const char *v = argv[++i];
    if (!strcmp(a, "--target")) target = v;
    else if (!strcmp(a, "--rate")) rate = num(v, 1, 2000000, a);
    else if (!strcmp(a, "--seconds")) seconds = num(v, 1, 3600, a);
    else if (!strcmp(a, "--sources")) sources = num(v, 1, 65000, a);
    else if (!strcmp(a, "--ports")) ports = num(v, 1, 20000, a);
    else if (!strcmp(a, "--source-ip")) source_ip = v;
    else if (!strcmp(a, "--token")) token = v;
    else if (!strcmp(a, "--source-net")) source_net = v;
    else if (!strcmp(a, "--media-share")) media_share = num(v, 0, 100, a);
    else if (!strcmp(a, "--max")) max = num(v, 1, 2000000000L, a);
    else usage("unknown flag");
  }
  if (target == NULL) usage("--target is required");
  size_t token_len = strlen(token);
  if (token_len > 32) usage("--token: at most 32 characters");
  for (size_t i = 0; i < token_len; i++) {
    char c = token[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
      usage("--token: letters and digits only");
    }
  }
  char tip[64];
  const char *colon = strrchr(target, ':');
  if (colon == NULL || (size_t)(colon - target) >= sizeof tip) usage("--target: expected IP:PORT");
  memcpy(tip, target, colon - target);
  tip[colon - target] = 0;
  long tport = num(colon + 1, 1, 65535, "--target port");
  if (!allowed(tip)) usage("--target: only 127.0.0.0/8 (or 198.18.0.0/15 in a namespace) is allowed");
  if (source_ip != NULL && !allowed(source_ip)) usage("--source-ip: only 127.0.0.0/8 (or 198.18.0.0/15 in a namespace) is allowed");
  unsigned net_a, net_b;
  char net_probe[32];
  if (sscanf(source_net, "%u.%u", &net_a, &net_b) != 2 || net_a > 255 || net_b > 255) usage("--source-net: expected A.B");
  snprintf(net_probe, sizeof net_probe, "%u.%u.0.1", net_a, net_b);
  if (!allowed(net_probe)) usage("--source-net: only 127.x (or 198.18-19 in a namespace) is allowed");
  if (source_ip == NULL && sources > ports) sources = ports;
  if (max < 0) max = rate * seconds;

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)ports + 64) {
    rl.rlim_cur = rl.rlim_max < (rlim_t)ports + 64 ? rl.rlim_max : (rlim_t)ports + 64;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)tport);
  inet_pton(AF_INET, tip, &to.sin_addr);

  int *fds = calloc(ports, sizeof(int));
  for (long i = 0; i < ports; i++) {
    struct sockaddr_in from = {0};
    from.sin_family = AF_INET;
    if (source_ip != NULL) {
      inet_pton(AF_INET, source_ip, &from.sin_addr);
    } else {
      /* Source s = i % sources: A.B.0.1 … A.B.0.250, A.B.1.1 …, never .0 or .255. */
      long s = i % sources;
      uint32_t ip = (net_a << 24) | (net_b << 16) | ((uint32_t)(s / 250) << 8) | (uint32_t)(s % 250 + 1);
      from.sin_addr.s_addr = htonl(ip);
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { perror("flooder: socket"); return 1; }
    if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0) { perror("flooder: bind"); return 1; }
    /* connect(): the kernel then skips the route lookup per datagram. */
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("flooder: connect"); return 1; }
    fds[i] = fd;
  }
  alarm((unsigned)seconds + 5); /* hard stop, whatever happens below */
  seed();
  crc_init();
  printf("ready\n");
  fflush(stdout);

  unsigned char pkt[256];
  long sent = 0, errors = 0, next_fd = 0;
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)seconds * 1000000000ull;
  struct timespec tick;
  clock_gettime(CLOCK_MONOTONIC, &tick);
  for (;;) {
    uint64_t t = now_ns();
    if (t >= end || sent >= max) break;
    /* Pacing: catch up to rate × elapsed, at most 1/100 s worth at once (no burst after a stall). */
    long due = (long)((double)(t - t0) * (double)rate / 1e9) - sent - errors;
    long cap = rate / 100 + 1;
    if (due > cap) due = cap;
    for (long k = 0; k < due && sent < max; k++) {
      size_t len = (long)(rnd() % 100) < media_share ? forge_media(pkt) : forge(pkt, token, token_len);
      if (send(fds[next_fd], pkt, len, 0) == (ssize_t)len) sent++;
      else errors++;
      if (++next_fd == ports) next_fd = 0;
    }
    tick.tv_nsec += 1000000;
    if (tick.tv_nsec >= 1000000000) { tick.tv_nsec -= 1000000000; tick.tv_sec++; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
  }
  double elapsed = (double)(now_ns() - t0) / 1e9;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  printf("{\"sent\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"rate\":%.0f,\"sockets\":%ld,\"sources\":%ld,"
         "\"cpuSeconds\":%.3f}\n",
         sent, errors, elapsed, sent / elapsed, ports, source_ip != NULL ? 1 : sources, cpu);
  fflush(stdout);
  return 0;
}
