# The slipstream worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# gcc builds the compiled request reader (setup.py), then goes: the image runs without it.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && python -c "import slipstream.schemas._request_rows" \
    && useradd --create-home slipstream
USER slipstream
EXPOSE 9464
CMD ["slipstream", "worker"]
