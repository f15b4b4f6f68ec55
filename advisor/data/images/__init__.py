"""Reading an image dataset: the folder layouts and label manifests, the scan (headers, duplicates, upright
EXIF orientation), the seeded sample and the decode of one image. No torch."""
