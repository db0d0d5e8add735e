# rollbot's container image: `rollbot serve` as a non-root user, dependencies from requirements.lock.
#
#   docker build -t rollbot .
#   docker run --env-file .env -e DATABASE_URL=postgresql://… \
#       -v "$PWD/rollbot.toml:/etc/rollbot/rollbot.toml:ro" -v "$PWD/secrets:/secrets:ro" \
#       -p 3000:3000 rollbot
#
# BASE is any Debian-like image with python3 (3.11+) and its venv module; the official one by
# default. The tests build FROM a Debian bookworm made with debootstrap (Docker Hub is out of reach
# there), whose python is /usr/bin/python3 rather than /usr/local/bin: a venv works with both.
ARG BASE=python:3.11-slim

FROM ${BASE}
# A fixed uid, so that files mounted into the container (the SSH key) can be given to it.
RUN groupadd --system --gid 10001 rollbot \
    && useradd --system --uid 10001 --gid rollbot --home-dir /var/lib/rollbot \
        --shell /usr/sbin/nologin rollbot \
    && install -d -o rollbot -g rollbot -m 0750 /var/lib/rollbot \
    && install -d -m 0755 /etc/rollbot
# Every dependency comes hash-checked from the lock, in a layer of its own that a change to
# rollbot's code does not rebuild. All of them are wheels: no compiler in the image, and one
# stage is enough.
COPY requirements.lock /src/requirements.lock
RUN python3 -m venv /opt/rollbot \
    && /opt/rollbot/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes -r /src/requirements.lock
# rollbot itself, built without resolving anything (setuptools and wheel come from the lock,
# and leave with the sources), so nothing unpinned gets in.
COPY pyproject.toml README.md /src/
COPY bot /src/bot
COPY handlers /src/handlers
COPY slack_emulator /src/slack_emulator
RUN /opt/rollbot/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation /src \
    && /opt/rollbot/bin/pip uninstall --yes --quiet setuptools wheel \
    && rm -rf /src
ENV PATH=/opt/rollbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROLLBOT_CONFIG=/etc/rollbot/rollbot.toml \
    HOST=0.0.0.0 \
    PORT=3000
# Reports (incident-logs/) land in the working directory; rollbot keeps a copy in the database.
WORKDIR /var/lib/rollbot
USER 10001:10001
EXPOSE 3000
# The slim images have no curl: python asks /healthz, and any non-200 or refusal exits 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=4)"]
ENTRYPOINT ["rollbot"]
CMD ["serve"]
