# nimop operator image. Build from the repository root with any engine:
#   docker build -f docker/operator.Dockerfile -t nimop:0.1.0 .
# or without one: `make image` (buildah, and a python:3.11-slim made from Debian packages when no
# registry is reachable; docs/install.md, "Images").
# Runs `nimop run` as uid/gid 65532, configured by NIMOP_* variables (operator/nimop/settings.py);
# /healthz and /metrics listen on :8080. The Helm chart and the kustomize base run it with a
# read-only root filesystem, no capabilities and a writable /tmp.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, at the versions CI tests (requirements-dev.lock as constraints): this layer
# is rebuilt only when pyproject.toml or the lock changes, not on every source edit.
COPY pyproject.toml requirements-dev.lock /src/
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && pip install -c /src/requirements-dev.lock -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The package itself. The wheel carries the render templates (manifests/) as nimop/manifests,
# through pyproject's hatch force-include, so manifests/ must be in the build context.
COPY README.md /src/
COPY operator /src/operator
COPY manifests /src/manifests
RUN pip install --no-deps /src \
 && rm -rf /src \
 && python -c 'import nimop, pathlib; t = sorted((pathlib.Path(nimop.__file__).parent / "manifests").glob("*.j2")); assert t, "no render templates in the package"; print(len(t), "templates")' \
 && nimop --help >/dev/null

# The group is made first, with its own id: `useradd --user-group` would take the first free gid
# (1000), and Kubernetes takes a container's group from /etc/passwd, not from USER's ":65532"
# (containerd and CRI-O pass on only the uid part of an image's USER).
RUN groupadd --gid 65532 nimop \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nimop
USER 65532:65532
WORKDIR /tmp

EXPOSE 8080

ENTRYPOINT ["nimop"]
CMD ["run"]
