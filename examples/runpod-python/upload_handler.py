"""An unmodified runpod-python handler that renders an image and stores it in the job's bucket.

The client names the bucket in the job's "s3Config" ({"accessId", "accessSecret", "bucketName",
"endpointUrl", "objectPath"?}); Spool hands it to this worker, in the job, and to no one else.
The handler uploads with runpod-python's rp_upload, the object under
"<objectPath>/<job id>/image.png" (the key Spool's Go SDK uses too), and returns a presigned URL
valid for 7 days. A job without s3Config falls back to rp_upload.upload_image, which reads
BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (or saves a local copy
when they are unset).

Run it with the environment of README.md beside this file, then:

    curl -s -X POST "$SPOOL/v2/$EP/runsync" -H "Authorization: Bearer $KEY" -d '{
      "input": {"width": 320, "height": 200},
      "s3Config": {"accessId": "...", "accessSecret": "...", "bucketName": "outputs",
                   "endpointUrl": "https://s3.example.com", "objectPath": "renders"}}'
"""
import os
import tempfile

import runpod
from PIL import Image  # installed with runpod (rp_upload needs it too)
from runpod.serverless.utils import rp_upload


def render(width, height):
    """A gradient with a diagonal stripe: an image-like file to store."""
    img = Image.new("RGB", (width, height))
    pixels = []
    for y in range(height):
        for x in range(width):
            if (x + y) % 32 < 4:
                pixels.append((255, 255, 255))
            else:
                pixels.append((255 * x // max(width - 1, 1), 255 * y // max(height - 1, 1), 160))
    img.putdata(pixels)
    return img


def handler(job):
    job_input = job["input"] if isinstance(job["input"], dict) else {}
    width = int(job_input.get("width", 256))
    height = int(job_input.get("height", 256))
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        return {"error": "input.width and input.height must be between 1 and 4096"}

    s3 = job.get("s3Config")  # the credentials: never log or return them
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.png")
        render(width, height).save(path, format="PNG")
        if s3:
            prefix = "/".join(p for p in (s3.get("objectPath", "").strip("/"), job["id"]) if p)
            url = rp_upload.upload_file_to_bucket(
                "image.png", path,
                bucket_creds=s3,                # endpointUrl, accessId, accessSecret
                bucket_name=s3["bucketName"],   # rp_upload does not read it from bucket_creds
                prefix=prefix,
                extra_args={"ContentType": "image/png"},
            )
        else:
            url = rp_upload.upload_image(job["id"], path)

    return {"image_url": url, "width": width, "height": height}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
