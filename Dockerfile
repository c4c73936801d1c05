# The platform image, tagged kiln:0.1.0 (kiln.IMAGE): every KFP component, the monitor CronJob and the servers run it.
# `make images` builds it and the edge image (scripts/images.sh); by hand:
#   docker build -t kiln:0.1.0 .
# then push it where the cluster pulls from, and compile pipelines with that name if it differs.
# BASE: a Debian bookworm image with Python 3.11 and venv; `make images` uses one made from Debian packages.
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# A C compiler links TVM's x86_64 libraries; the aarch64 cross compiler links the edge devices' ones.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kiln
# The locked dependencies first (versions and hashes), so a code change does not reinstall them: the runtime lock has
# requirements.lock's pins without the test tools. Bytecode is compiled here: the root filesystem is read-only where
# the image runs, and MLflow alone takes seconds to compile at each start.
# A CA bundle in .build/ (scripts/images.sh puts the host's there) is used for the downloads only.
COPY requirements-bootstrap.lock requirements-runtime.lock .build/host-ca.cr[t] ./
RUN if [ -f host-ca.crt ]; then export PIP_CERT="$PWD/host-ca.crt" SSL_CERT_FILE="$PWD/host-ca.crt"; fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements-bootstrap.lock \
    && /opt/venv/bin/uv pip sync --python /opt/venv/bin/python --require-hashes --compile-bytecode requirements-runtime.lock \
    && rm -f host-ca.crt

COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation --compile-bytecode . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin kiln

# KFP's lightweight components start `python3 -m kfp.dsl.executor_main`: the environment's python3 comes first.
ENV PATH=/opt/venv/bin:$PATH HOME=/home/kiln
USER 10001
WORKDIR /home/kiln
CMD ["kiln", "--help"]
