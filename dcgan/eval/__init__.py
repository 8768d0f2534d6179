"""Sample-quality evaluation: Inception metrics, face detection, mode coverage.

Submodules are imported on demand: the Inception and OpenCV parts need the
optional `eval` extra (`pip install -e '.[eval]'`).
"""
