# syntax=docker/dockerfile:1
#
# The factory image: `fleet-factory` (factory_cli/, the `requests`-only package pyproject.toml
# builds: never fleet/ nor the coordinator's Azure SDKs), git, and the engine CLIs named in
# ENGINES. By default it runs one ephemeral factory: it claims until idle for 300 s, then
# deregisters and exits 0. It holds no secret: the coordinator URL, the factory's identity and
# the engines' API keys come from the environment when it runs, e.g. an enrolled factory's
# FLEET_API, FLEET_TOKEN and FLEET_FACTORY_ID, or, as the Container Apps Jobs of
# infra/app/factories.bicep do, `fleet-factory enroll` (FLEET_ENROLLMENT_TOKEN) first
# (docs/deployment.md "Elastic factories").
#
#   docker build --build-arg ENGINES="claude codex aider" -t fleet-factory .
#
# ENGINES: any of claude, codex (their npm packages at the versions package.json pins, which
# tests/unit/test_factory_image.py holds these ARGs to) and aider (aider-chat from PyPI, in a
# virtualenv of its own). None at all ("") still runs the demo engine.

# The npm engines are installed under /opt/engines with the node binary they run on; the
# final image copies that directory, and no npm.
FROM node:22.17.0-bookworm-slim AS engines
ARG ENGINES="claude codex"
ARG CLAUDE_CODE_VERSION=2.1.332
ARG CODEX_VERSION=0.171.0
RUN set -eu; \
    mkdir -p /opt/engines/bin; \
    packages=""; \
    for engine in $ENGINES; do \
      case "$engine" in \
        claude) packages="$packages @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" ;; \
        codex) packages="$packages @openai/codex@$CODEX_VERSION" ;; \
        aider) ;; \
        *) echo "unknown engine '$engine' in ENGINES (claude, codex, aider)" >&2; exit 1 ;; \
      esac; \
    done; \
    if [ -n "$packages" ]; then \
      npm install --global --prefix /opt/engines --no-audit --no-fund --loglevel=error $packages; \
      cp /usr/local/bin/node /opt/engines/bin/node; \
      npm cache clean --force; \
    fi

# Both stages are Debian bookworm: the copied node binary finds the glibc it was built for.
FROM python:3.11.13-slim-bookworm
ARG ENGINES="claude codex"
ARG AIDER_VERSION=0.86.2
# fleet-factory's one dependency, at the version requirements-dev.txt tests it with.
ARG REQUESTS_VERSION=2.34.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/*

COPY --from=engines /opt/engines /opt/engines

# aider pins many libraries of its own: its own virtualenv keeps them away from fleet-factory's.
RUN set -eu; \
    case " $ENGINES " in \
      *" aider "*) \
        python -m venv /opt/aider; \
        /opt/aider/bin/pip install "aider-chat==$AIDER_VERSION"; \
        ln -s /opt/aider/bin/aider /opt/engines/bin/aider ;; \
    esac

COPY pyproject.toml /src/
COPY factory_cli /src/factory_cli
RUN pip install "requests==$REQUESTS_VERSION" /src && rm -rf /src

# A fixed uid (not root), so a platform that checks runAsNonRoot sees a number.
RUN useradd --create-home --uid 10001 --user-group --shell /bin/bash factory

# The engines on PATH (`enroll` then advertises engine:claude, ...); the config (which will
# hold the factory's token), run state and work dirs in one directory of the factory's home.
# Claude Code stays at the version installed above: no self-update.
ENV PATH=/opt/engines/bin:$PATH \
    FLEET_CONFIG_DIR=/home/factory/fleet \
    DISABLE_AUTOUPDATER=1

USER 10001:10001
WORKDIR /home/factory

ENTRYPOINT ["fleet-factory"]
CMD ["run", "--exit-when-idle", "300"]
