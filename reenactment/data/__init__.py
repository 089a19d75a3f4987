"""Data: preparing a video dataset (frames, landmarks, crops, manifest: ``prepare``) and the mapper's training pairs
built from it and from the inverted latents (``mapper_data``)."""
