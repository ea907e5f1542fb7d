# Genisys: one image for the API replicas and the reference connectors.
#
#   docker build -t genisys .
#   docker run -p 7001:7001 -e CONSUL_HTTP_ADDR=consul:8500 genisys
#
# Configuration: mount a file over /app/genisys.yml, and/or set environment variables:
# GENISYS_<KEY> for the genisys section (GENISYS_PORT), GENISYS_<SECTION>_<KEY> for the
# others (GENISYS_LEADER_ID, GENISYS_CONSUL_KEY_PREFIX), CONSUL_HTTP_ADDR and
# CONSUL_HTTP_TOKEN as Consul's own tools read them. See genisys/config.py.
#
# No compute file is in the image: a replica starts with the registry as it is in Consul,
# or mount one over /app/computes.py (docker-compose.yml mounts deploy/computes.py).
#
# Without a registry (as in the tests): another base with `python` and `pip` on PATH, and
# the requirements from a wheelhouse (pip wheel -r requirements.txt -w DIR, served over
# HTTP, as pip's --find-links takes a URL):
#   docker build --network host --build-arg BASE=genisys-test/python:bookworm \
#       --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=http://127.0.0.1:8000/ .
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# pip reads PIP_NO_INDEX and PIP_FIND_LINKS from the environment; unset, it uses PyPI.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY main.py genisys.yml ./
COPY genisys/ ./genisys/

# A fixed, numeric, unprivileged user (so that runAsNonRoot-style checks can verify it).
RUN groupadd --system --gid 10001 genisys \
    && useradd --system --uid 10001 --gid genisys --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin genisys
USER 10001:10001

# In a container the API must listen on every interface; its port is GENISYS_PORT.
ENV GENISYS_BIND=0.0.0.0 \
    GENISYS_PORT=7001
EXPOSE 7001

# slim has no curl: ask GET /health with Python's urllib. /health answers 503 (and so
# fails this check) while the replica cannot reach Consul.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GENISYS_PORT', '7001'), timeout=2)"]

# Exec form: main.py is PID 1 and gets SIGTERM itself, so `docker stop` releases the
# leader lock at once (graceful stop) instead of waiting for the check's TTL.
CMD ["python", "main.py"]
