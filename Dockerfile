# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY offer_service ./offer_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 offers
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
# Owned by the service user, so a volume mounted here (SQLite file, event spool) is writable.
RUN mkdir -p /home/offers/offer-data && chown offers:offers /home/offers/offer-data
USER offers
WORKDIR /home/offers
ENV OFFER_STORE_URL=sqlite:////home/offers/offer-data/offers.db
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["offer-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
