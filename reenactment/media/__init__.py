"""Media: video decoding and encoding with sound (PyAV). Image files are ``stylegan3.images``: the inversion
dataset reads them too."""
