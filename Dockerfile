# The platform image, tagged kiln:0.1.0 (kiln.IMAGE): every KFP component, the monitor CronJob and the servers run it.
# Build it where a container engine runs (these project machines have none, so it is not built in CI here):
#   docker build -t kiln:0.1.0 .
# then push it where the cluster pulls from, and compile pipelines with that name if it differs.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# A C compiler links TVM's x86_64 libraries; the aarch64 cross compiler links the edge devices' ones.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kiln
# The locked dependencies first (versions and hashes), so a code change does not reinstall them.
COPY requirements-bootstrap.lock requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements-bootstrap.lock \
    && /opt/venv/bin/uv pip sync --python /opt/venv/bin/python --require-hashes requirements.lock

COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin kiln

# KFP's lightweight components start `python3 -m kfp.dsl.executor_main`: the environment's python3 comes first.
ENV PATH=/opt/venv/bin:$PATH HOME=/home/kiln
USER 10001
WORKDIR /home/kiln
CMD ["kiln", "--help"]
