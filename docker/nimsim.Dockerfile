# NIM simulator image. Build from the repository root with any engine:
#   docker build -f docker/nimsim.Dockerfile -t nimsim:0.1.0 .
# or without one: `make image` (docs/install.md, "Images").
# Fault modes can be chosen by tag (see nimsim.config) when NIMSIM_IMAGE is set,
# or directly with NIMSIM_FAULT / --fault.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, at the versions CI tests; rebuilt only when pyproject.toml or the lock change.
COPY pyproject.toml requirements-dev.lock /src/
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && pip install -c /src/requirements-dev.lock -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The wheel (one for nimop, nimsim and nimlab) force-includes manifests/ as nimop/manifests, so
# the build fails without it in the context.
COPY README.md /src/
COPY operator /src/operator
COPY manifests /src/manifests
RUN pip install --no-deps /src && rm -rf /src && nimsim --help >/dev/null

# NIM's utilities under their own names on PATH, as in a NIM image, so a script (the NimCache
# download Job's, say) calls them as it would there
# (https://docs.nvidia.com/nim/large-language-models/latest/utilities.html). The lab runs a NIM
# container's own commands in this image.
RUN for name in $(python -c 'from nimsim.utilities import ENTRYPOINTS; print(*sorted(ENTRYPOINTS))'); do \
      printf '#!/bin/sh\nexec nimsim %s "$@"\n' "$name" > "/usr/local/bin/$name" \
      && chmod 0755 "/usr/local/bin/$name"; \
    done \
 && list-model-profiles --help >/dev/null

# An explicit gid: Kubernetes takes the container's group from /etc/passwd (see operator.Dockerfile).
# /opt/nim/.cache is a NIM image's default NIM_CACHE_PATH, writable by its user.
RUN groupadd --gid 1000 nimsim \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin nimsim \
 && mkdir -p /opt/nim/.cache && chown 1000:1000 /opt/nim/.cache
USER 1000:1000
WORKDIR /home/nimsim

# Inside a container the simulator must listen beyond loopback to be reachable.
ENV NIMSIM_HOST=0.0.0.0 \
    NIM_SERVER_PORT=8000
EXPOSE 8000

ENTRYPOINT ["nimsim"]
