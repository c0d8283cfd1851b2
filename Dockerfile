# One image for every selfheal process (monitor, healing and actions agents, HTTP metrics server, CLI, migrations)
# and for the reference pipeline workers of the pipeline profile; docker-compose.yml picks the process with `command`.
# What runs is the compiled JavaScript of `npm run build` (dist/), never tsx. The base image is a build argument: the
# public node image by default, or the locally built one of scripts/compose.sh where nothing can be pulled. glibc
# (bookworm), not musl, because the prebuilt Temporal core bridge binaries are built for glibc.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# npm ls: an install that npm reports done but left incomplete must not become a cached layer.
RUN npm ci --no-audit --no-fund --loglevel=error && npm ls --depth=0 >/dev/null
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY core ./core
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starter ./starter
COPY pipeline ./pipeline
COPY db ./db
# The built-in runbook (RUNBOOKS_FILE's default), copied into dist/runbooks by the build.
COPY runbooks ./runbooks
# The image is only built from code that compiles; the workflow bundle is built here once (the workers load it
# through SELFHEAL_WORKFLOW_BUNDLE instead of each running webpack at start); then the dev dependencies go.
RUN npm run build \
 && node dist/workers/bundle-workflows.js /app/workflow-bundle.js \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist ./dist
COPY --from=build /app/workflow-bundle.js ./workflow-bundle.js
ENV SELFHEAL_WORKFLOW_BUNDLE=/app/workflow-bundle.js
# Node's memory settings of the worker processes, as `selfheal up` gives them (WORKER_NODE_OPTIONS in starter/up.ts:
# each process under 250 MB with 500 open healings). Set NODE_OPTIONS or MALLOC_ARENA_MAX in the service to change them.
ENV NODE_OPTIONS="--max-old-space-size=96 --max-semi-space-size=4" MALLOC_ARENA_MAX=2
# Files stay owned by root and read-only for the process; it runs as the image's unprivileged `node` user (uid 1000).
USER node
CMD ["node", "bin/selfheal.cjs", "--help"]
