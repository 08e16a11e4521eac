"""The limits on what a user may ask for, defined once for the forms, the API and the models."""

# Every side must be a multiple of this (8: the VAE works on 8×8 pixel blocks); the engine's, so
# the hires fix's arithmetic and the forms' rule agree.
from .engine.requests import SIDE_MULTIPLE  # noqa: F401 - one of the limits

MAX_PROMPT_LENGTH = 1000
MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
# A picture is at most MAX_SIDE a side and MAX_PIXELS in all (1024×1024's): SD 1.5 squares up to
# 1024, and every size SDXL is trained at (1024×1024, 1216×832, 1344×768, 1536×640), whose cost is
# that of a 1024² picture.
MIN_SIDE, MAX_SIDE = 64, 1536
MAX_PIXELS = 1024 * 1024
# An uploaded image (init image, import) is fitted within this square (it sets the output's size).
FIT_SIDE = 1024
MAX_SEED = 2**32 - 1
DEFAULT_STEPS = 20
API_DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 7.5
DEFAULT_SIDE = 512
# Image to image: 0 keeps the init image, 1 ignores it.
MIN_STRENGTH, MAX_STRENGTH = 0.0, 1.0
DEFAULT_STRENGTH = 0.75
STRENGTH_STEP = 0.05
# Hires fix (text to image): a scale of 1 is off; otherwise the first pass (Width × Height, the
# model's own size) is upscaled by MIN_HIRES_SCALE to MAX_HIRES_SCALE and redrawn, ending at most
# MAX_HIRES_SIDE a side: what an SD 1.5-class model still redraws cleanly in one piece.
HIRES_OFF = 1.0
MIN_HIRES_SCALE, MAX_HIRES_SCALE = 1.25, 2.0
HIRES_SCALE_STEP = 0.05
DEFAULT_HIRES_STRENGTH = 0.5
MAX_HIRES_SIDE = 1536
# Images one run makes, each from the next seed (a batch of 4 costs 4 of the daily quota).
MIN_BATCH_SIZE, MAX_BATCH_SIZE = 1, 4
DEFAULT_BATCH_SIZE = 1

MEGABYTE = 1024 * 1024
# An uploaded image (init image, import, reference).
MAX_UPLOAD_BYTES = 10 * MEGABYTE
# A whole request body: one upload plus the form's other fields and the multipart framing. The web
# server refuses anything larger before Django reads it (imagegen.bodylimit); settable per install.
DEFAULT_MAX_REQUEST_BYTES = MAX_UPLOAD_BYTES + 2 * MEGABYTE
