# sandbox-exporter: the exporter and the SDKs of its container, cluster and micro-VM
# backends (Docker, Podman, Kubernetes, Nomad, Firecracker). The extras built in the
# first stage are the ones installed in the second (tests/test_container_image.py).
#
#   docker build -t sandbox-exporter .
#   docker run -p 9878:9878 -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" sandbox-exporter
#
# Where PyPI is reached through a TLS-inspecting proxy, give pip that proxy's CA
# bundle as a build secret (used for the pip steps only, never stored in a layer):
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt ...
# BASE_IMAGE: any Debian-like image with python3 (3.11 or later) and its venv module;
# scripts/build-image.sh makes one with debootstrap where no registry is reachable.
ARG BASE_IMAGE=python:3.11.10-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sandbox_exporter ./sandbox_exporter
COPY exporter ./exporter
# the project's wheel and every dependency's, so that the final stage installs offline
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /tmp/pip \
    && /tmp/pip/bin/pip install --no-cache-dir --disable-pip-version-check -q --upgrade pip \
    && /tmp/pip/bin/pip wheel --no-cache-dir --disable-pip-version-check -q -w /wheels \
       ".[docker,kubernetes,nomad,firecracker]"

FROM ${BASE_IMAGE}
ARG UID=10001
ENV PATH=/opt/sandbox-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# a venv without pip or setuptools, filled by the build stage's pip from its wheels alone
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/tmp/pip,target=/tmp/pip \
    python3 -m venv --without-pip /opt/sandbox-exporter \
    && /tmp/pip/bin/python -m pip --python /opt/sandbox-exporter/bin/python install \
       --no-cache-dir --disable-pip-version-check -q --no-index --find-links /wheels \
       "sandbox-exporter[docker,kubernetes,nomad,firecracker]" \
    # the Kubernetes client's asyncio copy of itself (41 MB) and the aiohttp stack only it
    # needs (15 MB): the exporter uses the synchronous client, which imports neither
    && rm -rf /opt/sandbox-exporter/lib/python3*/site-packages/kubernetes/aio \
    && /tmp/pip/bin/python -m pip --python /opt/sandbox-exporter/bin/python uninstall -q -y \
       aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl \
    # and its bytecode (26 MB), which saves 0.08 s of `import kubernetes.client` (measured)
    && find /opt/sandbox-exporter/lib/python3*/site-packages/kubernetes -name __pycache__ \
       -prune -exec rm -rf {} + \
    && groupadd --gid "$UID" sandbox-exporter \
    && useradd --uid "$UID" --gid "$UID" --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sandbox-exporter
USER ${UID}:${UID}
EXPOSE 9878
# /-/healthy at SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS (default :9878), over plain HTTP
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python3", "-m", "sandbox_exporter.web.healthcheck"]
ENTRYPOINT ["sandbox-exporter"]
CMD ["run"]
