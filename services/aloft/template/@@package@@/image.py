"""The task image as a flytekit ImageSpec: the same contents as the Dockerfile.

Tasks do not use it by default, so `pyflyte run` and `aloft up` need no image builder. To build and
use it for a Kubernetes deployment:

    pyflyte register --image @@package@@/image.py:image ...   (or set container_image=image in @task)
"""

import os

from flytekit import ImageSpec

image = ImageSpec(
    name="@@project@@",
    python_version="3.11",
    requirements="requirements.txt",
    registry=os.environ.get("IMAGE_REGISTRY", "localhost:30000"),
)
