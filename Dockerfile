# The platform image of docker-compose.yml: every service runs one `coach …` command from it.
#   runtime  CPU image (python:3.11-slim): APIs, workers, dataflows, transcription on CPU (int8)
#   gpu      runtime + the CUDA 12 cuBLAS/cuDNN 9 wheels CTranslate2 needs for transcription on an NVIDIA GPU
FROM python:3.11-slim-bookworm AS runtime
# NUMBA_CACHE_DIR: the compiled metric kernels (flows/vocabulary.py) are cached in the writable home, not in the
# read-only site-packages, so each container compiles them once.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COACH_HOME=/var/lib/coach NUMBA_CACHE_DIR=/var/lib/coach/cache/numba
WORKDIR /app
COPY . /app
# grafana-client pulls urllib3-future, whose wheel replaces urllib3 in site-packages; build it from source so
# both stay side by side (botocore and clickhouse-connect keep the real urllib3).
RUN URLLIB3_NO_OVERRIDE=1 pip install --no-binary urllib3-future ".[base-model]" \
    && useradd --system --uid 10001 --home-dir /var/lib/coach --create-home coach
USER coach
EXPOSE 8000 8001

FROM runtime AS gpu
USER root
RUN pip install "nvidia-cublas-cu12>=12.4,<13" "nvidia-cudnn-cu12>=9,<10"
ENV LD_LIBRARY_PATH=/usr/local/lib/python3.11/site-packages/nvidia/cublas/lib:/usr/local/lib/python3.11/site-packages/nvidia/cudnn/lib
USER coach
