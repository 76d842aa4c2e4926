# access-audit: the API on PostgreSQL (set AUDIT_DATABASE_URL, AUDIT_SECRET_KEY and
# AUDIT_SIGNING_KEY_FILE). Migrations run before the server starts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 audit
WORKDIR /srv/access-audit

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY policies ./policies
RUN pip install . && chown -R audit:audit /srv/access-audit

USER audit
ENV AUDIT_POLICY_DIR=/srv/access-audit/policies
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["sh", "-c", "access-audit migrate && exec access-audit serve --host 0.0.0.0 --port 8000"]
