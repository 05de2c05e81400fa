# syntax=docker/dockerfile:1
# The operator and agent image: one image, two entry points (mysql-backup-operator, mysql-backup-agent).
# Non-root, with the MariaDB/MySQL client tools the agent streams through and the zstd CLI.
# Python comes from Debian (not a python:* base) so the image can be built from Debian's packages
# alone: `make image` builds debian:bookworm-slim locally with mmdebstrap (see docs/install.md).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv mariadb-client zstd ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 mbo \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin mbo \
 && python3 -m venv /opt/mbo
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# Optional, for pip: PIP_CERT, a CA bundle for builds behind a TLS-intercepting proxy;
# PIP_CONSTRAINT, pinned versions (hack/build-image.sh passes those of the tested virtualenv, which
# also spares pip's resolver long backtracking through boto3 releases). Unset: pip's defaults.
ARG PIP_CERT
ARG PIP_CONSTRAINT
RUN /opt/mbo/bin/pip install --no-cache-dir --disable-pip-version-check /src && rm -rf /src
ENV PATH=/opt/mbo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TMPDIR=/var/lib/mysql-backup-agent
USER 65532:65532
CMD ["mysql-backup-operator"]
