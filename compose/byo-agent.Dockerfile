# Your own livekit-agents worker under the rig (docker-compose.byo.yml). Build context: the
# repository root, for instrument/ (the counting) and agent/ (the scripted providers, used only
# with LKRIG_PROVIDERS=scripted). Additional context `byo`: your project folder (BYO_AGENT_DIR), of
# which only the requirements file is copied here; the code itself is mounted at /byo, so an
# edit needs a restart, not a rebuild. Your requirements pin livekit-agents: the rig measures
# the version you run.
FROM python:3.11.13-slim-bookworm

ARG BYO_REQUIREMENTS=requirements.txt

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/byo:/app \
    LKRIG_CACHE=/home/lkrig/.cache/lkrig

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# espeak-ng: the scripted TTS's speech (LKRIG_PROVIDERS=scripted). Its Debian version follows the
# pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/lkrig --shell /usr/sbin/nologin lkrig \
 && install -d -o lkrig -g lkrig /var/lib/lkrig/metrics

# `byo` is a named build context (compose build.additional_contexts), not a build stage.
# hadolint ignore=DL3022
COPY --from=byo ${BYO_REQUIREMENTS} /tmp/byo-requirements.txt
# Your requirements, and pyproject.toml's `byo` packages (the scripted providers read YAML).
WORKDIR /src
COPY pyproject.toml ./
COPY rig/pins.py rig/
RUN python rig/pins.py --requirements byo > requirements.txt \
 && pip install --requirement /tmp/byo-requirements.txt --requirement requirements.txt \
 && python -c "import livekit.agents" \
 && rm /tmp/byo-requirements.txt

COPY instrument/ instrument/
RUN pip install ./instrument

WORKDIR /app
COPY agent/ /app/agent/

USER 10001
EXPOSE 8081 9100
# docker-compose.byo.yml gives the module: python -m lkrig_instrument.run "$AGENT_MODULE" start
CMD ["python", "-m", "lkrig_instrument.run"]
