# cisis-gateway image: the package, routes.yaml and the transformers folder. No compiler needed at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system --home /app cisis && mkdir -p /app/var && chown cisis /app/var
COPY routes.yaml ./
COPY transformers ./transformers
USER cisis
ENTRYPOINT ["cisis-gateway"]
CMD ["run"]
