# One image for every process: web (the default CMD), Celery worker, housekeeping, migrate.
# docker-compose.yml picks the command per service.
#
# torch comes from the index in TORCH_INDEX: the CPU build by default (a plain PyPI install of
# torch pulls the CUDA wheels, gigabytes a web server never uses); for GPU workers:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t imagegen:cuda .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# Every path under /data is a volume in docker-compose.yml, so state survives a new image:
# var (runtime state), media (images), the built-in model, and Hugging Face downloads
# (a real IMAGEGEN_MODEL is fetched once into HF_HOME). Static files are built into the image,
# outside /data, so a new image never serves an old volume's copy.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    IMAGEGEN_VAR_DIR=/data/var \
    MEDIA_ROOT=/data/media \
    IMAGEGEN_MODEL_CACHE=/data/models \
    HF_HOME=/data/huggingface \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# torch first, from TORCH_INDEX; requirements.txt's torch==2.13.0 is then already satisfied
# (2.13.0+cpu / 2.13.0+cu128 match it), so pip keeps that build.
COPY requirements.txt .
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX" \
    && pip install -r requirements.txt

# The code only, named one by one: no .venv, var/ (local secret key, SQLite), media/ or .env
# of a checkout ends up in the image. A new app or top-level folder needs a line here
# (imagegen/tests/test_deploy_files.py checks the installed apps).
COPY manage.py ./
COPY imagegen ./imagegen
COPY img2img ./img2img
COPY refinement ./refinement
COPY templates ./templates
COPY static ./static

# Settings need a SECRET_KEY to load; this throwaway one exists for this command only.
RUN SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput

# Not root. The /data folders belong to the user, and a new named volume mounted on one of
# them starts as a copy of it, owner included, so the processes can write there.
RUN useradd --create-home --uid 1000 --user-group app \
    && mkdir -p /data/var /data/media /data/models /data/huggingface \
    && chown -R app:app /data
USER app

EXPOSE 8000
# --proxy-headers: X-Forwarded-For/-Proto count from the addresses in $FORWARDED_ALLOW_IPS only.
CMD ["uvicorn", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log", "--lifespan", "off", \
     "--timeout-graceful-shutdown", "5", "imagegen.asgi:application"]
