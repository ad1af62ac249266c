# syntax=docker/dockerfile:1
# ice-ingress: multi-stage build on Node.js 24 LTS; the runtime image holds only the compiled
# JavaScript, production dependencies and Debian's nft, runs as an unprivileged uid (10001, as the Helm chart sets) and
# starts the CLI in exec form, so SIGTERM reaches Node directly and starts the drain.

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

FROM node:24-bookworm-slim
ENV NODE_ENV=production
# nft for --fast-path nftables (docs/fast-path.md); unused, and harmless, without it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
USER 10001:10001
# 10000/udp: clients (ICE/DTLS/SRTP). 9090/tcp: /metrics, /healthz, /readyz.
EXPOSE 10000/udp 9090/tcp
# V8 flags: src/runtime.ts NODE_FLAGS (a test keeps the two in step).
ENTRYPOINT ["node", "--max-semi-space-size=8", "--optimize-for-size", "dist/src/bin.js"]
