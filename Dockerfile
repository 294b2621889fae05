# One image for every ordermesh Python process; compose.yaml picks the component with the
# command (`python -m services --components order`, `python -m workers --components relay`,
# `python -m gateway`).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml requirements.lock README.md ./
COPY services ./services
COPY workers ./workers
COPY gateway ./gateway
COPY devstack ./devstack
COPY gen ./gen
COPY schemas ./schemas
RUN pip install --no-cache-dir -c requirements.lock .
USER nobody
ENV ORDERMESH_SCHEMAS_DIR=/app/schemas
EXPOSE 50051 8081
