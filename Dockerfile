# ketabids BIDS App (CPU only). Build: docker build -t ketabids/ketabids:0.1.0 .
# Run:   docker run --rm --read-only --tmpfs /tmp --user "$(id -u):$(id -g)" \
#          -v /data/bids:/bids:ro -v /data/out:/out ketabids/ketabids:0.1.0 /bids /out participant
# tests/container/check.sh builds and checks this image with docker or podman (README: Container).

# The only image pulled. Without a registry, `podman build --from IMAGE` substitutes an equivalent
# (tests/container/build-base.sh makes one from Debian's packages).
FROM python:3.11-slim-bookworm AS base
ENV LANG=C.UTF-8 \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies: the pinned set of requirements.txt in a virtualenv, torch as its CPU build.
FROM base AS deps
# Where torch's CPU wheel comes from: PyTorch's CPU index (default) or, for a build without it,
# a folder of wheels mounted into the build (podman build --volume /wheels:/wheels:ro
# --build-arg TORCH_INDEX=/wheels). Pinning the "+cpu" build keeps the multi-GB CUDA one out.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Optional CA bundle for pip behind a TLS-intercepting proxy (mounted into the build, not copied).
ARG PIP_CERT
WORKDIR /src
COPY requirements.txt ./
RUN case "$TORCH_INDEX" in /*) source="--find-links=$TORCH_INDEX" ;; *) source="--extra-index-url=$TORCH_INDEX" ;; esac \
    && sed -i 's/^torch==[^+ ]*$/&+cpu/' requirements.txt \
    && python -m venv /opt/venv \
    && pip install --no-cache-dir -r requirements.txt "$source" \
    && site=$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && rm -rf "$site/torch/include" "$site/torch/test"

# The app itself, as a wheel (a code change rebuilds only this stage and the last, small layer).
FROM base AS wheel
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml version README.md ./
COPY ketabids ./ketabids
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ketabids" \
      org.opencontainers.image.description="BIDS App predicting ketamine response in treatment-resistant depression from a T1w MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ketabids/ketabids" \
      org.opencontainers.image.documentation="README.md"
ENV NIPYPE_NO_ET=1 \
    NO_ET=1 \
    PYTHONNOUSERSITE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    KETABIDS_CONTAINER_TYPE=docker \
    KETABIDS_CONTAINER_IMAGE="ketabids/ketabids:${VERSION}"
COPY --from=deps /opt/venv /opt/venv
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps --no-index /dist/*.whl \
    && useradd --system --no-create-home --uid 1000 ketabids

# Any user id works (docker run --user); nothing is written outside /out, the work dir and /tmp.
USER 1000:1000
# A host PYTHONPATH, PYTHON* variables and ~/.local (Apptainer binds HOME) never reach the imports:
# -I isolates this interpreter, env -u keeps PYTHONPATH/PYTHONHOME from its worker processes.
ENTRYPOINT ["/usr/bin/env", "-u", "PYTHONPATH", "-u", "PYTHONHOME", "PYTHONNOUSERSITE=1", \
            "/opt/venv/bin/python", "-I", "-u", "/opt/venv/bin/ketabids"]
