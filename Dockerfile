# The image compose.server.yml runs: `docker build -t sensorlake .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[server]"
ENTRYPOINT []
CMD ["sensorlake", "--help"]
