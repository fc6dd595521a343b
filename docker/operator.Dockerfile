# nimop operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t nimop:0.1.0 .
# Runs `nimop run` as uid/gid 65532, configured by NIMOP_* variables (operator/nimop/settings.py);
# /healthz and /metrics listen on :8080. The Helm chart and the kustomize base run it with a
# read-only root filesystem, no capabilities and a writable /tmp.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY operator /src/operator
COPY manifests /src/manifests
# The render templates (manifests/) belong inside the package as nimop/manifests, where the
# operator looks first; copy them there if the wheel did not already bring them.
RUN pip install /src \
 && pkg="$(python -c 'import nimop, pathlib; print(pathlib.Path(nimop.__file__).parent)')" \
 && { [ -d "$pkg/manifests" ] || cp -r /src/manifests "$pkg/manifests"; } \
 && python -c 'from nimop import render; assert render.template_names(render.environment(render.default_templates_dir()))' \
 && rm -rf /src

RUN useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nimop
USER 65532:65532
WORKDIR /tmp

EXPOSE 8080

ENTRYPOINT ["nimop"]
CMD ["run"]
