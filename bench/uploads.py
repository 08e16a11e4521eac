"""How long a ~10 MB JPEG init image takes: normalising it in-process, and the whole multipart
`POST /api/generate_img2img` to the live server until its 202.

    python -m bench.uploads [--quick]
"""

import argparse
import io
import time
import urllib.request

from bench import common

TARGET_SECONDS = 2.0
WIDTH, HEIGHT = 4000, 3000


def large_jpeg() -> bytes:
    """A photo-sized JPEG of smooth gradients plus fine noise, the noise tuned until the file is 9.5–10 MB.

    The upper end stays under the upload limit (10 MiB), so the server accepts it.
    """
    from PIL import Image, ImageChops

    from img2img.uploads import MAX_UPLOAD_BYTES, MEGABYTE

    gradient = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((WIDTH, HEIGHT)),
            Image.radial_gradient("L").resize((WIDTH, HEIGHT)),
            Image.linear_gradient("L").rotate(90).resize((WIDTH, HEIGHT)),
        ),
    )
    low, high = 0.0, 128.0
    for _ in range(12):
        sigma = (low + high) / 2
        noise = Image.effect_noise((WIDTH, HEIGHT), sigma).convert("RGB")
        picture = ImageChops.add(gradient, noise, scale=1.0, offset=-128)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=95)
        size = buffer.tell()
        if 9.5 * MEGABYTE <= size <= min(10 * MEGABYTE, MAX_UPLOAD_BYTES):
            return buffer.getvalue()
        low, high = (sigma, high) if size < 9.5 * MEGABYTE else (low, sigma)
    raise RuntimeError(f"could not tune the JPEG to 9.5–10 MB (last {size / MEGABYTE:.2f} MB)")


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "----imagegen-bench"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload_once(bench: common.Bench, body: bytes, content_type: str) -> float:
    request = urllib.request.Request(
        f"{bench.stack.base_url}/api/generate_img2img",
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {bench.token}", "Content-Type": content_type},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        if response.status != 202:
            raise RuntimeError(f"upload answered {response.status}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 5")
    options = parser.parse_args()
    repetitions = 3 if options.quick else 5

    with common.bench_stack() as bench:
        from img2img.uploads import MEGABYTE, normalise_upload

        # Nothing else computes meanwhile: the uploads only queue runs, which no worker takes.
        bench.stack.stop_worker()
        data = large_jpeg()
        common.log(f"a {WIDTH}×{HEIGHT} JPEG of {len(data) / MEGABYTE:.2f} MB ({len(data)} bytes)")
        normalise_upload(data)  # warm-up
        in_process = []
        for _ in range(repetitions):
            started = time.perf_counter()
            normalised = normalise_upload(data)
            in_process.append(time.perf_counter() - started)
        fields = {"prompt": "a watercolor painting", "strength": "0.5", "num_inference_steps": "8"}
        body, content_type = multipart(fields, "init_image", "photo.jpg", data)
        upload_once(bench, body, content_type)  # warm-up
        end_to_end = [upload_once(bench, body, content_type) for _ in range(repetitions)]

    figures = {
        "jpeg_bytes": len(data),
        "jpeg_size": [WIDTH, HEIGHT],
        "normalised_size": [normalised.width, normalised.height],
        "normalised_png_bytes": len(normalised.data),
        "repetitions": repetitions,
        "normalise_seconds": {"median": common.median(in_process), "max": max(in_process)},
        "api_seconds": {"median": common.median(end_to_end), "max": max(end_to_end)},
    }
    summary = (
        f"uploads: {len(data) / MEGABYTE:.2f} MB {WIDTH}×{HEIGHT} JPEG → normalise_upload "
        f"{common.median(in_process):.2f} s, POST /api/generate_img2img → 202 {common.median(end_to_end):.2f} s "
        f"(median of {repetitions}, target < {TARGET_SECONDS:g} s); "
        f"normalised to {normalised.width}×{normalised.height} PNG of {len(normalised.data) / MEGABYTE:.2f} MB; "
        f"{common.load_note()}"
    )
    common.write_result("uploads", summary, figures)


if __name__ == "__main__":
    main()
