# syntax=docker/dockerfile:1
# ice-ingress: multi-stage build on Node.js 24 LTS; the runtime image holds only the compiled
# JavaScript, production dependencies, Debian's nft and libbpf, and the eBPF object compiled from
# src/fastpath/ebpf/ice_ingress.bpf.c in a stage of its own (no compiler in the runtime image);
# it runs as an unprivileged uid (10001, as the Helm chart sets) and starts the CLI in exec form,
# so SIGTERM reaches Node directly and starts the drain.

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the image already has Node 24, so the `node` devDependency (which puts Node 24
# into node_modules/.bin on developer machines that only have Node 20) is not needed here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# The eBPF kernel path's program (--fast-path ebpf, docs/fast-path.md): clang and the kernel and
# libbpf headers only here; the object (build/bpf/ice_ingress.bpf.o) is what the runtime loads.
FROM node:24-bookworm-slim AS bpf
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libbpf-dev linux-libc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json ./
COPY src/fastpath/ebpf/ice_ingress.bpf.c ./src/fastpath/ebpf/
RUN npm run build:bpf

FROM node:24-bookworm-slim
ENV NODE_ENV=production
# nft for --fast-path nftables, libbpf (libbpf1, loaded through koffi) for --fast-path ebpf
# (docs/fast-path.md); unused, and harmless, without them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables libbpf1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
COPY --from=bpf --chown=root:root /app/build/bpf ./build/bpf
USER 10001:10001
# 10000/udp: clients (ICE/DTLS/SRTP). 9090/tcp: /metrics, /healthz, /readyz.
EXPOSE 10000/udp 9090/tcp
# V8 flags: src/runtime.ts NODE_FLAGS (a test keeps the two in step).
ENTRYPOINT ["node", "--max-semi-space-size=8", "--optimize-for-size", "--single-threaded-gc", "dist/src/bin.js"]
