# NIM simulator image. Build from the repository root:
#   docker build -f docker/nimsim.Dockerfile -t nimsim:dev .
# Fault modes can be chosen by tag (see nimsim.config) when NIMSIM_IMAGE is set,
# or directly with NIMSIM_FAULT / --fault.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN pip install /src && rm -rf /src

RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin nimsim
USER 1000:1000
WORKDIR /home/nimsim

# Inside a container the simulator must listen beyond loopback to be reachable.
ENV NIMSIM_HOST=0.0.0.0 \
    NIM_SERVER_PORT=8000
EXPOSE 8000

ENTRYPOINT ["nimsim"]
