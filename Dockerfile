# ketabids BIDS App: docker run -v /data:/bids:ro -v /out:/out ketabids/ketabids /bids /out participant
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ketabids" \
      org.opencontainers.image.description="BIDS App predicting ketamine response in treatment-resistant depression from a T1w MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NIPYPE_NO_ET=1 \
    NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    KETABIDS_CONTAINER_TYPE=docker \
    KETABIDS_CONTAINER_IMAGE="ketabids/ketabids:${VERSION}"

WORKDIR /opt/ketabids
# The same pinned set that CI installs (.ci/run -> README test command -> requirements-test.txt).
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY pyproject.toml version README.md run.py boutiques.json ./
COPY ketabids ./ketabids
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1000 ketabids

USER 1000:1000
ENTRYPOINT ["ketabids"]
