"""Faces: landmark detection (dlib, mediapipe), FFHQ alignment and stable crops, landmark smoothing, motion
transfer from a driving face to the source, head pose, and the landmark images the mapper is shown."""
