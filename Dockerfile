# syntax=docker/dockerfile:1
# One image for every selfheal process (monitor, healing and actions workers, HTTP metrics server, CLI, migrations)
# and for the reference pipeline workers of the demo profile; docker-compose.yml picks the process with `command`.
# TypeScript runs through tsx, as everywhere else in the project: there is no separate compile step.
# Base images are pinned to an exact version (tests/unit/compose.test.ts checks every FROM line); glibc (bookworm),
# not musl, because the prebuilt Temporal core bridge binaries are built for glibc.

FROM node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0 AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json ./
COPY bin ./bin
COPY core ./core
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starter ./starter
COPY pipeline ./pipeline
COPY db ./db
# The image is only built from code that typechecks; the workflow bundle is built here once (the workers load it
# through SELFHEAL_WORKFLOW_BUNDLE instead of each running webpack at start); then the dev dependencies go.
RUN npx --no-install tsc --noEmit -p . \
 && node --require tsx/cjs workers/bundle-workflows.ts /app/workflow-bundle.js \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error

FROM node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0 AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json /app/tsconfig.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/core ./core
COPY --from=build /app/workflows ./workflows
COPY --from=build /app/activities ./activities
COPY --from=build /app/workers ./workers
COPY --from=build /app/starter ./starter
COPY --from=build /app/pipeline ./pipeline
COPY --from=build /app/db ./db
COPY --from=build /app/workflow-bundle.js ./workflow-bundle.js
ENV SELFHEAL_WORKFLOW_BUNDLE=/app/workflow-bundle.js
# Files stay owned by root and read-only for the process; it runs as the image's unprivileged `node` user (uid 1000).
USER node
CMD ["node", "bin/selfheal.cjs", "--help"]
