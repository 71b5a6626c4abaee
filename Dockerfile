# The slipstream worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --create-home slipstream
USER slipstream
EXPOSE 9464
CMD ["slipstream", "worker"]
