# The operator and agent image: one image, two entry points (mysql-backup-operator, mysql-backup-agent).
# Non-root, with the MariaDB/MySQL client tools the agent streams through.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends mariadb-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 mbo \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin mbo
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 TMPDIR=/var/lib/mysql-backup-agent
USER 65532:65532
CMD ["mysql-backup-operator"]
